//! `GET /health`: every binding and the origin, probed at once.

use edge_io::probe;
use shared::health::{BindingHealth, HealthReport};

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
    let (auth, limiter, geo, session, origin) = futures::join!(
        probe::service(env, AUTH, request_id),
        probe::service(env, RATE_LIMITER, request_id),
        probe::service(env, GEO_ROUTER, request_id),
        probe::durable_object(env, CALL_SESSION),
        origin,
    );
    let report = HealthReport::from_checks(SERVICE, VERSION, [auth, limiter, geo, session, origin]);
    Ok(edge_io::answer::health(&report, request_id)?)
}
