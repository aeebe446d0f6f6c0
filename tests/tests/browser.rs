//! The web port in a real browser: Debian's Chromium, driven by playwright-core through the
//! scripts of `tests/browser/`, against the real daemon on 127.0.0.1:0. Each scenario's
//! screenshots are in `target/browser-artefacts/<test>/`.
//!
//! Needs `/usr/bin/chromium` and `tests/browser/node_modules`: `cargo xtask test` installs
//! both. Without them these tests fail, saying so.

use anyhow::Result;
use attendance_tests::browser::Scenario;
use attendance_tests::proxy::CutProxy;
use attendance_tests::{Daemon, read_rows};

fn base(d: &Daemon) -> String {
    format!("http://{}", d.web())
}

/// The infrastructure itself: Chromium reads `/healthz` of this very daemon (one student
/// joined over TCP, so a stale or foreign server would show), and no request leaves the
/// machine — a check `smoke.mjs` first proves able to fail.
#[tokio::test]
async fn smoke_healthz_in_chromium_and_nothing_leaves_the_machine() -> Result<()> {
    let d = Daemon::start(&[])?;
    let mut student = d.connect().await?;
    assert!(
        student
            .cmd("JOIN Web_D1_Ann_1")
            .await?
            .starts_with("OK JOIN")
    );
    let result = Scenario::new("smoke", "smoke.mjs", &base(&d))?
        .arg("expect-joined", "1")
        .run()?;
    assert_eq!(result["health"]["status"], "ok", "{result}");
    assert_eq!(result["health"]["joined"], 1, "{result}");
    Ok(())
}

/// A student checks in on the student page: a mistyped ID is refused on the page, the right
/// one joins a 2 s class, and the mark the page shows is exactly the one row of the CSV.
#[tokio::test]
async fn student_checkin_on_the_page_is_the_row_in_the_csv() -> Result<()> {
    let d = Daemon::start(&["--class-length", "2s"])?;
    let result = Scenario::new("student_checkin", "student_checkin.mjs", &base(&d))?
        .arg("identity", "ComputerNetworks_Div1_JayPatel_18BCP043")
        .arg("bad-identity", "nounderscores")
        .run()?;
    assert!(
        !result["refusal"].as_str().unwrap_or_default().is_empty(),
        "{result}"
    );
    let marked_at = result["marked_at"].as_str().unwrap_or_default();
    let rows = read_rows(&d.csv_path()).await?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(
        (
            row.course.as_str(),
            row.division.as_str(),
            row.name.as_str(),
            row.roll.as_str(),
            row.status.as_str()
        ),
        (
            "ComputerNetworks",
            "Div1",
            "JayPatel",
            "18BCP043",
            "Present"
        ),
        "{row:?}"
    );
    assert_eq!(row.marked_at, marked_at, "the page shows the time on disk");
    assert_eq!(row.client_addr, "127.0.0.1", "{row:?}");
    Ok(())
}

/// The student page on a phone: no sideways scrolling before joining nor in the class view
/// once a classmate has joined and sent a long unbroken word, and every input labelled.
#[tokio::test]
async fn phone_viewport_has_no_horizontal_scroll_and_labelled_inputs() -> Result<()> {
    // A class long enough to stay in the class view for the whole scenario.
    let d = Daemon::start(&["--class-length", "5m"])?;
    let word = "pneumonoultramicroscopicsilicovolcanoconiosis".repeat(2);
    let mut page = Scenario::new("phone_viewport", "phone_viewport.mjs", &base(&d))?
        .arg("identity", "ComputerNetworks_Div1_JayPatel_18BCP043")
        .arg("expect-event", &word)
        .start()?;
    page.progress("joined")?;
    let mut classmate = d.connect().await?;
    let joined = classmate
        .cmd("JOIN ComputerNetworks_Div1_Classmate_18BCP044")
        .await?;
    assert!(joined.starts_with("OK JOIN"), "{joined}");
    assert_eq!(classmate.cmd(&format!("SAY {word}")).await?, "OK SAY");
    let result = page.finish()?;
    let events = result["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.contains("Classmate"))),
        "the classmate's arrival or chat is among the events: {result}"
    );
    for state in ["before", "joined"] {
        let w = &result[state];
        assert!(
            w["scrollWidth"].as_u64() <= w["innerWidth"].as_u64() && w["innerWidth"] == 375,
            "{state}: {w}"
        );
    }
    Ok(())
}

