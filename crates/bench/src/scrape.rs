//! One number from the daemon's Prometheus endpoint (`metrics_listen`): a plain HTTP/1.0 `GET
//! /metrics`, read to the end (the daemon closes after one answer). The bench needs a counter,
//! not an HTTP client.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Longest wait for one scrape, connect to end of answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of an answer read (the daemon's page is a few KiB).
const MAX_BYTES: u64 = 1 << 20;

/// The value of the sample `name` on the page at `addr`, or `None` if the page cannot be read
/// in time or has no such sample.
pub(crate) async fn sample(addr: SocketAddr, name: &str) -> Option<f64> {
    let fetch = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .await
            .ok()?;
        let mut page = Vec::new();
        stream.take(MAX_BYTES).read_to_end(&mut page).await.ok()?;
        Some(page)
    };
    let page = tokio::time::timeout(TIMEOUT, fetch).await.ok()??;
    find(&String::from_utf8_lossy(&page), name)
}

/// The value of the unlabelled sample `name` in a Prometheus or OpenMetrics text page.
fn find(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn a_sample_is_found_by_its_whole_name() {
        let page = "HTTP/1.1 200 OK\r\n\r\n# TYPE x histogram\n\
                    attendanced_writer_batch_size_sum 100000.0\n\
                    attendanced_writer_batch_size_count 954\n\
                    attendanced_writer_batch_size_count_other 7\n# EOF\n";
        assert_eq!(
            find(page, "attendanced_writer_batch_size_count"),
            Some(954.0)
        );
        assert_eq!(
            find(page, "attendanced_writer_batch_size_sum"),
            Some(100_000.0)
        );
        assert_eq!(find(page, "attendanced_writer_batch_size"), None);
        assert_eq!(find(page, "missing"), None);
    }
}
