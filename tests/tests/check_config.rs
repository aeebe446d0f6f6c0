//! `attendanced check-config`: the effective settings with their origins (exit 0), or the bad
//! key and its line in the file (exit 78) — and the daemon itself reports the same at start-up.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use attendance_tests::{LINE_TIMEOUT, bin_path};

/// EX_CONFIG: a configuration problem.
const EX_CONFIG: i32 = 78;

/// `attendanced` to run in `dir`, with no `ATTENDANCE_*` variables from the test's environment
/// (the daemon would read them as settings).
fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(bin_path("attendanced"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ATTENDANCE_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir).env("NO_COLOR", "1");
    cmd
}

/// Runs `attendanced <args>` in `dir` with the `ATTENDANCE_*` variables `env` only.
fn attendanced(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
    Ok(command(dir).args(args).envs(env.iter().copied()).output()?)
}

/// The report line of `key` (`key = value  # origin`).
fn line_of<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} ")))
        .unwrap_or_else(|| panic!("no line for {key} in:\n{stdout}"))
}

#[test]
fn a_valid_config_prints_every_setting_with_where_it_came_from_and_exits_0() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("attendanced.toml");
    std::fs::write(&file, "# a class of 45 minutes\nclass_length = \"45m\"\n")?;
    let file = file.to_str().expect("utf-8 path");
    let out = attendanced(
        dir.path(),
        &["--max-line", "300", "check-config", "--config", file],
        &[("ATTENDANCE_HEARTBEAT", "30s")],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let class_length = line_of(&stdout, "class_length");
    assert!(
        class_length.starts_with("class_length = \"45m\""),
        "{class_length}"
    );
    assert!(
        class_length.ends_with(&format!("# {file}, line 2")),
        "{class_length}"
    );
    let heartbeat = line_of(&stdout, "heartbeat");
    assert!(heartbeat.starts_with("heartbeat = \"30s\""), "{heartbeat}");
    assert!(
        heartbeat.ends_with("# environment variable ATTENDANCE_HEARTBEAT"),
        "{heartbeat}"
    );
    let max_line = line_of(&stdout, "max_line");
    assert!(max_line.starts_with("max_line = 300"), "{max_line}");
    assert!(
        max_line.ends_with("# command-line flag --max-line"),
        "{max_line}"
    );
    let listen = line_of(&stdout, "listen");
    assert!(listen.starts_with("listen = \"0.0.0.0:65001\""), "{listen}");
    assert!(listen.ends_with("# default"), "{listen}");
    let timezone = line_of(&stdout, "timezone");
    assert!(timezone.starts_with("# timezone (unset)"), "{timezone}");
    Ok(())
}

#[test]
fn the_example_config_checks_clean() -> Result<()> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/attendanced.toml");
    let dir = tempfile::tempdir()?;
    let out = attendanced(
        dir.path(),
        &[
            "check-config",
            "--config",
            example.to_str().expect("utf-8 path"),
        ],
        &[],
    )?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn an_unknown_key_exits_78_naming_the_key_and_its_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("attendanced.toml");
    std::fs::write(&file, "max_line = 100\n\nclas_length = \"5s\"\n")?;
    let file = file.to_str().expect("utf-8 path");
    let out = attendanced(dir.path(), &["check-config", "--config", file], &[])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{stderr}");
    assert!(stderr.contains("unknown key `clas_length`"), "{stderr}");
    assert!(stderr.contains(&format!("{file}, line 3")), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing is reported for an invalid config"
    );
    Ok(())
}

#[test]
fn a_bad_value_exits_78_naming_the_key_and_its_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("attendanced.toml");
    for (text, line) in [
        ("heartbeat = \"1m\"\nmax_line = \"many\"\n", 2), // wrong type
        ("max_line = 10\n", 1),                           // out of range
    ] {
        std::fs::write(&file, text)?;
        let path = file.to_str().expect("utf-8 path");
        let out = attendanced(dir.path(), &["check-config", "--config", path], &[])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EX_CONFIG), "{stderr}");
        assert!(stderr.contains("max_line"), "{stderr}");
        assert!(stderr.contains(&format!("{path}, line {line}")), "{stderr}");
    }
    Ok(())
}

#[test]
fn a_bad_environment_variable_is_named() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = attendanced(
        dir.path(),
        &["check-config", "--config", "/dev/null"],
        &[("ATTENDANCE_CLAS_LENGTH", "5s")],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{stderr}");
    assert!(
        stderr.contains("environment variable ATTENDANCE_CLAS_LENGTH"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn a_missing_config_file_exits_78() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = attendanced(
        dir.path(),
        &["check-config", "--config", "no-such.toml"],
        &[],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{stderr}");
    assert!(stderr.contains("no-such.toml"), "{stderr}");
    Ok(())
}

#[test]
fn the_daemon_refuses_to_start_with_the_same_located_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("attendanced.toml");
    std::fs::write(&file, "\nclas_length = \"5s\"\n")?;
    let file = file.to_str().expect("utf-8 path");
    let csv = dir.path().join("attendance.csv");
    let mut child = command(dir.path())
        .args(["--listen", "127.0.0.1:0", "--csv"])
        .arg(&csv)
        .args(["--config", file])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Bounded: a daemon that started anyway would otherwise keep the test waiting for ever.
    let deadline = Instant::now() + LINE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            child.kill()?;
            bail!("the daemon started with an unknown key");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Read after the exit, to the end: every line is there (no reader thread to race).
    let mut log = String::new();
    child
        .stderr
        .take()
        .context("stderr")?
        .read_to_string(&mut log)?;
    assert_eq!(status.code(), Some(EX_CONFIG), "{log}");
    assert!(log.contains("unknown key `clas_length`"), "{log}");
    assert!(log.contains(&format!("{file}, line 2")), "{log}");
    Ok(())
}

#[test]
fn version_names_the_build_commit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = attendanced(dir.path(), &["--version"], &[])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    // `attendanced 0.1.0 (abc1234)`, or `(unknown)` outside a git checkout.
    let rest = stdout
        .trim()
        .strip_prefix(&format!("attendanced {} (", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("unexpected version line {stdout:?}"));
    let commit = rest.strip_suffix(')').expect("closing parenthesis");
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{stdout:?}"
    );
    Ok(())
}

#[test]
fn fsync_never_is_valid_but_warned_about_loudly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = attendanced(
        dir.path(),
        &["--fsync", "never", "check-config", "--config", "/dev/null"],
        &[],
    )?;
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("# WARNING: fsync = \"never\""), "{stdout}");
    assert!(stderr.contains("warning: fsync = \"never\""), "{stderr}");
    assert!(stderr.contains("loses acknowledged marks"), "{stderr}");
    // The default gives no warning.
    let out = attendanced(dir.path(), &["check-config", "--config", "/dev/null"], &[])?;
    assert!(!String::from_utf8_lossy(&out.stdout).contains("WARNING"));
    assert!(String::from_utf8_lossy(&out.stderr).is_empty());
    Ok(())
}
