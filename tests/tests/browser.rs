//! The web port in a real browser: Debian's Chromium, driven by playwright-core through the
//! scripts of `tests/browser/`, against the real daemon on 127.0.0.1:0. Each scenario's
//! screenshots are in `target/browser-artefacts/<test>/`.
//!
//! Needs `/usr/bin/chromium` and `tests/browser/node_modules`: `cargo xtask test` installs
//! both. Without them these tests fail, saying so.

use anyhow::Result;
use attendance_tests::Daemon;
use attendance_tests::browser::Scenario;

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
