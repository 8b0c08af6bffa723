//! Post-call webhooks: what a tenant's endpoint is, which events it receives and their payloads,
//! when a failed delivery is tried again, and when an endpoint that keeps failing is disabled.
//!
//! The origin writes one outbox row per (event, subscribed endpoint) in the same transaction as
//! the state change the event reports, and a background task POSTs it signed with the tenant's
//! secret (`X-Aybiza-Signature`, [`crate::outbound_signature`]) and an [`IDEMPOTENCY_HEADER`]
//! holding the event id (the same on every attempt, so a receiver can drop a repeat).
//!
//! - Retries: [`next_attempt`] — exponential from [`FIRST_RETRY_MS`], capped at
//!   [`MAX_RETRY_MS`], with jitter (each delay is drawn in its upper half), for
//!   [`RETRY_WINDOW_MS`] after the event; the first attempt after that window that fails gives
//!   up.
//! - Disable rule: [`endpoint_health`] — an endpoint failing [`DISABLE_AFTER_FAILURES`] times in
//!   a row over at least [`DISABLE_AFTER_MS`] is disabled with a reason; one success resets
//!   the streak.
//! - Subscriptions: every endpoint gets `call.started`, `call.ended` and `call.transferred`
//!   unless its `events` names fewer; `turn.completed` only when named (opt-in).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::call::Call;
use crate::identifier::is_resource_id;
use crate::outbound_url::{OutboundPolicy, OutboundUrl};
use crate::turn::{ToolCall, Turn, TurnRole};

/// Header carrying the event id: the same on every attempt of one event to one endpoint.
pub const IDEMPOTENCY_HEADER: &str = "Aybiza-Idempotency-Key";
/// Header carrying the event type.
pub const EVENT_TYPE_HEADER: &str = "Aybiza-Event-Type";
/// Delay before the first retry.
pub const FIRST_RETRY_MS: u64 = 30_000;
/// Longest delay between two attempts.
pub const MAX_RETRY_MS: u64 = 3_600_000;
/// How long after its event a delivery keeps being retried: a day.
pub const RETRY_WINDOW_MS: u64 = 86_400_000;
/// Failures in a row (with [`DISABLE_AFTER_MS`]) that disable an endpoint.
pub const DISABLE_AFTER_FAILURES: u32 = 10;
/// How long an endpoint must have been failing (with [`DISABLE_AFTER_FAILURES`]) to be disabled.
pub const DISABLE_AFTER_MS: u64 = 86_400_000;
/// Endpoints per tenant.
pub const MAX_ENDPOINTS: usize = 20;
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 200;
/// Deadline of one attempt.
pub const ATTEMPT_TIMEOUT_MS: u64 = 10_000;
/// Longest receiver answer read; a longer one counts as a failed attempt.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest error or answer excerpt kept in the delivery log.
pub const MAX_LOGGED_CHARS: usize = 500;

/// An event a webhook reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    /// A call was created.
    #[serde(rename = "call.started")]
    CallStarted,
    /// A call ended: transcript, tool calls, handoff, usage, timings, end reason.
    #[serde(rename = "call.ended")]
    CallEnded,
    /// The agent handed the caller to a person.
    #[serde(rename = "call.transferred")]
    CallTransferred,
    /// A reply of the agent was stored (opt-in).
    #[serde(rename = "turn.completed")]
    TurnCompleted,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 4] = [
        EventType::CallStarted,
        EventType::CallEnded,
        EventType::CallTransferred,
        EventType::TurnCompleted,
    ];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::CallStarted => "call.started",
            EventType::CallEnded => "call.ended",
            EventType::CallTransferred => "call.transferred",
            EventType::TurnCompleted => "turn.completed",
        }
    }

    /// Reads a name on the wire.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Whether an endpoint that names no events receives it.
    pub fn subscribed_by_default(self) -> bool {
        self != EventType::TurnCompleted
    }
}

