//! geo-router: which AWS region serves this caller, and is its origin healthy? No public route;
//! voice-router reaches it through its `GEO_ROUTER` service binding. A Cron Trigger probes every
//! region's origin each minute. Policy lives in `shared::geo`; this crate loads, calls, stores
//! and answers.
//!
//! # Routes
//!
//! JSON in and out; the types are in `shared::geo::wire`, so voice-router uses the same ones.
//!
//! - `POST /v1/route` — body `RouteRequest`:
//!   `{"caller": {"country", "region_code", "continent", "latitude", "longitude", "colo"}, "pin"}`,
//!   every field optional (`regionCode` and string coordinates, as in `request.cf`, are accepted).
//!   Without `caller` the request's own `request.cf` is used. An empty body is `{}`.
//!   200 `RouteDecision`: `{"region", "origin_url", "bedrock_region", "reason", "healthy",
//!   "fallbacks": [{"region", "origin_url", "bedrock_region", "healthy"}]}`; `reason` is one of
//!   `pinned`, `region-code`, `country`, `nearest`, `continent`, `failover`, `default`;
//!   `healthy: false` means every region is down and this is the least bad one. Never fails
//!   for health: without a readable health table every region counts as usable.
//! - `POST /v1/report` — body `ReportRequest` `{"region", "client"}`: an origin request failed.
//!   200 `ReportResponse` `{"region", "outcome", "state", "reports_in_window", "threshold"}`;
//!   `outcome` is `counted`, `duplicate`, `marked_down`, `already_down` or `ignored`.
//! - `GET /v1/regions` — 200 `RegionsView`: each region's config, state, probe counters, last
//!   probe (time, latency, status, error) and reports, plus the policy in force.
//! - `GET /health` — 200/503 `HealthReport` (the `GEO_KV` binding).
//!
//! Errors are `{"error":{"code","message","request_id"}}`: 400 `invalid_request` (body not JSON
//! of the shape, a field missing or too long), 400 `unknown_region` (a report names a region
//! that is not configured), 413 `payload_too_large` (body over 16 KiB), 404 `not_found`,
//! 405 `method_not_allowed`, 500 `misconfigured` (invalid vars; every problem is logged),
//! 500 `internal`.
//!
//! # Cron Trigger
//!
//! Every minute: probe each region's `{origin_url}/health` (deadline `GEO_PROBE_TIMEOUT_MS`),
//! apply the results with hysteresis, write the table to KV (`health:v1`), log state changes.

mod isolate;
mod origins;

use std::rc::Rc;

use edge_io::clock::now_ms;
use edge_io::{Failure, Rejection, probe, respond};
use shared::geo::wire::{self, CallerLocation, REGIONS_PATH, REPORT_PATH, ROUTE_PATH};
use shared::geo::{
    ConfigError, GeoConfig, HealthError, RegionsView, ReportRequest, RouteRequest, WireError,
    select_region,
};
use shared::health::{HEALTH_PATH, HealthReport};
use shared::request_id::Trust;
use wasm_bindgen::JsValue;
use worker::{
    Context, Env, Method, Request, Response, Result, ScheduleContext, ScheduledEvent,
    console_error, console_log, event,
};

use isolate::GEO_KV;

const SERVICE: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let request_id = edge_io::request_id(&req, Trust::Internal);
    respond(route(req, &env, &ctx, &request_id).await, &request_id)
}

async fn route(
    req: Request,
    env: &Env,
    ctx: &Context,
    request_id: &str,
) -> std::result::Result<Response, Failure> {
    match (req.method(), req.path().as_str()) {
        (Method::Post, ROUTE_PATH) => decide(req, env, ctx, request_id).await,
        (Method::Post, REPORT_PATH) => report(req, env, ctx, request_id).await,
        (Method::Get, REGIONS_PATH) => regions(env, request_id).await,
        (Method::Get, HEALTH_PATH) => {
            let report =
                HealthReport::from_checks(SERVICE, VERSION, [probe::kv(env, GEO_KV).await]);
            edge_io::answer::health(&report, request_id)
        }
        (_, ROUTE_PATH | REPORT_PATH | REGIONS_PATH | HEALTH_PATH) => {
            Err(Failure::MethodNotAllowed)
        }
        _ => Err(Failure::NotFound),
    }
}

/// `POST /v1/route`.
async fn decide(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    request_id: &str,
) -> std::result::Result<Response, Failure> {
    let config = config(env, request_id)?;
    let body = req.text().await?;
    let request =
        RouteRequest::from_json(&body).map_err(|e| refuse(Refusal::Wire(e), request_id))?;
    let caller = request.caller.unwrap_or_else(|| own_cf(&req));
    let health = isolate::health_for_decision(env, ctx, config.health_cache_ms).await;
    let decision = select_region(&config, &caller, request.pin.as_deref(), &health);
    edge_io::json(200, &decision, request_id)
}

