//! Browser scenarios: runs a script of `tests/browser/` (Debian's Chromium driven by
//! playwright-core, see `tests/browser/lib.mjs`) against a running daemon and returns the JSON
//! result line it prints last.
//!
//! A scenario prints one JSON object a line: `{"progress":"<name>",…}` as it goes (a test can
//! wait for one, bounded, to act on the daemon at that point), and finally `{"ok":true,…}` or
//! `{"ok":false,"error":"…"}`. Its screenshots go to `target/browser-artefacts/<test>/`.
//!
//! Chromium (`/usr/bin/chromium`) and `tests/browser/node_modules` are installed by
//! `cargo xtask test`; when either is missing a scenario fails saying so, never skips.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use attendance_testkit::{Output, Process, Spawn};

/// The browser the scenarios drive.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Longest a scenario may run, start of Chromium included.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(90);

/// `tests/browser`, where the scripts and their `package-lock.json` are.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// `<target dir>/browser-artefacts/<test>/`, emptied: the running test executable is
/// `<target dir>/<profile>/deps/<test>-<hash>`.
///
/// # Errors
/// If the directory cannot be made.
pub fn artefacts_dir(test: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .ok_or_else(|| anyhow!("no target directory above {}", exe.display()))?;
    let dir = target.join("browser-artefacts").join(test);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("empty {}", dir.display()));
        }
        _ => {}
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// Checks that Chromium and the locked playwright-core are installed.
///
/// # Errors
/// Naming `cargo xtask test`, which installs them, when they are not.
pub fn check_installed() -> Result<()> {
    if !Path::new(CHROMIUM).is_file() {
        bail!(
            "{CHROMIUM} is missing: the browser tests need Debian's chromium; \
             run `cargo xtask test`, which installs it"
        );
    }
    let dir = browser_dir();
    let lock = std::fs::read_to_string(dir.join("package-lock.json"))
        .with_context(|| format!("read {}/package-lock.json", dir.display()))?;
    let locked = version_in(&lock, "node_modules/playwright-core")?;
    let installed = dir.join("node_modules/playwright-core/package.json");
    let Ok(installed) = std::fs::read_to_string(&installed) else {
        bail!(
            "{} is missing: run `cargo xtask test`, which runs `npm ci` in tests/browser",
            installed.display()
        );
    };
    let installed: serde_json::Value = serde_json::from_str(&installed)?;
    if installed["version"].as_str() != Some(locked.as_str()) {
        bail!(
            "tests/browser/node_modules has playwright-core {}, package-lock.json wants \
             {locked}: run `cargo xtask test`, which runs `npm ci` again",
            installed["version"]
        );
    }
    Ok(())
}

/// The version of `package` (a key of `packages`) in a `package-lock.json`.
fn version_in(lock: &str, package: &str) -> Result<String> {
    let lock: serde_json::Value = serde_json::from_str(lock).context("parse package-lock.json")?;
    lock["packages"][package]["version"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("package-lock.json has no {package}"))
}

/// A scenario being set up: script and arguments.
#[derive(Debug)]
pub struct Scenario {
    script: String,
    args: Vec<String>,
    out: PathBuf,
}

impl Scenario {
    /// `tests/browser/<script>` against the web server at `url`, its screenshots in
    /// [`artefacts_dir`]`(test)`.
    ///
    /// # Errors
    /// If Chromium or playwright-core is missing ([`check_installed`]) or the artefacts
    /// directory cannot be made.
    pub fn new(test: &str, script: &str, url: &str) -> Result<Self> {
        check_installed()?;
        let out = artefacts_dir(test)?;
        let timeout_ms = SCENARIO_TIMEOUT.saturating_sub(Duration::from_secs(5));
        Ok(Self {
            script: script.to_owned(),
            args: vec![
                "--url".into(),
                url.to_owned(),
                "--out".into(),
                out.display().to_string(),
                "--timeout".into(),
                timeout_ms.as_millis().to_string(),
            ],
            out,
        })
    }

    /// Adds `--<name> <value>`.
    pub fn arg(mut self, name: &str, value: &str) -> Self {
        self.args.push(format!("--{name}"));
        self.args.push(value.to_owned());
        self
    }

    /// Starts `node <script> …`. Its stderr is merged into its stdout, so a crash before the
    /// result line is in the failure message.
    ///
    /// # Errors
    /// If node cannot be started.
    pub fn start(self) -> Result<Running> {
        let process = Spawn::new("sh")
            .args(["-c", r#"exec node "$@" 2>&1"#, "sh"])
            .arg(&self.script)
            .args(&self.args)
            .current_dir(browser_dir())
            .output(Output::Stdout)
            .forward(
                std::env::var_os("ATTENDANCE_TEST_LOGS")
                    .is_some()
                    .then_some("[browser] "),
            )
            .spawn()
            .context("start node (Node.js 20 or newer must be on PATH)")?;
        Ok(Running {
            process,
            script: self.script,
            out: self.out,
            started: std::time::Instant::now(),
        })
    }

    /// Runs it to the end: [`Scenario::start`] then [`Running::finish`].
    ///
    /// # Errors
    /// As those.
    pub fn run(self) -> Result<serde_json::Value> {
        self.start()?.finish()
    }
}

/// A scenario that is running; killed when dropped.
#[derive(Debug)]
pub struct Running {
    process: Process,
    script: String,
    out: PathBuf,
    started: std::time::Instant,
}

impl Running {
    /// Waits (bounded by what is left of [`SCENARIO_TIMEOUT`]) for the scenario's
    /// `{"progress":"<name>",…}` line and returns it.
    ///
    /// # Errors
    /// If it does not come: the scenario failed or exited first.
    pub fn progress(&mut self, name: &str) -> Result<serde_json::Value> {
        let needle = format!(r#""progress":"{name}""#);
        let left = SCENARIO_TIMEOUT.saturating_sub(self.started.elapsed());
        match self.process.wait_for_line(&needle, left) {
            Ok(line) => Ok(serde_json::from_str(&line)?),
            // Its output ended, or it is stuck: either way it is done (killed if stuck).
            Err(e) => match self.process.wait_timeout(Duration::from_secs(2)) {
                Ok(status) => bail!(
                    "{} ended ({status}) before its progress {name:?}; its last output:\n{}",
                    self.script,
                    self.process.tail()
                ),
                Err(_) => bail!("{}: no progress {name:?}: {e}", self.script),
            },
        }
    }

    /// Waits for the scenario to exit and returns its `{"ok":true,…}` line.
    ///
    /// # Errors
    /// If it fails, prints no result, or runs past [`SCENARIO_TIMEOUT`] (it is killed then);
    /// the error has its `error` and its last lines of output.
    pub fn finish(mut self) -> Result<serde_json::Value> {
        let left = SCENARIO_TIMEOUT.saturating_sub(self.started.elapsed());
        let status = self.process.wait_timeout(left);
        let lines = self.process.remaining_lines(Duration::from_secs(5));
        let result = lines
            .iter()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("ok").is_some());
        let context = || {
            format!(
                "{} ({}, screenshots in {}); its last output:\n{}",
                self.script,
                match &status {
                    Ok(s) => s.to_string(),
                    Err(e) => e.to_string(),
                },
                self.out.display(),
                self.process.tail()
            )
        };
        match (&status, result) {
            (Ok(s), Some(v)) if s.success() && v["ok"] == true => Ok(v),
            (_, Some(v)) if v["ok"] == false => {
                bail!("{}\n{}", v["error"].as_str().unwrap_or("failed"), context())
            }
            _ => bail!("no result line\n{}", context()),
        }
    }
}
