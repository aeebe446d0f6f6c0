//! Every command and error of the protocol, against the real daemon over TCP.

use anyhow::Result;
use attendance_tests::{Daemon, read_rows};

const ANN: &str = "ComputerNetworks_Div1_Ann_1";
const BOB: &str = "ComputerNetworks_Div1_Bob_2";

#[tokio::test]
async fn greeting_names_the_server_and_mentions_help() -> Result<()> {
    let d = Daemon::start(&[])?;
    let c = d.connect().await?;
    assert!(c.hello.starts_with("HELLO attendanced/"), "{}", c.hello);
    assert!(c.hello.contains("HELP"), "{}", c.hello);
    Ok(())
}

#[tokio::test]
async fn queries_answer_time_elapsed_clients_ping_and_help() -> Result<()> {
    let d = Daemon::start(&[])?;
    let mut a = d.connect().await?;
    let _b = d.connect().await?;

    let time = a.cmd("TIME").await?;
    let ts = time.strip_prefix("OK TIME ").expect("OK TIME");
    let parsed: attendance_protocol::Timestamp = ts.parse()?;
    let skew = (parsed.unix_millis() - attendance_protocol::Timestamp::now().unix_millis()).abs();
    assert!(skew < 60_000, "server time {ts} is far from ours");

    assert_eq!(a.cmd("elapsed").await?, "OK ELAPSED 0");
    assert_eq!(a.cmd("CLIENTS").await?, "OK CLIENTS 2");
    assert_eq!(a.cmd("PING").await?, "OK PONG");
    assert_eq!(a.cmd("ping abc123").await?, "OK PONG abc123");
    let help = a.cmd("HELP").await?;
    for word in [
        "JOIN", "PRESENT", "TIME", "ELAPSED", "CLIENTS", "PING", "SAY", "QUIT", "SHUTDOWN",
    ] {
        assert!(help.contains(word), "{help} lacks {word}");
    }
    drop(_b);
    // The count follows disconnects (synchronised by asking until it drops, bounded).
    let mut n = String::new();
    for _ in 0..200 {
        n = a.cmd("CLIENTS").await?;
        if n == "OK CLIENTS 1" {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(n, "OK CLIENTS 1");
    Ok(())
}

#[tokio::test]
async fn join_replies_with_the_fields_and_required_seconds() -> Result<()> {
    let d = Daemon::start(&["--class-length", "45m"])?;
    let mut a = d.connect().await?;
    assert_eq!(
        a.cmd(&format!("JOIN {ANN}")).await?,
        "OK JOIN ComputerNetworks Div1 Ann 1 2700"
    );
    // Joining again as the same student is harmless; as someone else it is refused.
    assert!(
        a.cmd(&format!("join {ANN}"))
            .await?
            .starts_with("OK JOIN ComputerNetworks Div1 Ann 1 ")
    );
    assert!(
        a.cmd(&format!("JOIN {BOB}"))
            .await?
            .starts_with("ERR JOINED ")
    );
    Ok(())
}

#[tokio::test]
async fn errors_are_clear_and_the_connection_goes_on() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1h"])?;
    let mut a = d.connect().await?;
    assert!(a.cmd("DANCE").await?.starts_with("ERR UNKNOWN "));
    let bad = a.cmd("JOIN CN_Div1_Ann").await?;
    assert!(
        bad.starts_with("ERR BADFORMAT ") && bad.contains("COURSE_DIV_NAME_ROLL"),
        "{bad}"
    );
    assert!(a.cmd("JOIN a_b__d").await?.starts_with("ERR BADFORMAT "));
    assert!(a.cmd("TIME please").await?.starts_with("ERR BADFORMAT "));
    assert!(a.cmd("PRESENT").await?.starts_with("ERR NOTJOINED "));
    assert!(a.cmd("SAY hi").await?.starts_with("ERR NOTJOINED "));
    assert!(a.cmd(&format!("JOIN {ANN}")).await?.starts_with("OK JOIN"));
    let early = a.cmd("PRESENT").await?;
    assert!(
        early.starts_with("ERR EARLY 3600 ") || early.starts_with("ERR EARLY 3599 "),
        "{early}"
    );
    let mut b = d.connect().await?;
    assert!(
        b.cmd(&format!("JOIN {ANN}"))
            .await?
            .starts_with("ERR ALREADY ")
    );
    assert!(b.cmd("SHUTDOWN").await?.starts_with("ERR DENIED "));
    assert!(
        b.cmd("SHUTDOWN wrongtoken")
            .await?
            .starts_with("ERR DENIED ")
    );
    // Everything still works on both connections.
    assert_eq!(a.cmd("PING").await?, "OK PONG");
    assert_eq!(b.cmd("PING").await?, "OK PONG");
    Ok(())
}

#[tokio::test]
async fn too_many_errors_in_a_row_close_the_connection() -> Result<()> {
    let d = Daemon::start(&[])?;
    let mut a = d.connect().await?;
    for _ in 0..9 {
        assert!(a.cmd("NOPE").await?.starts_with("ERR UNKNOWN"));
    }
    assert_eq!(
        a.cmd("PING").await?,
        "OK PONG",
        "a good line resets the count"
    );
    for _ in 0..9 {
        assert!(a.cmd("NOPE").await?.starts_with("ERR UNKNOWN"));
    }
    a.send("NOPE").await?;
    let rest = a.closed().await?;
    assert!(
        rest.iter().any(|l| l.starts_with("ERR TOOMANYERRORS")),
        "{rest:?}"
    );
    Ok(())
}

#[tokio::test]
async fn present_is_refused_early_and_accepted_after_the_class_length() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1s"])?;
    let mut a = d.connect().await?;
    let mut b = d.connect().await?;
    assert!(a.cmd(&format!("JOIN {ANN}")).await?.ends_with(" 1"));
    assert!(b.cmd(&format!("JOIN {BOB}")).await?.starts_with("OK JOIN"));
    let early = a.cmd("PRESENT").await?;
    assert_eq!(
        early.split(' ').take(3).collect::<Vec<_>>(),
        ["ERR", "EARLY", "1"],
        "{early}"
    );
    // Serve the class length the server asked for; this wait is the behaviour under test.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let ok = a.cmd("PRESENT").await?;
    let marked_at = ok
        .strip_prefix("OK PRESENT ")
        .expect("OK PRESENT")
        .to_owned();
    assert_eq!(b.event("EVENT PRESENT").await?, "EVENT PRESENT Ann");

    // Acknowledged means on disk: the row is there now.
    let rows = read_rows(&d.csv_path()).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].course.as_str(),
            rows[0].division.as_str(),
            rows[0].name.as_str(),
            rows[0].roll.as_str(),
            rows[0].status.as_str()
        ),
        ("ComputerNetworks", "Div1", "Ann", "1", "Present")
    );
    assert_eq!(rows[0].marked_at, marked_at);
    assert_eq!(rows[0].client_addr, "127.0.0.1");

    // Asking again, or from a new connection, gives the original time and no second row.
    assert_eq!(a.cmd("PRESENT").await?, ok);
    a.cmd("QUIT").await?;
    let mut again = d.connect().await?;
    assert_eq!(
        again.cmd(&format!("JOIN {ANN}")).await?,
        "OK JOIN ComputerNetworks Div1 Ann 1 0"
    );
    assert_eq!(again.cmd("PRESENT").await?, ok);
    assert_eq!(read_rows(&d.csv_path()).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn announcements_reach_only_the_same_class() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1h"])?;
    let mut ann = d.connect().await?;
    let mut other_div = d.connect().await?;
    let mut other_course = d.connect().await?;
    let mut lobby = d.connect().await?;
    ann.cmd(&format!("JOIN {ANN}")).await?;
    other_div.cmd("JOIN ComputerNetworks_Div2_Cy_3").await?;
    other_course.cmd("JOIN Compilers_Div1_Dee_4").await?;

    let mut bob = d.connect().await?;
    assert!(
        bob.cmd(&format!("JOIN {BOB}"))
            .await?
            .starts_with("OK JOIN")
    );
    assert_eq!(
        ann.event("EVENT JOIN").await?,
        "EVENT JOIN ComputerNetworks Div1 Bob",
        "no address unless announce_addresses is on"
    );
    assert_eq!(bob.cmd("SAY hello, class!").await?, "OK SAY");
    assert_eq!(ann.event("EVENT SAY").await?, "EVENT SAY Bob hello, class!");
    bob.cmd("QUIT").await?;
    assert_eq!(ann.event("EVENT LEAVE").await?, "EVENT LEAVE Bob");

    // A marker sent after Bob's events: each other client must see it before anything of Bob's.
    for (c, class) in [
        (&mut other_div, "ComputerNetworks_Div2_Eve_5"),
        (&mut other_course, "Compilers_Div1_Fay_6"),
    ] {
        let mut marker = d.connect().await?;
        marker.cmd(&format!("JOIN {class}")).await?;
        let first = c.event("EVENT").await?;
        assert!(
            first.starts_with("EVENT JOIN") && !first.contains("Bob"),
            "{first}"
        );
    }
    // The lobby client (never joined) got no events at all: its next line is the reply.
    assert_eq!(lobby.cmd("PING").await?, "OK PONG");
    assert!(lobby.events.is_empty(), "{:?}", lobby.events);
    // Bob never hears himself.
    assert!(
        bob.events.iter().all(|e| !e.contains("Bob")),
        "{:?}",
        bob.events
    );
    Ok(())
}