/// The events an endpoint that names none receives.
pub fn default_events() -> Vec<EventType> {
    EventType::ALL
        .into_iter()
        .filter(|kind| kind.subscribed_by_default())
        .collect()
}

/// `POST /v1/webhooks`: a new endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Where events are POSTed (https; http only to loopback on a development origin).
    pub url: String,
    /// Only this agent's calls; absent for every call of the tenant.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// The events wanted; absent for [`default_events`].
    #[serde(default)]
    pub events: Option<Vec<EventType>>,
    /// A note for people.
    #[serde(default)]
    pub description: Option<String>,
}

/// `PATCH /v1/webhooks/{id}`: what changes; absent fields stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    /// A new URL.
    #[serde(default)]
    pub url: Option<String>,
    /// New events.
    #[serde(default)]
    pub events: Option<Vec<EventType>>,
    /// A new description.
    #[serde(default)]
    pub description: Option<String>,
    /// `true` re-enables a disabled endpoint (its streak of failures forgotten); `false`
    /// disables it.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Why an endpoint's configuration was refused; each names its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The URL breaks the outbound rule.
    #[error("url {0}")]
    Url(crate::outbound_url::UrlError),
    /// The agent id is not an id.
    #[error("agent_id must be 1 to 64 letters, digits, '-' or '_'")]
    BadAgentId,
    /// `events` is empty.
    #[error(
        "events must name at least one of call.started, call.ended, call.transferred, turn.completed"
    )]
    NoEvents,
    /// The description is too long.
    #[error("description must be at most {MAX_DESCRIPTION_CHARS} characters")]
    LongDescription,
}

impl EndpointError {
    /// The JSON field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            EndpointError::Url(_) => "url",
            EndpointError::BadAgentId => "agent_id",
            EndpointError::NoEvents => "events",
            EndpointError::LongDescription => "description",
        }
    }
}

fn check_url(url: &str, policy: OutboundPolicy) -> Result<(), EndpointError> {
    OutboundUrl::parse(url, policy)
        .map(|_| ())
        .map_err(EndpointError::Url)
}

/// The event list as stored: sorted, without repeats; empty is refused.
fn check_events(events: &[EventType]) -> Result<Vec<EventType>, EndpointError> {
    let mut events = events.to_vec();
    events.sort();
    events.dedup();
    if events.is_empty() {
        return Err(EndpointError::NoEvents);
    }
    Ok(events)
}

fn check_description(description: Option<&str>) -> Result<Option<String>, EndpointError> {
    let description = description.map(str::trim).filter(|text| !text.is_empty());
    if description.is_some_and(|text| text.chars().count() > MAX_DESCRIPTION_CHARS) {
        return Err(EndpointError::LongDescription);
    }
    Ok(description.map(str::to_owned))
}

/// A checked endpoint configuration, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Where.
    pub url: String,
    /// Only this agent's calls.
    pub agent_id: Option<String>,
    /// Sorted, without repeats, never empty.
    pub events: Vec<EventType>,
    /// Trimmed; absent when blank.
    pub description: Option<String>,
}

impl EndpointSpec {
    /// Checks the endpoint under the origin's outbound `policy` (the tools' SSRF rule).
    pub fn validate(&self, policy: OutboundPolicy) -> Result<EndpointConfig, EndpointError> {
        check_url(&self.url, policy)?;
        if let Some(agent) = &self.agent_id
            && !is_resource_id(agent)
        {
            return Err(EndpointError::BadAgentId);
        }
        let events = match &self.events {
            Some(events) => check_events(events)?,
            None => default_events(),
        };
        Ok(EndpointConfig {
            url: self.url.clone(),
            agent_id: self.agent_id.clone(),
            events,
            description: check_description(self.description.as_deref())?,
        })
    }
}

