//! `redis-server` for the comparison runs: the machine's package (see `crates/bench/setup.sh`),
//! started on a free loopback port in its own temporary directory — never the machine's own
//! Redis on 6379 — without persistence, or for marks with an append-only file synced before
//! every reply (`appendfsync always`). Killed when dropped.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use attendance_testkit::{KitError, Output, Process, Spawn};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::net;
use crate::resp::{RespError, RespReader};

/// Longest wait for "Ready to accept connections".
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts tried before giving up (a free port can be taken between probing and binding).
const START_ATTEMPTS: usize = 3;

/// What Redis writes to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persistence {
    /// Nothing: pub/sub and connection holding.
    None,
    /// `appendonly yes`, `appendfsync always`: the durable-marks comparison.
    AofAlways,
}

/// Why Redis could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum RedisError {
    /// No `redis-server` at the given path or in `PATH`.
    #[error(
        "{0} not found: install it with crates/bench/setup.sh (apt-get install -y redis-server) or pass --redis-bin"
    )]
    NotFound(PathBuf),
    /// Its directory could not be made, or no free port found.
    #[error("cannot prepare redis-server: {0}")]
    Setup(#[source] io::Error),
    /// The process could not be started.
    #[error(transparent)]
    Spawn(KitError),
    /// It did not become ready.
    #[error("redis-server did not become ready: {0}")]
    NotReady(#[source] KitError),
}

/// Resolves `bin` like a shell would: a path with a `/` as it is, a bare name through `PATH`.
pub(crate) fn find_binary(bin: &Path) -> Option<PathBuf> {
    if bin.components().count() > 1 {
        return bin.is_file().then(|| bin.to_owned());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(bin))
            .find(|p| p.is_file())
    })
}

/// A running `redis-server` started by the bench.
#[derive(Debug)]
pub(crate) struct RedisProcess {
    process: Process,
    addr: SocketAddr,
    // After `process`: the server is gone before its directory is removed.
    dir: tempfile::TempDir,
}

impl RedisProcess {
    /// Starts `bin` on a free port of 127.0.0.1 in a new directory under `tmp_root`.
    ///
    /// # Errors
    /// If the binary is missing, or the server does not become ready.
    pub(crate) fn start(
        bin: &Path,
        persistence: Persistence,
        tmp_root: Option<&Path>,
    ) -> Result<Self, RedisError> {
        let bin = find_binary(bin).ok_or_else(|| RedisError::NotFound(bin.to_owned()))?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(&bin, persistence, tmp_root) {
                Ok(redis) => return Ok(redis),
                Err(e @ RedisError::NotReady(_)) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(RedisError::NotReady(KitError::NoExit(START_TIMEOUT))))
    }

    fn start_once(
        bin: &Path,
        persistence: Persistence,
        tmp_root: Option<&Path>,
    ) -> Result<Self, RedisError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("attendance-bench-redis-");
        let dir = match tmp_root {
            Some(root) => builder.tempdir_in(root),
            None => builder.tempdir(),
        }
        .map_err(RedisError::Setup)?;
        let port = free_port().map_err(RedisError::Setup)?;
        let mut spawn = Spawn::new(bin)
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
            .args(["--save", "", "--daemonize", "no", "--logfile", ""])
            .args(["--maxclients", "100000"])
            .arg("--dir")
            .arg(dir.path());
        spawn = match persistence {
            Persistence::None => spawn.args(["--appendonly", "no"]),
            Persistence::AofAlways => {
                spawn.args(["--appendonly", "yes", "--appendfsync", "always"])
            }
        };
        // `--logfile ""` logs to standard output.
        let mut process = spawn
            .current_dir(dir.path())
            .output(Output::Stdout)
            .spawn()
            .map_err(RedisError::Spawn)?;
        process
            .wait_for_line("Ready to accept connections", START_TIMEOUT)
            .map_err(RedisError::NotReady)?;
        Ok(Self {
            process,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        })
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Its directory (the append-only file for marks).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its resident memory in bytes.
    pub(crate) fn rss_bytes(&self) -> Option<u64> {
        crate::process::rss_bytes(self.process.pid())
    }

    /// The CPU time it has used so far.
    pub(crate) fn cpu(&self) -> Option<crate::process::CpuTime> {
        crate::process::cpu_time(self.process.pid())
    }
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A Redis connection from client number `index`'s source address.
pub(crate) type Conn = (RespReader<OwnedReadHalf>, OwnedWriteHalf);

/// Connects client number `index` (see [`net::source_ip`]).
///
/// # Errors
/// If the connection fails.
pub(crate) async fn connect(index: usize, addr: SocketAddr) -> Result<Conn, RespError> {
    let stream = net::connect_from(index, addr).await?;
    let (read, write) = stream.into_split();
    Ok((RespReader::new(read), write))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_is_looked_up_in_path_and_a_path_is_taken_as_is() {
        assert!(find_binary(Path::new("sh")).is_some());
        assert!(find_binary(Path::new("/definitely/not/here/redis-server")).is_none());
        assert!(find_binary(Path::new("no-such-binary-attendance-bench")).is_none());
    }
}
