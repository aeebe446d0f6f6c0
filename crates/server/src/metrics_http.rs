//! The `/metrics` endpoint: a minimal HTTP/1.1 responder for Prometheus scrapes on
//! `metrics_listen`. It reads one bounded request head, answers `GET /metrics` (anything else
//! gets 404 or 405) and closes, so no HTTP library is needed for a single read-only page.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::server::Shared;

/// Longest request head read; a longer one gets 431 and is closed.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a scraper has to send its request and read the answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once; more are closed at once.
const MAX_SCRAPES: usize = 8;
/// The content type of prometheus-client's text encoding.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves scrapes on `listener` until the server shuts down.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shared.shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, "too many metrics scrapes at once; closing");
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if tokio::time::timeout(TIMEOUT, answer(stream, &shared))
                .await
                .is_err()
            {
                debug!(%peer, "metrics scrape timed out");
            }
            drop(slot);
        });
    }
}

/// The current metrics, with the gauges read from the live state.
pub(crate) fn scrape(shared: &Shared) -> String {
    let classes = shared.classes.snapshot();
    let joined = classes.iter().map(|(_, n)| n).sum();
    shared.metrics.set_gauges(
        shared.open_connections(),
        joined,
        classes.len(),
        shared.store.queued(),
    );
    shared.metrics.encode()
}

/// Reads one request head and writes one response.
async fn answer(mut stream: TcpStream, shared: &Shared) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() > MAX_REQUEST {
            break false;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    };
    let response = if complete {
        respond(&head, || scrape(shared))
    } else {
        plain(
            431,
            "Request Header Fields Too Large",
            "request too large\n",
        )
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// The response to the request head `head`; `body` renders the metrics.
fn respond(head: &[u8], body: impl FnOnce() -> String) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut words = text.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = body();
            let mut out = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            if method == "GET" {
                out.extend_from_slice(body.as_bytes());
            }
            out
        }
        (_, "/metrics") => plain(405, "Method Not Allowed", "only GET /metrics\n"),
        _ => plain(404, "Not Found", "metrics are at /metrics\n"),
    }
}

fn plain(status: u16, reason: &str, body: &str) -> Vec<u8> {
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n{allow}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_line(response: &[u8]) -> String {
        String::from_utf8_lossy(response)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn only_get_metrics_is_served() {
        let body = || "m 1\n# EOF\n".to_owned();
        let ok = respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", body);
        let text = String::from_utf8_lossy(&ok);
        assert_eq!(status_line(&ok), "HTTP/1.1 200 OK");
        assert!(text.contains("Content-Length: 10\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nm 1\n# EOF\n"), "{text}");
        let head = respond(b"HEAD /metrics?x=1 HTTP/1.1\r\n\r\n", body);
        assert!(String::from_utf8_lossy(&head).ends_with("\r\n\r\n"));
        assert_eq!(
            status_line(&respond(b"POST /metrics HTTP/1.1\r\n\r\n", body)),
            "HTTP/1.1 405 Method Not Allowed"
        );
        assert_eq!(
            status_line(&respond(b"GET / HTTP/1.1\r\n\r\n", body)),
            "HTTP/1.1 404 Not Found"
        );
        assert_eq!(
            status_line(&respond(b"\r\n\r\n", body)),
            "HTTP/1.1 404 Not Found"
        );
    }
}
