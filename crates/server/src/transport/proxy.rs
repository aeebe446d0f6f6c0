//! The PROXY protocol (HAProxy's; v1 text, v2 binary): behind a TCP load balancer every
//! connection comes from the balancer, and the client's own address arrives in a header before
//! the first byte of the line protocol, TLS or HTTP. Only connections from the configured
//! balancers ([`ProxyProtocol::trusts`]) are expected to carry one: from anyone else a header
//! would let a student claim any address, so theirs is just a bad first line.
//!
//! The header is read without reading a byte past it (what follows belongs to the line
//! protocol, TLS or HTTP, each read by its own code): [`next_read`] says, from the bytes read so
//! far, how many more may be read, and parses the header once it is whole. It is a plain
//! function of bytes, tested without a socket; [`read_header`] drives it over a stream. The
//! parsing itself is the `ppp` crate's.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tracing::{debug, warn};

use crate::attendance::subnet::Subnets;
use crate::ops::config::ProxyProtocolConfig;
use crate::ops::metrics::Metrics;

/// The longest v1 header, CRLF included (the specification's limit).
pub const V1_MAX: usize = 107;
/// The fixed part of a v2 header: signature, version and command, family, length.
const V2_FIXED: usize = 16;
/// The shortest header of either version (`PROXY UNKNOWN\r\n`): the first read asks for it.
const SHORTEST: usize = 15;
/// What every v1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Least time between two warnings about bad headers: a misconfigured balancer (one that does
/// not send the header) fails every connection, and one line a minute says so well enough.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the bytes of a header read so far call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read at most this many more bytes: all of them are still the header's.
    Read(usize),
    /// The header is whole: the client's address, or `None` to keep the socket's (a health
    /// check's v2 `LOCAL`, a v1 `UNKNOWN`, an address family other than IP).
    Done(Option<SocketAddr>),
}

/// Why a connection from a trusted balancer has no usable header; it is closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The bytes are not the start of a PROXY header of either version.
    #[error("not a proxy protocol header")]
    NotAHeader,
    /// A v1 header with no CRLF within [`V1_MAX`] bytes.
    #[error("proxy protocol v1 header longer than {V1_MAX} bytes")]
    TooLong,
    /// A header of a known version that does not parse.
    #[error("malformed proxy protocol header: {0}")]
    Malformed(String),
    /// The connection ended inside the header.
    #[error("connection closed after {read} bytes of a proxy protocol header")]
    Closed {
        /// Bytes of the header that had arrived.
        read: usize,
    },
    /// The whole header did not arrive in time.
    #[error("no whole proxy protocol header within {0:?}")]
    Timeout(Duration),
    /// Reading failed.
    #[error("reading a proxy protocol header: {0}")]
    Io(#[from] io::Error),
}

/// From the bytes of a header read so far (`read`, nothing else), how many more may be read,
/// or the header's client address once it is whole.
///
/// Garbage is refused at its first wrong byte rather than after the timeout; a v1 header is
/// read at most two bytes at a time past its first 15 (its end is a CRLF, so two more bytes
/// are always the header's until a CR is seen).
///
/// # Errors
/// [`HeaderError::NotAHeader`], [`HeaderError::TooLong`] or [`HeaderError::Malformed`].
pub fn next_read(read: &[u8]) -> Result<Next, HeaderError> {
    let Some(&first) = read.first() else {
        return Ok(Next::Read(SHORTEST));
    };
    let starts = |marker: &[u8]| {
        let n = read.len().min(marker.len());
        read[..n] == marker[..n]
    };
    if first == V1_PREFIX[0] && starts(V1_PREFIX) {
        v1_next(read)
    } else if first == ppp::v2::PROTOCOL_PREFIX[0] && starts(ppp::v2::PROTOCOL_PREFIX) {
        v2_next(read)
    } else {
        Err(HeaderError::NotAHeader)
    }
}

fn v1_next(read: &[u8]) -> Result<Next, HeaderError> {
    let n = read.len();
    if n < SHORTEST {
        return Ok(Next::Read(SHORTEST - n));
    }
    match memchr::memchr(b'\n', read) {
        Some(end) if end + 1 == n => v1_parse(read),
        Some(_) => Err(HeaderError::Malformed(
            "a line feed inside a v1 header".to_owned(),
        )),
        None => {
            let need = if read[n - 1] == b'\r' { 1 } else { 2 };
            if n + need > V1_MAX {
                Err(HeaderError::TooLong)
            } else {
                Ok(Next::Read(need))
            }
        }
    }
}

