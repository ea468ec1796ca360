//! `/api/*` routes over the store (interim).
use std::sync::Arc;

use axum::Router;

use crate::server::ServerState;

/// The routes.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
}