impl EndpointPatch {
    /// `current` with this patch applied, checked as a new endpoint would be.
    pub fn apply(
        &self,
        current: &EndpointConfig,
        policy: OutboundPolicy,
    ) -> Result<EndpointConfig, EndpointError> {
        let url = match &self.url {
            Some(url) => {
                check_url(url, policy)?;
                url.clone()
            }
            None => current.url.clone(),
        };
        let events = match &self.events {
            Some(events) => check_events(events)?,
            None => current.events.clone(),
        };
        let description = match &self.description {
            Some(text) => check_description(Some(text))?,
            None => current.description.clone(),
        };
        Ok(EndpointConfig {
            url,
            agent_id: current.agent_id.clone(),
            events,
            description,
        })
    }
}

/// An endpoint as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `we_…`.
    pub id: String,
    /// Where.
    pub url: String,
    /// Only this agent's calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The events it receives.
    pub events: Vec<EventType>,
    /// A note for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// False once disabled (by the rule or on request): nothing is sent, new events are not
    /// queued for it.
    pub enabled: bool,
    /// Why it was disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Unix ms it was disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at_ms: Option<u64>,
    /// Failed attempts since its last success.
    pub consecutive_failures: u32,
    /// Unix ms of the first failure since its last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
    /// Unix ms.
    pub created_at_ms: u64,
    /// Unix ms.
    pub updated_at_ms: u64,
}

impl Endpoint {
    /// Whether an event of `kind` about a call of `agent_id` is queued for this endpoint.
    pub fn wants(&self, kind: EventType, agent_id: &str) -> bool {
        self.enabled
            && self.events.contains(&kind)
            && self.agent_id.as_deref().is_none_or(|only| only == agent_id)
    }
}

/// `GET /v1/webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointList {
    /// Oldest first.
    pub endpoints: Vec<Endpoint>,
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Retries ran out ([`RETRY_WINDOW_MS`]); `POST …/retry` queues it again.
    Failed,
}

impl DeliveryStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// Reads the stored form.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// One event's delivery to one endpoint, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The event id (also the idempotency key): one delivery per event and endpoint.
    pub id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The event type.
    pub event_type: EventType,
    /// The call the event is about.
    pub call_id: String,
    /// Where it is.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// The last answer's status, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<u16>,
    /// Why the last attempt failed (an excerpt of the answer, a timeout, a refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Unix ms of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at_ms: Option<u64>,
    /// Unix ms of the next attempt (pending only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_ms: Option<u64>,
    /// Unix ms it was delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at_ms: Option<u64>,
    /// Unix ms of the event.
    pub created_at_ms: u64,
}

/// `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryList {
    /// Newest first.
    pub deliveries: Vec<Delivery>,
}

/// The body POSTed to an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `evt_…`: unique, the idempotency key.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Unix ms it happened.
    pub created_at_ms: u64,
    /// The tenant.
    pub tenant_id: String,
    /// The event's data (below).
    pub data: Value,
}

/// A transcript line of `call.ended`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Line<'a> {
    seq: u32,
    role: TurnRole,
    text: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    interrupted: bool,
    created_at_ms: u64,
}

/// A tool call of `call.ended`, with the reply it was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct ToolCallLine<'a> {
    turn_seq: u32,
    #[serde(flatten)]
    call: &'a ToolCall,
}

/// `data` of `call.started`: `{"call": Call}`.
pub fn call_started(call: &Call) -> Value {
    json!({ "call": call })
}

