//! The seed project's own client (`client.c` of the Network Attendance Tracker), replayed byte
//! for byte against the daemon: it sends `COURSE_DIV_NAME_ROLL_` with no line ending, counts
//! its wait itself, sends `COURSE_DIV_NAME_ROLL_Present` and a line ending, and closes at once
//! without reading. The daemon receives one line, `ID_ID_Present`.

use std::time::Duration;

use anyhow::Result;
use attendance_tests::{Daemon, read_rows};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

/// The client's pause between its two sends (the C client counts 5 s; the daemon's class here
/// is 1 s, as the protocol document says it must be no longer than the client's wait). The
/// pause is the behaviour replayed, not a synchronisation: the test waits on protocol lines.
const CLIENT_WAIT: Duration = Duration::from_millis(1_300);

/// Connects, sends the client's two pieces `wait` apart, and closes without reading.
async fn replay_seed_client(d: &Daemon, id: &str, wait: Duration) -> Result<()> {
    let mut stream = TcpStream::connect(d.addr).await?;
    stream.write_all(format!("{id}_").as_bytes()).await?;
    tokio::time::sleep(wait).await;
    stream
        .write_all(format!("{id}_Present\n").as_bytes())
        .await?;
    // Closed at once, with the greeting (and any reply) unread.
    drop(stream);
    Ok(())
}

#[tokio::test]
async fn the_seed_client_gets_its_record_when_the_class_fits_its_wait() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1s"])?;
    let mut watcher = d.connect().await?;
    watcher.cmd("JOIN CS_A_Wat_9").await?;
    replay_seed_client(&d, "CS_A_Ann_1", CLIENT_WAIT).await?;
    assert_eq!(watcher.event("EVENT PRESENT").await?, "EVENT PRESENT Ann");
    let rows = read_rows(&d.csv_path()).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].course.as_str(),
            rows[0].name.as_str(),
            rows[0].roll.as_str()
        ),
        ("CS", "Ann", "1")
    );
    assert_eq!(rows[0].status, "Present");
    Ok(())
}

#[tokio::test]
async fn a_class_longer_than_the_seed_clients_wait_is_early_and_writes_nothing() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1h"])?;
    let mut watcher = d.connect().await?;
    watcher.cmd("JOIN CS_A_Wat_9").await?;
    replay_seed_client(&d, "CS_A_Bob_2", Duration::from_millis(50)).await?;
    // Bob joined (and left when the client closed); no mark was made.
    assert!(watcher.event("EVENT JOIN").await?.ends_with(" Bob"));
    assert_eq!(watcher.event("EVENT LEAVE").await?, "EVENT LEAVE Bob");
    assert!(read_rows(&d.csv_path()).await?.is_empty());
    Ok(())
}
