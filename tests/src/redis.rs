//! A private Redis for tests that stop, restart or pause it: `redis-server` on a free loopback
//! port with persistence off, started and stopped by the test itself. Never the machine's.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

/// How long Redis may take to start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A Redis server of its own, running (or stopped) on a fixed loopback port.
#[derive(Debug)]
pub struct PrivateRedis {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<Child>,
}

impl PrivateRedis {
    /// A new server, started.
    ///
    /// # Errors
    /// If it does not start.
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut r = Self {
            dir,
            port,
            server: None,
        };
        r.resume()?;
        Ok(r)
    }

    /// The connection URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, empty: nothing is persisted) on its port, and returns once it
    /// accepts connections.
    ///
    /// # Errors
    /// If it does not start in time.
    pub fn resume(&mut self) -> Result<()> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "notice"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server (Debian package redis-server)")?;
        let stdout = child.stdout.take().context("redis-server stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        self.server = Some(child);
        if rx.recv_timeout(READY_TIMEOUT).is_err() {
            bail!("redis-server did not get ready on port {}", self.port);
        }
        Ok(())
    }

    /// Kills the server (as a crash would), and returns once it has exited.
    ///
    /// # Errors
    /// If it cannot be signalled.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.server.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// What `redis-cli` prints for `args` against this server.
    ///
    /// # Errors
    /// If redis-cli fails.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .context("redis-cli")?;
        if !out.status.success() {
            bail!(
                "redis-cli {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
