//! SIGKILL of one node mid-class, with Redis for presence and PostgreSQL as the record (both
//! private servers this test starts): the killed node's student resumes on another node within
//! the grace, its served time carried over, and every acknowledged mark is in the database
//! exactly once with the time its student was told.
//!
//! The student reconnects to the other node directly, as a TCP balancer would send it there
//! once the killed node fails its health check (HAProxy is not part of the test set-up).

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use attendance_tests::postgres::{PrivatePostgres, stored_marks};
use attendance_tests::redis::PrivateRedis;
use attendance_tests::{Client, Daemon};

/// Bounded polls of PRESENT while the class length runs.
const POLLS: usize = 100;
const POLL_EVERY: Duration = Duration::from_millis(100);

fn node(redis: &PrivateRedis, pg: &PrivatePostgres) -> Result<Daemon> {
    let toml = format!("[cluster]\nredis = \"{}\"\nlease = \"2s\"\n", redis.url());
    Daemon::start_with_config(
        &toml,
        &[
            "--class-length",
            "2s",
            "--resume-grace",
            "1m",
            "--web-listen",
            "off",
            "--store",
            &pg.url(),
        ],
    )
}

/// PRESENT until the class length is served: the time of `OK PRESENT`.
async fn present(c: &mut Client) -> Result<String> {
    let mut last = String::new();
    for _ in 0..POLLS {
        last = c.cmd("PRESENT").await?;
        if let Some(rest) = last.strip_prefix("OK PRESENT ") {
            return Ok(rest.split(' ').next().unwrap_or(rest).to_owned());
        }
        ensure!(last.starts_with("ERR EARLY"), "PRESENT: {last}");
        tokio::time::sleep(POLL_EVERY).await;
    }
    bail!("never marked; last {last:?}")
}

fn stored(pg: &PrivatePostgres) -> Result<Vec<(String, String)>> {
    stored_marks(pg, "roll, id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_students_resume_on_another_and_no_mark_is_lost_or_doubled() -> Result<()> {
    let redis = PrivateRedis::start()?;
    let pg = PrivatePostgres::start()?;
    let a = node(&redis, &pg)?;
    let b = node(&redis, &pg)?;

    // On A: one student marked (acknowledged), one halfway through the class.
    let mut marked = a.connect().await?;
    ensure!(
        marked
            .cmd("JOIN Os_Div1_Ada_R1")
            .await?
            .starts_with("OK JOIN")
    );
    let mut staying = a.connect().await?;
    ensure!(
        staying
            .cmd("JOIN Os_Div1_Ben_R2")
            .await?
            .starts_with("OK JOIN")
    );
    let token = staying.token.clone().context("Ben's resume token")?;
    let ada_time = present(&mut marked).await?;

    a.sigkill()?;
    ensure!(!marked.closed().await?.iter().any(|l| l.starts_with("OK")));
    let _ = staying.closed().await?;

    // Ben resumes on B: the seat comes from Redis, served time carried (not a fresh 2 s).
    let mut ben = b.connect().await?;
    let r = ben.cmd(&format!("RESUME {token}")).await?;
    ensure!(r.starts_with("OK RESUME Os Div1 Ben R2 "), "{r}");
    let ben_time = present(&mut ben).await?;
    // Ada checks in again on B: her seat on A is held until A's lease runs out (2 s after
    // its last renewal), then her mark is the one A stored, not a second one.
    let killed = std::time::Instant::now();
    let mut joined = None;
    for _ in 0..POLLS {
        // A fresh connection each time: refusals in a row would close one.
        let mut c = b.connect().await?;
        let r = c.cmd("JOIN Os_Div1_Ada_R1").await?;
        if r.starts_with("OK JOIN") {
            joined = Some(c);
            break;
        }
        ensure!(r.starts_with("ERR ALREADY"), "JOIN on B: {r}");
        tokio::time::sleep(POLL_EVERY).await;
    }
    let mut ada = joined.context("Ada's seat on the killed node was never freed")?;
    ensure!(
        killed.elapsed() < Duration::from_secs(4),
        "freed after {:?}, lease 2s",
        killed.elapsed()
    );
    let again = present(&mut ada).await?;
    ensure!(
        again == ada_time,
        "Ada told {again}, first marked {ada_time}"
    );

    let rows = stored(&pg)?;
    ensure!(
        rows == [("R1".to_owned(), ada_time), ("R2".to_owned(), ben_time)],
        "rows: {rows:?}"
    );
    Ok(())
}
