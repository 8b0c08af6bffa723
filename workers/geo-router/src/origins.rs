//! Probing every region's origin `/health`, at most six at a time (the Workers runtime queues
//! further connections, and a probe's deadline must not run while it waits in that queue).

use std::time::Duration;

use edge_io::clock::{now_ms, within};
use futures::StreamExt;
use futures::stream;
use shared::geo::Region;
use shared::geo::health::ProbeRecord;
use shared::geo::probe::{ProbeFailure, health_url, judge_answer, record};
use worker::{AbortController, Fetch, Headers, Method, Request, RequestInit};

/// Simultaneous open connections a Worker invocation may hold.
const CONCURRENT_PROBES: usize = 6;

/// Probes every region; one record per region, in no particular order.
pub async fn probe_all(
    regions: &[Region],
    timeout_ms: u64,
    request_id: &str,
) -> Vec<(String, ProbeRecord)> {
    stream::iter(regions)
        .map(|region| probe(region, timeout_ms, request_id))
        .buffer_unordered(CONCURRENT_PROBES)
        .collect()
        .await
}

async fn probe(region: &Region, timeout_ms: u64, request_id: &str) -> (String, ProbeRecord) {
    let started = now_ms();
    let controller = AbortController::default();
    let signal = controller.signal();
    let answer = async {
        let request = health_request(&health_url(&region.origin_url), request_id)?;
        let mut response = Fetch::Request(request).send_with_signal(&signal).await?;
        let status = response.status_code();
        let body = response.text().await?;
        Ok::<_, worker::Error>((status, body))
    };
    let outcome = within(Duration::from_millis(timeout_ms), answer).await;
    let finished = now_ms();
    let latency = finished.saturating_sub(started);
    let record = match outcome {
        Some(Ok((status, body))) => {
            record(finished, latency, Some(status), judge_answer(status, &body))
        }
        Some(Err(error)) => record(
            finished,
            latency,
            None,
            Err(ProbeFailure::Unreachable(error.to_string())),
        ),
        None => {
            controller.abort();
            record(
                finished,
                latency,
                None,
                Err(ProbeFailure::TimedOut(timeout_ms)),
            )
        }
    };
    (region.name.clone(), record)
}

fn health_request(url: &str, request_id: &str) -> worker::Result<Request> {
    let headers = Headers::new();
    headers.set(shared::headers::REQUEST_ID, request_id)?;
    // A health answer must come from the origin itself, never from a cache on the way.
    headers.set("cache-control", "no-cache")?;
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    Request::new_with_init(url, &init)
}
