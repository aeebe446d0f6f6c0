//! Resume after a drop, against the real daemon over TCP and WebSocket: a student whose
//! connection drops mid-class gets the seat back with `RESUME <token>`, the class hears
//! nothing, and the mark is made once the class length is served, counting the time before the
//! drop.

use std::time::Duration;

use anyhow::{Context, Result};
use attendance_tests::{Client, Daemon, TRANSPORTS, read_rows};

const ANN: &str = "ComputerNetworks_Div1_Ann_1";
const BOB: &str = "ComputerNetworks_Div1_Bob_2";

/// The seconds an `OK JOIN`/`OK RESUME` line says remain.
fn required(line: &str) -> Result<u64> {
    let words: Vec<&str> = line.split(' ').collect();
    let n = match words.first().zip(words.get(1)) {
        Some((&"OK", &"JOIN")) => words.get(6),
        Some((&"OK", &"RESUME")) => words.get(6),
        _ => None,
    };
    Ok(n.with_context(|| format!("no seconds in {line:?}"))?
        .parse()?)
}

#[tokio::test]
async fn a_student_dropped_mid_class_resumes_and_is_marked_present_on_time() -> Result<()> {
    let d = Daemon::start(&["--class-length", "2s", "--resume-grace", "1m"])?;
    for (i, transport) in TRANSPORTS.into_iter().enumerate() {
        let ann = ANN.replace("_1", &format!("_1{i}"));
        let mut bob = Client::connect_over(&d, transport).await?;
        bob.cmd(&format!("JOIN {}", BOB.replace("_2", &format!("_2{i}"))))
            .await?;
        let mut a = Client::connect_over(&d, transport).await?;
        let joined = a.cmd(&format!("JOIN {ann}")).await?;
        assert_eq!(required(&joined)?, 2, "{joined}");
        assert!(bob.event("EVENT JOIN").await?.starts_with("EVENT JOIN "));
        let token = a.token.clone().context("OK JOIN carries a resume token")?;
        assert_eq!(token.len(), 32, "{token}");
        assert!(!token.contains(&ann), "never the roll");
        // The Wi-Fi drops: the socket closes without a QUIT.
        drop(a);
        let mut back = Client::connect_over(&d, transport).await?;
        let resumed = back.cmd(&format!("RESUME {token}")).await?;
        let prefix = format!("OK RESUME ComputerNetworks Div1 Ann 1{i} ");
        assert!(resumed.starts_with(&prefix), "{resumed}");
        assert!(resumed.ends_with(&token), "{resumed}");
        let left = required(&resumed)?;
        assert!(left <= 2, "{resumed}");
        // Serve what the server says is left; this wait is the behaviour under test.
        tokio::time::sleep(Duration::from_millis(left * 1000 + 100)).await;
        let ok = back.cmd("PRESENT").await?;
        assert!(ok.starts_with("OK PRESENT "), "{ok}");
        // Bob heard Ann marked, and never a LEAVE or a second JOIN of hers.
        assert_eq!(bob.event("EVENT PRESENT").await?, "EVENT PRESENT Ann");
        assert!(
            !bob.events
                .iter()
                .any(|e| e.starts_with("EVENT LEAVE") || e.starts_with("EVENT JOIN")),
            "{:?}",
            bob.events
        );
    }
    let rows = read_rows(&d.csv_path()).await?;
    let anns: Vec<_> = rows.iter().filter(|r| r.name == "Ann").collect();
    assert_eq!(anns.len(), 2, "{rows:?}");
    assert!(anns.iter().all(|r| r.status == "Present"));
    Ok(())
}

#[tokio::test]
async fn a_resume_on_a_second_connection_takes_the_seat_over_and_replaces_the_first() -> Result<()>
{
    let d = Daemon::start(&["--class-length", "1h", "--resume-grace", "1m"])?;
    for (i, transport) in TRANSPORTS.into_iter().enumerate() {
        let ann = ANN.replace("_1", &format!("_1{i}"));
        let mut laptop = Client::connect_over(&d, transport).await?;
        laptop.cmd(&format!("JOIN {ann}")).await?;
        let token = laptop.token.clone().context("a resume token")?;
        let mut phone = Client::connect_over(&d, transport).await?;
        let refused = phone.cmd(&format!("JOIN {ann}")).await?;
        assert!(refused.starts_with("ERR ALREADY "), "{refused}");
        assert!(
            phone
                .cmd("RESUME 0123456789abcdef0123456789abcdef")
                .await?
                .starts_with("ERR BADTOKEN ")
        );
        let resumed = phone.cmd(&format!("RESUME {token}")).await?;
        assert!(resumed.starts_with("OK RESUME "), "{resumed}");
        let closing = laptop.closed().await?;
        assert_eq!(closing, ["EVENT REPLACED"]);
        // The seat is the phone's: the roll is still held.
        let mut third = Client::connect_over(&d, transport).await?;
        let refused = third.cmd(&format!("JOIN {ann}")).await?;
        assert!(refused.starts_with("ERR ALREADY "), "{refused}");
        assert_eq!(phone.cmd("PING").await?, "OK PONG");
    }
    Ok(())
}

#[tokio::test]
async fn after_the_grace_the_class_hears_the_leave_and_the_token_is_spent() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1h", "--resume-grace", "1s"])?;
    let mut bob = d.connect().await?;
    bob.cmd(&format!("JOIN {BOB}")).await?;
    let mut a = d.connect().await?;
    a.cmd(&format!("JOIN {ANN}")).await?;
    let token = a.token.clone().context("a resume token")?;
    bob.event("EVENT JOIN").await?;
    // Ann serves a second before her connection drops; this wait is the behaviour under test.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    drop(a);
    // The grace runs out on the server's clock; the LEAVE is the sign.
    assert_eq!(bob.event("EVENT LEAVE").await?, "EVENT LEAVE Ann");
    let mut late = d.connect().await?;
    assert!(
        late.cmd(&format!("RESUME {token}"))
            .await?
            .starts_with("ERR BADTOKEN ")
    );
    let joined = late.cmd(&format!("JOIN {ANN}")).await?;
    assert!(
        joined.starts_with("OK JOIN ComputerNetworks Div1 Ann 1 "),
        "{joined}"
    );
    // The time served before the drop counts on: less than the whole hour remains.
    assert!(required(&joined)? < 3600, "{joined}");
    Ok(())
}
