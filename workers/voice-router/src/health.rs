//! `GET /health`: every binding and the origin, probed at once.

use edge_io::probe;
use shared::health::{BindingHealth, HealthReport};

use crate::limiter::RATE_LIMITER_OBJECTS;
use crate::refusal::Refusal;
use crate::services::{AUTH, GEO_ROUTER, RATE_LIMITER};
use crate::{CALL_SESSION, Exchange};

const SERVICE: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// How the origin appears in the health report.
const ORIGIN: &str = "ORIGIN";

/// Probes every binding at once, so `/health` takes as long as the slowest, not the sum. The
/// per-IP limit applies here too (it is every route's), so a monitor cannot be turned into a
/// load generator against the bindings.
pub async fn answer(exchange: &Exchange<'_>) -> Result<worker::Response, Refusal> {
    crate::gate::enforce_ip(exchange).await?;
    let env = exchange.env;
    let request_id = exchange.request_id;
    let origin = async {
        if exchange.config.origin_url.is_empty() {
            (
                ORIGIN.to_owned(),
                BindingHealth::failed("ORIGIN_URL is not set", None),
            )
        } else {
            probe::url(ORIGIN, &exchange.config.origin_url, request_id).await
        }
    };
    // The objects' own namespace, when checks go straight to them.
    let objects = async {
        if env.durable_object(RATE_LIMITER_OBJECTS).is_ok() {
            Some(probe::durable_object(env, RATE_LIMITER_OBJECTS).await)
        } else {
            None
        }
    };
    let (auth, limiter, geo, session, origin, objects) = futures::join!(
        probe::service(env, AUTH, request_id),
        probe::service(env, RATE_LIMITER, request_id),
        probe::service(env, GEO_ROUTER, request_id),
        probe::durable_object(env, CALL_SESSION),
        origin,
        objects,
    );
    let checks = [auth, limiter, geo, session, origin]
        .into_iter()
        .chain(objects);
    let report = HealthReport::from_checks(SERVICE, VERSION, checks);
    Ok(edge_io::answer::health(&report, request_id)?)
}
