//! The library session against a scripted fake server, with paused time: a class of any length
//! takes no real seconds.

mod common;

use std::future::{Future, pending};
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attendance_client::{ClientError, IdSource, Marked, Mode, Options, Output, PROMPT, exit, run};
use common::{Act, FakeServer, ID, MARKED_AT, Script, dead_address, send};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// An in-memory writer that tests can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
    }
}

/// The outcome, what was printed and what the server received.
struct Run {
    result: Result<Marked, ClientError>,
    printed: String,
    received: Vec<String>,
}

async fn attend_with(
    script: Script,
    id: IdSource,
    input: &[&str],
    mode: Mode,
    interrupt: impl Future<Output = ()>,
) -> Run {
    let server = FakeServer::start(script).await;
    // The sender stays alive: input is open and idle, as a student who types nothing.
    let (tx, mut rx) = mpsc::channel(16);
    for line in input {
        tx.send((*line).to_owned()).await.expect("queue input");
    }
    let cap = Captured::default();
    let mut out = Output::new(cap.clone(), mode);
    let result = run(
        &server.server(),
        id,
        &mut rx,
        interrupt,
        &mut out,
        &Options::default(),
    )
    .await;
    drop(tx);
    Run {
        result,
        printed: cap.text(),
        received: server.log().await,
    }
}

async fn attend(script: Script) -> Run {
    attend_with(
        script,
        IdSource::Given(ID.into()),
        &[],
        Mode::Plain,
        pending(),
    )
    .await
}

fn code(run: &Run) -> i32 {
    match &run.result {
        Ok(_) => exit::MARKED,
        Err(e) => e.exit_code(),
    }
}

#[tokio::test(start_paused = true)]
async fn waits_the_servers_seconds_retries_early_and_is_marked() {
    let start = Instant::now();
    let run = attend(Script::class(2)).await;
    let marked = run.result.expect("marked");
    assert_eq!(marked.at.to_string(), MARKED_AT);
    assert_eq!(marked.id.to_string(), ID);
    assert_eq!(marked.early_retries, 1);
    // 2 s from OK JOIN, then 1 s from ERR EARLY 1: the client waited exactly what it was told.
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(3), "{waited:?}");
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    assert_eq!(
        run.received,
        [
            format!("JOIN {ID}"),
            "PRESENT".into(),
            "PRESENT".into(),
            "QUIT".into()
        ]
    );
    assert!(
        run.printed.contains("Connected to attendanced 0.1.0"),
        "{}",
        run.printed
    );
    assert!(
        run.printed.contains("Class in progress: 00:00:02 left"),
        "{}",
        run.printed
    );
    assert!(
        run.printed
            .contains(&format!("Your Attendance has been marked at {MARKED_AT}")),
        "{}",
        run.printed
    );
    assert!(
        !run.printed.contains('\r'),
        "plain output has no control codes"
    );
}

#[tokio::test(start_paused = true)]
async fn events_are_shown_and_typed_lines_become_say() {
    let mut script = Script::class(3);
    // Pushed once the countdown runs: the student's SAY is only sent after OK JOIN.
    script.after_say = vec![
        "EVENT SAY Bob hi all".into(),
        "EVENT HEARTBEAT 2026-11-23T15:00:00.000Z".into(),
        "EVENT PRESENT Alice".into(),
    ];
    script.presents = vec![vec![send(&format!("OK PRESENT {MARKED_AT}"))]];
    let run = attend_with(
        script,
        IdSource::Given(ID.into()),
        &["hello class", "", "   "],
        Mode::Terminal,
        pending(),
    )
    .await;
    assert_eq!(code(&run), exit::MARKED, "{:?}", run.result);
    let says: Vec<_> = run
        .received
        .iter()
        .filter(|l| l.starts_with("SAY"))
        .collect();
    assert_eq!(says, ["SAY hello class"], "empty lines are not sent");
    // On a terminal a message clears the progress line, prints, and the countdown goes on.
    assert!(
        run.printed.contains("\r\x1b[K<Bob> hi all\n"),
        "{:?}",
        run.printed
    );
    assert!(run.printed.contains("* Alice was marked present"));
    assert!(run.printed.contains("server time 2026-11-23T15:00:00.000Z"));
    assert!(run.printed.contains("Class in progress: 00:00:01 left"));
}

#[tokio::test(start_paused = true)]
async fn unreachable_server_exits_3() {
    let (_tx, mut rx) = mpsc::channel(1);
    let mut out = Output::new(io::sink(), Mode::Plain);
    let result = run(
        &dead_address(),
        IdSource::Given(ID.into()),
        &mut rx,
        pending(),
        &mut out,
        &Options::default(),
    )
    .await;
    let err = result.expect_err("nothing listens there");
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 3);
}

#[tokio::test(start_paused = true)]
async fn id_refused_by_the_server_exits_4() {
    let mut script = Script::class(2);
    script.join_refusal = Some("ERR BADFORMAT name may hold only letters".into());
    let run = attend(script).await;
    assert!(
        matches!(run.result, Err(ClientError::IdRefused { .. })),
        "{:?}",
        run.result
    );
    assert_eq!(code(&run), 4);
}

#[tokio::test(start_paused = true)]
async fn locally_invalid_id_exits_4_without_joining() {
    let run = attend_with(
        Script::class(2),
        IdSource::Given("not_an_id".into()),
        &[],
        Mode::Plain,
        pending(),
    )
    .await;
    assert!(
        matches!(run.result, Err(ClientError::InvalidId { .. })),
        "{:?}",
        run.result
    );
    assert_eq!(code(&run), 4);
    assert_eq!(run.received, ["QUIT"]);
}

