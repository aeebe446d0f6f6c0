//! Optional TLS to the server (rustls with the ring provider): whom to trust, the name to check
//! the certificate against, and one stream type for plain TCP and TLS so the session is the same
//! over both.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use crate::session::ClientError;

/// Which certificate authorities a TLS connection trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's trusted roots (found by `rustls-native-certs`).
    System,
    /// Exactly the PEM certificates in this file, and nothing else.
    CaFile(PathBuf),
}

impl std::fmt::Display for Trust {
    /// What was trusted, for error messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::System => {
                f.write_str("the system's root certificates; pass --ca FILE for a private CA")
            }
            Self::CaFile(path) => write!(f, "only the CA certificates in {}", path.display()),
        }
    }
}

/// The TLS client settings for `trust`: the ring provider and rustls' safe default protocol
/// versions (TLS 1.2 and 1.3), no client certificate.
///
/// # Errors
/// [`ClientError::TlsSetup`] if the CA file cannot be read or holds no usable certificate, or if
/// the system has no trusted roots.
pub fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, ClientError> {
    let roots = match trust {
        Trust::CaFile(path) => roots_from_file(path)?,
        Trust::System => system_roots()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::TlsSetup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn roots_from_file(path: &Path) -> Result<RootCertStore, ClientError> {
    let setup = |what: String| ClientError::TlsSetup(format!("CA file {}: {what}", path.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| setup(e.to_string()))?;
    if certs.is_empty() {
        return Err(setup("no PEM certificate found".into()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| setup(format!("unusable certificate: {e}")))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, ClientError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = match found.errors.first() {
            Some(e) => format!(" ({e})"),
            None => String::new(),
        };
        return Err(ClientError::TlsSetup(format!(
            "no trusted root certificates found on this system{why}; pass --ca FILE"
        )));
    }
    Ok(roots)
}

/// The name the server's certificate must be valid for: the host part of `server`
/// (`HOST:PORT`, `[IPv6]:PORT`), a DNS name or an IP address.
///
/// # Errors
/// [`ClientError::TlsSetup`] if the host is neither.
pub fn server_name(server: &str) -> Result<ServerName<'static>, ClientError> {
    let host = match server.rsplit_once(':') {
        // A bare IPv6 address has colons but no port; leave it whole.
        Some((host, _port)) if !host.contains(':') || host.starts_with('[') => host,
        _ => server,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned()).map_err(|_| {
        ClientError::TlsSetup(format!(
            "{host:?} (from --server {server}) is not a DNS name or IP address a certificate can be checked against"
        ))
    })
}

/// Runs the TLS handshake over `tcp`, checking the certificate against `name`.
///
/// # Errors
/// [`ClientError::Certificate`] if the certificate is not trusted or not valid for `name`;
/// [`ClientError::TlsHandshake`] if the handshake fails otherwise (e.g. the server does not
/// speak TLS).
pub(crate) async fn handshake(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    tcp: TcpStream,
    addr: &str,
    trust: &Trust,
) -> Result<TlsStream<TcpStream>, ClientError> {
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| handshake_error(addr, trust, e))
}

/// Sorts a failed handshake into a certificate problem or any other failure.
fn handshake_error(addr: &str, trust: &Trust, e: io::Error) -> ClientError {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(source @ rustls::Error::InvalidCertificate(_)) => ClientError::Certificate {
            addr: addr.to_owned(),
            trusted: trust.to_string(),
            source: source.clone(),
        },
        _ => ClientError::TlsHandshake {
            addr: addr.to_owned(),
            source: e,
        },
    }
}

/// The connection to the server: plain TCP (`Left`) or TLS over TCP (`Right`, boxed: the TLS
/// state is much larger than a socket). tokio-util's `Either` forwards reads and writes to
/// whichever it holds.
pub(crate) type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn name(server: &str) -> String {
        match server_name(server) {
            Ok(ServerName::DnsName(n)) => format!("dns {}", n.as_ref()),
            Ok(ServerName::IpAddress(ip)) => format!("ip {:?}", std::net::IpAddr::from(ip)),
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn the_host_part_of_the_server_is_the_certificate_name() {
        assert_eq!(name("localhost:65001"), "dns localhost");
        assert_eq!(
            name("attendance.example.edu:443"),
            "dns attendance.example.edu"
        );
        assert_eq!(name("127.0.0.1:65001"), "ip 127.0.0.1");
        assert_eq!(name("[::1]:65001"), "ip ::1");
        assert_eq!(name("::1"), "ip ::1");
        assert_eq!(name("localhost"), "dns localhost");
    }

    #[test]
    fn a_host_that_cannot_be_a_certificate_name_is_a_setup_error() {
        let err = server_name("bad host!:65001").expect_err("not a name");
        assert!(matches!(err, ClientError::TlsSetup(_)), "{err:?}");
        assert_eq!(err.exit_code(), crate::exit::USAGE);
    }

    #[test]
    fn a_ca_file_must_exist_and_hold_a_certificate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.pem");
        let err = client_config(&Trust::CaFile(missing)).expect_err("missing file");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        let err = client_config(&Trust::CaFile(garbage)).expect_err("no certificate");
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        assert_eq!(err.exit_code(), crate::exit::USAGE);
    }
}
