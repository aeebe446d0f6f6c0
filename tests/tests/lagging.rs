//! A member that falls behind its class is told how much it missed (`EVENT LAGGED n`) and goes
//! on with the newest announcements: nothing is ever silently lost.

use anyhow::Result;
use attendance_tests::{Client, Daemon};

#[tokio::test]
async fn a_lagging_member_is_told_exactly_how_many_lines_it_missed() -> Result<()> {
    let d = Daemon::start_laggy()?;

    // The laggard has a tiny receive buffer and does not read while the class chats.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut laggard = Client::from_stream(socket.connect(d.addr).await?).await?;
    laggard.cmd("JOIN Lag_D1_Slow_1").await?;
    let mut speaker = d.connect().await?;
    speaker.cmd("JOIN Lag_D1_Fast_2").await?;
    let _ = laggard.event("EVENT JOIN").await?;

    let sent = 400;
    let pad = "x".repeat(900);
    for k in 0..sent {
        assert_eq!(speaker.cmd(&format!("SAY m{k} {pad}")).await?, "OK SAY");
    }
    // A marker after the chat, so the laggard knows when it has everything.
    speaker.cmd("QUIT").await?;

    let mut received = Vec::new();
    let mut lagged = 0u64;
    loop {
        let line = laggard.event("EVENT").await?;
        if let Some(n) = line.strip_prefix("EVENT LAGGED ") {
            lagged += n.parse::<u64>()?;
        } else if let Some(rest) = line.strip_prefix("EVENT SAY Fast m") {
            received.push(rest.split(' ').next().unwrap_or_default().parse::<u64>()?);
        } else if line == "EVENT LEAVE Fast" {
            break;
        }
    }
    assert!(
        lagged > 0,
        "the laggard should have fallen behind (got all {} lines)",
        received.len()
    );
    assert_eq!(
        received.len() as u64 + lagged,
        sent,
        "every missed line is counted"
    );
    assert!(received.windows(2).all(|w| w[0] < w[1]), "order is kept");
    assert_eq!(
        received.last(),
        Some(&(sent - 1)),
        "it resumes with the newest"
    );
    // And it is still connected and served.
    assert_eq!(laggard.cmd("PING").await?, "OK PONG");
    Ok(())
}
