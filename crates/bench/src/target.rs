//! The server under load in one run — a daemon the bench started, a daemon already running
//! (`--addr`), several daemons the bench started as one service on a private Redis
//! (`fanout --nodes`, `marks --nodes`), or Redis — with what can be measured about it (RSS, its directory, its
//! CSV; of a service, its first node's). Everything the bench started is killed when the
//! target is dropped: the nodes first, then their Redis.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;

use crate::cli::{Common, TargetKind, Transport};
use crate::daemon::{self, DaemonProcess, Settings};
use crate::line::Endpoint;
use crate::net;
use crate::redis::{Persistence, RedisProcess};

/// A server to load.
#[derive(Debug)]
pub(crate) struct Target {
    /// What it speaks.
    pub(crate) kind: TargetKind,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Where a daemon serves `/ws`, if its web port is on (or, with `--addr`, `--web-addr`).
    web: Option<SocketAddr>,
    server: Server,
    /// The other nodes of a cluster (`fanout --nodes`), and the Redis they share.
    peers: Vec<DaemonProcess>,
    bus: Option<RedisProcess>,
}

#[derive(Debug)]
enum Server {
    Daemon(DaemonProcess),
    External,
    Redis(RedisProcess),
}

impl Target {
    /// The daemon for a run: the one at `--addr`, or a new one started with `settings` (plus
    /// the user's `--set`).
    ///
    /// # Errors
    /// If `--addr` is not loopback, a `--set` is malformed, or the daemon does not start.
    pub(crate) fn daemon(common: &Common, mut settings: Settings) -> anyhow::Result<Self> {
        if let Some(addr) = common.addr {
            net::ensure_loopback(addr)?;
            if let Some(web) = common.web_addr {
                net::ensure_loopback(web)?;
            }
            return Ok(Self {
                kind: TargetKind::Daemon,
                addr,
                web: common.web_addr,
                server: Server::External,
                peers: Vec::new(),
                bus: None,
            });
        }
        settings.apply_overrides(&common.settings)?;
        let bin = common
            .daemon_bin
            .clone()
            .unwrap_or_else(daemon::default_binary);
        let process = DaemonProcess::start(
            &bin,
            &settings,
            common.tmp_dir.as_deref(),
            &common.daemon_log,
        )?;
        Ok(Self {
            kind: TargetKind::Daemon,
            addr: process.addr(),
            web: process.web_addr(),
            server: Server::Daemon(process),
            peers: Vec::new(),
            bus: None,
        })
    }

    /// `nodes` daemons started with `settings` (plus the user's `--set`) as one service on a
    /// private `redis-server` (no persistence, a free loopback port — never the machine's
    /// Redis) the bench starts for them. If anything fails to start, what did start is killed.
    ///
    /// # Errors
    /// With `--addr` or no node, if a `--set` is malformed, or if Redis or a daemon does not
    /// start.
    pub(crate) fn cluster(
        common: &Common,
        mut settings: Settings,
        nodes: usize,
    ) -> anyhow::Result<Self> {
        if common.addr.is_some() {
            anyhow::bail!("--nodes starts its own daemons; it does not take --addr");
        }
        if nodes == 0 {
            anyhow::bail!("a service needs at least one node");
        }
        settings.apply_overrides(&common.settings)?;
        let bus = RedisProcess::start(
            &common.redis_bin,
            Persistence::None,
            common.tmp_dir.as_deref(),
        )
        .context("starting redis-server for the nodes (--nodes)")?;
        // A dotted key, so `--set cluster.lease=…` can sit beside it; set last, so no `--set`
        // can point the nodes at another Redis.
        settings.set("cluster.redis", &format!("\"redis://{}\"", bus.addr()));
        let bin = common
            .daemon_bin
            .clone()
            .unwrap_or_else(daemon::default_binary);
        let mut started = Vec::with_capacity(nodes);
        for n in 1..=nodes {
            let node = DaemonProcess::start(
                &bin,
                &settings,
                common.tmp_dir.as_deref(),
                &common.daemon_log,
            )
            .with_context(|| format!("starting node {n} of {nodes}"))?;
            started.push(node);
        }
        let mut started = started.into_iter();
        let Some(first) = started.next() else {
            anyhow::bail!("no node started");
        };
        Ok(Self {
            kind: TargetKind::Daemon,
            addr: first.addr(),
            web: first.web_addr(),
            server: Server::Daemon(first),
            peers: started.collect(),
            bus: Some(bus),
        })
    }

    /// A new `redis-server`.
    ///
    /// # Errors
    /// If it is not installed or does not start.
    pub(crate) fn redis(common: &Common, persistence: Persistence) -> anyhow::Result<Self> {
        let process =
            RedisProcess::start(&common.redis_bin, persistence, common.tmp_dir.as_deref())
                .context("starting redis-server for --compare redis")?;
        Ok(Self {
            kind: TargetKind::Redis,
            addr: process.addr(),
            web: None,
            server: Server::Redis(process),
            peers: Vec::new(),
            bus: None,
        })
    }

    /// Where its clients connect over `transport`: the student port, or the web port for
    /// WebSocket (Redis: its port, whatever the transport).
    ///
    /// # Errors
    /// For WebSocket to a daemon whose web port is unknown (`--addr` without `--web-addr`).
    pub(crate) fn endpoint(&self, transport: Transport) -> anyhow::Result<Endpoint> {
        match (self.kind, transport) {
            (TargetKind::Redis, _) | (TargetKind::Daemon, Transport::Tcp) => {
                Ok(Endpoint::from(self.addr))
            }
            (TargetKind::Daemon, Transport::Ws) => {
                let addr = self.web.context(
                    "--transport ws needs the daemon's web port: with --addr, pass --web-addr",
                )?;
                Ok(Endpoint { transport, addr })
            }
        }
    }

