//! The teacher dashboard against the real daemon: sign-in and its defences (redirect, refusal,
//! rate limit, CSRF, cross-site, viewer scope), the live class stream and its resumption with
//! `Last-Event-ID`, the CSV download, and the same numbers as `attend admin`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
use attendance_tests::http::{self, EventStream, Sse};
use attendance_tests::{Client, Daemon, bin_path};

/// A viewer's token in the config of [`daemon_with_viewer`].
const VIEWER_TOKEN: &str = "viewer-token-for-cn-d1-only";

fn daemon_with_viewer(extra: &[&str]) -> Result<Daemon> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("attendanced.toml");
    std::fs::write(
        &config,
        format!(
            "[[viewer]]\nname = \"Ms Shah\"\ntoken = \"{VIEWER_TOKEN}\"\nclasses = [\"CN_D1\"]\n"
        ),
    )?;
    let config = config.to_string_lossy().into_owned();
    let mut args = vec!["--config", config.as_str()];
    args.extend_from_slice(extra);
    Daemon::start_in(dir, &args)
}

async fn joined(d: &Daemon, id: &str) -> Result<Client> {
    let mut c = d.connect().await?;
    let reply = c.cmd(&format!("JOIN {id}")).await?;
    if !reply.starts_with("OK JOIN ") {
        bail!("JOIN {id}: {reply}");
    }
    Ok(c)
}

/// The hidden CSRF field's value on a dashboard page.
fn csrf_of(page: &str) -> Result<String> {
    let start = page
        .find("name=\"csrf\" value=\"")
        .context("no csrf field on the page")?
        + "name=\"csrf\" value=\"".len();
    let len = page[start..].find('"').context("unterminated csrf")?;
    Ok(page[start..start + len].to_owned())
}

async fn open_class(web: SocketAddr, cookie: &str, class: &str) -> Result<EventStream> {
    let path = format!("/teacher/class/{class}/events");
    let (status, stream) = EventStream::open(web, &path, &[("cookie", cookie)]).await?;
    if status != 200 {
        bail!("{path}: {status}");
    }
    Ok(stream)
}

/// The next `row` event, as JSON.
async fn next_row(stream: &mut EventStream) -> Result<(Sse, serde_json::Value)> {
    let e = stream.next_named("row").await?;
    let v = e.json()?;
    Ok((e, v))
}

#[tokio::test]
async fn without_a_session_pages_redirect_to_sign_in_and_streams_are_refused() -> Result<()> {
    let d = Daemon::start(&[])?;
    for path in ["/teacher", "/teacher/class/CN/D1"] {
        let r = http::get(d.web(), path, &[("accept", "text/html")]).await?;
        assert_eq!(r.status, 303, "{path}: {}", r.text());
        assert_eq!(
            r.header("location").unwrap_or_default(),
            "/teacher/login",
            "{path}"
        );
    }
    for path in [
        "/teacher/class/CN/D1/events",
        "/teacher/events",
        "/teacher/api/classes",
    ] {
        let r = http::get(d.web(), path, &[("accept", "text/event-stream")]).await?;
        assert_eq!(r.status, 401, "{path}");
    }
    let r = http::get(
        d.web(),
        "/teacher",
        &[("cookie", "attendanced_session=forged")],
    )
    .await?;
    assert_eq!(r.status, 303, "a made-up session is no session");
    let login = http::get(d.web(), "/teacher/login", &[]).await?;
    assert_eq!(login.status, 200);
    assert!(
        login.text().contains("<label for=\"token\">"),
        "{}",
        login.text()
    );
    Ok(())
}

#[tokio::test]
async fn the_admin_token_opens_a_strict_http_only_session() -> Result<()> {
    let d = Daemon::start(&[])?;
    let token = d.token()?;
    let r = http::post_form(d.web(), "/teacher/login", &[], &format!("token={token}")).await?;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location").unwrap_or_default(), "/teacher");
    let cookie = r.header("set-cookie").unwrap_or_default();
    for part in [
        "attendanced_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let pair = cookie.split(';').next().unwrap_or_default();
    let page = http::get(d.web(), "/teacher", &[("cookie", pair)]).await?;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("id=\"classes\""), "{}", page.text());
    assert!(
        page.header("cache-control")
            .unwrap_or_default()
            .contains("no-store")
    );
    Ok(())
}

