//! The origin: an axum service on ECS Fargate behind the Cloudflare edge, where a caller's
//! words become Claude's reply.
//!
//! `app` builds the router (tests drive it with `oneshot`, no socket); `serve` runs it on a
//! listener until `shutdown` resolves, then drains: new calls are refused (503 `draining`), live
//! turns finish, relay sockets close with 1012 so the edge reconnects elsewhere, all within a
//! bounded grace.
//!
//! # Routes
//!
//! Every route but `/health` needs the edge's signature (`X-Edge-Signature`, see
//! `shared::signing`) and, for `/v1/…`, its principal (`X-Edge-Principal`), whose tenant scopes
//! every read and write: another tenant's agent or call is simply `404`. Errors are the JSON
//! envelope `{"error":{"code","message","request_id"}}` (`shared::error_body::ErrorBody`).
//!
//! | route | request | answer |
//! | --- | --- | --- |
//! | `GET /health` | — | 200 `HealthReport` (liveness, no signature); 503 with `DRAINING` after SIGTERM |
//! | `GET /ready` | — | 200/503 `HealthReport`: `DATABASE` (as the background probe found it, `db_health`), `REDIS` (when configured; its failure degrades, not fails), `BEDROCK`, `DRAINING` after SIGTERM, and `journal` (the live calls' write-behind journals: depth, oldest age, written late, dropped) |
//! | `GET /metrics` | — | 200 Prometheus text |
//! | `PUT /v1/agents/{id}` | `AgentSpec` | 201 (created) / 200 `Agent`; 400, 409 `phone_number_taken` |
//! | `GET /v1/agents/{id}` | — | 200 `Agent`; 404 |
//! | `DELETE /v1/agents/{id}` | — | 204; 404 |
//! | `GET /v1/agents?after=&limit=` | — | 200 `AgentPage` (limit 1–100, default 50) |
//! | `GET /v1/phone-numbers/{e164}/agent` | — | 200 `Agent` answering that number; 404 |
//! | `POST /v1/calls` | `CreateCall` | 201 `Call`; 404 (agent), 409 `call_exists`, 503 `draining` + `Retry-After` |
//! | `GET /v1/calls?status=&agent_id=&source=&started_after_ms=&started_before_ms=&cursor=&limit=` | — | 200 `CallPage` (newest first; limit 1–100, default 50; `shared::call_list`); 400 `invalid_query`, `invalid_cursor` |
//! | `GET /v1/calls/{id}` | — | 200 `Call`; 404 |
//! | `POST /v1/calls/{id}/end` | `EndCall` | 200 `Call`; 404, 409 `call_ended` |
//! | `GET /v1/calls/{id}/turns` | — | 200 `TurnList` |
//! | `POST /v1/calls/{id}/turns` | `TurnRequest` | 200 `text/event-stream`: `token` (`TokenEvent`)…, then `done` (`DoneEvent`, sent once the turn is durable) or `error` (`ErrorBody`); before streaming: 400, 404, 409 `call_ended`, 413, 503 + `Retry-After` |
//! | `GET /v1/calls/{id}/events` | `Last-Event-ID`? | 200 `text/event-stream` of `CallEvent`s, event name = kind, id = place in the call: the stored history, then live, ending after `call_ended` (`shared::call_event::stream`); 204 for an ended call with nothing after `Last-Event-ID`; 400 for an id it never gave |
//! | `GET /v1/events` | — | 200 `text/event-stream`: every live `CallEvent` of the tenant (no history, no ids) |
//! | `GET /v1/calls/{id}/relay` | WebSocket | ConversationRelay (`shared::relay`); 409 `call_ended`, 503 before the upgrade (`draining` after SIGTERM) |
//! | `GET /v1/usage?from=&to=` | — | 200 `UsageReport` (UTC days, default the last 30): calls, replies, tokens, minutes, tool calls |
//! | `GET /v1/signing-secret` | — | 200 the secret's metadata; 201 with its value when this creates it |
//! | `POST /v1/signing-secret/rotate` | `{"previous_valid_for_secs"?}` | 200 (201 when none existed) with the new value; 400 |
//! | `POST /v1/webhooks` | `EndpointSpec` `{url, agent_id?, events?, description?}` | 201 `Endpoint`; 400 `invalid_webhook` (URL, SSRF, agent, events), `malformed_json`; 409 `too_many_webhooks` |
//! | `GET /v1/webhooks` | — | 200 `EndpointList` |
//! | `GET /v1/webhooks/{id}` | — | 200 `Endpoint`; 404 |
//! | `PATCH /v1/webhooks/{id}` | `EndpointPatch` `{url?, events?, description?, enabled?}` | 200 `Endpoint` (`enabled: true` re-enables); 400, 404 |
//! | `DELETE /v1/webhooks/{id}` | — | 204; 404 |
//! | `GET /v1/webhooks/{id}/deliveries?limit=` | — | 200 `DeliveryList`, newest first (limit 1–100, default 50); 404 |
//! | `POST /v1/webhooks/{id}/deliveries/{event_id}/retry` | — | 202 `Delivery` due now; 404; 409 `endpoint_disabled` |
//!
//! All request bodies are limited to 512 KiB (413 beyond). While the database is down
//! (`db_health`), every `/v1/…` route answers 503 `database_unavailable` with `Retry-After` at once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::{get, post, put};
use shared::health::HEALTH_PATH;
use shared::origin_path;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod config;
pub mod conversations;
pub mod db_health;
pub mod edge_auth;
pub mod error;
pub mod fanout;
pub mod healthcheck;
pub mod journal;
pub mod llm;
pub mod metrics;
pub mod outbound;
pub mod relay;
pub mod request_id;
mod routes;
pub mod signing_secret;
pub mod store;
pub mod task_protection;
pub mod telemetry;
pub mod tools;
pub mod turn;
pub mod webhooks;

