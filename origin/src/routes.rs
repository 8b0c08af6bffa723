//! Handlers: operations routes here, the API in `agents` and `calls`.

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use shared::agent::Agent;
use shared::health::{BindingHealth, HealthReport};
use shared::usage::{UsageReport, day_range};

use crate::AppState;
use crate::edge_auth::Caller;
use crate::error::{AppError, Failed, OrFail};
use crate::request_id::RequestId;
use crate::store::StoreError;

pub mod agents;
pub mod calls;
pub mod signing_secret;
pub mod webhooks;

const SERVICE: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Liveness: the process answers. Dependencies are `/ready`'s business, so a database outage
/// does not make ECS kill healthy tasks. While draining (after SIGTERM) it answers 503 with a
/// failed `DRAINING` check, so a load balancer or a health probe sends nothing new here.
pub async fn health(State(state): State<AppState>) -> Response {
    let draining = draining_check(&state);
    let status = if draining.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(HealthReport::from_checks(SERVICE, VERSION, draining)),
    )
        .into_response()
}

/// The failed `DRAINING` check of a process shutting down; nothing otherwise.
fn draining_check(state: &AppState) -> Option<(String, BindingHealth)> {
    state.draining().then(|| {
        (
            "DRAINING".to_owned(),
            BindingHealth::failed(
                "shutting down: live calls finish or move, new ones go elsewhere".to_owned(),
                None,
            ),
        )
    })
}

/// Readiness: the database answers, Redis (when configured) answers, Bedrock is configured, the
/// process is not draining. 503 when the database or Bedrock is not usable, or while draining; Redis only degrades, so its failure shows
/// in the report but keeps 200.
pub async fn ready(State(state): State<AppState>) -> Response {
    let started = std::time::Instant::now();
    // While the probe finds the database down, `/ready` says so at once rather than waiting
    // out the pool's acquire timeout.
    let database = async {
        if state.db_health.is_up() {
            state.store.ping().await
        } else {
            Err(StoreError::Unavailable(
                state
                    .db_health
                    .last_error()
                    .unwrap_or_else(|| "the database is down".into()),
            ))
        }
    };
    let (database, redis, bedrock) =
        tokio::join!(database, state.fanout.redis_health(), state.llm.readiness());
    let elapsed = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    let database_ok = database.is_ok();
    let mut checks = vec![(
        "DATABASE".to_owned(),
        match database {
            Ok(()) => BindingHealth::answered(elapsed),
            Err(error) => {
                state.metrics.db_error(&error);
                BindingHealth::failed(error.to_string(), elapsed)
            }
        },
    )];
    if let Some(redis) = redis {
        checks.push((
            "REDIS".to_owned(),
            match redis {
                Ok(()) => BindingHealth::answered(elapsed),
                Err(error) => BindingHealth::failed(error, elapsed),
            },
        ));
    }
    let bedrock_ok = bedrock.ok;
    let mut bedrock_health = if bedrock.ok {
        BindingHealth::answered(None)
    } else {
        BindingHealth::failed(bedrock.detail.clone(), None)
    };
    bedrock_health.version = Some(bedrock.detail);
    checks.push(("BEDROCK".to_owned(), bedrock_health));
    let draining = draining_check(&state);
    let draining_now = draining.is_some();
    checks.extend(draining);
    let mut report = HealthReport::from_checks(SERVICE, VERSION, checks);
    report.journal = Some(state.journals.report(state.now_ms()));
    let status = if database_ok && bedrock_ok && !draining_now {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// Refuses a `/v1/…` request at once while the database is down (`crate::db_health`): `503
/// database_unavailable` with `Retry-After`, instead of waiting out the pool's acquire timeout.
/// A relay socket is let through when live calls' contexts are kept in Redis: the relay takes
/// a call over from another replica without the database (`crate::journal`).
pub async fn require_database(
    State(state): State<AppState>,
    request_id: RequestId,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let takeover = state.fanout.keeps_takeovers()
        && path.starts_with("/v1/calls/")
        && path.ends_with("/relay");
    if path.starts_with("/v1/") && !takeover && !state.db_health.is_up() {
        state
            .metrics
            .db_errors
            .get_or_create(&crate::metrics::label("kind", "refused_while_down"))
            .inc();
        return AppError::DatabaseUnavailable.into_response_for(&request_id);
    }
    next.run(request).await
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let journal = state.journals.report(state.now_ms());
    let metrics = &state.metrics;
    metrics
        .journal_depth
        .set(i64::try_from(journal.depth).unwrap_or(i64::MAX));
    metrics
        .journal_oldest_age_ms
        .set(i64::try_from(journal.oldest_age_ms).unwrap_or(i64::MAX));
    metrics.database_up.set(i64::from(state.db_health.is_up()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /v1/usage?from=YYYY-MM-DD&to=YYYY-MM-DD`.
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    uri: Uri,
) -> Result<Json<UsageReport>, Failed> {
    #[derive(serde::Deserialize)]
    struct Range {
        from: Option<String>,
        to: Option<String>,
    }
    let range: Range = query(&uri).or_fail(&request_id)?;
    let days = day_range(range.from.as_deref(), range.to.as_deref(), state.now_ms())
        .map_err(|error| AppError::bad_request("invalid_range", error.to_string()))
        .or_fail(&request_id)?;
    let usage =
        stored(&state, state.store.usage(caller.tenant(), days).await).or_fail(&request_id)?;
    Ok(Json(UsageReport::new(caller.tenant(), days, usage)))
}

/// Any route not matched above.
pub async fn not_found(request_id: RequestId) -> Failed {
    Failed(AppError::NotFound, request_id)
}

/// A route matched but not its method.
pub async fn method_not_allowed(request_id: RequestId) -> Failed {
    Failed(AppError::MethodNotAllowed, request_id)
}

/// Middleware: counts every answer by route template, method and status.
pub async fn count_request(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    state
        .metrics
        .requests
        .get_or_create(&vec![
            ("route", route),
            ("method", method),
            ("status", response.status().as_u16().to_string()),
        ])
        .inc();
    response
}

/// Parses a JSON body into `T`, with the envelope's 400 on failure.
pub fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(bytes).map_err(|error| {
        AppError::bad_request(
            "malformed_json",
            format!("the body is not the JSON this route takes: {error}"),
        )
    })
}

/// Parses the query string into `T`.
pub fn query<T: DeserializeOwned>(uri: &Uri) -> Result<T, AppError> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|query| query.0)
        .map_err(|error| AppError::bad_request("invalid_query", error.body_text()))
}

/// A page size: `asked`, or `default` when none was asked; 400 outside 1 to `max`.
pub fn page_limit(asked: Option<u32>, default: u32, max: u32) -> Result<u32, AppError> {
    let limit = asked.unwrap_or(default);
    if limit == 0 || limit > max {
        return Err(AppError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {max}"),
        ));
    }
    Ok(limit)
}

/// Passes a store result through, counting database errors.
pub fn stored<T>(state: &AppState, result: Result<T, StoreError>) -> Result<T, StoreError> {
    if let Err(error) = &result {
        state.metrics.db_error(error);
    }
    result
}

/// An agent by id: the cache first, then the database (which refills the cache).
pub async fn load_agent(
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<Option<Agent>, StoreError> {
    if let Some(agent) = state.fanout.cached_agent(tenant, id).await {
        return Ok(Some(agent));
    }
    let agent = stored(state, state.store.get_agent(tenant, id).await)?;
    if let Some(agent) = &agent {
        state.fanout.cache_agent(agent).await;
    }
    Ok(agent)
}
