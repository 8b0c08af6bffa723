//! What replicas share through Redis: call events (pub/sub per tenant, so any replica can serve
//! `GET /v1/calls/{id}/events` and tell a relay session its call was ended elsewhere), the
//! agent config cache, the edge nonces already used (`shared::signing::replay`), and the
//! context of live calls whose journal waits for the database (`crate::journal`), so another
//! replica can take such a call over.
//!
//! Without `REDIS_URL` everything is in-process. With it, Redis is used while it answers; when
//! it goes away, events are delivered in-process (to this replica's listeners) and the cache
//! falls back to a short-lived in-process copy, each logged and counted, and nothing fails.
//! Nonces are claimed in Redis (`SET NX EX`, one claim wins across replicas) and also kept
//! in-process, so a replay to the same replica is refused even while Redis is away; while it is
//! away a replay sent to another replica is not seen (counted as `redis_errors{operation=nonce}`).
//! fred reconnects in the background and re-subscribes; use of Redis resumes by itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::prelude::{
    Builder, ClientLike, Config as RedisClientConfig, EventInterface, Expiration, KeysInterface,
    Options, PubsubInterface, ReconnectPolicy, SetOptions, Value,
};
use shared::agent::Agent;
use shared::call_event::{CallEvent, CallEventKind};
use shared::carrier::AnsweredBy;
use shared::signing::replay::{Claim, NonceCache, remember_for_secs};
use tokio::sync::{broadcast, mpsc};

use crate::config::RedisConfig;
use crate::metrics::Metrics;

/// How long an agent config lives in Redis; updates delete it at once, this bounds a miss.
const REDIS_AGENT_TTL_SECS: i64 = 60;
/// How long an agent config lives in-process: long without Redis (one replica sees every
/// update), short while Redis is away (another replica's update cannot reach us).
const LOCAL_AGENT_TTL: Duration = Duration::from_secs(60);
const DEGRADED_AGENT_TTL: Duration = Duration::from_secs(5);
/// Most agents kept in-process.
const LOCAL_AGENT_CAPACITY: usize = 10_000;
/// A Redis command that takes longer than this is treated as Redis being away.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// Most edge nonces remembered in-process: a 66 s window at 1,500 signed requests a second.
/// Full, the origin refuses new requests (503) rather than forget a nonce that still counts.
const LOCAL_NONCE_CAPACITY: usize = 100_000;
/// Events buffered per listener before a slow one starts losing the oldest.
const EVENT_BUFFER: usize = 1024;
/// How long a live call's takeover context lives in Redis after its last update
/// (`crate::journal`): longer than an outage worth riding out, short enough that the context
/// of a call that ended meanwhile goes by itself.
const TAKEOVER_TTL_SECS: i64 = 6 * 60 * 60;

/// What a relay session hears about its call from elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionSignal {
    /// The call was ended (by the API, on any replica).
    Ended {
        /// Why.
        reason: String,
        /// JSON for the carrier's `handoffData`.
        handoff_data: Option<serde_json::Value>,
    },
    /// Answering-machine detection reported (through the edge, on any replica).
    Answered(AnsweredBy),
}

type SessionKey = (String, String);

/// Events, sessions and the agent cache.
pub struct Fanout {
    events: broadcast::Sender<Arc<CallEvent>>,
    sessions: Mutex<HashMap<SessionKey, HashMap<u64, mpsc::UnboundedSender<SessionSignal>>>>,
    next_session: AtomicU64,
    local_agents: Mutex<HashMap<(String, String), (Instant, Agent)>>,
    local_nonces: Mutex<NonceCache>,
    redis: Option<RedisLink>,
    metrics: Arc<Metrics>,
}

struct RedisLink {
    client: fred::clients::Client,
    subscriber: SubscriberClient,
    prefix: String,
}

/// A relay session's registration; dropping it unregisters.
pub struct SessionHandle {
    fanout: Arc<Fanout>,
    key: SessionKey,
    id: u64,
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        let mut sessions = self.fanout.lock_sessions();
        if let Some(entries) = sessions.get_mut(&self.key) {
            entries.remove(&self.id);
            if entries.is_empty() {
                sessions.remove(&self.key);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps: a panic elsewhere cannot leave them half-updated in a harmful way.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Fanout {
    /// In-process only (no `REDIS_URL`).
    pub fn local(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self::build(None, metrics))
    }

    fn build(redis: Option<RedisLink>, metrics: Arc<Metrics>) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            events,
            sessions: Mutex::default(),
            next_session: AtomicU64::new(1),
            local_agents: Mutex::default(),
            local_nonces: Mutex::new(NonceCache::new(LOCAL_NONCE_CAPACITY)),
            redis,
            metrics,
        }
    }