#[tokio::test]
async fn wrong_tokens_are_refused_then_rate_limited_per_address() -> Result<()> {
    let mut d = Daemon::start(&[])?;
    let token = d.token()?;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = http::post_form(d.web(), "/teacher/login", &[], "token=not-the-token").await?;
        statuses.push(r.status);
        if r.status == 429 {
            assert!(
                r.header("retry-after")
                    .unwrap_or_default()
                    .parse::<u64>()
                    .is_ok(),
                "{:?}",
                r.headers
            );
        }
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
    // Limited is limited: even the right token waits.
    let r = http::post_form(d.web(), "/teacher/login", &[], &format!("token={token}")).await?;
    assert_eq!(r.status, 429);
    let logs = d.drain_logs().join("\n");
    assert!(logs.contains("sign-in refused"), "{logs}");
    assert!(!logs.contains("not-the-token"), "tokens are never logged");
    assert!(!logs.contains(&token), "tokens are never logged");
    Ok(())
}

#[tokio::test]
async fn a_post_without_the_csrf_token_or_from_another_site_is_refused() -> Result<()> {
    let d = Daemon::start(&[])?;
    let cookie = http::sign_in(d.web(), &d.token()?).await?;
    let page = http::get(d.web(), "/teacher", &[("cookie", &cookie)]).await?;
    let csrf = csrf_of(&page.text())?;
    let headers = [("cookie", cookie.as_str())];
    let r = http::post_form(d.web(), "/teacher/logout", &headers, "").await?;
    assert_eq!(r.status, 403, "no token");
    let r = http::post_form(d.web(), "/teacher/logout", &headers, "csrf=0123abcd").await?;
    assert_eq!(r.status, 403, "wrong token");
    let cross = [
        ("cookie", cookie.as_str()),
        ("origin", "http://evil.example"),
    ];
    let r = http::post_form(d.web(), "/teacher/logout", &cross, &format!("csrf={csrf}")).await?;
    assert_eq!(r.status, 403, "another site's page");
    let r = http::post_form(
        d.web(),
        "/teacher/login",
        &[("origin", "http://evil.example")],
        &format!("token={}", d.token()?),
    )
    .await?;
    assert_eq!(r.status, 403, "cross-site sign-in");
    // Still signed in after all that; the right token signs out.
    assert_eq!(http::get(d.web(), "/teacher", &headers).await?.status, 200);
    let r = http::post_form(
        d.web(),
        "/teacher/logout",
        &headers,
        &format!("csrf={csrf}"),
    )
    .await?;
    assert_eq!(r.status, 303);
    assert!(
        r.header("set-cookie")
            .unwrap_or_default()
            .contains("Max-Age=0")
    );
    let r = http::get(d.web(), "/teacher", &headers).await?;
    assert_eq!(r.status, 303, "the session is gone on the server");
    Ok(())
}

#[tokio::test]
async fn a_viewer_token_sees_only_its_classes() -> Result<()> {
    let d = daemon_with_viewer(&["--class-length", "1h"])?;
    let _ann = joined(&d, "CN_D1_Ann_1").await?;
    let _bob = joined(&d, "CN_D2_Bob_2").await?;
    let viewer = http::sign_in(d.web(), VIEWER_TOKEN).await?;
    let admin = http::sign_in(d.web(), &d.token()?).await?;
    let list = |cookie: String| {
        let web = d.web();
        async move {
            let r = http::get(web, "/teacher/api/classes", &[("cookie", &cookie)]).await?;
            let v: serde_json::Value = serde_json::from_str(&r.text())?;
            let classes: Vec<String> = v["classes"]
                .as_array()
                .context("classes")?
                .iter()
                .filter_map(|c| c["class"].as_str().map(str::to_owned))
                .collect();
            anyhow::Ok((classes, v))
        }
    };
    let (seen, v) = list(viewer.clone()).await?;
    assert_eq!(seen, ["CN_D1"]);
    assert!(v["connections"].is_null(), "server totals are the admin's");
    let (seen, _) = list(admin).await?;
    assert_eq!(seen, ["CN_D1", "CN_D2"]);
    let headers = [("cookie", viewer.as_str())];
    for path in [
        "/teacher/class/CN/D2",
        "/teacher/class/CN/D2/events",
        "/teacher/class/CN/D2/attendance.csv",
    ] {
        assert_eq!(
            http::get(d.web(), path, &headers).await?.status,
            404,
            "{path}"
        );
    }
    assert_eq!(
        http::get(d.web(), "/teacher/class/CN/D1", &headers)
            .await?
            .status,
        200
    );
    Ok(())
}

