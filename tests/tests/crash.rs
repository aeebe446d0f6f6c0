//! Crash safety: hundreds of students mark themselves present at once, the daemon is killed with
//! SIGKILL at a random moment of that load, and is restarted on the same CSV. Every acknowledged
//! mark must be in the file exactly once, the file must parse completely (a torn last line is cut
//! off at start-up), and afterwards everyone can still be marked, exactly once, with an
//! acknowledged student getting the original time back.
//!
//! Tuning (environment): `ATTENDANCE_CRASH_CLIENTS` (default 500), `ATTENDANCE_CRASH_ROUNDS`
//! (default 20), `ATTENDANCE_CRASH_SEED` (default random; printed, to replay a failing run).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use attendance_tests::{Client, Daemon, Row, read_rows};
use tokio::sync::watch;
use tokio::task::JoinSet;

const ARGS: &[&str] = &["--class-length", "0s"];
/// Students are spread over this many classes (divisions) of one course.
const DIVISIONS: usize = 10;
/// Longest wait for the load to reach the chosen kill point, or for all clients to finish.
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// SplitMix64: small, seedable, good enough to pick kill points.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// Student `i`: its `JOIN` argument and the fields of its CSV row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Student {
    division: String,
    name: String,
    roll: String,
}

impl Student {
    fn new(i: usize) -> Self {
        Self {
            division: format!("D{}", i % DIVISIONS),
            name: format!("S{i}"),
            roll: format!("R{i}"),
        }
    }

    fn join_line(&self) -> String {
        format!("JOIN Crash_{}_{}_{}", self.division, self.name, self.roll)
    }

    /// `required_seconds` is 0: the class length is 0, and so is what is left of it.
    fn join_reply(&self) -> String {
        format!(
            "OK JOIN Crash {} {} {} 0",
            self.division, self.name, self.roll
        )
    }

    fn of_row(row: &Row) -> Self {
        Self {
            division: row.division.clone(),
            name: row.name.clone(),
            roll: row.roll.clone(),
        }
    }
}

/// What a client saw before and around the crash.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// No connection or no greeting: the daemon was already dead.
    NoConnection,
    /// The daemon died before the `JOIN` reply.
    LostJoin,
    /// The daemon died before the `PRESENT` reply.
    LostPresent,
    /// `OK PRESENT <marked_at>`.
    Acked(String),
}

/// A reply that did not come because the connection died is expected after the kill; a reply
/// that did not come within the harness's timeout, with the connection still open, is not.
fn lost(e: &anyhow::Error, i: usize, what: &str) -> Result<()> {
    let text = format!("{e:#}");
    ensure!(
        !text.contains("no line within"),
        "client {i}: no {what} reply and the connection is still open: {text}"
    );
    Ok(())
}

async fn mark_during_crash(
    addr: SocketAddr,
    i: usize,
    acks: Arc<watch::Sender<usize>>,
) -> Result<Outcome> {
    let student = Student::new(i);
    let mut c = match Client::connect(addr).await {
        Ok(c) => c,
        Err(e) => return lost(&e, i, "greeting").map(|()| Outcome::NoConnection),
    };
    let joined = match c.cmd(&student.join_line()).await {
        Ok(r) => r,
        Err(e) => return lost(&e, i, "JOIN").map(|()| Outcome::LostJoin),
    };
    ensure!(
        joined == student.join_reply(),
        "client {i}: JOIN reply {joined:?}"
    );
    let marked = match c.cmd("PRESENT").await {
        Ok(r) => r,
        Err(e) => return lost(&e, i, "PRESENT").map(|()| Outcome::LostPresent),
    };
    let Some(at) = marked.strip_prefix("OK PRESENT ") else {
        bail!("client {i}: PRESENT reply {marked:?}");
    };
    acks.send_modify(|n| *n += 1);
    Ok(Outcome::Acked(at.to_owned()))
}

/// Joins and marks every student against a healthy daemon; returns each one's `marked_at`.
async fn mark_all(addr: SocketAddr, n: usize) -> Result<Vec<String>> {
    let mut tasks = JoinSet::new();
    for i in 0..n {
        tasks.spawn(async move {
            let student = Student::new(i);
            let mut c = Client::connect(addr)
                .await
                .with_context(|| format!("client {i}: connect after the restart"))?;
            let joined = c.cmd(&student.join_line()).await?;
            ensure!(
                joined == student.join_reply(),
                "client {i}: JOIN reply after the restart {joined:?}"
            );
            let marked = c.cmd("PRESENT").await?;
            let Some(at) = marked.strip_prefix("OK PRESENT ") else {
                bail!("client {i}: PRESENT reply after the restart {marked:?}");
            };
            Ok((i, at.to_owned()))
        });
    }
    let mut times = vec![String::new(); n];
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    while let Some(joined) = tokio::time::timeout_at(deadline, tasks.join_next())
        .await
        .context("clients still busy after the restart")?
    {
        let (i, at) = joined??;
        times[i] = at;
    }
    Ok(times)
}

