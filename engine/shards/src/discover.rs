//! Replica discovery through DNS (issue 20, `adapter.discover = "dns://NAME:PORT"`): the
//! A/AAAA records of a name, each address one engine replica. A lookup runs on a
//! blocking thread under a small tokio runtime of its own (hickory's resolver is tokio's;
//! the shards may run on glommio), so a slow DNS server never stalls a shard.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::Resolver;

/// How long one lookup may take, all attempts included.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The addresses `name` resolves to now, each with `port`, sorted; an empty list when
/// the name has no records (every replica gone). `server`: the DNS server to ask, else
/// the system's (`/etc/resolv.conf`, `/etc/hosts`). An error (no answer, a broken
/// configuration) says nothing about the replicas: the caller keeps the set it has.
pub(crate) fn resolve(
    name: &str,
    port: u16,
    server: Option<SocketAddr>,
) -> Result<Vec<SocketAddr>, String> {
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
        opts.timeout = LOOKUP_TIMEOUT / 2;
        opts.attempts = 2;
        let resolver = builder.build();
        match resolver.lookup_ip(name).await {
            Ok(found) => {
                let mut addrs: Vec<SocketAddr> =
                    found.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                addrs.sort();
                addrs.dedup();
                Ok(addrs)
            }
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_the_hosts_file_resolve_through_the_system_resolver() {
        // `localhost` is in every /etc/hosts.
        let found = resolve("localhost", 8080, None).expect("localhost resolves");
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
        assert!(resolve("engines.test", 8080, Some(server)).is_err());
    }
}
