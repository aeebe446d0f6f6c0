//! The admin commands (`STATUS`, `CLASSES`, `WHO`) over the admin socket, their refusal on the
//! student port, and `attend admin` against the real daemon.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use attendance_protocol::{LineCodec, Page, Reply, ServerLine, Status, Transport, WhoEntry};
use attendance_tests::{Client, Daemon, LINE_TIMEOUT, bin_path};
use futures::{SinkExt as _, StreamExt as _};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

/// A line client on the admin socket.
struct Admin {
    framed: Framed<UnixStream, LineCodec>,
}

impl Admin {
    async fn connect(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path).await?;
        let mut admin = Self {
            framed: Framed::new(stream, LineCodec::new(1 << 20)),
        };
        let hello = admin.line().await?;
        if !hello.starts_with("HELLO ") {
            bail!("expected HELLO, got {hello:?}");
        }
        Ok(admin)
    }

    async fn line(&mut self) -> Result<String> {
        let line = tokio::time::timeout(LINE_TIMEOUT, self.framed.next())
            .await?
            .context("admin socket closed")???;
        Ok(line)
    }

    /// Sends `command` and returns the reply line (skipping events).
    async fn cmd(&mut self, command: &str) -> Result<String> {
        self.framed
            .send(bytes::Bytes::from(format!("{command}\n")))
            .await?;
        loop {
            let line = self.line().await?;
            if !line.starts_with("EVENT ") {
                return Ok(line);
            }
        }
    }

    async fn reply(&mut self, command: &str) -> Result<Reply> {
        let line = self.cmd(command).await?;
        match line.parse::<ServerLine>() {
            Ok(ServerLine::Ok(reply)) => Ok(reply),
            _ => bail!("{command}: unexpected {line:?}"),
        }
    }

    async fn status(&mut self) -> Result<Status> {
        match self.reply("STATUS").await? {
            Reply::Status(s) => Ok(s),
            other => bail!("STATUS answered {other}"),
        }
    }

    async fn who(&mut self, args: &str) -> Result<Page<WhoEntry>> {
        match self.reply(&format!("WHO {args}")).await? {
            Reply::Who(page) => Ok(page),
            other => bail!("WHO answered {other}"),
        }
    }
}

fn socket(d: &Daemon) -> PathBuf {
    d.dir.path().join("attendanced.sock")
}

async fn joined(d: &Daemon, id: &str) -> Result<Client> {
    let mut c = d.connect().await?;
    let reply = c.cmd(&format!("JOIN {id}")).await?;
    if !reply.starts_with("OK JOIN ") {
        bail!("JOIN {id}: {reply}");
    }
    Ok(c)
}

#[tokio::test]
async fn who_names_the_transport_each_student_is_connected_over() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1h"])?;
    let mut admin = Admin::connect(&socket(&d)).await?;
    let _tom = joined(&d, "CN_D1_Tom_1").await?;
    let mut wei = d.connect_ws().await?;
    let reply = wei.cmd("JOIN CN_D1_Wei_2").await?;
    assert!(reply.starts_with("OK JOIN "), "{reply}");
    let who = admin.who("CN D1").await?;
    let seen: Vec<(&str, Transport)> = who
        .entries
        .iter()
        .map(|e| (e.id.name.as_str(), e.transport))
        .collect();
    assert_eq!(seen, [("Tom", Transport::Tcp), ("Wei", Transport::Ws)]);
    Ok(())
}

