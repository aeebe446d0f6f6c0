//! `cargo xtask`: chores that need the workspace's own code or more than cargo.
//!
//! `cargo xtask dist-assets` renders the man pages (clap_mangen) and shell completions
//! (clap_complete) of `attendanced` and `attend` from the same clap definitions the binaries
//! parse, into `<target dir>/assets/{man,completions}`, where the Debian package metadata of
//! `crates/server` picks them up.
//!
//! `cargo xtask test [ARGS…]` is the README's one test command: it installs what the browser
//! and service-backed tests need and is missing — Debian's `chromium`, `redis-server`,
//! `redis-tools`, `postgresql`, `postgresql-client` and `haproxy` (`apt-get`, through `sudo -n` when not
//! root; the tests start private servers of their own) and `tests/browser/node_modules` (`npm ci`, when missing or older than its
//! `package-lock.json`) — then runs `cargo test --workspace --locked ARGS…` and exits as it did.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::CommandFactory as _;
use clap_complete::Shell;
use flate2::Compression;
use flate2::write::GzEncoder;

const USAGE: &str = "usage: cargo xtask dist-assets [--out DIR]
       cargo xtask test [CARGO TEST ARGS...]

  dist-assets   render man pages and shell completions of attendanced and attend into
                DIR/man and DIR/completions (default DIR: <target dir>/assets)
  test          install chromium, redis-server, postgresql, haproxy and tests/browser/node_modules
                if missing, then run
                cargo test --workspace --locked CARGO TEST ARGS...";

/// The browser the browser tests drive (`tests/src/browser.rs`).
const CHROMIUM: &str = "/usr/bin/chromium";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<ExitCode> {
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["dist-assets"] => dist_assets(&target_dir()?.join("assets")).map(|()| ExitCode::SUCCESS),
        ["dist-assets", "--out", dir] => dist_assets(Path::new(dir)).map(|()| ExitCode::SUCCESS),
        ["test", rest @ ..] => test(rest),
        ["help" | "--help" | "-h"] | [] => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => bail!("unknown arguments {args:?}\n\n{USAGE}"),
    }
}

/// Installs what the browser tests need, then runs the workspace's tests with `args`.
fn test(args: &[&str]) -> Result<ExitCode> {
    ensure_chromium()?;
    ensure_services()?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?;
    ensure_node_modules(&workspace.join("tests/browser"))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // What `cargo run` set for xtask itself: passed on, build scripts that watch these
    // (ring watches CARGO_MANIFEST_DIR) would look dirty, and `cargo test` and `cargo xtask
    // test` would rebuild the TLS stack in turn.
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&name.as_ref())
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .args(["test", "--workspace", "--locked"])
        .args(args)
        .current_dir(workspace)
        .status()
        .context("run cargo test")?;
    // A test run killed by a signal has no code: a failure all the same.
    Ok(status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .map_or(ExitCode::FAILURE, ExitCode::from))
}

/// `apt-get install -y chromium` unless [`CHROMIUM`] is there: as root, or through `sudo -n`
/// (never a password prompt). The package lists are updated only if the first try fails (a
/// fresh machine or container has none).
fn ensure_chromium() -> Result<()> {
    ensure_package(CHROMIUM, "chromium", "the browser tests")
}

/// The servers the service-backed tests start privately (on free loopback ports) and the
/// clients they check them with: Redis (the cluster tests), PostgreSQL (the store tests) and
/// HAProxy (the node-crash test runs the shipped `config/haproxy.cfg`).
fn ensure_services() -> Result<()> {
    ensure_package("/usr/sbin/haproxy", "haproxy", "the load-balancer test")?;
    ensure_package("/usr/bin/redis-server", "redis-server", "the cluster tests")?;
    ensure_package("/usr/bin/redis-cli", "redis-tools", "the cluster tests")?;
    ensure_package("/usr/bin/psql", "postgresql-client", "the store tests")?;
    let has_initdb = std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|d| {
        d.filter_map(Result::ok)
            .any(|e| e.path().join("bin/initdb").is_file())
    });
    if has_initdb {
        return Ok(());
    }
    ensure_package("/usr/lib/postgresql", "postgresql", "the store tests")
}

