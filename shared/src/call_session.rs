//! The life of one call as its `CallSession` Durable Object keeps it: start, activity, turns,
//! end (by the carrier, the API, or an alarm), lease renewal, and the bounded buffer that holds
//! the caller's messages while the origin connection is re-established elsewhere.
//!
//! Pure: the Durable Object loads this state, calls these functions with the time, stores the
//! result and performs the returned actions. [`relay`] is the whole state machine of a call's
//! two sockets; [`wire`] is what voice-router says to the object.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

pub use crate::call::{CallDirection, CallSource};
use crate::carrier::{AnsweredBy, CallProgress, CarrierKind};

pub mod relay;
pub mod wire;

pub use relay::{Action, LeaseAction, LeaseOutcome, LinkId, Note, Record, Relay, Routing};
pub use wire::SessionRefusal;

/// Where the call is. An inbound or API call starts `active`; an outbound call starts `queued`
/// and moves on as its carrier reports (`ringing`, then `active` once answered), never back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// Placed with the carrier, not yet ringing.
    Queued,
    /// The called phone rings.
    Ringing,
    /// Answered: live (`in-progress` at the carrier).
    Active,
    /// Over; see `end_reason`.
    Ended,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The carrier reported the call completed.
    Completed,
    /// The carrier reported the line busy.
    Busy,
    /// The carrier reported the call failed.
    Failed,
    /// Nobody answered.
    NoAnswer,
    /// The call was canceled before it connected.
    Canceled,
    /// An API client ended it.
    Requested,
    /// No activity for the idle timeout.
    IdleTimeout,
    /// The call reached its maximum duration.
    MaxDuration,
    /// No region's origin could be reached to continue the call.
    OriginUnavailable,
    /// The agent ended the relay session (ConversationRelay `end`: a goodbye, or any end whose
    /// `handoffData` names no other reason).
    AgentEnded,
    /// The agent handed the caller to a person (`end` with `handoffData.reason` `transfer`);
    /// the carrier dials them through the `<Connect action>` callback.
    Transferred,
    /// An answering machine answered and the agent left its voicemail message.
    VoicemailLeft,
    /// A machine answered and the call was hung up without a message.
    MachineAnswered,
}

impl EndReason {
    /// Why the agent ended a call, from the origin's ConversationRelay `end` message: its
    /// `handoffData` (a JSON string) names the reason (`transfer` for a handoff to a person,
    /// `idle_timeout` for a caller who stayed silent); anything else the agent ends is
    /// [`EndReason::AgentEnded`].
    pub fn of_agent_end(end_message: &str) -> Self {
        #[derive(Deserialize)]
        struct End {
            #[serde(rename = "handoffData")]
            handoff_data: Option<serde_json::Value>,
        }
        let handoff_data = serde_json::from_str::<End>(end_message)
            .ok()
            .and_then(|end| end.handoff_data)
            .map(|data| match data {
                serde_json::Value::String(text) => text,
                // A carrier-compatible origin might send an object; it reads the same.
                other => other.to_string(),
            });
        crate::handoff::end_reason(handoff_data.as_deref())
    }

    /// The reason as it travels (`snake_case`, as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Completed => "completed",
            EndReason::Busy => "busy",
            EndReason::Failed => "failed",
            EndReason::NoAnswer => "no_answer",
            EndReason::Canceled => "canceled",
            EndReason::Requested => "requested",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::MaxDuration => "max_duration",
            EndReason::OriginUnavailable => "origin_unavailable",
            EndReason::AgentEnded => "agent_ended",
            EndReason::Transferred => "transferred",
            EndReason::VoicemailLeft => "voicemail_left",
            EndReason::MachineAnswered => "machine_answered",
        }
    }
}

impl EndReason {
    /// The outcome of a carrier status callback's `CallStatus`; `None` for a call still live
    /// (`queued`, `initiated`, `ringing`, `in-progress`) or an unknown value.
    pub fn from_carrier_status(status: &str) -> Option<Self> {
        match CallProgress::from_call_status(status)? {
            CallProgress::Ended(reason) => Some(reason),
            _ => None,
        }
    }
}