/// Rows by student, failing on a foreign or duplicated row.
fn rows_by_student(rows: &[Row], n: usize) -> Result<HashMap<Student, Row>> {
    let mut by = HashMap::with_capacity(rows.len());
    for row in rows {
        let student = Student::of_row(row);
        let i: usize = row
            .roll
            .strip_prefix('R')
            .and_then(|r| r.parse().ok())
            .with_context(|| format!("row of an unknown student: {row:?}"))?;
        ensure!(
            i < n && Student::new(i) == student && row.course == "Crash",
            "row of an unknown student: {row:?}"
        );
        ensure!(row.status == "Present", "row status: {row:?}");
        ensure!(row.client_addr == "127.0.0.1", "row address: {row:?}");
        if let Some(first) = by.insert(student, row.clone()) {
            bail!("duplicated mark:\n  {first:?}\n  {row:?}");
        }
    }
    Ok(by)
}

#[derive(Debug, Default)]
struct Totals {
    mid_load: u64,
    torn: u64,
    emulated_torn: u64,
    no_connection: usize,
    lost_join: usize,
    lost_present: usize,
    acked: usize,
    unacked_rows: usize,
}

#[derive(Debug, Clone, Copy)]
struct KillPoint {
    /// Kill once this many `OK PRESENT` have been seen…
    after_acks: usize,
    /// …and then this much later.
    delay: Duration,
    /// Then leave half a row at the end of the file, as a power cut could.
    torn_tail: bool,
}

