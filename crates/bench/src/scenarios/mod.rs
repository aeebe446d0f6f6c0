//! The scenarios, and what they share: running one against the daemon and then against its
//! references (with `--compare redis`, Redis; for `fanout --transport ws`, the same fan-out over
//! TCP on a daemon of its own; for `fanout --nodes N`, the same fan-out on one node, before
//! Redis if both are asked for), the daemon settings every run starts from, run identities, and
//! opening many connections with bounded concurrency.

pub(crate) mod fanout;
pub(crate) mod fsync;
pub(crate) mod hold;
pub(crate) mod marks;
pub(crate) mod startup;
pub(crate) mod storm;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::{
    Common, CompareWith, FanoutArgs, HoldArgs, MarksArgs, Scenario, StormArgs, Transport,
};
use crate::daemon::Settings;
use crate::redis::Persistence;
use crate::report::{Report, comparison, ratio_summary, ratios};
use crate::target::Target;
use crate::workers;

/// What a round's daemon run is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reference {
    /// `--compare redis`: the same shape against Redis.
    Redis,
    /// `fanout --transport ws`: the same fan-out over TCP, on a daemon of its own with the same
    /// settings.
    Tcp,
    /// `fanout --nodes N`: the same fan-out on one node.
    OneNode,
}

/// A load scenario (the ones that run against a server).
#[derive(Clone)]
enum Load {
    Hold(HoldArgs),
    Storm(StormArgs),
    Fanout(FanoutArgs),
    Marks(MarksArgs),
}

impl Load {
    fn common(&self) -> &Common {
        match self {
            Self::Hold(a) => &a.common,
            Self::Storm(a) => &a.common,
            Self::Fanout(a) => &a.common,
            Self::Marks(a) => &a.common,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Hold(_) => "hold",
            Self::Storm(_) => "storm",
            Self::Fanout(_) => "fanout",
            Self::Marks(_) => "marks",
        }
    }

    fn daemon_settings(&self) -> Settings {
        match self {
            Self::Hold(a) => hold::settings(a),
            Self::Storm(_) => storm::settings(),
            Self::Fanout(a) => fanout::settings(a),
            Self::Marks(a) => {
                let mut s = marks::settings();
                if let Some(url) = &a.store {
                    s.set("store", &format!("{url:?}"));
                }
                s
            }
        }
    }

    /// What each round's measured run is compared with, in order: each reference's run is
    /// compared with the run before it (`fanout --nodes N --compare redis`: N nodes / one node,
    /// then one node / Redis).
    ///
    /// # Errors
    /// For `fanout --transport ws` with `--compare` or `--nodes` (its reference is TCP), and
    /// `--rounds` without a reference.
    fn references(&self) -> anyhow::Result<Vec<Reference>> {
        let (ws_fanout, nodes) = match self {
            Self::Fanout(a) => (a.transport == Transport::Ws, a.nodes > 1),
            Self::Marks(a) => {
                if a.nodes > 1 && a.store.is_none() {
                    bail!(
                        "marks --nodes needs --store: the nodes of a service share one \
                         database (a node's CSV is its own)"
                    );
                }
                (false, a.nodes > 1)
            }
            Self::Hold(_) | Self::Storm(_) => (false, false),
        };
        let mut references = Vec::new();
        if ws_fanout {
            if self.common().compare.is_some() || nodes {
                bail!(
                    "fanout --transport ws is compared with the same fan-out over TCP; \
                     --compare and --nodes do not apply to it"
                );
            }
            references.push(Reference::Tcp);
        }
        if nodes {
            references.push(Reference::OneNode);
        }
        if self.common().compare == Some(CompareWith::Redis) {
            references.push(Reference::Redis);
        }
        if references.is_empty() && self.common().rounds > 1 {
            bail!(
                "--rounds needs a reference: --compare redis, fanout or marks --nodes N, or \
                 fanout --transport ws"
            );
        }
        Ok(references)
    }

    /// The same load on one node.
    fn one_node(&self) -> Self {
        let mut load = self.clone();
        match &mut load {
            Self::Fanout(a) => a.nodes = 1,
            Self::Marks(a) => a.nodes = 1,
            Self::Hold(_) | Self::Storm(_) => {}
        }
        load
    }

    /// Daemons the load runs on.
    fn nodes(&self) -> usize {
        match self {
            Self::Fanout(a) => usize::from(a.nodes),
            Self::Marks(a) => usize::from(a.nodes),
            Self::Hold(_) | Self::Storm(_) => 1,
        }
    }