/// The teacher dashboard: sign-in through the redirect, three netcat-like TCP students on the
/// class page within 1 s of their JOIN, a row turning Present when the mark is on disk, and a
/// network drop (a proxy between browser and daemon is cut) that the page shows and survives
/// without losing a row: the browser reconnects by itself with Last-Event-ID and is sent just
/// what it missed.
#[tokio::test]
async fn dashboard_shows_arrivals_at_once_marks_and_survives_a_dropped_stream() -> Result<()> {
    let d = Daemon::start(&["--class-length", "2s"])?;
    let proxy = CutProxy::start(d.web())?;
    let url = format!("http://{}", proxy.addr);
    let rolls = ["18BCP041", "18BCP042", "18BCP043"];
    let late = ["18BCP044", "18BCP045"];
    let mut page = Scenario::new("dashboard", "dashboard.mjs", &url)?
        .arg("token", &d.token()?)
        .arg("course", "ComputerNetworks")
        .arg("division", "Div1")
        .arg("rolls", &rolls.join(","))
        .arg("present", rolls[0])
        .arg("late", &late.join(","))
        .start()?;
    page.progress("ready")?;

    let mut joined_at = Vec::new();
    let mut students = Vec::new();
    for (name, roll) in ["Ann", "Bob", "Cat"].iter().zip(rolls) {
        let mut s = d.connect().await?;
        let sent = now_ms();
        let reply = s
            .cmd(&format!("JOIN ComputerNetworks_Div1_{name}_{roll}"))
            .await?;
        assert!(reply.starts_with("OK JOIN"), "{reply}");
        joined_at.push(sent);
        students.push(s);
    }
    let rows = page.progress("rows")?;
    for (roll, sent) in rolls.iter().zip(&joined_at) {
        let shown = rows["appeared"][roll].as_i64().unwrap_or(i64::MAX);
        assert!(
            shown - sent <= 1000,
            "{roll}: shown {} ms after its JOIN",
            shown - sent
        );
    }

    // Ann stays the class length and is marked; her row turns Present.
    let mut marked = students[0].cmd("PRESENT").await?;
    if marked.starts_with("ERR EARLY") {
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        marked = students[0].cmd("PRESENT").await?;
    }
    assert!(marked.starts_with("OK PRESENT"), "{marked}");
    page.progress("present")?;

    // The network drops; two students arrive and one leaves while the page cannot hear.
    proxy.cut();
    for (name, roll) in ["Dan", "Eve"].iter().zip(late) {
        let mut s = d.connect().await?;
        let reply = s
            .cmd(&format!("JOIN ComputerNetworks_Div1_{name}_{roll}"))
            .await?;
        assert!(reply.starts_with("OK JOIN"), "{reply}");
        students.push(s);
    }
    assert_eq!(students[1].cmd("QUIT").await?, "OK BYE");
    proxy.heal();

    let result = page.finish()?;
    assert_eq!(
        result["stream"]["snapshots"], 1,
        "a replay, not a second snapshot: {result}"
    );
    assert!(result["stream"]["opened"].as_u64() >= Some(2), "{result}");
    let rows = result["rows"].as_array().cloned().unwrap_or_default();
    let status = |roll: &str| {
        rows.iter()
            .find(|r| r["roll"] == roll)
            .and_then(|r| r["status"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(rows.len(), 5, "{result}");
    assert_eq!(status(rolls[0]).as_deref(), Some("present"));
    assert_eq!(
        status(rolls[1]).as_deref(),
        Some("left"),
        "Bob's leave during the drop"
    );
    assert_eq!(status(late[1]).as_deref(), Some("seated"));
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The student page through a network drop (a cut proxy) and a shutdown: the drop is shown at
/// once, the page reconnects and checks the student in again by itself (the class hears the
/// student arrive again), and the shutdown is shown as a shutdown.
#[tokio::test]
async fn the_student_page_shows_a_drop_rejoins_by_itself_and_shows_a_shutdown() -> Result<()> {
    let mut d = Daemon::start(&["--class-length", "10m"])?;
    let proxy = CutProxy::start(d.web())?;
    let mut classmate = d.connect().await?;
    assert!(
        classmate
            .cmd("JOIN ComputerNetworks_Div1_Classmate_18BCP044")
            .await?
            .starts_with("OK JOIN")
    );
    let mut page = Scenario::new(
        "student_drop",
        "student_drop.mjs",
        &format!("http://{}", proxy.addr),
    )?
    .start()?;
    page.progress("joined")?;
    assert!(classmate.event("EVENT JOIN").await?.contains("JayPatel"));
    proxy.cut();
    page.progress("lost")?;
    // The server notices the WebSocket is gone and tells the class.
    assert!(classmate.event("EVENT LEAVE").await?.contains("JayPatel"));
    proxy.heal();
    page.progress("rejoined")?;
    assert!(
        classmate.event("EVENT JOIN").await?.contains("JayPatel"),
        "the page checked in again by itself"
    );
    d.sigterm()?;
    let result = page.finish()?;
    assert!(d.wait()?.success());
    let states: Vec<&str> = result["states"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    assert!(
        states.ends_with(&["shutdown"]) && states.contains(&"lost"),
        "{result}"
    );
    assert!(
        result["lost_text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Connection lost")),
        "{result}"
    );
    Ok(())
}

/// The events `client` has heard until the first one starting with `until` (included).
async fn events_until(client: &mut attendance_tests::Client, until: &str) -> Result<Vec<String>> {
    let mut heard: Vec<String> = client.events.drain(..).collect();
    while !heard.last().is_some_and(|e| e.starts_with(until)) {
        heard.push(client.recv_raw().await?);
    }
    Ok(heard)
}

/// Resume after a drop on the student page: a real network drop (the proxy between browser and
/// daemon is cut) 2 s into an 8 s class, 3 s away. The page shows the drop and its attempts,
/// reconnects by itself, takes the seat back with RESUME (the class hears neither a leave nor
/// an arrival), counts down what the server says is left — about 6 s: not a fresh 8 s class,
/// not its own clock's 3 s — and ends marked present, the one row of the CSV; its "Your record
/// today" shows the server's timeline: checked in, connection lost, back, record written.
#[tokio::test]
async fn the_student_page_resumes_its_seat_after_a_drop_and_is_marked_present() -> Result<()> {
    const CLASS_SECS: u64 = 8;
    let d = Daemon::start(&["--class-length", "8s", "--resume-grace", "1m"])?;
    let proxy = CutProxy::start(d.web())?;
    let mut classmate = d.connect().await?;
    let joined = classmate
        .cmd("JOIN ComputerNetworks_Div1_Classmate_18BCP044")
        .await?;
    assert!(joined.starts_with("OK JOIN"), "{joined}");
    let mut page = Scenario::new(
        "student_resume",
        "student_resume.mjs",
        &format!("http://{}", proxy.addr),
    )?
    .start()?;
    page.progress("joined")?;
    assert!(classmate.event("EVENT JOIN").await?.contains("JayPatel"));
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    proxy.cut();
    page.progress("lost")?;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    proxy.heal();
    let back = page.progress("back")?;
    let left = back["left_secs"].as_u64().unwrap_or(u64::MAX);
    assert!(
        (3..CLASS_SECS).contains(&left),
        "the countdown continues from the server's time left: {back}"
    );
    let result = page.finish()?;
    assert!(
        result["lost_text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Connection lost — reconnecting… attempt")),
        "{result}"
    );
    assert!(result["sockets"].as_u64() >= Some(2), "{result}");
    // The student's own timeline, as the server keeps it (HISTORY).
    assert_eq!(
        result["history"],
        serde_json::json!(["join", "drop", "resume", "mark"]),
        "{result}"
    );
    assert!(
        result["history_sum"]
            .as_str()
            .is_some_and(|t| t.starts_with("Present: 0:0")),
        "{result}"
    );

    let heard = events_until(&mut classmate, "EVENT PRESENT").await?;
    assert!(
        heard.last().is_some_and(|e| e.contains("JayPatel")),
        "{heard:?}"
    );
    assert!(
        !heard.iter().any(|e| e.contains("JayPatel")
            && (e.starts_with("EVENT LEAVE") || e.starts_with("EVENT JOIN"))),
        "a resume is silent to the class: {heard:?}"
    );
    let rows = read_rows(&d.csv_path()).await?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].roll.as_str(), rows[0].status.as_str()),
        ("18BCP043", "Present"),
        "{:?}",
        rows[0]
    );
    assert_eq!(
        rows[0].marked_at,
        result["marked_at"].as_str().unwrap_or_default()
    );
    Ok(())
}

