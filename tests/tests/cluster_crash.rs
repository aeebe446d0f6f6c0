//! SIGKILL of one node mid-class, with Redis for presence and PostgreSQL as the record (both
//! private servers this test starts) and the students connecting through HAProxy with the
//! shipped `config/haproxy.cfg` (PROXY protocol v2, health checks on `/healthz`): the killed
//! node's student reconnects through the balancer, lands on the other node and resumes within
//! the grace, its served time carried over; the killed node's seats are freed within its
//! lease; every acknowledged mark is in the database exactly once with the time its student
//! was told.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use attendance_tests::haproxy::{Balancer, Node};
use attendance_tests::postgres::{PrivatePostgres, stored_marks};
use attendance_tests::redis::PrivateRedis;
use attendance_tests::{Client, Daemon};

/// Bounded polls of PRESENT while the class length runs.
const POLLS: usize = 100;
const POLL_EVERY: Duration = Duration::from_millis(100);

/// A node of the service on `redis`, behind the balancer, started with `args` (a resume
/// grace of 1 min unless they set one: the harness's default is none).
fn node_with(redis: &PrivateRedis, args: &[&str]) -> Result<Daemon> {
    // Only the balancer's address is trusted to send PROXY headers, as the shipped config
    // says.
    let toml = format!(
        "[cluster]\nredis = \"{}\"\nlease = \"2s\"\n\n\
         [proxy_protocol]\nfrom = [\"127.0.0.1/32\"]\ntimeout = \"5s\"\n",
        redis.url()
    );
    let mut all = vec!["--resume-grace", "1m"];
    all.extend_from_slice(args);
    Daemon::start_with_config(&toml, &all)
}

fn node(redis: &PrivateRedis, pg: &PrivatePostgres) -> Result<Daemon> {
    node_with(redis, &["--class-length", "2s", "--store", &pg.url()])
}

/// A student checked in as `id` through the balancer.
async fn join_through(lb: &Balancer, id: &str) -> Result<Client> {
    let mut c = Client::connect(lb.students()).await?;
    let r = c.cmd(&format!("JOIN {id}")).await?;
    ensure!(
        r.starts_with("OK JOIN"),
        "JOIN {id} through the balancer: {r}"
    );
    Ok(c)
}

fn behind(d: &Daemon, enabled: bool) -> Node {
    Node {
        student: d.addr,
        web: d.web(),
        enabled,
    }
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
    // B in maintenance at first, so both students land on A.
    let lb = Balancer::start(&[behind(&a, true), behind(&b, false)])?;

    // On A: one student marked (acknowledged), one halfway through the class.
    let mut marked = join_through(&lb, "Os_Div1_Ada_R1").await?;
    let mut staying = join_through(&lb, "Os_Div1_Ben_R2").await?;
    let token = staying.token.clone().context("Ben's resume token")?;
    let ada_time = present(&mut marked).await?;
    // B in service: HAProxy's checks (GET /healthz behind a PROXY header) find it up.
    lb.enable("student_nodes", "node2").await?;

    a.sigkill()?;
    let killed = std::time::Instant::now();
    ensure!(!marked.closed().await?.iter().any(|l| l.starts_with("OK")));
    let _ = staying.closed().await?;

    // Ben reconnects through the balancer before its checks have noticed A is gone: a
    // refused connection to A is retried and dispatched to B. He resumes there: the seat comes
    // from Redis, served time carried (not a fresh 2 s).
    let mut ben = Client::connect(lb.students()).await?;
    let r = ben.cmd(&format!("RESUME {token}")).await?;
    ensure!(r.starts_with("OK RESUME Os Div1 Ben R2 "), "{r}");
    let ben_time = present(&mut ben).await?;
    // A's seats expire with its lease (2 s after its last renewal), bounded.
    let seat = "attendanced:seat:Os:Div1:R1";
    let mut freed = false;
    for _ in 0..POLLS {
        if redis.cli(&["EXISTS", seat])? == "0" {
            freed = true;
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    ensure!(freed, "Ada's seat on the killed node was never freed");
    ensure!(
        killed.elapsed() < Duration::from_secs(4),
        "freed after {:?}, lease 2s",
        killed.elapsed()
    );
    // Ada checks in again through the balancer: her mark is the one A stored, not a second.
    let mut ada = Client::connect(lb.students()).await?;
    let r = ada.cmd("JOIN Os_Div1_Ada_R1").await?;
    ensure!(r.starts_with("OK JOIN"), "JOIN through the balancer: {r}");
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

/// A rolling restart: `attend` is checked in on A through HAProxy when A is stopped cleanly
/// (SIGTERM); it tries the service once more, HAProxy sends it to B, it resumes there with the
/// time it served and is marked by B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attend_on_a_node_stopped_cleanly_resumes_on_another_through_the_balancer() -> Result<()> {
    let redis = PrivateRedis::start()?;
    let start = || node_with(&redis, &["--class-length", "4s"]);
    let (mut a, mut b) = (start()?, start()?);
    let lb = Balancer::start(&[behind(&a, true), behind(&b, false)])?;
    // Through the balancer too (B is in maintenance): a classmate on A hears attend join.
    let mut watcher = join_through(&lb, "Os_Div1_Watch_R9").await?;
    let server = lb.students().to_string();
    let attend = std::thread::spawn(move || -> Result<(Option<i32>, String)> {
        let out = std::process::Command::new(attendance_tests::bin_path("attend"))
            .args(["--server", &server, "Os_Div1_Cy_R3"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .output()?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    });
    let joined = watcher.event("EVENT JOIN").await?;
    ensure!(joined.contains("Cy"), "{joined}");
    lb.enable("student_nodes", "node2").await?;
    a.sigterm()?;
    let (code, printed) = attend
        .join()
        .map_err(|_| anyhow::anyhow!("the attend thread panicked"))??;
    ensure!(code == Some(0), "attend exited {code:?}:\n{printed}");
    ensure!(
        printed.contains("Back in class: your seat was kept"),
        "not resumed:\n{printed}\nA: {:#?}\nB: {:#?}",
        a.drain_logs(),
        b.drain_logs()
    );
    let csv = std::fs::read_to_string(b.csv_path())?;
    ensure!(csv.contains(",R3,"), "B's csv has no mark of R3:\n{csv}");
    Ok(())
}
