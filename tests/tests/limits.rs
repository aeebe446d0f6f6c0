//! Flood control, chat limits, per-address caps, descriptor limits and the admin socket.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use attendance_tests::{Client, Daemon, LINE_TIMEOUT, bin_path};
use tokio::io::AsyncWriteExt as _;

/// Writes a config file into a fresh directory and returns (dir, --config argument).
fn config(toml: &str) -> Result<(tempfile::TempDir, String)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("attendanced.toml");
    std::fs::write(&path, toml)?;
    Ok((dir, path.to_string_lossy().into_owned()))
}

#[tokio::test]
async fn lines_past_the_burst_wait_their_turn_and_none_is_lost() -> Result<()> {
    let (_cfg, path) = config("rate_limit = 10\nrate_burst = 5\n")?;
    let d = Daemon::start(&["--config", &path])?;
    let mut flooder = d.connect().await?;
    let started = Instant::now();
    let burst: String = (0..25).map(|i| format!("PING p{i}\n")).collect();
    flooder.send_bytes(burst.as_bytes()).await?;
    for i in 0..25 {
        assert_eq!(flooder.reply().await?, format!("OK PONG p{i}"));
    }
    // 5 at once, then 20 more at 10 a second: at least ~2 s. (A lower bound only: a slow
    // machine can only make it longer.)
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_flood_is_held_back_by_tcp_not_buffered_by_the_server() -> Result<()> {
    let d = Daemon::start(&[])?;
    let mut flood = tokio::net::TcpStream::connect(d.addr).await?;
    // 8 MiB of PING lines, never reading a reply: the server reads 20 lines a second, so the
    // kernel buffers fill and the write cannot finish. Were the server buffering for us, it would.
    let lines = "PING\n".repeat(8 << 20 >> 3);
    let write =
        tokio::time::timeout(Duration::from_secs(3), flood.write_all(lines.as_bytes())).await;
    assert!(write.is_err(), "the server swallowed 8 MiB from one client");
    // Everyone else is served meanwhile.
    let mut other = d.connect().await?;
    assert_eq!(other.cmd("PING").await?, "OK PONG");
    Ok(())
}

#[tokio::test]
async fn chat_past_its_limit_gets_err_rate_and_is_not_sent() -> Result<()> {
    let (_cfg, path) = config("chat_rate = 1\nchat_burst = 2\n")?;
    let d = Daemon::start(&["--config", &path])?;
    let mut listener = d.connect().await?;
    listener.cmd("JOIN CN_D1_Lis_1").await?;
    let mut talker = d.connect().await?;
    talker.cmd("JOIN CN_D1_Tal_2").await?;
    assert_eq!(talker.cmd("SAY one").await?, "OK SAY");
    assert_eq!(talker.cmd("SAY two").await?, "OK SAY");
    assert!(talker.cmd("SAY three").await?.starts_with("ERR RATE "));
    assert_eq!(
        talker.cmd("PING").await?,
        "OK PONG",
        "other commands are not limited by chat"
    );
    assert_eq!(listener.event("EVENT SAY").await?, "EVENT SAY Tal one");
    assert_eq!(listener.event("EVENT SAY").await?, "EVENT SAY Tal two");
    // A marker proves "three" never came: the next event after "two" is Tal leaving.
    talker.cmd("QUIT").await?;
    assert_eq!(listener.event("EVENT").await?, "EVENT LEAVE Tal");
    Ok(())
}

async fn connect_from(source: [u8; 4], addr: std::net::SocketAddr) -> Result<Client> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from((source, 0)))?;
    Client::from_stream(socket.connect(addr).await?).await
}

#[tokio::test]
async fn the_per_address_cap_refuses_only_that_address() -> Result<()> {
    let (_cfg, path) = config("max_per_address = 2\n")?;
    let d = Daemon::start(&["--config", &path])?;
    let _a = connect_from([127, 0, 0, 1], d.addr).await?;
    let _b = connect_from([127, 0, 0, 1], d.addr).await?;
    let third = connect_from([127, 0, 0, 1], d.addr).await;
    let err = third
        .err()
        .context("third connection from one address must be refused")?;
    assert!(err.to_string().contains("ERR FULL"), "{err}");
    let mut other = connect_from([127, 0, 0, 2], d.addr).await?;
    assert_eq!(other.cmd("PING").await?, "OK PONG");
    // The cap is off by default: a class behind one NAT address is normal.
    let d = Daemon::start(&[])?;
    let mut many = Vec::new();
    for _ in 0..20 {
        many.push(connect_from([127, 0, 0, 1], d.addr).await?);
    }
    Ok(())
}

