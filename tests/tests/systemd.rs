//! Running under systemd: readiness, watchdog and stopping notifications on a fake
//! `NOTIFY_SOCKET`, socket activation with a listener passed as fd 3, and SIGHUP (reload the
//! settings, reopen the CSV after rotation).

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use attendance_tests::{Client, Daemon, Extra, read_rows};

/// Receives notifications until one contains `needle`; returns everything received.
fn wait_for(sock: &UnixDatagram, needle: &str) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = msg.lines().any(|l| l == needle);
                seen.push(msg);
                if done {
                    return Ok(seen);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => return Err(e.into()),
        }
    }
    bail!("no {needle:?} notification; got {seen:?}")
}

#[tokio::test]
async fn notifies_ready_watchdog_and_stopping() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path)?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let extra = Extra {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.to_string_lossy().into_owned()),
            // 400 ms: pings every 200 ms. No WATCHDOG_PID: it would have to equal the
            // daemon's pid, unknown before it starts (sd_watchdog_enabled(3)).
            ("WATCHDOG_USEC".into(), "400000".into()),
        ],
        fd3: None,
    };
    let mut d = Daemon::start_with(tempfile::tempdir()?, &[], extra)?;
    let ready = wait_for(&sock, "READY=1")?;
    assert!(
        ready
            .iter()
            .any(|m| m.contains("STATUS=0 clients connected")),
        "{ready:?}"
    );
    let _c = d.connect().await?;
    let pings = wait_for(&sock, "WATCHDOG=1")?;
    assert!(!pings.is_empty());
    // Two more pings, so they are periodic.
    wait_for(&sock, "WATCHDOG=1")?;
    let with_status = wait_for(&sock, "WATCHDOG=1")?;
    assert!(
        with_status
            .iter()
            .any(|m| m.contains("STATUS=1 clients connected")),
        "{with_status:?}"
    );
    d.sigterm()?;
    wait_for(&sock, "STOPPING=1")?;
    assert_eq!(d.wait()?.code(), Some(0));
    Ok(())
}

#[tokio::test]
async fn uses_a_listener_passed_as_fd_3() -> Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let extra = Extra {
        env: vec![("LISTEN_FDS".into(), "1".into())],
        fd3: Some(listener.into()),
    };
    // --listen (the harness passes 127.0.0.1:0) is ignored in favour of the passed socket.
    let d = Daemon::start_with(tempfile::tempdir()?, &[], extra)?;
    assert_eq!(d.addr, addr, "the daemon serves the socket it was given");
    let mut c = Client::connect(addr).await?;
    assert_eq!(c.cmd("PING").await?, "OK PONG");
    Ok(())
}

#[tokio::test]
async fn sighup_reopens_the_csv_after_rotation_and_reloads_settings() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("attendanced.toml");
    std::fs::write(&config, "class_length = \"0s\"\n")?;
    let config_arg = config.to_string_lossy().into_owned();
    let mut d = Daemon::start_in(dir, &["--config", &config_arg])?;

    let mut ann = d.connect().await?;
    ann.cmd("JOIN CN_D1_Ann_1").await?;
    assert!(ann.cmd("PRESENT").await?.starts_with("OK PRESENT"));

    // logrotate without copytruncate: rename, then SIGHUP.
    let rotated = d.dir.path().join("attendance.csv.1");
    std::fs::rename(d.csv_path(), &rotated)?;
    std::fs::write(&config, "class_length = \"2h\"\n")?;
    signal_hup(&d)?;
    d.wait_for_log("reload done").context("reload finished")?;

    let mut bob = d.connect().await?;
    assert_eq!(
        bob.cmd("JOIN CN_D1_Bob_2").await?,
        "OK JOIN CN D1 Bob 2 7200",
        "new class length"
    );
    let mut cy = d.connect().await?;
    std::fs::write(&config, "class_length = \"0s\"\n")?;
    signal_hup(&d)?;
    d.wait_for_log("reload done")?;
    cy.cmd("JOIN CN_D1_Cy_3").await?;
    assert!(cy.cmd("PRESENT").await?.starts_with("OK PRESENT"));

    let old = read_rows(&rotated).await?;
    let new = read_rows(&d.csv_path()).await?;
    assert_eq!(
        old.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["Ann"]
    );
    assert_eq!(
        new.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["Cy"]
    );
    assert!(std::fs::read_to_string(d.csv_path())?.starts_with("course,division,name,roll,"));

    // An invalid file is refused; the running settings stay.
    std::fs::write(&config, "class_length = \"soon\"\n")?;
    signal_hup(&d)?;
    d.wait_for_log("refusing the new configuration")?;
    let mut dee = d.connect().await?;
    assert_eq!(dee.cmd("JOIN CN_D1_Dee_4").await?, "OK JOIN CN D1 Dee 4 0");
    Ok(())
}

fn signal_hup(d: &Daemon) -> Result<()> {
    d.signal(nix::sys::signal::Signal::SIGHUP)
}