#[tokio::test]
async fn a_client_that_just_drops_is_announced_as_leaving() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1h"])?;
    let mut ann = d.connect().await?;
    ann.cmd(&format!("JOIN {ANN}")).await?;
    let mut bob = d.connect().await?;
    bob.cmd(&format!("JOIN {BOB}")).await?;
    drop(bob);
    assert_eq!(ann.event("EVENT LEAVE").await?, "EVENT LEAVE Bob");
    // The roll is free again.
    let mut bob2 = d.connect().await?;
    assert!(
        bob2.cmd(&format!("JOIN {BOB}"))
            .await?
            .starts_with("OK JOIN")
    );
    Ok(())
}

#[tokio::test]
async fn heartbeat_reaches_every_client() -> Result<()> {
    let d = Daemon::start(&["--heartbeat", "200ms"])?;
    let mut joined = d.connect().await?;
    joined.cmd(&format!("JOIN {ANN}")).await?;
    let mut lobby = d.connect().await?;
    for c in [&mut joined, &mut lobby] {
        let hb = c.event("EVENT HEARTBEAT").await?;
        let ts = hb.strip_prefix("EVENT HEARTBEAT ").expect("timestamp");
        ts.parse::<attendance_protocol::Timestamp>()?;
    }
    Ok(())
}

