//! The teacher dashboard `/teacher`: sign-in, the class list and class pages, their live
//! Server-Sent Events, and the CSV download.

use axum::Router;

use crate::routes::WebState;

/// Sign-in sessions and their limits.
#[derive(Debug, Default)]
pub struct Teacher {}

/// `/teacher` and below.
pub fn routes() -> Router<WebState> {
    Router::new()
}
