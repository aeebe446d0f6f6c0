//! CI smoke test: every scenario at a tiny size against the daemon cargo built for this profile,
//! checking correctness only — counts, no lost deliveries, CSV rows = acknowledged marks, every
//! generated row still there after a start-up — never timing. `hold` and `fanout` also run over
//! WebSocket (`--transport ws`). With `redis-server` installed, one scenario also runs with
//! `--compare redis`, and `fanout` over three nodes sharing a private Redis (`--nodes 3`, with
//! its one-node and Redis references).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

/// The `attendanced` of this profile (`target/<profile>/attendanced`), built on first use with
/// the cargo that runs the tests, so the smoke test never runs a stale daemon.
fn daemon_bin() -> Result<PathBuf> {
    Ok(attendance_testkit::cargo_binary(
        "attendanced",
        &["attendanced"],
    )?)
}

/// Runs the bench against the debug daemon; expects exit 0 and returns its JSON lines.
fn bench(args: &[&str]) -> Result<Vec<Value>> {
    let daemon = daemon_bin()?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_attendance-bench"));
    cmd.args(args);
    if args.first() != Some(&"fsync") {
        cmd.arg("--daemon-bin")
            .arg(&daemon)
            .args(["--timeout", "60s"]);
    }
    let out = cmd.output().context("running attendance-bench")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "attendance-bench {args:?} exited with {}\n--- stdout\n{stdout}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).with_context(|| format!("JSON line {l:?}")))
        .collect()
}

/// Whether `redis-server` is in `PATH`; if not, says which smoke test is skipped.
fn redis_installed(what: &str) -> bool {
    let installed = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("redis-server").is_file()));
    if !installed {
        println!(
            "note: redis-server not installed; skipping the {what} smoke test (crates/bench/setup.sh installs it)"
        );
    }
    installed
}

fn only(lines: Vec<Value>) -> Result<Value> {
    ensure!(lines.len() == 1, "expected one JSON line, got {lines:?}");
    lines.into_iter().next().context("one line")
}

#[test]
fn hold_holds_every_client() -> Result<()> {
    let r = only(bench(&[
        "hold",
        "--clients",
        "50",
        "--class-size",
        "10",
        "--settle",
        "100ms",
    ])?)?;
    assert_eq!(r["target"], "attendanced");
    assert_eq!(r["transport"], "tcp");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["held"], 50);
    assert_eq!(r["failed"], 0);
    assert_eq!(r["dropped"], 0);
    assert!(r["rss_after_bytes"].as_u64().is_some_and(|b| b > 0), "{r}");
    Ok(())
}

#[test]
fn hold_spreads_clients_over_worker_processes() -> Result<()> {
    let r = only(bench(&[
        "hold",
        "--clients",
        "40",
        "--processes",
        "2",
        "--settle",
        "100ms",
    ])?)?;
    assert_eq!(r["processes"], 2);
    assert_eq!(r["held"], 40, "{r}");
    assert_eq!(r["dropped"], 0);
    Ok(())
}

#[test]
fn hold_holds_every_websocket_client_and_answers_its_pings() -> Result<()> {
    // Pings every second: a client that did not answer would be closed after two.
    let r = only(bench(&[
        "hold",
        "--transport",
        "ws",
        "--clients",
        "50",
        "--class-size",
        "10",
        "--settle",
        "2500ms",
        "--ping-every",
        "200ms",
        "--set",
        "web_ping_interval=1s",
    ])?)?;
    assert_eq!(r["target"], "attendanced");
    assert_eq!(r["transport"], "ws");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["held"], 50);
    assert_eq!(r["failed"], 0);
    assert_eq!(r["dropped"], 0, "{r}");
    assert!(r["pings"].as_u64().is_some_and(|n| n > 0), "{r}");
    assert!(r["rss_per_conn_bytes"].is_u64(), "{r}");
    Ok(())
}

#[test]
fn hold_spreads_websocket_clients_over_worker_processes() -> Result<()> {
    let r = only(bench(&[
        "hold",
        "--transport",
        "ws",
        "--clients",
        "40",
        "--processes",
        "2",
        "--settle",
        "100ms",
    ])?)?;
    assert_eq!(r["transport"], "ws");
    assert_eq!(r["processes"], 2);
    assert_eq!(r["held"], 40, "{r}");
    assert_eq!(r["dropped"], 0);
    Ok(())
}

#[test]
fn hold_samples_rss_while_settling() -> Result<()> {
    let r = only(bench(&[
        "hold",
        "--clients",
        "20",
        "--settle",
        "2s",
        "--rss-every",
        "500ms",
        "--max-rss-growth",
        "1000",
    ])?)?;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["held"], 20);
    let samples = r["rss_samples"].as_u64().context("rss_samples")?;
    assert!((2..=5).contains(&samples), "{r}");
    let first = r["rss_first_bytes"].as_u64().context("rss_first_bytes")?;
    let max = r["rss_max_bytes"].as_u64().context("rss_max_bytes")?;
    assert!(first > 0 && max >= first, "{r}");
    assert!(r["rss_growth_pct"].is_number(), "{r}");
    assert!(
        r["rss_max_growth_pct"].as_f64().is_some_and(|g| g >= 0.0),
        "{r}"
    );
    Ok(())
}

#[test]
fn storm_delivers_every_join_announcement() -> Result<()> {
    let r = only(bench(&["storm", "--clients", "50", "--quiet", "1s"])?)?;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["joined"], 50);
    assert_eq!(r["lagging"], 0);
    assert_eq!(r["closed"], 0);
    assert!(r["settled_s"].is_number(), "{r}");
    let owed = r["owed"].as_u64().context("owed")?;
    assert_eq!(owed, 50 * 49 / 2);
    assert!(r["delivered"].as_u64().context("delivered")? >= owed, "{r}");
    Ok(())
}

