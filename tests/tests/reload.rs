//! SIGHUP: what a reload applies and what it reports as needing a restart, against the real
//! daemon. (Each live key's effect has a unit test where it is read: the session for
//! `class_length`, the hub for `outbound_queue`, the accept loop for `tcp_keepalive` and
//! `send_buffer`.)

use anyhow::Result;
use attendance_tests::Daemon;

#[tokio::test]
async fn a_reload_applies_live_keys_and_reports_restart_only_ones_without_applying_them()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("attendanced.toml");
    std::fs::write(&config, "class_length = \"1h\"\nmax_connections = 100\n")?;
    let config_arg = config.to_string_lossy().into_owned();
    let mut d = Daemon::start_in(dir, &["--config", &config_arg])?;

    std::fs::write(
        &config,
        "class_length = \"90s\"\nmax_connections = 1\noutbound_queue = 8\n\
         tcp_keepalive = \"17s\"\nsend_buffer = 65536\nannounce_addresses = true\n",
    )?;
    d.signal(nix::sys::signal::Signal::SIGHUP)?;
    let done = d.wait_for_log("reload done")?;
    for applied in [
        "class_length: 1h -> 1m 30s",
        "outbound_queue: 256 -> 8",
        "tcp_keepalive: 1m -> 17s",
        "send_buffer: 0 -> 65536",
        "announce_addresses: false -> true",
    ] {
        assert!(done.contains(applied), "{applied:?} not in {done}");
    }
    let restart = done
        .split("restart_needed=")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(restart.contains("max_connections: 100 -> 1"), "{done}");
    assert!(!restart.contains("class_length"), "{done}");

    // Live: the new class length for a new seat, and addresses in EVENT JOIN.
    let mut ann = d.connect().await?;
    assert_eq!(ann.cmd("JOIN CN_D1_Ann_1").await?, "OK JOIN CN D1 Ann 1 90");
    // Restart-only: max_connections is still 100, so a second client is served.
    let mut bob = d.connect().await?;
    assert_eq!(bob.cmd("JOIN CN_D1_Bob_2").await?, "OK JOIN CN D1 Bob 2 90");
    assert_eq!(
        ann.event("EVENT JOIN").await?,
        "EVENT JOIN CN D1 Bob 127.0.0.1"
    );
    Ok(())
}
