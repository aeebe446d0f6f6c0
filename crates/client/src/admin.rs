//! `attend admin`: ask the local daemon over its admin socket (`STATUS`, `CLASSES`, `WHO`,
//! `SHUTDOWN`) and print the answer as a table or as JSON.
//!
//! [`AdminClient`] speaks the protocol and follows the pages of `CLASSES` and `WHO`; [`run`]
//! maps the command line onto it and renders the result. See the "Administration" section of
//! `docs/PROTOCOL.md` for the replies.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use attendance_protocol::{
    ClassCount, ClassKey, Command, ErrorCode, Field, FieldKind, FlagEntry, LineCodec,
    MAX_PAGE_BYTES, Page, Reply, ServerLine, Status, WhoEntry,
};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

use crate::cli::{AdminArgs, AdminCommand};
use crate::countdown::format_hms;
use crate::exit;

/// The socket's file name, as the daemon names it.
pub const SOCKET_NAME: &str = "attendanced.sock";
/// The packaged daemon's state directory (systemd's `StateDirectory=attendanced`).
pub const PACKAGED_STATE_DIR: &str = "/var/lib/attendanced";
/// Longest wait for any one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest line accepted from the daemon: a full page and its header, with room to spare.
const MAX_REPLY: usize = 4 * MAX_PAGE_BYTES;
/// Most pages followed for one list (a list that keeps growing cannot loop forever).
const MAX_PAGES: usize = 10_000;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The socket could not be connected to (no daemon, wrong path, no permission).
    #[error(
        "cannot connect to the admin socket {}: {source} (is attendanced running? run as root or the daemon's user, or name the socket with --socket)",
        path.display()
    )]
    Connect {
        /// The socket's path.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The daemon answered `ERR`.
    #[error("the daemon refused: {code} {message}")]
    Refused {
        /// The error code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// The daemon closed, went silent or sent something unexpected.
    #[error("{0}")]
    Protocol(String),
    /// A bad argument (e.g. a course name that cannot be an identifier).
    #[error("{0}")]
    Usage(String),
}

impl AdminError {
    /// The exit code of `attend admin` for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Connect { .. } => exit::UNREACHABLE,
            Self::Usage(_) => exit::USAGE,
            Self::Refused { .. } | Self::Protocol(_) => exit::FAILURE,
        }
    }
}

