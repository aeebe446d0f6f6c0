//! `/ws`: the line protocol over a real WebSocket on the web port. One table runs over both
//! transports; then what only WebSocket has (Origin, frames, ping) and what crosses them.

use std::time::Duration;

use anyhow::{Result, bail};
use attendance_tests::{Client, Daemon, TRANSPORTS, read_rows};
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

/// (line sent, start of the reply expected): the same over TCP and WebSocket.
const TABLE: &[(&str, &str)] = &[
    ("PING 7", "OK PONG 7"),
    ("TIME", "OK TIME "),
    ("ELAPSED", "OK ELAPSED "),
    ("CLIENTS", "OK CLIENTS "),
    ("NOSUCH", "ERR UNKNOWN "),
    ("JOIN Bad", "ERR BADFORMAT "),
    ("PRESENT", "ERR NOTJOINED "),
    ("SAY hello", "ERR NOTJOINED "),
    ("JOIN Net_D1_Ann_1", "OK JOIN Net D1 Ann 1 3600"),
    ("PRESENT", "ERR EARLY "),
    ("SAY hello", "OK SAY"),
    ("HELP", "OK HELP "),
];

#[tokio::test]
async fn the_protocol_table_holds_over_tcp_and_websocket() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1h"])?;
    for transport in TRANSPORTS {
        let mut c = Client::connect_over(&d, transport).await?;
        assert!(c.hello.starts_with("HELLO attendanced/"), "{}", c.hello);
        for (line, expected) in TABLE {
            let got = c.cmd(line).await?;
            assert!(
                got.starts_with(expected),
                "{transport:?}: {line:?} got {got:?}, want {expected:?}…"
            );
        }
        assert_eq!(c.cmd("QUIT").await?, "OK BYE");
        c.closed().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_websocket_student_is_marked_and_the_row_is_on_disk() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1s"])?;
    let mut c = d.connect_ws().await?;
    let joined = c.cmd("JOIN Web_D1_Ann_7").await?;
    assert!(joined.starts_with("OK JOIN Web D1 Ann 7 "), "{joined}");
    let early = c.cmd("PRESENT").await?;
    assert!(early.starts_with("ERR EARLY 1 "), "{early}");
    // Serve the class length the server asked for; this wait is the behaviour under test.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let marked = c.cmd("PRESENT").await?;
    assert!(marked.starts_with("OK PRESENT "), "{marked}");
    // Acknowledged means on disk: the row is there now.
    let rows = read_rows(&d.csv_path()).await?;
    assert!(
        rows.iter().any(|r| r.roll == "7" && r.status == "Present"),
        "{rows:?}"
    );
    Ok(())
}

#[tokio::test]
async fn arrivals_and_chat_cross_between_tcp_and_websocket_members() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1h"])?;
    let mut tcp = d.connect().await?;
    let mut ws = d.connect_ws().await?;
    tcp.cmd("JOIN Mix_D1_Tom_1").await?;
    ws.cmd("JOIN Mix_D1_Wei_2").await?;
    let seen = tcp.event("EVENT JOIN").await?;
    assert!(
        seen.contains("Wei"),
        "TCP member hears the WebSocket one: {seen}"
    );
    tcp.cmd("SAY hi from tcp").await?;
    let said = ws.event("EVENT SAY").await?;
    assert!(said.contains("hi from tcp"), "{said}");
    ws.cmd("SAY hi from ws").await?;
    let said = tcp.event("EVENT SAY").await?;
    assert!(said.contains("hi from ws"), "{said}");
    // WebSocket clients count among the clients.
    let clients = ws.cmd("CLIENTS").await?;
    let n: u64 = clients.trim_start_matches("OK CLIENTS ").parse()?;
    assert!(n >= 2, "{clients}");
    drop(ws);
    let left = tcp.event("EVENT LEAVE").await?;
    assert!(left.contains("Wei"), "{left}");
    Ok(())
}

#[tokio::test]
async fn a_foreign_origin_is_refused_before_the_upgrade_and_the_own_one_passes() -> Result<()> {
    let d = Daemon::start(&[])?;
    let web = d.web();
    match Client::upgrade(web, Some("http://evil.example")).await {
        Ok(_) => bail!("a cross-origin upgrade was accepted"),
        Err(e) => {
            let text = format!("{e:#}");
            assert!(text.contains("403"), "{text}");
        }
    }
    let mut own = Client::connect_ws(web, Some(&format!("http://{web}"))).await?;
    assert_eq!(own.cmd("PING 1").await?, "OK PONG 1");
    Ok(())
}

