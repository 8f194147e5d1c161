//! Binding the shards' listeners: one SO_REUSEPORT socket per shard on one port.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `shards` listening sockets to `addr`.
///
/// First a probe socket without SO_REUSEPORT is bound: it fails if anything already
/// listens on the port (with SO_REUSEPORT alone a second orchd would silently share
/// the port and take half the connections), and with port 0 it learns the one port all
/// shards must share (each shard binding `:0` itself would get a different port).
pub(crate) fn bind(addr: SocketAddr, shards: usize) -> io::Result<(SocketAddr, Vec<TcpListener>)> {
    let probe = socket(addr)?;
    probe.bind(&addr.into())?;
    let actual = probe
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound address is not an IP address"))?;
    drop(probe);

    let mut listeners = Vec::with_capacity(shards);
    for _ in 0..shards {
        let s = socket(actual)?;
        s.set_reuse_port(true)?;
        s.bind(&actual.into())?;
        s.listen(1024)?;
        listeners.push(s.into());
    }
    Ok((actual, listeners))
}

fn socket(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Rebinding right after a restart must not fail on old connections in TIME_WAIT;
    // on Linux this still fails against a socket in LISTEN.
    s.set_reuse_address(true)?;
    Ok(s)
}