/// The state a `CallSession` persists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSession {
    /// The call's id (the carrier's CallSid for phone calls).
    pub call_id: String,
    /// Owning tenant; every read checks it.
    pub tenant_id: String,
    /// The agent answering the call.
    pub agent_id: Option<String>,
    /// Phone or API.
    pub source: CallSource,
    /// AWS region the call is pinned to (changes only on failover).
    pub region: String,
    /// Live or ended.
    pub status: CallStatus,
    /// Unix ms the call started.
    pub started_at_ms: u64,
    /// Unix ms of the last message in either direction.
    pub last_activity_ms: u64,
    /// Unix ms the call ended.
    pub ended_at_ms: Option<u64>,
    /// Why it ended.
    pub end_reason: Option<EndReason>,
    /// Completed caller turns.
    pub turn_count: u32,
    /// Unix ms the concurrent-call lease was last acquired or renewed.
    pub lease_renewed_at_ms: u64,
    /// Who dialled whom (absent in state stored before outbound calls: inbound).
    #[serde(default)]
    pub direction: CallDirection,
    /// The carrier of a phone call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<CarrierKind>,
    /// The carrier's call id, once known; a callback naming another is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_call_id: Option<String>,
    /// The last `CallStatus` the carrier reported, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_status: Option<String>,
    /// What answering-machine detection found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<AnsweredBy>,
}

/// Time limits of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// End the call after this long without activity.
    pub idle_timeout_ms: u64,
    /// End the call after this long regardless.
    pub max_duration_ms: u64,
    /// Renew the concurrent-call lease this often while the call is live.
    pub lease_renew_every_ms: u64,
}

impl Default for SessionLimits {
    /// 5 min idle, 1 h maximum, lease renewed every 20 s: a third of the rate-limiter's
    /// default 60 s lease, so two renewals can fail before a live call loses its lease.
    fn default() -> Self {
        Self {
            idle_timeout_ms: 5 * 60_000,
            max_duration_ms: 60 * 60_000,
            lease_renew_every_ms: 20_000,
        }
    }
}

/// A call that has already ended cannot change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the call already ended ({0:?})")]
pub struct AlreadyEnded(pub Option<EndReason>);

/// What an alarm must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmAction {
    /// End the call (release the lease, close the sockets) for this reason.
    End(EndReason),
    /// Renew the concurrent-call lease, then schedule the next alarm.
    RenewLease,
    /// Nothing due yet (an alarm may fire early or twice); schedule the next alarm.
    Nothing,
}

/// What starting a call needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartCall {
    /// The call's id.
    pub call_id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// The agent answering.
    pub agent_id: Option<String>,
    /// Phone or API.
    pub source: CallSource,
    /// The region chosen for it.
    pub region: String,
    /// Who dialled whom: an outbound call starts `queued`.
    #[serde(default)]
    pub direction: CallDirection,
    /// The carrier of a phone call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<CarrierKind>,
    /// The carrier's call id, when known at the start (an incoming call's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_call_id: Option<String>,
}

impl CallSession {
    /// A new call at `now_ms` (whose lease was just acquired): live, or queued when outbound.
    pub fn start(start: StartCall, now_ms: u64) -> Self {
        let status = match start.direction {
            CallDirection::Inbound => CallStatus::Active,
            CallDirection::Outbound => CallStatus::Queued,
        };
        Self {
            call_id: start.call_id,
            tenant_id: start.tenant_id,
            agent_id: start.agent_id,
            source: start.source,
            region: start.region,
            status,
            started_at_ms: now_ms,
            last_activity_ms: now_ms,
            ended_at_ms: None,
            end_reason: None,
            turn_count: 0,
            lease_renewed_at_ms: now_ms,
            direction: start.direction,
            carrier: start.carrier,
            carrier_call_id: start.carrier_call_id,
            carrier_status: None,
            answered_by: None,
        }
    }

    /// Whether the call is live: not ended (queued and ringing calls hold their line too).
    pub fn is_active(&self) -> bool {
        self.status != CallStatus::Ended
    }

    /// The carrier reported progress short of the end: the status moves forward only (a late
    /// `ringing` after `in-progress` changes nothing). Ignored once ended.
    pub fn advance(&mut self, progress: CallProgress) {
        let reached = match progress {
            CallProgress::Queued => CallStatus::Queued,
            CallProgress::Ringing => CallStatus::Ringing,
            CallProgress::Answered => CallStatus::Active,
            CallProgress::Ended(_) => return,
        };
        if self.is_active() {
            self.status = self.status.max(reached);
        }
    }

    /// A message passed in either direction. The clock may step back; activity never does.
    pub fn touch(&mut self, now_ms: u64) {
        self.last_activity_ms = self.last_activity_ms.max(now_ms);
    }

    /// A caller turn completed.
    pub fn record_turn(&mut self, now_ms: u64) -> Result<(), AlreadyEnded> {
        self.ensure_active()?;
        self.turn_count = self.turn_count.saturating_add(1);
        self.touch(now_ms);
        Ok(())
    }

