//! voice-router: the only public Worker. Composes auth-validator, rate-limiter and geo-router
//! over service bindings, owns the `CallSession` Durable Object, and forwards to the origin.

use edge_io::{Failure, probe, respond};
use shared::health::HealthReport;
use shared::request_id::Trust;
use worker::{Context, Env, Method, Request, Response, Result, event};

mod session;

pub use session::CallSession;

const SERVICE: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Service binding to auth-validator.
const AUTH: &str = "AUTH";
/// Service binding to rate-limiter.
const RATE_LIMITER: &str = "RATE_LIMITER";
/// Service binding to geo-router.
const GEO_ROUTER: &str = "GEO_ROUTER";
/// Durable Object namespace of `CallSession`, one instance per call id.
const CALL_SESSION: &str = "CALL_SESSION";
/// Var: base URL of the origin (until geo-router chooses per region).
const ORIGIN_URL: &str = "ORIGIN_URL";
/// How the origin appears in the health report.
const ORIGIN: &str = "ORIGIN";

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let request_id = edge_io::request_id(&req, Trust::Public);
    respond(route(req, &env, &request_id).await, &request_id)
}

async fn route(
    req: Request,
    env: &Env,
    request_id: &str,
) -> std::result::Result<Response, Failure> {
    match (req.method(), req.path().as_str()) {
        (Method::Get, "/health") => health(env, request_id).await,
        (_, "/health") => Err(Failure::MethodNotAllowed),
        _ => Err(Failure::NotFound),
    }
}

/// Probes every binding at once, so `/health` takes as long as the slowest, not the sum.
async fn health(env: &Env, request_id: &str) -> std::result::Result<Response, Failure> {
    let origin_url = env.var(ORIGIN_URL).map(|var| var.to_string());
    let origin = async {
        match &origin_url {
            Ok(url) => probe::url(ORIGIN, url, request_id).await,
            Err(_) => (
                ORIGIN.to_owned(),
                shared::health::BindingHealth::failed(format!("{ORIGIN_URL} is not set"), None),
            ),
        }
    };
    let (auth, limiter, geo, session, origin) = futures::join!(
        probe::service(env, AUTH, request_id),
        probe::service(env, RATE_LIMITER, request_id),
        probe::service(env, GEO_ROUTER, request_id),
        probe::durable_object(env, CALL_SESSION),
        origin,
    );
    let report = HealthReport::from_checks(SERVICE, VERSION, [auth, limiter, geo, session, origin]);
    edge_io::answer::health(&report, request_id)
}
