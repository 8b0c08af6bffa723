//! Building responses, and the one place a Worker's failures become HTTP statuses.

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
    /// The runtime failed underneath us; the cause is logged, never sent.
    Internal(worker::Error),
}

impl Failure {
    fn status(&self) -> u16 {
        match self {
            Failure::NotFound => 404,
            Failure::MethodNotAllowed => 405,
            Failure::Internal(_) => 500,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Failure::NotFound => "not_found",
            Failure::MethodNotAllowed => "method_not_allowed",
            Failure::Internal(_) => "internal",
        }
    }

    fn message(&self) -> &'static str {
        match self {
            Failure::NotFound => "no such route",
            Failure::MethodNotAllowed => "method not allowed on this route",
            Failure::Internal(_) => "internal error; quote the request id when reporting it",
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
pub fn respond(outcome: std::result::Result<Response, Failure>, request_id: &str) -> Result<Response> {
    let failure = match outcome {
        Ok(response) => return Ok(response),
        Err(failure) => failure,
    };
    if let Failure::Internal(cause) = &failure {
        console_error!("request {request_id} failed: {cause}");
    }
    let body = ErrorBody::new(failure.code(), failure.message(), request_id).to_json();
    json_text(failure.status(), body, request_id)
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
    Ok(Response::ok(body)?.with_status(status).with_headers(headers))
}
