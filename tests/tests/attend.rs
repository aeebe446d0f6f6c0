//! The `attend` binary completing a real check-in against the real daemon.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use attendance_tests::{Daemon, bin_path, read_rows};

fn run_attend(daemon: &Daemon, args: &[&str]) -> Result<(i32, String, String)> {
    attendance_tests::run_attend(&daemon.addr.to_string(), args)
}

#[tokio::test]
async fn attend_checks_in_waits_the_server_class_length_and_is_marked() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1s"])?;
    let mut classmate = d.connect().await?;
    classmate.cmd("JOIN ComputerNetworks_Div1_Ann_1").await?;

    let started = Instant::now();
    let (code, out, err) = run_attend(&d, &["ComputerNetworks_Div1_JayPatel_18BCP043"])?;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it must wait the class length"
    );
    assert!(out.contains("marked"), "{out}");

    assert_eq!(
        classmate.event("EVENT JOIN").await?,
        "EVENT JOIN ComputerNetworks Div1 JayPatel",
        "classmates are not told the address unless announce_addresses is on"
    );
    assert_eq!(
        classmate.event("EVENT PRESENT").await?,
        "EVENT PRESENT JayPatel"
    );
    let rows = read_rows(&d.csv_path()).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].name.as_str(), rows[0].roll.as_str()),
        ("JayPatel", "18BCP043")
    );
    let marked_at = &rows[0].marked_at;
    assert!(
        out.contains(marked_at.as_str()),
        "the client shows the server's time {marked_at}:\n{out}"
    );
    Ok(())
}

#[tokio::test]
async fn attend_exits_with_distinct_codes_when_refused_or_unreachable() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1h"])?;
    let (code, _, err) = run_attend(&d, &["not-an-id"])?;
    assert_eq!(code, 4, "{err}");

    let mut holder = d.connect().await?;
    holder.cmd("JOIN CN_D1_Ann_1").await?;
    let (code, _, err) = run_attend(&d, &["CN_D1_Ann_1"])?;
    assert_eq!(code, 4, "roll already checked in elsewhere: {err}");

    let dir = d.into_dir();
    let unreachable = Daemon::start_in(dir, &[])?;
    let addr = unreachable.addr;
    drop(unreachable);
    let status = Command::new(bin_path("attend"))
        .args(["--server", &addr.to_string(), "CN_D1_Ann_1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    assert_eq!(status.code(), Some(3), "nothing listens there any more");
    Ok(())
}

#[tokio::test]
async fn attend_reports_a_shutdown_before_marking_as_a_disconnect() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1h"])?;
    let token = d.token()?;
    let addr = d.addr.to_string();
    let child = std::thread::spawn(move || -> Result<i32> {
        let out = Command::new(bin_path("attend"))
            .args(["--server", &addr, "CN_D1_Zed_9"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .output()?;
        Ok(out.status.code().unwrap_or(-1))
    });
    let mut watcher = d.connect().await?;
    watcher.cmd("JOIN CN_D1_Watch_1").await?;
    // Wait until attend has joined (its announcement reaches the watcher), then shut down.
    let joined = watcher.event("EVENT JOIN").await?;
    assert!(joined.contains("Zed"), "{joined}");
    assert_eq!(
        watcher.cmd(&format!("SHUTDOWN {token}")).await?,
        "OK SHUTDOWN"
    );
    let code = child
        .join()
        .map_err(|_| anyhow::anyhow!("thread panicked"))??;
    assert_eq!(code, 5);
    Ok(())
}

/// A TCP relay to the daemon whose open connections the test can cut, as a Wi-Fi drop would.
/// It tells when it has passed an `OK JOIN` on to the client.
struct Relay {
    addr: std::net::SocketAddr,
    open: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    joined: Arc<tokio::sync::Notify>,
    accepts: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: std::net::SocketAddr) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let open = Arc::new(Mutex::new(Vec::new()));
        let joined = Arc::new(tokio::sync::Notify::new());
        let (tasks, told) = (Arc::clone(&open), Arc::clone(&joined));
        let accepts = tokio::spawn(async move {
            // Bounded: a test makes a handful of connections.
            for _ in 0..64 {
                let Ok((down, _)) = listener.accept().await else {
                    return;
                };
                let told = Arc::clone(&told);
                let task = tokio::spawn(async move {
                    if let Ok(up) = tokio::net::TcpStream::connect(upstream).await {
                        relay(down, up, told).await;
                    }
                });
                if let Ok(mut t) = tasks.lock() {
                    t.push(task);
                }
            }
        });
        Ok(Self {
            addr,
            open,
            joined,
            accepts,
        })
    }

    /// Drops every open connection: both sockets close, without a QUIT.
    fn cut(&self) {
        if let Ok(mut t) = self.open.lock() {
            for task in t.drain(..) {
                task.abort();
            }
        }
    }
}

/// Copies both ways until either side closes, telling `joined` when an `OK JOIN` went down.
async fn relay(
    down: tokio::net::TcpStream,
    up: tokio::net::TcpStream,
    joined: Arc<tokio::sync::Notify>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut down_r, mut down_w) = down.into_split();
    let (mut up_r, mut up_w) = up.into_split();
    let to_server = async move {
        let _ = tokio::io::copy(&mut down_r, &mut up_w).await;
    };
    let to_client = async move {
        let mut buf = vec![0u8; 4096];
        // Bounded by the connection: it ends when the daemon closes or the task is cut.
        loop {
            let n = match up_r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if down_w.write_all(&buf[..n]).await.is_err() {
                return;
            }
            if String::from_utf8_lossy(&buf[..n]).contains("OK JOIN ") {
                joined.notify_one();
            }
        }
    };
    tokio::select! {
        () = to_server => {}
        () = to_client => {}
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accepts.abort();
    }
}

#[tokio::test]
async fn attend_reconnects_after_a_drop_resumes_its_seat_and_is_marked_on_time() -> Result<()> {
    let d = Daemon::start(&["--class-length", "3s", "--resume-grace", "1m"])?;
    let relay = Relay::start(d.addr).await?;
    let mut watcher = d.connect().await?;
    watcher.cmd("JOIN ComputerNetworks_Div1_Watch_1").await?;
    let server = relay.addr.to_string();
    let started = Instant::now();
    let child = tokio::task::spawn_blocking(move || {
        attendance_tests::run_attend(&server, &["ComputerNetworks_Div1_JayPatel_18BCP043"])
    });
    // Once attend has its OK JOIN (and token), its connection drops mid-class.
    tokio::time::timeout(Duration::from_secs(10), relay.joined.notified()).await?;
    let joined = watcher.event("EVENT JOIN").await?;
    assert!(joined.contains("JayPatel"), "{joined}");
    relay.cut();
    let (code, out, err) = child.await??;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("reconnecting"), "{out}");
    assert!(out.contains("Back in class"), "{out}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the class length counts the time before the drop, not less"
    );
    // The class heard the mark, and no LEAVE or second JOIN for the drop.
    assert_eq!(
        watcher.event("EVENT PRESENT").await?,
        "EVENT PRESENT JayPatel"
    );
    assert!(
        !watcher
            .events
            .iter()
            .any(|e| e.starts_with("EVENT LEAVE") || e.starts_with("EVENT JOIN")),
        "{:?}",
        watcher.events
    );
    let rows = read_rows(&d.csv_path()).await?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, "Present");
    Ok(())
}
