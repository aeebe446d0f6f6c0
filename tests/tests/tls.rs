//! TLS on the student port: the real daemon with a certificate made at test time (rcgen), a
//! TLS client in the test, and the real `attend --tls`.
//!
//! The daemon is given its certificate and key through a config file (`tls_cert`, `tls_key`),
//! written beside the CSV in the daemon's own temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use attendance_protocol::LineCodec;
use attendance_tests::{Daemon, LINE_TIMEOUT, read_rows};
use futures::{SinkExt as _, StreamExt as _};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// The exit code of `attend` when the server's certificate is not trusted.
const EXIT_CERTIFICATE: i32 = 6;
/// The exit code of `attend` when the server cannot be reached (or no TLS handshake is possible).
const EXIT_UNREACHABLE: i32 = 3;
/// The daemon's exit code for a configuration problem.
const EX_CONFIG: i32 = 78;

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses) signed by this CA, as
    /// (certificate PEM, private key PEM).
    fn leaf(&self, names: &[&str]) -> Result<(String, String)> {
        let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &*self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Files of a TLS set-up in a daemon's directory.
struct TlsFiles {
    dir: tempfile::TempDir,
    /// The CA that signed the server's certificate.
    ca: PathBuf,
    /// The config file naming the certificate and key.
    config: PathBuf,
}

/// A directory with a CA, a certificate for `names` signed by it, its key, and a config file
/// turning TLS on with them.
fn tls_files(names: &[&str]) -> Result<TlsFiles> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("attendanced test CA")?;
    let (cert, key) = ca.leaf(names)?;
    let ca_path = write(dir.path(), "ca.pem", &ca.pem())?;
    let cert_path = write(dir.path(), "server.pem", &cert)?;
    let key_path = write(dir.path(), "server.key", &key)?;
    let config = write(
        dir.path(),
        "tls.toml",
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            cert_path.display().to_string(),
            key_path.display().to_string()
        ),
    )?;
    Ok(TlsFiles {
        dir,
        ca: ca_path,
        config,
    })
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// Starts a TLS daemon with a certificate for `localhost` and `127.0.0.1`; `args` are added.
fn start_tls_daemon(args: &[&str]) -> Result<(Daemon, PathBuf)> {
    let files = tls_files(&["localhost", "127.0.0.1"])?;
    let config = files.config.display().to_string();
    let mut all = vec!["--config", config.as_str()];
    all.extend_from_slice(args);
    let daemon = Daemon::start_in(files.dir, &all)?;
    Ok((daemon, files.ca))
}

/// A TLS line client over the daemon's port, trusting exactly the CA in `ca`.
async fn tls_connect(
    daemon: &Daemon,
    ca: &Path,
    name: &str,
) -> Result<Framed<tokio_rustls::client::TlsStream<TcpStream>, LineCodec>> {
    let tls = tls_stream(daemon.addr, ca, name).await?;
    Ok(Framed::new(tls, LineCodec::new(1 << 16)))
}

/// A TLS connection to `addr`, trusting exactly the CA in `ca`.
async fn tls_stream(
    addr: std::net::SocketAddr,
    ca: &Path,
    name: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    tls_stream_after(addr, ca, name, b"").await
}

/// A TLS connection to `addr` whose first bytes, before the handshake, are `header` (a load
/// balancer's PROXY header).
async fn tls_stream_after(
    addr: std::net::SocketAddr,
    ca: &Path,
    name: &str,
    header: &[u8],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use tokio::io::AsyncWriteExt as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(header).await?;
    let server_name = ServerName::try_from(name.to_owned())?;
    let tls = tokio::time::timeout(LINE_TIMEOUT, connector.connect(server_name, tcp))
        .await
        .context("TLS handshake timed out")??;
    Ok(tls)
}