    /// The call moved to another region after its origin failed.
    pub fn repin(&mut self, region: &str, now_ms: u64) -> Result<(), AlreadyEnded> {
        self.ensure_active()?;
        region.clone_into(&mut self.region);
        self.touch(now_ms);
        Ok(())
    }

    /// Ends the call. Ending twice is refused, so the lease is released exactly once.
    pub fn end(&mut self, reason: EndReason, now_ms: u64) -> Result<(), AlreadyEnded> {
        self.ensure_active()?;
        self.status = CallStatus::Ended;
        self.end_reason = Some(reason);
        self.ended_at_ms = Some(now_ms.max(self.started_at_ms));
        Ok(())
    }

    /// The lease was renewed.
    pub fn lease_renewed(&mut self, now_ms: u64) {
        self.lease_renewed_at_ms = self.lease_renewed_at_ms.max(now_ms);
    }

    /// When the next alarm should fire; `None` once the call has ended.
    pub fn next_alarm_ms(&self, limits: &SessionLimits) -> Option<u64> {
        if !self.is_active() {
            return None;
        }
        let idle = self.last_activity_ms.saturating_add(limits.idle_timeout_ms);
        let max = self.started_at_ms.saturating_add(limits.max_duration_ms);
        let renew = self
            .lease_renewed_at_ms
            .saturating_add(limits.lease_renew_every_ms);
        Some(idle.min(max).min(renew))
    }

    /// Decides what an alarm firing at `now_ms` must do. Maximum duration wins over idleness
    /// when both are due, since it is the stricter statement about the call.
    pub fn on_alarm(&self, now_ms: u64, limits: &SessionLimits) -> AlarmAction {
        if !self.is_active() {
            return AlarmAction::Nothing;
        }
        if now_ms >= self.started_at_ms.saturating_add(limits.max_duration_ms) {
            AlarmAction::End(EndReason::MaxDuration)
        } else if now_ms >= self.last_activity_ms.saturating_add(limits.idle_timeout_ms) {
            AlarmAction::End(EndReason::IdleTimeout)
        } else if now_ms
            >= self
                .lease_renewed_at_ms
                .saturating_add(limits.lease_renew_every_ms)
        {
            AlarmAction::RenewLease
        } else {
            AlarmAction::Nothing
        }
    }

    fn ensure_active(&self) -> Result<(), AlreadyEnded> {
        if self.is_active() {
            Ok(())
        } else {
            Err(AlreadyEnded(self.end_reason))
        }
    }
}

/// Caller messages held while the origin connection is being re-established, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayBuffer {
    messages: VecDeque<String>,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

/// The buffer is full: the call cannot be continued without losing caller input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("relay buffer full ({messages} messages, {bytes} bytes)")]
pub struct BufferFull {
    /// Messages held.
    pub messages: usize,
    /// Bytes held.
    pub bytes: usize,
}