#[tokio::test(start_paused = true)]
async fn server_closing_before_the_mark_exits_5() {
    let mut script = Script::class(2);
    script.presents = vec![vec![Act::Close]];
    let run = attend(script).await;
    assert!(
        matches!(run.result, Err(ClientError::Disconnected)),
        "{:?}",
        run.result
    );
    assert_eq!(code(&run), 5);
}

#[tokio::test(start_paused = true)]
async fn shutdown_event_before_the_mark_exits_5() {
    let mut script = Script::class(3600);
    script.after_join = vec!["EVENT SHUTDOWN".into()];
    let run = attend(script).await;
    assert!(
        matches!(run.result, Err(ClientError::ServerShutdown)),
        "{:?}",
        run.result
    );
    assert_eq!(code(&run), 5);
}

#[tokio::test(start_paused = true)]
async fn storage_error_exits_1() {
    let mut script = Script::class(1);
    script.presents = vec![vec![send("ERR STORAGE disk full; nothing was recorded")]];
    let run = attend(script).await;
    assert!(
        matches!(run.result, Err(ClientError::Storage(_))),
        "{:?}",
        run.result
    );
    assert_eq!(code(&run), 1);
}

#[tokio::test(start_paused = true)]
async fn early_retries_are_bounded() {
    let mut script = Script::class(1);
    script.presents = vec![vec![send("ERR EARLY 1 seconds remain")]];
    let run = attend(script).await;
    assert!(
        matches!(run.result, Err(ClientError::StillEarly(5))),
        "{:?}",
        run.result
    );
    assert_eq!(code(&run), 1);
    let presents = run.received.iter().filter(|l| *l == "PRESENT").count();
    assert_eq!(presents, 6, "one try and five retries");
}

#[tokio::test(start_paused = true)]
async fn interrupt_sends_quit_and_exits_130() {
    let (joined_tx, joined_rx) = oneshot::channel();
    let mut script = Script::class(3600);
    script.on_join = Some(joined_tx);
    let interrupt = async {
        let _ = joined_rx.await;
    };
    let run = attend_with(
        script,
        IdSource::Given(ID.into()),
        &[],
        Mode::Plain,
        interrupt,
    )
    .await;
    assert!(
        matches!(run.result, Err(ClientError::Interrupted)),
        "{:?}",
        run.result
    );
    assert_eq!(code(&run), 130);
    assert_eq!(run.received, [format!("JOIN {ID}"), "QUIT".into()]);
}

#[tokio::test(start_paused = true)]
async fn id_is_read_from_input_with_the_prompt_only_when_asked() {
    let mut script = Script::class(1);
    script.presents = vec![vec![send(&format!("OK PRESENT {MARKED_AT}"))]];
    let quiet = attend_with(
        script,
        IdSource::Ask { prompt: false },
        &[ID],
        Mode::Plain,
        pending(),
    )
    .await;
    assert_eq!(code(&quiet), exit::MARKED, "{:?}", quiet.result);
    assert!(!quiet.printed.contains(PROMPT));
    assert_eq!(quiet.received[0], format!("JOIN {ID}"));

    let mut script = Script::class(1);
    script.presents = vec![vec![send(&format!("OK PRESENT {MARKED_AT}"))]];
    let asked = attend_with(
        script,
        IdSource::Ask { prompt: true },
        &[ID],
        Mode::Plain,
        pending(),
    )
    .await;
    assert_eq!(code(&asked), exit::MARKED, "{:?}", asked.result);
    assert!(
        asked
            .printed
            .contains("Enter your Name, Class and Roll no. [COURSE_DIV_NAME_NUMBER]")
    );
}

#[tokio::test(start_paused = true)]
async fn input_ending_before_an_id_exits_4() {
    let server = FakeServer::start(Script::class(1)).await;
    let (tx, mut rx) = mpsc::channel::<String>(1);
    drop(tx);
    let mut out = Output::new(io::sink(), Mode::Plain);
    let result = run(
        &server.server(),
        IdSource::Ask { prompt: false },
        &mut rx,
        pending(),
        &mut out,
        &Options::default(),
    )
    .await;
    let err = result.expect_err("no ID");
    assert!(matches!(err, ClientError::NoId), "{err:?}");
    assert_eq!(err.exit_code(), 4);
}

#[tokio::test(start_paused = true)]
async fn unreadable_lines_are_shown_and_skipped() {
    let mut script = Script::class(1);
    script.after_join = vec!["EVENT DANCE now".into(), "\u{1b}[2Jgarbage".into()];
    script.presents = vec![vec![send(&format!("OK PRESENT {MARKED_AT}"))]];
    let run = attend(script).await;
    assert_eq!(code(&run), exit::MARKED, "{:?}", run.result);
    assert!(
        run.printed
            .contains("unreadable line from the server: EVENT DANCE now")
    );
    assert!(
        !run.printed.contains('\u{1b}'),
        "control characters never reach the screen"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_present_times_out_with_5() {
    let mut script = Script::class(1);
    script.presents = vec![vec![]];
    let run = attend(script).await;
    assert!(
        matches!(
            run.result,
            Err(ClientError::NoReply {
                command: "PRESENT",
                ..
            })
        ),
        "{:?}",
        run.result
    );
    assert_eq!(code(&run), 5);
}
