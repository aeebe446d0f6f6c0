//! Child processes the bench starts (the daemon, `redis-server`): killed when dropped, stopped
//! with SIGTERM, their output followed on a thread (a short tail is kept for error messages), and
//! their resident memory read from `/proc/<pid>/status`.

use std::collections::VecDeque;
use std::io::{self, BufRead as _, BufReader, Read};
use std::process::{Child, ExitStatus};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Lines of a child's output kept for error messages.
const TAIL_LINES: usize = 40;

/// The last [`TAIL_LINES`] lines a child wrote.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines, one per line.
    pub(crate) fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Reads `output` line by line on a thread until it closes, keeping a tail in `tail`; the first
/// line containing `needle` is also sent to `found`. Reading to the end matters: a child whose
/// pipe is not drained blocks on its next log line.
pub(crate) fn follow_output(
    output: impl Read + Send + 'static,
    tail: LogTail,
    needle: &'static str,
    found: Sender<String>,
) {
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if line.contains(needle) {
                if let Some(tx) = found.take() {
                    let _ = tx.send(line.clone());
                }
            }
            tail.push(line);
        }
    });
}

/// A child process that is killed (and reaped) when dropped.
#[derive(Debug)]
pub(crate) struct Managed {
    child: Child,
    exited: Option<ExitStatus>,
    /// The end of what it printed.
    pub(crate) tail: LogTail,
}

impl Managed {
    /// Takes ownership of a started child.
    pub(crate) fn new(child: Child, tail: LogTail) -> Self {
        Self {
            child,
            exited: None,
            tail,
        }
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub(crate) fn try_exit(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
        }
        Ok(self.exited)
    }

    /// Sends SIGTERM and waits up to `grace` for it to exit, then kills it.
    ///
    /// # Errors
    /// If it cannot be signalled or waited for.
    pub(crate) fn terminate(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        if let Some(status) = self.try_exit()? {
            return Ok(status);
        }
        let pid = Pid::from_raw(i32::try_from(self.pid()).map_err(io::Error::other)?);
        kill(pid, Signal::SIGTERM).map_err(io::Error::from)?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        let status = self.child.wait()?;
        self.exited = Some(status);
        Ok(status)
    }

    /// Its resident set size in bytes, if it is still running.
    pub(crate) fn rss_bytes(&self) -> Option<u64> {
        if self.exited.is_some() {
            return None;
        }
        rss_bytes(self.pid())
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `VmRSS` of process `pid` in bytes, from `/proc/<pid>/status`.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(value * 1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tattendanced\nVmPeak:\t  9000 kB\nVmRSS:\t    4321 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(4321 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
    }

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
}