#[tokio::test]
async fn the_web_port_serves_https_with_the_same_certificate() -> Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (d, ca) = start_tls_daemon(&[])?;
    let web = d.web();
    let mut tls = tls_stream(web, &ca, "localhost").await?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(LINE_TIMEOUT, tls.read_to_end(&mut response))
        .await
        .context("no response over HTTPS")??;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"status\":\"ok\""), "{response}");

    // Plain HTTP on the HTTPS port gets no page.
    let mut plain = TcpStream::connect(web).await?;
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let got = read_until_closed(&mut plain, LINE_TIMEOUT).await?;
    assert!(
        !String::from_utf8_lossy(&got).contains("\"status\""),
        "{}",
        String::from_utf8_lossy(&got)
    );
    Ok(())
}

#[tokio::test]
async fn the_dashboard_cookie_is_secure_over_https() -> Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (d, ca) = start_tls_daemon(&[])?;
    let mut tls = tls_stream(d.web(), &ca, "localhost").await?;
    let form = format!("token={}", d.token()?);
    let request = format!(
        "POST /teacher/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    tls.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(LINE_TIMEOUT, tls.read_to_end(&mut response))
        .await
        .context("no response over HTTPS")??;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 303"), "{response}");
    let cookie = response
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .context("no cookie")?;
    for part in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    Ok(())
}

/// The next line on a framed stream, bounded by [`LINE_TIMEOUT`].
async fn next_line<S>(framed: &mut Framed<S, LineCodec>) -> Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(LINE_TIMEOUT, framed.next()).await {
        Err(_) => bail!("no line within {LINE_TIMEOUT:?}"),
        Ok(None) => bail!("connection closed"),
        Ok(Some(Err(e))) => Err(e.into()),
        Ok(Some(Ok(Err(e)))) => bail!("bad line from server: {e}"),
        Ok(Some(Ok(Ok(line)))) => Ok(line),
    }
}

/// Sends one line and returns the next line that is not an `EVENT`.
async fn command<S>(framed: &mut Framed<S, LineCodec>, line: &str) -> Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    framed.send(bytes::Bytes::from(format!("{line}\n"))).await?;
    loop {
        let reply = next_line(framed).await?;
        if !reply.starts_with("EVENT ") {
            return Ok(reply);
        }
    }
}

use attendance_tests::run_attend;

#[tokio::test]
async fn a_tls_client_is_greeted_joins_and_is_marked_present() -> Result<()> {
    let (d, ca) = start_tls_daemon(&["--class-length", "0s"])?;
    let mut tls = tls_connect(&d, &ca, "localhost").await?;
    let hello = next_line(&mut tls).await?;
    assert!(hello.starts_with("HELLO attendanced/"), "{hello}");

    let joined = command(&mut tls, "JOIN ComputerNetworks_Div1_JayPatel_18BCP043").await?;
    assert_eq!(
        joined, "OK JOIN ComputerNetworks Div1 JayPatel 18BCP043 0",
        "a class of 0 s needs no wait"
    );
    let marked = command(&mut tls, "PRESENT").await?;
    let marked_at = marked
        .strip_prefix("OK PRESENT ")
        .with_context(|| format!("expected OK PRESENT, got {marked:?}"))?;
    assert_eq!(command(&mut tls, "QUIT").await?, "OK BYE");

    let rows = read_rows(&d.csv_path()).await?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(
        (
            row.course.as_str(),
            row.division.as_str(),
            row.name.as_str(),
            row.roll.as_str(),
            row.status.as_str(),
            row.client_addr.as_str(),
        ),
        (
            "ComputerNetworks",
            "Div1",
            "JayPatel",
            "18BCP043",
            "Present",
            "127.0.0.1"
        )
    );
    assert_eq!(row.marked_at, marked_at);
    Ok(())
}

