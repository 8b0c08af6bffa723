//! Health probes of a Worker's bindings. Each returns `(binding name, outcome)` and never fails:
//! a probe that errors or runs out of time is a failed binding, not a failed `/health`.

use std::time::Duration;

use shared::health::{BindingHealth, HEALTH_PATH};
use worker::{AbortController, Env, Fetch, Method, Request, RequestInit};

use crate::clock::{now_ms, within};

/// How long a probe may take before its binding counts as down. Generous: a cold isolate or a
/// cold origin container is slow on its first answer, and `/health` is not on a caller's path.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Reads a key from a KV namespace: answering "no such key" proves the namespace is reachable.
pub async fn kv(env: &Env, binding: &str) -> (String, BindingHealth) {
    let started = now_ms();
    let outcome = match env.kv(binding) {
        Ok(store) => within(PROBE_TIMEOUT, store.get("health-probe").text())
            .await
            .map(|read| read.map_err(worker::Error::from)),
        Err(error) => Some(Err(error)),
    };
    let health = match outcome {
        Some(Ok(_)) => BindingHealth::answered(Some(elapsed_since(started))),
        Some(Err(error)) => {
            BindingHealth::failed(short(&error.to_string()), Some(elapsed_since(started)))
        }
        None => timed_out(started),
    };
    (binding.to_owned(), health)
}

/// Asks one well-known instance of a Durable Object class for its `/health`.
pub async fn durable_object(env: &Env, binding: &str) -> (String, BindingHealth) {
    let started = now_ms();
    let stub = env
        .durable_object(binding)
        .and_then(|namespace| namespace.get_by_name("health-probe"));
    let outcome = match stub {
        Ok(stub) => {
            within(
                PROBE_TIMEOUT,
                stub.fetch_with_str(&format!("https://durable-object{HEALTH_PATH}")),
            )
            .await
        }
        Err(error) => Some(Err(error)),
    };
    (binding.to_owned(), judge_status(outcome, started))
}

/// Asks another Worker over its service binding for its own `/health` report.
pub async fn service(env: &Env, binding: &str, request_id: &str) -> (String, BindingHealth) {
    let started = now_ms();
    let request = health_request(&format!("https://{binding}{HEALTH_PATH}"), request_id);
    let outcome = match (env.service(binding), request) {
        (Ok(fetcher), Ok(request)) => within(PROBE_TIMEOUT, fetcher.fetch_request(request)).await,
        (Err(error), _) | (_, Err(error)) => Some(Err(error)),
    };
    (binding.to_owned(), judge_report(outcome, started).await)
}

/// Asks an HTTP service (the origin) for its `/health` report; the request is aborted at the
/// deadline so a hung origin does not hold a subrequest open.
pub async fn url(name: &str, base_url: &str, request_id: &str) -> (String, BindingHealth) {
    let started = now_ms();
    // Joined as text: parsing with `Url` would pull IDNA tables into every Worker's wasm.
    let target = format!("{}{HEALTH_PATH}", base_url.trim_end_matches('/'));
    let controller = AbortController::default();
    let signal = controller.signal();
    let outcome = match health_request(&target, request_id) {
        Ok(request) => {
            within(
                PROBE_TIMEOUT,
                Fetch::Request(request).send_with_signal(&signal),
            )
            .await
        }
        Err(error) => Some(Err(error)),
    };
    if outcome.is_none() {
        controller.abort();
    }
    (name.to_owned(), judge_report(outcome, started).await)
}

fn health_request(url: &str, request_id: &str) -> worker::Result<Request> {
    let headers = worker::Headers::new();
    headers.set(shared::headers::REQUEST_ID, request_id)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    Request::new_with_init(url, &init)
}

/// A remote service's answer judged by its own health report.
async fn judge_report(
    outcome: Option<worker::Result<worker::Response>>,
    started: u64,
) -> BindingHealth {
    match outcome {
        Some(Ok(mut response)) => match response.text().await {
            Ok(body) => BindingHealth::from_remote_body(&body, Some(elapsed_since(started))),
            Err(error) => {
                BindingHealth::failed(short(&error.to_string()), Some(elapsed_since(started)))
            }
        },
        Some(Err(error)) => {
            BindingHealth::failed(short(&error.to_string()), Some(elapsed_since(started)))
        }
        None => timed_out(started),
    }
}

/// An answer judged by its status alone.
fn judge_status(outcome: Option<worker::Result<worker::Response>>, started: u64) -> BindingHealth {
    match outcome {
        Some(Ok(response)) if response.status_code() == 200 => {
            BindingHealth::answered(Some(elapsed_since(started)))
        }
        Some(Ok(response)) => BindingHealth::failed(
            format!("answered {}", response.status_code()),
            Some(elapsed_since(started)),
        ),
        Some(Err(error)) => {
            BindingHealth::failed(short(&error.to_string()), Some(elapsed_since(started)))
        }
        None => timed_out(started),
    }
}

fn timed_out(started: u64) -> BindingHealth {
    BindingHealth::failed(
        format!("no answer within {} ms", PROBE_TIMEOUT.as_millis()),
        Some(elapsed_since(started)),
    )
}

fn elapsed_since(started: u64) -> u64 {
    now_ms().saturating_sub(started)
}

/// Errors from the runtime can be long JS stack-ish strings; a health report wants one line.
fn short(error: &str) -> String {
    let line = error.lines().next().unwrap_or_default();
    line.chars().take(160).collect()
}
