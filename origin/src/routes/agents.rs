//! `/v1/agents` and the phone-number lookup.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use shared::agent::{Agent, AgentPage, AgentSpec, check_id, is_e164};

use super::{load_agent, page_limit, query, stored};
use crate::AppState;
use crate::edge_auth::Caller;
use crate::error::{AppError, Failed, OrFail};
use crate::request_id::RequestId;

/// Largest page.
const MAX_PAGE: u32 = 100;
/// Page size when none is asked.
const DEFAULT_PAGE: u32 = 50;

fn valid_id(id: &str) -> Result<(), AppError> {
    check_id(id).map_err(|error| AppError::bad_request("invalid_id", error.to_string()))
}

/// `PUT /v1/agents/{id}`: creates or replaces the agent.
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Failed> {
    valid_id(&id).or_fail(&request_id)?;
    let spec = agent_spec(&body).or_fail(&request_id)?;
    spec.validate_with(state.config.outbound_policy)
        .map_err(|error| AppError::InvalidField {
            code: "invalid_agent",
            field: spec.field_of(&error),
            message: error.to_string(),
        })
        .or_fail(&request_id)?;
    let (agent, created) = stored(
        &state,
        state
            .store
            .put_agent(caller.tenant(), &id, &spec, state.now_ms())
            .await,
    )
    .or_fail(&request_id)?;
    state.fanout.invalidate_agent(caller.tenant(), &id).await;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(agent)).into_response())
}

/// Reads an agent, naming the field of a setting that is unknown or of the wrong kind
/// (`voice.interruptible: "sometimes" is not one of none, dtmf, speech, any …`). Not JSON at
/// all is `malformed_json`, as on every route.
fn agent_spec(bytes: &[u8]) -> Result<AgentSpec, AppError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return AppError::bad_request(
                "malformed_json",
                format!("the body is not the JSON this route takes: {inner}"),
            );
        }
        let message = if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        AppError::bad_request("invalid_agent", message)
    })
}

/// `GET /v1/agents/{id}`.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(id): Path<String>,
) -> Result<Json<Agent>, Failed> {
    valid_id(&id).or_fail(&request_id)?;
    load_agent(&state, caller.tenant(), &id)
        .await
        .or_fail(&request_id)?
        .map(Json)
        .ok_or(Failed(AppError::Missing("agent"), request_id))
}

/// `DELETE /v1/agents/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(id): Path<String>,
) -> Result<StatusCode, Failed> {
    valid_id(&id).or_fail(&request_id)?;
    let deleted = stored(&state, state.store.delete_agent(caller.tenant(), &id).await)
        .or_fail(&request_id)?;
    state.fanout.invalidate_agent(caller.tenant(), &id).await;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Failed(AppError::Missing("agent"), request_id))
    }
}

/// `GET /v1/agents?after=&limit=`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    uri: Uri,
) -> Result<Json<AgentPage>, Failed> {
    #[derive(serde::Deserialize)]
    struct Page {
        after: Option<String>,
        limit: Option<u32>,
    }
    let page: Page = query(&uri).or_fail(&request_id)?;
    let limit = page_limit(page.limit, DEFAULT_PAGE, MAX_PAGE).or_fail(&request_id)?;
    let agents = stored(
        &state,
        state
            .store
            .list_agents(caller.tenant(), page.after.as_deref(), limit)
            .await,
    )
    .or_fail(&request_id)?;
    let next_after = (agents.len() == limit as usize)
        .then(|| agents.last().map(|agent| agent.id.clone()))
        .flatten();
    Ok(Json(AgentPage { agents, next_after }))
}

/// `GET /v1/phone-numbers/{number}/agent`: who answers an incoming call to `number`.
pub async fn by_number(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(number): Path<String>,
) -> Result<Json<Agent>, Failed> {
    if !is_e164(&number) {
        return Err(Failed(
            AppError::bad_request(
                "invalid_phone_number",
                "the number must be E.164, e.g. +14155550100",
            ),
            request_id,
        ));
    }
    stored(
        &state,
        state.store.agent_for_number(caller.tenant(), &number).await,
    )
    .or_fail(&request_id)?
    .map(Json)
    .ok_or(Failed(
        AppError::Missing("agent for this number"),
        request_id,
    ))
}
