//! auth-validator: decides who a request is. No public route; voice-router reaches it through
//! its `AUTH` service binding.

use edge_io::{Failure, probe, respond};
use shared::health::HealthReport;
use shared::request_id::Trust;
use worker::{Context, Env, Method, Request, Response, Result, event};

const SERVICE: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// KV: API keys by SHA-256, and the JWKS cache.
const AUTH_KV: &str = "AUTH_KV";

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
                HealthReport::from_checks(SERVICE, VERSION, [probe::kv(env, AUTH_KV).await]);
            edge_io::answer::health(&report, request_id)
        }
        (_, "/health") => Err(Failure::MethodNotAllowed),
        _ => Err(Failure::NotFound),
    }
}
