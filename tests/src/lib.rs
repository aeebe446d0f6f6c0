//! Test harness: starts the real `attendanced` binary on `127.0.0.1:0` in a private directory,
//! learns its address from the `listening on <addr>` log line, and talks to it over real TCP.
//! Starting, watching and stopping the process is `attendance-testkit`'s, shared with the bench;
//! this file adds the daemon's test settings, a line-protocol client and a CSV reader.
//!
//! Every wait is bounded ([`LINE_TIMEOUT`]) so a broken daemon fails a test instead of hanging
//! it. Tests synchronise on protocol lines, never on sleeps.
//!
//! The binaries are found beside the test executable (`target/<profile>/`), built first for
//! that profile by the cargo that runs the tests.

pub mod browser;
pub mod haproxy;
pub mod http;
pub mod postgres;
pub mod proxy;
pub mod redis;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use attendance_protocol::{LineCodec, ServerLine};
use attendance_testkit::{LISTENING, Process, Spawn};
use futures::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Longest wait for any one line or event.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(15);

/// Path of a binary of this workspace (`attendanced`, `attend`), built first for the profile the
/// tests run in with the cargo that runs them: `cargo test -p attendance-tests` alone would
/// otherwise run whatever was built last.
///
/// # Panics
/// If the binary cannot be built.
pub fn bin_path(name: &str) -> PathBuf {
    attendance_testkit::cargo_binary(name, &["attendanced", "attendance-client"])
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A running daemon in its own temporary directory; killed when dropped.
pub struct Daemon {
    process: Process,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its web server listens (`None` with `--web-listen off`).
    pub web: Option<SocketAddr>,
    /// Its working directory (CSV, token).
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts a daemon with `args` added to `--listen 127.0.0.1:0 --csv <dir>/attendance.csv`.
    ///
    /// # Errors
    /// If it cannot be started or exits before listening.
    pub fn start(args: &[&str]) -> Result<Self> {
        Self::start_in(tempfile::tempdir()?, args)
    }

    /// Starts a daemon with a config file of `toml` (written in its directory) and `args`.
    ///
    /// # Errors
    /// If the file cannot be written, or the daemon cannot be started.
    pub fn start_with_config(toml: &str, args: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let cfg = dir.path().join("attendanced.toml");
        std::fs::write(&cfg, toml)?;
        let cfg = cfg.to_string_lossy().into_owned();
        let mut all = vec!["--config", cfg.as_str()];
        all.extend_from_slice(args);
        Self::start_in(dir, &all)
    }

    /// A daemon whose members fall behind at once: a 16-line queue and a 4 KiB send buffer,
    /// with the chat and command rates out of the way (the lagging tests, on every transport).
    ///
    /// # Errors
    /// As [`Daemon::start_with_config`].
    pub fn start_laggy() -> Result<Self> {
        Self::start_with_config(
            "outbound_queue = 16\nsend_buffer = 4096\nchat_rate = 100000\nchat_burst = 100000\nrate_limit = 100000\nrate_burst = 100000\n",
            &[],
        )
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
        let mut process = spawn(dir.path(), args, extra)?;
        let addr = process
            .wait_for_address(LISTENING, LINE_TIMEOUT)
            .context("daemon did not report its address")?;
        let web_off = args.windows(2).any(|w| w == ["--web-listen", "off"]);
        let web = if web_off {
            None
        } else {
            // Logged right after the student port's line.
            Some(
                process
                    .wait_for_address("web listening on ", LINE_TIMEOUT)
                    .context("daemon did not report its web address")?,
            )
        };
        Ok(Self {
            process,
            addr,
            web,
            dir,
        })
    }

    /// The web server's address.
    ///
    /// # Panics
    /// If the daemon was started with `--web-listen off`.
    pub fn web(&self) -> SocketAddr {
        self.web
            .expect("this daemon was started with --web-listen off")
    }

    /// Runs the daemon expecting it to fail at start-up; returns its exit status and log.
    ///
    /// # Errors
    /// If it does not exit within [`LINE_TIMEOUT`].
    pub fn run_to_failure(dir: &Path, args: &[&str]) -> Result<(ExitStatus, String)> {
        let mut process = spawn(dir, args, Extra::default())?;
        let status = process.wait_timeout(LINE_TIMEOUT)?;
        // The output ends when the daemon exits, so this collects every line it wrote.
        let log = process.remaining_lines(LINE_TIMEOUT);
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
        Ok(self.process.wait_for_line(needle, LINE_TIMEOUT)?)
    }

    /// Connects a client and reads the greeting.
    ///
    /// # Errors
    /// If the connection or the greeting fails.
    pub async fn connect(&self) -> Result<Client> {
        Client::connect(self.addr).await
    }

    /// Opens `/ws` on the web port (no `Origin`, as a non-browser client) and reads the
    /// greeting.
    ///
    /// # Errors
    /// If the upgrade or the greeting fails.
    pub async fn connect_ws(&self) -> Result<Client> {
        Client::connect_ws(self.web(), None).await
    }

    /// Sends SIGTERM.
    ///
    /// # Errors
    /// If the signal cannot be sent.
    pub fn sigterm(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGTERM)
    }

    /// Sends any signal.
    ///
    /// # Errors
    /// If the signal cannot be sent.
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        Ok(self.process.signal(sig)?)
    }

    /// Sends SIGKILL (a crash).
    ///
    /// # Errors
    /// If the signal cannot be sent.
    pub fn sigkill(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGKILL)
    }

    /// Waits for the daemon to exit.
    ///
    /// # Errors
    /// If it does not exit within [`LINE_TIMEOUT`].
    pub fn wait(&mut self) -> Result<ExitStatus> {
        Ok(self.process.wait_timeout(LINE_TIMEOUT)?)
    }

    /// Log lines received so far and not yet consumed by [`Daemon::wait_for_log`].
    pub fn drain_logs(&mut self) -> Vec<String> {
        self.process.drain_lines()
    }

    /// Stops the daemon (if still running) and returns its directory for a restart.
    pub fn into_dir(mut self) -> tempfile::TempDir {
        self.process.kill();
        self.dir
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

/// Whether `args` set `resume_grace`: as a flag, or in the file given with `--config`.
fn sets_resume_grace(args: &[&str]) -> bool {
    args.contains(&"--resume-grace")
        || args.windows(2).any(|w| {
            w[0] == "--config"
                && std::fs::read_to_string(w[1]).is_ok_and(|t| t.contains("resume_grace"))
        })
}

fn spawn(dir: &Path, args: &[&str], extra: Extra) -> Result<Process> {
    let mut spawn = Spawn::new(bin_path("attendanced"))
        // Each test states its settings as flags or its own config file: no `ATTENDANCE_*`
        // variable of the test's environment reaches the daemon.
        .env_remove_prefix("ATTENDANCE_")
        .current_dir(dir)
        .args(["--listen", "127.0.0.1:0", "--csv"])
        .arg(dir.join("attendance.csv"))
        // The web port on a free port, unless the test chose its own (the default is 8000).
        .args(
            (!args.contains(&"--web-listen"))
                .then_some(["--web-listen", "127.0.0.1:0"])
                .into_iter()
                .flatten(),
        )
        // A dropped seat given back at once (most tests watch EVENT LEAVE follow a drop),
        // unless the test sets the grace itself, by flag or in its config file.
        .args(
            (!sets_resume_grace(args))
                .then_some(["--resume-grace", "0s"])
                .into_iter()
                .flatten(),
        )
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        // Not the machine's /etc/attendanced/attendanced.toml, should one exist; a test's own
        // --config still wins.
        .env("ATTENDANCE_CONFIG", "/dev/null")
        .forward(
            std::env::var_os("ATTENDANCE_TEST_LOGS")
                .is_some()
                .then_some("[daemon] "),
        );
    for (key, value) in extra.env {
        spawn = spawn.env(key, value);
    }
    if let Some(fd) = extra.fd3 {
        spawn = spawn.pass_fd(fd, 3);
    }
    Ok(spawn.spawn()?)
}

/// Runs the real `attend` against `server` (`HOST:PORT`) with stdin open and idle (a pipe
/// nobody writes to), as a student who never types: it must exit by itself. No `ATTEND_*`
/// variable of the test's environment reaches it. Returns (exit code, stdout, stderr).
///
/// # Errors
/// If it cannot be started or does not exit within 30 s (it is killed then).
pub fn run_attend(server: &str, args: &[&str]) -> Result<(i32, String, String)> {
    use std::io::Read as _;
    let mut child = std::process::Command::new(bin_path("attend"))
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
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        bail!("attend's output pipes were not set up");
    };
    let mut process = Process::adopt(child);
    let status = process.wait_timeout(Duration::from_secs(30))?;
    let mut out = String::new();
    let mut err = String::new();
    stdout.read_to_string(&mut out)?;
    stderr.read_to_string(&mut err)?;
    Ok((status.code().unwrap_or(-1), out, err))
}

