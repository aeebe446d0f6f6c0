//! Spawning a child ([`Spawn`]) and holding it ([`Process`]): its output followed line by line
//! on a thread, waits bounded in time, signals, and a kill (and reap) when dropped.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Read};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::KitError;
use crate::listening::parse_listening;

/// Lines of a child's output kept for error messages.
pub const TAIL_LINES: usize = 40;

/// How often an exit is polled for while waiting with a timeout.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// The last [`TAIL_LINES`] lines a child wrote, shared with the thread that reads them.
#[derive(Debug, Clone, Default)]
pub struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines, oldest first, one per line.
    pub fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Which of the child's outputs is followed (the other goes to `/dev/null`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// Standard error, where the daemon logs.
    #[default]
    Stderr,
    /// Standard output (e.g. `redis-server --logfile ""`).
    Stdout,
    /// Neither: both are inherited from this process (a child that reports nothing to us).
    Inherit,
}

/// How to start a child: program, arguments, environment, directory, and what to follow.
#[derive(Debug)]
pub struct Spawn {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove_prefixes: Vec<String>,
    dir: Option<PathBuf>,
    fds: Vec<(OwnedFd, i32)>,
    output: Output,
    forward: Option<String>,
    stdin_piped: bool,
}

impl Spawn {
    /// A child running `program`, with no arguments, this process's environment, stdin from
    /// `/dev/null`, and its stderr followed. A relative path with a directory in it
    /// (`target/release/attendanced`) is taken from this process's working directory, not the
    /// child's.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        let program = program.into();
        let program = if program.is_relative() && program.components().count() > 1 {
            std::path::absolute(&program).unwrap_or(program)
        } else {
            program
        };
        Self {
            program,
            args: Vec::new(),
            env: Vec::new(),
            env_remove_prefixes: Vec::new(),
            dir: None,
            fds: Vec::new(),
            output: Output::default(),
            forward: None,
            stdin_piped: false,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (after the prefixes are removed, so it always reaches the
    /// child).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Keeps every variable of this process's environment whose name starts with `prefix`
    /// from the child (e.g. `ATTENDANCE_`, which the daemon reads as settings).
    pub fn env_remove_prefix(mut self, prefix: &str) -> Self {
        self.env_remove_prefixes.push(prefix.to_owned());
        self
    }

    /// The child's working directory.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Passes `fd` to the child as descriptor number `child_fd` (e.g. 3 for systemd socket
    /// activation).
    pub fn pass_fd(mut self, fd: OwnedFd, child_fd: i32) -> Self {
        self.fds.push((fd, child_fd));
        self
    }

    /// Which output is followed (default: stderr).
    pub fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// Also writes every followed line to this process's stderr, after `prefix` (`None`: do
    /// not).
    pub fn forward(mut self, prefix: Option<&str>) -> Self {
        self.forward = prefix.map(str::to_owned);
        self
    }

    /// Gives the child a pipe as stdin, to be taken with [`Process::take_stdin`] (the child
    /// sees end of file when it is dropped).
    pub fn stdin_piped(mut self) -> Self {
        self.stdin_piped = true;
        self
    }

    /// Starts the child and the thread that follows its output.
    ///
    /// # Errors
    /// [`KitError::Spawn`] if it cannot be started, [`KitError::Descriptor`] if a descriptor
    /// cannot be passed.
    pub fn spawn(self) -> Result<Process, KitError> {
        use command_fds::{CommandFdExt as _, FdMapping};
        let mut cmd = Command::new(&self.program);
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if self.env_remove_prefixes.iter().any(|p| name.starts_with(p)) {
                cmd.env_remove(&key);
            }
        }
        cmd.args(&self.args).envs(self.env);
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        if !self.fds.is_empty() {
            let mappings = self
                .fds
                .into_iter()
                .map(|(parent_fd, child_fd)| FdMapping {
                    parent_fd,
                    child_fd,
                })
                .collect();
            cmd.fd_mappings(mappings)
                .map_err(|e| KitError::Descriptor(e.to_string()))?;
        }
        let (stdout, stderr) = match self.output {
            Output::Stderr => (Stdio::null(), Stdio::piped()),
            Output::Stdout => (Stdio::piped(), Stdio::null()),
            Output::Inherit => (Stdio::inherit(), Stdio::inherit()),
        };
        let stdin = if self.stdin_piped {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let mut child = cmd
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| KitError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let tail = LogTail::default();
        let (tx, lines) = mpsc::channel();
        let followed: Option<Box<dyn Read + Send>> = match self.output {
            Output::Stderr => child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            Output::Stdout => child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            Output::Inherit => None,
        };
        if let Some(output) = followed {
            follow(output, tail.clone(), self.forward, tx);
        }
        Ok(Process {
            child,
            exited: None,
            lines,
            tail,
        })
    }
}

/// Reads `output` line by line on a thread until it closes, keeping a tail and passing each
/// line on. Reading to the end matters: a child whose pipe is not drained blocks on its next
/// line. The thread ends at end of file, which comes when the child exits.
fn follow(
    output: Box<dyn Read + Send>,
    tail: LogTail,
    forward: Option<String>,
    lines: mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if let Some(prefix) = &forward {
                eprintln!("{prefix}{line}");
            }
            tail.push(line.clone());
            // Nobody waiting for lines any more is fine: the tail is still kept.
            let _ = lines.send(line);
        }
    });
}

/// A running child; killed and reaped when dropped unless it has exited.
#[derive(Debug)]
pub struct Process {
    child: Child,
    exited: Option<ExitStatus>,
    lines: mpsc::Receiver<String>,
    tail: LogTail,
}

