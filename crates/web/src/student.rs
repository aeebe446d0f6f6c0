//! The student page `/` and the assets it needs, embedded in the binary.

use axum::Router;

use crate::routes::WebState;

/// `/` and its assets.
pub fn routes() -> Router<WebState> {
    Router::new()
}
