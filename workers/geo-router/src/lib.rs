//! geo-router: which AWS region serves this caller, and is its origin healthy? No public route;
//! voice-router reaches it through its `GEO_ROUTER` service binding. A Cron Trigger watches the
//! origins.

use edge_io::{Failure, probe, respond};
use shared::health::HealthReport;
use shared::request_id::Trust;
use worker::{
    Context, Env, Method, Request, Response, Result, ScheduleContext, ScheduledEvent,
    console_error, console_log, event,
};

const SERVICE: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// KV: the origins' health table, written by the Cron Trigger.
const GEO_KV: &str = "GEO_KV";
/// KV key holding the time of the Cron Trigger's last run, in Unix milliseconds.
const CRON_LAST_RUN_KEY: &str = "cron:last-run-ms";

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let request_id = edge_io::request_id(&req, Trust::Internal);
    respond(route(req, &env, &request_id).await, &request_id)
}

async fn route(
    req: Request,
    env: &Env,
    request_id: &str,
) -> std::result::Result<Response, Failure> {
    match (req.method(), req.path().as_str()) {
        (Method::Get, "/health") => {
            let report =
                HealthReport::from_checks(SERVICE, VERSION, [probe::kv(env, GEO_KV).await]);
            edge_io::answer::health(&report, request_id)
        }
        (_, "/health") => Err(Failure::MethodNotAllowed),
        _ => Err(Failure::NotFound),
    }
}

/// Every minute: records that the trigger ran, so operators can see the cron is alive.
#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let ran_at = probe::now_ms();
    let recorded = match env.kv(GEO_KV) {
        Ok(kv) => match kv.put(CRON_LAST_RUN_KEY, ran_at.to_string()) {
            Ok(put) => put.execute().await.map_err(worker::Error::from),
            Err(error) => Err(error.into()),
        },
        Err(error) => Err(error),
    };
    match recorded {
        Ok(()) => console_log!("cron {} ran at {ran_at}", event.cron()),
        Err(error) => console_error!("cron {} could not record its run: {error}", event.cron()),
    }
}