impl Process {
    /// Takes charge of a child started elsewhere, whose output its starter reads itself: it is
    /// waited for, signalled and killed when dropped like any other, and follows no lines.
    pub fn adopt(child: Child) -> Self {
        let (_, lines) = mpsc::channel();
        Self {
            child,
            exited: None,
            lines,
            tail: LogTail::default(),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its followed output.
    pub fn tail(&self) -> String {
        self.tail.text()
    }

    /// Its stdin pipe, if [`Spawn::stdin_piped`] was asked for and it was not taken yet.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// The next line containing `needle`, waiting at most `timeout`; lines before it are
    /// consumed (they stay in the tail).
    ///
    /// # Errors
    /// [`KitError::NoLine`] on timeout or when the output ends first (the child exited).
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String, KitError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    return Err(KitError::NoLine {
                        needle: needle.to_owned(),
                        waited: timeout,
                        tail: self.tail(),
                    });
                }
            }
        }
    }

    /// The address in the next line containing `needle` (e.g. `"listening on "`, or
    /// `"metrics listening on "` for the metrics port), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Process::wait_for_line`], and [`KitError::NoAddress`] if the line holds none.
    pub fn wait_for_address(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<SocketAddr, KitError> {
        let line = self.wait_for_line(needle, timeout)?;
        parse_listening(&line).ok_or(KitError::NoAddress(line))
    }

    /// The lines received and not yet consumed, without waiting.
    pub fn drain_lines(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Every line not yet consumed, up to the end of its output, waiting at most `timeout`
    /// for that end (for a child that has exited, or is about to).
    pub fn remaining_lines(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(_) => return out,
            }
        }
    }

    /// Sends `signal`. A child that has already been reaped is not signalled (its pid may
    /// belong to another process by now).
    ///
    /// # Errors
    /// [`KitError::Signal`] if it cannot be sent.
    pub fn signal(&self, signal: Signal) -> Result<(), KitError> {
        if self.exited.is_some() {
            return Ok(());
        }
        let pid =
            i32::try_from(self.pid()).map_err(|_| KitError::Signal(nix::errno::Errno::ESRCH))?;
        nix::sys::signal::kill(Pid::from_raw(pid), signal)?;
        Ok(())
    }

    /// Its exit status, if it has exited (reaping it).
    ///
    /// # Errors
    /// If waiting fails.
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>, KitError> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
        }
        Ok(self.exited)
    }

    /// Whether it has been seen to exit.
    pub fn has_exited(&self) -> bool {
        self.exited.is_some()
    }

    /// Waits at most `timeout` for it to exit; kills it if it does not.
    ///
    /// # Errors
    /// [`KitError::NoExit`] after the timeout, or if waiting fails.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus, KitError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(KitError::NoExit(timeout));
            }
            std::thread::sleep(EXIT_POLL);
        }
    }

    /// SIGTERM, then up to `grace` for it to exit, then SIGKILL.
    ///
    /// # Errors
    /// If it cannot be signalled or waited for.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus, KitError> {
        if let Some(status) = self.try_exit()? {
            return Ok(status);
        }
        self.signal(Signal::SIGTERM)?;
        match self.wait_timeout(grace) {
            Err(KitError::NoExit(_)) => Ok(self.child.wait()?),
            other => other,
        }
    }

    /// Kills it (SIGKILL) and reaps it, if it has not exited.
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let tail = LogTail::default();
        for i in 0..(TAIL_LINES + 5) {
            tail.push(format!("line {i}"));
        }
        let text = tail.text();
        assert!(text.starts_with("line 5\n"));
        assert!(text.ends_with(&format!("line {}", TAIL_LINES + 4)));
    }

    fn sh(script: &str) -> Spawn {
        Spawn::new("/bin/sh").args(["-c", script])
    }

    #[test]
    fn a_line_is_awaited_and_its_address_parsed() -> Result<(), KitError> {
        let mut p = sh(
            "echo starting >&2; echo 'x listening on 127.0.0.1:4321 tls=false' >&2; exec sleep 30",
        )
        .spawn()?;
        let addr = p.wait_for_address("listening on ", Duration::from_secs(10))?;
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 4321)));
        assert!(p.tail().contains("starting"));
        let status = p.terminate(Duration::from_secs(10))?;
        assert!(!status.success());
        Ok(())
    }

    #[test]
    fn an_exit_before_the_line_is_reported_with_the_tail() -> Result<(), KitError> {
        let mut p = sh("echo 'bad config' >&2; exit 78").spawn()?;
        let err = p
            .wait_for_line("listening on ", Duration::from_secs(10))
            .expect_err("it exited");
        assert!(err.to_string().contains("bad config"), "{err}");
        assert_eq!(p.wait_timeout(Duration::from_secs(10))?.code(), Some(78));
        Ok(())
    }

    #[test]
    fn stdout_can_be_followed_and_the_environment_filtered() -> Result<(), KitError> {
        let mut p = sh("echo \"home=${HOME:-none} mine=$KIT_TEST_VALUE\"")
            .output(Output::Stdout)
            .env_remove_prefix("HOME")
            .env("KIT_TEST_VALUE", "yes")
            .spawn()?;
        p.wait_timeout(Duration::from_secs(10))?;
        let lines = p.remaining_lines(Duration::from_secs(10));
        assert_eq!(lines, ["home=none mine=yes"]);
        Ok(())
    }

    #[test]
    fn a_child_that_outlives_its_timeout_is_killed() -> Result<(), KitError> {
        let mut p = sh("exec sleep 30").spawn()?;
        let err = p
            .wait_timeout(Duration::from_millis(50))
            .expect_err("still running");
        assert!(matches!(err, KitError::NoExit(_)), "{err}");
        assert!(p.has_exited());
        Ok(())
    }
}
