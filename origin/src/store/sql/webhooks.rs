//! The webhooks' tables (migration 0004): endpoints, the outbox (`webhook_events`, one row per
//! event) and its deliveries (one row per event and subscribed endpoint), written by
//! [`enqueue`] inside the transaction of the change an event reports.
//!
//! Claiming is one conditional `UPDATE … WHERE … AND lease free` over a sub-select of due rows
//! (on PostgreSQL `FOR UPDATE SKIP LOCKED`, so concurrent replicas pass over each other's rows
//! instead of waiting; SQLite serialises writers anyway). The outer `WHERE` repeats the lease
//! condition, so a row another replica leased in between is not taken twice.

use serde_json::Value;
use shared::call::Call;
use shared::turn::{Turn, TurnRole};
use shared::webhook::{
    self, Delivery, DeliveryStatus, Endpoint, EndpointConfig, EndpointHealth, Event, EventType,
};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row, Transaction};

use super::{SqlStore, classify, corrupt, flag, int, small, unsigned};
use crate::config::Backend;
use crate::store::{Attempt, AttemptNext, ClaimedDelivery, Recorded, StoreError};

const ENDPOINT_COLUMNS: &str = "id, url, agent_id, events, description, enabled, \
    disabled_reason, disabled_at_ms, consecutive_failures, failing_since_ms, created_at_ms, \
    updated_at_ms";

const DELIVERY_COLUMNS: &str = "endpoint_id, event_id, event_type, call_id, status, attempts, \
    next_attempt_at_ms, last_status_code, last_error, last_attempt_at_ms, delivered_at_ms, \
    created_at_ms";

fn events_text(events: &[EventType]) -> String {
    let names: Vec<&str> = events.iter().map(|kind| kind.as_str()).collect();
    serde_json::to_string(&names).unwrap_or_else(|_| "[]".into())
}

fn events_of(text: &str) -> Result<Vec<EventType>, StoreError> {
    let names: Vec<String> = serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("webhook events: {error}")))?;
    names
        .iter()
        .map(|name| {
            EventType::parse(name)
                .ok_or_else(|| StoreError::Corrupt(format!("webhook event {name:?}")))
        })
        .collect()
}

fn opt_ms(row: &AnyRow, name: &str) -> Result<Option<u64>, StoreError> {
    Ok(row
        .try_get::<Option<i64>, _>(name)
        .map_err(corrupt("webhook"))?
        .map(unsigned))
}

fn ms(row: &AnyRow, name: &str) -> Result<u64, StoreError> {
    Ok(unsigned(
        row.try_get::<i64, _>(name).map_err(corrupt("webhook"))?,
    ))
}

fn endpoint_from_row(row: &AnyRow) -> Result<Endpoint, StoreError> {
    let text = |name: &str| row.try_get::<String, _>(name).map_err(corrupt("webhook"));
    let opt_text = |name: &str| {
        row.try_get::<Option<String>, _>(name)
            .map_err(corrupt("webhook"))
    };
    Ok(Endpoint {
        id: text("id")?,
        url: text("url")?,
        agent_id: opt_text("agent_id")?,
        events: events_of(&text("events")?)?,
        description: opt_text("description")?,
        enabled: flag(row, "enabled")?,
        disabled_reason: opt_text("disabled_reason")?,
        disabled_at_ms: opt_ms(row, "disabled_at_ms")?,
        consecutive_failures: small(
            row.try_get::<i64, _>("consecutive_failures")
                .map_err(corrupt("webhook"))?,
        ),
        failing_since_ms: opt_ms(row, "failing_since_ms")?,
        created_at_ms: ms(row, "created_at_ms")?,
        updated_at_ms: ms(row, "updated_at_ms")?,
    })
}

fn event_type_of(text: &str) -> Result<EventType, StoreError> {
    EventType::parse(text).ok_or_else(|| StoreError::Corrupt(format!("webhook event {text:?}")))
}