#[tokio::test]
async fn behind_a_balancer_the_proxy_header_comes_before_the_tls_handshake() -> Result<()> {
    let files = tls_files(&["localhost", "127.0.0.1"])?;
    let mut config = std::fs::read_to_string(&files.config)?;
    config.push_str("[proxy_protocol]\nfrom = [\"127.0.0.1\"]\n");
    std::fs::write(&files.config, config)?;
    let config = files.config.display().to_string();
    let d = Daemon::start_in(files.dir, &["--config", &config, "--class-length", "0s"])?;
    let header = b"PROXY TCP4 192.0.2.77 127.0.0.1 40000 65001\r\n";
    let tls = tls_stream_after(d.addr, &files.ca, "localhost", header).await?;
    let mut tls = Framed::new(tls, LineCodec::new(1 << 16));
    let hello = next_line(&mut tls).await?;
    assert!(hello.starts_with("HELLO "), "{hello}");
    let joined = command(&mut tls, "JOIN CN_D1_Ann_1").await?;
    assert!(joined.starts_with("OK JOIN "), "{joined}");
    let marked = command(&mut tls, "PRESENT").await?;
    assert!(marked.starts_with("OK PRESENT "), "{marked}");
    let rows = read_rows(&d.csv_path()).await?;
    assert_eq!(rows[0].client_addr, "192.0.2.77", "{rows:?}");
    // HTTPS on the web port too: the header, then TLS, then the request.
    let check = b"PROXY UNKNOWN\r\n";
    let mut https = tls_stream_after(d.web(), &files.ca, "localhost", check).await?;
    use tokio::io::AsyncWriteExt as _;
    https
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(LINE_TIMEOUT, https.read_to_end(&mut response))
        .await
        .context("no response over HTTPS")??;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    Ok(())
}

