//! A private PostgreSQL server for tests that stop and restart it: `initdb` in a temp dir (as
//! the `postgres` user when run as root, since PostgreSQL refuses to run as root) on a free
//! loopback port, started and stopped by the test itself. Never the machine's server.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

/// How long PostgreSQL may take to start or stop.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A PostgreSQL cluster of its own, running (or stopped) on a fixed loopback port.
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    server: Option<Child>,
}

/// The directory of PostgreSQL's server programs (Debian: /usr/lib/postgresql/N/bin).
fn bin_dir() -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL's server programs (/usr/lib/postgresql) are not installed")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().context("no initdb under /usr/lib/postgresql")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `program` run as the `postgres` user when we are root.
fn as_postgres(program: PathBuf) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PrivatePostgres {
    /// A new cluster, started.
    ///
    /// # Errors
    /// If initdb or the server fails.
    pub fn start() -> Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::tempdir()?;
        if is_root() {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
        }
        let data = dir.path().join("data");
        let out = as_postgres(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .output()
            .context("initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut pg = Self {
            dir,
            bin,
            port,
            server: None,
        };
        pg.resume()?;
        Ok(pg)
    }

    /// The connection URL.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) on its port, and returns once it accepts connections.
    ///
    /// # Errors
    /// If it does not start within a minute.
    pub fn resume(&mut self) -> Result<()> {
        let mut child = as_postgres(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("postgres")?;
        let stderr = child.stderr.take().context("postgres stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        self.server = Some(child);
        rx.recv_timeout(READY_TIMEOUT)
            .context("postgres did not get ready")?;
        Ok(())
    }

    /// Stops the server (fast shutdown: open connections are cut, as in a crash of the link),
    /// and returns once it has exited.
    ///
    /// # Errors
    /// If it cannot be signalled.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.server.take() {
            nix::sys::signal::kill(self.postmaster(&child), nix::sys::signal::Signal::SIGINT)?;
            child.wait()?;
        }
        Ok(())
    }

    /// The server's own pid (under runuser, the child is runuser), from postmaster.pid.
    fn postmaster(&self, child: &Child) -> nix::unistd::Pid {
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            .unwrap_or_else(|| i32::try_from(child.id()).unwrap_or(0));
        nix::unistd::Pid::from_raw(pid)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ =
                nix::sys::signal::kill(self.postmaster(&child), nix::sys::signal::Signal::SIGQUIT);
            let _ = child.wait();
        }
    }
}

/// What psql prints for `sql` against `pg`, unaligned, fields split by a space.
///
/// # Errors
/// If psql fails.
pub fn psql(pg: &PrivatePostgres, sql: &str) -> Result<String> {
    let out = Command::new("psql")
        .args([&pg.url(), "-AtqX", "-F", " ", "-c", sql])
        .output()
        .context("psql")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The rows of `attendance_marks` as (roll, marked_at_text), in the order `order_by` gives.
///
/// # Errors
/// If psql fails.
pub fn stored_marks(pg: &PrivatePostgres, order_by: &str) -> Result<Vec<(String, String)>> {
    Ok(psql(
        pg,
        &format!("SELECT roll, marked_at_text FROM attendance_marks ORDER BY {order_by}"),
    )?
    .lines()
    .filter_map(|l| l.split_once(' '))
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect())
}
