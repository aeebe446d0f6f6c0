//! Loopback plumbing shared by every scenario: client sockets bound to spread source addresses,
//! the descriptor limit, and a guard that keeps all traffic on 127.0.0.0/8.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use tokio::net::{TcpSocket, TcpStream};

/// Source addresses used: 127.0.0.2 ..= 127.0.0.254. Each has its own ~28 000 ephemeral ports
/// towards one server address, so tens of thousands of connections (and the `TIME_WAIT`s left by
/// short ones) never run out of ports.
const FIRST_SOURCE: u8 = 2;
const SOURCES: usize = 253;

/// Descriptors a bench process keeps back for itself (runtime, pipes, files).
pub(crate) const FD_RESERVE: u64 = 256;

/// The source address of client number `index`.
pub(crate) fn source_ip(index: usize) -> Ipv4Addr {
    let offset = u8::try_from(index % SOURCES).unwrap_or(0);
    Ipv4Addr::new(127, 0, 0, FIRST_SOURCE + offset)
}

/// Opens a TCP connection to `server` from [`source_ip`]`(index)`, with Nagle off.
///
/// # Errors
/// If the socket cannot be created, bound or connected.
pub(crate) async fn connect_from(index: usize, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source_ip(index), 0)))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Raises this process's soft descriptor limit to its hard limit; returns the new soft limit.
///
/// # Errors
/// If the limit cannot be read or raised.
pub(crate) fn raise_fd_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Client connections one bench process can hold with its current descriptor limit.
pub(crate) fn connections_per_process() -> usize {
    let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    usize::try_from(soft.saturating_sub(FD_RESERVE))
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Refuses a scenario that needs more connections than this process can open (only `hold`
/// spreads its clients over several processes).
///
/// # Errors
/// If `connections` exceeds [`connections_per_process`].
pub(crate) fn ensure_fits(connections: usize) -> anyhow::Result<()> {
    let room = connections_per_process();
    if connections > room {
        anyhow::bail!(
            "{connections} connections do not fit this process's descriptor limit (room for {room}); \
             raise `ulimit -Hn`, or use fewer clients"
        );
    }
    Ok(())
}

/// Refuses any address outside 127.0.0.0/8: the bench only ever loads this machine.
///
/// # Errors
/// If `addr` is not an IPv4 loopback address.
pub(crate) fn ensure_loopback(addr: SocketAddr) -> anyhow::Result<()> {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => Ok(()),
        _ => anyhow::bail!("{addr} is not in 127.0.0.0/8; the bench only loads this machine"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_cycle_through_127_0_0_2_to_254() {
        assert_eq!(source_ip(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_ip(252), Ipv4Addr::new(127, 0, 0, 254));
        assert_eq!(source_ip(253), Ipv4Addr::new(127, 0, 0, 2));
    }

    #[test]
    fn only_loopback_targets_are_allowed() {
        assert!(ensure_loopback("127.0.0.1:1".parse().expect("addr")).is_ok());
        assert!(ensure_loopback("127.9.9.9:1".parse().expect("addr")).is_ok());
        assert!(ensure_loopback("10.0.0.1:1".parse().expect("addr")).is_err());
        assert!(ensure_loopback("[::1]:1".parse().expect("addr")).is_err());
    }
}
