//! `/v1/signing-secret`: the tenant's secret for `X-Aybiza-Signature`. Its value is shown
//! only in the answer that creates it (the first `GET`) or rotates it; every other answer shows
//! its hint. Answers are `Cache-Control: no-store`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shared::outbound_signature;

use super::{json_body, stored};
use crate::AppState;
use crate::edge_auth::Caller;
use crate::error::{AppError, Failed, OrFail};
use crate::request_id::RequestId;
use crate::signing_secret::new_secret;
use crate::store::SigningSecret;

/// Grace of the previous secret after a rotation when the request names none: a day.
pub const DEFAULT_GRACE_SECS: u64 = 86_400;
/// Longest grace: a week.
pub const MAX_GRACE_SECS: u64 = 7 * 86_400;

/// What the API shows of a secret.
#[derive(Debug, Serialize)]
struct SecretView {
    /// The value: only when created or rotated by this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// `whsec_…` and its last four characters.
    hint: String,
    created_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotated_at_ms: Option<u64>,
    /// The previous secret's hint, while it still signs.
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_expires_at_ms: Option<u64>,
    /// The header carrying signatures.
    header: &'static str,
}

impl SecretView {
    fn of(secret: &SigningSecret, show: bool, now_ms: u64) -> Self {
        let previous_live = secret
            .previous_expires_at_ms
            .is_some_and(|until| now_ms < until);
        Self {
            secret: show.then(|| secret.secret.clone()),
            hint: outbound_signature::hint(&secret.secret),
            created_at_ms: secret.created_at_ms,
            rotated_at_ms: secret.rotated_at_ms,
            previous_hint: secret
                .previous
                .as_deref()
                .filter(|_| previous_live)
                .map(outbound_signature::hint),
            previous_expires_at_ms: secret.previous_expires_at_ms.filter(|_| previous_live),
            header: "X-Aybiza-Signature",
        }
    }
}

fn answer(status: StatusCode, view: SecretView) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Json(view)).into_response()
}

/// `GET /v1/signing-secret`: the secret's metadata; 201 with its value when this creates it.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
) -> Result<Response, Failed> {
    let tenant = caller.tenant();
    let now = state.now_ms();
    if let Some(secret) =
        stored(&state, state.store.signing_secret(tenant).await).or_fail(&request_id)?
    {
        return Ok(answer(StatusCode::OK, SecretView::of(&secret, false, now)));
    }
    let (secret, created) = stored(
        &state,
        state
            .store
            .create_signing_secret(tenant, &new_secret(), now)
            .await,
    )
    .or_fail(&request_id)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(answer(status, SecretView::of(&secret, created, now)))
}

/// `POST /v1/signing-secret/rotate` body: how long the replaced secret keeps signing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotate {
    #[serde(default)]
    previous_valid_for_secs: Option<u64>,
}

/// `POST /v1/signing-secret/rotate`: a new secret (shown once); the previous one keeps signing
/// beside it for the grace asked (`previous_valid_for_secs`, default a day, at most a week;
/// 0 stops it at once, e.g. after a leak).
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    body: Bytes,
) -> Result<Response, Failed> {
    let request: Rotate = if body.iter().all(u8::is_ascii_whitespace) {
        Rotate::default()
    } else {
        json_body(&body).or_fail(&request_id)?
    };
    let grace = request
        .previous_valid_for_secs
        .unwrap_or(DEFAULT_GRACE_SECS);
    if grace > MAX_GRACE_SECS {
        return Err(Failed(
            AppError::InvalidField {
                code: "invalid_rotation",
                field: "previous_valid_for_secs".into(),
                message: format!("previous_valid_for_secs must be 0 to {MAX_GRACE_SECS}"),
            },
            request_id,
        ));
    }
    let tenant = caller.tenant();
    let now = state.now_ms();
    let secret = stored(
        &state,
        state
            .store
            .rotate_signing_secret(tenant, &new_secret(), now + grace * 1_000, now)
            .await,
    )
    .or_fail(&request_id)?;
    state.secrets.forget(tenant);
    tracing::info!(tenant, grace_secs = grace, "signing secret rotated");
    let status = if secret.rotated_at_ms.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(answer(status, SecretView::of(&secret, true, now)))
}
