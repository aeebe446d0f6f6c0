//! PostgreSQL as the system of record (`--store`), against a private server this test starts
//! (initdb in a temp dir, a free loopback port), so it can be stopped and restarted:
//! - two nodes racing the same rolls store each mark once, and both students get the first
//!   mark's time (the unique key, `ON CONFLICT DO NOTHING`, and the read-back of a key another
//!   transaction held);
//! - a restarted node knows today's marks from the database;
//! - `attendanced export` writes a CSV that `attendanced verify` accepts;
//! - with the database down a mark gets `ERR STORAGE`, never `OK`; when it is back the node
//!   stores again by itself, and nothing acknowledged is lost or doubled.

use std::collections::HashMap;
use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use attendance_tests::postgres::{PrivatePostgres, psql, stored_marks};
use attendance_tests::{Client, Daemon, bin_path};

/// Rows of `attendance_marks` in the order stored: (roll, marked_at_text).
fn stored(pg: &PrivatePostgres) -> Result<Vec<(String, String)>> {
    stored_marks(pg, "id")
}

fn node(url: &str) -> Result<Daemon> {
    Daemon::start(&[
        "--class-length",
        "0s",
        "--web-listen",
        "off",
        "--store",
        url,
    ])
}

/// `OK PRESENT <time>` → the time.
fn present_time(reply: &str) -> Result<String> {
    reply
        .strip_prefix("OK PRESENT ")
        .map(|t| t.split(' ').next().unwrap_or(t).to_owned())
        .with_context(|| format!("expected OK PRESENT, got {reply:?}"))
}

