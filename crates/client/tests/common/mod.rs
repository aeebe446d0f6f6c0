//! A scripted fake `attendanced` on `127.0.0.1:0` for the client's tests.
//!
//! It serves one connection: greets, answers each line as its [`Script`] says and records every
//! line it received, so tests synchronise on protocol lines rather than on sleeps.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;

use attendance_protocol::StudentId;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The greeting the fake server sends.
pub(crate) const HELLO: &str = "HELLO attendanced/0.1.0 welcome; send HELP for commands";
/// The time of every mark the fake server records.
pub(crate) const MARKED_AT: &str = "2026-11-23T15:17:54.123Z";
/// A valid ID.
pub(crate) const ID: &str = "ComputerNetworks_Div1_JayPatel_18BCP043";

/// One thing the fake server does in answer to a line.
#[derive(Debug, Clone)]
pub(crate) enum Act {
    /// Send this line.
    Send(String),
    /// Close the connection.
    Close,
}

pub(crate) fn send(line: &str) -> Act {
    Act::Send(line.to_owned())
}

/// How the fake server answers.
#[derive(Debug)]
pub(crate) struct Script {
    /// `required_seconds` in `OK JOIN`.
    pub(crate) required: u64,
    /// Answer `JOIN` with this line instead of `OK JOIN`.
    pub(crate) join_refusal: Option<String>,
    /// Lines pushed right after `OK JOIN`.
    pub(crate) after_join: Vec<String>,
    /// Lines pushed right after each `OK SAY`.
    pub(crate) after_say: Vec<String>,
    /// Answers to successive `PRESENT`s; the last one repeats.
    pub(crate) presents: Vec<Vec<Act>>,
    /// Fired when `JOIN` arrives.
    pub(crate) on_join: Option<oneshot::Sender<()>>,
    presents_seen: usize,
}

impl Script {
    /// `OK JOIN … required`, then `ERR EARLY 1` to the first `PRESENT` and `OK PRESENT` to the
    /// second.
    pub(crate) fn class(required: u64) -> Self {
        Self {
            required,
            join_refusal: None,
            after_join: Vec::new(),
            after_say: Vec::new(),
            presents: vec![
                vec![send(
                    "ERR EARLY 1 seconds of class remain before PRESENT is accepted",
                )],
                vec![send(&format!("OK PRESENT {MARKED_AT}"))],
            ],
            on_join: None,
            presents_seen: 0,
        }
    }

    fn respond(&mut self, line: &str) -> Vec<Act> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "JOIN" => {
                if let Some(tx) = self.on_join.take() {
                    let _ = tx.send(());
                }
                if let Some(refusal) = &self.join_refusal {
                    return vec![send(refusal)];
                }
                let id: StudentId = rest.parse().expect("the client sends valid IDs");
                let mut acts = vec![send(&format!(
                    "OK JOIN {} {} {} {} {}",
                    id.course(),
                    id.division(),
                    id.name,
                    id.roll,
                    self.required
                ))];
                acts.extend(self.after_join.iter().map(|l| send(l)));
                acts
            }
            "PRESENT" => {
                let i = self.presents_seen.min(self.presents.len() - 1);
                self.presents_seen += 1;
                self.presents[i].clone()
            }
            "SAY" => {
                let mut acts = vec![send("OK SAY")];
                acts.extend(self.after_say.iter().map(|l| send(l)));
                acts
            }
            "QUIT" => vec![send("OK BYE"), Act::Close],
            _ => vec![send("ERR UNKNOWN unknown command")],
        }
    }
}

/// A running fake server.
pub(crate) struct FakeServer {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    task: JoinHandle<Vec<String>>,
}

impl FakeServer {
    /// Binds `127.0.0.1:0` and serves one connection with `script`.
    pub(crate) async fn start(mut script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            // Each line goes out at once: with Nagle, a reply could wait for an ACK while paused
            // time races ahead.
            stream.set_nodelay(true).expect("nodelay");
            let (read, mut write) = stream.into_split();
            let mut log = Vec::new();
            if write
                .write_all(format!("{HELLO}\n").as_bytes())
                .await
                .is_err()
            {
                return log;
            }
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let acts = script.respond(&line);
                log.push(line);
                for act in acts {
                    match act {
                        Act::Send(l) => {
                            let _ = write.write_all(format!("{l}\n").as_bytes()).await;
                        }
                        Act::Close => return log,
                    }
                }
            }
            log
        });
        Self { addr, task }
    }

    /// `HOST:PORT` to pass to the client.
    pub(crate) fn server(&self) -> String {
        self.addr.to_string()
    }

    /// Every line received, once the connection has ended.
    pub(crate) async fn log(self) -> Vec<String> {
        self.task.await.expect("fake server task")
    }
}

/// An address nothing listens on: bound, then released.
pub(crate) fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    addr.to_string()
}
