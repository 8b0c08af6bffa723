//! Handlers.

use axum::Json;
use axum::extract::State;
use shared::health::HealthReport;

use crate::AppState;
use crate::error::{AppError, Failed};
use crate::request_id::RequestId;

const SERVICE: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Liveness: the process answers. Dependencies are `/ready`'s business, so a database outage
/// does not make ECS kill healthy tasks.
pub async fn health(State(_state): State<AppState>) -> Json<HealthReport> {
    Json(HealthReport::from_checks(SERVICE, VERSION, []))
}

/// Any route not matched above.
pub async fn not_found(request_id: RequestId) -> Failed {
    Failed(AppError::NotFound, request_id)
}

/// A route matched but not its method.
pub async fn method_not_allowed(request_id: RequestId) -> Failed {
    Failed(AppError::MethodNotAllowed, request_id)
}