fn v1_parse(read: &[u8]) -> Result<Next, HeaderError> {
    use ppp::v1::{Addresses, Header};
    let header = Header::try_from(read).map_err(|e| HeaderError::Malformed(e.to_string()))?;
    // ppp takes the header to end at its first CR: a CR earlier than the final CRLF leaves
    // bytes it did not look at.
    if header.header.len() != read.len() {
        return Err(HeaderError::Malformed(
            "a carriage return inside a v1 header".to_owned(),
        ));
    }
    Ok(Next::Done(match header.addresses {
        Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Unknown => None,
    }))
}

fn v2_next(read: &[u8]) -> Result<Next, HeaderError> {
    let n = read.len();
    if n < V2_FIXED {
        return Ok(Next::Read(V2_FIXED - n));
    }
    let total = V2_FIXED + usize::from(u16::from_be_bytes([read[14], read[15]]));
    if n < total {
        return Ok(Next::Read(total - n));
    }
    v2_parse(read)
}

fn v2_parse(read: &[u8]) -> Result<Next, HeaderError> {
    use ppp::v2::{Addresses, Command, Header};
    let header = Header::try_from(read).map_err(|e| HeaderError::Malformed(e.to_string()))?;
    if header.command == Command::Local {
        return Ok(Next::Done(None));
    }
    Ok(Next::Done(match header.addresses {
        Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Unspecified | Addresses::Unix(_) => None,
    }))
}

/// Reads one PROXY header from `stream`, never a byte past it: the client's address, or
/// `None` to keep the socket's (see [`Next::Done`]). Not bounded in time: see
/// [`ProxyProtocol::client_of`].
///
/// # Errors
/// [`HeaderError`]: not a header, a malformed one, the end of the stream inside it, or I/O.
pub async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<Option<SocketAddr>, HeaderError> {
    // Only connections from a balancer get here; a v2 header with options grows it.
    let mut header = Vec::with_capacity(V1_MAX);
    loop {
        let want = match next_read(&header)? {
            Next::Done(client) => return Ok(client),
            Next::Read(want) => want,
        };
        let start = header.len();
        header.resize(start + want, 0);
        let got = stream.read(&mut header[start..]).await?;
        header.truncate(start + got);
        if got == 0 {
            return Err(HeaderError::Closed { read: start });
        }
    }
}

/// The PROXY protocol as configured (`[proxy_protocol]`): which peers send the header, and
/// how long they have to.
#[derive(Debug)]
pub struct ProxyProtocol {
    from: Subnets,
    timeout: Duration,
    /// When a bad header was last logged as a warning.
    warned: Mutex<Option<Instant>>,
}

impl ProxyProtocol {
    /// The configured PROXY protocol, or `None` when `from` is empty (off, the default).
    ///
    /// # Errors
    /// An entry of `from` that is not a network.
    pub fn from_config(config: &ProxyProtocolConfig) -> Result<Option<Self>, String> {
        if config.from.is_empty() {
            return Ok(None);
        }
        let from = Subnets::parse(&config.from).map_err(|e| format!("proxy_protocol.from: {e}"))?;
        Ok(Some(Self {
            from,
            timeout: config.timeout,
            warned: Mutex::new(None),
        }))
    }

