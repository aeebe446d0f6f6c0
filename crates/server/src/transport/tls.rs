//! Optional TLS on the student port (rustls with the ring provider; no OpenSSL).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::daemon::ServerError;
use crate::ops::config::Startup;

/// The TLS acceptor for the configured certificate and key, or `None` when TLS is off.
///
/// # Errors
/// [`ServerError::Tls`] if the files cannot be read or do not hold a usable certificate and key.
pub(crate) fn acceptor(config: &Startup) -> Result<Option<TlsAcceptor>, ServerError> {
    let (Some(cert_path), Some(key_path)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| ServerError::Tls(format!("certificate {}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "certificate {}: no certificate found",
            cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| ServerError::Tls(format!("key {}: {e}", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}
