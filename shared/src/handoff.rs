//! `handoffData`: what the relay's `end` message tells the carrier about why a
//! ConversationRelay session ended and what comes next. The carrier hands it back, as the
//! `HandoffData` field of its `<Connect action>` callback, when the session is over.
//!
//! One shape for the three programs that touch it: the origin writes it when the agent ends
//! the session (a goodbye, a transfer, a silent caller) or a client ends the call; the
//! `CallSession` reads its reason to record how the call ended ([`end_reason`]); voice-router's
//! action route reads it to answer `<Dial>` to a person (a transfer) or `<Hangup/>`
//! ([`after_session`]).
//!
//! On the wire it is JSON text (ConversationRelay takes `handoffData` as a string):
//! `{"reason":"transfer","callId":"CA…","target":"+14155550100","summary":"…","callerId":"+1…","whisper":true}`.
//! `reason` is always there; `target`, `summary`, `callerId` and `whisper` only for a transfer;
//! what an API client added when it ended the call is under `data`.

use serde::{Deserialize, Serialize};

use crate::agent::is_e164;
use crate::call_session::EndReason;

/// `reason` of a transfer to a person.
pub const REASON_TRANSFER: &str = "transfer";
/// `reason` when the agent ended the call itself (`end_call`).
pub const REASON_AGENT_ENDED: &str = "agent_ended";
/// `reason` when the agent ended the call for the caller's silence.
pub const REASON_IDLE_TIMEOUT: &str = "idle_timeout";
/// Longest summary passed to the person taking a transfer.
pub const MAX_SUMMARY_CHARS: usize = 500;
/// Longest SIP URI accepted as a transfer target.
pub const MAX_SIP_URI_CHARS: usize = 256;

/// The `handoffData` of an `end`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandoffData {
    /// Why the session ended: [`REASON_TRANSFER`], [`REASON_AGENT_ENDED`],
    /// [`REASON_IDLE_TIMEOUT`], or an API client's own reason.
    pub reason: String,
    /// The call.
    #[serde(default)]
    pub call_id: String,
    /// A transfer's destination: an E.164 number or a SIP URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// What the person taking the transfer should know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The caller id to dial the target with (E.164); absent means the carrier's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_id: Option<String>,
    /// Whether `summary` is whispered to the person answering before the caller is connected.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub whisper: bool,
    /// What an API client added when it ended the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl HandoffData {
    /// A handoff of `reason` for `call_id`, nothing else.
    pub fn new(reason: &str, call_id: &str) -> Self {
        Self {
            reason: reason.to_owned(),
            call_id: call_id.to_owned(),
            ..Self::default()
        }
    }

    /// The JSON text sent as `handoffData`.
    pub fn to_json(&self) -> String {
        // Strings, booleans and a JSON value: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads `handoffData` text; `None` when it is not this shape.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// How the `CallSession` records a call whose origin sent `end` with this `handoffData`: a
/// transfer is `transferred`, a silent caller `idle_timeout`, an answering machine
/// `voicemail_left` or `machine_answered`, anything else (a goodbye, an
/// unreadable value) `agent_ended`.
pub fn end_reason(handoff_data: Option<&str>) -> EndReason {
    match handoff_data.and_then(HandoffData::parse) {
        Some(data) if data.reason == REASON_TRANSFER => EndReason::Transferred,
        Some(data) if data.reason == REASON_IDLE_TIMEOUT => EndReason::IdleTimeout,
        Some(data) if data.reason == crate::voicemail::VOICEMAIL_LEFT => EndReason::VoicemailLeft,
        Some(data) if data.reason == crate::voicemail::MACHINE_ANSWERED => {
            EndReason::MachineAnswered
        }
        _ => EndReason::AgentEnded,
    }
}

/// Where a transfer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTo {
    /// A phone number, E.164.
    Number(String),
    /// A SIP URI (`sip:` or `sips:`, with a user part).
    Sip(String),
}

impl TransferTo {
    /// Reads a target: E.164, or `sip:`/`sips:` `user@host` without spaces, quotes or angle
    /// brackets, at most [`MAX_SIP_URI_CHARS`].
    pub fn parse(text: &str) -> Option<Self> {
        if is_e164(text) {
            return Some(Self::Number(text.to_owned()));
        }
        let lower = text.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("sip:")
            .or_else(|| lower.strip_prefix("sips:"))?;
        let (user, host) = rest.split_once('@')?;
        let clean = text.len() <= MAX_SIP_URI_CHARS
            && !user.is_empty()
            && !host.is_empty()
            && !text
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>'));
        clean.then(|| Self::Sip(text.to_owned()))
    }

    /// The target as written.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Number(text) | Self::Sip(text) => text,
        }
    }
}

/// A transfer, ready to be dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialPlan {
    /// Where.
    pub to: TransferTo,
    /// The caller id shown to the target (E.164), when configured.
    pub caller_id: Option<String>,
    /// Said to the person answering before the caller is connected.
    pub whisper: Option<String>,
}

/// What the carrier is told to do once the relay session is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterSession {
    /// Connect the caller to a person.
    Dial(DialPlan),
    /// End the call.
    HangUp,
}