/// `apt-get install -y package` unless `path` exists (see [`ensure_chromium`]).
fn ensure_package(path: &str, package: &str, for_what: &str) -> Result<()> {
    if Path::new(path).exists() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let apt = |args: &[&str]| {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        eprintln!(
            "xtask: {} apt-get {}",
            if root { "" } else { "sudo -n" },
            args.join(" ")
        );
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    eprintln!("xtask: {path} is missing; {for_what} need Debian's {package}");
    let install = ["install", "-y", "--no-install-recommends", package];
    let installed = apt(&install) || (apt(&["update"]) && apt(&install));
    if !installed {
        let why = if root {
            "apt-get failed"
        } else {
            "it needs root or password-less sudo"
        };
        bail!(
            "could not install {package} ({why}): install Debian's {package} (apt-get install \
             {package}) so that {path} exists, then run `cargo xtask test` again"
        );
    }
    if !Path::new(path).exists() {
        bail!("apt-get installed {package}, but {path} is still missing");
    }
    Ok(())
}

/// `npm ci` in `dir` when its `node_modules` is missing or older than its
/// `package-lock.json`.
fn ensure_node_modules(dir: &Path) -> Result<()> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let lock = modified(&dir.join("package-lock.json"))
        .with_context(|| format!("no package-lock.json in {}", dir.display()))?;
    if modified(&dir.join("node_modules")).is_some_and(|m| m >= lock) {
        return Ok(());
    }
    eprintln!("xtask: npm ci in {}", dir.display());
    // --ignore-scripts: playwright-core has no install script, and none may download a
    // browser.
    let status = Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .context("run npm (the browser tests need Node.js 20 or newer with npm)")?;
    if !status.success() {
        bail!("npm ci in {} failed ({status})", dir.display());
    }
    Ok(())
}

/// Writes every man page and completion script under `out`.
fn dist_assets(out: &Path) -> Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }

    // The daemon is a system administration command (section 8), its subcommands get pages of
    // their own (`attendanced-check-config`); the client is a user command (section 1).
    let mut daemon = attendance_server::cli::Cli::command();
    daemon.build(); // propagates global flags (--config) into the subcommands
    write_man(&man, &daemon, "attendanced", "8")?;
    for sub in daemon.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("attendanced-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("attendanced {}", sub.get_name()));
        write_man(&man, &page, &name, "8")?;
    }
    let client = attendance_client::cli::Args::command();
    write_man(&man, &client, "attend", "1")?;

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        for mut cmd in [
            attendance_server::cli::Cli::command(),
            attendance_client::cli::Args::command(),
        ] {
            let name = cmd.get_name().to_owned();
            let path = clap_complete::generate_to(shell, &mut cmd, &name, &completions)
                .with_context(|| format!("write {shell} completions for {name}"))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// Renders `cmd`'s man page as `<name>.<section>.gz` (gzip -9, no timestamp: reproducible).
fn write_man(dir: &Path, cmd: &clap::Command, name: &str, section: &str) -> Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section(section)
        .source(format!("attendanced {}", env!("CARGO_PKG_VERSION")))
        .manual(if section == "8" {
            "System Administration"
        } else {
            "User Commands"
        })
        .render(&mut page)
        .with_context(|| format!("render the man page of {name}"))?;
    let path = dir.join(format!("{name}.{section}.gz"));
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&page)?;
    std::fs::write(&path, gz.finish()?).with_context(|| format!("write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The workspace's target directory, as cargo sees it (`CARGO_TARGET_DIR`, `build.target-dir`
/// or `<workspace>/target`).
fn target_dir() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .context("run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parse cargo metadata")?;
    let dir = meta["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    Ok(PathBuf::from(dir))
}
