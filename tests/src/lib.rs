//! Test harness: starts the real `attendanced` binary on `127.0.0.1:0` in a private directory,
//! learns its address from the `listening on <addr>` log line, and talks to it over real TCP.
//!
//! Every wait is bounded ([`LINE_TIMEOUT`]) so a broken daemon fails a test instead of hanging
//! it. Tests synchronise on protocol lines, never on sleeps.
//!
//! The binaries are found beside the test executable (`target/<profile>/`); `cargo test
//! --workspace` builds them, because the server and client packages have integration tests.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use attendance_protocol::{LineCodec, ServerLine};
use futures::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Longest wait for any one line or event.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(15);

/// Path of a binary of this workspace, built by `cargo test --workspace`.
///
/// # Panics
/// If the binary has not been built.
pub fn bin_path(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_binaries);
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// Makes sure the binaries under test are fresh: `cargo test -p attendance-tests` alone would
/// otherwise run whatever `attendanced` was built last. Uses the cargo that runs the tests, with
/// the same target directory and profile; a no-op when they are up to date.
fn build_binaries() {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return; // not run by cargo: use what is there
    };
    let release = std::env::current_exe()
        .ok()
        .is_some_and(|p| p.components().any(|c| c.as_os_str() == "release"));
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--bins",
        "-p",
        "attendance-server",
        "-p",
        "attendance-client",
    ]);
    if release {
        cmd.arg("--release");
    }
    // Cargo sets these for the test process, not for a build: passed on, they make build
    // scripts that watch them (ring watches CARGO_MANIFEST_DIR) look dirty, so this build and
    // the next `cargo test` would rebuild the TLS stack and both binaries, each in turn.
    for (key, _) in std::env::vars_os() {
        let key_str = key.to_string_lossy();
        if key_str.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
            ]
            .contains(&key_str.as_ref())
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build for the binaries under test");
    assert!(status.success(), "building the binaries under test failed");
}

/// A running daemon in its own temporary directory; killed when dropped.
pub struct Daemon {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its working directory (CSV, token).
    pub dir: tempfile::TempDir,
    logs: mpsc::Receiver<String>,
}

/// Options for starting a daemon.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Use this directory instead of a new one (restarts on the same CSV).
    pub dir: Option<PathBuf>,
}

impl Daemon {
    /// Starts a daemon with `args` added to `--listen 127.0.0.1:0 --csv <dir>/attendance.csv`.
    ///
    /// # Errors
    /// If it cannot be started or exits before listening.
    pub fn start(args: &[&str]) -> Result<Self> {
        Self::start_in(tempfile::tempdir()?, args)
    }

    /// Starts a daemon in an existing directory (to restart on the same CSV).
    ///
    /// # Errors
    /// If it cannot be started or exits before listening.
    pub fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Result<Self> {
        Self::start_with(dir, args, Extra::default())
    }

    /// Starts a daemon with extra environment and, optionally, a listening socket passed as
    /// fd 3 (systemd socket activation).
    ///
    /// # Errors
    /// If it cannot be started or exits before listening.
    pub fn start_with(dir: tempfile::TempDir, args: &[&str], extra: Extra) -> Result<Self> {
        let (child, logs) = spawn(dir.path(), args, extra)?;
        let mut daemon = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            logs,
        };
        let line = daemon
            .wait_for_log("listening on ")
            .context("daemon did not report its address")?;
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .ok_or_else(|| anyhow!("no address in {line:?}"))?;
        daemon.addr = addr.parse()?;
        Ok(daemon)
    }

    /// Runs the daemon expecting it to fail at start-up; returns its exit status and log.
    ///
    /// # Errors
    /// If it does not exit within [`LINE_TIMEOUT`].
    pub fn run_to_failure(dir: &Path, args: &[&str]) -> Result<(ExitStatus, String)> {
        let (mut child, logs) = spawn(dir, args, Extra::default())?;
        let status = wait_child(&mut child, LINE_TIMEOUT)?;
        // The reader thread ends at EOF of stderr, so this collects every line it passed on.
        let log: Vec<String> = logs.iter().collect();
        Ok((status, log.join("\n")))
    }

    /// The CSV file's path.
    pub fn csv_path(&self) -> PathBuf {
        self.dir.path().join("attendance.csv")
    }

    /// The admin token the daemon generated.
    ///
    /// # Errors
    /// If the token file cannot be read.
    pub fn token(&self) -> Result<String> {
        Ok(
            std::fs::read_to_string(self.dir.path().join("attendanced.token"))?
                .trim()
                .to_owned(),
        )
    }

    /// Waits for a log line containing `needle` and returns it.
    ///
    /// # Errors
    /// If the daemon exits or the line does not come within [`LINE_TIMEOUT`].
    pub fn wait_for_log(&mut self, needle: &str) -> Result<String> {
        let deadline = std::time::Instant::now() + LINE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(_) => bail!("no log line containing {needle:?}"),
            }
        }
    }

    /// Connects a client and reads the greeting.
    ///
    /// # Errors
    /// If the connection or the greeting fails.
    pub async fn connect(&self) -> Result<Client> {
        Client::connect(self.addr).await
    }

    /// Sends SIGTERM.
    ///
    /// # Errors
    /// If the signal cannot be sent.
    pub fn sigterm(&self) -> Result<()> {
        signal(&self.child, nix::sys::signal::Signal::SIGTERM)
    }

    /// Sends any signal.
    ///
    /// # Errors
    /// If the signal cannot be sent.
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        signal(&self.child, sig)
    }

    /// Sends SIGKILL (a crash).
    ///
    /// # Errors
    /// If the signal cannot be sent.
    pub fn sigkill(&self) -> Result<()> {
        signal(&self.child, nix::sys::signal::Signal::SIGKILL)
    }

    /// Waits for the daemon to exit.
    ///
    /// # Errors
    /// If it does not exit within [`LINE_TIMEOUT`].
    pub fn wait(&mut self) -> Result<ExitStatus> {
        wait_child(&mut self.child, LINE_TIMEOUT)
    }

    /// Log lines received so far and not yet consumed by [`Daemon::wait_for_log`].
    pub fn drain_logs(&mut self) -> Vec<String> {
        self.logs.try_iter().collect()
    }

    /// Stops the daemon (if still running) and returns its directory for a restart.
    pub fn into_dir(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::TempDir::new().expect("tempdir"));
        drop(self);
        dir
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a test adds to the daemon's process: environment, and a socket as fd 3.
#[derive(Debug, Default)]
pub struct Extra {
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// A descriptor to pass as fd 3 (e.g. a bound listener, with `LISTEN_FDS=1` in `env`).
    pub fd3: Option<std::os::fd::OwnedFd>,
}