/// `data` of `call.ended`: the call, why it ended, its handoff (the relay's `handoffData` or
/// what the API client passed), who answered an outbound call and the voicemail left, the
/// transcript, every tool call, usage and timings.
pub fn call_ended(call: &Call, turns: &[Turn], handoff: Option<&Value>) -> Value {
    let transcript: Vec<Line<'_>> = turns
        .iter()
        .map(|turn| Line {
            seq: turn.seq,
            role: turn.role,
            text: &turn.text,
            interrupted: turn.interrupted,
            created_at_ms: turn.created_at_ms,
        })
        .collect();
    let tool_calls: Vec<ToolCallLine<'_>> = turns
        .iter()
        .flat_map(|turn| {
            turn.tool_calls.iter().map(|call| ToolCallLine {
                turn_seq: turn.seq,
                call,
            })
        })
        .collect();
    let replies: Vec<&Turn> = turns
        .iter()
        .filter(|turn| turn.role == TurnRole::Assistant && turn.model.is_some())
        .collect();
    let sum = |of: fn(&Turn) -> Option<u32>| -> u64 {
        replies
            .iter()
            .filter_map(|turn| of(turn))
            .map(u64::from)
            .sum()
    };
    let ttfts: Vec<u32> = replies.iter().filter_map(|turn| turn.ttft_ms).collect();
    let duration_ms = call
        .ended_at_ms
        .map(|ended| ended.saturating_sub(call.started_at_ms));
    let voicemail = call
        .voicemail_message
        .as_ref()
        .map(|message| json!({ "message": message, "left_at_ms": call.voicemail_left_at_ms }));
    json!({
        "call": call,
        "end_reason": call.end_reason,
        "handoff": handoff,
        "answered_by": call.answered_by,
        "voicemail": voicemail,
        "transcript": transcript,
        "tool_calls": tool_calls,
        "usage": {
            "caller_turns": call.turn_count,
            "replies": replies.len(),
            "input_tokens": sum(|turn| turn.input_tokens),
            "output_tokens": sum(|turn| turn.output_tokens),
            "tool_calls": tool_calls.len(),
            "billable_minutes": duration_ms.map_or(0, |ms| ms.div_ceil(60_000)),
        },
        "timings": {
            "started_at_ms": call.started_at_ms,
            "ended_at_ms": call.ended_at_ms,
            "duration_ms": duration_ms,
            "mean_ttft_ms": (!ttfts.is_empty())
                .then(|| ttfts.iter().map(|&ms| u64::from(ms)).sum::<u64>() / ttfts.len() as u64),
        },
    })
}

/// `data` of `call.transferred`: the call and its handoff (target, summary, …).
pub fn call_transferred(call: &Call, handoff: Option<&Value>) -> Value {
    json!({ "call": call, "handoff": handoff })
}

/// `data` of `turn.completed`: the call and the agent's reply as stored.
pub fn turn_completed(call_id: &str, agent_id: &str, turn: &Turn) -> Value {
    json!({ "call_id": call_id, "agent_id": agent_id, "turn": turn })
}

/// Whether an ended call reports `call.transferred` too: it ended in a transfer.
pub fn is_transfer(end_reason: &str) -> bool {
    end_reason == crate::call_session::EndReason::Transferred.as_str()
        || end_reason == crate::handoff::REASON_TRANSFER
}

/// What comes after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again at this Unix ms.
    At(u64),
    /// The retry window is over: the delivery has failed.
    GiveUp,
}

/// The delay before retry number `failures` (1 for the first retry), before jitter.
pub fn base_delay_ms(failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(32);
    FIRST_RETRY_MS
        .saturating_mul(1_u64 << doublings)
        .min(MAX_RETRY_MS)
}

/// After the `failures`-th failed attempt (at `now_ms`) of an event made at `created_at_ms`:
/// when to try again, or give up. `random` is any 64 random bits (the jitter: the delay is
/// drawn from the upper half of [`base_delay_ms`], so replicas and endpoints spread out).
pub fn next_attempt(failures: u32, created_at_ms: u64, now_ms: u64, random: u64) -> Retry {
    if now_ms.saturating_sub(created_at_ms) >= RETRY_WINDOW_MS {
        return Retry::GiveUp;
    }
    let base = base_delay_ms(failures);
    let half = base / 2;
    Retry::At(now_ms + half + random % (base - half + 1))
}

/// What an endpoint's record of failures says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointHealth {
    /// Keep delivering.
    Keep,
    /// Disable it, for this reason.
    Disable(String),
}

