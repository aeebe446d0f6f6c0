//! Several nodes as one service on a private Redis this test starts (a free loopback port), so
//! it can be killed and restarted:
//! - three nodes: a join on node A is announced to a member on node C, chat and leaves too; the
//!   same roll on two nodes is refused; `CLIENTS` counts every node; a resume on another node
//!   takes the seat over (the old connection is told `EVENT REPLACED`);
//! - a gap in a class's numbered lines is told as `EVENT LAGGED`;
//! - Redis down: the nodes serve alone (`EVENT DEGRADED` to the admin socket, `/healthz`
//!   degraded), and reconcile when it returns (one seat per roll);
//! - a node paused past its lease gives up the seat another node took meanwhile.
//!
//! The SIGKILL of a node mid-class, with PostgreSQL as the record, is in `cluster_crash.rs`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use attendance_protocol::LineCodec;
use attendance_tests::http::{dependency_health, get};
use attendance_tests::redis::PrivateRedis;
use attendance_tests::{Client, Daemon, LINE_TIMEOUT};
use futures::StreamExt as _;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

/// Most polls of a state that settles within a second or two (a node's count, a lease).
const POLLS: usize = 100;
const POLL_EVERY: Duration = Duration::from_millis(100);

fn cluster_config(redis: &PrivateRedis, lease: &str) -> String {
    format!(
        "[cluster]\nredis = \"{}\"\nlease = \"{lease}\"\n",
        redis.url()
    )
}

fn node(redis: &PrivateRedis, lease: &str, args: &[&str]) -> Result<Daemon> {
    let mut all = vec!["--class-length", "1h"];
    if !args.contains(&"--web-listen") {
        all.extend(["--web-listen", "off"]);
    }
    all.extend_from_slice(args);
    Daemon::start_with_config(&cluster_config(redis, lease), &all)
}

async fn join(d: &Daemon, id: &str) -> Result<Client> {
    let mut c = d.connect().await?;
    let r = c.cmd(&format!("JOIN {id}")).await?;
    ensure!(r.starts_with("OK JOIN"), "JOIN {id}: {r}");
    Ok(c)
}

