//! Live reload (SIGHUP): new live settings while students are connected, and a fresh CSV file
//! after rotation.
//!
//! The settings are cut in two types ([`Startup`], [`Live`]): only a [`Live`] can replace the
//! running one, so a setting fixed at start-up can never be reported as reloaded. A change to
//! one is reported as needing a restart instead.

use tracing::{error, info, warn};

use crate::daemon::Control;
use crate::engine::Engine;
use crate::ops::cli::Cli;
use crate::ops::config::Config;
use crate::ops::logging::LogFilter;

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Live settings that changed and now apply, as `key: old -> new`.
    pub applied: Vec<String>,
    /// Settings that changed in the configuration but apply only after a restart (the running
    /// value is kept), as `key: running -> configured`.
    pub restart_needed: Vec<String>,
}

/// Applies the live part of `new` to the running engine, reports the start-up part's changes
/// as needing a restart, then reopens the CSV.
///
/// # Errors
/// Why the CSV could not be reopened (the settings are still applied; the old file stays in
/// use).
pub(crate) async fn apply(engine: &Engine, new: &Config) -> Result<ReloadReport, String> {
    let (startup, live) = new.split();
    let report = ReloadReport {
        applied: changes(&**engine.live(), &live),
        restart_needed: changes(engine.startup(), &startup),
    };
    for change in &report.applied {
        info!(%change, "setting reloaded");
    }
    for change in &report.restart_needed {
        warn!(%change, "changed in the config, but only a restart applies it; keeping the running value");
    }
    engine.set_live(live);
    engine.store.reopen().await?;
    Ok(report)
}

/// What a SIGHUP needs to load the settings again.
#[derive(Debug)]
pub struct Reload {
    /// The config file, if any.
    pub file: Option<std::path::PathBuf>,
    /// The command line (its flags are the top layer of the settings).
    pub cli: Cli,
    /// The log filter, for `log_level`.
    pub log_filter: LogFilter,
}

/// On SIGHUP: load the settings again (refusing an invalid file, keeping the old settings),
/// apply the log level, and hand the rest to the server, which also reopens the CSV.
///
/// The handler is installed when this is called, not when the future is first polled: a
/// SIGHUP's default action ends the process.
pub fn on_sighup(
    reload: Reload,
    controls: tokio::sync::mpsc::Sender<Control>,
) -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let hup = signal(SignalKind::hangup());
    async move { reload_each_sighup(reload, controls, hup).await }
}

async fn reload_each_sighup(
    reload: Reload,
    controls: tokio::sync::mpsc::Sender<Control>,
    hup: std::io::Result<tokio::signal::unix::Signal>,
) {
    let mut hup = match hup {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot watch SIGHUP; reload needs a restart");
            return;
        }
    };
    while hup.recv().await.is_some() {
        info!("SIGHUP: reloading the settings and reopening the csv");
        let config = match Config::load(reload.file.as_deref(), &reload.cli) {
            Ok(c) => c,
            Err(e) => {
                error!("refusing the new configuration, keeping the running one: {e}");
                continue;
            }
        };
        reload.log_filter.apply(&config.log_level);
        let (tx, rx) = tokio::sync::oneshot::channel();
        if controls
            .send(Control::Reload(Box::new(config), tx))
            .await
            .is_err()
        {
            return;
        }
        match rx.await {
            Ok(Ok(report)) if report.applied.is_empty() && report.restart_needed.is_empty() => {
                info!("reload done; no setting changed");
            }
            Ok(Ok(report)) => info!(
                applied = %report.applied.join("; "),
                restart_needed = %report.restart_needed.join("; "),
                "reload done"
            ),
            Ok(Err(e)) => error!(error = %e, "reload: the csv could not be reopened"),
            Err(_) => return,
        }
    }
}

/// `key: old -> new` for every field that differs between `old` and `new`.
fn changes<T: serde::Serialize>(old: &T, new: &T) -> Vec<String> {
    let (old, new) = (fields(old), fields(new));
    old.iter()
        .zip(new.iter())
        .filter(|((_, before), (_, after))| before != after)
        .map(|((key, before), (_, after))| format!("{key}: {before} -> {after}"))
        .collect()
}

/// (key, value as text) for every field, in declaration order.
fn fields<T: serde::Serialize>(value: &T) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(figment::value::Value::Dict(_, dict)) = figment::value::Value::serialize(value) {
        for (k, v) in dict {
            out.push((k, value_text(&v)));
        }
    }
    out
}

fn value_text(v: &figment::value::Value) -> String {
    use figment::value::Value;
    match v {
        Value::String(_, s) => s.clone(),
        Value::Num(_, n) => n
            .to_u128()
            .map(|n| n.to_string())
            .or_else(|| n.to_i128().map(|n| n.to_string()))
            .or_else(|| n.to_f64().map(|n| n.to_string()))
            .unwrap_or_default(),
        Value::Bool(_, b) => b.to_string(),
        Value::Empty(_, _) => "(unset)".to_owned(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::config::{Live, Startup};

    /// Every key of the configuration is either live or fixed at start-up, never both and
    /// never neither: a new key must be placed.
    #[test]
    fn every_setting_is_either_live_or_restart_only() {
        let (startup, live) = Config::default().split();
        let mut keys: Vec<String> = fields(&startup)
            .into_iter()
            .chain(fields(&live))
            .map(|(k, _)| k)
            .collect();
        let total = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), total, "a key is in both halves");
        let mut all: Vec<String> = Config::keys().iter().map(|k| (*k).to_owned()).collect();
        all.sort();
        assert_eq!(keys, all);
    }

    #[test]
    fn a_change_names_the_key_and_both_values() {
        let old = Config::default();
        let new = Config {
            class_length: std::time::Duration::from_secs(5),
            max_connections: 7,
            ..Config::default()
        };
        let (old_startup, old_live): (Startup, Live) = old.split();
        let (new_startup, new_live) = new.split();
        assert_eq!(changes(&old_live, &new_live), ["class_length: 1h -> 5s"]);
        assert_eq!(
            changes(&old_startup, &new_startup),
            ["max_connections: 50000 -> 7"]
        );
    }
}