impl RelayBuffer {
    /// An empty buffer bounded by count and bytes.
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        Self {
            messages: VecDeque::new(),
            bytes: 0,
            max_messages,
            max_bytes,
        }
    }

    /// Holds a message, or refuses it when a bound would be crossed (nothing is dropped silently).
    pub fn push(&mut self, message: String) -> Result<(), BufferFull> {
        if self.messages.len() >= self.max_messages || self.bytes + message.len() > self.max_bytes {
            return Err(BufferFull {
                messages: self.messages.len(),
                bytes: self.bytes,
            });
        }
        self.bytes += message.len();
        self.messages.push_back(message);
        Ok(())
    }

    /// Takes every held message, oldest first.
    pub fn drain(&mut self) -> Vec<String> {
        self.bytes = 0;
        self.messages.drain(..).collect()
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn limits() -> SessionLimits {
        SessionLimits {
            idle_timeout_ms: 300_000,
            max_duration_ms: 3_600_000,
            lease_renew_every_ms: 60_000,
        }
    }

    fn session() -> CallSession {
        CallSession::start(
            StartCall {
                call_id: "CA1".into(),
                tenant_id: "t1".into(),
                agent_id: Some("a1".into()),
                source: CallSource::Phone,
                region: "us-east-1".into(),
                direction: CallDirection::Inbound,
                carrier: Some(CarrierKind::Twilio),
                carrier_call_id: Some("CA1".into()),
            },
            T0,
        )
    }

    #[test]
    fn an_outbound_call_moves_forward_as_its_carrier_reports() {
        let mut s = CallSession::start(
            StartCall {
                call_id: "call_1".into(),
                tenant_id: "t1".into(),
                agent_id: None,
                source: CallSource::Phone,
                region: "us-east-1".into(),
                direction: CallDirection::Outbound,
                carrier: Some(CarrierKind::Telnyx),
                carrier_call_id: None,
            },
            T0,
        );
        assert_eq!(s.status, CallStatus::Queued);
        assert!(s.is_active(), "a queued call holds its line");
        s.advance(CallProgress::Ringing);
        assert_eq!(s.status, CallStatus::Ringing);
        s.advance(CallProgress::Answered);
        s.advance(CallProgress::Ringing);
        assert_eq!(s.status, CallStatus::Active, "never back");
        s.advance(CallProgress::Ended(EndReason::Busy));
        assert_eq!(s.status, CallStatus::Active, "ending is `end`'s");
        s.end(EndReason::Completed, T0 + 1).expect("live");
        s.advance(CallProgress::Answered);
        assert_eq!(s.status, CallStatus::Ended);
    }

    #[test]
    fn state_stored_before_outbound_calls_reads_as_inbound() {
        let stored = r#"{"call_id":"CA1","tenant_id":"t1","agent_id":"a1","source":"phone","region":"us-east-1","status":"active","started_at_ms":1,"last_activity_ms":1,"ended_at_ms":null,"end_reason":null,"turn_count":0,"lease_renewed_at_ms":1}"#;
        let s: CallSession = serde_json::from_str(stored).expect("old state parses");
        assert_eq!(
            (s.direction, s.carrier, s.answered_by),
            (CallDirection::Inbound, None, None)
        );
    }

    #[test]
    fn carrier_statuses_map_to_end_reasons() {
        let cases = [
            ("completed", Some(EndReason::Completed)),
            ("busy", Some(EndReason::Busy)),
            ("failed", Some(EndReason::Failed)),
            ("no-answer", Some(EndReason::NoAnswer)),
            ("canceled", Some(EndReason::Canceled)),
            ("in-progress", None),
            ("ringing", None),
            ("queued", None),
            ("weird", None),
        ];
        for (status, expected) in cases {
            assert_eq!(EndReason::from_carrier_status(status), expected, "{status}");
        }
    }

    #[test]
    fn alarm_schedule_is_the_earliest_deadline() {
        let mut s = session();
        assert_eq!(
            s.next_alarm_ms(&limits()),
            Some(T0 + 60_000),
            "lease renewal first"
        );
        s.lease_renewed(T0 + 280_000);
        assert_eq!(
            s.next_alarm_ms(&limits()),
            Some(T0 + 300_000),
            "then idleness"
        );
        s.touch(T0 + 3_590_000);
        s.lease_renewed(T0 + 3_590_000);
        assert_eq!(
            s.next_alarm_ms(&limits()),
            Some(T0 + 3_600_000),
            "then the maximum duration"
        );
    }

    #[test]
    fn alarm_actions_table() {
        let mut renewed = session();
        renewed.lease_renewed(T0 + 250_000);
        let cases = [
            (session(), T0 + 59_999, AlarmAction::Nothing),
            (session(), T0 + 60_000, AlarmAction::RenewLease),
            (
                renewed.clone(),
                T0 + 300_000,
                AlarmAction::End(EndReason::IdleTimeout),
            ),
            (
                session(),
                T0 + 3_600_000,
                AlarmAction::End(EndReason::MaxDuration),
            ),
            (session(), T0 - 5_000, AlarmAction::Nothing),
        ];
        for (s, now, expected) in cases {
            assert_eq!(
                s.on_alarm(now, &limits()),
                expected,
                "at +{}",
                now as i64 - T0 as i64
            );
        }
    }

    #[test]
    fn activity_postpones_the_idle_end() {
        let mut s = session();
        s.touch(T0 + 200_000);
        s.lease_renewed(T0 + 450_000);
        assert_eq!(s.on_alarm(T0 + 450_000, &limits()), AlarmAction::Nothing);
        assert_eq!(
            s.on_alarm(T0 + 500_000, &limits()),
            AlarmAction::End(EndReason::IdleTimeout)
        );
    }

    #[test]
    fn a_clock_stepping_back_never_moves_activity_back() {
        let mut s = session();
        s.touch(T0 + 10_000);
        s.touch(T0 + 5_000);
        assert_eq!(s.last_activity_ms, T0 + 10_000);
    }

    #[test]
    fn ending_happens_once_and_freezes_the_call() {
        let mut s = session();
        assert_eq!(s.end(EndReason::Completed, T0 + 1_000), Ok(()));
        assert_eq!(
            s.end(EndReason::IdleTimeout, T0 + 2_000),
            Err(AlreadyEnded(Some(EndReason::Completed)))
        );
        assert_eq!(
            s.record_turn(T0 + 3_000),
            Err(AlreadyEnded(Some(EndReason::Completed)))
        );
        assert_eq!(
            s.repin("eu-west-2", T0 + 3_000),
            Err(AlreadyEnded(Some(EndReason::Completed)))
        );
        assert_eq!(s.next_alarm_ms(&limits()), None);
        assert_eq!(s.on_alarm(T0 + 10_000_000, &limits()), AlarmAction::Nothing);
        assert_eq!(s.ended_at_ms, Some(T0 + 1_000));
        assert_eq!(s.region, "us-east-1");
    }

    #[test]
    fn turns_and_repins_are_counted_while_live() {
        let mut s = session();
        s.record_turn(T0 + 1).expect("live");
        s.record_turn(T0 + 2).expect("live");
        s.repin("us-west-2", T0 + 3).expect("live");
        assert_eq!(
            (s.turn_count, s.region.as_str(), s.last_activity_ms),
            (2, "us-west-2", T0 + 3)
        );
    }

    #[test]
    fn the_agents_end_names_its_reason_in_handoff_data() {
        let cases = [
            (
                r#"{"type":"end","handoffData":"{\"reason\":\"idle_timeout\",\"callId\":\"CA1\"}"}"#,
                EndReason::IdleTimeout,
            ),
            (
                r#"{"type":"end","handoffData":"{\"reason\":\"goodbye\"}"}"#,
                EndReason::AgentEnded,
            ),
            (
                r#"{"type":"end","handoffData":{"reason":"transfer","target":"+14155550123"}}"#,
                EndReason::Transferred,
            ),
            (
                r#"{"type":"end","handoffData":"not json"}"#,
                EndReason::AgentEnded,
            ),
            (r#"{"type":"end"}"#, EndReason::AgentEnded),
            (
                r#"{"type":"end","handoffData":"{\"reason\":\"voicemail_left\"}"}"#,
                EndReason::VoicemailLeft,
            ),
            (
                r#"{"type":"end","handoffData":"{\"reason\":\"machine_answered\"}"}"#,
                EndReason::MachineAnswered,
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(EndReason::of_agent_end(message), expected, "{message}");
        }
    }

    #[test]
    fn end_reasons_are_named_as_serialised() {
        for reason in [
            EndReason::Completed,
            EndReason::Busy,
            EndReason::Failed,
            EndReason::NoAnswer,
            EndReason::Canceled,
            EndReason::Requested,
            EndReason::IdleTimeout,
            EndReason::MaxDuration,
            EndReason::OriginUnavailable,
            EndReason::AgentEnded,
            EndReason::Transferred,
            EndReason::VoicemailLeft,
            EndReason::MachineAnswered,
        ] {
            assert_eq!(
                serde_json::to_value(reason).expect("serialises"),
                serde_json::Value::from(reason.as_str())
            );
        }
    }

    #[test]
    fn state_round_trips_through_storage_json() {
        let mut s = session();
        s.end(EndReason::MaxDuration, T0 + 5).expect("live");
        let json = serde_json::to_string(&s).expect("serialises");
        assert!(json.contains(r#""end_reason":"max_duration""#), "{json}");
        assert_eq!(
            serde_json::from_str::<CallSession>(&json).expect("parses"),
            s
        );
    }

    #[test]
    fn relay_buffer_keeps_order_and_refuses_past_its_bounds() {
        let mut buffer = RelayBuffer::new(3, 10);
        buffer.push("ab".into()).expect("fits");
        buffer.push("cd".into()).expect("fits");
        assert_eq!(
            buffer.push("0123456789".into()),
            Err(BufferFull {
                messages: 2,
                bytes: 4
            })
        );
        buffer.push("ef".into()).expect("fits");
        assert_eq!(
            buffer.push("g".into()),
            Err(BufferFull {
                messages: 3,
                bytes: 6
            })
        );
        assert_eq!(buffer.drain(), vec!["ab", "cd", "ef"]);
        assert!(buffer.is_empty());
        buffer
            .push("0123456789".into())
            .expect("fits after draining");
        assert_eq!(buffer.len(), 1);
    }
}
