//! `attendanced report` over a file the real daemon wrote.

use std::process::Command;

use anyhow::Result;
use attendance_tests::{Daemon, bin_path};

#[tokio::test]
async fn report_lists_the_marked_and_the_roster_absentees_as_csv_and_json() -> Result<()> {
    let mut d = Daemon::start(&["--class-length", "0s"])?;
    let mut a = d.connect().await?;
    a.cmd("JOIN ComputerNetworks_Div1_Ann_1").await?;
    assert!(a.cmd("PRESENT").await?.starts_with("OK PRESENT "));
    let mut other = d.connect().await?;
    other.cmd("JOIN Maths_Div1_Bob_2").await?;
    assert!(other.cmd("PRESENT").await?.starts_with("OK PRESENT "));
    d.sigterm()?;
    d.wait()?;
    let roster = d.dir.path().join("roster.csv");
    std::fs::write(&roster, "name,roll\nAnn,1\nZed,9\n")?;
    let report = |format: &str| {
        Command::new(bin_path("attendanced"))
            .env("ATTENDANCE_CONFIG", "/dev/null")
            .args([
                "report",
                "--class",
                "ComputerNetworks_Div1",
                "--format",
                format,
            ])
            .arg("--file")
            .arg(d.csv_path())
            .arg("--roster")
            .arg(&roster)
            .output()
    };
    let csv = report("csv")?;
    assert!(csv.status.success(), "{csv:?}");
    let text = String::from_utf8(csv.stdout)?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("course,division,name,roll,status,"));
    assert!(
        lines[1].starts_with("ComputerNetworks,Div1,Ann,1,Present,"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("ComputerNetworks,Div1,Zed,9,Absent,"),
        "{text}"
    );
    let json = report("json")?;
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    assert_eq!(parsed.as_array().map(Vec::len), Some(2));
    assert_eq!(parsed[1]["status"], "Absent");
    let bad = Command::new(bin_path("attendanced"))
        .env("ATTENDANCE_CONFIG", "/dev/null")
        .args(["report", "--class", "NoDivision", "--day", "2026-13-40"])
        .output()?;
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    Ok(())
}