/// Polls `CLIENTS` on `c` until it says `want` (another node's count is refreshed every
/// second).
async fn clients_become(c: &mut Client, want: u64) -> Result<()> {
    let mut last = String::new();
    for _ in 0..POLLS {
        last = c.cmd("CLIENTS").await?;
        if last == format!("OK CLIENTS {want}") {
            return Ok(());
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    bail!("CLIENTS never became {want}; last {last:?}")
}

/// Polls `redis-cli args` until it prints `want`.
fn redis_becomes(redis: &PrivateRedis, args: &[&str], want: &str) -> Result<()> {
    let mut last = String::new();
    for _ in 0..POLLS {
        last = redis.cli(args)?;
        if last == want {
            return Ok(());
        }
        std::thread::sleep(POLL_EVERY);
    }
    bail!("redis-cli {args:?} never printed {want:?}; last {last:?}")
}

/// A connection to a daemon's admin socket.
struct Admin(Framed<UnixStream, LineCodec>);

impl Admin {
    async fn connect(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path).await?;
        let mut admin = Self(Framed::new(stream, LineCodec::new(1 << 20)));
        let hello = admin.line().await?;
        ensure!(hello.starts_with("HELLO "), "expected HELLO, got {hello:?}");
        Ok(admin)
    }

    async fn line(&mut self) -> Result<String> {
        Ok(tokio::time::timeout(LINE_TIMEOUT, self.0.next())
            .await?
            .context("admin socket closed")???)
    }

    /// The next line starting with `prefix`, skipping others.
    async fn until(&mut self, prefix: &str) -> Result<String> {
        for _ in 0..100 {
            let line = self.line().await?;
            if line.starts_with(prefix) {
                return Ok(line);
            }
        }
        bail!("no {prefix:?} line")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behave_as_one_service() -> Result<()> {
    let redis = PrivateRedis::start()?;
    let (a, b, c) = (
        node(&redis, "10s", &[])?,
        node(&redis, "10s", &[])?,
        node(&redis, "10s", &[])?,
    );
    let mut carol = join(&c, "Net_Div1_Carol_R3").await?;
    // Announced on C, from A: C subscribed to the class when Carol joined.
    let mut alice = join(&a, "Net_Div1_Alice_R1").await?;
    let heard = carol.event("EVENT JOIN").await?;
    ensure!(heard == "EVENT JOIN Net Div1 Alice", "{heard}");
    let mut bob = join(&b, "Net_Div1_Bob_R2").await?;
    ensure!(carol.event("EVENT JOIN").await? == "EVENT JOIN Net Div1 Bob");
    ensure!(alice.event("EVENT JOIN").await? == "EVENT JOIN Net Div1 Bob");
    // Chat from B reaches A and C, once each.
    ensure!(bob.cmd("SAY hello from B").await? == "OK SAY");
    ensure!(alice.event("EVENT SAY").await? == "EVENT SAY Bob hello from B");
    ensure!(carol.event("EVENT SAY").await? == "EVENT SAY Bob hello from B");
    // The same roll on another node is refused.
    let mut again = b.connect().await?;
    let r = again.cmd("JOIN Net_Div1_Alice_R1").await?;
    ensure!(
        r.starts_with("ERR ALREADY ") && r.contains("another node"),
        "{r}"
    );
    // Every node's connections: alice, bob, carol, again.
    clients_become(&mut carol, 4).await?;
    drop(again);
    clients_become(&mut alice, 3).await?;
    // A resume on C takes Alice's seat over from A: A's connection is replaced and closes.
    let token = alice.token.clone().context("Alice's resume token")?;
    let mut moved = c.connect().await?;
    let r = moved.cmd(&format!("RESUME {token}")).await?;
    ensure!(r.starts_with("OK RESUME Net Div1 Alice R1 "), "{r}");
    let closing = alice.closed().await?;
    ensure!(
        closing.iter().any(|l| l == "EVENT REPLACED"),
        "A's connection got {closing:?}"
    );
    // The class hears nothing of the move; a leave is heard on every node.
    ensure!(bob.cmd("QUIT").await? == "OK BYE");
    ensure!(moved.event("EVENT LEAVE").await? == "EVENT LEAVE Bob");
    ensure!(carol.event("EVENT LEAVE").await? == "EVENT LEAVE Bob");
    // Bob's seat was given back before the leave was told: the roll is free on every node.
    let mut bob_again = a.connect().await?;
    let r = bob_again.cmd("JOIN Net_Div1_Bob_R2").await?;
    ensure!(r.starts_with("OK JOIN"), "{r}");
    // Quit and back at once on the same node: the late release of the old seat must not take
    // the new one from Redis, so its token still resumes on another node.
    ensure!(bob_again.cmd("QUIT").await? == "OK BYE");
    let mut bob_third = join(&a, "Net_Div1_Bob_R2").await?;
    let token = bob_third.token.clone().context("Bob's new token")?;
    let mut on_c = c.connect().await?;
    let r = on_c.cmd(&format!("RESUME {token}")).await?;
    ensure!(r.starts_with("OK RESUME Net Div1 Bob R2 "), "{r}");
    ensure!(
        bob_third
            .closed()
            .await?
            .iter()
            .any(|l| l == "EVENT REPLACED")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_another_nodes_lines_is_told_as_lagged() -> Result<()> {
    let redis = PrivateRedis::start()?;
    let a = node(&redis, "10s", &[])?;
    let mut dave = join(&a, "Gap_Div1_Dave_R1").await?;
    // The subscription is made before the JOIN's reply? Not necessarily: wait for it.
    redis_becomes(
        &redis,
        &["PUBSUB", "NUMSUB", "attendanced:class:Gap:Div1"],
        "attendanced:class:Gap:Div1\n1",
    )?;
    // Another node's lines 1 and 5: 3 missed between them.
    let ch = "attendanced:class:Gap:Div1";
    redis.cli(&["PUBLISH", ch, "L other#9 1\nEVENT SAY Eve one\n"])?;
    redis.cli(&["PUBLISH", ch, "L other#9 5\nEVENT SAY Eve five\n"])?;
    ensure!(dave.event("EVENT SAY").await? == "EVENT SAY Eve one");
    ensure!(dave.event("EVENT LAGGED").await? == "EVENT LAGGED 3");
    ensure!(dave.event("EVENT SAY").await? == "EVENT SAY Eve five");
    // A quiet class's gap shows by the owner's periodic last number.
    redis.cli(&["PUBLISH", ch, "S other#9 7"])?;
    ensure!(dave.event("EVENT LAGGED").await? == "EVENT LAGGED 2");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_nodes_serve_alone_and_reconcile_when_it_returns() -> Result<()> {
    let mut redis = PrivateRedis::start()?;
    let mut a = node(
        &redis,
        "2s",
        &[
            "--web-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    )?;
    let metrics = metrics_addr(&mut a)?;
    let b = node(&redis, "2s", &[])?;
    let mut admin = Admin::connect(&a.dir.path().join("attendanced.sock")).await?;
    ensure!(
        redis_gauge(metrics).await? == "1",
        "/metrics says Redis is down"
    );
    redis.stop()?;
    let degraded = admin.until("EVENT DEGRADED").await?;
    ensure!(degraded.starts_with("EVENT DEGRADED redis "), "{degraded}");
    let (up, status) = dependency_health(a.web(), "redis").await?;
    ensure!(
        !up && status == "degraded",
        "/healthz: up={up} status={status}"
    );
    ensure!(
        redis_gauge(metrics).await? == "0",
        "/metrics says Redis is up"
    );
    // Each node serves its own students; with no Redis, ALREADY is local only.
    let mut on_a = join(&a, "Lab_Div1_Frank_R7").await?;
    let mut on_b = join(&b, "Lab_Div1_Frank_R7").await?;
    redis.resume()?;
    let recovered = admin.until("EVENT RECOVERED").await?;
    ensure!(
        recovered.starts_with("EVENT RECOVERED redis "),
        "{recovered}"
    );
    // Reconciled: one node keeps the seat, the other gives it up (EVENT REPLACED, closed).
    let (keeper, loser) = tokio::select! {
        lines = on_a.closed() => (&mut on_b, lines?),
        lines = on_b.closed() => (&mut on_a, lines?),
    };
    ensure!(
        loser.iter().any(|l| l == "EVENT REPLACED"),
        "the losing seat got {loser:?}"
    );
    ensure!(keeper.cmd("PING").await?.starts_with("OK PONG"));
    redis_becomes(
        &redis,
        &["KEYS", "attendanced:seat:*"],
        "attendanced:seat:Lab:Div1:R7",
    )?;
    let (up, status) = dependency_health(a.web(), "redis").await?;
    ensure!(up && status == "ok", "/healthz: up={up} status={status}");
    ensure!(
        redis_gauge(metrics).await? == "1",
        "/metrics says Redis is down"
    );
    Ok(())
}

/// Where `node` serves `/metrics` (started with `--metrics-listen 127.0.0.1:0`).
fn metrics_addr(node: &mut Daemon) -> Result<std::net::SocketAddr> {
    let line = node.wait_for_log("metrics listening on ")?;
    Ok(line
        .split("metrics listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .context("no metrics address in the log")?
        .parse()?)
}

/// The value of `attendanced_dependency_up{dependency="redis"}` at `metrics`.
async fn redis_gauge(metrics: std::net::SocketAddr) -> Result<String> {
    let body = get(metrics, "/metrics", &[]).await?.text();
    body.lines()
        .find_map(|l| l.strip_prefix("attendanced_dependency_up{dependency=\"redis\"} "))
        .map(str::to_owned)
        .with_context(|| format!("no Redis gauge in /metrics:\n{body}"))
}

/// `ERR EARLY <seconds> …` → the seconds.
fn early_seconds(reply: &str) -> Result<u64> {
    reply
        .strip_prefix("ERR EARLY ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("expected ERR EARLY, got {reply:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_cleanly_leaves_its_students_to_resume_on_another() -> Result<()> {
    let redis = PrivateRedis::start()?;
    let start = |redis: &PrivateRedis| {
        Daemon::start_with_config(
            &cluster_config(redis, "2s"),
            &[
                "--class-length",
                "6s",
                "--resume-grace",
                "1m",
                "--web-listen",
                "off",
            ],
        )
    };
    let mut a = start(&redis)?;
    let b = start(&redis)?;
    let mut ben = join(&a, "Os_Div1_Ben_R2").await?;
    let token = ben.token.clone().context("Ben's resume token")?;
    // Serve at least 2 of the 6 seconds (bounded polls of the server's own count).
    let mut left = 6;
    for _ in 0..POLLS {
        left = early_seconds(&ben.cmd("PRESENT").await?)?;
        if left <= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(left <= 4, "still {left} s left");
    a.sigterm()?;
    let lines = ben.closed().await?;
    ensure!(lines.iter().any(|l| l == "EVENT SHUTDOWN"), "{lines:?}");
    ensure!(a.wait()?.success(), "A did not stop cleanly");
    // On B at once (no lease to wait out): the seat and the time served come from Redis.
    let mut moved = b.connect().await?;
    let r = moved.cmd(&format!("RESUME {token}")).await?;
    let rest = r
        .strip_prefix("OK RESUME Os Div1 Ben R2 ")
        .with_context(|| format!("RESUME on B: {r}"))?;
    let required: u64 = rest.split(' ').next().unwrap_or_default().parse()?;
    ensure!(
        required <= 4,
        "{required} s still required: the time served was not carried"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_gives_up_the_seat_taken_meanwhile() -> Result<()> {
    let redis = PrivateRedis::start()?;
    let a = node(&redis, "1s", &[])?;
    let b = node(&redis, "1s", &[])?;
    let mut old = join(&a, "Os_Div2_Grace_R9").await?;
    a.signal(nix::sys::signal::Signal::SIGSTOP)?;
    // A renews nothing while stopped: its seat expires with the lease, and B may take it.
    redis_becomes(&redis, &["EXISTS", "attendanced:seat:Os:Div2:R9"], "0")?;
    let mut new = join(&b, "Os_Div2_Grace_R9").await?;
    a.signal(nix::sys::signal::Signal::SIGCONT)?;
    // A finds the seat B's (a PRESENT meanwhile is fenced the same way) and gives it up.
    let _ = old.send("PRESENT").await;
    let lines = old.closed().await?;
    ensure!(
        lines.iter().any(|l| l == "EVENT REPLACED"),
        "the paused node's connection got {lines:?}"
    );
    ensure!(
        !lines.iter().any(|l| l.starts_with("OK PRESENT")),
        "{lines:?}"
    );
    ensure!(new.cmd("PING").await?.starts_with("OK PONG"));
    let owner = redis.cli(&["GET", "attendanced:seat:Os:Div2:R9"])?;
    ensure!(owner.contains(&format!(":{}#", b.addr.port())), "{owner}");
    Ok(())
}

#[test]
fn check_config_reaches_the_clusters_redis_and_never_prints_its_password() -> Result<()> {
    let mut redis = PrivateRedis::start()?;
    let url = redis.url().replace("redis://", "redis://:hunter2@");
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("attendanced.toml");
    std::fs::write(&cfg, format!("[cluster]\nredis = \"{url}\"\n"))?;
    let check = || {
        std::process::Command::new(attendance_tests::bin_path("attendanced"))
            .arg("--config")
            .arg(&cfg)
            .arg("check-config")
            .current_dir(dir.path())
            .output()
    };
    // This Redis has no password: AUTH fails, and says so (exit 1), without the password.
    let out = check()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.code() == Some(1),
        "exit {:?}: {text}",
        out.status
    );
    ensure!(!text.contains("hunter2"), "{text}");
    ensure!(text.contains("redis://:***@127.0.0.1:"), "{text}");
    // Without the password it answers; stopped, it does not.
    std::fs::write(&cfg, format!("[cluster]\nredis = \"{}\"\n", redis.url()))?;
    let out = check()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "{stdout}");
    ensure!(stdout.contains("reachable, Redis "), "{stdout}");
    redis.stop()?;
    ensure!(check()?.status.code() == Some(1));
    Ok(())
}