#[tokio::test]
async fn a_binary_frame_is_an_encoding_error_and_the_connection_goes_on() -> Result<()> {
    let d = Daemon::start(&[])?;
    let mut c = d.connect_ws().await?;
    c.send_ws(Message::binary(b"PING 1".to_vec())).await?;
    let r = c.reply().await?;
    assert!(r.starts_with("ERR ENCODING "), "{r}");
    assert_eq!(c.cmd("PING 2").await?, "OK PONG 2");
    Ok(())
}

#[tokio::test]
async fn a_frame_over_max_line_is_toolong_and_closes_with_1009() -> Result<()> {
    let d = Daemon::start(&["--max-line", "64"])?;
    // Exactly the limit (with its line ending) is a line like any other.
    let mut c = d.connect_ws().await?;
    let at_limit = format!("SAY {}\r\n", "x".repeat(60));
    c.send_ws(Message::text(at_limit)).await?;
    let r = c.reply().await?;
    assert!(r.starts_with("ERR NOTJOINED "), "{r}");
    c.send_ws(Message::text("y".repeat(10_000))).await?;
    let lines = c.closed().await?;
    assert!(
        lines.first().is_some_and(|l| l.starts_with("ERR TOOLONG ")),
        "{lines:?}"
    );
    // The close code, seen on a raw socket.
    let mut raw = Client::upgrade(d.web(), None).await?;
    let _hello = raw.next().await;
    raw.send(Message::text("z".repeat(10_000))).await?;
    let mut code = None;
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_secs(10), raw.next()).await? {
            Some(Ok(Message::Close(Some(frame)))) => {
                code = Some(u16::from(frame.code));
                break;
            }
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    assert_eq!(code, Some(1009));
    Ok(())
}

/// A daemon that pings WebSocket clients every second (the shortest interval it takes).
fn daemon_pinging_every_second() -> Result<Daemon> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("attendanced.toml");
    std::fs::write(&config, "web_ping_interval = \"1s\"\n")?;
    let config = config.to_str().unwrap_or_default().to_owned();
    Daemon::start_in(dir, &["--config", &config])
}

#[tokio::test]
async fn a_phone_that_vanishes_without_a_close_is_noticed_by_ping_and_announced() -> Result<()> {
    let d = daemon_pinging_every_second()?;
    let mut tcp = d.connect().await?;
    tcp.cmd("JOIN Far_D1_Tom_1").await?;
    // A client that answers nothing once joined: its socket stays open, but no pong comes back
    // because nobody reads it (a phone whose screen locked, a NAT that dropped the flow).
    let mut phone = Client::upgrade(d.web(), None).await?;
    let _hello = phone.next().await;
    phone.send(Message::text("JOIN Far_D1_Ann_2")).await?;
    let joined = tcp.event("EVENT JOIN").await?;
    assert!(joined.contains("Ann"), "{joined}");
    // Not read from here on: tungstenite answers pings only while it is polled.
    let left = tcp.event("EVENT LEAVE").await?;
    assert!(left.contains("Ann"), "{left}");
    drop(phone);
    Ok(())
}

#[tokio::test]
async fn an_idle_websocket_that_answers_pings_stays_open() -> Result<()> {
    let d = daemon_pinging_every_second()?;
    let mut raw = Client::upgrade(d.web(), None).await?;
    let _hello = raw.next().await;
    // Reading answers pings; three pings (over two intervals each time) keep it open.
    let mut pings = 0;
    while pings < 3 {
        match tokio::time::timeout(Duration::from_secs(10), raw.next()).await? {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(_)) => {}
            other => bail!("closed while answering pings: {other:?}"),
        }
    }
    raw.send(Message::text("PING 9")).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), raw.next()).await? {
            Some(Ok(Message::Text(t))) => {
                assert_eq!(t.as_str(), "OK PONG 9");
                break;
            }
            Some(Ok(_)) => {}
            other => bail!("closed: {other:?}"),
        }
    }
    Ok(())
}