    /// Where clients connect over `transport`, one per node: the first node's
    /// ([`Target::endpoint`]), then the other nodes' of a cluster.
    ///
    /// # Errors
    /// As [`Target::endpoint`].
    pub(crate) fn endpoints(&self, transport: Transport) -> anyhow::Result<Vec<Endpoint>> {
        let mut all = vec![self.endpoint(transport)?];
        for peer in &self.peers {
            let addr = match transport {
                Transport::Tcp => peer.addr(),
                Transport::Ws => peer.web_addr().context("a node without its web port")?,
            };
            all.push(Endpoint { transport, addr });
        }
        Ok(all)
    }

    /// Its resident memory in bytes, when the bench started it and it runs.
    pub(crate) fn rss_bytes(&self) -> Option<u64> {
        match &self.server {
            Server::Daemon(d) => d.rss_bytes(),
            Server::Redis(r) => r.rss_bytes(),
            Server::External => None,
        }
    }

    /// The CPU time it has used so far, when the bench started it and it runs; of a service,
    /// all its nodes' together.
    pub(crate) fn cpu(&self) -> Option<crate::process::CpuTime> {
        let first = match &self.server {
            Server::Daemon(d) => d.cpu(),
            Server::Redis(r) => r.cpu(),
            Server::External => None,
        }?;
        self.peers.iter().try_fold(first, |sum, peer| {
            let cpu = peer.cpu()?;
            Some(crate::process::CpuTime {
                user: sum.user + cpu.user,
                system: sum.system + cpu.system,
            })
        })
    }

    /// Where each node the bench started serves `/metrics` (the first node's first), for the
    /// nodes that serve it.
    pub(crate) fn all_metrics_addrs(&self) -> Vec<SocketAddr> {
        self.metrics_addr()
            .into_iter()
            .chain(self.peers.iter().filter_map(DaemonProcess::metrics_addr))
            .collect()
    }

    /// Stops every node the bench started with SIGTERM (each drains and syncs), the first
    /// last.
    ///
    /// # Errors
    /// If a node could not be stopped or did not exit cleanly.
    pub(crate) fn stop_nodes(&mut self) -> anyhow::Result<()> {
        for peer in &mut self.peers {
            let status = peer.stop().context("stopping a node")?;
            anyhow::ensure!(status.success(), "a node exited with {status} on SIGTERM");
        }
        if let Server::Daemon(d) = &mut self.server {
            let status = d.stop().context("stopping the daemon")?;
            anyhow::ensure!(
                status.success(),
                "the daemon exited with {status} on SIGTERM"
            );
        }
        Ok(())
    }

    /// Its data directory, when the bench started it.
    pub(crate) fn dir(&self) -> Option<&Path> {
        match &self.server {
            Server::Daemon(d) => Some(d.dir()),
            Server::Redis(r) => Some(r.dir()),
            Server::External => None,
        }
    }

    /// Where the daemon the bench started serves `/metrics`, if it was asked to.
    pub(crate) fn metrics_addr(&self) -> Option<SocketAddr> {
        match &self.server {
            Server::Daemon(d) => d.metrics_addr(),
            Server::Redis(_) | Server::External => None,
        }
    }

    /// The daemon the bench started, if this is one.
    pub(crate) fn daemon_process(&mut self) -> Option<&mut DaemonProcess> {
        match &mut self.server {
            Server::Daemon(d) => Some(d),
            Server::Redis(_) | Server::External => None,
        }
    }

    /// The title line's details: address and pid.
    pub(crate) fn detail(&self) -> String {
        match &self.server {
            Server::Daemon(d) if !self.peers.is_empty() => {
                let mut nodes = format!("{} pid {}", self.addr, d.pid());
                for peer in &self.peers {
                    nodes.push_str(&format!(", {} pid {}", peer.addr(), peer.pid()));
                }
                match &self.bus {
                    Some(bus) => format!(
                        "{} nodes: {nodes}; redis {} pid {}",
                        self.peers.len() + 1,
                        bus.addr(),
                        bus.pid()
                    ),
                    None => format!("{} nodes: {nodes}", self.peers.len() + 1),
                }
            }
            Server::Daemon(d) => match self.web {
                Some(web) => format!("{}, web {web}, pid {}", self.addr, d.pid()),
                None => format!("{}, pid {}", self.addr, d.pid()),
            },
            Server::Redis(r) => format!("{}, pid {}", self.addr, r.pid()),
            Server::External => match self.web {
                Some(web) => format!("{}, web {web}, started elsewhere", self.addr),
                None => format!("{}, started elsewhere", self.addr),
            },
        }
    }

    /// The end of the daemon's log, for error messages.
    pub(crate) fn log_tail(&self) -> Option<String> {
        match &self.server {
            Server::Daemon(d) if !self.peers.is_empty() => {
                let mut out = format!("--- node 1 ({})\n{}", self.addr, d.log_tail());
                for (i, peer) in self.peers.iter().enumerate() {
                    out.push_str(&format!(
                        "\n--- node {} ({})\n{}",
                        i + 2,
                        peer.addr(),
                        peer.log_tail()
                    ));
                }
                Some(out)
            }
            Server::Daemon(d) => Some(d.log_tail()),
            Server::Redis(_) | Server::External => None,
        }
    }
}