fn spawn(dir: &Path, args: &[&str], extra: Extra) -> Result<(Child, mpsc::Receiver<String>)> {
    use command_fds::{CommandFdExt as _, FdMapping};
    let csv = dir.join("attendance.csv");
    let mut cmd = Command::new(bin_path("attendanced"));
    if let Some(fd) = extra.fd3 {
        cmd.fd_mappings(vec![FdMapping {
            parent_fd: fd,
            child_fd: 3,
        }])?;
    }
    cmd.envs(extra.env);
    // Each test states its settings as flags or its own config file: no `ATTENDANCE_*` variable
    // of the test's environment reaches the daemon.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ATTENDANCE_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .current_dir(dir)
        .args(["--listen", "127.0.0.1:0", "--csv"])
        .arg(&csv)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        // Not the machine's /etc/attendanced/attendanced.toml, should one exist; a test's own
        // --config still wins.
        .env("ATTENDANCE_CONFIG", "/dev/null")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn attendanced")?;
    let stderr = child.stderr.take().context("stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if std::env::var_os("ATTENDANCE_TEST_LOGS").is_some() {
                eprintln!("[daemon] {line}");
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((child, rx))
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) -> Result<()> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
    nix::sys::signal::kill(pid, sig)?;
    Ok(())
}

fn wait_child(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            bail!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the real `attend` against `server` (`HOST:PORT`) with stdin open and idle (a pipe
/// nobody writes to), as a student who never types: it must exit by itself. No `ATTEND_*`
/// variable of the test's environment reaches it. Returns (exit code, stdout, stderr).
///
/// # Errors
/// If it cannot be started or does not exit within 30 s (it is killed then).
pub fn run_attend(server: &str, args: &[&str]) -> Result<(i32, String, String)> {
    use std::io::Read as _;
    let mut child = Command::new(bin_path("attend"))
        .arg("--server")
        .arg(server)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("ATTEND_SERVER")
        .env_remove("ATTEND_TLS")
        .env_remove("ATTEND_CA")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let _stdin_kept_open = child.stdin.take();
    let status = wait_child(&mut child, Duration::from_secs(30))?;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out)?;
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut err)?;
    }
    Ok((status.code().unwrap_or(-1), out, err))
}

/// A line-protocol client over real TCP.
pub struct Client {
    framed: Framed<TcpStream, LineCodec>,
    /// `EVENT` lines that arrived while waiting for a reply, oldest first.
    pub events: std::collections::VecDeque<String>,
    /// The greeting.
    pub hello: String,
}