/// The disable rule: an endpoint failing `consecutive_failures` times in a row since
/// `failing_since_ms` is disabled once both reach [`DISABLE_AFTER_FAILURES`] and
/// [`DISABLE_AFTER_MS`].
pub fn endpoint_health(
    consecutive_failures: u32,
    failing_since_ms: u64,
    now_ms: u64,
) -> EndpointHealth {
    let failing_for = now_ms.saturating_sub(failing_since_ms);
    if consecutive_failures >= DISABLE_AFTER_FAILURES && failing_for >= DISABLE_AFTER_MS {
        EndpointHealth::Disable(format!(
            "{consecutive_failures} failed attempts in a row over {} hours",
            failing_for / 3_600_000
        ))
    } else {
        EndpointHealth::Keep
    }
}

/// Whether an answer's status means the event was received.
pub fn is_delivered(status: u16) -> bool {
    (200..300).contains(&status)
}

/// Text cut to [`MAX_LOGGED_CHARS`] for the delivery log.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_LOGGED_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{CallDirection, CallSource, CallStatus, CallerDetails};
    use crate::carrier::AnsweredBy;
    use crate::outbound_url::UrlError;
    use crate::turn::ToolOutcome;

    const DEV: OutboundPolicy = OutboundPolicy::LoopbackToo;
    const PROD: OutboundPolicy = OutboundPolicy::PublicOnly;

    fn spec(url: &str) -> EndpointSpec {
        EndpointSpec {
            url: url.into(),
            agent_id: None,
            events: None,
            description: None,
        }
    }

    #[test]
    fn endpoints_are_checked_like_tools() {
        let ok = spec("https://hooks.example.com/aybiza").validate(PROD);
        assert_eq!(
            ok.map(|c| c.events),
            Ok(vec![
                EventType::CallStarted,
                EventType::CallEnded,
                EventType::CallTransferred
            ])
        );
        let cases = [
            ("http://hooks.example.com/x", PROD, UrlError::PlainHttp),
            ("http://127.0.0.1:9/x", PROD, UrlError::PlainHttp),
            (
                "https://169.254.169.254/latest",
                PROD,
                UrlError::InternalAddress,
            ),
            ("https://10.0.0.7/hook", DEV, UrlError::InternalAddress),
            ("ftp://hooks.example.com", PROD, UrlError::NotHttps),
            ("https://u:p@hooks.example.com", PROD, UrlError::Credentials),
        ];
        for (url, policy, error) in cases {
            let refused = spec(url).validate(policy);
            assert_eq!(refused, Err(EndpointError::Url(error)), "{url}");
            assert_eq!(refused.err().map(|e| e.field()), Some("url"));
        }
        assert!(spec("http://127.0.0.1:9/x").validate(DEV).is_ok());
        let mut bad = spec("https://hooks.example.com");
        bad.agent_id = Some("no/slash".into());
        assert_eq!(bad.validate(PROD), Err(EndpointError::BadAgentId));
        bad.agent_id = None;
        bad.events = Some(vec![]);
        assert_eq!(bad.validate(PROD), Err(EndpointError::NoEvents));
        bad.events = None;
        bad.description = Some("x".repeat(MAX_DESCRIPTION_CHARS + 1));
        assert_eq!(bad.validate(PROD), Err(EndpointError::LongDescription));
    }

    #[test]
    fn events_read_from_their_wire_names_and_turns_are_opt_in() {
        let parsed: EndpointSpec = serde_json::from_value(json!({
            "url": "https://h.example.com",
            "events": ["turn.completed", "call.ended", "call.ended"]
        }))
        .expect("spec");
        assert_eq!(
            parsed.validate(PROD).map(|c| c.events),
            Ok(vec![EventType::CallEnded, EventType::TurnCompleted])
        );
        assert!(
            serde_json::from_value::<EndpointSpec>(
                json!({"url": "https://h", "events": ["call.nope"]})
            )
            .is_err()
        );
        assert!(
            serde_json::from_value::<EndpointSpec>(json!({"url": "https://h", "secret": "x"}))
                .is_err(),
            "unknown fields are refused"
        );
        assert!(!default_events().contains(&EventType::TurnCompleted));
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).expect("json"),
                json!(kind.as_str())
            );
        }
    }

    #[test]
    fn a_patch_keeps_what_it_does_not_name() {
        let current = spec("https://a.example.com").validate(PROD).expect("valid");
        let patch = EndpointPatch {
            events: Some(vec![EventType::TurnCompleted]),
            ..EndpointPatch::default()
        };
        let next = patch.apply(&current, PROD).expect("valid");
        assert_eq!(next.url, "https://a.example.com");
        assert_eq!(next.events, vec![EventType::TurnCompleted]);
        let ssrf = EndpointPatch {
            url: Some("https://127.0.0.1/x".into()),
            ..EndpointPatch::default()
        };
        assert_eq!(
            ssrf.apply(&current, PROD),
            Err(EndpointError::Url(UrlError::InternalAddress))
        );
    }

    fn endpoint(agent: Option<&str>, enabled: bool) -> Endpoint {
        Endpoint {
            id: "we_1".into(),
            url: "https://h.example.com".into(),
            agent_id: agent.map(str::to_owned),
            events: default_events(),
            description: None,
            enabled,
            disabled_reason: None,
            disabled_at_ms: None,
            consecutive_failures: 0,
            failing_since_ms: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn an_endpoint_wants_its_events_of_its_agent_while_enabled() {
        assert!(endpoint(None, true).wants(EventType::CallEnded, "a1"));
        assert!(!endpoint(None, true).wants(EventType::TurnCompleted, "a1"));
        assert!(endpoint(Some("a1"), true).wants(EventType::CallStarted, "a1"));
        assert!(!endpoint(Some("a1"), true).wants(EventType::CallStarted, "a2"));
        assert!(!endpoint(None, false).wants(EventType::CallStarted, "a1"));
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_for_a_day() {
        assert_eq!(base_delay_ms(1), 30_000);
        assert_eq!(base_delay_ms(2), 60_000);
        assert_eq!(base_delay_ms(5), 480_000);
        assert_eq!(base_delay_ms(8), MAX_RETRY_MS);
        assert_eq!(base_delay_ms(u32::MAX), MAX_RETRY_MS);
        // Jitter stays in the upper half of the delay, both ends reachable.
        assert_eq!(next_attempt(1, 0, 1_000, 0), Retry::At(1_000 + 15_000));
        assert_eq!(next_attempt(1, 0, 1_000, 15_000), Retry::At(1_000 + 30_000));
        assert_eq!(next_attempt(1, 0, 1_000, 15_001), Retry::At(1_000 + 15_000));
        assert_eq!(
            next_attempt(3, 0, 0, u64::MAX),
            Retry::At(60_000 + u64::MAX % 60_001)
        );
        // Retried until the window closes, whatever the jitter; then given up.
        for random in [0, 7, u64::MAX] {
            let (mut now, mut failures) = (0_u64, 1_u32);
            while let Retry::At(at) = next_attempt(failures, 0, now, random) {
                assert!(at > now);
                now = at;
                failures += 1;
            }
            assert!(now >= RETRY_WINDOW_MS, "gave up at {now}");
            assert!(now < RETRY_WINDOW_MS + MAX_RETRY_MS);
            assert!((20..60).contains(&failures), "{failures} attempts");
        }
    }

    #[test]
    fn an_endpoint_failing_for_a_day_and_ten_attempts_is_disabled() {
        let day = DISABLE_AFTER_MS;
        assert_eq!(endpoint_health(9, 0, 2 * day), EndpointHealth::Keep);
        assert_eq!(endpoint_health(50, 0, day - 1), EndpointHealth::Keep);
        assert_eq!(
            endpoint_health(10, 5, day + 5),
            EndpointHealth::Disable("10 failed attempts in a row over 24 hours".into())
        );
        assert!(is_delivered(200) && is_delivered(204));
        assert!(!is_delivered(301) && !is_delivered(410) && !is_delivered(500));
    }

    fn call() -> Call {
        Call {
            id: "CA1".into(),
            tenant_id: "t1".into(),
            agent_id: "a1".into(),
            source: CallSource::Phone,
            carrier_call_sid: Some("CA1".into()),
            from: Some("+14155550100".into()),
            to: Some("+14155550199".into()),
            region: "us-east-1".into(),
            status: CallStatus::Ended,
            turn_count: 1,
            started_at_ms: 1_000,
            ended_at_ms: Some(62_000),
            end_reason: Some("transferred".into()),
            caller: CallerDetails::default(),
            direction: CallDirection::Outbound,
            carrier: None,
            answered_by: Some(AnsweredBy::MachineEndBeep),
            voicemail_message: Some("Please call us back.".into()),
            voicemail_left_at_ms: Some(50_000),
            metadata: None,
        }
    }

    fn turn(seq: u32, role: TurnRole, text: &str) -> Turn {
        Turn {
            seq,
            role,
            text: text.into(),
            interrupted: false,
            model: (role == TurnRole::Assistant).then(|| "m".into()),
            input_tokens: Some(10),
            output_tokens: Some(5),
            ttft_ms: (role == TurnRole::Assistant).then_some(100),
            duration_ms: None,
            lang: None,
            stop_reason: None,
            failure_reason: None,
            tool_calls: Vec::new(),
            created_at_ms: 2_000,
        }
    }

    #[test]
    fn call_ended_carries_transcript_tools_handoff_usage_and_timings() {
        let mut reply = turn(2, TurnRole::Assistant, "Transferring you.");
        reply.tool_calls.push(ToolCall {
            name: "transfer_call".into(),
            input: json!({"target": "sales"}),
            outcome: ToolOutcome::Ok,
            result: None,
            error: None,
            duration_ms: 3,
        });
        let turns = [turn(1, TurnRole::User, "A person please"), reply];
        let handoff = json!({"reason": "transfer", "target": "+14155550123"});
        let data = call_ended(&call(), &turns, Some(&handoff));
        assert_eq!(data["call"]["id"], "CA1");
        assert_eq!(data["end_reason"], "transferred");
        assert_eq!(data["handoff"]["target"], "+14155550123");
        assert_eq!(data["answered_by"], json!(AnsweredBy::MachineEndBeep));
        assert_eq!(
            data["voicemail"],
            json!({"message": "Please call us back.", "left_at_ms": 50_000})
        );
        assert_eq!(data["transcript"][0]["text"], "A person please");
        assert_eq!(data["transcript"][1]["role"], "assistant");
        assert_eq!(data["tool_calls"][0]["turn_seq"], 2);
        assert_eq!(data["tool_calls"][0]["name"], "transfer_call");
        assert_eq!(data["tool_calls"][0]["outcome"], "ok");
        assert_eq!(
            data["usage"],
            json!({"caller_turns": 1, "replies": 1, "input_tokens": 10, "output_tokens": 5,
                   "tool_calls": 1, "billable_minutes": 2})
        );
        assert_eq!(
            data["timings"],
            json!({"started_at_ms": 1_000, "ended_at_ms": 62_000, "duration_ms": 61_000,
                   "mean_ttft_ms": 100})
        );
        assert!(is_transfer("transferred") && is_transfer("transfer"));
        assert!(!is_transfer("completed"));
        assert_eq!(
            call_transferred(&call(), Some(&handoff))["handoff"]["reason"],
            "transfer"
        );
        assert_eq!(call_started(&call())["call"]["agent_id"], "a1");
        assert_eq!(turn_completed("CA1", "a1", &turns[1])["turn"]["seq"], 2);
    }

    #[test]
    fn statuses_and_excerpts() {
        for status in [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
        ] {
            assert_eq!(DeliveryStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(MAX_LOGGED_CHARS + 3);
        assert_eq!(excerpt(&long).chars().count(), MAX_LOGGED_CHARS + 1);
    }
}
