//! `/v1/webhooks`: a tenant's webhook endpoints (`shared::webhook`), their delivery log, and a
//! retry of one delivery. Endpoints are checked like tools' URLs (the SSRF rule of
//! `shared::outbound_url`); deliveries are signed with the tenant's signing secret
//! (`/v1/signing-secret`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use shared::identifier::is_resource_id;
use shared::webhook::{
    DeliveryList, Endpoint, EndpointConfig, EndpointError, EndpointList, EndpointPatch,
    EndpointSpec, MAX_ENDPOINTS,
};

use super::{load_agent, page_limit, query, stored};
use crate::AppState;
use crate::edge_auth::Caller;
use crate::error::{AppError, Failed, OrFail};
use crate::request_id::RequestId;

/// Largest page of the delivery log.
const MAX_PAGE: u32 = 100;
/// Page size when none is asked.
const DEFAULT_PAGE: u32 = 50;

fn valid_id(id: &str) -> Result<(), AppError> {
    if is_resource_id(id) {
        Ok(())
    } else {
        Err(AppError::bad_request(
            "invalid_id",
            "the id must be 1 to 64 letters, digits, '-' or '_'",
        ))
    }
}

/// The body as `T`: not JSON at all is `malformed_json`; JSON of the wrong shape (an unknown
/// field, an unknown event) is `invalid_webhook`.
fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(bytes).map_err(|error| {
        if error.is_syntax() || error.is_eof() {
            AppError::bad_request(
                "malformed_json",
                format!("the body is not the JSON this route takes: {error}"),
            )
        } else {
            AppError::bad_request("invalid_webhook", error.to_string())
        }
    })
}

fn refused(error: &EndpointError) -> AppError {
    AppError::InvalidField {
        code: "invalid_webhook",
        field: error.field().to_owned(),
        message: error.to_string(),
    }
}

async fn existing(state: &AppState, tenant: &str, id: &str) -> Result<Endpoint, AppError> {
    valid_id(id)?;
    stored(state, state.store.get_webhook(tenant, id).await)?
        .ok_or(AppError::Missing("webhook endpoint"))
}

/// `POST /v1/webhooks`: 201 with the new endpoint.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    bytes: Bytes,
) -> Result<Response, Failed> {
    let tenant = caller.tenant();
    let spec: EndpointSpec = body(&bytes).or_fail(&request_id)?;
    let config = spec
        .validate(state.config.outbound_policy)
        .map_err(|error| refused(&error))
        .or_fail(&request_id)?;
    if let Some(agent) = &config.agent_id
        && load_agent(&state, tenant, agent)
            .await
            .or_fail(&request_id)?
            .is_none()
    {
        return Err(Failed(
            AppError::InvalidField {
                code: "invalid_webhook",
                field: "agent_id".into(),
                message: format!("no agent {agent:?}"),
            },
            request_id,
        ));
    }
    let count = stored(&state, state.store.list_webhooks(tenant).await)
        .or_fail(&request_id)?
        .len();
    if count >= MAX_ENDPOINTS {
        return Err(Failed(
            AppError::conflict(
                "too_many_webhooks",
                format!("a tenant has at most {MAX_ENDPOINTS} webhook endpoints"),
            ),
            request_id,
        ));
    }
    let id = format!("we_{}", uuid::Uuid::new_v4().simple());
    let endpoint = stored(
        &state,
        state
            .store
            .create_webhook(tenant, &id, &config, state.now_ms())
            .await,
    )
    .or_fail(&request_id)?;
    tracing::info!(tenant, endpoint = %endpoint.id, "webhook endpoint created");
    Ok((StatusCode::CREATED, Json(endpoint)).into_response())
}

/// `GET /v1/webhooks`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
) -> Result<Json<EndpointList>, Failed> {
    let endpoints =
        stored(&state, state.store.list_webhooks(caller.tenant()).await).or_fail(&request_id)?;
    Ok(Json(EndpointList { endpoints }))
}

/// `GET /v1/webhooks/{id}`.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, Failed> {
    existing(&state, caller.tenant(), &id)
        .await
        .map(Json)
        .or_fail(&request_id)
}

/// `PATCH /v1/webhooks/{id}`: changes the URL, events or description; `enabled: true`
/// re-enables a disabled endpoint.
pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Endpoint>, Failed> {
    let tenant = caller.tenant();
    let current = existing(&state, tenant, &id).await.or_fail(&request_id)?;
    let patch: EndpointPatch = body(&bytes).or_fail(&request_id)?;
    let config = patch
        .apply(
            &EndpointConfig {
                url: current.url,
                agent_id: current.agent_id,
                events: current.events,
                description: current.description,
            },
            state.config.outbound_policy,
        )
        .map_err(|error| refused(&error))
        .or_fail(&request_id)?;
    let endpoint = stored(
        &state,
        state
            .store
            .update_webhook(tenant, &id, &config, patch.enabled, state.now_ms())
            .await,
    )
    .or_fail(&request_id)?
    .ok_or(Failed(AppError::Missing("webhook endpoint"), request_id))?;
    if patch.enabled == Some(true) {
        // Its pending deliveries are due again.
        state.webhooks.wake();
    }
    Ok(Json(endpoint))
}

/// `DELETE /v1/webhooks/{id}`: the endpoint and its delivery log.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(id): Path<String>,
) -> Result<StatusCode, Failed> {
    valid_id(&id).or_fail(&request_id)?;
    let deleted = stored(
        &state,
        state.store.delete_webhook(caller.tenant(), &id).await,
    )
    .or_fail(&request_id)?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Failed(AppError::Missing("webhook endpoint"), request_id))
    }
}

/// `GET /v1/webhooks/{id}/deliveries?limit=`: the delivery log, newest first.
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<DeliveryList>, Failed> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Page {
        limit: Option<u32>,
    }
    let page: Page = query(&uri).or_fail(&request_id)?;
    let limit = page_limit(page.limit, DEFAULT_PAGE, MAX_PAGE).or_fail(&request_id)?;
    let tenant = caller.tenant();
    existing(&state, tenant, &id).await.or_fail(&request_id)?;
    let deliveries = stored(
        &state,
        state.store.list_deliveries(tenant, &id, limit).await,
    )
    .or_fail(&request_id)?;
    Ok(Json(DeliveryList { deliveries }))
}

/// `POST /v1/webhooks/{id}/deliveries/{event_id}/retry`: 202, the delivery due now (one more
/// attempt for a delivery whose retries ran out; a delivered one is sent again, with the same
/// idempotency key). 409 `endpoint_disabled` while the endpoint is disabled.
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path((id, event_id)): Path<(String, String)>,
) -> Result<Response, Failed> {
    let tenant = caller.tenant();
    let endpoint = existing(&state, tenant, &id).await.or_fail(&request_id)?;
    valid_id(&event_id).or_fail(&request_id)?;
    if !endpoint.enabled {
        return Err(Failed(
            AppError::conflict(
                "endpoint_disabled",
                "the endpoint is disabled; re-enable it with PATCH {\"enabled\": true}",
            ),
            request_id,
        ));
    }
    let delivery = stored(
        &state,
        state
            .store
            .retry_delivery(tenant, &id, &event_id, state.now_ms())
            .await,
    )
    .or_fail(&request_id)?
    .ok_or(Failed(AppError::Missing("delivery"), request_id))?;
    state.webhooks.wake();
    Ok((StatusCode::ACCEPTED, Json(delivery)).into_response())
}
