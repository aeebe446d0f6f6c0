//! The session core's rules, one test each, on a paused clock and with no socket: lines go in
//! as the transport would hand them over, replies come out of the outbox.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use attendance_protocol::{LineError, StudentId, Timestamp};
use tokio::time::Instant;

use super::{Flow, Outbox, Peer, Session};
use crate::Config;
use crate::engine::{ClassEvent, Engine, for_tests};

fn config() -> Config {
    Config {
        class_length: Duration::from_secs(60),
        ..Config::default()
    }
}

fn tcp(n: u8) -> Peer {
    Peer::Tcp(SocketAddr::from(([127, 0, 0, n], 40_000)))
}

/// One connection's session, driven as its transport would drive it.
struct Client {
    session: Session,
    /// The resume token of the last `OK JOIN`, which [`Client::item`] takes off the line.
    token: Option<String>,
}

impl Client {
    fn new(engine: &Arc<Engine>, peer: Peer, conn: u64) -> Self {
        Self {
            session: Session::new(Arc::clone(engine), peer, conn, Instant::now()),
            token: None,
        }
    }

    /// The replies to `line`, whose first byte arrived just now.
    async fn send(&mut self, line: &str) -> Vec<String> {
        self.send_at(line, Instant::now()).await.0
    }

    /// The replies to `line`, whose first byte arrived at `arrived`, and the flow.
    async fn send_at(&mut self, line: &str, arrived: Instant) -> (Vec<String>, Flow) {
        self.item(Ok(line.to_owned()), arrived).await
    }

    async fn item(
        &mut self,
        item: Result<String, LineError>,
        arrived: Instant,
    ) -> (Vec<String>, Flow) {
        let mut out = Outbox::new();
        let flow = self.session.on_item(item, arrived, &mut out).await;
        let mut lines = out.lines();
        for line in &mut lines {
            // OK JOIN course div name roll seconds token
            if line.starts_with("OK JOIN ") && line.split(' ').count() == 8 {
                if let Some((rest, token)) = line.rsplit_once(' ') {
                    self.token = Some(token.to_owned());
                    *line = rest.to_owned();
                }
            }
        }
        (lines, flow)
    }

    /// The connection drops (not a QUIT): what the transport does as it ends.
    fn drop_connection(self) {
        self.session.end();
    }

    /// The announcements waiting for this client, as it would write them.
    fn heard(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        // Bounded: announcements already sent, a handful per test.
        for _ in 0..64 {
            let Some(m) = self.session.membership_mut() else {
                break;
            };
            let Ok(first) = m.receiver().try_recv() else {
                break;
            };
            if let Some(bytes) = m.gather(&first).lines {
                lines.extend(String::from_utf8_lossy(&bytes).lines().map(str::to_owned));
            }
        }
        lines
    }
}