/// Decides the answer to the carrier's `<Connect action>` callback from its `HandoffData`: a
/// transfer with a valid target is dialled (a caller id that is not E.164 is dropped, so the
/// carrier's default applies; the summary is whispered only when asked, at most
/// [`MAX_SUMMARY_CHARS`]); anything else — a goodbye, a session that failed, data that cannot
/// be read — hangs up.
pub fn after_session(handoff_data: Option<&str>) -> AfterSession {
    let Some(data) = handoff_data.and_then(HandoffData::parse) else {
        return AfterSession::HangUp;
    };
    if data.reason != REASON_TRANSFER {
        return AfterSession::HangUp;
    }
    let Some(to) = data.target.as_deref().and_then(TransferTo::parse) else {
        return AfterSession::HangUp;
    };
    let whisper = data
        .summary
        .filter(|_| data.whisper)
        .map(|summary| {
            summary
                .trim()
                .chars()
                .take(MAX_SUMMARY_CHARS)
                .collect::<String>()
        })
        .filter(|summary| !summary.is_empty());
    AfterSession::Dial(DialPlan {
        to,
        caller_id: data.caller_id.filter(|id| is_e164(id)),
        whisper,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shape_on_the_wire() {
        let mut transfer = HandoffData::new(REASON_TRANSFER, "CA1");
        transfer.target = Some("+14155550123".into());
        transfer.summary = Some("Wants a refund.".into());
        transfer.whisper = true;
        assert_eq!(
            transfer.to_json(),
            r#"{"reason":"transfer","callId":"CA1","target":"+14155550123","summary":"Wants a refund.","whisper":true}"#
        );
        assert_eq!(
            HandoffData::new(REASON_AGENT_ENDED, "CA1").to_json(),
            r#"{"reason":"agent_ended","callId":"CA1"}"#
        );
        assert_eq!(
            HandoffData::parse(&transfer.to_json()),
            Some(transfer),
            "round trip"
        );
        // What an API client added travels under `data`, and unknown fields are ignored.
        let read = HandoffData::parse(r#"{"reason":"requested","data":{"queue":"sales"},"x":1}"#)
            .expect("parses");
        assert_eq!(read.data, Some(serde_json::json!({"queue": "sales"})));
        assert_eq!(HandoffData::parse("not json"), None);
        assert_eq!(HandoffData::parse(r#"{"callId":"CA1"}"#), None, "no reason");
    }

    #[test]
    fn end_reasons_from_the_origins_end() {
        let cases = [
            (
                Some(r#"{"reason":"transfer","callId":"CA1"}"#),
                EndReason::Transferred,
            ),
            (Some(r#"{"reason":"idle_timeout"}"#), EndReason::IdleTimeout),
            (Some(r#"{"reason":"agent_ended"}"#), EndReason::AgentEnded),
            (Some(r#"{"reason":"goodbye"}"#), EndReason::AgentEnded),
            (Some("{}"), EndReason::AgentEnded),
            (Some("garbage"), EndReason::AgentEnded),
            (None, EndReason::AgentEnded),
        ];
        for (data, expected) in cases {
            assert_eq!(end_reason(data), expected, "{data:?}");
        }
    }

    #[test]
    fn transfer_targets() {
        for (text, expected) in [
            (
                "+14155550123",
                Some(TransferTo::Number("+14155550123".into())),
            ),
            (
                "sip:desk@pbx.example.com",
                Some(TransferTo::Sip("sip:desk@pbx.example.com".into())),
            ),
            (
                "SIPS:desk@pbx.example.com;transport=tls",
                Some(TransferTo::Sip(
                    "SIPS:desk@pbx.example.com;transport=tls".into(),
                )),
            ),
            ("14155550123", None),
            ("sip:pbx.example.com", None),
            ("sip:@pbx.example.com", None),
            ("sip:a b@pbx.example.com", None),
            ("sip:a@b\"><Hangup/>", None),
            ("tel:+14155550123", None),
            ("", None),
        ] {
            assert_eq!(TransferTo::parse(text), expected, "{text}");
        }
        let long = format!("sip:{}@x.example", "a".repeat(MAX_SIP_URI_CHARS));
        assert_eq!(TransferTo::parse(&long), None);
    }

    #[test]
    fn after_the_session_a_transfer_dials_and_anything_else_hangs_up() {
        let dial = |to: TransferTo, caller_id: Option<&str>, whisper: Option<&str>| {
            AfterSession::Dial(DialPlan {
                to,
                caller_id: caller_id.map(str::to_owned),
                whisper: whisper.map(str::to_owned),
            })
        };
        let number = || TransferTo::Number("+14155550123".into());
        let cases = [
            (
                r#"{"reason":"transfer","target":"+14155550123","callerId":"+18005550100","summary":" Refund. ","whisper":true}"#,
                dial(number(), Some("+18005550100"), Some("Refund.")),
            ),
            (
                r#"{"reason":"transfer","target":"+14155550123","summary":"Refund."}"#,
                dial(number(), None, None),
            ),
            (
                r#"{"reason":"transfer","target":"sip:desk@pbx.example.com","callerId":"anonymous","whisper":true,"summary":"  "}"#,
                dial(
                    TransferTo::Sip("sip:desk@pbx.example.com".into()),
                    None,
                    None,
                ),
            ),
            (
                r#"{"reason":"transfer","target":"nowhere"}"#,
                AfterSession::HangUp,
            ),
            (r#"{"reason":"transfer"}"#, AfterSession::HangUp),
            (
                r#"{"reason":"agent_ended","target":"+14155550123"}"#,
                AfterSession::HangUp,
            ),
            (r#"{"reason":"idle_timeout"}"#, AfterSession::HangUp),
            ("", AfterSession::HangUp),
        ];
        for (data, expected) in cases {
            assert_eq!(after_session(Some(data)), expected, "{data}");
        }
        assert_eq!(after_session(None), AfterSession::HangUp);
        let long = format!(
            r#"{{"reason":"transfer","target":"+14155550123","whisper":true,"summary":"{}"}}"#,
            "é".repeat(MAX_SUMMARY_CHARS + 10)
        );
        let AfterSession::Dial(plan) = after_session(Some(&long)) else {
            panic!("dials");
        };
        assert_eq!(
            plan.whisper.map(|w| w.chars().count()),
            Some(MAX_SUMMARY_CHARS)
        );
    }
}
