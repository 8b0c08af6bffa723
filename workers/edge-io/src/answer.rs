//! Building responses, and the one place a Worker's failures become HTTP statuses.

use std::borrow::Cow;

use serde::Serialize;
use shared::error_body::ErrorBody;
use shared::health::{HealthReport, HealthStatus};
use worker::{Headers, Response, Result, console_error};

/// Why a Worker could not answer as asked. Each variant has one status, chosen in `status()`.
#[derive(Debug)]
pub enum Failure {
    /// No route matches the method and path.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// A domain error, already given its status by the Worker's one mapping function.
    Rejected(Rejection),
    /// The runtime failed underneath us; the cause is logged, never sent.
    Internal(worker::Error),
}

/// A refusal with everything the client sees: status, stable code, message, extra headers
/// (`WWW-Authenticate`, `Retry-After`, …). Each Worker builds these in one function that maps
/// its domain errors, so statuses are chosen in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status, 4xx or 5xx.
    pub status: u16,
    /// Stable snake_case code clients branch on (owned when passed through from another
    /// service's answer).
    pub code: Cow<'static, str>,
    /// Human sentence; never a secret or an internal cause.
    pub message: String,
    /// Extra response headers.
    pub headers: Vec<(&'static str, String)>,
}

impl Rejection {
    /// A rejection without extra headers.
    pub fn new(
        status: u16,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl From<Rejection> for Failure {
    fn from(rejection: Rejection) -> Self {
        Failure::Rejected(rejection)
    }
}

impl Failure {
    /// The rejection a client sees for this failure.
    fn into_rejection(self, request_id: &str) -> Rejection {
        match self {
            Failure::NotFound => Rejection::new(404, "not_found", "no such route"),
            Failure::MethodNotAllowed => Rejection::new(
                405,
                "method_not_allowed",
                "method not allowed on this route",
            ),
            Failure::Rejected(rejection) => rejection,
            Failure::Internal(cause) => {
                console_error!("request {request_id} failed: {cause}");
                Rejection::new(
                    500,
                    "internal",
                    "internal error; quote the request id when reporting it",
                )
            }
        }
    }
}

impl From<worker::Error> for Failure {
    fn from(error: worker::Error) -> Self {
        Failure::Internal(error)
    }
}

/// Turns a handler's outcome into the response the client sees; never an `Err` to the runtime,
/// whose default error page would leak the cause.
pub fn respond(
    outcome: std::result::Result<Response, Failure>,
    request_id: &str,
) -> Result<Response> {
    match outcome {
        Ok(response) => Ok(response),
        Err(failure) => rejection_response(&failure.into_rejection(request_id), request_id),
    }
}

/// The JSON error envelope for a rejection, with its headers.
pub fn rejection_response(rejection: &Rejection, request_id: &str) -> Result<Response> {
    let body = ErrorBody::new(
        rejection.code.as_ref(),
        rejection.message.as_str(),
        request_id,
    )
    .to_json();
    let response = json_text(rejection.status, body, request_id)?;
    let headers = response.headers().clone();
    for (name, value) in &rejection.headers {
        headers.set(name, value)?;
    }
    Ok(response.with_headers(headers))
}

/// A JSON answer with the request id attached.
pub fn json<T: Serialize>(
    status: u16,
    value: &T,
    request_id: &str,
) -> std::result::Result<Response, Failure> {
    let body = serde_json::to_string(value).map_err(|e| Failure::Internal(e.into()))?;
    Ok(json_text(status, body, request_id)?)
}

/// `GET /health`: 200 when every binding answered, 503 otherwise, so a monitor needs no parsing.
pub fn health(report: &HealthReport, request_id: &str) -> std::result::Result<Response, Failure> {
    let status = match report.status {
        HealthStatus::Ok => 200,
        HealthStatus::Degraded => 503,
    };
    Ok(json_text(status, report.to_json(), request_id)?)
}

fn json_text(status: u16, body: String, request_id: &str) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set(shared::headers::REQUEST_ID, request_id)?;
    headers.set("cache-control", "no-store")?;
    Ok(Response::ok(body)?
        .with_status(status)
        .with_headers(headers))
}