    /// With Redis. Waits up to `connect_wait` for the first connection; a Redis that is down
    /// at start is no reason not to start, so this never fails for an unreachable server.
    pub async fn with_redis(
        config: &RedisConfig,
        metrics: Arc<Metrics>,
        connect_wait: Duration,
    ) -> Result<Arc<Self>, String> {
        let client_config = RedisClientConfig::from_url(&config.url)
            .map_err(|error| format!("REDIS_URL: {error}"))?;
        let mut builder = Builder::from_config(client_config);
        builder
            .with_config(|c| c.fail_fast = false)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(1);
                c.internal_command_timeout = Duration::from_secs(1);
                c.max_command_attempts = 1;
            })
            .with_performance_config(|c| c.default_command_timeout = COMMAND_TIMEOUT)
            // Forever, backing off to 2 s: Redis coming back must be noticed by itself.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        let client = builder.build().map_err(|error| error.to_string())?;
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|error| error.to_string())?;
        client.connect();
        subscriber.connect();
        let _ = tokio::time::timeout(connect_wait, async {
            let _ = client.wait_for_connect().await;
            let _ = subscriber.wait_for_connect().await;
        })
        .await;
        if !client.is_connected() {
            tracing::warn!("Redis is not answering at start; running in-process until it does");
        }
        let prefix = config.key_prefix.clone();
        let fanout = Arc::new(Self::build(
            Some(RedisLink {
                client,
                subscriber,
                prefix: prefix.clone(),
            }),
            metrics,
        ));
        fanout.spawn_subscription();
        Ok(fanout)
    }

    /// Subscribes to every tenant's event channel and re-broadcasts what arrives; fred
    /// re-subscribes after each reconnect.
    fn spawn_subscription(self: &Arc<Self>) {
        let Some(redis) = &self.redis else {
            return;
        };
        let pattern = format!("{}events:*", redis.prefix);
        let subscriber = redis.subscriber.clone();
        let _manager = subscriber.manage_subscriptions();
        let mut messages = subscriber.message_rx();
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            // Subscribing waits for a connection; fred replays it on every reconnect.
            if let Err(error) = subscriber.psubscribe(pattern.clone()).await {
                tracing::warn!(%error, %pattern, "Redis subscription failed; will resubscribe on reconnect");
            }
            loop {
                match messages.recv().await {
                    Ok(message) => {
                        let Some(fanout) = weak.upgrade() else { return };
                        let text = match &message.value {
                            Value::String(text) => text.to_string(),
                            Value::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                            _ => continue,
                        };
                        match serde_json::from_str::<CallEvent>(&text) {
                            Ok(event) => fanout.deliver(Arc::new(event)),
                            Err(error) => tracing::warn!(%error, "unreadable call event on Redis"),
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "call events dropped: subscriber lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    fn lock_sessions(
        &self,
    ) -> MutexGuard<'_, HashMap<SessionKey, HashMap<u64, mpsc::UnboundedSender<SessionSignal>>>>
    {
        lock(&self.sessions)
    }

    /// Whether the events of every replica reach this one now: always without Redis (one
    /// replica), while it is connected with it.
    pub fn events_reach_every_replica(&self) -> bool {
        self.redis
            .as_ref()
            .is_none_or(|r| r.client.is_connected() && r.subscriber.is_connected())
    }

    fn redis_up(&self) -> Option<&RedisLink> {
        self.redis.as_ref().filter(|r| r.client.is_connected())
    }

    fn fast() -> Options {
        Options {
            timeout: Some(COMMAND_TIMEOUT),
            fail_fast: true,
            max_attempts: Some(1),
            ..Options::default()
        }
    }

    /// Publishes an event to every replica (or, with Redis away, to this one).
    pub async fn publish(&self, event: CallEvent) {
        if let Some(redis) = self.redis_up() {
            let channel = format!("{}events:{}", redis.prefix, event.tenant_id);
            let payload = serde_json::to_string(&event).unwrap_or_default();
            let sent: Result<i64, _> = redis
                .client
                .with_options(&Self::fast())
                .publish(channel, payload)
                .await;
            match sent {
                // Our own subscription brings it back to this replica's listeners.
                Ok(_) => return,
                Err(error) => {
                    self.metrics.redis_error("publish");
                    tracing::warn!(%error, "Redis publish failed; delivering in-process");
                }
            }
        } else if self.redis.is_some() {
            self.metrics.redis_error("publish");
            tracing::debug!("Redis away; delivering the event in-process");
        }
        self.deliver(Arc::new(event));
    }

    /// Hands an event to this replica's listeners and, for an ended call or a detection result,
    /// its relay sessions.
    fn deliver(&self, event: Arc<CallEvent>) {
        let signal = match (event.kind, event.answered_by) {
            (CallEventKind::CallEnded, _) => Some(SessionSignal::Ended {
                reason: event.reason.clone().unwrap_or_else(|| "ended".into()),
                handoff_data: event.handoff_data.clone(),
            }),
            (CallEventKind::AnsweredBy, Some(answered_by)) => {
                Some(SessionSignal::Answered(answered_by))
            }
            _ => None,
        };
        if let Some(signal) = signal {
            let key = (event.tenant_id.clone(), event.call_id.clone());
            if let Some(entries) = self.lock_sessions().get(&key) {
                for sender in entries.values() {
                    let _ = sender.send(signal.clone());
                }
            }
        }
        // No listeners is fine.
        let _ = self.events.send(event);
    }

    /// Every event this replica hears (listeners filter by tenant and call).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CallEvent>> {
        self.events.subscribe()
    }

    /// Registers a relay session for signals about its call.
    pub fn register_session(
        self: &Arc<Self>,
        tenant: &str,
        call_id: &str,
    ) -> (SessionHandle, mpsc::UnboundedReceiver<SessionSignal>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let key = (tenant.to_owned(), call_id.to_owned());
        self.lock_sessions()
            .entry(key.clone())
            .or_default()
            .insert(id, sender);
        (
            SessionHandle {
                fanout: Arc::clone(self),
                key,
                id,
            },
            receiver,
        )
    }

    /// `None` without Redis; else whether it answers a PING.
    pub async fn redis_health(&self) -> Option<Result<(), String>> {
        let redis = self.redis.as_ref()?;
        if !redis.client.is_connected() {
            return Some(Err("not connected (reconnecting)".into()));
        }
        let pong: Result<String, _> = redis.client.with_options(&Self::fast()).ping(None).await;
        Some(pong.map(|_| ()).map_err(|error| error.to_string()))
    }

    fn agent_key(prefix: &str, tenant: &str, id: &str) -> String {
        format!("{prefix}agent:{tenant}:{id}")
    }

    /// A cached agent config.
    pub async fn cached_agent(&self, tenant: &str, id: &str) -> Option<Agent> {
        if let Some(redis) = self.redis_up() {
            let found: Result<Option<String>, _> = redis
                .client
                .with_options(&Self::fast())
                .get(Self::agent_key(&redis.prefix, tenant, id))
                .await;
            match found {
                Ok(Some(json)) => return serde_json::from_str(&json).ok(),
                Ok(None) => return None,
                Err(error) => {
                    self.metrics.redis_error("cache_get");
                    tracing::warn!(%error, "Redis cache read failed; using the in-process cache");
                }
            }
        }
        let ttl = if self.redis.is_some() {
            DEGRADED_AGENT_TTL
        } else {
            LOCAL_AGENT_TTL
        };
        let key = (tenant.to_owned(), id.to_owned());
        let mut local = lock(&self.local_agents);
        match local.get(&key) {
            Some((stored, agent)) if stored.elapsed() < ttl => Some(agent.clone()),
            Some(_) => {
                local.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Caches an agent config read from the database.
    pub async fn cache_agent(&self, agent: &Agent) {
        if let Some(redis) = self.redis_up() {
            let json = serde_json::to_string(agent).unwrap_or_default();
            let stored: Result<(), _> = redis
                .client
                .with_options(&Self::fast())
                .set(
                    Self::agent_key(&redis.prefix, &agent.tenant_id, &agent.id),
                    json,
                    Some(Expiration::EX(REDIS_AGENT_TTL_SECS)),
                    None,
                    false,
                )
                .await;
            match stored {
                Ok(()) => return,
                Err(error) => {
                    self.metrics.redis_error("cache_set");
                    tracing::warn!(%error, "Redis cache write failed; caching in-process");
                }
            }
        }
        let mut local = lock(&self.local_agents);
        if local.len() >= LOCAL_AGENT_CAPACITY {
            local.clear();
        }
        local.insert(
            (agent.tenant_id.clone(), agent.id.clone()),
            (Instant::now(), agent.clone()),
        );
    }

    /// Drops an agent's cached config after an update or delete, everywhere it may be.
    pub async fn invalidate_agent(&self, tenant: &str, id: &str) {
        lock(&self.local_agents).remove(&(tenant.to_owned(), id.to_owned()));
        if let Some(redis) = &self.redis {
            let deleted: Result<i64, _> = redis
                .client
                .with_options(&Self::fast())
                .del(Self::agent_key(&redis.prefix, tenant, id))
                .await;
            if let Err(error) = deleted {
                // The Redis copy expires within REDIS_AGENT_TTL_SECS anyway.
                self.metrics.redis_error("cache_invalidate");
                tracing::warn!(%error, "Redis cache invalidation failed");
            }
        }
    }

    /// Claims the nonce of an edge request signed at `timestamp` (already verified): `Fresh`
    /// the first time any replica sharing this Redis sees it within its window, `Replayed`
    /// after. Without Redis (or with Redis away) this process's memory decides.
    pub async fn claim_nonce(&self, nonce: &str, timestamp: u64, now_secs: u64) -> Claim {
        let local = lock(&self.local_nonces).claim(nonce, timestamp, now_secs);
        if local != Claim::Fresh {
            return local;
        }
        if let Some(redis) = self.redis_up() {
            let ttl = i64::try_from(remember_for_secs(timestamp, now_secs)).unwrap_or(i64::MAX);
            // SET NX answers OK when this call stored the key, nil when it already existed.
            let set: Result<Option<String>, _> = redis
                .client
                .with_options(&Self::fast())
                .set(
                    format!("{}nonce:{nonce}", redis.prefix),
                    "1",
                    Some(Expiration::EX(ttl)),
                    Some(SetOptions::NX),
                    false,
                )
                .await;
            match set {
                Ok(Some(_)) => {}
                Ok(None) => return Claim::Replayed,
                Err(error) => {
                    self.metrics.redis_error("nonce");
                    tracing::warn!(%error, "Redis nonce claim failed; this replica's memory decides");
                }
            }
        } else if self.redis.is_some() {
            self.metrics.redis_error("nonce");
        }
        Claim::Fresh
    }

    fn takeover_key(prefix: &str, tenant: &str, call_id: &str) -> String {
        format!("{prefix}takeover:{tenant}:{call_id}")
    }

    /// Whether live calls' contexts can be kept for another replica (Redis is configured).
    pub fn keeps_takeovers(&self) -> bool {
        self.redis.is_some()
    }

    /// Keeps a call's takeover context (JSON); whether Redis took it.
    pub async fn save_takeover(&self, tenant: &str, call_id: &str, json: String) -> bool {
        let Some(redis) = self.redis_up() else {
            if self.redis.is_some() {
                self.metrics.redis_error("takeover_set");
            }
            return false;
        };
        let stored: Result<(), _> = redis
            .client
            .with_options(&Self::fast())
            .set(
                Self::takeover_key(&redis.prefix, tenant, call_id),
                json,
                Some(Expiration::EX(TAKEOVER_TTL_SECS)),
                None,
                false,
            )
            .await;
        stored
            .inspect_err(|error| {
                self.metrics.redis_error("takeover_set");
                tracing::warn!(%error, call_id, "a live call's context could not be kept in Redis");
            })
            .is_ok()
    }

    /// A call's takeover context (JSON), when another replica kept one.
    pub async fn load_takeover(&self, tenant: &str, call_id: &str) -> Option<String> {
        let redis = self.redis_up()?;
        let found: Result<Option<String>, _> = redis
            .client
            .with_options(&Self::fast())
            .get(Self::takeover_key(&redis.prefix, tenant, call_id))
            .await;
        found
            .inspect_err(|error| {
                self.metrics.redis_error("takeover_get");
                tracing::warn!(%error, call_id, "a live call's context could not be read from Redis");
            })
            .ok()
            .flatten()
    }

    /// Forgets a call's takeover context (its journal is written).
    pub async fn drop_takeover(&self, tenant: &str, call_id: &str) {
        let Some(redis) = self.redis_up() else { return };
        let deleted: Result<i64, _> = redis
            .client
            .with_options(&Self::fast())
            .del(Self::takeover_key(&redis.prefix, tenant, call_id))
            .await;
        if let Err(error) = deleted {
            // It expires within TAKEOVER_TTL_SECS anyway.
            self.metrics.redis_error("takeover_del");
            tracing::warn!(%error, call_id, "a live call's context could not be dropped from Redis");
        }
    }

    /// Closes the Redis connections.
    pub async fn close(&self) {
        if let Some(redis) = &self.redis {
            let _ = redis.client.quit().await;
            let _ = redis.subscriber.quit().await;
        }
    }
}