#[tokio::test]
async fn the_class_stream_is_live_and_resumes_from_last_event_id_without_a_gap() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1s"])?;
    let cookie = http::sign_in(d.web(), &d.token()?).await?;
    let mut stream = open_class(d.web(), &cookie, "CN/D1").await?;
    let snapshot = stream.next().await?;
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.json()?["rows"].as_array().map(Vec::len), Some(0));

    let mut ann = joined(&d, "CN_D1_Ann_1").await?;
    let (_, row) = next_row(&mut stream).await?;
    assert_eq!(
        (&row["name"], &row["roll"], &row["via"], &row["connected"]),
        (
            &"Ann".into(),
            &"1".into(),
            &"tcp".into(),
            &serde_json::Value::Bool(true)
        )
    );
    assert_eq!(row["addr"], "127.0.0.1");
    assert!(row["marked_at"].is_null());
    // The row turns Present once the mark is on disk.
    let early = ann.cmd("PRESENT").await?;
    if early.starts_with("ERR EARLY") {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    let marked = ann.cmd("PRESENT").await?;
    assert!(marked.starts_with("OK PRESENT "), "{marked}");
    let at = marked.trim_start_matches("OK PRESENT ");
    let (seen, row) = next_row(&mut stream).await?;
    assert_eq!(row["marked_at"], at);
    let last = seen.id.context("row events carry ids")?;
    drop(stream);

    // While no stream is open: an arrival, a chat line, a departure.
    let mut bob = joined(&d, "CN_D1_Bob_2").await?;
    bob.cmd("SAY is this the right room?").await?;
    drop(bob);
    let _other_class = joined(&d, "CN_D2_Cat_3").await?;
    // The reconnect names the last id: the three changes of this class follow, in order, and
    // no snapshot.
    let (status, mut resumed) = EventStream::open(
        d.web(),
        "/teacher/class/CN/D1/events",
        &[("cookie", &cookie), ("last-event-id", &last)],
    )
    .await?;
    assert_eq!(status, 200);
    let first = resumed.next().await?;
    assert_eq!(first.event, "row", "a replay, not a snapshot: {first:?}");
    assert_eq!(first.json()?["name"], "Bob");
    let chat = resumed.next().await?;
    assert_eq!(chat.event, "chat");
    assert_eq!(chat.json()?["text"], "is this the right room?");
    let left = resumed.next().await?;
    assert_eq!(left.json()?["name"], "Bob");
    assert_eq!(left.json()?["connected"], false);
    // Ids only grow.
    let ids: Vec<u64> = [&first, &chat, &left]
        .iter()
        .filter_map(|e| e.id.as_deref()?.parse().ok())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(ids[0] > last.parse()?);

    // An id the ring cannot answer (from the future) gets the whole class.
    let (_, mut fresh) = EventStream::open(
        d.web(),
        "/teacher/class/CN/D1/events?last_event_id=999999",
        &[("cookie", &cookie)],
    )
    .await?;
    let snap = fresh.next().await?;
    assert_eq!(snap.event, "snapshot");
    let rows = snap.json()?["rows"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["Ann", "Bob"]);
    assert_eq!(snap.json()?["chat"][0]["name"], "Bob");
    Ok(())
}

#[tokio::test]
async fn the_streams_say_shutdown_when_the_daemon_stops() -> Result<()> {
    let mut d = Daemon::start(&[])?;
    let cookie = http::sign_in(d.web(), &d.token()?).await?;
    let mut class = open_class(d.web(), &cookie, "CN/D1").await?;
    assert_eq!(class.next().await?.event, "snapshot");
    let (_, mut list) =
        EventStream::open(d.web(), "/teacher/events", &[("cookie", &cookie)]).await?;
    assert_eq!(list.next().await?.event, "classes");
    d.sigterm()?;
    assert_eq!(class.next_named("shutdown").await?.event, "shutdown");
    assert_eq!(list.next_named("shutdown").await?.event, "shutdown");
    assert!(d.wait()?.success());
    Ok(())
}

#[tokio::test]
async fn the_csv_download_is_one_class_of_one_day_with_the_logs_columns() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1s"])?;
    let mut students = Vec::new();
    for id in ["CN_D1_Ann_1", "CN_D1_Bob_2", "CN_D2_Cat_3"] {
        students.push(joined(&d, id).await?);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for s in &mut students {
        let r = s.cmd("PRESENT").await?;
        assert!(r.starts_with("OK PRESENT "), "{r}");
    }
    let cookie = http::sign_in(d.web(), &d.token()?).await?;
    let headers = [("cookie", cookie.as_str())];
    let r = http::get(d.web(), "/teacher/class/CN/D1/attendance.csv", &headers).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/csv")
    );
    assert!(
        r.header("content-disposition")
            .unwrap_or_default()
            .contains("attachment")
    );
    let file = std::fs::read_to_string(d.csv_path())?;
    let header = file.lines().next().context("header")?;
    let body = r.text();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], header, "the log's columns");
    let d1: Vec<&str> = file.lines().filter(|l| l.starts_with("CN,D1,")).collect();
    assert_eq!(
        lines[1..],
        d1[..],
        "exactly the class's rows, as in the log"
    );
    assert_eq!(d1.len(), 2);
    // Another day has only the header; a bad day is refused.
    let r = http::get(
        d.web(),
        "/teacher/class/CN/D1/attendance.csv?day=2001-02-03",
        &headers,
    )
    .await?;
    assert_eq!(r.text().lines().collect::<Vec<_>>(), [header]);
    let r = http::get(
        d.web(),
        "/teacher/class/CN/D1/attendance.csv?day=yesterday",
        &headers,
    )
    .await?;
    assert_eq!(r.status, 400);
    Ok(())
}

