//! Every request carries an id: the edge's `X-Request-Id` when it sent a sane one, else a new
//! UUID. The id is in every log line of the request and in the response, beside the trace id:
//! the request's span is the child of the edge's W3C `traceparent` (`crate::telemetry`).

use axum::extract::{FromRequestParts, Request};
use axum::http::HeaderValue;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use shared::request_id::{Trust, choose};
use tracing::Instrument;

/// The request's id, available to handlers as an extractor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// A fresh id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(uuid::Uuid::new_v4().to_string())))
    }
}

/// In a response's extensions: its request logs its own line, inside the request's span, when
/// it is done (an SSE turn's `turn finished`), so [`assign`] writes no `answered` line for it —
/// one line per turn, as on the relay.
#[derive(Debug, Clone, Copy)]
pub struct LogsItsOwnLine;

/// Middleware: assigns the id, logs the request once it is answered (unless it
/// [`LogsItsOwnLine`]), echoes the id back.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let incoming = request
        .headers()
        .get(shared::headers::REQUEST_ID)
        .and_then(|value| value.to_str().ok());
    // The origin sits behind the signed edge, so the edge's id is adopted.
    let id = match choose(Trust::Internal, incoming, None) {
        Some(id) => id.to_owned(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    request.extensions_mut().insert(RequestId(id.clone()));

    macro_rules! request_span {
        ($target:expr) => {
            tracing::info_span!(
                target: $target,
                "request",
                request_id = %id,
                trace_id = tracing::field::Empty,
                method = %request.method(),
                path = %request.uri().path(),
                otel.kind = "server",
            )
        };
    }
    // Health checks and scrapes are logged like any request but not traced
    // (`telemetry::PROBE_TARGET`): a trace per load-balancer probe would bury the calls'.
    let span = if crate::telemetry::is_probe(request.uri().path()) {
        request_span!(crate::telemetry::PROBE_TARGET)
    } else {
        request_span!(module_path!())
    };
    let traceparent = request
        .headers()
        .get(shared::headers::TRACEPARENT)
        .and_then(|value| value.to_str().ok());
    if let Some(trace_id) = crate::telemetry::adopt_parent(&span, traceparent) {
        span.record("trace_id", trace_id.as_str());
    }
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    if response.extensions().get::<LogsItsOwnLine>().is_none() {
        span.in_scope(|| {
            tracing::info!(
                status = response.status().as_u16(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "answered"
            );
        });
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(shared::headers::REQUEST_ID, value);
    }
    response
}
