//! A `[[class]]` with a rotating code, a roster and a subnet allow-list, against the real
//! daemon over real TCP: the client address is the connection's own.

use anyhow::Result;
use attendance_server::attendance::code;
use attendance_tests::Daemon;

#[tokio::test]
async fn a_class_with_a_code_a_roster_and_subnets_admits_only_what_matches() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let roster = dir.path().join("div1.csv");
    std::fs::write(&roster, "name,roll\nAnn,1\nBob,2\n")?;
    let toml = format!(
        "[[class]]\ncourse = \"ComputerNetworks\"\ndivision = \"Div1\"\ncode = true\nroster = \"{}\"\nsubnet = [\"127.0.0.0/8\"]\n\n\
         [[class]]\ncourse = \"Lab\"\ndivision = \"Div1\"\nsubnet = [\"10.20.0.0/16\"]\n",
        roster.display()
    );
    let d = Daemon::start_with_config(&toml, &[])?;
    let secret = std::fs::read(d.dir.path().join("code-ComputerNetworks_Div1.secret"))?;
    let now = || {
        let secs =
            i64::try_from(attendance_protocol::Timestamp::now().unix_millis() / 1000).unwrap_or(0);
        code::format_code(code::code_at(&secret, secs))
    };

    let mut c = d.connect().await?;
    // The lab's subnet is elsewhere: this loopback connection is refused, and stays open.
    let refused = c.cmd("JOIN Lab_Div1_Ann_1").await?;
    assert!(refused.starts_with("ERR FORBIDDEN "), "{refused}");
    assert!(
        refused.contains("127.0.0.1"),
        "the real client address: {refused}"
    );
    let refused = c
        .cmd(&format!("JOIN ComputerNetworks_Div1_Zed_9 {}", now()))
        .await?;
    assert!(refused.starts_with("ERR NOTENROLLED "), "{refused}");
    let refused = c.cmd("JOIN ComputerNetworks_Div1_Ann_1").await?;
    assert!(refused.starts_with("ERR BADCODE "), "{refused}");
    let joined = c
        .cmd(&format!("JOIN ComputerNetworks_Div1_Ann_1 {}", now()))
        .await?;
    assert!(
        joined.starts_with("OK JOIN ComputerNetworks Div1 Ann 1 "),
        "{joined}"
    );
    // The class without rules of its own is ad hoc, as before.
    let mut other = d.connect().await?;
    assert!(
        other
            .cmd("JOIN Maths_Div1_Bob_2")
            .await?
            .starts_with("OK JOIN ")
    );
    Ok(())
}

/// The UTC wall time `secs_ago` seconds ago, as `HH:MM:SS`.
fn utc_time_ago(secs_ago: i64) -> String {
    let now = attendance_protocol::Timestamp::now().unix_millis() / 1000;
    let t = (i64::try_from(now).unwrap_or(0) - secs_ago).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
}

#[tokio::test]
async fn a_scheduled_session_closes_with_late_left_and_absent_records_and_event_ended() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let roster = dir.path().join("div1.csv");
    std::fs::write(&roster, "name,roll\nAnn,1\nBob,2\nZed,9\n")?;
    // Started 50 s ago, for 60 s: it ends in about 10 s; a JOIN now is late (after 10 s).
    let toml = format!(
        "timezone = \"UTC\"\n[[class]]\ncourse = \"ComputerNetworks\"\ndivision = \"Div1\"\n\
         weekdays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\n\
         start = \"{}\"\nlength = \"60s\"\nlate_after = \"10s\"\nroster = \"{}\"\n",
        utc_time_ago(50),
        roster.display()
    );
    let mut d = Daemon::start_with_config(&toml, &[])?;
    let mut ann = d.connect().await?;
    let joined = ann.cmd("JOIN ComputerNetworks_Div1_Ann_1").await?;
    assert!(joined.starts_with("OK JOIN "), "{joined}");
    let mut bob = d.connect().await?;
    bob.cmd("JOIN ComputerNetworks_Div1_Bob_2").await?;
    assert_eq!(bob.cmd("QUIT").await?, "OK BYE");
    // Ann stays to the end and never sends PRESENT: the close records her and tells her.
    let ended = ann.event("EVENT ENDED").await?;
    assert_eq!(ended, "EVENT ENDED Late 0");
    ann.closed().await?;
    let late = ann.cmd("PING").await;
    assert!(late.is_err(), "closed after the session: {late:?}");
    d.sigterm()?;
    d.wait()?;
    let text = std::fs::read_to_string(d.csv_path())?;
    let status = |name: &str| {
        text.lines()
            .find(|l| l.contains(&format!(",{name},")))
            .and_then(|l| l.split(',').nth(4))
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(status("Ann"), "Late", "{text}");
    assert_eq!(status("Bob"), "Left", "{text}");
    assert_eq!(status("Zed"), "Absent", "{text}");
    assert!(
        std::fs::read_to_string(d.dir.path().join("attendance.csv.checkpoints"))?
            .contains(",session-close,3,")
    );
    Ok(())
}

#[tokio::test]
async fn attend_asks_for_the_class_code_and_checks_in_with_it() -> Result<()> {
    use std::io::Write as _;
    let toml = "[[class]]\ncourse = \"ComputerNetworks\"\ndivision = \"Div1\"\ncode = true\n";
    let d = Daemon::start_with_config(toml, &["--class-length", "1s"])?;
    let secret = std::fs::read(d.dir.path().join("code-ComputerNetworks_Div1.secret"))?;
    let secs = i64::try_from(attendance_protocol::Timestamp::now().unix_millis() / 1000)?;
    let code = code::format_code(code::code_at(&secret, secs));
    let mut child = std::process::Command::new(attendance_tests::bin_path("attend"))
        .args([
            "--server",
            &d.addr.to_string(),
            "ComputerNetworks_Div1_Ann_1",
        ])
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(stdin) = child.stdin.as_mut() {
        writeln!(stdin, "{code}")?;
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Class code"), "it asked: {text}");
    assert!(text.contains("marked"), "{text}");
    Ok(())
}