    /// The same load with the daemon's clients on the student port.
    fn over_tcp(&self) -> Self {
        let mut load = self.clone();
        match &mut load {
            Self::Hold(a) => a.transport = Transport::Tcp,
            Self::Fanout(a) => a.transport = Transport::Tcp,
            Self::Storm(_) | Self::Marks(_) => {}
        }
        load
    }

    fn persistence(&self) -> Persistence {
        match self {
            Self::Marks(_) => Persistence::AofAlways,
            Self::Hold(_) | Self::Storm(_) | Self::Fanout(_) => Persistence::None,
        }
    }

    async fn run(&self, target: &mut Target) -> anyhow::Result<Report> {
        match self {
            Self::Hold(a) => hold::run(a, target).await,
            Self::Storm(a) => storm::run(a, target).await,
            Self::Fanout(a) => fanout::run(a, target).await,
            Self::Marks(a) => marks::run(a, target).await,
        }
    }
}

/// Runs `scenario`, printing each report's table and JSON line; returns whether every run was
/// free of correctness problems.
///
/// # Errors
/// If a server cannot be started or a run cannot be carried out at all.
pub(crate) async fn run(scenario: Scenario) -> anyhow::Result<bool> {
    let load = match scenario {
        Scenario::Hold(a) => Load::Hold(a),
        Scenario::Storm(a) => Load::Storm(a),
        Scenario::Fanout(a) => Load::Fanout(a),
        Scenario::Marks(a) => Load::Marks(a),
        Scenario::Fsync(a) => {
            let report = fsync::run(&a)?;
            print(&report);
            return Ok(report.ok());
        }
        Scenario::Startup(a) => {
            let report = startup::run(&a).await?;
            print(&report);
            return Ok(report.ok());
        }
        Scenario::Worker(a) => {
            workers::run_worker(a).await?;
            return Ok(true);
        }
    };
    let common = load.common().clone();
    let references = load.references()?;
    let settings = load.daemon_settings();
    let mut ok = true;
    // Per compared pair (measured / first reference, then each reference / the next): the
    // targets' names and every round's ratios.
    let mut pairs: Vec<((String, String), Vec<_>)> = Vec::new();
    for _ in 0..common.rounds {
        let mut previous = run_daemon(&load, &common, settings.clone()).await?;
        print(&previous);
        ok &= previous.ok();
        for (i, reference) in references.iter().enumerate() {
            let other = match reference {
                Reference::Redis => {
                    let mut redis = Target::redis(&common, load.persistence())?;
                    let other = load.run(&mut redis).await?;
                    drop(redis);
                    other
                }
                // The same settings (web port included), so only the clients' transport
                // differs.
                Reference::Tcp => run_daemon(&load.over_tcp(), &common, settings.clone()).await?,
                Reference::OneNode => {
                    run_daemon(&load.one_node(), &common, settings.clone()).await?
                }
            };
            print(&other);
            println!("{}", comparison(&previous, &other));
            ok &= other.ok();
            if pairs.len() <= i {
                pairs.push(((previous.target(), other.target()), Vec::new()));
            }
            if let Some((_, rounds)) = pairs.get_mut(i) {
                rounds.push(ratios(&previous, &other));
            }
            previous = other;
        }
    }
    if common.rounds > 1 {
        for ((a, b), rounds) in &pairs {
            println!("{}", ratio_summary(load.name(), (a, b), rounds));
        }
    }
    Ok(ok)
}

/// One run against a daemon of its own started with `settings` (or the one at `--addr`).
async fn run_daemon(load: &Load, common: &Common, settings: Settings) -> anyhow::Result<Report> {
    let mut daemon = match load.nodes() {
        1 => Target::daemon(common, settings)?,
        n => Target::cluster(common, settings, n)?,
    };
    match load.run(&mut daemon).await {
        Ok(report) => Ok(report),
        Err(e) => {
            let log = daemon.log_tail().unwrap_or_default();
            Err(e.context(format!("the daemon's log ends with:\n{log}")))
        }
    }
}

fn print(report: &Report) {
    println!("{}", report.table());
    println!("{}", report.json());
}

/// Settings every daemon run starts from: durable marks, and time to connect thousands of
/// clients before they JOIN.
pub(crate) fn base_settings() -> Settings {
    let mut s = Settings::default();
    s.set("fsync", "\"always\"").set("login_timeout", "\"10m\"");
    s
}

/// A short identity for this run (letters and digits), so identities never collide with an
/// earlier run's on a daemon that keeps running (`--addr`), and Redis keys stay apart.
pub(crate) fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}", (nanos ^ u128::from(std::process::id())) & 0xff_ffff)
}

