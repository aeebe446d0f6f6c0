// Shared by the build scripts of crates/server and crates/client (included, not a crate).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../../build-support/git_commit.rs");
    println!("cargo:rerun-if-env-changed=ATTENDANCED_GIT_COMMIT");
    let commit = std::env::var("ATTENDANCED_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ATTENDANCED_GIT_COMMIT={commit}");
    watch_head();
}

/// Asks cargo to rerun this script when HEAD moves: HEAD itself (a checkout), the branch ref it
/// points to (a commit), and packed-refs. Only existing files are named: cargo treats a missing
/// one as always changed, which would rerun git on every build. A branch not yet written as a
/// loose ref is watched through its directory, where a commit creates it.
fn watch_head() {
    let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) else {
        return; // no git, or not a checkout: nothing to watch
    };
    watch(Path::new(&head));
    if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"]) {
        watch(Path::new(&packed));
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(loose) = git(&["rev-parse", "--git-path", &branch]) {
            let loose = Path::new(&loose);
            if loose.exists() {
                watch(loose);
            } else if let Some(dir) = loose.parent() {
                watch(dir);
            }
        }
    }
}

fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// Runs git in the package directory; `None` if git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}
