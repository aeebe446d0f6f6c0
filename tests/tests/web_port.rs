//! The web port as the daemon runs it: on by default beside the student port, `off` turns it
//! off, a port that cannot be bound stops the start, `/healthz` answers and `/metrics` stays on
//! `metrics_listen`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use attendance_tests::Daemon;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One request with `Connection: close`: (status, head, body).
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .context("no response")??;
    let text = String::from_utf8(response)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))?;
    Ok((status, head.to_owned(), body.to_owned()))
}

#[tokio::test]
async fn healthz_answers_on_the_web_port_and_metrics_stay_off_it() -> Result<()> {
    let d = Daemon::start(&[])?;
    let mut student = d.connect().await?;
    student.cmd("JOIN Web_D1_Ann_1").await?;
    let (status, head, body) = get(d.web(), "/healthz").await?;
    assert_eq!(status, 200, "{head}\n{body}");
    let health: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(health["status"], "ok", "{body}");
    assert_eq!(health["joined"], 1, "{body}");
    let (status, _, _) = get(d.web(), "/metrics").await?;
    assert_eq!(status, 404, "metrics are not public on the web port");
    Ok(())
}

#[tokio::test]
async fn web_listen_off_serves_no_web_port() -> Result<()> {
    let mut d = Daemon::start(&["--web-listen", "off"])?;
    assert!(d.web.is_none());
    let mut student = d.connect().await?;
    assert_eq!(student.cmd("PING").await?, "OK PONG");
    assert!(
        !d.drain_logs().iter().any(|l| l.contains("web listening")),
        "no web listener when off"
    );
    Ok(())
}

#[test]
fn a_web_port_in_use_stops_the_start_naming_the_setting() -> Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let dir = tempfile::tempdir()?;
    let (status, log) = Daemon::run_to_failure(dir.path(), &["--web-listen", &addr])?;
    assert!(!status.success(), "{log}");
    assert!(log.contains("web_listen"), "{log}");
    assert!(log.contains(&addr), "{log}");
    Ok(())
}