#[test]
fn fanout_loses_no_message() -> Result<()> {
    let r = only(bench(&[
        "fanout",
        "--clients",
        "20",
        "--messages",
        "20",
        "--rate",
        "200",
    ])?)?;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["messages"], 20);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["closed"], 0);
    if r["lagging"] == 0 {
        assert_eq!(r["deliveries"], 19 * 20, "{r}");
    }
    assert!(r["last_p99_ms"].is_number());
    Ok(())
}

#[test]
fn fanout_over_three_nodes_loses_no_message_and_runs_its_references() -> Result<()> {
    // The nodes share a redis-server the bench starts (cargo xtask test installs it).
    if !redis_installed("fanout --nodes") {
        return Ok(());
    }
    let lines = bench(&[
        "fanout",
        "--nodes",
        "3",
        "--clients",
        "30",
        "--messages",
        "20",
        "--rate",
        "200",
        "--compare",
        "redis",
    ])?;
    ensure!(lines.len() == 3, "expected three JSON lines, got {lines:?}");
    assert_eq!(lines[0]["target"], "attendanced");
    assert_eq!(lines[0]["nodes"], 3);
    assert_eq!(lines[1]["target"], "attendanced");
    assert!(lines[1].get("nodes").is_none(), "{}", lines[1]);
    assert_eq!(lines[2]["target"], "redis");
    for r in &lines {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["receivers"], 29, "{r}");
        assert_eq!(r["lost"], 0, "{r}");
        assert_eq!(r["closed"], 0, "{r}");
        if r["lagging"] == 0 {
            assert_eq!(r["deliveries"], 29 * 20, "{r}");
        }
    }
    Ok(())
}

#[test]
fn fanout_over_websocket_loses_no_message_and_runs_its_tcp_reference() -> Result<()> {
    let lines = bench(&[
        "fanout",
        "--transport",
        "ws",
        "--clients",
        "20",
        "--messages",
        "20",
        "--rate",
        "200",
    ])?;
    ensure!(lines.len() == 2, "expected two JSON lines, got {lines:?}");
    assert_eq!(lines[0]["transport"], "ws");
    assert_eq!(lines[1]["transport"], "tcp");
    for r in &lines {
        assert_eq!(r["target"], "attendanced");
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["messages"], 20);
        assert_eq!(r["receivers"], 19, "{r}");
        assert_eq!(r["lost"], 0);
        assert_eq!(r["closed"], 0);
        if r["lagging"] == 0 {
            assert_eq!(r["deliveries"], 19 * 20, "{r}");
        }
        assert!(r["last_p99_ms"].is_number(), "{r}");
    }
    Ok(())
}

#[test]
fn every_marks_shape_leaves_one_csv_row_per_acknowledgement() -> Result<()> {
    for (extra, timed) in [
        (&[][..], "JOIN+PRESENT on open connections"),
        (&["--shape", "fresh"][..], "connect+JOIN+PRESENT per mark"),
        (
            &["--shape", "prejoined", "--round", "40"][..],
            "PRESENT on joined connections",
        ),
    ] {
        let mut args = vec!["marks", "--clients", "8", "--marks", "100"];
        args.extend_from_slice(extra);
        let r = only(bench(&args)?)?;
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["shape"], timed, "{r}");
        assert_eq!(r["acked"], 100, "{r}");
        assert_eq!(r["stored"], 100, "{r}");
        assert_eq!(r["failed"], 0, "{r}");
        assert!(r["fsyncs_per_s"].is_number(), "{r}");
        // Read from the daemon's /metrics around the run: every mark went through a batch.
        let batches = r["writer_batches"].as_u64().context("writer_batches")?;
        assert!((1..=100).contains(&batches), "{r}");
    }
    Ok(())
}

#[test]
fn startup_opens_a_generated_csv_and_keeps_every_row() -> Result<()> {
    let r = only(bench(&["startup", "--rows", "2000", "--days", "30"])?)?;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["target"], "attendanced");
    assert_eq!(r["rows"], 2000, "{r}");
    assert_eq!(r["days"], 30, "{r}");
    assert_eq!(r["rows_after"], 2000, "{r}");
    // Counts only: the time and memory are reported, never judged here.
    assert!(r["startup_s"].is_number(), "{r}");
    let rss = r["rss_bytes"].as_u64().context("rss_bytes")?;
    let peak = r["peak_rss_bytes"].as_u64().context("peak_rss_bytes")?;
    assert!(rss > 0 && peak >= rss, "{r}");
    Ok(())
}

#[test]
fn fsync_probe_reports_a_rate() -> Result<()> {
    let r = only(bench(&["fsync", "--count", "20"])?)?;
    assert_eq!(r["target"], "disk");
    assert_eq!(r["syncs"], 20);
    assert!(r["syncs_per_s"].as_f64().is_some_and(|s| s > 0.0));
    Ok(())
}

#[test]
fn compare_redis_runs_the_same_shape_when_redis_is_installed() -> Result<()> {
    if !redis_installed("--compare redis") {
        return Ok(());
    }
    let lines = bench(&[
        "fanout",
        "--clients",
        "10",
        "--messages",
        "10",
        "--rate",
        "200",
        "--compare",
        "redis",
    ])?;
    ensure!(lines.len() == 2, "expected two JSON lines, got {lines:?}");
    assert_eq!(lines[0]["target"], "attendanced");
    assert_eq!(lines[1]["target"], "redis");
    for r in &lines {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["lost"], 0);
        assert_eq!(r["deliveries"], 9 * 10, "{r}");
    }
    Ok(())
}
