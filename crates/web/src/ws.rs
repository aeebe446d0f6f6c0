//! `/ws`: the line protocol over WebSocket, one text frame per line each way.

use axum::Router;

use crate::routes::WebState;

/// `/ws`.
pub fn routes() -> Router<WebState> {
    Router::new()
}
