//! `cargo xtask`: release chores that need the workspace's own code.
//!
//! `cargo xtask dist-assets` renders the man pages (clap_mangen) and shell completions
//! (clap_complete) of `attendanced` and `attend` from the same clap definitions the binaries
//! parse, into `<target dir>/assets/{man,completions}`, where the Debian package metadata of
//! `crates/server` picks them up.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::CommandFactory as _;
use clap_complete::Shell;
use flate2::Compression;
use flate2::write::GzEncoder;

const USAGE: &str = "usage: cargo xtask dist-assets [--out DIR]

  dist-assets   render man pages and shell completions of attendanced and attend into
                DIR/man and DIR/completions (default DIR: <target dir>/assets)";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<()> {
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["dist-assets"] => dist_assets(&target_dir()?.join("assets")),
        ["dist-assets", "--out", dir] => dist_assets(Path::new(dir)),
        ["help" | "--help" | "-h"] | [] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown arguments {args:?}\n\n{USAGE}"),
    }
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
