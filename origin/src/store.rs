//! Durable state: agents, calls, turns and usage, always scoped by tenant. `Arc<dyn Store>` so
//! router tests can swap a fake in; [`sql::SqlStore`] is the real one (PostgreSQL or SQLite).

use async_trait::async_trait;
use shared::agent::{Agent, AgentSpec};
use shared::call::Call;
use shared::call::CallerDetails;
use shared::call_list::CallListQuery;
use shared::carrier::AnsweredBy;
use shared::turn::{ToolCall, Turn, TurnRole};
use shared::usage::{DayRange, UsageDay};
use shared::webhook::{Delivery, Endpoint, EndpointConfig, EventType};

pub mod sql;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database did not answer (down, unreachable, pool exhausted, timed out).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A call with this id already exists for the tenant.
    #[error("a call with this id already exists")]
    CallExists,
    /// The call does not exist for the tenant.
    #[error("no such call")]
    CallNotFound,
    /// The call has ended; it takes no more turns.
    #[error("the call has ended")]
    CallEnded,
    /// One of the agent's phone numbers belongs to another agent of the tenant.
    #[error("phone number {0} already belongs to another agent")]
    PhoneNumberTaken(String),
    /// Stored data that cannot be read back (a bug or a manual edit).
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

/// A turn to append (serialised when a waiting journal is kept for a takeover,
/// `crate::journal`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewTurn {
    /// Who.
    pub role: TurnRole,
    /// What.
    pub text: String,
    /// Spoken over by the caller.
    pub interrupted: bool,
    /// Model that answered.
    pub model: Option<String>,
    /// Prompt tokens.
    pub input_tokens: Option<u32>,
    /// Reply tokens.
    pub output_tokens: Option<u32>,
    /// Time to first token.
    pub ttft_ms: Option<u32>,
    /// Duration of the reply.
    pub duration_ms: Option<u32>,
    /// The language spoken (see [`Turn::lang`]).
    pub lang: Option<String>,
    /// Why the model stopped.
    pub stop_reason: Option<String>,
    /// Why the model failed (the reply is then the agent's fallback utterance).
    pub failure_reason: Option<String>,
    /// The tools called while producing the reply.
    pub tool_calls: Vec<ToolCall>,
    /// Unix milliseconds.
    pub created_at_ms: u64,
}

impl NewTurn {
    /// A caller or key-press turn.
    pub fn said(role: TurnRole, text: impl Into<String>, at_ms: u64) -> Self {
        Self {
            role,
            text: text.into(),
            interrupted: false,
            model: None,
            input_tokens: None,
            output_tokens: None,
            ttft_ms: None,
            duration_ms: None,
            lang: None,
            stop_reason: None,
            failure_reason: None,
            tool_calls: Vec::new(),
            created_at_ms: at_ms,
        }
    }

    /// The turn as it reads back once stored at `seq`.
    pub fn stored(&self, seq: u32) -> Turn {
        Turn {
            seq,
            role: self.role,
            text: self.text.clone(),
            interrupted: self.interrupted,
            model: self.model.clone(),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            ttft_ms: self.ttft_ms,
            duration_ms: self.duration_ms,
            lang: self.lang.clone(),
            stop_reason: self.stop_reason.clone(),
            failure_reason: self.failure_reason.clone(),
            tool_calls: self.tool_calls.clone(),
            created_at_ms: self.created_at_ms,
        }
    }
}

/// A tenant's secret for `X-Aybiza-Signature` (see `crate::signing_secret`).
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    /// The current secret.
    pub secret: String,
    /// The one it replaced, while its grace lasts.
    pub previous: Option<String>,
    /// Unix ms until which `previous` still signs.
    pub previous_expires_at_ms: Option<u64>,
    /// Unix ms the tenant's first secret was made.
    pub created_at_ms: u64,
    /// Unix ms of the last rotation.
    pub rotated_at_ms: Option<u64>,
}

// Secrets stay out of logs.
impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSecret")
            .field("secret", &shared::outbound_signature::hint(&self.secret))
            .field("previous", &self.previous.is_some())
            .field("created_at_ms", &self.created_at_ms)
            .finish_non_exhaustive()
    }
}

/// How ending a call went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndOutcome {
    /// It was active and is now ended.
    Ended(Call),
    /// It had already ended (the stored call is returned unchanged).
    AlreadyEnded(Call),
    /// No such call for the tenant.
    NotFound,
}

/// How recording an answering-machine detection result went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerOutcome {
    /// Recorded on the live call (a first result is kept: a later one changes nothing).
    Recorded(Call),
    /// The call has ended (returned unchanged).
    Ended(Call),
    /// No such call for the tenant.
    NotFound,
}