/// A seat taken over elsewhere: the page, reloaded, takes its seat back with the token kept in
/// sessionStorage; then another client sends `RESUME` with that token. The page says the
/// student is checked in on another device and opens no new connection; the other client
/// holds the seat.
#[tokio::test]
async fn the_student_page_taken_over_by_a_resume_elsewhere_says_so_and_stays_down() -> Result<()> {
    let d = Daemon::start(&["--class-length", "5m", "--resume-grace", "1m"])?;
    let mut page = Scenario::new("student_replaced", "student_replaced.mjs", &base(&d))?.start()?;
    let joined = page.progress("joined")?;
    let token = joined["token"].as_str().unwrap_or_default().to_owned();
    let mut other = d.connect().await?;
    let resumed = other.cmd(&format!("RESUME {token}")).await?;
    assert!(
        resumed.starts_with("OK RESUME ComputerNetworks Div1 JayPatel 18BCP043 "),
        "{resumed}"
    );
    let result = page.finish()?;
    assert!(
        result["replaced_text"]
            .as_str()
            .is_some_and(|t| t.contains("another device")),
        "{result}"
    );
    assert!(
        result["after_reload"]
            .as_str()
            .is_some_and(|t| t.starts_with("Back — ")),
        "{result}"
    );
    assert_eq!(
        result["sockets_before"], result["sockets_after"],
        "no reconnect after EVENT REPLACED: {result}"
    );
    assert!(result["token_after"].is_null(), "{result}");
    // The seat is the other client's: its time counts there.
    assert!(other.cmd("PRESENT").await?.starts_with("ERR EARLY"));
    Ok(())
}