impl Client {
    /// Connects and reads the greeting.
    ///
    /// # Errors
    /// If the connection fails or the first line is not `HELLO`.
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        Self::from_stream(stream).await
    }

    /// Wraps a connected stream and reads the greeting.
    ///
    /// # Errors
    /// If the first line is not `HELLO`.
    pub async fn from_stream(stream: TcpStream) -> Result<Self> {
        let mut client = Self {
            framed: Framed::new(stream, LineCodec::new(1 << 16)),
            events: Default::default(),
            hello: String::new(),
        };
        let hello = client.recv_raw().await?;
        if !hello.starts_with("HELLO ") {
            bail!("expected HELLO, got {hello:?}");
        }
        client.hello = hello;
        Ok(client)
    }

    /// Gives up the line framing and returns the raw socket (e.g. to stop reading it, or to
    /// read what is left byte by byte). Lines already read into the framing buffer are lost.
    pub fn into_stream(self) -> TcpStream {
        self.framed.into_inner()
    }

    /// Sends raw bytes (no line ending added).
    ///
    /// # Errors
    /// If the write fails.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.framed
            .send(bytes::Bytes::copy_from_slice(bytes))
            .await?;
        Ok(())
    }

    /// Sends one line (LF added).
    ///
    /// # Errors
    /// If the write fails.
    pub async fn send(&mut self, line: &str) -> Result<()> {
        self.send_bytes(format!("{line}\n").as_bytes()).await
    }

    /// The next line from the server, whatever it is.
    ///
    /// # Errors
    /// On timeout, close, or a line that does not parse as a server line.
    pub async fn recv_raw(&mut self) -> Result<String> {
        match tokio::time::timeout(LINE_TIMEOUT, self.framed.next()).await {
            Err(_) => bail!("no line within {LINE_TIMEOUT:?}"),
            Ok(None) => bail!("connection closed"),
            Ok(Some(Err(e))) => Err(e.into()),
            Ok(Some(Ok(Err(e)))) => bail!("bad line from server: {e}"),
            Ok(Some(Ok(Ok(line)))) => {
                line.parse::<ServerLine>()
                    .map_err(|e| anyhow!("server sent an unparseable line {line:?}: {e}"))?;
                Ok(line)
            }
        }
    }

    /// The next `OK`/`ERR` line; `EVENT` lines on the way are kept in [`Client::events`].
    ///
    /// # Errors
    /// On timeout or close.
    pub async fn reply(&mut self) -> Result<String> {
        loop {
            let line = self.recv_raw().await?;
            if line.starts_with("EVENT ") {
                self.events.push_back(line);
            } else {
                return Ok(line);
            }
        }
    }

    /// Sends a line and returns the reply.
    ///
    /// # Errors
    /// On timeout or close.
    pub async fn cmd(&mut self, line: &str) -> Result<String> {
        self.send(line).await?;
        self.reply().await
    }

    /// The next `EVENT` line whose text starts with `prefix` (e.g. `EVENT JOIN`), from those
    /// kept or arriving; other events before it are discarded.
    ///
    /// # Errors
    /// On timeout, close, or a reply line arriving instead.
    pub async fn event(&mut self, prefix: &str) -> Result<String> {
        while let Some(e) = self.events.pop_front() {
            if e.starts_with(prefix) {
                return Ok(e);
            }
        }
        loop {
            let line = self.recv_raw().await?;
            if line.starts_with(prefix) {
                return Ok(line);
            }
            if !line.starts_with("EVENT ") {
                bail!("expected {prefix:?}, got reply {line:?}");
            }
        }
    }

    /// Waits until the server closes the connection, returning the lines it sent before.
    ///
    /// # Errors
    /// If it stays open for [`LINE_TIMEOUT`].
    pub async fn closed(&mut self) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            match tokio::time::timeout(LINE_TIMEOUT, self.framed.next()).await {
                Err(_) => bail!("connection still open after {LINE_TIMEOUT:?}; got {lines:?}"),
                Ok(None) | Ok(Some(Err(_))) => return Ok(lines),
                Ok(Some(Ok(Ok(line)))) => lines.push(line),
                Ok(Some(Ok(Err(e)))) => lines.push(format!("<{e}>")),
            }
        }
    }
}

/// One parsed CSV row, as the daemon writes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Row {
    /// Course.
    pub course: String,
    /// Division.
    pub division: String,
    /// Name.
    pub name: String,
    /// Roll.
    pub roll: String,
    /// Status.
    pub status: String,
    /// Marked at.
    pub marked_at: String,
    /// Joined at.
    pub joined_at: String,
    /// Client address.
    pub client_addr: String,
}

/// Reads every row of a CSV, failing on any row that does not parse.
///
/// # Errors
/// If the file cannot be read or a row does not parse.
pub async fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let file = tokio::fs::File::open(path).await?;
    let mut reader = csv_async::AsyncReaderBuilder::new()
        .has_headers(true)
        .create_deserializer(file);
    let mut rows = Vec::new();
    let mut stream = reader.deserialize::<Row>();
    while let Some(row) = stream.next().await {
        rows.push(row?);
    }
    Ok(rows)
}