fn delivery_from_row(row: &AnyRow) -> Result<Delivery, StoreError> {
    let text = |name: &str| row.try_get::<String, _>(name).map_err(corrupt("delivery"));
    let status_text = text("status")?;
    let status = DeliveryStatus::parse(&status_text)
        .ok_or_else(|| StoreError::Corrupt(format!("delivery status {status_text:?}")))?;
    Ok(Delivery {
        id: text("event_id")?,
        endpoint_id: text("endpoint_id")?,
        event_type: event_type_of(&text("event_type")?)?,
        call_id: text("call_id")?,
        status,
        attempts: small(
            row.try_get::<i64, _>("attempts")
                .map_err(corrupt("delivery"))?,
        ),
        last_status_code: opt_ms(row, "last_status_code")?
            .map(|code| u16::try_from(code).unwrap_or(0)),
        last_error: row
            .try_get::<Option<String>, _>("last_error")
            .map_err(corrupt("delivery"))?,
        last_attempt_at_ms: opt_ms(row, "last_attempt_at_ms")?,
        next_attempt_at_ms: (status == DeliveryStatus::Pending)
            .then(|| ms(row, "next_attempt_at_ms"))
            .transpose()?,
        delivered_at_ms: opt_ms(row, "delivered_at_ms")?,
        created_at_ms: ms(row, "created_at_ms")?,
    })
}

/// A new id: `prefix` and a random UUID's 32 hex digits (an `is_resource_id`).
pub(super) fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// The call an event is about.
#[derive(Debug, Clone, Copy)]
pub(super) struct About<'a> {
    pub tenant: &'a str,
    pub call_id: &'a str,
    pub agent_id: &'a str,
}

impl<'a> About<'a> {
    pub fn call(call: &'a Call) -> Self {
        Self {
            tenant: &call.tenant_id,
            call_id: &call.id,
            agent_id: &call.agent_id,
        }
    }
}

