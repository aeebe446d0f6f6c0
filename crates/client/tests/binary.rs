//! The real `attend` binary against the fake server, with stdin piped, open and idle: it must
//! exit on its own once done, never waiting for Enter.

mod common;

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::Duration;

use common::{FakeServer, ID, MARKED_AT, Script, dead_address, send};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// Longest a run may take before the test calls it hung.
const WATCHDOG: Duration = Duration::from_secs(30);

/// A running `attend` whose stdin the test holds open.
struct Attend {
    child: Child,
    stdin: ChildStdin,
}

fn attend(args: &[&str], server_env: Option<&str>) -> Attend {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_attend"));
    cmd.args(args)
        .env_remove("ATTEND_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(server) = server_env {
        cmd.env("ATTEND_SERVER", server);
    }
    let mut child = cmd.spawn().expect("spawn attend");
    let stdin = child.stdin.take().expect("piped stdin");
    Attend { child, stdin }
}

impl Attend {
    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"))
    }

    /// Waits for the exit with stdin still open; kills the child if it hangs.
    async fn finish(self) -> (Option<i32>, String, String) {
        let Attend { child, stdin } = self;
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
        let output: Output = match tokio::time::timeout(WATCHDOG, waiting).await {
            Ok(joined) => joined.expect("join").expect("wait for attend"),
            Err(_) => {
                let _ = kill(pid, Signal::SIGKILL);
                panic!("attend did not exit within {WATCHDOG:?} with stdin open and idle");
            }
        };
        drop(stdin);
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

#[tokio::test]
async fn marks_and_exits_0_while_stdin_stays_open() {
    let server = FakeServer::start(Script::class(1)).await;
    let child = attend(&["--server", &server.server(), ID], None);
    let (code, stdout, stderr) = child.finish().await;
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("marked"), "{stdout}");
    assert!(stdout.contains(MARKED_AT), "{stdout}");
    assert!(
        !stdout.contains('\r'),
        "a pipe gets plain lines: {stdout:?}"
    );
    assert_eq!(
        server.log().await,
        [
            format!("JOIN {ID}"),
            "PRESENT".into(),
            "PRESENT".into(),
            "QUIT".into()
        ]
    );
}

#[tokio::test]
async fn reads_the_id_from_stdin_without_a_prompt_when_not_a_terminal() {
    let mut script = Script::class(0);
    script.presents = vec![vec![send(&format!("OK PRESENT {MARKED_AT}"))]];
    let server = FakeServer::start(script).await;
    let mut child = attend(&[], Some(&server.server()));
    writeln!(child.stdin, "{ID}").expect("write the ID");
    let (code, stdout, stderr) = child.finish().await;
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.contains("Enter your Name"), "{stdout}");
    assert!(
        stdout.contains("Your Attendance has been marked at"),
        "{stdout}"
    );
    assert_eq!(server.log().await[0], format!("JOIN {ID}"));
}

#[tokio::test]
async fn unreachable_server_exits_3() {
    let child = attend(&["--server", &dead_address(), ID], None);
    let (code, _, stderr) = child.finish().await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
}

#[tokio::test]
async fn invalid_id_exits_4() {
    let server = FakeServer::start(Script::class(1)).await;
    let child = attend(&["--server", &server.server(), "Jay"], None);
    let (code, _, stderr) = child.finish().await;
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("COURSE_DIV_NAME_ROLL"), "{stderr}");
    assert_eq!(
        server.log().await,
        ["QUIT"],
        "nothing but a goodbye is sent"
    );
}

#[tokio::test]
async fn usage_error_exits_2() {
    let child = attend(&["--no-such-flag"], None);
    let (code, _, _) = child.finish().await;
    assert_eq!(code, Some(2));
}

#[tokio::test]
async fn ctrl_c_sends_quit_and_exits_130() {
    let (joined_tx, joined_rx) = oneshot::channel();
    let mut script = Script::class(3600);
    script.on_join = Some(joined_tx);
    let server = FakeServer::start(script).await;
    let child = attend(&["--server", &server.server(), ID], None);
    joined_rx.await.expect("attend joined");
    kill(child.pid(), Signal::SIGINT).expect("send SIGINT");
    let (code, _, stderr) = child.finish().await;
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("NOT marked"), "{stderr}");
    assert_eq!(server.log().await, [format!("JOIN {ID}"), "QUIT".into()]);
}
