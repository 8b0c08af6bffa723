//! rate-limiter: may this request proceed, and how much is left? No public route; voice-router
//! reaches it through its `RATE_LIMITER` service binding. One `RateLimiter` Durable Object per
//! key decides, so limits are exact across the whole network.

use edge_io::{Failure, probe, respond};
use shared::health::HealthReport;
use shared::request_id::Trust;
use worker::{Context, Env, Method, Request, Response, Result, event};

mod limiter;

pub use limiter::RateLimiter;

const SERVICE: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// KV: rate-limit policies per plan and per tenant.
const RATE_LIMIT_KV: &str = "RATE_LIMIT_KV";
/// Durable Object namespace of `RateLimiter`, one instance per limited key.
const RATE_LIMITER: &str = "RATE_LIMITER";

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
            let (kv, limiter) = futures::join!(
                probe::kv(env, RATE_LIMIT_KV),
                probe::durable_object(env, RATE_LIMITER)
            );
            let report = HealthReport::from_checks(SERVICE, VERSION, [kv, limiter]);
            edge_io::answer::health(&report, request_id)
        }
        (_, "/health") => Err(Failure::MethodNotAllowed),
        _ => Err(Failure::NotFound),
    }
}