/// A page cut off for longer than the grace gives up, says so and offers "Try again", and
/// does nothing by itself after that; "Try again" takes the seat back. The page's clock is
/// run ahead (Playwright's fake clock), the daemon's 1-minute grace is not, so the seat still
/// waits.
#[tokio::test]
async fn the_student_page_gives_up_after_the_grace_and_try_again_resumes() -> Result<()> {
    let d = Daemon::start(&["--class-length", "5m", "--resume-grace", "1m"])?;
    let proxy = CutProxy::start(d.web())?;
    let mut page = Scenario::new(
        "student_giveup",
        "student_giveup.mjs",
        &format!("http://{}", proxy.addr),
    )?
    .start()?;
    page.progress("joined")?;
    proxy.cut();
    page.progress("gaveup")?;
    proxy.heal();
    let result = page.finish()?;
    assert!(
        result["gaveup_text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Could not reconnect")),
        "{result}"
    );
    assert!(
        result["back_text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Back — ")),
        "{result}"
    );
    Ok(())
}

/// A class with a rotating code on the student page: the QR code's link fills in the class and
/// the code; without it, the page asks for the code after `ERR BADCODE`.
#[tokio::test]
async fn the_student_page_checks_in_with_the_class_code_from_the_link_or_asked_for() -> Result<()> {
    let toml = "[[class]]\ncourse = \"CN\"\ndivision = \"D1\"\ncode = true\n";
    let d = Daemon::start_with_config(toml, &["--class-length", "1h"])?;
    let secret = std::fs::read(d.dir.path().join("code-CN_D1.secret"))?;
    // Two steps' worth of slack: the daemon accepts this step's code and the one before.
    let secs = i64::try_from(attendance_protocol::Timestamp::now().unix_millis() / 1000)?;
    let code = attendance_server::attendance::code::format_code(
        attendance_server::attendance::code::code_at(&secret, secs),
    );
    let result = Scenario::new("student_code", "student_code.mjs", &base(&d))?
        .arg("code", &code)
        .run()?;
    assert_eq!(result["prefilled"], "CN_D1_", "{result}");
    assert!(
        result["asked"]
            .as_str()
            .unwrap_or_default()
            .contains("code"),
        "{result}"
    );
    // Without the code the daemon would have refused both (the page shows the class only
    // after OK JOIN): a check that this test can fail.
    let mut c = d.connect().await?;
    assert!(c.cmd("JOIN CN_D1_Cat_3").await?.starts_with("ERR BADCODE "));
    Ok(())
}