#[tokio::test]
async fn max_connections_is_lowered_to_fit_the_descriptor_limit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new("prlimit")
        .arg("--nofile=128:128")
        .arg(bin_path("attendanced"))
        .args(["--listen", "127.0.0.1:0", "--csv"])
        .arg(dir.path().join("attendance.csv"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("prlimit (util-linux) runs the daemon with a low descriptor limit")?;
    let stderr = child.stderr.take().context("stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lowered = None;
    let mut addr = None;
    let deadline = Instant::now() + LINE_TIMEOUT;
    while addr.is_none() && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        if line.contains("lowering") {
            lowered = line
                .split("lowered_to=")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .map(str::to_owned);
        }
        if let Some(a) = line.split("listening on ").nth(1) {
            addr = a.split_whitespace().next().map(str::to_owned);
        }
    }
    let result = async {
        let addr: std::net::SocketAddr = addr.context("daemon did not start")?.parse()?;
        assert_eq!(
            lowered.as_deref(),
            Some("64"),
            "128 descriptors minus the 64 reserved"
        );
        let mut held = Vec::new();
        for _ in 0..64 {
            held.push(Client::connect(addr).await?);
        }
        // The 65th is told at once rather than left hanging or breaking accept().
        let refused = Client::connect(addr)
            .await
            .err()
            .context("65th must be refused")?;
        assert!(refused.to_string().contains("ERR FULL"), "{refused}");
        assert_eq!(held[0].cmd("PING").await?, "OK PONG");
        anyhow::Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

#[tokio::test]
async fn the_admin_socket_is_private_and_shuts_down_without_a_token() -> Result<()> {
    let mut d = Daemon::start(&[])?;
    let path = d.dir.path().join("attendanced.sock");
    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut student = d.connect().await?;
    student.cmd("JOIN CN_D1_Ann_1").await?;

    let stream = tokio::net::UnixStream::connect(&path).await?;
    let mut framed =
        tokio_util::codec::Framed::new(stream, attendance_protocol::LineCodec::default());
    use futures::{SinkExt as _, StreamExt as _};
    let hello = tokio::time::timeout(LINE_TIMEOUT, framed.next())
        .await?
        .context("closed")???;
    assert!(hello.starts_with("HELLO "), "{hello}");
    framed
        .send(bytes::Bytes::from_static(b"JOIN CN_D1_Adm_9\n"))
        .await?;
    let reply = tokio::time::timeout(LINE_TIMEOUT, framed.next())
        .await?
        .context("closed")???;
    assert!(reply.starts_with("ERR DENIED"), "{reply}");
    framed
        .send(bytes::Bytes::from_static(b"SHUTDOWN\n"))
        .await?;
    let reply = tokio::time::timeout(LINE_TIMEOUT, framed.next())
        .await?
        .context("closed")???;
    assert_eq!(reply, "OK SHUTDOWN");
    assert_eq!(student.event("EVENT SHUTDOWN").await?, "EVENT SHUTDOWN");
    assert_eq!(d.wait()?.code(), Some(0));
    assert!(!path.exists(), "the socket file is removed on shutdown");
    Ok(())
}

#[tokio::test]
async fn a_stale_admin_socket_left_by_a_crash_is_replaced() -> Result<()> {
    let d = Daemon::start(&[])?;
    let path = d.dir.path().join("attendanced.sock");
    d.sigkill()?;
    let dir = d.into_dir();
    assert!(path.exists(), "a crash leaves the socket file behind");
    let d = Daemon::start_in(dir, &[])?;
    tokio::net::UnixStream::connect(&path).await?;
    drop(d);
    Ok(())
}