/// The admin socket to use without `--socket`: `attendanced.sock` in `$STATE_DIRECTORY` (its
/// first entry) if set, else in `/var/lib/attendanced` if that exists (the package), else in
/// the current directory (a daemon started by hand beside its CSV).
pub fn default_socket() -> PathBuf {
    let state = std::env::var_os("STATE_DIRECTORY")
        .map(|dirs| {
            dirs.to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .filter(|dir| !dir.is_empty());
    if let Some(dir) = state {
        return Path::new(&dir).join(SOCKET_NAME);
    }
    // symlink_metadata: /var/lib/attendanced is a symlink into /var/lib/private (mode 0700)
    // with DynamicUser=yes; others cannot follow it but should still be pointed at it.
    if std::fs::symlink_metadata(PACKAGED_STATE_DIR).is_ok() {
        return Path::new(PACKAGED_STATE_DIR).join(SOCKET_NAME);
    }
    PathBuf::from(SOCKET_NAME)
}

/// A connection to the admin socket.
#[derive(Debug)]
pub struct AdminClient {
    framed: Framed<UnixStream, LineCodec>,
}

impl AdminClient {
    /// Connects to the socket at `path` and reads the greeting.
    ///
    /// # Errors
    /// [`AdminError::Connect`] if the socket cannot be reached, [`AdminError::Protocol`] if no
    /// greeting comes.
    pub async fn connect(path: &Path) -> Result<Self, AdminError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| AdminError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let mut client = Self {
            framed: Framed::new(stream, LineCodec::new(MAX_REPLY)),
        };
        match client.next_line().await? {
            ServerLine::Hello(_) => Ok(client),
            other => Err(AdminError::Protocol(format!(
                "expected the daemon's HELLO, got {other}"
            ))),
        }
    }

    async fn next_line(&mut self) -> Result<ServerLine, AdminError> {
        let line = match tokio::time::timeout(REPLY_TIMEOUT, self.framed.next()).await {
            Err(_) => {
                return Err(AdminError::Protocol(format!(
                    "no answer from the daemon within {REPLY_TIMEOUT:?}"
                )));
            }
            Ok(None) => return Err(AdminError::Protocol("the daemon closed the socket".into())),
            Ok(Some(Err(e))) => return Err(AdminError::Protocol(format!("read failed: {e}"))),
            Ok(Some(Ok(Err(e)))) => {
                return Err(AdminError::Protocol(format!(
                    "bad line from the daemon: {e}"
                )));
            }
            Ok(Some(Ok(Ok(line)))) => line,
        };
        line.parse()
            .map_err(|e| AdminError::Protocol(format!("unexpected line {line:?}: {e}")))
    }

    /// Sends `command` and returns its `OK` reply; `EVENT` lines on the way are skipped.
    ///
    /// # Errors
    /// [`AdminError::Refused`] for an `ERR` reply, [`AdminError::Protocol`] otherwise.
    pub async fn request(&mut self, command: &Command) -> Result<Reply, AdminError> {
        self.framed
            .send(command)
            .await
            .map_err(|e| AdminError::Protocol(format!("write failed: {e}")))?;
        loop {
            match self.next_line().await? {
                ServerLine::Ok(reply) => return Ok(reply),
                ServerLine::Err { code, message } => {
                    return Err(AdminError::Refused {
                        code,
                        message: message.to_string(),
                    });
                }
                ServerLine::Event(_) => {}
                ServerLine::Hello(_) => {
                    return Err(AdminError::Protocol("a second HELLO".into()));
                }
            }
        }
    }

    /// `STATUS`.
    ///
    /// # Errors
    /// As [`AdminClient::request`].
    pub async fn status(&mut self) -> Result<Status, AdminError> {
        match self.request(&Command::Status).await? {
            Reply::Status(status) => Ok(status),
            other => Err(unexpected("STATUS", &other)),
        }
    }

    /// Every page of `CLASSES`.
    ///
    /// # Errors
    /// As [`AdminClient::request`].
    pub async fn classes(&mut self) -> Result<Vec<ClassCount>, AdminError> {
        let mut all = Vec::new();
        let mut offset = 0;
        for _ in 0..MAX_PAGES {
            let page = match self.request(&Command::Classes { offset }).await? {
                Reply::Classes(page) => page,
                other => return Err(unexpected("CLASSES", &other)),
            };
            let next = next_page(&page);
            all.extend(page.entries);
            match next {
                Some(n) => offset = n,
                None => break,
            }
        }
        Ok(all)
    }

    /// Every page of `WHO` (for one class, if given).
    ///
    /// # Errors
    /// As [`AdminClient::request`].
    pub async fn who(&mut self, class: Option<ClassKey>) -> Result<Vec<WhoEntry>, AdminError> {
        self.all_pages(
            "WHO",
            |offset| Command::Who {
                class: class.clone(),
                offset,
            },
            |reply| match reply {
                Reply::Who(page) => Ok(page),
                other => Err(Box::new(other)),
            },
        )
        .await
    }

    /// Every page of `FLAGS` (for one class, if given).
    ///
    /// # Errors
    /// As [`AdminClient::request`].
    pub async fn flags(&mut self, class: Option<ClassKey>) -> Result<Vec<FlagEntry>, AdminError> {
        self.all_pages(
            "FLAGS",
            |offset| Command::Flags {
                class: class.clone(),
                offset,
            },
            |reply| match reply {
                Reply::Flags(page) => Ok(page),
                other => Err(Box::new(other)),
            },
        )
        .await
    }

    /// Every entry of a paged list: `command(offset)` for each page, `page` taking the entries
    /// out of the reply (or handing back a reply of another kind).
    async fn all_pages<T>(
        &mut self,
        word: &str,
        command: impl Fn(u64) -> Command,
        page: impl Fn(Reply) -> Result<Page<T>, Box<Reply>>,
    ) -> Result<Vec<T>, AdminError> {
        let mut all = Vec::new();
        let mut offset = 0;
        for _ in 0..MAX_PAGES {
            let got = page(self.request(&command(offset)).await?)
                .map_err(|other| unexpected(word, &other))?;
            let next = next_page(&got);
            all.extend(got.entries);
            match next {
                Some(n) => offset = n,
                None => break,
            }
        }
        Ok(all)
    }

    /// `SHUTDOWN` (the admin socket needs no token).
    ///
    /// # Errors
    /// As [`AdminClient::request`].
    pub async fn shutdown(&mut self) -> Result<(), AdminError> {
        match self.request(&Command::Shutdown(None)).await? {
            Reply::Shutdown => Ok(()),
            other => Err(unexpected("SHUTDOWN", &other)),
        }
    }
}

/// The offset of the page after `page`, unless the list ended (or shrank under us).
fn next_page<T>(page: &Page<T>) -> Option<u64> {
    if page.entries.is_empty() {
        return None;
    }
    page.next_offset()
}

fn unexpected(command: &str, reply: &Reply) -> AdminError {
    AdminError::Protocol(format!("unexpected reply to {command}: OK {reply}"))
}

/// Runs `attend admin …`: asks the daemon and writes the answer to `out`. Returns the exit code.
pub async fn run(args: &AdminArgs, out: &mut String) -> Result<(), AdminError> {
    let class = match &args.action {
        AdminCommand::Who {
            course: Some(course),
            division: Some(division),
        }
        | AdminCommand::Flags {
            course: Some(course),
            division: Some(division),
        } => Some(class_key(course, division)?),
        _ => None,
    };
    let path = args.socket.clone().unwrap_or_else(default_socket);
    let mut client = AdminClient::connect(&path).await?;
    match &args.action {
        AdminCommand::Status => {
            let status = client.status().await?;
            render_status(&status, args.json, out);
        }
        AdminCommand::Classes => {
            let classes = client.classes().await?;
            render_classes(&classes, args.json, out);
        }
        AdminCommand::Clients | AdminCommand::Who { .. } => {
            let students = client.who(class).await?;
            render_who(&students, args.json, out);
        }
        AdminCommand::Flags { .. } => {
            let flags = client.flags(class).await?;
            render_flags(&flags, args.json, out);
        }
        AdminCommand::Shutdown => {
            client.shutdown().await?;
            if args.json {
                push_json(out, &json!({ "shutdown": true }));
            } else {
                out.push_str("attendanced is shutting down\n");
            }
        }
    }
    Ok(())
}

fn class_key(course: &str, division: &str) -> Result<ClassKey, AdminError> {
    let field = |kind, s| Field::new(kind, s).map_err(|e| AdminError::Usage(e.to_string()));
    Ok(ClassKey {
        course: field(FieldKind::Course, course)?,
        division: field(FieldKind::Division, division)?,
    })
}

fn push_json(out: &mut String, value: &Value) {
    out.push_str(&value.to_string());
    out.push('\n');
}

/// `STATUS` as `key value` lines, or one JSON object.
pub fn render_status(status: &Status, json: bool, out: &mut String) {
    let fsync_ms = status.last_fsync_micros.map(|us| us as f64 / 1000.0);
    if json {
        push_json(
            out,
            &json!({
                "connections": status.connections,
                "joined": status.joined,
                "classes": status.classes,
                "marks_today": status.marks_today,
                "writer_queue": status.writer_queue,
                "last_fsync_ms": fsync_ms,
                "uptime_secs": status.uptime_secs,
                "version": status.version.as_str(),
            }),
        );
        return;
    }
    let fsync = fsync_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.3} ms"));
    let rows = [
        ("connections", status.connections.to_string()),
        ("students checked in", status.joined.to_string()),
        ("classes", status.classes.to_string()),
        ("marks today", status.marks_today.to_string()),
        ("writer queue", status.writer_queue.to_string()),
        ("last fsync", fsync),
        ("uptime", format_hms(status.uptime_secs)),
        ("version", status.version.to_string()),
    ];
    let table: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(k, v)| vec![k.to_owned(), v])
        .collect();
    render_table(&[], &table, out);
}