pub use config::Config;

use crate::conversations::Conversations;
use crate::db_health::DbHealth;
use crate::fanout::Fanout;
use crate::journal::Journals;
use crate::llm::LlmClient;
use crate::metrics::Metrics;
use crate::outbound::{OutboundClient, Resolve, SystemResolver};
use crate::signing_secret::SecretCache;
use crate::store::Store;

/// Unix milliseconds; injected so tests can move time (signature skew) without sleeping.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The parsed configuration.
    pub config: Arc<Config>,
    /// Agents, calls, turns, usage.
    pub store: Arc<dyn Store>,
    /// The model.
    pub llm: Arc<dyn LlmClient>,
    /// Events, relay sessions, agent cache.
    pub fanout: Arc<Fanout>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Unix milliseconds.
    pub clock: Clock,
    /// Fires when the process starts shutting down.
    pub shutdown: CancellationToken,
    /// Requests to tenants' URLs (tool calls), under the SSRF rule.
    pub outbound: Arc<OutboundClient>,
    /// Tenants' signing secrets, read recently.
    pub secrets: Arc<SecretCache>,
    /// The webhooks' delivery task's doorbell.
    pub webhooks: Arc<webhooks::Doorbell>,
    /// Whether the database is up, as the background probe last found it.
    pub db_health: Arc<DbHealth>,
    /// The live calls' write-behind journals.
    pub journals: Arc<Journals>,
    /// The API's conversations kept between their SSE turns.
    pub conversations: Arc<Conversations>,
}