#[tokio::test]
async fn status_classes_and_who_reflect_the_students_checked_in_and_the_marks() -> Result<()> {
    let d = Daemon::start(&["--class-length", "2s"])?;
    let mut admin = Admin::connect(&socket(&d)).await?;
    let status = admin.status().await?;
    assert_eq!(
        (status.connections, status.joined, status.classes),
        (0, 0, 0)
    );
    assert_eq!(status.marks_today, 0);
    assert_eq!(status.last_fsync_micros, None, "nothing synced yet");
    assert_eq!(status.version.as_str(), env!("CARGO_PKG_VERSION"));

    let mut ann = joined(&d, "CN_D1_Ann_1").await?;
    let _bob = joined(&d, "CN_D1_Bob_2").await?;
    let _cat = joined(&d, "CN_D2_Cat_3").await?;
    let _idle = d.connect().await?;

    let status = admin.status().await?;
    assert_eq!(
        (status.connections, status.joined, status.classes),
        (4, 3, 2),
        "{status}"
    );
    assert_eq!(
        admin.cmd("CLASSES").await?,
        "OK CLASSES 2 0 CN/D1=2 CN/D2=1"
    );
    let all = admin.who("").await?;
    assert_eq!((all.total, all.offset), (3, 0));
    let names: Vec<&str> = all.entries.iter().map(|e| e.id.name.as_str()).collect();
    assert_eq!(names, ["Ann", "Bob", "Cat"]);
    assert!(
        all.entries
            .iter()
            .all(|e| (1..=2).contains(&e.seconds_left))
    );
    let d1 = admin.who("CN D1").await?;
    assert_eq!(d1.total, 2);
    assert_eq!(d1.entries[1].id.to_string(), "CN_D1_Bob_2");
    assert_eq!(admin.who("CN D9").await?.total, 0);
    assert_eq!(admin.who("1").await?.entries.len(), 2, "from offset 1");
    let one_word = admin.cmd("WHO CN").await?;
    assert!(
        one_word.starts_with("ERR BADFORMAT "),
        "one word is an offset: {one_word}"
    );

    // Once Ann is marked, STATUS counts the mark and a sync, and WHO shows her time as served.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let marked = ann.cmd("PRESENT").await?;
    assert!(marked.starts_with("OK PRESENT "), "{marked}");
    let status = admin.status().await?;
    assert_eq!(status.marks_today, 1);
    assert!(status.last_fsync_micros.is_some(), "{status}");
    let ann_entry = admin.who("CN D1").await?.entries.remove(0);
    assert_eq!(
        (ann_entry.id.name.as_str(), ann_entry.seconds_left),
        ("Ann", 0)
    );

    // Leaving empties the class.
    ann.cmd("QUIT").await?;
    let mut last = String::new();
    for _ in 0..100 {
        last = admin.cmd("CLASSES").await?;
        if last == "OK CLASSES 2 0 CN/D1=1 CN/D2=1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last, "OK CLASSES 2 0 CN/D1=1 CN/D2=1");
    let help = admin.cmd("HELP").await?;
    assert!(help.contains("STATUS") && help.contains("WHO"), "{help}");
    Ok(())
}

#[tokio::test]
async fn admin_commands_are_denied_on_the_student_port() -> Result<()> {
    let d = Daemon::start(&[])?;
    let mut student = joined(&d, "CN_D1_Ann_1").await?;
    for command in ["STATUS", "CLASSES", "WHO", "WHO CN D1", "CLASSES 5"] {
        let reply = student.cmd(command).await?;
        assert!(reply.starts_with("ERR DENIED "), "{command}: {reply}");
    }
    let help = student.cmd("HELP").await?;
    assert!(
        !help.contains("STATUS"),
        "students are not shown admin commands: {help}"
    );
    Ok(())
}

#[tokio::test]
async fn a_long_who_list_comes_in_pages_that_fit_the_line_limit() -> Result<()> {
    let d = Daemon::start(&[])?;
    // Long names and rolls: about 110 bytes an entry, so 180 students need two pages.
    let long_name = "N".repeat(60);
    let mut students = Vec::new();
    for i in 0..180 {
        students.push(
            joined(
                &d,
                &format!("CN_D1_{long_name}{i:03}_{}{i:03}", "R".repeat(28)),
            )
            .await?,
        );
    }
    let mut admin = Admin::connect(&socket(&d)).await?;
    let first = admin.who("").await?;
    assert_eq!(first.total, 180);
    let line_len = ServerLine::Ok(Reply::Who(first.clone())).to_string().len();
    assert!(
        line_len <= attendance_protocol::MAX_PAGE_BYTES + 64,
        "{line_len}"
    );
    let next = first.next_offset().context("a second page")?;
    let second = admin.who(&next.to_string()).await?;
    assert_eq!(second.offset, next);
    assert_eq!(first.entries.len() + second.entries.len(), 180);
    assert_eq!(second.next_offset(), None);

    // `attend admin clients` follows the pages.
    let out = attend_admin(&d, &["clients", "--json"])?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["students"].as_array().map(Vec::len), Some(180));
    drop(students);
    Ok(())
}