/// `CLASSES` as a table with a total line, or one JSON object.
pub fn render_classes(classes: &[ClassCount], json: bool, out: &mut String) {
    let students: u64 = classes.iter().map(|c| c.members).sum();
    if json {
        let list: Vec<Value> = classes
            .iter()
            .map(|c| {
                json!({
                    "course": c.class.course.as_str(),
                    "division": c.class.division.as_str(),
                    "students": c.members,
                })
            })
            .collect();
        push_json(out, &json!({ "classes": list, "students": students }));
        return;
    }
    let rows: Vec<Vec<String>> = classes
        .iter()
        .map(|c| {
            vec![
                c.class.course.to_string(),
                c.class.division.to_string(),
                c.members.to_string(),
            ]
        })
        .collect();
    render_table(&["COURSE", "DIVISION", "STUDENTS"], &rows, out);
    let _ = writeln!(
        out,
        "{} class{}, {students} student{}",
        classes.len(),
        if classes.len() == 1 { "" } else { "es" },
        if students == 1 { "" } else { "s" }
    );
}

/// `WHO` as a table (time left as `HH:MM:SS`, or `ready` once it may be marked), or one JSON
/// object.
pub fn render_who(students: &[WhoEntry], json: bool, out: &mut String) {
    if json {
        let list: Vec<Value> = students
            .iter()
            .map(|s| {
                json!({
                    "course": s.id.course().as_str(),
                    "division": s.id.division().as_str(),
                    "name": s.id.name.as_str(),
                    "roll": s.id.roll.as_str(),
                    "seconds_left": s.seconds_left,
                    "transport": s.transport.as_str(),
                })
            })
            .collect();
        push_json(out, &json!({ "students": list }));
        return;
    }
    let rows: Vec<Vec<String>> = students
        .iter()
        .map(|s| {
            vec![
                s.id.course().to_string(),
                s.id.division().to_string(),
                s.id.name.to_string(),
                s.id.roll.to_string(),
                if s.seconds_left == 0 {
                    "ready".to_owned()
                } else {
                    format_hms(s.seconds_left)
                },
                s.transport.to_string(),
            ]
        })
        .collect();
    render_table(
        &["COURSE", "DIVISION", "NAME", "ROLL", "LEFT", "VIA"],
        &rows,
        out,
    );
    let n = students.len();
    let _ = writeln!(
        out,
        "{n} student{} checked in",
        if n == 1 { "" } else { "s" }
    );
}