/// `POST /v1/report`: counted against the isolate's copy first, so duplicates and reports about
/// a region already down cost no KV I/O; a report that changes the table is applied again to
/// the newest table (KV's or the isolate's) and written back. A write racing another (the cron,
/// a report elsewhere) can lose a report: that errs towards keeping a region up.
async fn report(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    request_id: &str,
) -> std::result::Result<Response, Failure> {
    let config = config(env, request_id)?;
    let body = req.text().await?;
    let report =
        ReportRequest::from_json(&body).map_err(|e| refuse(Refusal::Wire(e), request_id))?;
    let now = now_ms();
    let held = isolate::health_for_decision(env, ctx, config.health_cache_ms).await;

    let mut table = (*held).clone();
    let mut outcome = table
        .record_report(&config, &report.region, &report.client, now)
        .map_err(|e| refuse(Refusal::Health(e), request_id))?;
    if outcome.changed_table() {
        table = match isolate::reload(env).await {
            Ok(current) => (*current).clone(),
            Err(error) => {
                console_error!("request {request_id}: reading KV for a report failed: {error}");
                (*held).clone()
            }
        };
        outcome = table
            .record_report(&config, &report.region, &report.client, now)
            .map_err(|e| refuse(Refusal::Health(e), request_id))?;
        if outcome.changed_table() {
            table.updated_at_ms = Some(now);
            if let Err(error) = isolate::write(env, &table).await {
                console_error!("request {request_id}: storing a report failed: {error}");
            }
            if outcome == shared::geo::ReportOutcome::MarkedDown {
                console_log!(
                    "region {} reported down by {} distinct clients",
                    report.region,
                    config.health.report_threshold
                );
            }
        }
        table = (*isolate::adopt(table)).clone();
    }
    let answer = wire::report_response(&config, &table, &report.region, outcome, now);
    edge_io::json(200, &answer, request_id)
}

/// `GET /v1/regions`: read from KV, not the isolate's copy, so operators see the stored truth.
async fn regions(env: &Env, request_id: &str) -> std::result::Result<Response, Failure> {
    let config = config(env, request_id)?;
    let table = isolate::reload(env).await?;
    edge_io::json(
        200,
        &RegionsView::build(&config, &table, now_ms()),
        request_id,
    )
}

/// The caller as this request's own `request.cf` describes it; nothing known when it has none.
fn own_cf(req: &Request) -> CallerLocation {
    let cf = js_sys::Reflect::get(req.inner(), &JsValue::from_str("cf")).ok();
    cf.filter(|cf| cf.is_object())
        .and_then(|cf| js_sys::JSON::stringify(&cf).ok()?.as_string())
        .and_then(|text| CallerLocation::from_cf_json(&text).ok())
        .unwrap_or_default()
}

fn config(env: &Env, request_id: &str) -> std::result::Result<Rc<GeoConfig>, Failure> {
    isolate::config(env).map_err(|e| refuse(Refusal::Config(e), request_id))
}

/// Every domain error this Worker meets.
enum Refusal {
    Wire(WireError),
    Health(HealthError),
    Config(ConfigError),
}

/// The one place this Worker's domain errors become statuses.
fn refuse(refusal: Refusal, request_id: &str) -> Failure {
    let rejection = match refusal {
        Refusal::Wire(error @ WireError::BodyTooLarge(_)) => {
            Rejection::new(413, "payload_too_large", error.to_string())
        }
        Refusal::Wire(error) => Rejection::new(400, "invalid_request", error.to_string()),
        Refusal::Health(error @ HealthError::UnknownRegion(_)) => {
            Rejection::new(400, "unknown_region", error.to_string())
        }
        Refusal::Health(error @ HealthError::CorruptTable(_)) => {
            console_error!("request {request_id}: {error}");
            Rejection::new(
                500,
                "internal",
                "internal error; quote the request id when reporting it",
            )
        }
        Refusal::Config(error) => {
            console_error!("request {request_id}: {error}");
            Rejection::new(
                500,
                "misconfigured",
                "geo-router is misconfigured; quote the request id when reporting it",
            )
        }
    };
    Failure::Rejected(rejection)
}

/// Every minute: probe each region's origin, apply hysteresis, store the table.
#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let config = match isolate::config(&env) {
        Ok(config) => config,
        Err(error) => {
            console_error!("cron {}: not probing: {error}", event.cron());
            return;
        }
    };
    let run_id = format!("geo-cron-{}", now_ms());
    let probes = origins::probe_all(config.regions(), config.probe_timeout_ms, &run_id).await;

    // Read KV after probing, so reports stored meanwhile are kept; the isolate's own copy wins
    // when KV hands back an older one.
    let now = now_ms();
    let mut table = match isolate::reload(&env).await {
        Ok(table) => (*table).clone(),
        Err(error) => {
            console_error!(
                "cron {}: reading the health table failed: {error}",
                event.cron()
            );
            isolate::held()
        }
    };
    let transitions = table.record_probes(&config, probes, now);
    table.updated_at_ms = Some(now);
    for transition in &transitions {
        console_log!("region {transition}");
    }
    if let Err(error) = isolate::write(&env, &table).await {
        console_error!(
            "cron {}: storing the health table failed: {error}",
            event.cron()
        );
    }
    let usable = config
        .regions()
        .iter()
        .filter(|region| table.state(&region.name).is_usable())
        .count();
    isolate::adopt(table);
    console_log!(
        "cron {}: probed {} regions, {usable} usable, {} changed",
        event.cron(),
        config.regions().len(),
        transitions.len()
    );
}
