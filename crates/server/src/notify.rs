//! systemd integration through `$NOTIFY_SOCKET` (sd-notify): READY once the listener is bound
//! and the CSV checked, STATUS lines with live numbers, WATCHDOG pings that prove the runtime and
//! the writer are alive, RELOADING and STOPPING. Without `$NOTIFY_SOCKET` every call is a no-op.

use std::sync::Arc;
use std::time::Duration;

use attendance_protocol::Timestamp;
use sd_notify::NotifyState;
use tracing::{debug, warn};

use crate::server::Shared;

/// How often STATUS is refreshed when no watchdog asks for more.
const STATUS_EVERY: Duration = Duration::from_secs(10);

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "cannot notify the service manager");
    }
}

fn status(shared: &Shared) -> String {
    format!(
        "{} clients connected, {} marked present today",
        shared.open_connections(),
        shared.store.marks_today(Timestamp::now())
    )
}

/// READY=1 with a STATUS line.
pub(crate) fn ready(shared: &Shared) {
    send(&[NotifyState::Ready, NotifyState::Status(&status(shared))]);
}

/// RELOADING=1 (with the monotonic time systemd 253+ requires).
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// STOPPING=1.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// Until shutdown: refreshes STATUS and, when systemd set a watchdog, sends WATCHDOG=1 at half
/// its interval, but only after the writer answered a ping queued behind the marks: a writer
/// stuck in a write or an `fdatasync` stops the pings, and systemd restarts the daemon.
pub(crate) async fn watchdog_loop(shared: Arc<Shared>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let tick = watchdog.map_or(STATUS_EVERY, |w| w.min(STATUS_EVERY));
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = shared.shutdown.cancelled() => break,
        }
        let Some(deadline) = watchdog else {
            send(&[NotifyState::Status(&status(&shared))]);
            continue;
        };
        match tokio::time::timeout(deadline, shared.store.ping()).await {
            Ok(Ok(())) => send(&[NotifyState::Watchdog, NotifyState::Status(&status(&shared))]),
            Ok(Err(_)) => break,
            Err(_) => warn!(
                "the csv writer did not answer within {deadline:?}; withholding the watchdog ping"
            ),
        }
    }
}
