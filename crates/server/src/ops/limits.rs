//! Operating-system limits: the descriptor limit that bounds `max_connections`, and the socket
//! options every accepted connection gets.

use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::config::Config;

/// Descriptors kept back for everything that is not a client: the listener, the CSV, the token
/// and admin socket, the runtime's epoll and wake-up fds, standard streams, log files.
pub const FD_RESERVE: u64 = 64;

/// Raises the soft descriptor limit to the hard limit and, if that still cannot hold
/// `max_connections` plus [`FD_RESERVE`], lowers `max_connections` (with a warning), so the
/// daemon refuses extra clients with `ERR FULL` instead of failing `accept`.
pub fn fit_connections_to_fd_limit(config: &mut Config) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "cannot read or raise the open-file limit");
            return;
        }
    };
    let room = usize::try_from(limit.saturating_sub(FD_RESERVE))
        .unwrap_or(usize::MAX)
        .max(1);
    if config.max_connections > room {
        warn!(
            fd_limit = limit,
            configured = config.max_connections,
            lowered_to = room,
            "open-file limit too low for max_connections; lowering it (raise LimitNOFILE / ulimit -n)"
        );
        config.max_connections = room;
    } else {
        info!(
            fd_limit = limit,
            max_connections = config.max_connections,
            "descriptor limit fits"
        );
    }
}

/// Pending connections the kernel may queue for `accept` (capped by `net.core.somaxconn`).
/// A whole lecture hall connecting in the same second must not overflow it: the standard
/// library's 128 did, and overflowed connections hang on the client until SYN retries.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the student listener with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (a restart does not
/// wait for old connections in TIME_WAIT).
///
/// # Errors
/// If the address cannot be bound.
pub fn bind_listener(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Socket options for every client, set once on the listener: Linux copies them to each
/// accepted socket, which saves five `setsockopt` calls per connection. See [`configure_socket`].
pub fn configure_listener(
    listener: &tokio::net::TcpListener,
    keepalive: Duration,
    send_buffer: usize,
) {
    let sock = socket2::SockRef::from(listener);
    if let Err(e) = apply(&sock, keepalive, send_buffer) {
        warn!(error = %e, "cannot set socket options on the listener");
    }
}

fn apply(
    sock: &socket2::SockRef<'_>,
    keepalive: Duration,
    send_buffer: usize,
) -> std::io::Result<()> {
    sock.set_tcp_nodelay(true)?;
    if send_buffer > 0 {
        sock.set_send_buffer_size(send_buffer)?;
    }
    if !keepalive.is_zero() {
        let ka = socket2::TcpKeepalive::new()
            .with_time(keepalive)
            .with_interval((keepalive / 6).max(Duration::from_secs(1)))
            .with_retries(5);
        sock.set_tcp_keepalive(&ka)?;
    }
    Ok(())
}

/// Socket options for an accepted client: no Nagle delay (lines are small and interactive) and
/// TCP keepalive, so a laptop that vanished from Wi-Fi is noticed even while it is silent.
pub fn configure_socket(
    stream: &TcpStream,
    keepalive: Duration,
    send_buffer: usize,
) -> std::io::Result<()> {
    apply(&socket2::SockRef::from(stream), keepalive, send_buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_keepalive_42s_and_nodelay(server: &TcpStream) {
        let sock = socket2::SockRef::from(server);
        assert!(sock.keepalive().expect("keepalive"));
        assert_eq!(
            sock.tcp_keepalive_time().expect("time"),
            Duration::from_secs(42)
        );
        assert!(server.nodelay().expect("nodelay"));
    }

    #[tokio::test]
    async fn accepted_sockets_inherit_keepalive_and_nodelay_from_the_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        configure_listener(&listener, Duration::from_secs(42), 0);
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        assert_keepalive_42s_and_nodelay(&server);
    }

    #[tokio::test]
    async fn accepted_sockets_get_keepalive_and_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        configure_socket(&server, Duration::from_secs(42), 0).expect("configure");
        assert_keepalive_42s_and_nodelay(&server);
    }

    #[test]
    fn max_connections_is_lowered_to_fit_the_descriptor_limit() {
        let mut config = Config {
            max_connections: usize::MAX,
            ..Config::default()
        };
        fit_connections_to_fd_limit(&mut config);
        let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
        assert!(config.max_connections as u64 <= soft.saturating_sub(FD_RESERVE).max(1));
    }
}
