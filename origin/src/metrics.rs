//! Prometheus metrics (`GET /metrics`, text exposition format).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every metric the origin exports.
pub struct Metrics {
    registry: Registry,
    /// `origin_requests_total{route,method,status}`.
    pub requests: Family<Labels, Counter>,
    /// `origin_turn_ttft_seconds{model}`: request to the model → first token.
    pub ttft: Family<Labels, Histogram>,
    /// `origin_turn_duration_seconds{model}`.
    pub turn_duration: Family<Labels, Histogram>,
    /// `origin_turns_total{outcome}`: completed, guardrail_intervened, interrupted, failed,
    /// not_durable.
    pub turns: Family<Labels, Counter>,
    /// `origin_tokens_total{direction}`: input, output.
    pub tokens: Family<Labels, Counter>,
    /// `origin_model_fallbacks_total{model,reason}`: the model skipped and why.
    pub fallbacks: Family<Labels, Counter>,
    /// `origin_interruptions_total`.
    pub interruptions: Counter,
    /// `origin_guardrail_interventions_total{model}`: replies a Bedrock guardrail ended.
    pub guardrail_interventions: Family<Labels, Counter>,
    /// `origin_relay_messages_ignored_total{type}`: carrier messages read and let be (`info`,
    /// types this protocol does not know).
    pub relay_ignored: Family<Labels, Counter>,
    /// `origin_idle_actions_total{action}`: reprompt, goodbye, end — what silent callers got.
    pub idle_actions: Family<Labels, Counter>,
    /// `origin_db_errors_total{kind}`.
    pub db_errors: Family<Labels, Counter>,
    /// `origin_redis_errors_total{operation}`.
    pub redis_errors: Family<Labels, Counter>,
    /// `origin_relay_connections`: relay WebSockets open now.
    pub relay_connections: Gauge,
    /// `origin_relay_messages_rejected_total{code}`.
    pub relay_rejected: Family<Labels, Counter>,
    /// `origin_event_subscribers`: live `/events` streams.
    pub event_subscribers: Gauge,
    /// `origin_tool_calls_total{kind,outcome}`: tool calls by kind (`tenant` or the built-in's
    /// name) and outcome (`ok`, `failed`, `timeout`, `refused`, …).
    pub tool_calls: Family<Labels, Counter>,
    /// `origin_tool_call_duration_seconds{kind}`: from the model's request to the result.
    pub tool_call_duration: Family<Labels, Histogram>,
    /// `origin_webhook_attempts_total{event,outcome}`: delivery attempts by event type and
    /// outcome (`delivered`, `failed`, `gave_up`).
    pub webhook_attempts: Family<Labels, Counter>,
    /// `origin_webhook_endpoints_disabled_total`: endpoints the disable rule switched off.
    pub webhook_endpoints_disabled: Counter,
    /// `origin_webhook_pending`: deliveries waiting in the outbox (every replica reads the same
    /// table; read at most every few seconds).
    pub webhook_pending: Gauge,
    /// `origin_database_up`: 1 while the background probe finds the database up.
    pub database_up: Gauge,
    /// `origin_task_protected`: 1 while ECS has acknowledged this task's scale-in protection.
    pub task_protected: Gauge,
    /// `origin_journal_depth`: live calls' turns waiting for the database (`crate::journal`).
    pub journal_depth: Gauge,
    /// `origin_journal_oldest_age_ms`: how long the oldest of them has waited.
    pub journal_oldest_age_ms: Gauge,
    /// `origin_journal_written_late_total`: journaled turns written after waiting.
    pub journal_written_late: Counter,
    /// `origin_journal_dropped_total`: turns that could not be kept.
    pub journal_dropped: Counter,
    /// `origin_conversation_reads_total{source}`: where an SSE turn found its call's
    /// conversation (`kept` in process, or read from the `database`; `crate::conversations`).
    pub conversation_reads: Family<Labels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 5 ms … ~20 s: a voice reply's first token lives in the lower half.
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0,
        10.0, 20.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("origin");
        let requests = Family::<Labels, Counter>::default();
        registry.register("requests", "HTTP requests answered", requests.clone());
        let ttft = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "turn_ttft_seconds",
            "Time from a turn's model request to its first token",
            ttft.clone(),
        );
        let turn_duration = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "turn_duration_seconds",
            "Time from a turn's model request to its last token",
            turn_duration.clone(),
        );
        let turns = Family::<Labels, Counter>::default();
        registry.register("turns", "Turns by outcome", turns.clone());
        let tokens = Family::<Labels, Counter>::default();
        registry.register("tokens", "Model tokens by direction", tokens.clone());
        let fallbacks = Family::<Labels, Counter>::default();
        registry.register(
            "model_fallbacks",
            "Models skipped for the next one in the chain",
            fallbacks.clone(),
        );
        let interruptions = Counter::default();
        registry.register(
            "interruptions",
            "Replies the caller spoke over",
            interruptions.clone(),
        );
        let guardrail_interventions = Family::<Labels, Counter>::default();
        registry.register(
            "guardrail_interventions",
            "Replies a Bedrock guardrail ended",
            guardrail_interventions.clone(),
        );
        let conversation_reads = Family::<Labels, Counter>::default();
        registry.register(
            "conversation_reads",
            "Where SSE turns found their call's conversation (kept in process or the database)",
            conversation_reads.clone(),
        );
        let relay_ignored = Family::<Labels, Counter>::default();
        registry.register(
            "relay_messages_ignored",
            "Carrier messages logged and let be (info, unknown types)",
            relay_ignored.clone(),
        );
        let idle_actions = Family::<Labels, Counter>::default();
        registry.register(
            "idle_actions",
            "What the agent did about a silent caller",
            idle_actions.clone(),
        );
        let db_errors = Family::<Labels, Counter>::default();
        registry.register(
            "db_errors",
            "Database operations that failed",
            db_errors.clone(),
        );
        let redis_errors = Family::<Labels, Counter>::default();
        registry.register(
            "redis_errors",
            "Redis operations that failed or were skipped while Redis was away",
            redis_errors.clone(),
        );
        let relay_connections = Gauge::default();
        registry.register(
            "relay_connections",
            "ConversationRelay WebSockets open",
            relay_connections.clone(),
        );
        let relay_rejected = Family::<Labels, Counter>::default();
        registry.register(
            "relay_messages_rejected",
            "Relay messages answered with an error",
            relay_rejected.clone(),
        );
        let event_subscribers = Gauge::default();
        registry.register(
            "event_subscribers",
            "Live call-event streams",
            event_subscribers.clone(),
        );
        let tool_calls = Family::<Labels, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls by kind and outcome",
            tool_calls.clone(),
        );
        let tool_call_duration = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "tool_call_duration_seconds",
            "Time from the model's tool request to its result",
            tool_call_duration.clone(),
        );
        let webhook_attempts = Family::<Labels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by event type and outcome",
            webhook_attempts.clone(),
        );
        let webhook_endpoints_disabled = Counter::default();
        registry.register(
            "webhook_endpoints_disabled",
            "Webhook endpoints disabled for failing",
            webhook_endpoints_disabled.clone(),
        );
        let webhook_pending = Gauge::default();
        registry.register(
            "webhook_pending",
            "Webhook deliveries waiting in the outbox",
            webhook_pending.clone(),
        );
        let task_protected = Gauge::default();
        registry.register(
            "task_protected",
            "Whether ECS protects this task from scale-in while it holds live calls",
            task_protected.clone(),
        );
        let database_up = Gauge::default();
        registry.register(
            "database_up",
            "1 while the background probe finds the database up",
            database_up.clone(),
        );
        let journal_depth = Gauge::default();
        registry.register(
            "journal_depth",
            "Live calls' turns waiting for the database",
            journal_depth.clone(),
        );
        let journal_oldest_age_ms = Gauge::default();
        registry.register(
            "journal_oldest_age_ms",
            "Age of the oldest journaled turn waiting for the database, in ms",
            journal_oldest_age_ms.clone(),
        );
        let journal_written_late = Counter::default();
        registry.register(
            "journal_written_late",
            "Journaled turns written after waiting for the database",
            journal_written_late.clone(),
        );
        let journal_dropped = Counter::default();
        registry.register(
            "journal_dropped",
            "Turns of live calls that could not be kept",
            journal_dropped.clone(),
        );
        Self {
            database_up,
            task_protected,
            journal_depth,
            journal_oldest_age_ms,
            journal_written_late,
            journal_dropped,
            conversation_reads,
            registry,
            requests,
            ttft,
            turn_duration,
            turns,
            tokens,
            fallbacks,
            interruptions,
            guardrail_interventions,
            relay_ignored,
            idle_actions,
            db_errors,
            redis_errors,
            relay_connections,
            relay_rejected,
            event_subscribers,
            tool_calls,
            tool_call_duration,
            webhook_attempts,
            webhook_endpoints_disabled,
            webhook_pending,
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            tracing::error!("metrics could not be encoded");
        }
        text
    }

    /// Counts a failed database operation.
    pub fn db_error(&self, error: &crate::store::StoreError) {
        let kind = match error {
            crate::store::StoreError::Unavailable(_) => "unavailable",
            crate::store::StoreError::Corrupt(_) => "corrupt",
            _ => return,
        };
        self.db_errors
            .get_or_create(&vec![("kind", kind.to_owned())])
            .inc();
    }

    /// Counts a failed or skipped Redis operation.
    pub fn redis_error(&self, operation: &'static str) {
        self.redis_errors
            .get_or_create(&vec![("operation", operation.to_owned())])
            .inc();
    }
}

/// One label.
pub fn label(name: &'static str, value: impl Into<String>) -> Labels {
    vec![(name, value.into())]
}
