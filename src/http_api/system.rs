//! Placeholder: no routes yet.

use std::sync::Arc;

use axum::Router;

use super::ApiState;

pub(super) const ROUTES: &[(&str, &str)] = &[];

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
}
