//! Replica discovery through DNS (issue 20, `adapter.discover = "dns://NAME:PORT"`): the
//! A and AAAA records of a name, each address one engine replica. A lookup runs on a
//! thread of its own under a small tokio runtime (hickory's resolver is tokio's; the
//! shards may run on glommio, whose one blocking thread the artifact store uses), so a
//! slow DNS server never stalls a shard or its file IO.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, Resolver};

/// How long one lookup may take in all (servers, attempts and search domains included).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// The addresses `name` resolves to now, each with `port`, sorted; an empty list when
/// DNS says the name has none (NXDOMAIN, or no A/AAAA record: every replica gone).
/// `server`: the DNS server to ask, else the system's (`/etc/resolv.conf`,
/// `/etc/hosts`). An error (no answer, SERVFAIL, REFUSED, a broken configuration) says
/// nothing about the replicas: the caller keeps the set it has.
pub(crate) async fn resolve(
    name: String,
    port: u16,
    server: Option<SocketAddr>,
) -> Result<Vec<SocketAddr>, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("orchd-dns".into())
        .spawn(move || {
            let _ = tx.send(lookup(&name, port, server));
        })
        .map_err(|e| format!("cannot start a lookup thread: {e}"))?;
    rx.await
        .map_err(|_| "the lookup thread ended without an answer".to_string())?
}

fn lookup(name: &str, port: u16, server: Option<SocketAddr>) -> Result<Vec<SocketAddr>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the resolver's runtime: {e}"))?;
    runtime.block_on(async {
        let mut builder = match server {
            Some(s) => Resolver::builder_with_config(
                ResolverConfig::from_parts(
                    None,
                    Vec::new(),
                    NameServerConfigGroup::from_ips_clear(&[s.ip()], s.port(), true),
                ),
                TokioConnectionProvider::default(),
            ),
            None => Resolver::builder_tokio().map_err(|e| format!("system resolver: {e}"))?,
        };
        let opts = builder.options_mut();
        // Every refresh asks again: the set is what DNS says now, not what it said
        // within a record's TTL.
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(1);
        opts.attempts = 2;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let resolver = builder.build();
        let found = tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(name))
            .await
            .map_err(|_| format!("no answer within {} s", LOOKUP_TIMEOUT.as_secs()))?;
        match found {
            Ok(found) => {
                let mut addrs: Vec<SocketAddr> =
                    found.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                addrs.sort();
                addrs.dedup();
                Ok(addrs)
            }
            Err(e) if lists_nothing(&e) => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    })
}

/// DNS answered that the name has no address: NXDOMAIN, or NOERROR without an A/AAAA
/// record. hickory reports SERVFAIL, REFUSED and the like as "no records" too; those
/// are failures of the server, not an empty set.
fn lists_nothing(e: &ResolveError) -> bool {
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => {
            matches!(
                *response_code,
                ResponseCode::NXDomain | ResponseCode::NoError
            )
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_the_hosts_file_resolve_through_the_system_resolver() {
        // `localhost` is in every /etc/hosts.
        let found = lookup("localhost", 8080, None).expect("localhost resolves");
        assert!(
            found
                .iter()
                .all(|a| a.port() == 8080 && a.ip().is_loopback()),
            "{found:?}"
        );
        assert!(!found.is_empty());
    }

    #[test]
    fn a_server_that_does_not_answer_is_an_error_not_an_empty_set() {
        // Nothing listens on this UDP port (bound and dropped).
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(lookup("engines.test", 8080, Some(server)).is_err());
    }

    #[test]
    fn a_server_failure_is_an_error_and_nxdomain_an_empty_set() {
        // A tiny DNS server answering every query with one response code.
        let answer = |rcode: u8| {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = s.local_addr().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    let mut r = buf[..n].to_vec();
                    r[2] = 0x81; // a response, recursion desired
                    r[3] = 0x80 | rcode; // recursion available, the code
                    r[6..12].fill(0); // no answer, authority or additional records
                    let _ = s.send_to(&r, from);
                }
            });
            addr
        };
        let servfail = lookup("engines.test", 8080, Some(answer(2)));
        assert!(servfail.is_err(), "SERVFAIL keeps the set: {servfail:?}");
        let refused = lookup("engines.test", 8080, Some(answer(5)));
        assert!(refused.is_err(), "REFUSED keeps the set: {refused:?}");
        assert_eq!(
            lookup("engines.test", 8080, Some(answer(3))),
            Ok(Vec::new()),
            "NXDOMAIN"
        );
    }
}
