//! ECS task scale-in protection while this task holds live calls (`shared::task_protection`
//! decides; this tells the ECS container agent). A scale-in or a deployment then picks another
//! task, or waits, instead of cutting calls short; once no relay socket is open (or the task
//! drains) the protection is given back. Only inside ECS: the agent's endpoint comes from
//! `ECS_AGENT_URI`, which ECS injects; the task role needs `ecs:UpdateTaskProtection`
//! (`origin/deploy/origin.yaml`). A failed request is logged and tried again at the next check;
//! it never affects a call.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use shared::task_protection::{Change, Protection};

use crate::AppState;
use crate::config::TaskProtectionConfig;

/// How often the live calls are counted.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for the agent's answer.
const AGENT_TIMEOUT: Duration = Duration::from_secs(3);
/// The agent's path ("Amazon ECS task scale-in protection endpoint", Amazon ECS Developer Guide).
const STATE_PATH: &str = "/task-protection/v1/state";

/// Keeps the task's protection in step with its live calls, for as long as the process runs.
pub async fn keep(state: AppState, config: TaskProtectionConfig) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let url = format!("{}{STATE_PATH}", config.agent_uri);
    let mut protection = Protection::default();
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let live = u64::try_from(state.metrics.relay_connections.get()).unwrap_or(0);
        let now = state.now_ms();
        let Some(change) = protection.next(live, state.draining(), config.minutes, now) else {
            continue;
        };
        match tell(&client, &url, change).await {
            Ok(()) => {
                protection.applied(change, now);
                state
                    .metrics
                    .task_protected
                    .set(i64::from(protection.is_protected(now)));
                tracing::info!(
                    ?change,
                    live_calls = live,
                    "ECS task scale-in protection updated"
                );
            }
            Err(error) => {
                tracing::warn!(?change, %error, "ECS task scale-in protection not updated; retrying");
            }
        }
    }
}

/// PUTs `change` to the agent; an error unless it answered 2xx without a `failure`.
async fn tell(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    change: Change,
) -> Result<(), String> {
    let body = match change {
        Change::Protect { minutes } => {
            serde_json::json!({ "ProtectionEnabled": true, "ExpiresInMinutes": minutes })
        }
        Change::Release => serde_json::json!({ "ProtectionEnabled": false }),
    };
    let request = http::Request::put(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|error| format!("ECS_AGENT_URI is unusable: {error}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|error| format!("the ECS agent did not answer: {error}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("the ECS agent's answer broke off: {error}"))?
            .to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if !status.is_success() || answer.get("failure").is_some() {
            // The agent names the reason (e.g. TASK_NOT_VALID for a task outside a service, or
            // a missing IAM permission); the body carries no secret.
            return Err(format!("the ECS agent answered {status}: {answer}"));
        }
        Ok(())
    };
    tokio::time::timeout(AGENT_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("the ECS agent did not answer within {AGENT_TIMEOUT:?}"))?
}