fn word(lines: &[String], i: usize) -> String {
    lines
        .get(i)
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(start_paused = true)]
async fn join_takes_a_seat_and_the_whole_class_length_remains() {
    let (engine, _dir) = for_tests(config(), |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    assert_eq!(
        ann.send("JOIN CN_D1_Ann_1").await,
        ["OK JOIN CN D1 Ann 1 60"]
    );
    assert_eq!(engine.snapshot().joined(), 1);
    // The bare identifier, as the original client sent it, is a JOIN too.
    let mut bob = Client::new(&engine, tcp(2), 2);
    assert_eq!(bob.send("CN_D1_Bob_2_").await, ["OK JOIN CN D1 Bob 2 60"]);
}

#[tokio::test(start_paused = true)]
async fn present_is_early_until_the_class_length_is_served_then_marked_once() {
    let (engine, _dir) = for_tests(config(), |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    ann.send("JOIN CN_D1_Ann_1").await;
    tokio::time::advance(Duration::from_secs(45)).await;
    let early = ann.send("PRESENT").await;
    assert_eq!(early.len(), 1);
    assert!(early[0].starts_with("ERR EARLY 15 "), "{early:?}");
    tokio::time::advance(Duration::from_secs(15)).await;
    let marked = ann.send("PRESENT").await;
    assert_eq!(word(&marked, 0), "PRESENT", "{marked:?}");
    let id: StudentId = "CN_D1_Ann_1".parse().expect("id");
    let at = engine
        .store
        .marked_at(&id.class, &id.roll, Timestamp::now())
        .expect("on disk");
    assert_eq!(marked, [format!("OK PRESENT {at}")]);
    // Asking again answers the same mark; nothing new is written.
    assert_eq!(ann.send("PRESENT").await, marked);
    assert_eq!(engine.snapshot().marks_today, 1);
}

#[tokio::test(start_paused = true)]
async fn the_class_length_is_fixed_per_seat_at_its_join() {
    let (engine, _dir) = for_tests(config(), |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    assert_eq!(
        ann.send("JOIN CN_D1_Ann_1").await,
        ["OK JOIN CN D1 Ann 1 60"]
    );
    // A reload shortens the class: Ann was told 60 s, and 60 s it is.
    let (_, mut live) = config().split();
    live.class_length = Duration::from_secs(10);
    engine.set_live(live);
    tokio::time::advance(Duration::from_secs(10)).await;
    let early = ann.send("PRESENT").await;
    assert!(early[0].starts_with("ERR EARLY 50 "), "{early:?}");
    assert_eq!(
        ann.send("JOIN CN_D1_Ann_1").await,
        ["OK JOIN CN D1 Ann 1 50"]
    );
    // A student who joins after the reload gets the new length.
    let mut bob = Client::new(&engine, tcp(2), 2);
    assert_eq!(
        bob.send("JOIN CN_D1_Bob_2").await,
        ["OK JOIN CN D1 Bob 2 10"]
    );
    tokio::time::advance(Duration::from_secs(50)).await;
    assert_eq!(word(&ann.send("PRESENT").await, 0), "PRESENT");
}

#[tokio::test(start_paused = true)]
async fn a_join_is_timed_from_the_arrival_of_its_lines_first_byte() {
    // The seed client: `ID_` without a line ending, 5 s of its own count, then `ID_Present`.
    let config = Config {
        class_length: Duration::from_secs(5),
        ..Config::default()
    };
    let (engine, _dir) = for_tests(config, |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    let first_byte = Instant::now();
    tokio::time::advance(Duration::from_secs(5)).await;
    let (replies, flow) = ann
        .send_at("CS_A_Ann_1_CS_A_Ann_1_Present", first_byte)
        .await;
    assert_eq!(flow, Flow::Continue);
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0], "OK JOIN CS A Ann 1 0");
    assert_eq!(word(&replies, 1), "PRESENT");
}

#[tokio::test(start_paused = true)]
async fn the_seed_clients_line_is_early_when_the_class_is_longer_than_its_wait() {
    let (engine, _dir) = for_tests(config(), |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    let first_byte = Instant::now();
    tokio::time::advance(Duration::from_secs(5)).await;
    let (replies, _) = ann
        .send_at("CS_A_Ann_1_CS_A_Ann_1_Present", first_byte)
        .await;
    assert_eq!(replies[0], "OK JOIN CS A Ann 1 55");
    assert!(replies[1].starts_with("ERR EARLY 55 "), "{replies:?}");
}

#[tokio::test(start_paused = true)]
async fn id_present_on_a_seat_already_taken_by_that_student_is_one_reply() {
    let (engine, _dir) = for_tests(config(), |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    ann.send("JOIN CN_D1_Ann_1").await;
    tokio::time::advance(Duration::from_secs(60)).await;
    let replies = ann.send("CN_D1_Ann_1_Present").await;
    assert_eq!(replies.len(), 1, "no second OK JOIN: {replies:?}");
    assert_eq!(word(&replies, 0), "PRESENT");
}

#[tokio::test(start_paused = true)]
async fn a_roll_is_held_by_one_seat_and_freed_when_the_session_ends() {
    let (engine, _dir) = for_tests(config(), |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    ann.send("JOIN CN_D1_Ann_1").await;
    let mut again = Client::new(&engine, tcp(2), 2);
    let refused = again.send("JOIN CN_D1_Ann_1").await;
    assert!(refused[0].starts_with("ERR ALREADY "), "{refused:?}");
    drop(ann);
    assert_eq!(
        again.send("JOIN CN_D1_Ann_1").await,
        ["OK JOIN CN D1 Ann 1 60"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_seat_is_given_back_even_when_its_task_panics() {
    let (engine, _dir) = for_tests(config(), |l| l).await;
    let task_engine = Arc::clone(&engine);
    let (joined_tx, joined_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut ann = Client::new(&task_engine, tcp(1), 1);
        let replies = ann.send("JOIN CN_D1_Ann_1").await;
        let _ = joined_tx.send(replies);
        panic!("a bug in a connection task");
    });
    assert_eq!(joined_rx.await.expect("joined"), ["OK JOIN CN D1 Ann 1 60"]);
    assert!(task.await.expect_err("panicked").is_panic());
    let mut again = Client::new(&engine, tcp(2), 2);
    assert_eq!(
        again.send("JOIN CN_D1_Ann_1").await,
        ["OK JOIN CN D1 Ann 1 60"]
    );
}

#[tokio::test(start_paused = true)]
async fn classmates_hear_joins_without_addresses_unless_configured() {
    for (announce, expected) in [
        (false, "EVENT JOIN CN D1 Bob"),
        (true, "EVENT JOIN CN D1 Bob 127.0.0.2"),
    ] {
        let config = Config {
            announce_addresses: announce,
            ..config()
        };
        let (engine, _dir) = for_tests(config, |l| l).await;
        let mut events = engine.subscribe();
        let mut ann = Client::new(&engine, tcp(1), 1);
        ann.send("JOIN CN_D1_Ann_1").await;
        let mut bob = Client::new(&engine, tcp(2), 2);
        bob.send("JOIN CN_D1_Bob_2").await;
        assert_eq!(ann.heard(), [expected]);
        assert!(bob.heard().is_empty(), "not told of itself");
        // Observers always see the address.
        let _ann_joined = events.recv().await.expect("event");
        match events.recv().await.expect("event") {
            ClassEvent::Joined {
                id,
                addr,
                transport,
                seconds_left,
                marked_at,
                ..
            } => {
                assert_eq!(id, "CN_D1_Bob_2".parse().expect("id"));
                assert_eq!(addr, Some([127, 0, 0, 2].into()));
                assert_eq!(transport, attendance_protocol::Transport::Tcp);
                assert_eq!((seconds_left, marked_at), (60, None));
            }
            other => panic!("expected Bob's join, got {other:?}"),
        }
        drop(bob);
        assert_eq!(ann.heard(), ["EVENT LEAVE Bob"]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_kiosk_takes_the_next_student_only_once_the_last_is_marked() {
    let (engine, _dir) = for_tests(config(), |l| l).await;
    let mut kiosk = Client::new(&engine, tcp(1), 1);
    kiosk.send("JOIN CN_D1_Ann_1").await;
    let refused = kiosk.send("JOIN CN_D1_Bob_2").await;
    assert!(refused[0].starts_with("ERR JOINED "), "{refused:?}");
    tokio::time::advance(Duration::from_secs(60)).await;
    kiosk.send("PRESENT").await;
    assert_eq!(
        kiosk.send("JOIN CN_D1_Bob_2").await,
        ["OK JOIN CN D1 Bob 2 60"]
    );
    // Ann's roll is free again; Bob's is held.
    let mut other = Client::new(&engine, tcp(2), 2);
    assert_eq!(
        other.send("JOIN CN_D1_Ann_1").await,
        ["OK JOIN CN D1 Ann 1 0"],
        "Ann is marked today: nothing left to serve"
    );
}

#[tokio::test(start_paused = true)]
async fn a_student_marked_earlier_today_is_answered_at_once_with_the_first_mark() {
    let (engine, _dir) = for_tests(config(), |l| l).await;
    let mut first = Client::new(&engine, tcp(1), 1);
    first.send("JOIN CN_D1_Ann_1").await;
    tokio::time::advance(Duration::from_secs(60)).await;
    let marked = first.send("PRESENT").await;
    drop(first);
    let mut again = Client::new(&engine, tcp(2), 2);
    assert_eq!(
        again.send("JOIN CN_D1_Ann_1").await,
        ["OK JOIN CN D1 Ann 1 0"]
    );
    assert_eq!(again.send("PRESENT").await, marked);
    assert_eq!(engine.snapshot().marks_today, 1);
}

#[tokio::test(start_paused = true)]
async fn chat_goes_to_the_class_within_its_rate() {
    let config = Config {
        chat_rate: 1,
        chat_burst: 2,
        ..config()
    };
    let (engine, _dir) = for_tests(config, |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    let not_joined = ann.send("SAY hi").await;
    assert!(
        not_joined[0].starts_with("ERR NOTJOINED "),
        "{not_joined:?}"
    );
    ann.send("JOIN CN_D1_Ann_1").await;
    let mut bob = Client::new(&engine, tcp(2), 2);
    bob.send("JOIN CN_D1_Bob_2").await;
    ann.heard();
    assert_eq!(bob.send("SAY hello all").await, ["OK SAY"]);
    assert_eq!(bob.send("SAY again").await, ["OK SAY"]);
    let limited = bob.send("SAY third").await;
    assert!(limited[0].starts_with("ERR RATE "), "{limited:?}");
    assert_eq!(
        ann.heard(),
        ["EVENT SAY Bob hello all", "EVENT SAY Bob again"]
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(bob.send("SAY later").await, ["OK SAY"]);
}

#[tokio::test(start_paused = true)]
async fn the_queries_answer_from_the_servers_clock_and_counts() {
    let (engine, _dir) = for_tests(config(), |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    tokio::time::advance(Duration::from_secs(7)).await;
    assert_eq!(ann.send("ELAPSED").await, ["OK ELAPSED 7"]);
    assert_eq!(word(&ann.send("TIME").await, 0), "TIME");
    assert_eq!(ann.send("PING abc").await, ["OK PONG abc"]);
    assert_eq!(ann.send("PING").await, ["OK PONG"]);
    let _permit = engine.connections.try_acquire().expect("permit");
    assert_eq!(ann.send("CLIENTS").await, ["OK CLIENTS 1"]);
    assert!(ann.send("HELP").await[0].starts_with("OK HELP JOIN "));
    assert_eq!(
        ann.send("").await,
        Vec::<String>::new(),
        "empty lines are ignored"
    );
    let (bye, flow) = ann.send_at("QUIT", Instant::now()).await;
    assert_eq!((bye, flow), (vec!["OK BYE".to_owned()], Flow::Close));
}

#[tokio::test(start_paused = true)]
async fn errors_in_a_row_close_the_connection_and_a_good_reply_resets_the_count() {
    let config = Config {
        max_errors: 3,
        ..config()
    };
    let (engine, _dir) = for_tests(config, |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    let now = Instant::now();
    assert_eq!(ann.send_at("BOGUS", now).await.1, Flow::Continue);
    assert_eq!(ann.send_at("BOGUS", now).await.1, Flow::Continue);
    ann.send("PING").await;
    assert_eq!(ann.send_at("BOGUS", now).await.1, Flow::Continue);
    let (too_long, _) = ann.item(Err(LineError::TooLong(10)), now).await;
    assert!(too_long[0].starts_with("ERR TOOLONG "), "{too_long:?}");
    let (closing, flow) = ann.item(Err(LineError::Encoding), now).await;
    assert!(closing[0].starts_with("ERR ENCODING "), "{closing:?}");
    assert!(closing[1].starts_with("ERR TOOMANYERRORS "), "{closing:?}");
    assert_eq!(flow, Flow::Close);
}

#[tokio::test(start_paused = true)]
async fn early_presents_do_not_count_as_errors() {
    let config = Config {
        max_errors: 2,
        ..config()
    };
    let (engine, _dir) = for_tests(config, |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    ann.send("JOIN CN_D1_Ann_1").await;
    for _ in 0..5 {
        let (early, flow) = ann.send_at("PRESENT", Instant::now()).await;
        assert!(early[0].starts_with("ERR EARLY "));
        assert_eq!(flow, Flow::Continue);
    }
}

#[tokio::test(start_paused = true)]
async fn a_flood_waits_its_turn_past_the_burst() {
    let config = Config {
        rate_limit: 10,
        rate_burst: 5,
        ..config()
    };
    let (engine, _dir) = for_tests(config, |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    let start = Instant::now();
    for _ in 0..5 {
        ann.send("PING").await;
    }
    assert_eq!(Instant::now(), start, "the burst passes at once");
    for _ in 0..10 {
        ann.send("PING").await;
    }
    let waited = Instant::now() - start;
    assert!(
        waited >= Duration::from_millis(900) && waited <= Duration::from_millis(1100),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_login_timeout_applies_to_students_until_they_join() {
    let config = Config {
        login_timeout: Duration::from_secs(30),
        ..config()
    };
    let (engine, _dir) = for_tests(config, |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    let deadline = ann.session.login_deadline().expect("a deadline");
    assert_eq!(deadline, Instant::now() + Duration::from_secs(30));
    let mut out = Outbox::new();
    assert_eq!(ann.session.on_login_timeout(&mut out), Flow::Close);
    assert!(out.lines()[0].starts_with("ERR TIMEOUT no JOIN within 30 seconds"));
    ann.send("JOIN CN_D1_Ann_1").await;
    assert_eq!(ann.session.login_deadline(), None);
    let admin = Client::new(&engine, Peer::Admin, u64::MAX);
    assert_eq!(admin.session.login_deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn admin_reports_are_answered_only_on_the_admin_socket() {
    let (engine, _dir) = for_tests(config(), |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    for line in ["STATUS", "CLASSES", "WHO"] {
        let denied = ann.send(line).await;
        assert!(denied[0].starts_with("ERR DENIED "), "{line}: {denied:?}");
    }
    ann.send("JOIN CN_D1_Ann_1").await;
    let mut admin = Client::new(&engine, Peer::Admin, u64::MAX);
    let refused = admin.send("JOIN CN_D1_Adm_9").await;
    assert!(refused[0].starts_with("ERR DENIED "), "{refused:?}");
    let status = admin.send("STATUS").await;
    assert!(status[0].starts_with("OK STATUS "), "{status:?}");
    assert!(status[0].contains("joined=1"), "{status:?}");
    assert_eq!(admin.send("CLASSES").await, ["OK CLASSES 1 0 CN/D1=1"]);
    assert_eq!(
        admin.send("WHO CN D1").await,
        ["OK WHO 1 0 CN/D1/Ann/1/60/tcp"]
    );
    assert!(admin.send("HELP").await[0].starts_with("OK HELP STATUS "));
}

#[tokio::test(start_paused = true)]
async fn shutdown_needs_the_token_on_the_network_and_nothing_on_the_admin_socket() {
    let (engine, _dir) = for_tests(config(), |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    assert!(ann.send("SHUTDOWN").await[0].starts_with("ERR DENIED "));
    assert!(ann.send("SHUTDOWN wrong").await[0].starts_with("ERR DENIED "));
    assert!(!engine.shutdown.is_cancelled());
    assert_eq!(ann.send("SHUTDOWN secret").await, ["OK SHUTDOWN"]);
    assert!(engine.shutdown.is_cancelled());

    let (engine, _dir) = for_tests(config(), |l| l).await;
    let mut admin = Client::new(&engine, Peer::Admin, u64::MAX);
    assert_eq!(admin.send("SHUTDOWN").await, ["OK SHUTDOWN"]);
    assert!(engine.shutdown.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn a_mark_that_cannot_be_stored_is_refused_and_can_be_asked_again() {
    #[derive(Debug)]
    struct Failing;
    impl crate::store::LogFile for Failing {
        fn append(&mut self, _: &[u8]) -> std::io::Result<()> {
            Err(std::io::Error::other("disk full"))
        }
        fn sync_data(&mut self) -> std::io::Result<()> {
            Ok(())
        }
        fn sync_all(&mut self) -> std::io::Result<()> {
            Ok(())
        }
        fn truncate(&mut self, _: u64) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (engine, _dir) = for_tests(config(), |l| l.wrap_file(|_| Box::new(Failing))).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    ann.send("JOIN CN_D1_Ann_1").await;
    tokio::time::advance(Duration::from_secs(60)).await;
    for _ in 0..3 {
        let (refused, flow) = ann.send_at("PRESENT", Instant::now()).await;
        assert!(refused[0].starts_with("ERR STORAGE "), "{refused:?}");
        assert_eq!(flow, Flow::Continue, "not the student's fault");
    }
    assert_eq!(engine.snapshot().marks_today, 0);
}

#[tokio::test(start_paused = true)]
async fn observers_see_chat_and_marks_with_who_said_and_when() {
    let (engine, _dir) = for_tests(config(), |l| l).await;
    let mut events = engine.subscribe();
    let mut ann = Client::new(&engine, tcp(1), 1);
    ann.send("JOIN CN_D1_Ann_1").await;
    ann.send("SAY hello class").await;
    tokio::time::advance(Duration::from_secs(60)).await;
    ann.send("PRESENT").await;
    let ann_id: attendance_protocol::StudentId = "CN_D1_Ann_1".parse().expect("id");
    assert!(matches!(events.recv().await, Ok(ClassEvent::Joined { .. })));
    assert_eq!(
        events.recv().await.expect("event"),
        ClassEvent::Said {
            id: ann_id.clone(),
            text: attendance_protocol::Text::lossy("hello class"),
        }
    );
    match events.recv().await.expect("event") {
        ClassEvent::Marked { id, .. } => assert_eq!(id, ann_id),
        other => panic!("expected the mark, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn history_shows_the_join_the_time_served_and_the_mark() {
    let (engine, _dir) = for_tests(config(), |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    let refused = ann.send("HISTORY").await;
    assert!(refused[0].starts_with("ERR NOTJOINED "), "{refused:?}");
    ann.send("JOIN CN_D1_Ann_1").await;
    tokio::time::advance(Duration::from_secs(20)).await;
    let running = ann.send("HISTORY").await;
    assert_eq!(running.len(), 1);
    assert!(
        running[0].starts_with("OK HISTORY status=pending served=20 required=60 late=0 join@"),
        "{running:?}"
    );
    tokio::time::advance(Duration::from_secs(40)).await;
    let marked = ann.send("PRESENT").await;
    let at = word(&marked, 0);
    assert_eq!(at, "PRESENT", "{marked:?}");
    let done = ann.send("HISTORY").await;
    assert!(
        done[0].starts_with("OK HISTORY status=Present served=60 required=60 late=0 join@"),
        "{done:?}"
    );
    let mark_at = marked[0].rsplit(' ').next().unwrap_or("");
    assert!(done[0].ends_with(&format!(" mark@{mark_at}")), "{done:?}");
}

#[tokio::test(start_paused = true)]
async fn a_resume_token_nobody_holds_is_refused_and_the_connection_goes_on() {
    let (engine, _dir) = for_tests(config(), |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    let refused = ann.send("RESUME 0123456789abcdef").await;
    assert!(refused[0].starts_with("ERR BADTOKEN "), "{refused:?}");
    let usage = ann.send("RESUME").await;
    assert!(usage[0].starts_with("ERR BADFORMAT "), "{usage:?}");
    assert_eq!(
        ann.send("JOIN CN_D1_Ann_1 123456").await,
        ["OK JOIN CN D1 Ann 1 60"]
    );
}

fn grace_config(grace: Duration) -> Config {
    Config {
        resume_grace: grace,
        ..config()
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_seat_resumes_with_the_time_served_and_the_class_hears_nothing() {
    let (engine, _dir) = for_tests(grace_config(Duration::from_secs(300)), |l| l).await;
    let mut bob = Client::new(&engine, tcp(2), 2);
    bob.send("JOIN CN_D1_Bob_2").await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    assert_eq!(
        ann.send("JOIN CN_D1_Ann_1").await,
        ["OK JOIN CN D1 Ann 1 60"]
    );
    let token = ann.token.clone().expect("a resume token");
    assert_eq!(token.len(), 32, "{token}");
    assert_eq!(bob.heard(), ["EVENT JOIN CN D1 Ann"]);
    tokio::time::advance(Duration::from_secs(20)).await;
    ann.drop_connection();
    // Away 30 s: the time away does not count.
    tokio::time::advance(Duration::from_secs(30)).await;
    let mut other = Client::new(&engine, tcp(9), 3);
    let refused = other.send("JOIN CN_D1_Ann_1").await;
    assert!(refused[0].starts_with("ERR ALREADY "), "{refused:?}");
    assert!(refused[0].contains("RESUME"), "{refused:?}");
    let mut back = Client::new(&engine, tcp(1), 4);
    assert_eq!(
        back.send(&format!("RESUME {token}")).await,
        [format!("OK RESUME CN D1 Ann 1 40 {token}")]
    );
    assert!(bob.heard().is_empty(), "no LEAVE or JOIN for a resume");
    let history = back.send("HISTORY").await;
    let words: Vec<&str> = history[0].split(' ').collect();
    let kinds: Vec<&str> = words
        .iter()
        .filter_map(|w| w.split_once('@').map(|(k, _)| k))
        .collect();
    assert_eq!(kinds, ["join", "drop", "resume"], "{history:?}");
    assert!(history[0].contains(" served=20 "), "{history:?}");
    tokio::time::advance(Duration::from_secs(39)).await;
    let early = back.send("PRESENT").await;
    assert!(early[0].starts_with("ERR EARLY 1 "), "{early:?}");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(word(&back.send("PRESENT").await, 0), "PRESENT");
    assert_eq!(bob.heard(), ["EVENT PRESENT Ann"]);
}

#[tokio::test(start_paused = true)]
async fn a_resume_takes_over_a_seat_still_held_and_the_old_connection_is_replaced() {
    let (engine, _dir) = for_tests(grace_config(Duration::from_secs(300)), |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    ann.send("JOIN CN_D1_Ann_1").await;
    let token = ann.token.clone().expect("a resume token");
    tokio::time::advance(Duration::from_secs(10)).await;
    let mut phone = Client::new(&engine, tcp(7), 2);
    // Without the token the roll stays held.
    let refused = phone.send("JOIN CN_D1_Ann_1").await;
    assert!(refused[0].starts_with("ERR ALREADY "), "{refused:?}");
    assert_eq!(
        phone.send(&format!("RESUME {token}")).await,
        [format!("OK RESUME CN D1 Ann 1 50 {token}")]
    );
    // The old connection learns it through its ring, and is closed on its next command too.
    let m = ann
        .session
        .membership_mut()
        .expect("still has its membership");
    let first = m.receiver().try_recv().expect("the takeover");
    assert!(m.gather(&first).replaced);
    let (lines, flow) = ann.send_at("PRESENT", Instant::now()).await;
    assert_eq!(lines, ["EVENT REPLACED"]);
    assert_eq!(flow, Flow::Close);
    // Its end gives nothing back: the seat is the phone's.
    ann.drop_connection();
    let refused = Client::new(&engine, tcp(3), 3)
        .send("JOIN CN_D1_Ann_1")
        .await;
    assert!(refused[0].starts_with("ERR ALREADY "), "{refused:?}");
    tokio::time::advance(Duration::from_secs(50)).await;
    assert_eq!(word(&phone.send("PRESENT").await, 0), "PRESENT");
}

#[tokio::test(start_paused = true)]
async fn after_the_grace_the_class_hears_the_leave_and_a_new_join_continues_the_time_served() {
    let (engine, _dir) = for_tests(grace_config(Duration::from_secs(120)), |l| l).await;
    let mut bob = Client::new(&engine, tcp(2), 2);
    bob.send("JOIN CN_D1_Bob_2").await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    ann.send("JOIN CN_D1_Ann_1").await;
    let token = ann.token.clone().expect("a resume token");
    bob.heard();
    tokio::time::advance(Duration::from_secs(25)).await;
    ann.drop_connection();
    tokio::time::advance(Duration::from_secs(119)).await;
    assert!(bob.heard().is_empty(), "still within the grace");
    tokio::time::advance(Duration::from_secs(2)).await;
    // The grace's timer task runs.
    tokio::task::yield_now().await;
    assert_eq!(bob.heard(), ["EVENT LEAVE Ann"]);
    let mut late = Client::new(&engine, tcp(1), 3);
    let refused = late.send(&format!("RESUME {token}")).await;
    assert!(refused[0].starts_with("ERR BADTOKEN "), "{refused:?}");
    // 25 s served before the drop: 35 s remain.
    assert_eq!(
        late.send("JOIN CN_D1_Ann_1").await,
        ["OK JOIN CN D1 Ann 1 35"]
    );
    assert_ne!(late.token.as_deref(), Some(token.as_str()), "a fresh token");
}

#[tokio::test(start_paused = true)]
async fn quit_or_a_zero_grace_gives_the_seat_back_at_once() {
    let (engine, _dir) = for_tests(grace_config(Duration::from_secs(300)), |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    ann.send("JOIN CN_D1_Ann_1").await;
    assert_eq!(ann.send("QUIT").await, ["OK BYE"]);
    ann.drop_connection();
    let mut again = Client::new(&engine, tcp(1), 2);
    assert_eq!(
        again.send("JOIN CN_D1_Ann_1").await,
        ["OK JOIN CN D1 Ann 1 60"]
    );

    let (engine, _dir) = for_tests(grace_config(Duration::ZERO), |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    ann.send("JOIN CN_D1_Ann_1").await;
    ann.drop_connection();
    let mut again = Client::new(&engine, tcp(1), 2);
    assert_eq!(
        again.send("JOIN CN_D1_Ann_1").await,
        ["OK JOIN CN D1 Ann 1 60"]
    );
}

/// A `[[class]]` for CN_D1 that started `minutes_ago` minutes ago (UTC), every day, for an
/// hour; the other rules as given.
fn scheduled_class(minutes_ago: i64, late_after: Duration) -> crate::config::ClassConfig {
    let start = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .checked_sub(jiff::Span::new().minutes(minutes_ago))
        .expect("start")
        .time();
    crate::config::ClassConfig {
        course: "CN".into(),
        division: "D1".into(),
        weekdays: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .map(String::from)
            .to_vec(),
        start: Some(start.strftime("%H:%M:%S").to_string()),
        length: Duration::from_secs(3600),
        required: Some(Duration::from_secs(60)),
        late_after,
        grace: None,
        opens_before: Duration::from_secs(600),
        roster: None,
        code: false,
        subnet: Vec::new(),
    }
}

fn with_classes(classes: Vec<crate::config::ClassConfig>) -> Config {
    Config {
        timezone: Some("UTC".into()),
        class: classes,
        ..config()
    }
}

#[tokio::test(start_paused = true)]
async fn a_late_first_join_is_recorded_late_with_its_minutes() {
    let late = scheduled_class(25, Duration::from_secs(600));
    let (engine, _dir) = for_tests(with_classes(vec![late]), |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    // required 1 minute, well within the 35 left.
    assert_eq!(
        ann.send("JOIN CN_D1_Ann_1").await,
        ["OK JOIN CN D1 Ann 1 60"]
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    let marked = ann.send("PRESENT").await;
    assert!(
        marked[0].starts_with("OK PRESENT ") && marked[0].ends_with(" Late 25"),
        "{marked:?}"
    );
    // Another class is ad hoc, as before.
    let mut bob = Client::new(&engine, tcp(2), 2);
    assert_eq!(
        bob.send("JOIN CN_D2_Bob_2").await,
        ["OK JOIN CN D2 Bob 2 60"]
    );
}

#[tokio::test(start_paused = true)]
async fn an_on_time_join_is_present_and_served_time_starts_at_the_start() {
    // Started 2 minutes ago, late after 10: on time.
    let (engine, _dir) = for_tests(
        with_classes(vec![scheduled_class(2, Duration::from_secs(600))]),
        |l| l,
    )
    .await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    ann.send("JOIN CN_D1_Ann_1").await;
    tokio::time::advance(Duration::from_secs(60)).await;
    let marked = ann.send("PRESENT").await;
    assert!(marked[0].starts_with("OK PRESENT "), "{marked:?}");
    assert_eq!(
        marked[0].split(' ').count(),
        3,
        "no status word for Present: {marked:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_class_outside_its_hours_is_closed_with_the_next_opening() {
    // Starts in 30 minutes, opens 10 minutes before: closed for 20 more minutes.
    let (engine, _dir) = for_tests(
        with_classes(vec![scheduled_class(-30, Duration::ZERO)]),
        |l| l,
    )
    .await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    let closed = ann.send("JOIN CN_D1_Ann_1").await;
    assert!(closed[0].starts_with("ERR CLOSED "), "{closed:?}");
    let next: Timestamp = closed[0]
        .split(' ')
        .nth(2)
        .expect("next opening")
        .parse()
        .expect("RFC 3339");
    let in_secs = (next.unix_millis() - Timestamp::now().unix_millis()) / 1000;
    assert!(
        (1150..=1210).contains(&in_secs),
        "opens in {in_secs} s: {closed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_class_with_a_code_a_roster_and_subnets_refuses_what_does_not_match() {
    let dir = tempfile::tempdir().expect("dir");
    let roster = dir.path().join("roster.csv");
    std::fs::write(&roster, "name,roll\nAnn,1\n").expect("roster");
    let class = crate::config::ClassConfig {
        start: None,
        roster: Some(roster),
        code: true,
        subnet: vec!["127.0.0.0/30".into()],
        ..scheduled_class(0, Duration::ZERO)
    };
    let (engine, state) = for_tests(with_classes(vec![class]), |l| l).await;
    let secret = crate::attendance::code::load_or_create_secret(state.path(), "CN", "D1")
        .expect("the daemon's secret");
    let code = || {
        let now = jiff::Timestamp::now().as_second();
        crate::attendance::code::format_code(crate::attendance::code::code_at(&secret, now))
    };
    let mut far = Client::new(&engine, tcp(9), 1);
    let refused = far.send(&format!("JOIN CN_D1_Ann_1 {}", code())).await;
    assert!(refused[0].starts_with("ERR FORBIDDEN "), "{refused:?}");
    let mut ann = Client::new(&engine, tcp(1), 2);
    let refused = ann.send("JOIN CN_D1_Zed_9").await;
    assert!(refused[0].starts_with("ERR NOTENROLLED "), "{refused:?}");
    let refused = ann.send("JOIN CN_D1_Bob_1").await;
    assert!(refused[0].contains("another name"), "{refused:?}");
    let refused = ann.send("JOIN CN_D1_Ann_1").await;
    assert!(refused[0].starts_with("ERR BADCODE "), "{refused:?}");
    let refused = ann.send("JOIN CN_D1_Ann_1 000000").await;
    let wrong = code() != "000000";
    assert!(
        !wrong || refused[0].starts_with("ERR BADCODE "),
        "{refused:?}"
    );
    let joined = ann.send(&format!("JOIN CN_D1_Ann_1 {}", code())).await;
    assert_eq!(joined, ["OK JOIN CN D1 Ann 1 60"]);
}

#[tokio::test(start_paused = true)]
async fn the_close_of_a_session_records_late_left_and_absent_and_tells_each_student() {
    let dir = tempfile::tempdir().expect("dir");
    let roster = dir.path().join("roster.csv");
    std::fs::write(&roster, "name,roll\nAnn,1\nBob,2\nZed,9\n").expect("roster");
    let class = crate::config::ClassConfig {
        roster: Some(roster),
        ..scheduled_class(25, Duration::from_secs(600))
    };
    let (engine, _state) = for_tests(with_classes(vec![class]), |l| l).await;
    let mut ann = Client::new(&engine, tcp(1), 1);
    ann.send("JOIN CN_D1_Ann_1").await;
    let mut bob = Client::new(&engine, tcp(2), 2);
    bob.send("JOIN CN_D1_Bob_2").await;
    tokio::time::advance(Duration::from_secs(30)).await;
    bob.send("QUIT").await;
    bob.drop_connection();
    tokio::time::advance(Duration::from_secs(90)).await;
    ann.heard();
    let id: StudentId = "CN_D1_X_0".parse().expect("id");
    let start = crate::attendance::rules::protocol_time(
        jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_mins(25))
            .expect("start"),
    );
    let closed = crate::attendance::closer::close_session(&engine, &id.class, start).await;
    assert_eq!(closed.recorded, 2, "{closed:?}");
    assert_eq!(closed.absent, 1, "{closed:?}");
    assert_eq!(engine.snapshot().marks_today, 3);
    // Ann served 2 minutes of the 1 required, though she never sent PRESENT: Late 25.
    let m = ann.session.membership_mut().expect("member");
    let first = m.receiver().try_recv().expect("the close");
    let g = m.gather(&first);
    assert!(g.ended);
    let line = String::from_utf8(g.lines.expect("line").to_vec()).expect("utf-8");
    assert_eq!(line, "EVENT ENDED Late 2\n");
    // The seats are free, and the class is gone from the hub.
    assert!(engine.hub.members(None).is_empty());
}
