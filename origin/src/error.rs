//! The origin's one error type, and the one place its statuses are chosen.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::error_body::{ErrorBody, ErrorCode};

use crate::request_id::RequestId;
use crate::store::StoreError;

/// Seconds a client should wait before retrying while a dependency is away.
pub const RETRY_AFTER_SECS: u32 = 2;

/// Why a request could not be answered as asked.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No route matches.
    #[error("no such route")]
    NotFound,
    /// The route exists, not for this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The edge signature is missing, wrong or stale, or the principal unreadable.
    #[error("{0}")]
    Unauthorized(String),
    /// A validly signed request whose nonce was already used: a replay.
    #[error("this signed request was already received once (its nonce is used)")]
    Replayed,
    /// A signed request without a principal on a route that is scoped by tenant.
    #[error("this route needs the caller's principal")]
    NoPrincipal,
    /// The body is not the JSON the route takes, or a field is invalid.
    #[error("{message}")]
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// One field of the body is invalid; `field` names it by its JSON path.
    #[error("{message}")]
    InvalidField {
        /// Stable code.
        code: &'static str,
        /// JSON path of the field, e.g. `inference.temperature`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The body is larger than the origin accepts.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The resource does not exist (for this tenant).
    #[error("no such {0}")]
    Missing(&'static str),
    /// The resource is in a state that forbids the request.
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// The process is draining for a shutdown: new calls and relay sockets go to another task.
    #[error("this origin task is shutting down; retry, another task takes new calls")]
    Draining,
    /// A dependency is away; retry shortly.
    #[error("the {0} is unavailable; retry shortly")]
    Unavailable(&'static str),
    /// The database is down (or did not answer): nothing that needs it is done; retry after
    /// `Retry-After`.
    #[error("the database is unavailable; retry after the time in Retry-After")]
    DatabaseUnavailable,
    /// A bug or inconsistent data; the cause is in the log.
    #[error("internal error")]
    Internal,
}

impl AppError {
    /// A 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A 409 with a code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound | Self::Missing(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized(_) | Self::Replayed | Self::NoPrincipal => StatusCode::UNAUTHORIZED,
            Self::BadRequest { .. } | Self::InvalidField { .. } => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Unavailable(_) | Self::DatabaseUnavailable | Self::Draining => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, documented code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound | Self::Missing(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unauthorized(_) | Self::NoPrincipal => "unauthorized",
            Self::Replayed => "replayed_request",
            Self::BadRequest { code, .. }
            | Self::InvalidField { code, .. }
            | Self::Conflict { code, .. } => code,
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::Unavailable(_) => "unavailable",
            Self::DatabaseUnavailable => ErrorCode::DatabaseUnavailable.as_str(),
            Self::Draining => "draining",
            Self::Internal => "internal",
        }
    }

    /// The response, carrying the request id so a client can quote it.
    pub fn into_response_for(self, request_id: &RequestId) -> Response {
        let status = self.status();
        let mut body = ErrorBody::new(self.code(), self.to_string(), request_id.as_str());
        if let Self::InvalidField { field, .. } = &self {
            body = body.with_field(field.as_str());
        }
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("AYBIZA-EDGE-HMAC-SHA256"),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                // The rest of the body was never read, so this connection cannot carry another
                // request: say so, or a pooling client may reuse it and fail.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                Self::DatabaseUnavailable
            }
            StoreError::CallExists => {
                Self::conflict("call_exists", "a call with this id already exists")
            }
            StoreError::CallNotFound => Self::Missing("call"),
            StoreError::CallEnded => Self::conflict("call_ended", "the call has ended"),
            StoreError::PhoneNumberTaken(number) => Self::conflict(
                "phone_number_taken",
                format!("phone number {number} already belongs to another agent"),
            ),
            StoreError::Corrupt(cause) => {
                tracing::error!(%cause, "database returned inconsistent data");
                Self::Internal
            }
        }
    }
}

/// A handler's error together with the id of the request it failed.
pub struct Failed(pub AppError, pub RequestId);

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        self.0.into_response_for(&self.1)
    }
}

/// Attaches the request id to an error on its way out of a handler.
pub trait OrFail<T> {
    /// `Err(e)` becomes `Err(Failed(e.into(), id))`.
    fn or_fail(self, request_id: &RequestId) -> Result<T, Failed>;
}

impl<T, E: Into<AppError>> OrFail<T> for Result<T, E> {
    fn or_fail(self, request_id: &RequestId) -> Result<T, Failed> {
        self.map_err(|error| Failed(error.into(), request_id.clone()))
    }
}