    /// Whether a connection from `ip` must begin with a PROXY header.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.from.allows(ip)
    }

    /// The trusted networks, for the logs.
    pub fn describe(&self) -> String {
        self.from.describe()
    }

    /// Reads the header of a connection from the balancer at `balancer`, within the header
    /// timeout: the client's address (the balancer's own for a health check), or `None` if the
    /// connection must be closed — logged, and counted in `metrics` unless it closed before
    /// sending anything (a plain TCP check or a port probe).
    pub async fn client_of<R: AsyncRead + Unpin>(
        &self,
        stream: &mut R,
        balancer: SocketAddr,
        metrics: &Metrics,
    ) -> Option<SocketAddr> {
        let read = tokio::time::timeout(self.timeout, read_header(stream)).await;
        match read.unwrap_or(Err(HeaderError::Timeout(self.timeout))) {
            Ok(client) => {
                let client = client.unwrap_or(balancer);
                debug!(%client, "proxy protocol header read");
                Some(client)
            }
            Err(HeaderError::Closed { read: 0 }) => {
                debug!("closed before sending a proxy protocol header");
                None
            }
            Err(error) => {
                metrics.bad_proxy_header();
                if self.may_warn(Instant::now()) {
                    warn!(
                        %balancer, %error,
                        "closing a connection from a trusted balancer: no valid proxy protocol \
                         header (does it send one? further ones are logged at debug for a minute)"
                    );
                } else {
                    debug!(%error, "closing a connection without a valid proxy protocol header");
                }
                None
            }
        }
    }

    /// Whether a warning may be logged at `now` (at most one per [`WARN_EVERY`]).
    fn may_warn(&self, now: Instant) -> bool {
        let mut last = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        match *last {
            Some(at) if now.saturating_duration_since(at) < WARN_EVERY => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Command, Protocol, Type, Version};
    use tokio::io::AsyncWriteExt as _;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    /// Feeds `bytes` to [`next_read`] as a reader would: never more than it asks for.
    fn parse_all(bytes: &[u8]) -> Result<(Option<SocketAddr>, usize), HeaderError> {
        let mut read = 0;
        loop {
            match next_read(&bytes[..read])? {
                Next::Done(client) => return Ok((client, read)),
                Next::Read(n) => {
                    assert!(
                        read + n <= bytes.len(),
                        "asked past the input at {read}+{n}"
                    );
                    read += n;
                }
            }
        }
    }

    fn v2(command: Command, addresses: (SocketAddr, SocketAddr)) -> Vec<u8> {
        Builder::with_addresses(Version::Two | command, Protocol::Stream, addresses)
            .build()
            .expect("v2 header")
    }

    #[test]
    fn a_v1_header_gives_the_client_and_not_a_byte_past_its_crlf_is_asked_for() {
        let header = b"PROXY TCP4 192.0.2.7 10.0.0.5 51234 65001\r\n";
        let mut input = header.to_vec();
        input.extend_from_slice(b"JOIN CN_D1_Ann_1\n");
        let (client, used) = parse_all(&input).expect("parses");
        assert_eq!(client, Some(addr("192.0.2.7:51234")));
        assert_eq!(used, header.len());

        let six = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 65001\r\nX";
        let (client, used) = parse_all(six).expect("parses");
        assert_eq!(client, Some(addr("[2001:db8::7]:4000")));
        assert_eq!(used, six.len() - 1);
    }

    #[test]
    fn v1_unknown_and_v2_local_keep_the_socket_address() {
        assert_eq!(
            parse_all(b"PROXY UNKNOWN\r\nGET /").expect("parses"),
            (None, 15)
        );
        let local = v2(Command::Local, (addr("127.0.0.1:1"), addr("127.0.0.1:2")));
        let mut input = local.clone();
        input.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(parse_all(&input).expect("parses"), (None, local.len()));
        // An unspecified family with PROXY is "no address" too (the specification says so).
        let unspec = Builder::new(0x21, 0x00).build().expect("v2 header");
        assert_eq!(parse_all(&unspec).expect("parses"), (None, 16));
    }

    #[test]
    fn a_v2_header_with_tlvs_is_read_whole_and_gives_the_client() {
        let header = Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            (addr("198.51.100.9:40000"), addr("10.0.0.5:65001")),
        )
        .write_tlv(Type::Authority, b"attendance.example.edu")
        .expect("tlv")
        .write_tlv(Type::NoOp, &[0; 40])
        .expect("tlv")
        .build()
        .expect("v2 header");
        assert!(header.len() > V2_FIXED + 12 + 40);
        let mut input = header.clone();
        input.extend_from_slice(b"PING\n");
        let (client, used) = parse_all(&input).expect("parses");
        assert_eq!(client, Some(addr("198.51.100.9:40000")));
        assert_eq!(used, header.len());

        let six = v2(
            Command::Proxy,
            (addr("[2001:db8::9]:5"), addr("[2001:db8::1]:65001")),
        );
        assert_eq!(
            parse_all(&six).expect("parses").0,
            Some(addr("[2001:db8::9]:5"))
        );
    }

    #[test]
    fn garbage_is_refused_at_its_first_wrong_byte() {
        for bad in [
            &b"JOIN CN_D1_Ann_1\n"[..],
            b"GET / HTTP/1.1\r\n",
            b"\x16\x03\x01",
        ] {
            assert!(
                matches!(next_read(bad), Err(HeaderError::NotAHeader)),
                "{bad:?}"
            );
        }
        // "PROXY" then something else, and a v2 signature gone wrong.
        assert!(matches!(next_read(b"PROXZ"), Err(HeaderError::NotAHeader)));
        assert!(matches!(
            next_read(b"\r\n\r\n\0\r\nQUIX"),
            Err(HeaderError::NotAHeader)
        ));
        // A prefix of a real header is not refused: it waits for the rest.
        assert_eq!(next_read(b"PRO").expect("prefix"), Next::Read(12));
        assert_eq!(next_read(b"\r\n\r").expect("prefix"), Next::Read(13));
    }

    #[test]
    fn a_v1_header_without_its_crlf_in_107_bytes_is_too_long() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX + 10, b'a');
        assert!(matches!(parse_all(&long), Err(HeaderError::TooLong)));
        // The longest legal one (107 bytes with its CRLF) is fine.
        let mut max = b"PROXY UNKNOWN ".to_vec();
        max.resize(V1_MAX - 2, b'f');
        max.extend_from_slice(b"\r\n");
        assert_eq!(max.len(), V1_MAX);
        assert_eq!(parse_all(&max).expect("parses"), (None, V1_MAX));
    }

    #[test]
    fn malformed_headers_of_a_known_version_are_refused() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"[..],
            b"PROXY TCP4 not-an-ip 5.6.7.8 1 2\r\n",
            b"PROXY SCTP 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\n",
            b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
        ] {
            assert!(
                matches!(parse_all(bad), Err(HeaderError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Version 1 in the binary header.
        let mut v2_bad = v2(Command::Proxy, (addr("1.2.3.4:1"), addr("5.6.7.8:2")));
        v2_bad[12] = 0x11;
        assert!(matches!(parse_all(&v2_bad), Err(HeaderError::Malformed(_))));
    }

    #[tokio::test]
    async fn a_header_arriving_byte_by_byte_is_read_and_the_stream_keeps_what_follows() {
        let header = v2(
            Command::Proxy,
            (addr("203.0.113.4:7000"), addr("10.0.0.5:65001")),
        );
        for input in [
            b"PROXY TCP4 203.0.113.4 10.0.0.5 7000 65001\r\n".to_vec(),
            header,
        ] {
            let (mut client, mut server) = tokio::io::duplex(1);
            let sender = tokio::spawn(async move {
                for byte in input {
                    client.write_all(&[byte]).await.expect("write");
                    tokio::task::yield_now().await;
                }
                client.write_all(b"PING\n").await.expect("write");
                client
            });
            let got = read_header(&mut server).await.expect("header");
            assert_eq!(got, Some(addr("203.0.113.4:7000")));
            let mut rest = [0u8; 5];
            server.read_exact(&mut rest).await.expect("rest");
            assert_eq!(&rest, b"PING\n");
            let _client = sender.await.expect("sender");
        }
    }

    #[tokio::test]
    async fn a_stream_ending_inside_the_header_says_how_much_came() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"PROXY TCP4 1.2").await.expect("write");
        drop(client);
        assert!(matches!(
            read_header(&mut server).await,
            Err(HeaderError::Closed { read: 14 })
        ));
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        assert!(matches!(
            read_header(&mut server).await,
            Err(HeaderError::Closed { read: 0 })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trusted_peer_gets_the_timeout_and_bad_headers_are_counted() {
        let config = ProxyProtocolConfig {
            from: vec!["127.0.0.1".to_owned()],
            timeout: Duration::from_millis(200),
        };
        let proxy = ProxyProtocol::from_config(&config)
            .expect("valid")
            .expect("on");
        assert!(proxy.trusts("127.0.0.1".parse().expect("ip")));
        assert!(proxy.trusts("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!proxy.trusts("127.0.0.2".parse().expect("ip")));
        let metrics = Metrics::new();
        let balancer = addr("127.0.0.1:9");

        // Silent: the timeout closes it (the paused clock jumps to it).
        let (_client, mut server) = tokio::io::duplex(64);
        assert_eq!(proxy.client_of(&mut server, balancer, &metrics).await, None);
        // Garbage: closed at once.
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"JOIN x\n").await.expect("write");
        assert_eq!(proxy.client_of(&mut server, balancer, &metrics).await, None);
        // Closed before a byte: not counted.
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        assert_eq!(proxy.client_of(&mut server, balancer, &metrics).await, None);
        // A health check: the balancer's own address.
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"PROXY UNKNOWN\r\n").await.expect("write");
        assert_eq!(
            proxy.client_of(&mut server, balancer, &metrics).await,
            Some(balancer)
        );
        assert!(
            metrics
                .encode()
                .contains("attendanced_proxy_header_errors_total 2"),
            "{}",
            metrics.encode()
        );
    }

    #[test]
    fn an_empty_list_is_off_and_a_bad_network_is_named() {
        let mut config = ProxyProtocolConfig::default();
        assert!(
            ProxyProtocol::from_config(&config)
                .expect("valid")
                .is_none()
        );
        config.from = vec!["10.0.0.0/33".to_owned()];
        let e = ProxyProtocol::from_config(&config).expect_err("bad");
        assert!(
            e.contains("proxy_protocol.from") && e.contains("10.0.0.0/33"),
            "{e}"
        );
    }

    #[test]
    fn warnings_come_at_most_once_a_minute() {
        let proxy = ProxyProtocol {
            from: Subnets::parse(&[]).expect("empty"),
            timeout: Duration::from_secs(5),
            warned: Mutex::new(None),
        };
        let t0 = Instant::now();
        assert!(proxy.may_warn(t0));
        assert!(!proxy.may_warn(t0 + Duration::from_secs(59)));
        assert!(proxy.may_warn(t0 + WARN_EVERY));
    }
}