/// Nanoseconds since `t0` as a `u64` (saturating; runs are far shorter than 584 years).
pub(crate) fn nanos_since(t0: std::time::Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The outcome of [`open_many`].
pub(crate) struct Opened<T> {
    /// Opened connections with their client numbers, in no particular order.
    pub(crate) conns: Vec<(usize, T)>,
    /// How many failed (or were not done in time).
    pub(crate) failed: usize,
    /// The first failure.
    pub(crate) first_error: Option<String>,
}

/// Runs `open(i)` for `i` in `0..count`, at most `concurrency` at a time, within `timeout`.
pub(crate) async fn open_many<T, F, Fut>(
    count: usize,
    concurrency: usize,
    timeout: Duration,
    open: F,
) -> Opened<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, String>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut opened = Opened {
        conns: Vec::with_capacity(count),
        failed: 0,
        first_error: None,
    };
    let work = async {
        for i in 0..count {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let fut = open(i);
            tasks.spawn(async move {
                let result = fut.await;
                drop(permit);
                (i, result)
            });
            // Collect what is done as we go, so the vector fills while connecting.
            while let Some(done) = tasks.try_join_next() {
                collect(&mut opened, done);
            }
        }
        while let Some(done) = tasks.join_next().await {
            collect(&mut opened, done);
        }
    };
    if tokio::time::timeout(timeout, work).await.is_err() {
        let missing = count - opened.conns.len() - opened.failed;
        opened.failed += missing;
        opened.first_error.get_or_insert(format!(
            "{missing} connections not opened within {timeout:?}"
        ));
    }
    opened
}

fn collect<T>(
    opened: &mut Opened<T>,
    done: Result<(usize, Result<T, String>), tokio::task::JoinError>,
) {
    match done {
        Ok((i, Ok(conn))) => opened.conns.push((i, conn)),
        Ok((_, Err(e))) => {
            opened.failed += 1;
            opened.first_error.get_or_insert(e);
        }
        Err(e) => {
            opened.failed += 1;
            opened.first_error.get_or_insert(e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser as _;

    fn load(args: &[&str]) -> Load {
        let cli = Cli::try_parse_from(["attendance-bench"].iter().chain(args))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        match cli.scenario {
            Scenario::Hold(a) => Load::Hold(a),
            Scenario::Fanout(a) => Load::Fanout(a),
            Scenario::Storm(a) => Load::Storm(a),
            Scenario::Marks(a) => Load::Marks(a),
            _ => panic!("not a load"),
        }
    }

    #[test]
    fn a_websocket_fanout_is_compared_with_tcp_and_nothing_else() {
        let ws = load(&["fanout", "--transport", "ws", "--rounds", "3"]);
        assert_eq!(ws.references().ok(), Some(vec![Reference::Tcp]));
        let Load::Fanout(tcp) = ws.over_tcp() else {
            panic!("fanout");
        };
        assert_eq!(tcp.transport, Transport::Tcp);
        // The reference daemon gets the measured one's settings, web port included.
        assert!(ws.daemon_settings().has("web_listen"));
        assert!(!load(&["fanout"]).daemon_settings().has("web_listen"));
        assert!(
            load(&["fanout", "--transport", "ws", "--compare", "redis"])
                .references()
                .is_err()
        );
        assert!(
            load(&["fanout", "--transport", "ws", "--nodes", "2"])
                .references()
                .is_err()
        );
    }

    #[test]
    fn a_fanout_over_nodes_is_compared_with_one_node_then_one_node_with_redis() {
        let three = load(&["fanout", "--nodes", "3", "--compare", "redis"]);
        assert_eq!(three.nodes(), 3);
        assert_eq!(
            three.references().ok(),
            Some(vec![Reference::OneNode, Reference::Redis])
        );
        assert_eq!(three.one_node().nodes(), 1);
        assert_eq!(
            load(&["fanout", "--nodes", "2", "--rounds", "3"])
                .references()
                .ok(),
            Some(vec![Reference::OneNode])
        );
        assert_eq!(load(&["fanout"]).nodes(), 1);
        let cli = Cli::try_parse_from(["attendance-bench", "fanout", "--nodes", "0"]);
        assert!(cli.is_err());
    }

    #[test]
    fn redis_is_the_reference_of_compare_and_rounds_need_one() {
        assert_eq!(
            load(&["hold", "--transport", "ws", "--compare", "redis"])
                .references()
                .ok(),
            Some(vec![Reference::Redis])
        );
        assert_eq!(load(&["hold"]).references().ok(), Some(vec![]));
        assert!(load(&["hold", "--rounds", "2"]).references().is_err());
        assert!(load(&["fanout", "--rounds", "2"]).references().is_err());
        assert!(
            load(&["hold", "--transport", "ws"])
                .daemon_settings()
                .has("web_listen")
        );
    }
}