/// The transport under a [`Client`].
enum Io {
    Tcp(Framed<TcpStream, LineCodec>),
    /// `/ws` on the web port: one text frame per line.
    Ws(Box<tokio_tungstenite::WebSocketStream<TcpStream>>),
}

/// Which way a [`Client`] reaches the daemon: the protocol tests run over each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The student port.
    Tcp,
    /// `/ws` on the web port.
    Ws,
}

/// Both transports, for tests that run one table over each.
pub const TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Ws];

/// A line-protocol client over real TCP or a real WebSocket.
pub struct Client {
    io: Io,
    /// `EVENT` lines that arrived while waiting for a reply, oldest first.
    pub events: std::collections::VecDeque<String>,
    /// The greeting.
    pub hello: String,
    /// The resume token of the last `OK JOIN` or `OK RESUME`, which [`Client::reply`] takes
    /// off the `OK JOIN` line (so most tests compare the rest of it as before).
    pub token: Option<String>,
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
        Self::greeted(Io::Tcp(Framed::new(stream, LineCodec::new(1 << 16)))).await
    }

    /// Opens `/ws` on the web port `web` (sending `origin` as the `Origin` header, if given)
    /// and reads the greeting.
    ///
    /// # Errors
    /// If the upgrade is refused or the first line is not `HELLO`.
    pub async fn connect_ws(web: SocketAddr, origin: Option<&str>) -> Result<Self> {
        let ws = Self::upgrade(web, origin).await?;
        Self::greeted(Io::Ws(Box::new(ws))).await
    }

    /// The WebSocket handshake alone; the error says what the server answered.
    ///
    /// # Errors
    /// If the server does not switch protocols.
    pub async fn upgrade(
        web: SocketAddr,
        origin: Option<&str>,
    ) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = format!("ws://{web}/ws").into_client_request()?;
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse()?);
        }
        let stream = TcpStream::connect(web).await?;
        Self::upgrade_stream(stream, request).await
    }

    /// Opens `/ws` of the web port `web` over an already connected `stream` (e.g. one with a
    /// tiny receive buffer) and reads the greeting.
    ///
    /// # Errors
    /// If the upgrade is refused or the first line is not `HELLO`.
    pub async fn connect_ws_over(stream: TcpStream, web: SocketAddr) -> Result<Self> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let request = format!("ws://{web}/ws").into_client_request()?;
        let ws = Self::upgrade_stream(stream, request).await?;
        Self::greeted(Io::Ws(Box::new(ws))).await
    }

    async fn upgrade_stream(
        stream: TcpStream,
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>> {
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(1 << 20));
        let (ws, _) = tokio::time::timeout(
            LINE_TIMEOUT,
            tokio_tungstenite::client_async_with_config(request, stream, Some(config)),
        )
        .await
        .context("no handshake answer")??;
        Ok(ws)
    }

    /// Connects over `transport`.
    ///
    /// # Errors
    /// As [`Client::connect`] and [`Client::connect_ws`].
    pub async fn connect_over(d: &Daemon, transport: Transport) -> Result<Self> {
        match transport {
            Transport::Tcp => d.connect().await,
            Transport::Ws => Self::connect_ws(d.web(), None).await,
        }
    }

    async fn greeted(io: Io) -> Result<Self> {
        let mut client = Self {
            io,
            events: Default::default(),
            hello: String::new(),
            token: None,
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
    ///
    /// # Panics
    /// On a WebSocket client.
    pub fn into_stream(self) -> TcpStream {
        match self.io {
            Io::Tcp(framed) => framed.into_inner(),
            Io::Ws(ws) => ws.into_inner(),
        }
    }

    /// Sends one WebSocket message as it is (a binary frame, an over-long one).
    ///
    /// # Errors
    /// On a TCP client, or if the write fails.
    pub async fn send_ws(
        &mut self,
        message: tokio_tungstenite::tungstenite::Message,
    ) -> Result<()> {
        match &mut self.io {
            Io::Ws(ws) => Ok(ws.send(message).await?),
            Io::Tcp(_) => bail!("not a WebSocket client"),
        }
    }

    /// The next line, or `None` once the server closed.
    async fn next_line(&mut self) -> Option<Result<Result<String, String>>> {
        use tokio_tungstenite::tungstenite::Message;
        match &mut self.io {
            Io::Tcp(framed) => match framed.next().await? {
                Err(e) => Some(Err(e.into())),
                Ok(Err(e)) => Some(Ok(Err(e.to_string()))),
                Ok(Ok(line)) => Some(Ok(Ok(line))),
            },
            Io::Ws(ws) => loop {
                match ws.next().await? {
                    Err(e) => return Some(Err(e.into())),
                    Ok(Message::Text(t)) => {
                        let t = t.as_str();
                        if t.contains('\n') {
                            return Some(Ok(Err(format!("a frame with a line break: {t:?}"))));
                        }
                        return Some(Ok(Ok(t.to_owned())));
                    }
                    Ok(Message::Close(_)) => return None,
                    Ok(Message::Binary(_)) => return Some(Ok(Err("binary frame".into()))),
                    Ok(_) => {}
                }
            },
        }
    }

    /// Sends raw bytes (no line ending added).
    ///
    /// # Errors
    /// If the write fails.
    /// Over WebSocket, the bytes go as one text frame (binary if they are not UTF-8).
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        use tokio_tungstenite::tungstenite::Message;
        match &mut self.io {
            Io::Tcp(framed) => framed.send(bytes::Bytes::copy_from_slice(bytes)).await?,
            Io::Ws(ws) => {
                let message = match std::str::from_utf8(bytes) {
                    Ok(text) => Message::text(text),
                    Err(_) => Message::binary(bytes.to_vec()),
                };
                ws.send(message).await?;
            }
        }
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
        match tokio::time::timeout(LINE_TIMEOUT, self.next_line()).await {
            Err(_) => bail!("no line within {LINE_TIMEOUT:?}"),
            Ok(None) => bail!("connection closed"),
            Ok(Some(Err(e))) => Err(e),
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
                return Ok(self.take_token(line));
            }
        }
    }

    /// `line`, with the token of an `OK JOIN` taken off into [`Client::token`]; an
    /// `OK RESUME` keeps its token on the line, and in [`Client::token`].
    fn take_token(&mut self, line: String) -> String {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["OK", "JOIN", _, _, _, _, _, token] => {
                self.token = Some((*token).to_owned());
                words[..7].join(" ")
            }
            ["OK", "RESUME", _, _, _, _, _, token] => {
                self.token = Some((*token).to_owned());
                line
            }
            _ => line,
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
            match tokio::time::timeout(LINE_TIMEOUT, self.next_line()).await {
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