impl AppState {
    /// State from its parts, with the system clock.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        llm: Arc<dyn LlmClient>,
        fanout: Arc<Fanout>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let outbound = OutboundClient::new(config.outbound_policy, Arc::new(SystemResolver));
        let journals = Journals::new(config.journal, &metrics);
        let conversations = Conversations::new(fanout.subscribe());
        Self {
            config: Arc::new(config),
            store,
            llm,
            fanout,
            metrics,
            clock: system_clock(),
            shutdown: CancellationToken::new(),
            outbound: Arc::new(outbound),
            secrets: Arc::new(SecretCache::default()),
            webhooks: Arc::new(webhooks::Doorbell::default()),
            db_health: Arc::new(DbHealth::default()),
            journals: Arc::new(journals),
            conversations: Arc::new(conversations),
        }
    }

    /// The same state with another clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The same state resolving tool hosts with `resolver` (tests give a fixed table, to show
    /// what a name resolving to an internal address meets).
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.outbound = Arc::new(OutboundClient::new(self.config.outbound_policy, resolver));
        self
    }

    /// The real dependencies: the SQL store (lazy, migrating in the background), Redis when
    /// configured, Bedrock with the standard credential chain.
    pub async fn from_config(config: Config) -> Result<Self, String> {
        let metrics = Arc::new(Metrics::new());
        let store = store::sql::SqlStore::open(&config.database).map_err(|e| e.to_string())?;
        let fanout = match &config.redis {
            Some(redis) => {
                Fanout::with_redis(redis, Arc::clone(&metrics), Duration::from_secs(2)).await?
            }
            None => Fanout::local(Arc::clone(&metrics)),
        };
        let llm = llm::bedrock::BedrockClient::from_config(&config.bedrock).await;
        Ok(Self::new(
            config,
            Arc::new(store),
            Arc::new(llm),
            fanout,
            metrics,
        ))
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// Whether the process is draining for a shutdown: no new calls or relay sockets.
    pub fn draining(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}

/// Readiness: database, Redis and Bedrock configuration.
pub const READY_PATH: &str = "/ready";
/// Prometheus text.
pub const METRICS_PATH: &str = "/metrics";

/// The origin's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(HEALTH_PATH, get(routes::health))
        .route(READY_PATH, get(routes::ready))
        .route(METRICS_PATH, get(routes::metrics))
        .route(
            origin_path::AGENT,
            put(routes::agents::put)
                .get(routes::agents::get)
                .delete(routes::agents::delete),
        )
        .route(origin_path::AGENTS, get(routes::agents::list))
        .route(
            origin_path::PHONE_NUMBER_AGENT,
            get(routes::agents::by_number),
        )
        .route(
            origin_path::CALLS,
            post(routes::calls::create).get(routes::calls::list),
        )
        .route(origin_path::CALL, get(routes::calls::get))
        .route(origin_path::CALL_END, post(routes::calls::end))
        .route(
            origin_path::CALL_ANSWERED_BY,
            post(routes::calls::answered_by),
        )
        .route(
            origin_path::CALL_TURNS,
            post(routes::calls::turn).get(routes::calls::turns),
        )
        .route(origin_path::CALL_EVENTS, get(routes::calls::events))
        .route(origin_path::EVENTS, get(routes::calls::tenant_events))
        .route(origin_path::CALL_RELAY, get(relay::upgrade))
        .route(origin_path::USAGE, get(routes::usage))
        .route(
            origin_path::SIGNING_SECRET,
            get(routes::signing_secret::get),
        )
        .route(
            origin_path::SIGNING_SECRET_ROTATE,
            post(routes::signing_secret::rotate),
        )
        .route(
            origin_path::WEBHOOKS,
            post(routes::webhooks::create).get(routes::webhooks::list),
        )
        .route(
            origin_path::WEBHOOK,
            get(routes::webhooks::get)
                .patch(routes::webhooks::patch)
                .delete(routes::webhooks::delete),
        )
        .route(
            origin_path::WEBHOOK_DELIVERIES,
            get(routes::webhooks::deliveries),
        )
        .route(
            origin_path::WEBHOOK_DELIVERY_RETRY,
            post(routes::webhooks::retry),
        )
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::require_database,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            edge_auth::require_signature,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::count_request,
        ))
        .layer(axum::middleware::from_fn(request_id::assign))
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then drains for at most the
/// configured grace (`SHUTDOWN_GRACE_SECS`) and returns:
///
/// 1. Draining: connections are still accepted, but new calls and relay sockets get 503
///    `draining` with `Retry-After`, and `/health` and `/ready` answer 503 `DRAINING`. Each relay
///    socket finishes its live turn, then closes with 1012 (service restart), and the edge's
///    `CallSession` moves the call to its next origin; SSE event streams end.
/// 2. Once no relay socket is left (or the grace is over), the listener closes and the requests
///    still running (an SSE turn) finish, within what remains of the grace.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.config.shutdown_grace;
    let stopping = state.shutdown.clone();
    let metrics = Arc::clone(&state.metrics);
    // The database probe runs until the process stops serving, a drain included (the shutdown
    // token fires when the drain starts).
    let probing = CancellationToken::new();
    let database = &state.config.database;
    tokio::spawn(db_health::probe(
        Arc::clone(&state.store),
        Arc::clone(&state.db_health),
        database.probe_interval,
        database.probe_timeout,
        probing.clone(),
    ));
    let (fired, on_fired) = tokio::sync::oneshot::channel::<()>();
    use axum::serve::ListenerExt;
    // A reply leaves as a stream of small relay frames: each goes out as it is written, never
    // held back (Nagle) until the previous one is acknowledged.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
    });
    // The delivery task stops with the shutdown token, when the drain starts: what it has not
    // sent waits in the outbox for another replica (or the next start).
    let delivering = tokio::spawn(webhooks::deliver(state.clone()));
    let census = tokio::spawn(log_live_calls(Arc::clone(&metrics)));
    // Runs through the drain, which gives the protection back; it ends with the process.
    if let Some(config) = state.config.task_protection.clone() {
        tokio::spawn(task_protection::keep(state.clone(), config));
    }
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!(
            grace_secs = grace.as_secs(),
            relay_sockets = metrics.relay_connections.get(),
            "draining: new calls refused, relay sockets close after their live turn"
        );
        stopping.cancel();
        // The receiver only goes away when `serve` returns; nothing to do then.
        let _ = fired.send(());
        let deadline = tokio::time::Instant::now() + grace;
        while metrics.relay_connections.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        tracing::info!(
            relay_sockets = metrics.relay_connections.get(),
            "drained: no longer accepting connections"
        );
    });
    let outcome = tokio::select! {
        outcome = server => outcome,
        () = deadline_after(on_fired, grace) => {
            tracing::warn!("grace elapsed with requests still live; exiting anyway");
            Ok(())
        }
    };
    census.abort();
    probing.cancel();
    // An attempt the delivery task was making is cut; its lease lets another replica (or the
    // next start) make it again.
    stopping_deliveries(delivering).await;
    outcome
}

async fn stopping_deliveries(task: tokio::task::JoinHandle<()>) {
    let abort = task.abort_handle();
    if tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .is_err()
    {
        abort.abort();
    }
}

/// How often the open relay sockets are logged.
const CENSUS_EVERY: Duration = Duration::from_secs(60);

/// Logs the relay sockets open now, once a minute: summed over a region's tasks, the live calls
/// on the CloudWatch dashboard (`origin/deploy/origin.yaml`), where `/metrics` is not scraped.
async fn log_live_calls(metrics: Arc<Metrics>) {
    let mut every = tokio::time::interval(CENSUS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        tracing::info!(
            relay_sockets = metrics.relay_connections.get(),
            "relay sockets open"
        );
    }
}

/// How often a draining process looks whether its relay sockets are gone.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Resolves `grace` after the shutdown signal; never, if the signal never fires.
async fn deadline_after(on_fired: tokio::sync::oneshot::Receiver<()>, grace: Duration) {
    match on_fired.await {
        Ok(()) => tokio::time::sleep(grace).await,
        Err(_) => std::future::pending().await,
    }
}