/// Runs `attend admin <args> --socket <the daemon's socket>`, with a student server set in the
/// environment (it must not get in the way of the subcommand).
fn attend_admin(d: &Daemon, args: &[&str]) -> Result<Output> {
    attend_admin_at(&socket(d), args)
}

fn attend_admin_at(socket: &Path, args: &[&str]) -> Result<Output> {
    let child = Command::new(bin_path("attend"))
        .arg("admin")
        .args(args)
        .arg("--socket")
        .arg(socket)
        .env("ATTEND_SERVER", "127.0.0.1:1")
        .env_remove("ATTEND_ADMIN_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    Ok(child.wait_with_output()?)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn attend_admin_prints_status_as_json_and_tables_for_people() -> Result<()> {
    let d = Daemon::start(&[])?;
    let _ann = joined(&d, "ComputerNetworks_Div1_Ann_1").await?;
    let _bob = joined(&d, "ComputerNetworks_Div1_Bob_2").await?;
    let _idle = d.connect().await?;

    let out = attend_admin(&d, &["status", "--json"])?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
    assert_eq!(v["connections"], 3);
    assert_eq!(v["joined"], 2);
    assert_eq!(v["classes"], 1);
    assert_eq!(v["marks_today"], 0);
    assert!(v["last_fsync_ms"].is_null());
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    let out = attend_admin(&d, &["status"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("connections") && text.contains('3'), "{text}");

    let out = attend_admin(&d, &["who", "ComputerNetworks", "Div1"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(text.starts_with("COURSE"), "{text}");
    assert!(text.contains("Ann") && text.contains("Bob"), "{text}");
    assert!(text.ends_with("2 students checked in\n"), "{text}");

    let out = attend_admin(&d, &["classes", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["classes"][0]["course"], "ComputerNetworks");
    assert_eq!(v["classes"][0]["students"], 2);

    let out = attend_admin(&d, &["who", "Computer Networks", "Div1"])?;
    assert_eq!(out.status.code(), Some(2), "a bad course is a usage error");
    Ok(())
}

#[tokio::test]
async fn attend_admin_shutdown_stops_the_daemon() -> Result<()> {
    let mut d = Daemon::start(&[])?;
    let mut student = joined(&d, "CN_D1_Ann_1").await?;
    let out = attend_admin(&d, &["shutdown"])?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("shutting down"));
    assert_eq!(student.event("EVENT SHUTDOWN").await?, "EVENT SHUTDOWN");
    assert_eq!(d.wait()?.code(), Some(0));
    Ok(())
}

#[tokio::test]
async fn attend_admin_without_a_daemon_exits_3() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = attend_admin_at(&dir.path().join("attendanced.sock"), &["status"])?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    Ok(())
}

#[tokio::test]
async fn three_rolls_from_one_address_are_flagged_for_the_teacher_not_refused() -> Result<()> {
    let d = Daemon::start(&[])?;
    let mut clients = Vec::new();
    for (i, name) in ["Ann", "Bob", "Cat"].iter().enumerate() {
        let mut c = d.connect().await?;
        // A flag, not a block: each JOIN is accepted.
        let joined = c
            .cmd(&format!("JOIN ComputerNetworks_Div1_{name}_{i}"))
            .await?;
        assert!(joined.starts_with("OK JOIN "), "{joined}");
        clients.push(c);
    }
    let out = attend_admin(&d, &["flags", "ComputerNetworks", "Div1"])?;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout)?;
    assert!(text.contains("shared-address"), "{text}");
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(text.contains("0 1 2"), "{text}");
    let json = attend_admin(&d, &["flags", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    assert_eq!(v["flags"][0]["kind"], "shared-address");
    assert_eq!(v["flags"][0]["rolls"].as_array().map(Vec::len), Some(3));
    Ok(())
}
