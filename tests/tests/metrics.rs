//! `--metrics-listen`: the daemon serves Prometheus text at `/metrics`, and its counters move
//! with joins, marks and errors.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use attendance_tests::Daemon;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Sends one HTTP/1.1 request and returns the status code and body.
async fn http_get(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8(response)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))?;
    let length: Option<usize> = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .and_then(|v| v.trim().parse().ok())
    });
    if length != Some(body.len()) {
        bail!(
            "content-length {length:?} but the body has {} bytes",
            body.len()
        );
    }
    Ok((status, body.to_owned()))
}

/// Parses the exposition: every sample line is `name{labels} value` (or `name value`), every
/// other line a `#` comment, and the last one `# EOF`. Returns the samples by series.
fn parse(text: &str) -> Result<HashMap<String, f64>> {
    let mut samples = HashMap::new();
    let lines: Vec<&str> = text.lines().collect();
    if lines.last() != Some(&"# EOF") {
        bail!("exposition does not end with # EOF");
    }
    for line in lines {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| anyhow!("not `series value`: {line:?}"))?;
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            bail!("bad metric name in {line:?}");
        }
        if name_end < series.len() && !series.ends_with('}') {
            bail!("unclosed labels in {line:?}");
        }
        let value: f64 = value
            .parse()
            .map_err(|_| anyhow!("bad value in {line:?}"))?;
        samples.insert(series.to_owned(), value);
    }
    Ok(samples)
}

fn get(samples: &HashMap<String, f64>, series: &str) -> Result<f64> {
    samples
        .get(series)
        .copied()
        .with_context(|| format!("{series} missing"))
}

#[tokio::test]
async fn metrics_are_served_and_move_with_joins_marks_and_errors() -> Result<()> {
    let mut d = Daemon::start(&["--class-length", "1s", "--metrics-listen", "127.0.0.1:0"])?;
    let line = d.wait_for_log("metrics listening on ")?;
    let addr: SocketAddr = line
        .split("metrics listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .context("no address")?
        .parse()?;
    assert_ne!(
        addr, d.addr,
        "the harness took the student port, not the metrics one"
    );

    let (status, body) = http_get(addr, "GET", "/metrics").await?;
    assert_eq!(status, 200, "{body}");
    let before = parse(&body)?;
    assert_eq!(get(&before, "attendanced_joins_total")?, 0.0);
    assert_eq!(get(&before, "attendanced_marks_total")?, 0.0);
    assert_eq!(
        get(&before, "attendanced_errors_total{code=\"UNKNOWN\"}")?,
        0.0
    );
    let build = before
        .keys()
        .find(|k| k.starts_with("attendanced_build_info{"))
        .context("no build info")?;
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    assert!(build.contains("commit=\""), "{build}");

    let mut student = d.connect().await?;
    student.cmd("JOIN CN_D1_Ann_1").await?;
    assert!(student.cmd("DANCE").await?.starts_with("ERR UNKNOWN "));
    assert!(student.cmd("PRESENT").await?.starts_with("ERR EARLY "));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let marked = student.cmd("PRESENT").await?;
    assert!(marked.starts_with("OK PRESENT "), "{marked}");

    let (_, body) = http_get(addr, "GET", "/metrics").await?;
    let after = parse(&body)?;
    assert_eq!(get(&after, "attendanced_connections")?, 1.0);
    assert_eq!(get(&after, "attendanced_joined_students")?, 1.0);
    assert_eq!(get(&after, "attendanced_classes")?, 1.0);
    assert_eq!(get(&after, "attendanced_joins_total")?, 1.0);
    assert_eq!(get(&after, "attendanced_marks_total")?, 1.0);
    assert_eq!(
        get(&after, "attendanced_errors_total{code=\"UNKNOWN\"}")?,
        1.0
    );
    assert_eq!(
        get(&after, "attendanced_errors_total{code=\"EARLY\"}")?,
        1.0
    );
    assert_eq!(get(&after, "attendanced_writer_batch_size_count")?, 1.0);
    assert_eq!(get(&after, "attendanced_writer_batch_size_sum")?, 1.0);
    assert_eq!(
        get(&after, "attendanced_fsync_duration_seconds_count")?,
        1.0
    );
    assert!(after.contains_key("attendanced_fsync_duration_seconds_bucket{le=\"+Inf\"}"));
    assert!(after.contains_key("attendanced_broadcast_lags_total"));

    assert_eq!(http_get(addr, "GET", "/").await?.0, 404);
    assert_eq!(http_get(addr, "POST", "/metrics").await?.0, 405);
    Ok(())
}

#[tokio::test]
async fn there_is_no_metrics_listener_by_default() -> Result<()> {
    let mut d = Daemon::start(&[])?;
    let mut student = d.connect().await?;
    student.cmd("PING").await?;
    assert!(
        !d.drain_logs()
            .iter()
            .any(|l| l.contains("metrics listening")),
        "metrics are off unless asked for"
    );
    Ok(())
}
