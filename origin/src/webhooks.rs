//! The webhooks' delivery task: drains the durable outbox (`webhook_deliveries`, written by the
//! store in the transaction of each change) and POSTs each due delivery to its endpoint,
//! signed with the tenant's secret like a tool call, through the same SSRF-guarded client.
//!
//! - Each loop leases a batch ([`LEASE_MS`], longer than an attempt's deadline) so replicas
//!   never send the same row at once; a replica that dies mid-attempt leaves a lease that runs
//!   out, and the row is sent again (at least once; the idempotency key lets receivers drop the
//!   repeat).
//! - The rules — retry schedule, jitter, the disable rule, what counts as delivered — are
//!   `shared::webhook`'s; this file only moves rows and bytes.
//! - The database being away only delays: rows stay pending and the loop keeps polling.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use shared::webhook::{self, Retry};
use tokio::sync::Notify;

use crate::AppState;
use crate::outbound::Post;
use crate::signing_secret;
use crate::store::{Attempt, AttemptNext, ClaimedDelivery, Recorded};

/// How long a claimed row is this replica's: well beyond an attempt's deadline.
pub const LEASE_MS: u64 = 60_000;
/// Deliveries claimed per loop (sent concurrently).
pub const BATCH: u32 = 16;
/// Least time between two reads of the outbox's depth for `/metrics`.
const PENDING_EVERY_MS: u64 = 5_000;

/// Wakes the delivery task when this replica wrote to the outbox, so a delivery leaves at once
/// instead of at the next poll.
#[derive(Default)]
pub struct Doorbell(Notify);

impl Doorbell {
    /// Something was written to the outbox.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// Runs until the state's shutdown token fires.
pub async fn deliver(state: AppState) {
    let owner = format!("origin-{}", uuid::Uuid::new_v4().simple());
    let poll = state.config.webhook_poll;
    let doorbell = Arc::clone(&state.webhooks);
    let mut pending_read_at: Option<u64> = None;
    loop {
        let mut claimed_full_batch = false;
        match state
            .store
            .claim_deliveries(&owner, state.now_ms(), LEASE_MS, BATCH)
            .await
        {
            Ok(batch) => {
                claimed_full_batch = batch.len() == BATCH as usize;
                join_all(batch.iter().map(|claimed| attempt(&state, &owner, claimed))).await;
            }
            // Rows stay pending; the next poll tries again.
            Err(error) => tracing::debug!(%error, "webhook outbox not read"),
        }
        let now = state.now_ms();
        if pending_read_at.is_none_or(|at| now.saturating_sub(at) >= PENDING_EVERY_MS) {
            if let Ok(pending) = state.store.pending_deliveries().await {
                state
                    .metrics
                    .webhook_pending
                    .set(i64::try_from(pending).unwrap_or(i64::MAX));
            }
            pending_read_at = Some(now);
        }
        if claimed_full_batch {
            continue;
        }
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = doorbell.0.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
        if state.shutdown.is_cancelled() {
            return;
        }
    }
}

/// One attempt of one delivery, recorded.
async fn attempt(state: &AppState, owner: &str, claimed: &ClaimedDelivery) {
    let kind = claimed.event_type.as_str();
    let (status_code, error) = match post(state, claimed).await {
        Ok((status, _)) if webhook::is_delivered(status) => (Some(status), None),
        Ok((status, body)) => (
            Some(status),
            Some(webhook::excerpt(&format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&body)
            ))),
        ),
        Err(error) => (None, Some(error)),
    };
    let at_ms = state.now_ms();
    let next = match &error {
        None => AttemptNext::Delivered,
        Some(_) => {
            let random = u64::from_le_bytes(
                uuid::Uuid::new_v4().as_bytes()[..8]
                    .try_into()
                    .unwrap_or([0; 8]),
            );
            match webhook::next_attempt(claimed.attempts + 1, claimed.created_at_ms, at_ms, random)
            {
                Retry::At(at) => AttemptNext::RetryAt(at),
                Retry::GiveUp => AttemptNext::GiveUp,
            }
        }
    };
    let outcome = match next {
        AttemptNext::Delivered => "delivered",
        AttemptNext::RetryAt(_) => "failed",
        AttemptNext::GiveUp => "gave_up",
    };
    state
        .metrics
        .webhook_attempts
        .get_or_create(&vec![
            ("event", kind.to_owned()),
            ("outcome", outcome.to_owned()),
        ])
        .inc();
    tracing::info!(
        tenant = %claimed.tenant_id,
        endpoint = %claimed.endpoint_id,
        event = %claimed.event_id,
        kind,
        outcome,
        status = ?status_code,
        error = error.as_deref().unwrap_or(""),
        "webhook attempt"
    );
    let record = Attempt {
        at_ms,
        status_code,
        error,
        next,
    };
    match state.store.record_attempt(claimed, owner, &record).await {
        Ok(Recorded::Recorded) => {}
        Ok(Recorded::Disabled(reason)) => {
            state.metrics.webhook_endpoints_disabled.inc();
            tracing::warn!(tenant = %claimed.tenant_id, endpoint = %claimed.endpoint_id, %reason, "webhook endpoint disabled");
        }
        Ok(Recorded::LeaseLost) => {
            tracing::warn!(event = %claimed.event_id, "webhook lease lost before the attempt was recorded");
        }
        // The lease runs out and the row is sent again: at least once.
        Err(error) => {
            tracing::warn!(event = %claimed.event_id, %error, "webhook attempt not recorded");
        }
    }
}

/// The POST: the answer's status and body, or why there was none.
async fn post(state: &AppState, claimed: &ClaimedDelivery) -> Result<(u16, bytes::Bytes), String> {
    let signer = signing_secret::signer(state, &claimed.tenant_id)
        .await
        .map_err(|error| format!("not signed: {error}"))?;
    let body = claimed.payload.clone().into_bytes();
    let signature = signer.sign(&body, state.now_ms() / 1_000);
    let answer = state
        .outbound
        .post(Post {
            url: &claimed.url,
            body,
            signature,
            timeout: Duration::from_millis(webhook::ATTEMPT_TIMEOUT_MS),
            max_response: webhook::MAX_RESPONSE_BYTES,
            headers: vec![
                (webhook::IDEMPOTENCY_HEADER, claimed.event_id.clone()),
                (
                    webhook::EVENT_TYPE_HEADER,
                    claimed.event_type.as_str().to_owned(),
                ),
            ],
        })
        .await;
    match answer {
        Ok(response) => Ok((response.status, response.body)),
        Err(error) => Err(webhook::excerpt(&error.to_string())),
    }
}