/// Puts an event about a call in the outbox for every enabled endpoint of the tenant that
/// wants it, inside `tx`. Nothing is written when no endpoint wants it.
pub(super) async fn enqueue(
    tx: &mut Transaction<'_, Any>,
    call: About<'_>,
    kind: EventType,
    data: Value,
    at_ms: u64,
) -> Result<(), StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND enabled = $2"
    )))
    .bind(call.tenant)
    .bind(true)
    .fetch_all(&mut **tx)
    .await
    .map_err(classify)?;
    let mut wanting = Vec::new();
    for row in &rows {
        let endpoint = endpoint_from_row(row)?;
        if endpoint.wants(kind, call.agent_id) {
            wanting.push(endpoint.id);
        }
    }
    if wanting.is_empty() {
        return Ok(());
    }
    let event = Event {
        id: new_id("evt_"),
        kind,
        created_at_ms: at_ms,
        tenant_id: call.tenant.to_owned(),
        data,
    };
    let payload = serde_json::to_string(&event)
        .map_err(|error| StoreError::Corrupt(format!("webhook payload: {error}")))?;
    sqlx::query(
        "INSERT INTO webhook_events (tenant_id, id, event_type, call_id, payload, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(call.tenant)
    .bind(event.id.as_str())
    .bind(kind.as_str())
    .bind(call.call_id)
    .bind(payload)
    .bind(int(at_ms))
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    for endpoint_id in wanting {
        sqlx::query(
            "INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_id, event_type, \
             call_id, status, attempts, next_attempt_at_ms, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)",
        )
        .bind(call.tenant)
        .bind(endpoint_id)
        .bind(event.id.as_str())
        .bind(kind.as_str())
        .bind(call.call_id)
        .bind(int(at_ms))
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

/// The outbox rows of a call that just ended: `call.ended`, and `call.transferred` for a
/// transfer.
pub(super) async fn enqueue_end(
    tx: &mut Transaction<'_, Any>,
    call: &Call,
    turns: &[Turn],
    handoff: Option<&Value>,
) -> Result<(), StoreError> {
    let at = call.ended_at_ms.unwrap_or(call.started_at_ms);
    if call.end_reason.as_deref().is_some_and(webhook::is_transfer) {
        let data = webhook::call_transferred(call, handoff);
        enqueue(tx, About::call(call), EventType::CallTransferred, data, at).await?;
    }
    let data = webhook::call_ended(call, turns, handoff);
    enqueue(tx, About::call(call), EventType::CallEnded, data, at).await
}

/// `turn.completed` for each reply among `turns`.
pub(super) async fn enqueue_replies(
    tx: &mut Transaction<'_, Any>,
    call: About<'_>,
    turns: &[Turn],
) -> Result<(), StoreError> {
    for turn in turns.iter().filter(|turn| turn.role == TurnRole::Assistant) {
        let data = webhook::turn_completed(call.call_id, call.agent_id, turn);
        enqueue(tx, call, EventType::TurnCompleted, data, turn.created_at_ms).await?;
    }
    Ok(())
}

async fn read_endpoint(
    connection: &mut AnyConnection,
    tenant: &str,
    id: &str,
) -> Result<Option<Endpoint>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(connection)
    .await
    .map_err(classify)?;
    row.as_ref().map(endpoint_from_row).transpose()
}

impl SqlStore {
    pub(super) async fn webhook_create(
        &self,
        tenant: &str,
        id: &str,
        config: &EndpointConfig,
        now_ms: u64,
    ) -> Result<Endpoint, StoreError> {
        let pool = self.ready()?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_endpoints (tenant_id, id, url, agent_id, events, description, \
             enabled, consecutive_failures, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8) RETURNING {ENDPOINT_COLUMNS}"
        )))
        .bind(tenant)
        .bind(id)
        .bind(config.url.as_str())
        .bind(config.agent_id.as_deref())
        .bind(events_text(&config.events))
        .bind(config.description.as_deref())
        .bind(true)
        .bind(int(now_ms))
        .fetch_one(pool)
        .await
        .map_err(classify)?;
        endpoint_from_row(&row)
    }

    pub(super) async fn webhook_list(&self, tenant: &str) -> Result<Vec<Endpoint>, StoreError> {
        let pool = self.ready()?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 \
             ORDER BY created_at_ms, id"
        )))
        .bind(tenant)
        .fetch_all(pool)
        .await
        .map_err(classify)?;
        rows.iter().map(endpoint_from_row).collect()
    }

    pub(super) async fn webhook_get(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Endpoint>, StoreError> {
        let pool = self.ready()?;
        let mut connection = pool.acquire().await.map_err(classify)?;
        read_endpoint(&mut connection, tenant, id).await
    }

    pub(super) async fn webhook_update(
        &self,
        tenant: &str,
        id: &str,
        config: &EndpointConfig,
        enabled: Option<bool>,
        now_ms: u64,
    ) -> Result<Option<Endpoint>, StoreError> {
        let pool = self.ready()?;
        let mut tx = pool.begin().await.map_err(classify)?;
        let updated = sqlx::query(
            "UPDATE webhook_endpoints SET url = $3, events = $4, description = $5, \
             updated_at_ms = $6 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .bind(config.url.as_str())
        .bind(events_text(&config.events))
        .bind(config.description.as_deref())
        .bind(int(now_ms))
        .execute(&mut *tx)
        .await
        .map_err(classify)?
        .rows_affected();
        if updated == 0 {
            return Ok(None);
        }
        match enabled {
            Some(true) => {
                sqlx::query(
                    "UPDATE webhook_endpoints SET enabled = $3, disabled_reason = NULL, \
                     disabled_at_ms = NULL, consecutive_failures = 0, failing_since_ms = NULL \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant)
                .bind(id)
                .bind(true)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            }
            Some(false) => {
                sqlx::query(
                    "UPDATE webhook_endpoints SET enabled = $3, disabled_reason = $4, \
                     disabled_at_ms = $5 WHERE tenant_id = $1 AND id = $2 AND enabled = $6",
                )
                .bind(tenant)
                .bind(id)
                .bind(false)
                .bind("disabled by request")
                .bind(int(now_ms))
                .bind(true)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            }
            None => {}
        }
        let endpoint = read_endpoint(&mut tx, tenant, id).await?;
        tx.commit().await.map_err(classify)?;
        Ok(endpoint)
    }

    pub(super) async fn webhook_deliveries(
        &self,
        tenant: &str,
        endpoint_id: &str,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let pool = self.ready()?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE tenant_id = $1 AND endpoint_id = $2 \
             ORDER BY created_at_ms DESC, event_id DESC LIMIT $3"
        )))
        .bind(tenant)
        .bind(endpoint_id)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(classify)?;
        rows.iter().map(delivery_from_row).collect()
    }

    pub(super) async fn webhook_retry(
        &self,
        tenant: &str,
        endpoint_id: &str,
        event_id: &str,
        now_ms: u64,
    ) -> Result<Option<Delivery>, StoreError> {
        let pool = self.ready()?;
        // The lease is left alone: an attempt in flight records its outcome over this.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at_ms = $4 \
             WHERE tenant_id = $1 AND endpoint_id = $2 AND event_id = $3 \
             RETURNING {DELIVERY_COLUMNS}"
        )))
        .bind(tenant)
        .bind(endpoint_id)
        .bind(event_id)
        .bind(int(now_ms))
        .fetch_optional(pool)
        .await
        .map_err(classify)?;
        row.as_ref().map(delivery_from_row).transpose()
    }

    pub(super) async fn webhook_claim(
        &self,
        owner: &str,
        now_ms: u64,
        lease_ms: u64,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let pool = self.ready()?;
        let skip_locked = match self.backend {
            Backend::Postgres => "FOR UPDATE OF d SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let claimed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE webhook_deliveries SET lease_owner = $1, lease_until_ms = $2 \
             WHERE (tenant_id, endpoint_id, event_id) IN ( \
               SELECT d.tenant_id, d.endpoint_id, d.event_id FROM webhook_deliveries d \
               JOIN webhook_endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id \
               WHERE d.status = 'pending' AND d.next_attempt_at_ms <= $3 \
               AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= $3) AND e.enabled = $4 \
               ORDER BY d.next_attempt_at_ms LIMIT $5 {skip_locked}) \
             AND status = 'pending' AND (lease_until_ms IS NULL OR lease_until_ms <= $3) \
             RETURNING tenant_id, endpoint_id, event_id, attempts, created_at_ms"
        )))
        .bind(owner)
        .bind(int(now_ms.saturating_add(lease_ms)))
        .bind(int(now_ms))
        .bind(true)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(classify)?;
        let mut out = Vec::with_capacity(claimed.len());
        for row in &claimed {
            let text = |name: &str| row.try_get::<String, _>(name).map_err(corrupt("delivery"));
            let (tenant_id, endpoint_id, event_id) =
                (text("tenant_id")?, text("endpoint_id")?, text("event_id")?);
            let target = sqlx::query(
                "SELECT e.url, v.payload, v.event_type FROM webhook_endpoints e, \
                 webhook_events v WHERE e.tenant_id = $1 AND e.id = $2 \
                 AND v.tenant_id = $1 AND v.id = $3",
            )
            .bind(tenant_id.as_str())
            .bind(endpoint_id.as_str())
            .bind(event_id.as_str())
            .fetch_optional(pool)
            .await
            .map_err(classify)?;
            // Deleted in between: its deliveries went with it.
            let Some(target) = target else { continue };
            let get = |name: &str| target.try_get::<String, _>(name).map_err(corrupt("event"));
            out.push(ClaimedDelivery {
                url: get("url")?,
                payload: get("payload")?,
                event_type: event_type_of(&get("event_type")?)?,
                attempts: small(
                    row.try_get::<i64, _>("attempts")
                        .map_err(corrupt("delivery"))?,
                ),
                created_at_ms: ms(row, "created_at_ms")?,
                tenant_id,
                endpoint_id,
                event_id,
            });
        }
        Ok(out)
    }

    pub(super) async fn webhook_record(
        &self,
        claimed: &ClaimedDelivery,
        owner: &str,
        attempt: &Attempt,
    ) -> Result<Recorded, StoreError> {
        let pool = self.ready()?;
        let mut tx = pool.begin().await.map_err(classify)?;
        let (status, next_at, delivered_at) = match attempt.next {
            AttemptNext::Delivered => (
                DeliveryStatus::Delivered,
                attempt.at_ms,
                Some(attempt.at_ms),
            ),
            AttemptNext::RetryAt(at) => (DeliveryStatus::Pending, at, None),
            AttemptNext::GiveUp => (DeliveryStatus::Failed, attempt.at_ms, None),
        };
        let updated = sqlx::query(
            "UPDATE webhook_deliveries SET status = $5, attempts = attempts + 1, \
             next_attempt_at_ms = $6, last_status_code = $7, last_error = $8, \
             last_attempt_at_ms = $9, delivered_at_ms = $10, lease_owner = NULL, \
             lease_until_ms = NULL \
             WHERE tenant_id = $1 AND endpoint_id = $2 AND event_id = $3 AND lease_owner = $4",
        )
        .bind(claimed.tenant_id.as_str())
        .bind(claimed.endpoint_id.as_str())
        .bind(claimed.event_id.as_str())
        .bind(owner)
        .bind(status.as_str())
        .bind(int(next_at))
        .bind(attempt.status_code.map(i64::from))
        .bind(attempt.error.as_deref())
        .bind(int(attempt.at_ms))
        .bind(delivered_at.map(int))
        .execute(&mut *tx)
        .await
        .map_err(classify)?
        .rows_affected();
        if updated == 0 {
            return Ok(Recorded::LeaseLost);
        }
        let mut recorded = Recorded::Recorded;
        if attempt.next == AttemptNext::Delivered {
            sqlx::query(
                "UPDATE webhook_endpoints SET consecutive_failures = 0, failing_since_ms = NULL \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(claimed.tenant_id.as_str())
            .bind(claimed.endpoint_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        } else {
            let streak = sqlx::query(
                "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1, \
                 failing_since_ms = COALESCE(failing_since_ms, $3) \
                 WHERE tenant_id = $1 AND id = $2 \
                 RETURNING consecutive_failures, failing_since_ms",
            )
            .bind(claimed.tenant_id.as_str())
            .bind(claimed.endpoint_id.as_str())
            .bind(int(attempt.at_ms))
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
            if let Some(streak) = streak {
                let failures = small(
                    streak
                        .try_get::<i64, _>("consecutive_failures")
                        .map_err(corrupt("webhook"))?,
                );
                let since = opt_ms(&streak, "failing_since_ms")?.unwrap_or(attempt.at_ms);
                if let EndpointHealth::Disable(reason) =
                    webhook::endpoint_health(failures, since, attempt.at_ms)
                {
                    let disabled = sqlx::query(
                        "UPDATE webhook_endpoints SET enabled = $3, disabled_reason = $4, \
                         disabled_at_ms = $5 WHERE tenant_id = $1 AND id = $2 AND enabled = $6",
                    )
                    .bind(claimed.tenant_id.as_str())
                    .bind(claimed.endpoint_id.as_str())
                    .bind(false)
                    .bind(reason.as_str())
                    .bind(int(attempt.at_ms))
                    .bind(true)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?
                    .rows_affected();
                    if disabled > 0 {
                        recorded = Recorded::Disabled(reason);
                    }
                }
            }
        }
        tx.commit().await.map_err(classify)?;
        Ok(recorded)
    }

    pub(super) async fn webhook_pending(&self) -> Result<u64, StoreError> {
        let pool = self.ready()?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS pending FROM webhook_deliveries WHERE status = 'pending'",
        )
        .fetch_one(pool)
        .await
        .map_err(classify)?;
        Ok(unsigned(
            row.try_get::<i64, _>("pending")
                .map_err(corrupt("delivery"))?,
        ))
    }
}