#[tokio::test]
async fn the_dashboard_and_attend_admin_show_the_same_numbers() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1s"])?;
    let mut ann = joined(&d, "CN_D1_Ann_1").await?;
    let _bob = joined(&d, "CN_D1_Bob_2").await?;
    let _cat = joined(&d, "CN_D2_Cat_3").await?;
    let _idle = d.connect().await?;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(ann.cmd("PRESENT").await?.starts_with("OK PRESENT "));
    let admin = |args: &[&str]| -> Result<serde_json::Value> {
        let out = Command::new(bin_path("attend"))
            .arg("admin")
            .args(args)
            .arg("--json")
            .arg("--socket")
            .arg(d.dir.path().join("attendanced.sock"))
            .stdin(Stdio::null())
            .output()?;
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let cookie = http::sign_in(d.web(), &d.token()?).await?;
    // The sign-in's HTTP connection closes on its own time: wait (bounded) until attend admin
    // sees only the four student connections.
    let mut status = admin(&["status"])?;
    for _ in 0..200 {
        if status["connections"] == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        status = admin(&["status"])?;
    }
    assert_eq!(status["connections"], 4, "{status}");
    let r = http::get(d.web(), "/teacher/api/classes", &[("cookie", &cookie)]).await?;
    let dash: serde_json::Value = serde_json::from_str(&r.text())?;
    // The dashboard counts its own request's connection too.
    assert_eq!(dash["connections"], 5, "{dash} {status}");
    assert_eq!(dash["seated"], status["joined"]);
    assert_eq!(dash["marks_today"], status["marks_today"]);
    let classes = admin(&["classes"])?;
    let from_admin: Vec<(String, u64)> = classes["classes"]
        .as_array()
        .context("classes")?
        .iter()
        .map(|c| {
            (
                format!(
                    "{}_{}",
                    c["course"].as_str().unwrap_or_default(),
                    c["division"].as_str().unwrap_or_default()
                ),
                c["students"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let from_dash: Vec<(String, u64)> = dash["classes"]
        .as_array()
        .context("classes")?
        .iter()
        .map(|c| {
            (
                c["class"].as_str().unwrap_or_default().to_owned(),
                c["connected"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(from_dash, from_admin);
    assert_eq!(dash["classes"][0]["marked"], 1);
    assert_eq!(dash["classes"][0]["joined"], 2);
    Ok(())
}

#[tokio::test]
async fn a_student_whose_connection_lags_is_flagged_on_the_class_page() -> Result<()> {
    let d = Daemon::start_laggy()?;
    let cookie = http::sign_in(d.web(), &d.token()?).await?;
    let mut stream = open_class(d.web(), &cookie, "Lag/D1").await?;
    assert_eq!(stream.next().await?.event, "snapshot");

    // A laggard with a tiny receive buffer that does not read while the class chats (as in
    // lagging.rs).
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut laggard = Client::from_stream(socket.connect(d.addr).await?).await?;
    laggard.cmd("JOIN Lag_D1_Slow_1").await?;
    let mut speaker = d.connect().await?;
    speaker.cmd("JOIN Lag_D1_Fast_2").await?;
    let pad = "x".repeat(900);
    for k in 0..400 {
        assert_eq!(speaker.cmd(&format!("SAY m{k} {pad}")).await?, "OK SAY");
    }
    speaker.cmd("QUIT").await?;
    let mut lagged = 0u64;
    loop {
        let line = laggard.event("EVENT").await?;
        if let Some(n) = line.strip_prefix("EVENT LAGGED ") {
            lagged += n.parse::<u64>()?;
        } else if line == "EVENT LEAVE Fast" {
            break;
        }
    }
    assert!(lagged > 0, "the laggard did not fall behind");
    // The class page hears of it: Slow's row carries the count it missed.
    for _ in 0..10_000 {
        let e = stream.next().await?;
        if e.event == "row" {
            let row = e.json()?;
            if row["name"] == "Slow" && row["lagged"].as_u64().unwrap_or(0) == lagged {
                return Ok(());
            }
        }
    }
    bail!("no row flagged Slow as lagging by {lagged}")
}

#[tokio::test]
async fn the_class_page_shows_the_rotating_code_its_qr_and_the_chain_head() -> Result<()> {
    let toml = "[[class]]\ncourse = \"CN\"\ndivision = \"D1\"\ncode = true\n";
    let d = Daemon::start_with_config(toml, &["--class-length", "0s"])?;
    let mut s = joined(&d, "CN_D9_Ann_1").await?;
    assert!(s.cmd("PRESENT").await?.starts_with("OK PRESENT "));
    let cookie = http::sign_in(d.web(), &d.token()?).await?;
    let headers = [("cookie", cookie.as_str())];
    let page = http::get(d.web(), "/teacher/class/CN/D1", &headers).await?;
    assert!(page.text().contains("id=\"projector\""), "{}", page.text());
    let r = http::get(d.web(), "/teacher/class/CN/D1/code", &headers).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v: serde_json::Value = serde_json::from_str(&r.text())?;
    let code = v["code"].as_str().context("a code")?.to_owned();
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );
    let left = v["seconds_left"].as_i64().context("seconds")?;
    assert!((1..=30).contains(&left), "{left}");
    let link = v["link"].as_str().context("link")?;
    assert!(
        link.ends_with(&format!("/?class=CN_D1&code={code}")),
        "{link}"
    );
    assert!(v["qr_svg"].as_str().is_some_and(|s| s.contains("<svg")));
    assert_eq!(v["chain_rows"], 1);
    assert_eq!(v["chain_head"].as_str().map(str::len), Some(64));
    // The code on the page is the one the daemon accepts (this step or the one before).
    let mut c = d.connect().await?;
    let joined = c.cmd(&format!("JOIN CN_D1_Bob_2 {code}")).await?;
    assert!(joined.starts_with("OK JOIN "), "{joined}");
    // A class without a code shows none, but still the chain.
    let r = http::get(d.web(), "/teacher/class/CN/D9/code", &headers).await?;
    let v: serde_json::Value = serde_json::from_str(&r.text())?;
    assert!(v["code"].is_null());
    assert_eq!(v["chain_rows"], 1);
    // Not signed in: no code.
    let r = http::get(d.web(), "/teacher/class/CN/D1/code", &[]).await?;
    assert_ne!(r.status, 200);
    Ok(())
}

#[tokio::test]
async fn the_dashboard_flags_a_shared_address_and_offers_the_report_with_absentees() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let roster = dir.path().join("roster.csv");
    std::fs::write(&roster, "name,roll\nAnn,1\nBob,2\nCat,3\nZed,9\n")?;
    let toml = format!(
        "[[class]]\ncourse = \"CN\"\ndivision = \"D1\"\nroster = \"{}\"\n",
        roster.display()
    );
    let d = Daemon::start_with_config(&toml, &["--class-length", "0s"])?;
    let cookie = http::sign_in(d.web(), &d.token()?).await?;
    let mut stream = open_class(d.web(), &cookie, "CN/D1").await?;
    stream.next_named("snapshot").await?;
    let mut students = Vec::new();
    for id in ["CN_D1_Ann_1", "CN_D1_Bob_2", "CN_D1_Cat_3"] {
        let mut s = joined(&d, id).await?;
        assert!(s.cmd("PRESENT").await?.starts_with("OK PRESENT "));
        students.push(s);
    }
    // Three rolls from 127.0.0.1 within seconds: each row is flagged, none refused.
    let mut flagged = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (_, row) = next_row(&mut stream).await?;
        let is_flagged = row["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "shared-address"));
        if is_flagged {
            flagged.insert(row["roll"].as_str().unwrap_or_default().to_owned());
        }
        if flagged.len() == 3 {
            break;
        }
    }
    assert_eq!(flagged.len(), 3, "{flagged:?}");
    let headers = [("cookie", cookie.as_str())];
    let r = http::get(d.web(), "/teacher/class/CN/D1/report.csv", &headers).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[1].starts_with("CN,D1,Ann,1,Present,") && lines[1].ends_with(",shared-address"),
        "{text}"
    );
    assert!(lines[4].starts_with("CN,D1,Zed,9,Absent,"), "{text}");
    let page = http::get(d.web(), "/teacher/class/CN/D1", &headers).await?;
    assert!(page.text().contains("report.csv"), "the page offers it");
    Ok(())
}