#[tokio::test]
async fn lines_of_the_original_c_client_still_work() -> Result<()> {
    let d = Daemon::start(&["--class-length", "1s"])?;
    let mut c = d.connect().await?;
    // The original client sent "ID_" on connect and "ID_Present" when its timer ended.
    assert_eq!(
        c.cmd("ComputerNetworks_Div1_JayPatel_18BCP043_").await?,
        "OK JOIN ComputerNetworks Div1 JayPatel 18BCP043 1"
    );
    // Already joined as that student: it is only a PRESENT, one reply (the JOIN happens only
    // "if not yet joined").
    assert!(
        c.cmd("ComputerNetworks_Div1_JayPatel_18BCP043_Present")
            .await?
            .starts_with("ERR EARLY ")
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(
        c.cmd("ComputerNetworks_Div1_JayPatel_18BCP043_Present")
            .await?
            .starts_with("OK PRESENT ")
    );
    // A fresh connection sending only "ID_Present" joins and is told to wait.
    let mut fresh = d.connect().await?;
    assert!(
        fresh
            .cmd("ComputerNetworks_Div1_Kim_9_Present")
            .await?
            .starts_with("OK JOIN")
    );
    assert!(fresh.reply().await?.starts_with("ERR EARLY "));
    // A bare "shutdown", as the original accepted from anyone, is refused.
    assert!(c.cmd("shutdown").await?.starts_with("ERR DENIED"));
    assert_eq!(c.cmd("PING").await?, "OK PONG");
    let rows = read_rows(&d.csv_path()).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name, "JayPatel");
    Ok(())
}

#[tokio::test]
async fn crlf_clients_are_understood() -> Result<()> {
    let d = Daemon::start(&[])?;
    let mut c = d.connect().await?;
    c.send_bytes(b"PING crlf\r\n").await?;
    assert_eq!(c.reply().await?, "OK PONG crlf");
    Ok(())
}

