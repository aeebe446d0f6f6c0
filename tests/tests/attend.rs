//! The `attend` binary completing a real check-in against the real daemon.

use std::process::{Command, Stdio};
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