/// The error streak closes the connection, over either transport.
#[tokio::test]
async fn the_error_streak_closes_over_tcp_and_websocket() -> Result<()> {
    let d = Daemon::start(&[])?;
    for transport in TRANSPORTS {
        let mut c = Client::connect_over(&d, transport).await?;
        for _ in 0..9 {
            assert!(
                c.cmd("NOPE").await?.starts_with("ERR UNKNOWN"),
                "{transport:?}"
            );
        }
        c.send("NOPE").await?;
        let rest = c.closed().await?;
        assert!(
            rest.iter().any(|l| l.starts_with("ERR TOOMANYERRORS")),
            "{transport:?}: {rest:?}"
        );
    }
    Ok(())
}

/// A connection that never joins is timed out, over either transport.
#[tokio::test]
async fn the_login_timeout_applies_over_tcp_and_websocket() -> Result<()> {
    let d = Daemon::start(&["--login-timeout", "300ms"])?;
    for transport in TRANSPORTS {
        let mut idle = Client::connect_over(&d, transport).await?;
        let lines = idle.closed().await?;
        assert!(
            lines.iter().any(|l| l.starts_with("ERR TIMEOUT")),
            "{transport:?}: {lines:?}"
        );
    }
    Ok(())
}

/// Lines past the burst wait their turn and none is lost, over either transport.
#[tokio::test]
async fn a_flood_waits_its_turn_over_tcp_and_websocket() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("a.toml");
    std::fs::write(&cfg, "rate_limit = 10\nrate_burst = 5\n")?;
    let cfg = cfg.to_string_lossy().into_owned();
    let d = Daemon::start(&["--config", &cfg])?;
    for transport in TRANSPORTS {
        let mut c = Client::connect_over(&d, transport).await?;
        let started = std::time::Instant::now();
        for i in 0..15 {
            c.send(&format!("PING p{i}")).await?;
        }
        for i in 0..15 {
            assert_eq!(c.reply().await?, format!("OK PONG p{i}"), "{transport:?}");
        }
        // 5 at once, then 10 more at 10 a second: about a second (a lower bound only).
        assert!(
            started.elapsed() >= Duration::from_millis(700),
            "{transport:?}: {:?}",
            started.elapsed()
        );
    }
    Ok(())
}

/// WebSocket and TCP connections share `max_connections`: with both slots taken by one of
/// each, a third is refused over either (`ERR FULL` on TCP, HTTP 503 before the upgrade).
#[tokio::test]
async fn websocket_and_tcp_connections_share_max_connections() -> Result<()> {
    let d = Daemon::start(&["--max-connections", "2"])?;
    let _tcp = d.connect().await?;
    let _ws = d.connect_ws().await?;
    let refused = Client::upgrade(d.web(), None).await;
    let err = refused.err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(err.contains("503"), "the third over WebSocket: {err}");
    let tcp = d.connect().await;
    let err = tcp.err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(err.contains("ERR FULL"), "the third over TCP: {err}");
    Ok(())
}

/// A WebSocket member that falls behind its class is told how many it missed, as on TCP.
#[tokio::test]
async fn a_lagging_websocket_member_is_told_how_many_it_missed() -> Result<()> {
    let d = Daemon::start_laggy()?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut laggard = Client::connect_ws_over(socket.connect(d.web()).await?, d.web()).await?;
    laggard.cmd("JOIN Lag_D1_Slow_1").await?;
    let mut speaker = d.connect().await?;
    speaker.cmd("JOIN Lag_D1_Fast_2").await?;
    let _ = laggard.event("EVENT JOIN").await?;
    let sent = 400;
    let pad = "x".repeat(900);
    for k in 0..sent {
        assert_eq!(speaker.cmd(&format!("SAY m{k} {pad}")).await?, "OK SAY");
    }
    speaker.cmd("QUIT").await?;
    let (mut received, mut lagged) = (0u64, 0u64);
    loop {
        let line = laggard.event("EVENT").await?;
        if let Some(n) = line.strip_prefix("EVENT LAGGED ") {
            lagged += n.parse::<u64>()?;
        } else if line.starts_with("EVENT SAY Fast m") {
            received += 1;
        } else if line == "EVENT LEAVE Fast" {
            break;
        }
    }
    assert!(lagged > 0, "never fell behind (got all {received})");
    assert_eq!(received + lagged, sent, "every missed line is counted");
    assert_eq!(laggard.cmd("PING").await?, "OK PONG");
    Ok(())
}