#[tokio::test]
async fn unicode_names_are_accepted_and_stored() -> Result<()> {
    let d = Daemon::start(&["--class-length", "0s"])?;
    let mut c = d.connect().await?;
    assert_eq!(
        c.cmd("JOIN Networks_A_José_7").await?,
        "OK JOIN Networks A José 7 0"
    );
    assert!(c.cmd("PRESENT").await?.starts_with("OK PRESENT"));
    let mut z = d.connect().await?;
    assert!(
        z.cmd("JOIN Networks_A_李雷_8")
            .await?
            .starts_with("OK JOIN")
    );
    assert!(z.cmd("PRESENT").await?.starts_with("OK PRESENT"));
    let names: Vec<String> = read_rows(&d.csv_path())
        .await?
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["José", "李雷"]);
    Ok(())
}

#[tokio::test]
async fn quit_says_bye_and_closes() -> Result<()> {
    let d = Daemon::start(&[])?;
    let mut c = d.connect().await?;
    assert_eq!(c.cmd("QUIT").await?, "OK BYE");
    assert!(c.closed().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_client_may_send_before_the_greeting_and_is_answered_in_order() -> Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let d = Daemon::start(&[])?;
    // Bounded: a few connections, so that both ways the server can find the lines (already
    // there when it accepts, or arriving after its greeting) are likely taken.
    for i in 0..20 {
        let mut stream = tokio::net::TcpStream::connect(d.addr).await?;
        stream
            .write_all(
                format!("PING a{i}\nJOIN ComputerNetworks_Div1_Early_{i}\nPING b{i}\n").as_bytes(),
            )
            .await?;
        // from_stream insists that the first line is the greeting.
        let mut c = attendance_tests::Client::from_stream(stream).await?;
        assert_eq!(c.reply().await?, format!("OK PONG a{i}"));
        let join = c.reply().await?;
        let want = format!("OK JOIN ComputerNetworks Div1 Early {i} ");
        assert!(join.starts_with(&want), "{join}");
        assert_eq!(c.reply().await?, format!("OK PONG b{i}"));
        assert_eq!(c.cmd("QUIT").await?, "OK BYE");
    }
    // A QUIT sent at once is answered after the greeting, then the connection closes.
    let mut stream = tokio::net::TcpStream::connect(d.addr).await?;
    stream.write_all(b"QUIT\n").await?;
    let mut c = attendance_tests::Client::from_stream(stream).await?;
    assert_eq!(c.reply().await?, "OK BYE");
    assert!(c.closed().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_marked_connection_checks_in_the_next_student() -> Result<()> {
    let d = Daemon::start(&["--class-length", "0s"])?;
    let mut watcher = d.connect().await?;
    let mut kiosk = d.connect().await?;
    assert!(
        watcher
            .cmd("JOIN ComputerNetworks_Div1_Wat_9")
            .await?
            .starts_with("OK JOIN")
    );
    assert!(
        kiosk
            .cmd(&format!("JOIN {ANN}"))
            .await?
            .starts_with("OK JOIN")
    );
    assert!(watcher.event("EVENT JOIN").await?.ends_with(" Ann"));
    // Until Ann is marked, the connection is hers.
    let refused = kiosk.cmd(&format!("JOIN {BOB}")).await?;
    assert!(refused.starts_with("ERR JOINED "), "{refused}");
    assert!(refused.contains("PRESENT"), "{refused}");
    assert!(kiosk.cmd("PRESENT").await?.starts_with("OK PRESENT "));
    // Marked: the next student checks in on the same connection.
    assert_eq!(
        kiosk.cmd(&format!("JOIN {BOB}")).await?,
        "OK JOIN ComputerNetworks Div1 Bob 2 0"
    );
    assert_eq!(watcher.event("EVENT PRESENT").await?, "EVENT PRESENT Ann");
    assert_eq!(watcher.event("EVENT LEAVE").await?, "EVENT LEAVE Ann");
    assert!(watcher.event("EVENT JOIN").await?.ends_with(" Bob"));
    assert!(kiosk.cmd("PRESENT").await?.starts_with("OK PRESENT "));
    assert_eq!(watcher.event("EVENT PRESENT").await?, "EVENT PRESENT Bob");

    // A roll held on another connection is refused, and the kiosk stays Bob, in his class.
    let mut cat = d.connect().await?;
    assert!(
        cat.cmd("JOIN Compilers_Div1_Cat_3")
            .await?
            .starts_with("OK JOIN")
    );
    assert!(
        kiosk
            .cmd("JOIN Compilers_Div1_Cat_3")
            .await?
            .starts_with("ERR ALREADY ")
    );
    assert_eq!(kiosk.cmd("SAY still Bob").await?, "OK SAY");
    assert_eq!(watcher.event("EVENT SAY").await?, "EVENT SAY Bob still Bob");
    // Into another class: Bob leaves this one, Dan joins that one.
    assert!(
        kiosk
            .cmd("JOIN Compilers_Div1_Dan_4")
            .await?
            .starts_with("OK JOIN Compilers Div1 Dan 4 ")
    );
    assert_eq!(watcher.event("EVENT LEAVE").await?, "EVENT LEAVE Bob");
    assert!(cat.event("EVENT JOIN").await?.ends_with(" Dan"));
    // Ann's roll is free again; she is marked, so she need not stay.
    let mut ann = d.connect().await?;
    assert_eq!(
        ann.cmd(&format!("JOIN {ANN}")).await?,
        "OK JOIN ComputerNetworks Div1 Ann 1 0"
    );

    let names: Vec<String> = read_rows(&d.csv_path())
        .await?
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["Ann", "Bob"]);
    Ok(())
}

#[tokio::test]
async fn pipelined_lines_are_answered_in_order_across_a_mark() -> Result<()> {
    let d = Daemon::start(&["--class-length", "0s"])?;
    let mut c = d.connect().await?;
    // Bounded: a few rounds of a kiosk program sending each student's JOIN and PRESENT at once.
    for i in 0..10 {
        c.send_bytes(
            format!("PING a{i}\nJOIN Compilers_Div2_Kiosk_{i}\nPRESENT\nPING b{i}\n").as_bytes(),
        )
        .await?;
        assert_eq!(c.reply().await?, format!("OK PONG a{i}"));
        let join = c.reply().await?;
        assert_eq!(join, format!("OK JOIN Compilers Div2 Kiosk {i} 0"));
        assert!(c.reply().await?.starts_with("OK PRESENT "));
        assert_eq!(c.reply().await?, format!("OK PONG b{i}"));
    }
    assert_eq!(read_rows(&d.csv_path()).await?.len(), 10);
    Ok(())
}

#[tokio::test]
async fn the_original_clients_join_and_present_line_is_answered_in_one_write() -> Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let d = Daemon::start(&["--class-length", "0s"])?;
    let mut stream = tokio::net::TcpStream::connect(d.addr).await?;
    let within = std::time::Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Bounded: the greeting is one short line.
    while !got.contains(&b'\n') {
        let n = tokio::time::timeout(within, stream.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed before the greeting");
        got.extend_from_slice(&buf[..n]);
    }
    stream
        .write_all(b"ComputerNetworks_Div1_Kim_9_Present\n")
        .await?;
    // Both replies come in the same write: the first read after the line holds both (OK
    // PRESENT waits for the disk, so two writes would arrive apart).
    let n = tokio::time::timeout(within, stream.read(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf[..n]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text:?}");
    assert_eq!(lines[0], "OK JOIN ComputerNetworks Div1 Kim 9 0");
    assert!(lines[1].starts_with("OK PRESENT "), "{text:?}");
    Ok(())
}

#[tokio::test]
async fn history_over_tcp_is_the_join_then_the_mark_and_resume_without_a_seat_is_badtoken()
-> Result<()> {
    let d = Daemon::start(&["--class-length", "1s"])?;
    let mut a = d.connect().await?;
    assert!(a.cmd("HISTORY").await?.starts_with("ERR NOTJOINED "));
    assert!(a.cmd("RESUME feedc0de").await?.starts_with("ERR BADTOKEN "));
    assert!(a.cmd(&format!("JOIN {ANN}")).await?.starts_with("OK JOIN "));
    let running = a.cmd("HISTORY").await?;
    assert!(
        running.starts_with("OK HISTORY status=pending ") && running.contains(" join@"),
        "{running}"
    );
    // Serve the class length the server asked for; this wait is the behaviour under test.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let ok = a.cmd("PRESENT").await?;
    let marked_at = ok.strip_prefix("OK PRESENT ").expect("OK PRESENT");
    let done = a.cmd("HISTORY").await?;
    assert!(
        done.starts_with("OK HISTORY status=Present served=1 required=1 late=0 join@"),
        "{done}"
    );
    assert!(done.ends_with(&format!(" mark@{marked_at}")), "{done}");
    Ok(())
}
