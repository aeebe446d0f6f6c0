//! `--log-format json`: every line on standard error is one JSON object, from start-up to a
//! graceful shutdown, and the `listening on <addr>` message is in its `fields.message`.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use anyhow::{Context as _, Result, anyhow};
use attendance_tests::{LINE_TIMEOUT, bin_path};

#[test]
fn json_logs_are_one_object_per_line_from_start_to_shutdown() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new(bin_path("attendanced"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ATTENDANCE_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .current_dir(dir.path())
        .args(["--listen", "127.0.0.1:0", "--csv"])
        .arg(dir.path().join("attendance.csv"))
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut next = || -> Result<Option<String>> {
        match lines.recv_timeout(LINE_TIMEOUT) {
            Ok(line) => {
                seen.push(line.clone());
                Ok(Some(line))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Ok(None),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(anyhow!("no log line in time")),
        }
    };

    let addr: SocketAddr = loop {
        let line = next()?.context("exited before listening")?;
        if let Some(rest) = line.split("\"message\":\"listening on ").nth(1) {
            break rest.split('"').next().context("address")?.parse()?;
        }
    };
    // The daemon behind the JSON log is serving.
    let mut greeting = [0u8; 5];
    TcpStream::connect(addr)?.read_exact(&mut greeting)?;
    assert_eq!(&greeting, b"HELLO");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    while next()?.is_some() {}
    let status = child.wait()?;
    assert!(status.success(), "{status:?} {seen:#?}");

    assert!(seen.len() >= 2, "{seen:#?}");
    for line in &seen {
        assert!(is_json_object(line), "not a JSON object: {line}");
        assert!(line.contains("\"level\":\""), "{line}");
        assert!(line.contains("\"timestamp\":\""), "{line}");
    }
    Ok(())
}

/// Whether `text` is exactly one JSON object (RFC 8259 grammar; a validator, not a parser —
/// the test crate has no JSON library).
fn is_json_object(text: &str) -> bool {
    let mut json = Json {
        bytes: text.as_bytes(),
        at: 0,
    };
    json.ws();
    let ok = json.peek() == Some(b'{') && json.value();
    json.ws();
    ok && json.at == json.bytes.len()
}

struct Json<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Json<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn value(&mut self) -> bool {
        self.ws();
        let ok = match self.peek() {
            Some(b'{') => self.seq(b'{', b'}', |j| {
                j.ws();
                j.string()
                    && {
                        j.ws();
                        j.eat(b':')
                    }
                    && j.value()
            }),
            Some(b'[') => self.seq(b'[', b']', Self::value),
            Some(b'"') => self.string(),
            Some(b't') => self.word("true"),
            Some(b'f') => self.word("false"),
            Some(b'n') => self.word("null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        };
        self.ws();
        ok
    }

    /// `open item (, item)* close`, or `open close`.
    fn seq(&mut self, open: u8, close: u8, mut item: impl FnMut(&mut Self) -> bool) -> bool {
        self.eat(open);
        self.ws();
        if self.eat(close) {
            return true;
        }
        loop {
            if !item(self) {
                return false;
            }
            self.ws();
            if self.eat(close) {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn string(&mut self) -> bool {
        if !self.eat(b'"') {
            return false;
        }
        while let Some(b) = self.peek() {
            self.at += 1;
            match b {
                b'"' => return true,
                b'\\' => {
                    let Some(e) = self.peek() else { return false };
                    self.at += 1;
                    match e {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let hex = self.bytes.get(self.at..self.at + 4);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return false;
                            }
                            self.at += 4;
                        }
                        _ => return false,
                    }
                }
                0..=0x1f => return false,
                _ => {}
            }
        }
        false
    }

    fn word(&mut self, word: &str) -> bool {
        let hit = self.bytes[self.at..].starts_with(word.as_bytes());
        if hit {
            self.at += word.len();
        }
        hit
    }

    fn number(&mut self) -> bool {
        let digits = |j: &mut Self| {
            let from = j.at;
            while j.peek().is_some_and(|b| b.is_ascii_digit()) {
                j.at += 1;
            }
            j.at > from
        };
        self.eat(b'-');
        if !digits(self) {
            return false;
        }
        if self.eat(b'.') && !digits(self) {
            return false;
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if !digits(self) {
                return false;
            }
        }
        true
    }
}

#[test]
fn the_validator_knows_json_from_text() {
    assert!(is_json_object(
        r#"{"a":[1,-2.5e3,true,null,{"b":"c\"\u00e9"}],"d":{}}"#
    ));
    assert!(!is_json_object(
        "2026-11-23T10:00:00Z INFO listening on 127.0.0.1:1"
    ));
    assert!(!is_json_object(r#"{"a":1,}"#));
    assert!(!is_json_object(r#"{"a":1}{"#));
    assert!(!is_json_object("[1]"));
}
