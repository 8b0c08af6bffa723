//! Only the edge may talk to the origin: every route but `/health` needs a valid
//! `X-Edge-Signature` (`shared::signing`), and the principal it signs scopes every query.
//! Each signature is single-use: its `X-Edge-Nonce` is claimed once it verifies
//! (`shared::signing::replay`, shared by replicas through Redis), and a copy is refused with
//! 401 `replayed_request`. A request without a nonce (an edge from before it, `v1=`) is
//! refused, unless `EDGE_LEGACY_SIGNATURES=accept` (only for the deploy that brings the nonce).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use shared::principal::Principal;
use shared::signing::replay::Claim;
use shared::signing::{
    BodyHash, SignedRequest, SigningError, check_nonce, check_timestamp, verify, verify_legacy,
};

use crate::AppState;
use crate::error::{AppError, Failed};
use crate::request_id::RequestId;

/// Largest request body accepted. An agent's system prompt is the largest legitimate body
/// (100,000 characters); a megabyte of "turn text" is not one.
pub const MAX_BODY_BYTES: usize = 512 * 1024;

/// Routes reachable without a signature: the load balancer's liveness probe.
const UNSIGNED: [&str; 1] = [shared::health::HEALTH_PATH];

/// The authenticated caller, put in the request by [`require_signature`].
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    /// The tenant every query is scoped to.
    pub fn tenant(&self) -> &str {
        &self.0.tenant_id
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Failed;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let request_id = RequestId::from_request_parts(parts, state)
            .await
            .unwrap_or_else(|never| match never {});
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(Failed(AppError::NoPrincipal, request_id))
    }
}

/// Whether a request is a WebSocket upgrade, whose body the signature marks as a stream.
fn is_websocket_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::GET
        && headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Middleware: verifies the edge signature (and buffers the body to hash it, refusing bodies
/// over [`MAX_BODY_BYTES`]), then decodes the principal.
pub async fn require_signature(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if UNSIGNED.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(RequestId::generate);
    match authenticate(&state, request).await {
        Ok(request) => next.run(request).await,
        Err(error) => {
            if matches!(error, AppError::Unauthorized(_) | AppError::Replayed) {
                tracing::warn!(reason = %error, "edge signature refused");
            }
            Failed(error, request_id).into_response()
        }
    }
}

async fn authenticate(state: &AppState, request: Request) -> Result<Request, AppError> {
    let now_secs = state.now_ms() / 1000;
    let (mut parts, body) = request.into_parts();
    let unauthorized = |error: SigningError| AppError::Unauthorized(error.to_string());

    let signature = header_text(&parts.headers, shared::headers::EDGE_SIGNATURE)
        .ok_or(SigningError::MissingSignature)
        .map_err(unauthorized)?
        .to_owned();
    let timestamp = check_timestamp(
        header_text(&parts.headers, shared::headers::EDGE_TIMESTAMP),
        now_secs,
    )
    .map_err(unauthorized)?;
    let nonce = match check_nonce(header_text(&parts.headers, shared::headers::EDGE_NONCE)) {
        Ok(nonce) => Some(nonce.to_owned()),
        Err(SigningError::MissingNonce) if state.config.accept_legacy_signatures => None,
        Err(error) => return Err(unauthorized(error)),
    };

    let (body_hash, body) = if is_websocket_upgrade(&parts.method, &parts.headers) {
        (BodyHash::Stream, Body::empty())
    } else {
        let bytes = read_limited(body).await?;
        (BodyHash::of(&bytes), Body::from(bytes))
    };
    let principal_header = header_text(&parts.headers, shared::headers::EDGE_PRINCIPAL)
        .unwrap_or("")
        .to_owned();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let secrets: Vec<&[u8]> = state
        .config
        .signing_secrets
        .iter()
        .map(Vec::as_slice)
        .collect();
    let signed = SignedRequest {
        method: parts.method.as_str(),
        path_and_query: &path_and_query,
        timestamp,
        nonce: nonce.as_deref().unwrap_or(""),
        body: body_hash,
        principal: &principal_header,
    };
    match &nonce {
        Some(nonce) => {
            verify(&secrets, &signed, Some(&signature), now_secs).map_err(unauthorized)?;
            // Only a verified request spends its nonce: nobody can burn the edge's in advance.
            match state.fanout.claim_nonce(nonce, timestamp, now_secs).await {
                Claim::Fresh => {}
                Claim::Replayed => return Err(AppError::Replayed),
                Claim::Full => {
                    tracing::error!("the in-process nonce cache is full; refusing new requests");
                    return Err(AppError::Unavailable("replay guard"));
                }
            }
        }
        None => {
            verify_legacy(&secrets, &signed, Some(&signature), now_secs).map_err(unauthorized)?;
            tracing::debug!("accepted a legacy edge signature (no nonce)");
        }
    }

    if !principal_header.is_empty() {
        let principal = Principal::from_header(&principal_header)
            .map_err(|error| AppError::Unauthorized(error.to_string()))?;
        parts.extensions.insert(Caller(principal));
    }
    Ok(Request::from_parts(parts, body))
}

async fn read_limited(body: Body) -> Result<Bytes, AppError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(AppError::PayloadTooLarge(MAX_BODY_BYTES))
        }
        Err(error) => Err(AppError::bad_request(
            "unreadable_body",
            format!("the request body could not be read: {error}"),
        )),
    }
}