async fn join(d: &Daemon, id: &str) -> Result<Client> {
    let mut c = d.connect().await?;
    let r = c.cmd(&format!("JOIN {id}")).await?;
    ensure!(r.starts_with("OK JOIN"), "JOIN {id}: {r}");
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_the_same_rolls_store_each_mark_once_with_one_time() -> Result<()> {
    const ROLLS: usize = 40;
    let pg = PrivatePostgres::start()?;
    let url = pg.url();
    let (a, b) = (node(&url)?, node(&url)?);
    // Every roll seated on both nodes (no cluster yet: each node sees only its own seats).
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for i in 0..ROLLS {
        let id = format!("DB_Div1_S{i}_R{i}");
        on_a.push(join(&a, &id).await?);
        on_b.push(join(&b, &id).await?);
    }
    // Then every PRESENT at once on both, so the nodes' batches overlap on the same keys.
    for c in on_a.iter_mut().chain(on_b.iter_mut()) {
        c.send("PRESENT").await?;
    }
    let mut times = HashMap::new();
    for (i, (ca, cb)) in on_a.iter_mut().zip(on_b.iter_mut()).enumerate() {
        let ta = present_time(&ca.reply().await?)?;
        let tb = present_time(&cb.reply().await?)?;
        ensure!(ta == tb, "R{i}: node A said {ta}, node B {tb}");
        times.insert(format!("R{i}"), ta);
    }
    let rows = stored(&pg)?;
    ensure!(
        rows.len() == ROLLS,
        "{} rows for {ROLLS} rolls: {rows:?}",
        rows.len()
    );
    for (roll, at) in &rows {
        ensure!(
            times.get(roll) == Some(at),
            "{roll}: stored {at}, told {:?}",
            times.get(roll)
        );
    }

    // A node started afresh knows the day's marks from the database.
    drop(a);
    let c2 = node(&url)?;
    let mut again = join(&c2, "DB_Div1_S3_R3").await?;
    let t = present_time(&again.cmd("PRESENT").await?)?;
    ensure!(
        Some(&t) == times.get("R3"),
        "after a restart: {t}, first {:?}",
        times.get("R3")
    );
    ensure!(stored(&pg)?.len() == ROLLS, "a repeated mark added a row");

    // The export is a chained CSV that verify accepts, with every stored row.
    let key = b.dir.path().join("attendanced.key");
    // The day as the nodes counted it (their time zone, the system's).
    let day = psql(&pg, "SELECT min(day) FROM attendance_marks")?;
    let export = b.dir.path().join("export.csv");
    let out = Command::new(bin_path("attendanced"))
        .args(["--store", &url, "export", "--day", day.trim(), "--file"])
        .arg(&export)
        .arg("--key")
        .arg(&key)
        .output()?;
    ensure!(
        out.status.success(),
        "export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&export)?;
    ensure!(
        text.lines().count() == ROLLS + 1,
        "export has {} lines",
        text.lines().count()
    );
    let out = verify(&export, &key)?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success() && said.starts_with(&format!("OK {ROLLS} rows")),
        "verify: {said}"
    );
    // An edited cell is caught, as in the daemon's own CSV.
    std::fs::write(&export, text.replacen("Present", "Presenx", 1))?;
    let out = verify(&export, &key)?;
    ensure!(!out.status.success(), "verify accepted an edited export");
    drop(c2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_marks_get_err_storage_and_the_node_recovers() -> Result<()> {
    let mut pg = PrivatePostgres::start()?;
    let url = pg.url();
    let d = Daemon::start(&[
        "--class-length",
        "0s",
        "--web-listen",
        "127.0.0.1:0",
        "--store",
        &url,
    ])?;
    ensure!(postgres_health(&d).await?.0, "postgres down at the start");
    let mut first = join(&d, "DB_Div1_A_R1").await?;
    let t1 = present_time(&first.cmd("PRESENT").await?)?;

    pg.stop()?;
    let mut second = join(&d, "DB_Div1_B_R2").await?;
    let r = second.cmd("PRESENT").await?;
    ensure!(r.starts_with("ERR STORAGE"), "with postgres down: {r}");
    // The same connection stays open and may try again.
    let r = second.cmd("PRESENT").await?;
    ensure!(r.starts_with("ERR STORAGE"), "still down: {r}");
    // The load balancer keeps the node (200), and /healthz says what is wrong.
    let (up, status) = postgres_health(&d).await?;
    ensure!(
        !up && status == "degraded",
        "/healthz with postgres down: up={up} status={status}"
    );

    pg.resume()?;
    // Back: the pool connects afresh; the first try may still meet a connection the server cut.
    let mut t2 = None;
    for _ in 0..3 {
        let r = second.cmd("PRESENT").await?;
        if let Ok(t) = present_time(&r) {
            t2 = Some(t);
            break;
        }
        ensure!(r.starts_with("ERR STORAGE"), "after the restart: {r}");
    }
    let t2 = t2.context("the node did not store again after postgres came back")?;
    let (up, status) = postgres_health(&d).await?;
    ensure!(
        up && status == "ok",
        "/healthz after the recovery: up={up} status={status}"
    );
    let rows = stored(&pg)?;
    ensure!(
        rows == vec![("R1".to_owned(), t1), ("R2".to_owned(), t2)],
        "stored: {rows:?}"
    );
    Ok(())
}

/// `attendanced verify FILE --key KEY`.
fn verify(file: &std::path::Path, key: &std::path::Path) -> Result<std::process::Output> {
    Ok(Command::new(bin_path("attendanced"))
        .arg("verify")
        .arg(file)
        .arg("--key")
        .arg(key)
        .output()?)
}

/// `/healthz`: whether it says postgres is up, and its status.
async fn postgres_health(d: &Daemon) -> Result<(bool, String)> {
    attendance_tests::http::dependency_health(d.web(), "postgres").await
}

#[test]
fn check_config_reports_the_store_without_its_password() -> Result<()> {
    let pg = PrivatePostgres::start()?;
    let url = pg.url().replace("postgres@", "postgres:hunter2@");
    let out = Command::new(bin_path("attendanced"))
        .args(["--store", &url, "check-config"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "check-config: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(!text.contains("hunter2"), "the password is shown: {text}");
    ensure!(text.contains("reachable, schema version"), "{text}");
    drop(pg);
    // Unreachable: exit 1 and say so.
    let out = Command::new(bin_path("attendanced"))
        .args(["--store", &url, "check-config"])
        .output()?;
    ensure!(
        out.status.code() == Some(1),
        "unreachable store: {:?}",
        out.status
    );
    ensure!(String::from_utf8_lossy(&out.stderr).contains("cannot be reached"));
    Ok(())
}

/// The bench's `marks --nodes 3 --store`: three nodes on a private Redis mark into one database
/// beside a one-node run; counts only (the figures are the bench's, never a test's).
#[test]
fn the_bench_spreads_marks_over_three_nodes_and_each_is_stored_once() -> Result<()> {
    const MARKS: u64 = 90;
    let pg = PrivatePostgres::start()?;
    let bench = attendance_testkit::cargo_binary("attendance-bench", &["attendance-bench"])?;
    let out = Command::new(bench)
        .args(["marks", "--nodes", "3", "--clients", "12", "--marks", "90"])
        .args(["--store", &pg.url(), "--timeout", "60s", "--daemon-bin"])
        .arg(bin_path("attendanced"))
        .output()
        .context("running attendance-bench")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "the bench exited with {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(lines.len() == 2, "three nodes, then one node: {lines:?}");
    assert_eq!(lines[0]["nodes"], 3, "{}", lines[0]);
    assert!(lines[1].get("nodes").is_none(), "{}", lines[1]);
    for r in &lines {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["acked"], MARKS, "{r}");
        assert_eq!(r["failed"], 0, "{r}");
        assert_eq!(r["stored"], MARKS, "{r}");
        assert!(r["writer_batches"].as_u64().is_some_and(|b| b >= 1), "{r}");
    }
    let distinct = psql(
        &pg,
        "SELECT count(*), count(DISTINCT (course, division, day, roll)) FROM attendance_marks",
    )?;
    assert_eq!(distinct.trim(), format!("{} {}", 2 * MARKS, 2 * MARKS));
    Ok(())
}