/// `FLAGS` as a table, or one JSON object.
pub fn render_flags(flags: &[FlagEntry], json: bool, out: &mut String) {
    let joined = |f: &FlagEntry| -> (String, String) {
        let addrs: Vec<String> = f.addrs.iter().map(ToString::to_string).collect();
        let rolls: Vec<&str> = f.rolls.iter().map(Field::as_str).collect();
        (addrs.join(" "), rolls.join(" "))
    };
    if json {
        let list: Vec<Value> = flags
            .iter()
            .map(|f| {
                json!({
                    "kind": f.kind.as_str(),
                    "course": f.class.course.as_str(),
                    "division": f.class.division.as_str(),
                    "addresses": f.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "rolls": f.rolls.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                })
            })
            .collect();
        push_json(out, &json!({ "flags": list }));
        return;
    }
    let rows: Vec<Vec<String>> = flags
        .iter()
        .map(|f| {
            let (addrs, rolls) = joined(f);
            vec![
                f.kind.as_str().to_owned(),
                f.class.course.to_string(),
                f.class.division.to_string(),
                addrs,
                rolls,
            ]
        })
        .collect();
    render_table(
        &["FLAG", "COURSE", "DIVISION", "ADDRESSES", "ROLLS"],
        &rows,
        out,
    );
    let n = flags.len();
    let _ = writeln!(out, "{n} flag{} today", if n == 1 { "" } else { "s" });
}

/// Left-aligned columns two spaces apart (widths in characters), with an optional header;
/// nothing at all for no rows.
fn render_table(header: &[&str], rows: &[Vec<String>], out: &mut String) {
    if rows.is_empty() {
        return;
    }
    let mut all: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    if !header.is_empty() {
        all.push(header.iter().map(|h| (*h).to_owned()).collect());
    }
    all.extend(rows.iter().cloned());
    let columns = all.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in &all {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    for row in &all {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count() + 2;
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attendance_protocol::Token;

    fn entry(s: &str) -> WhoEntry {
        s.parse().expect("entry")
    }

    #[test]
    fn who_is_a_table_with_time_left_or_json() {
        let students = [
            entry("CN/D1/Ann/1/3540/tcp"),
            entry("CN/D1/Bartholomew/22/0/ws"),
        ];
        let mut table = String::new();
        render_who(&students, false, &mut table);
        assert_eq!(
            table,
            "COURSE  DIVISION  NAME         ROLL  LEFT      VIA\n\
             CN      D1        Ann          1     00:59:00  tcp\n\
             CN      D1        Bartholomew  22    ready     ws\n\
             2 students checked in\n"
        );
        let mut json = String::new();
        render_who(&students, true, &mut json);
        let v: Value = serde_json::from_str(&json).expect("json");
        assert_eq!(v["students"][0]["seconds_left"], 3540);
        assert_eq!(v["students"][1]["name"], "Bartholomew");
        assert_eq!(v["students"][1]["transport"], "ws");
    }

    #[test]
    fn status_json_has_every_number() {
        let status = Status {
            connections: 3,
            joined: 2,
            classes: 1,
            marks_today: 4,
            writer_queue: 0,
            last_fsync_micros: Some(2_500),
            uptime_secs: 61,
            version: Token::new("0.1.0").expect("token"),
        };
        let mut json = String::new();
        render_status(&status, true, &mut json);
        let v: Value = serde_json::from_str(&json).expect("json");
        assert_eq!(v["connections"], 3);
        assert_eq!(v["last_fsync_ms"], 2.5);
        assert_eq!(v["version"], "0.1.0");
        let mut table = String::new();
        render_status(&status, false, &mut table);
        assert!(table.contains("last fsync           2.500 ms\n"), "{table}");
        assert!(table.contains("uptime               00:01:01\n"), "{table}");
    }

    #[test]
    fn classes_end_with_a_total() {
        let classes: Vec<ClassCount> = ["CN/D1=2", "CN/D2=1"]
            .iter()
            .map(|s| s.parse().expect("entry"))
            .collect();
        let mut table = String::new();
        render_classes(&classes, false, &mut table);
        assert!(table.ends_with("2 classes, 3 students\n"), "{table}");
    }

    #[test]
    fn a_bad_class_is_a_usage_error() {
        let err = class_key("CN", "D 1").expect_err("space");
        assert_eq!(err.exit_code(), exit::USAGE);
    }
}
