//! The web port as the daemon runs it: on by default beside the student port, `off` turns it
//! off, a port that cannot be bound stops the start, `/healthz` answers and `/metrics` stays on
//! `metrics_listen`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use attendance_tests::{Daemon, http};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One request with `Connection: close`: (status, head, body).
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String, String)> {
    let r = http::get(addr, path, &[]).await?;
    Ok((r.status, r.head.clone(), r.text()))
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

#[tokio::test]
async fn every_response_carries_the_security_headers_and_unknown_paths_are_404() -> Result<()> {
    let d = Daemon::start(&[])?;
    for path in ["/healthz", "/no/such/page", "/../etc/passwd"] {
        let (status, head, _) = get(d.web(), path).await?;
        if path != "/healthz" {
            assert_eq!(status, 404, "{path}: {head}");
        }
        let head = head.to_ascii_lowercase();
        for needle in [
            "content-security-policy: default-src 'self'; script-src 'self';",
            "frame-ancestors 'none'",
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
            "x-frame-options: deny",
        ] {
            assert!(head.contains(needle), "{path}: no {needle:?} in\n{head}");
        }
        assert!(!head.contains("unsafe-inline"), "{head}");
    }
    Ok(())
}

#[tokio::test]
async fn a_request_head_trickled_byte_by_byte_is_cut_off_by_the_header_timeout() -> Result<()> {
    let d = Daemon::start(&[])?;
    let mut stream = TcpStream::connect(d.web()).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await?;
    let started = std::time::Instant::now();
    // A byte every 200 ms, never ending the header: the server must close within its 10 s
    // header timeout (bounded: 150 bytes, 30 s).
    let mut closed = false;
    for _ in 0..150 {
        if stream.write_all(b"a").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            // A 408 (or any answer) before the close is fine; the close must follow.
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
    }
    assert!(closed, "still open after {:?}", started.elapsed());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(20),
        "{took:?}"
    );
    Ok(())
}