#[tokio::test]
async fn attend_with_tls_and_the_servers_ca_checks_in() -> Result<()> {
    let (d, ca) = start_tls_daemon(&["--class-length", "0s"])?;
    let ca = ca.display().to_string();
    let (code, out, err) = run_attend(
        &d.addr.to_string(),
        &[
            "--tls",
            "--ca",
            &ca,
            "ComputerNetworks_Div1_JayPatel_18BCP043",
        ],
    )?;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("Connected to attendanced"), "{out}");
    assert!(out.contains("marked"), "{out}");

    let rows = read_rows(&d.csv_path()).await?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].name.as_str(), rows[0].roll.as_str()),
        ("JayPatel", "18BCP043")
    );
    assert!(
        out.contains(rows[0].marked_at.as_str()),
        "the client shows the server's time:\n{out}"
    );

    // The certificate also names `localhost`: checked against the DNS name this time.
    let by_name = format!("localhost:{}", d.addr.port());
    let (code, out, err) = run_attend(&by_name, &["--tls", "--ca", &ca, "CN_D1_Ann_1"])?;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(read_rows(&d.csv_path()).await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn attend_refuses_a_certificate_from_another_ca() -> Result<()> {
    let (d, _right_ca) = start_tls_daemon(&["--class-length", "0s"])?;
    let other = Ca::new("some other CA")?;
    let other_path = write(d.dir.path(), "other-ca.pem", &other.pem())?;
    let other_path = other_path.display().to_string();

    let (code, out, err) = run_attend(
        &d.addr.to_string(),
        &["--tls", "--ca", &other_path, "CN_D1_Ann_1"],
    )?;
    assert_eq!(code, EXIT_CERTIFICATE, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("certificate"), "{err}");
    assert!(
        !out.contains("Connected"),
        "nothing is trusted before the check:\n{out}"
    );
    assert!(
        read_rows(&d.csv_path()).await?.is_empty(),
        "no mark through an untrusted server"
    );
    Ok(())
}

#[tokio::test]
async fn attend_refuses_a_certificate_for_another_name() -> Result<()> {
    let files = tls_files(&["attendance.example.edu"])?;
    let ca = files.ca.display().to_string();
    let config = files.config.display().to_string();
    let d = Daemon::start_in(files.dir, &["--config", &config])?;

    let (code, out, err) = run_attend(&d.addr.to_string(), &["--tls", "--ca", &ca, "CN_D1_Ann_1"])?;
    assert_eq!(code, EXIT_CERTIFICATE, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("certificate"), "{err}");
    Ok(())
}

#[tokio::test]
async fn attend_with_tls_against_a_plain_server_fails_as_unreachable() -> Result<()> {
    let d = Daemon::start(&["--class-length", "0s"])?;
    let ca = Ca::new("unused CA")?;
    let ca_path = write(d.dir.path(), "ca.pem", &ca.pem())?;
    let ca_path = ca_path.display().to_string();

    let (code, out, err) = run_attend(
        &d.addr.to_string(),
        &["--tls", "--ca", &ca_path, "CN_D1_Ann_1"],
    )?;
    assert_eq!(code, EXIT_UNREACHABLE, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("TLS handshake"), "{err}");
    assert!(read_rows(&d.csv_path()).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn attend_with_an_unusable_ca_file_is_a_usage_error() -> Result<()> {
    let (d, _ca) = start_tls_daemon(&[])?;
    let garbage = write(d.dir.path(), "garbage.pem", "this is not a certificate\n")?;
    let garbage = garbage.display().to_string();

    let (code, _, err) = run_attend(
        &d.addr.to_string(),
        &["--tls", "--ca", &garbage, "CN_D1_Ann_1"],
    )?;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("garbage.pem"),
        "the message names the file: {err}"
    );
    Ok(())
}

/// Reads what the server sends until it closes; fails if it is still open after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Result<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => bail!(
                "still open after {limit:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0) | Err(_)) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_plain_client_on_the_tls_port_gets_no_greeting_and_is_closed() -> Result<()> {
    let (d, _ca) = start_tls_daemon(&["--login-timeout", "1s"])?;

    // Silent: the daemon waits for a TLS ClientHello, then gives up after the login timeout.
    let started = Instant::now();
    let mut silent = TcpStream::connect(d.addr).await?;
    let got = read_until_closed(&mut silent, LINE_TIMEOUT).await?;
    assert!(
        got.is_empty(),
        "nothing in plaintext: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed by the login timeout, not at once"
    );

    // Talking the line protocol in plaintext: not a TLS record, so the handshake fails.
    let mut talker = TcpStream::connect(d.addr).await?;
    tokio::io::AsyncWriteExt::write_all(
        &mut talker,
        b"JOIN ComputerNetworks_Div1_JayPatel_18BCP043\nPRESENT\n",
    )
    .await?;
    let got = read_until_closed(&mut talker, LINE_TIMEOUT).await?;
    let text = String::from_utf8_lossy(&got);
    assert!(
        !text.contains("HELLO") && !text.contains("OK") && !text.contains("ERR"),
        "no protocol line in plaintext: {text:?}"
    );
    assert!(
        read_rows(&d.csv_path())
            .await
            .map_or(true, |rows| rows.is_empty())
    );
    Ok(())
}

#[test]
fn the_daemon_refuses_half_a_tls_setting_or_a_garbage_certificate() -> Result<()> {
    // A certificate without its key.
    let files = tls_files(&["localhost"])?;
    let cert = files.dir.path().join("server.pem");
    let only_cert = write(
        files.dir.path(),
        "only-cert.toml",
        &format!("tls_cert = {:?}\n", cert.display().to_string()),
    )?;
    let only_cert = only_cert.display().to_string();
    let (status, log) = Daemon::run_to_failure(files.dir.path(), &["--config", &only_cert])?;
    assert_eq!(status.code(), Some(EX_CONFIG), "{log}");
    assert!(
        log.contains("tls_key"),
        "the log says what is missing: {log}"
    );

    // A certificate file that holds no certificate.
    let garbage = write(files.dir.path(), "garbage.pem", "not a certificate\n")?;
    let key = files.dir.path().join("server.key");
    let bad_cert = write(
        files.dir.path(),
        "bad-cert.toml",
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            garbage.display().to_string(),
            key.display().to_string()
        ),
    )?;
    let bad_cert = bad_cert.display().to_string();
    let (status, log) = Daemon::run_to_failure(files.dir.path(), &["--config", &bad_cert])?;
    assert_eq!(status.code(), Some(EX_CONFIG), "{log}");
    assert!(log.contains("certificate"), "{log}");
    Ok(())
}
