//! Finding a binary of this workspace for the profile the tests run in, built first with the
//! cargo that runs them, so a test never runs a stale `attendanced`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use crate::KitError;

/// Variables cargo sets for a test process, not for a build: passed on, they make build scripts
/// that watch them (ring watches `CARGO_MANIFEST_DIR`) look dirty, so this build and the next
/// `cargo test` would each rebuild the TLS stack and the binaries, in turn.
const TEST_ONLY_VARS: [&str; 5] = [
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
];

/// The path of binary `name` in `target/<profile>/`, beside the running test executable
/// (`target/<profile>/deps/<test>-<hash>`), after `cargo build --bins -p <package>…` for
/// `packages` (once per process and set of packages; a no-op when they are up to date). Not
/// run by cargo (no `CARGO` variable), it uses what is there.
///
/// # Errors
/// [`KitError::Build`] if the build fails, [`KitError::NotBuilt`] if the binary is not there.
pub fn cargo_binary(name: &str, packages: &[&str]) -> Result<PathBuf, KitError> {
    static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let key = packages.join(" ");
    {
        let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
        let built = built.get_or_insert_with(HashSet::new);
        if !built.contains(&key) {
            build(packages)?;
            built.insert(key);
        }
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| KitError::NotBuilt(exe.clone()))?;
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(KitError::NotBuilt(path))
    }
}

fn build(packages: &[&str]) -> Result<(), KitError> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let what = packages.join(", ");
    let release = std::env::current_exe()
        .ok()
        .is_some_and(|p| p.components().any(|c| c.as_os_str() == "release"));
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--bins"]);
    for package in packages {
        cmd.args(["-p", package]);
    }
    if release {
        cmd.arg("--release");
    }
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("CARGO_PKG_") || TEST_ONLY_VARS.contains(&name.as_ref()) {
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|e| KitError::Build {
            what: what.clone(),
            why: e.to_string(),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(KitError::Build {
            what,
            why: format!("cargo build exited with {status}"),
        })
    }
}
