//! The origin's one error type, and the one place its statuses are chosen.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shared::error_body::ErrorBody;

use crate::request_id::RequestId;

/// Why a request could not be answered as asked.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No route matches.
    #[error("no such route")]
    NotFound,
    /// The route exists, not for this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
}

impl AppError {
    fn status(&self) -> StatusCode {
        match self {
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AppError::NotFound => "not_found",
            AppError::MethodNotAllowed => "method_not_allowed",
        }
    }

    /// The response, carrying the request id so a client can quote it.
    pub fn into_response_for(self, request_id: &RequestId) -> Response {
        let body = ErrorBody::new(self.code(), self.to_string(), request_id.as_str());
        (self.status(), Json(body)).into_response()
    }
}

/// A handler's error together with the id of the request it failed.
pub struct Failed(pub AppError, pub RequestId);

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        self.0.into_response_for(&self.1)
    }
}
