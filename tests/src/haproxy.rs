//! HAProxy in front of a test's nodes: the shipped `config/haproxy.cfg`, with its listen and
//! node addresses pointed at the test's own ports and its stats socket in a temp dir, run in the
//! foreground by the test. Nothing else of the shipped file is changed, so the test checks its
//! health checks, PROXY headers and retries as a school would run them.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The shipped configuration.
const SHIPPED: &str = include_str!("../../config/haproxy.cfg");

/// Bounded polls of HAProxy's state.
const POLLS: usize = 200;
const POLL_EVERY: Duration = Duration::from_millis(100);

/// One node behind the balancer.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    /// Its student port.
    pub student: SocketAddr,
    /// Its web port (`/healthz` for the checks).
    pub web: SocketAddr,
    /// Whether HAProxy may send it connections from the start (`false`: in maintenance until
    /// [`Balancer::enable`]).
    pub enabled: bool,
}

/// A running HAProxy, killed when dropped.
#[derive(Debug)]
pub struct Balancer {
    dir: tempfile::TempDir,
    child: Child,
    students: SocketAddr,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The shipped configuration for `nodes` (node `n` of the file is `nodes[n - 1]`; the file's
/// other nodes are left out), listening on `students` and `web`, with its stats socket at
/// `socket`.
fn config(nodes: &[Node], students: u16, web: u16, socket: &std::path::Path) -> Result<String> {
    let mut out = String::new();
    for line in SHIPPED.lines() {
        let t = line.trim_start();
        // What a packaged service needs and a test run in the foreground does not.
        if ["log /dev/log", "chroot ", "user ", "group ", "daemon"]
            .iter()
            .any(|p| t.starts_with(p))
        {
            continue;
        }
        if t.starts_with("stats socket ") {
            out.push_str(&format!(
                "    stats socket {} mode 600 level admin\n",
                socket.display()
            ));
            continue;
        }
        let mut line = line
            .replace("bind :65001", &format!("bind 127.0.0.1:{students}"))
            .replace("bind :8000", &format!("bind 127.0.0.1:{web}"));
        if let Some(rest) = t.strip_prefix("server node") {
            let n: usize = rest
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .context("a server line without its node number")?;
            let Some(node) = n.checked_sub(1).and_then(|i| nodes.get(i)) else {
                continue;
            };
            line = line
                .replace(&format!("127.0.0.1:6501{n}"), &node.student.to_string())
                .replace(&format!("127.0.0.1:801{n}"), &node.web.to_string())
                .replace(
                    &format!("port 801{n}"),
                    &format!("port {}", node.web.port()),
                );
            if !node.enabled {
                line.push_str(" disabled");
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    ensure!(
        out.contains(&nodes[0].student.to_string()),
        "the shipped haproxy.cfg no longer has the server lines this test rewrites"
    );
    Ok(out)
}

impl Balancer {
    /// Starts HAProxy (Debian's package) in front of `nodes`, and returns once its student
    /// port accepts connections.
    ///
    /// # Errors
    /// If the configuration does not check or HAProxy does not start.
    pub fn start(nodes: &[Node]) -> Result<Self> {
        ensure!(!nodes.is_empty(), "a balancer needs a node");
        let dir = tempfile::tempdir()?;
        let (students, web) = (free_port()?, free_port()?);
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            config(nodes, students, web, &dir.path().join("admin.sock"))?,
        )?;
        let check = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .context("haproxy (Debian package haproxy; cargo xtask test installs it)")?;
        if !check.status.success() {
            bail!(
                "haproxy -c: {}",
                String::from_utf8_lossy(&check.stdout) + String::from_utf8_lossy(&check.stderr)
            );
        }
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting haproxy")?;
        let students = SocketAddr::from(([127, 0, 0, 1], students));
        let b = Self {
            dir,
            child,
            students,
        };
        for _ in 0..POLLS {
            if std::net::TcpStream::connect(students).is_ok() {
                return Ok(b);
            }
            std::thread::sleep(POLL_EVERY);
        }
        bail!("haproxy did not listen on {students}")
    }

    /// Where students connect.
    pub fn students(&self) -> SocketAddr {
        self.students
    }

    /// What the runtime API answers to `command` (one line).
    ///
    /// # Errors
    /// If the stats socket cannot be used.
    pub async fn command(&self, command: &str) -> Result<String> {
        let mut s = tokio::net::UnixStream::connect(self.dir.path().join("admin.sock")).await?;
        s.write_all(format!("{command}\n").as_bytes()).await?;
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .context("no answer on haproxy's stats socket")??;
        Ok(out)
    }

    /// Whether HAProxy's checks have `server` of `backend` up (operational state 2, running).
    async fn is_up(&self, backend: &str, server: &str) -> Result<bool> {
        let state = self
            .command(&format!("show servers state {backend}"))
            .await?;
        // Fields: be_id be_name srv_id srv_name srv_addr srv_op_state ...
        Ok(state.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(3) == Some(&server) && f.get(5) == Some(&"2")
        }))
    }

    /// Takes `server` of `backend` out of maintenance and waits (bounded) until the health
    /// checks have it up.
    ///
    /// # Errors
    /// If it is not up in time.
    pub async fn enable(&self, backend: &str, server: &str) -> Result<()> {
        self.command(&format!("enable server {backend}/{server}"))
            .await?;
        self.wait(backend, server, true).await
    }

    /// Waits (bounded) until the health checks have `server` of `backend` up (`up`) or down.
    ///
    /// # Errors
    /// If it does not get there in time.
    pub async fn wait(&self, backend: &str, server: &str, up: bool) -> Result<()> {
        for _ in 0..POLLS {
            if self.is_up(backend, server).await? == up {
                return Ok(());
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        bail!(
            "haproxy never had {backend}/{server} {}",
            if up { "up" } else { "down" }
        )
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
