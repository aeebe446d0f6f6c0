//! The admin Unix socket: the same line protocol for the local administrator, who needs no token
//! (the socket file is mode 0600, so only the daemon's user can connect).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, info, info_span, warn};

use super::conn::serve as serve_connection;
use super::lines::Lines;
use crate::daemon::ServerError;
use crate::engine::Engine;
use crate::session::Peer;

/// A bound admin socket; its file is removed when this is dropped.
#[derive(Debug)]
pub(crate) struct AdminListener {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for AdminListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the admin socket at `path` with mode 0600. A stale socket file left by a crash is
/// replaced; one that a running daemon still answers on is an error.
pub(crate) fn bind(path: &Path) -> Result<AdminListener, ServerError> {
    let err = |source| ServerError::AdminSocket {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another daemon is answering on it",
            )));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    info!(path = %path.display(), "admin socket ready");
    Ok(AdminListener {
        listener,
        path: path.to_owned(),
    })
}

/// Accepts admin connections until the future is dropped.
pub(crate) async fn serve(admin: &AdminListener, engine: &Arc<Engine>, tracker: &TaskTracker) {
    // Admin connections are numbered apart from TCP ones, from the top down.
    loop {
        match admin.listener.accept().await {
            Ok((stream, _)) => {
                let conn = engine.next_conn_id();
                let engine = Arc::clone(engine);
                let (read, write) = stream.into_split();
                let lines = Lines::new(read, engine.live().max_line);
                tracker.spawn(
                    serve_connection(engine, lines, write, Peer::Admin, conn)
                        .instrument(info_span!("admin", id = conn)),
                );
            }
            Err(e) => {
                warn!(error = %e, "admin socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
