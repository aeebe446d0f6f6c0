//! The keyed row chain against the real daemon and the real `attendanced verify` and
//! `migrate`: a file the daemon wrote verifies; an edited cell, a deleted row, two swapped
//! rows, a row added by hand and rows deleted from the end are each named; a file of the
//! previous version is refused until migrated.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::Result;
use attendance_tests::{Daemon, bin_path};

fn attendanced(args: &[&str], dir: &Path) -> Result<Output> {
    Ok(Command::new(bin_path("attendanced"))
        .env("ATTENDANCE_CONFIG", "/dev/null")
        .env_remove("STATE_DIRECTORY")
        .current_dir(dir)
        .args(args)
        .output()?)
}

fn verify(dir: &Path) -> Result<(i32, String)> {
    let out = attendanced(
        &["verify", "attendance.csv", "--key", "attendanced.key"],
        dir,
    )?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.code().unwrap_or(-1), text))
}

fn lines(path: &Path) -> Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(str::to_owned)
        .collect())
}

fn write(path: &Path, lines: &[String]) -> Result<()> {
    std::fs::write(path, lines.join("\n") + "\n")?;
    Ok(())
}

#[tokio::test]
async fn a_file_the_daemon_wrote_verifies_and_every_kind_of_tampering_is_named() -> Result<()> {
    let mut d = Daemon::start(&["--class-length", "0s"])?;
    for (i, name) in ["Ann", "Bob", "Cat", "Dan"].iter().enumerate() {
        let mut c = d.connect().await?;
        c.cmd(&format!("JOIN ComputerNetworks_Div1_{name}_{i}"))
            .await?;
        assert!(c.cmd("PRESENT").await?.starts_with("OK PRESENT "));
    }
    d.sigterm()?;
    d.wait()?;
    let dir = d.dir.path().to_owned();
    let csv = d.csv_path();
    let key = dir.join("attendanced.key");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&key)?.permissions().mode() & 0o777, 0o600);
    let key_bytes = std::fs::read(&key)?;
    let text = std::fs::read_to_string(&csv)?;
    assert!(
        !text.contains(&format!("{key_bytes:?}")),
        "the key is never in the file"
    );
    let (code, out) = verify(&dir)?;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("OK 4 rows, head "), "{out}");
    assert!(out.contains("agrees with the checkpoint"), "{out}");

    let good = lines(&csv)?;
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "an edited cell",
            {
                let mut l = good.clone();
                l[2] = l[2].replace(",Present,", ",Late,");
                l
            },
            "line 3",
        ),
        (
            "a deleted row",
            {
                let mut l = good.clone();
                l.remove(2);
                l
            },
            "line 3",
        ),
        (
            "two swapped rows",
            {
                let mut l = good.clone();
                l.swap(1, 2);
                l
            },
            "line 2",
        ),
        (
            "a row added by hand",
            {
                let mut l = good.clone();
                l.push("ComputerNetworks,Div1,Eve,9,Present,2026-12-06T10:00:00.000Z,2026-12-06T09:00:00.000Z,,0,60,,".to_owned());
                l
            },
            "line 6",
        ),
        (
            "the last row deleted",
            {
                let mut l = good.clone();
                l.pop();
                l
            },
            "missing at the end",
        ),
    ];
    for (what, tampered, named) in cases {
        write(&csv, &tampered)?;
        let (code, out) = verify(&dir)?;
        assert_eq!(code, 1, "{what}: {out}");
        assert!(
            out.contains("BROKEN") && out.contains(named),
            "{what}: {out}"
        );
    }
    write(&csv, &good)?;
    assert_eq!(verify(&dir)?.0, 0);
    Ok(())
}

#[tokio::test]
async fn a_file_of_the_previous_version_is_refused_until_migrated() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("attendance.csv");
    let v1 = "course,division,name,roll,status,marked_at,joined_at,client_addr\n\
              ComputerNetworks,Div1,Ann,1,Present,2026-11-23T10:00:00.000Z,2026-11-23T09:00:00.000Z,10.0.0.1\n";
    std::fs::write(&csv, v1)?;
    let (status, log) = Daemon::run_to_failure(dir.path(), &[])?;
    assert_eq!(status.code(), Some(78), "{log}");
    assert!(log.contains("attendanced migrate"), "{log}");
    assert_eq!(
        std::fs::read_to_string(&csv)?,
        v1,
        "never rewritten silently"
    );

    let out = attendanced(
        &["migrate", "attendance.csv", "--key", "attendanced.key"],
        dir.path(),
    )?;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("attendance.csv.v1"))?,
        v1
    );
    let (code, text) = verify(dir.path())?;
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("OK 1 rows"), "{text}");
    // The daemon starts on it, and its rows chain on.
    let mut d = Daemon::start_in(dir, &["--class-length", "0s"])?;
    let mut c = d.connect().await?;
    c.cmd("JOIN ComputerNetworks_Div1_Bob_2").await?;
    assert!(c.cmd("PRESENT").await?.starts_with("OK PRESENT "));
    d.sigterm()?;
    d.wait()?;
    let (code, text) = verify(d.dir.path())?;
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("OK 2 rows"), "{text}");
    Ok(())
}
