//! Live reload (SIGHUP): new settings where they can change while students are connected, and
//! a fresh CSV file after rotation.

use crate::config::Config;
use crate::server::Shared;
use tracing::{info, warn};

/// Settings that take effect only after a restart (the listener, files, sockets, sizes fixed at
/// start). A reload that changes them keeps the old value and says so.
const RESTART_ONLY: &[&str] = &[
    "listen",
    "csv",
    "admin_token_file",
    "admin_socket",
    "tls_cert",
    "tls_key",
    "max_connections",
    "max_per_address",
    "fsync",
    "timezone",
    "metrics_listen",
];

/// Applies `new` to the running server: live settings at once (new values are read by every
/// connection at its next use; limits and line length apply to new connections), restart-only
/// settings kept as they were, then reopens the CSV. Returns what changed.
///
/// # Errors
/// Why the CSV could not be reopened (settings are still applied; the old file stays in use).
pub(crate) async fn apply(shared: &Shared, mut new: Config) -> Result<Vec<String>, String> {
    let old = shared.config.load_full();
    let old_values = serde_json_like(&old);
    let new_values = serde_json_like(&new);
    let mut changed = Vec::new();
    for ((key, before), (_, after)) in old_values.iter().zip(new_values.iter()) {
        if before == after {
            continue;
        }
        if RESTART_ONLY.contains(&key.as_str()) {
            warn!(setting = %key, from = %before, to = %after, "changed in the config, but only a restart applies it; keeping the old value");
        } else {
            info!(setting = %key, from = %before, to = %after, "setting reloaded");
            changed.push(format!("{key}: {before} -> {after}"));
        }
    }
    keep_restart_only(&old, &mut new);
    shared.config.store(std::sync::Arc::new(new));
    shared.store.reopen().await?;
    Ok(changed)
}

/// Copies the restart-only settings of `old` into `new`.
fn keep_restart_only(old: &Config, new: &mut Config) {
    new.listen = old.listen;
    new.csv.clone_from(&old.csv);
    new.admin_token_file.clone_from(&old.admin_token_file);
    new.admin_socket.clone_from(&old.admin_socket);
    new.tls_cert.clone_from(&old.tls_cert);
    new.tls_key.clone_from(&old.tls_key);
    new.max_connections = old.max_connections;
    new.max_per_address = old.max_per_address;
    new.fsync = old.fsync;
    new.timezone.clone_from(&old.timezone);
    new.tcp_keepalive = old.tcp_keepalive;
    new.send_buffer = old.send_buffer;
    new.metrics_listen = old.metrics_listen;
}

/// (key, value as text) for every setting, in a fixed order.
fn serde_json_like(config: &Config) -> Vec<(String, String)> {
    let value = figment::value::Value::serialize(config);
    let mut out = Vec::new();
    if let Ok(figment::value::Value::Dict(_, dict)) = value {
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
        Value::Empty(..) => "(unset)".to_owned(),
        other => format!("{other:?}"),
    }
}