/// The durable store. Every method takes the tenant and never touches another tenant's rows.
#[async_trait]
pub trait Store: Send + Sync {
    /// Cheap round trip, for `/ready`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The background probe's round trip (`crate::db_health`): whether the database is up,
    /// whatever the pool's load. The default is [`Store::ping`].
    async fn probe(&self) -> Result<(), StoreError> {
        self.ping().await
    }

    /// Creates or replaces an agent; returns it and whether it was created.
    async fn put_agent(
        &self,
        tenant: &str,
        id: &str,
        spec: &AgentSpec,
        now_ms: u64,
    ) -> Result<(Agent, bool), StoreError>;
    /// One agent.
    async fn get_agent(&self, tenant: &str, id: &str) -> Result<Option<Agent>, StoreError>;
    /// Deletes an agent and its numbers; false when there was none.
    async fn delete_agent(&self, tenant: &str, id: &str) -> Result<bool, StoreError>;
    /// Agents ordered by id, after `after`, at most `limit`.
    async fn list_agents(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Agent>, StoreError>;
    /// The agent answering a phone number.
    async fn agent_for_number(
        &self,
        tenant: &str,
        number: &str,
    ) -> Result<Option<Agent>, StoreError>;

    /// Stores a new call and counts it in the day's usage; the webhooks' outbox gets
    /// `call.started` in the same transaction.
    async fn create_call(&self, call: &Call) -> Result<(), StoreError>;
    /// One call.
    async fn get_call(&self, tenant: &str, id: &str) -> Result<Option<Call>, StoreError>;
    /// The calls `query` admits, in list order (`shared::call_list::newest_first`), at most
    /// `query.limit + 1` (one more than a page, so the page knows whether it is the last).
    async fn list_calls(
        &self,
        tenant: &str,
        query: &CallListQuery,
    ) -> Result<Vec<Call>, StoreError>;
    /// Ends a call. With it, in one transaction, the webhooks' outbox gets `call.ended` (and
    /// `call.transferred` for a transfer), carrying `handoff`.
    async fn end_call(
        &self,
        tenant: &str,
        id: &str,
        reason: &str,
        handoff: Option<&serde_json::Value>,
        now_ms: u64,
    ) -> Result<EndOutcome, StoreError>;

    /// Records what answering-machine detection found on a live call (the first result stays).
    async fn record_answer(
        &self,
        tenant: &str,
        id: &str,
        answered_by: AnsweredBy,
    ) -> Result<AnswerOutcome, StoreError>;
    /// Records the voicemail message the agent left, and when. False when there is no such call.
    async fn record_voicemail(
        &self,
        tenant: &str,
        id: &str,
        message: &str,
        at_ms: u64,
    ) -> Result<bool, StoreError>;

    /// The call's turns by `seq`.
    async fn list_turns(&self, tenant: &str, call_id: &str) -> Result<Vec<Turn>, StoreError>;
    /// Appends turns atomically to an active call; replies count in the day's usage and each
    /// reply is a `turn.completed` in the webhooks' outbox (same transaction). Returns
    /// their `seq`s. Fails with `CallNotFound` or `CallEnded` and writes nothing then.
    async fn append_turns(
        &self,
        tenant: &str,
        call_id: &str,
        turns: &[NewTurn],
    ) -> Result<Vec<u32>, StoreError>;
    /// Appends one turn of a call's write-behind journal (`crate::journal`), keyed by `key`
    /// (unique per call): written once however often it is asked, and to an ended call too (it
    /// was said while the call lived). Returns its `seq`. Fails with `CallNotFound`.
    ///
    /// The default appends without the key: for fakes in tests, which never lose an answer.
    async fn append_journaled(
        &self,
        tenant: &str,
        call_id: &str,
        key: &str,
        turn: &NewTurn,
    ) -> Result<u32, StoreError> {
        let _ = key;
        let seqs = self
            .append_turns(tenant, call_id, std::slice::from_ref(turn))
            .await?;
        seqs.first()
            .copied()
            .ok_or_else(|| StoreError::Corrupt("no seq for an appended turn".into()))
    }
    /// Stores what the carrier's `setup` said about the caller (caller name, forwarded-from,
    /// call type); absent details leave stored ones alone. False when there is no such call.
    async fn record_caller(
        &self,
        tenant: &str,
        call_id: &str,
        caller: &CallerDetails,
    ) -> Result<bool, StoreError>;
    /// Records that a stored reply was spoken over: its text becomes what was heard.
    async fn mark_interrupted(
        &self,
        tenant: &str,
        call_id: &str,
        seq: u32,
        heard: &str,
    ) -> Result<bool, StoreError>;

    /// Usage per day within `range`, days without usage omitted.
    async fn usage(&self, tenant: &str, range: DayRange) -> Result<Vec<UsageDay>, StoreError>;

    /// The tenant's signing secret, when it has one.
    async fn signing_secret(&self, tenant: &str) -> Result<Option<SigningSecret>, StoreError>;
    /// Stores `secret` as the tenant's first signing secret unless it already has one; returns
    /// the secret in force and whether it was created now.
    async fn create_signing_secret(
        &self,
        tenant: &str,
        secret: &str,
        now_ms: u64,
    ) -> Result<(SigningSecret, bool), StoreError>;
    /// Makes `secret` the tenant's signing secret; the one it replaces (if any) keeps signing
    /// until `previous_expires_at_ms`.
    async fn rotate_signing_secret(
        &self,
        tenant: &str,
        secret: &str,
        previous_expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<SigningSecret, StoreError>;

    /// Stores a new webhook endpoint `id` (enabled, no failures).
    async fn create_webhook(
        &self,
        tenant: &str,
        id: &str,
        config: &EndpointConfig,
        now_ms: u64,
    ) -> Result<Endpoint, StoreError>;
    /// The tenant's endpoints, oldest first.
    async fn list_webhooks(&self, tenant: &str) -> Result<Vec<Endpoint>, StoreError>;
    /// One endpoint.
    async fn get_webhook(&self, tenant: &str, id: &str) -> Result<Option<Endpoint>, StoreError>;
    /// Replaces an endpoint's configuration; `enabled: Some(true)` re-enables it and forgets its
    /// failures, `Some(false)` disables it by request. `None` when there is no such endpoint.
    async fn update_webhook(
        &self,
        tenant: &str,
        id: &str,
        config: &EndpointConfig,
        enabled: Option<bool>,
        now_ms: u64,
    ) -> Result<Option<Endpoint>, StoreError>;
    /// Deletes an endpoint and its deliveries; false when there was none.
    async fn delete_webhook(&self, tenant: &str, id: &str) -> Result<bool, StoreError>;
    /// An endpoint's deliveries, newest first, at most `limit`.
    async fn list_deliveries(
        &self,
        tenant: &str,
        endpoint_id: &str,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Queues a delivery again, due now (whatever its status). `None` when there is none.
    async fn retry_delivery(
        &self,
        tenant: &str,
        endpoint_id: &str,
        event_id: &str,
        now_ms: u64,
    ) -> Result<Option<Delivery>, StoreError>;
    /// Leases up to `limit` due deliveries of enabled endpoints to `owner` until
    /// `now_ms + lease_ms`; a row leased to another owner whose lease has not run out is never
    /// returned, so two replicas never send the same row at once.
    async fn claim_deliveries(
        &self,
        owner: &str,
        now_ms: u64,
        lease_ms: u64,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StoreError>;
    /// Records how an attempt went (only while `owner` still holds the lease) and updates the
    /// endpoint's streak of failures, disabling it when `shared::webhook::endpoint_health`
    /// says so.
    async fn record_attempt(
        &self,
        claimed: &ClaimedDelivery,
        owner: &str,
        attempt: &Attempt,
    ) -> Result<Recorded, StoreError>;
    /// Deliveries waiting for an attempt, every tenant.
    async fn pending_deliveries(&self) -> Result<u64, StoreError>;
}

/// A delivery leased for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    /// The tenant (whose secret signs it).
    pub tenant_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The event (the idempotency key).
    pub event_id: String,
    /// Its type.
    pub event_type: EventType,
    /// Where to POST.
    pub url: String,
    /// The body, exactly as signed.
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// Unix ms of the event.
    pub created_at_ms: u64,
}

/// How an attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Unix ms it was made.
    pub at_ms: u64,
    /// The answer's status, when there was an answer.
    pub status_code: Option<u16>,
    /// Why it failed (`None` when delivered).
    pub error: Option<String>,
    /// What follows.
    pub next: AttemptNext,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptNext {
    /// It was delivered.
    Delivered,
    /// Try again at this Unix ms.
    RetryAt(u64),
    /// Retries ran out.
    GiveUp,
}

/// What recording an attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded; the endpoint keeps receiving.
    Recorded,
    /// Recorded, and the endpoint was disabled for this reason.
    Disabled(String),
    /// The lease had passed to another replica; nothing was written.
    LeaseLost,
}