async fn round(round: u64, n: usize, kill: KillPoint, totals: &mut Totals) -> Result<()> {
    let started = Instant::now();
    let mut d = Daemon::start(ARGS)?;
    let addr = d.addr;
    let load_started = Instant::now();
    let (acks, mut seen) = watch::channel(0usize);
    let acks = Arc::new(acks);
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let acks = Arc::clone(&acks);
        tasks.spawn(async move { (i, mark_during_crash(addr, i, acks).await) });
    }

    let reached = tokio::time::timeout(PHASE_TIMEOUT, seen.wait_for(|&a| a >= kill.after_acks))
        .await
        .map(|r| r.is_ok());
    ensure!(
        reached == Ok(true),
        "round {round}: only {} OK PRESENT within {PHASE_TIMEOUT:?}, waiting for {}",
        *seen.borrow(),
        kill.after_acks
    );
    if !kill.delay.is_zero() {
        // The delay is the thing under test: a kill at an arbitrary moment.
        tokio::time::sleep(kill.delay).await;
    }
    let acks_at_kill = *seen.borrow();
    let kill_at = load_started.elapsed();
    d.sigkill()?;
    let status = d.wait()?;
    ensure!(
        status.signal() == Some(nix::sys::signal::Signal::SIGKILL as i32),
        "round {round}: daemon was not killed by SIGKILL: {status:?}"
    );

    let mut outcomes = vec![Outcome::NoConnection; n];
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    while let Some(joined) = tokio::time::timeout_at(deadline, tasks.join_next())
        .await
        .with_context(|| format!("round {round}: clients still busy after the kill"))?
    {
        let (i, outcome) = joined?;
        outcomes[i] = outcome.with_context(|| format!("round {round}"))?;
    }
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let acked = count(|o| matches!(o, Outcome::Acked(_)));
    let no_connection = count(|o| *o == Outcome::NoConnection);
    let lost_join = count(|o| *o == Outcome::LostJoin);
    let lost_present = count(|o| *o == Outcome::LostPresent);

    // Restart on the same directory; a torn tail, if any, must be cut off at start-up.
    let dir = d.into_dir();
    let csv = dir.path().join("attendance.csv");
    let raw = std::fs::read(&csv)?;
    let torn = !raw.ends_with(b"\n");
    // A killed process rarely leaves half a line (its write() completes); a power cut can. In
    // some rounds, emulate one: half the row of a student who has none.
    let mut cut_off = None;
    if kill.torn_tail && !torn {
        let before = read_rows(&csv)
            .await
            .with_context(|| format!("round {round}: the CSV does not parse after the kill"))?;
        let marked = rows_by_student(&before, n)?;
        if let Some(i) = (0..n).find(|&i| !marked.contains_key(&Student::new(i))) {
            let s = Student::new(i);
            let half = format!("Crash,{},{},{},Pres", s.division, s.name, s.roll);
            let mut file = std::fs::OpenOptions::new().append(true).open(&csv)?;
            std::io::Write::write_all(&mut file, half.as_bytes())?;
            cut_off = Some(i);
        }
    }
    let d = Daemon::start_in(dir, ARGS)
        .with_context(|| format!("round {round}: restart after the crash"))?;
    let rows = read_rows(&d.csv_path())
        .await
        .with_context(|| format!("round {round}: the CSV does not parse after the restart"))?;
    let by_student =
        rows_by_student(&rows, n).with_context(|| format!("round {round}: after the crash"))?;
    if let Some(i) = cut_off {
        ensure!(
            !by_student.contains_key(&Student::new(i)),
            "round {round}: the torn row of client {i} was kept"
        );
    }
    for (i, outcome) in outcomes.iter().enumerate() {
        if let Outcome::Acked(at) = outcome {
            let row = by_student.get(&Student::new(i)).with_context(|| {
                format!("round {round}: client {i} got OK PRESENT {at} but has no row")
            })?;
            ensure!(
                &row.marked_at == at,
                "round {round}: client {i} was acknowledged at {at}, its row says {}",
                row.marked_at
            );
        }
    }
    let unacked_rows = rows.len() - acked;

    // Everyone tries again; whoever is on disk gets the original time back, and no second row.
    let times = mark_all(d.addr, n)
        .await
        .with_context(|| format!("round {round}: marking everyone after the restart"))?;
    for (i, at) in times.iter().enumerate() {
        let original = match &outcomes[i] {
            Outcome::Acked(original) => Some(original),
            _ => by_student.get(&Student::new(i)).map(|r| &r.marked_at),
        };
        if let Some(original) = original {
            ensure!(
                at == original,
                "round {round}: client {i} was marked at {original} before the crash, but \
                 PRESENT after the restart says {at}"
            );
        }
    }
    let text = std::fs::read_to_string(d.csv_path())?;
    ensure!(
        text.matches("course,division").count() == 1,
        "round {round}: one header only"
    );
    let rows = read_rows(&d.csv_path()).await?;
    let by_student = rows_by_student(&rows, n)
        .with_context(|| format!("round {round}: after everyone retried"))?;
    ensure!(
        rows.len() == n,
        "round {round}: {} rows for {n} students",
        rows.len()
    );
    for (i, at) in times.iter().enumerate() {
        let row = &by_student[&Student::new(i)];
        ensure!(
            &row.marked_at == at,
            "round {round}: client {i} was told {at}, its row says {}",
            row.marked_at
        );
    }
    drop(d);

    println!(
        "round {round:>2}: kill after {:>3} acks + {:>4}µs (saw {acks_at_kill:>3} at {:>4}ms): \
         acked {acked:>3}, lost at JOIN {lost_join:>3} / at PRESENT {lost_present:>3}, \
         no connection {no_connection:>3}, unacknowledged rows {unacked_rows:>3}, torn tail \
         {torn}{}; round took {:>4}ms",
        kill.after_acks,
        kill.delay.as_micros(),
        kill_at.as_millis(),
        match cut_off {
            Some(i) => format!(" (emulated: half the row of client {i})"),
            None => String::new(),
        },
        started.elapsed().as_millis(),
    );
    totals.mid_load += u64::from(acked > 0 && acked < n);
    totals.torn += u64::from(torn);
    totals.emulated_torn += u64::from(cut_off.is_some());
    totals.no_connection += no_connection;
    totals.lost_join += lost_join;
    totals.lost_present += lost_present;
    totals.acked += acked;
    totals.unacked_rows += unacked_rows;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_mark_and_duplicates_none() -> Result<()> {
    let n = usize::try_from(env_number("ATTENDANCE_CRASH_CLIENTS", 500)?)?;
    let rounds = env_number("ATTENDANCE_CRASH_ROUNDS", 20)?;
    let seed = match std::env::var("ATTENDANCE_CRASH_SEED") {
        Ok(_) => env_number("ATTENDANCE_CRASH_SEED", 0)?,
        Err(_) => random_seed(),
    };
    ensure!(n >= 1, "ATTENDANCE_CRASH_CLIENTS must be at least 1");
    println!("crash test: {n} clients, {rounds} rounds, ATTENDANCE_CRASH_SEED={seed}");
    // Build (or find) the daemon before the clock starts.
    attendance_tests::bin_path("attendanced");
    let mut rng = Rng(seed);
    let mut totals = Totals::default();
    let started = Instant::now();
    for r in 0..rounds {
        // Mostly right after the k-th acknowledgement; one round in four a little later.
        let after_acks = usize::try_from(rng.below(n as u64))?;
        let delay = if rng.below(4) == 0 {
            Duration::from_micros(rng.below(5_000))
        } else {
            Duration::ZERO
        };
        let torn_tail = rng.below(4) == 0;
        let kill = KillPoint {
            after_acks,
            delay,
            torn_tail,
        };
        round(r, n, kill, &mut totals)
            .await
            .with_context(|| format!("replay with ATTENDANCE_CRASH_SEED={seed}"))?;
    }
    println!(
        "crash test: {rounds} rounds in {:.1}s; killed mid-load in {} rounds, torn tail in {} \
         (and emulated in {}); \
         {} acked, {} unacknowledged rows, {} lost at JOIN, {} lost at PRESENT, \
         {} connections refused or cut before the greeting",
        started.elapsed().as_secs_f64(),
        totals.mid_load,
        totals.torn,
        totals.emulated_torn,
        totals.acked,
        totals.unacked_rows,
        totals.lost_join,
        totals.lost_present,
        totals.no_connection,
    );
    Ok(())
}
