//! Live call events (`GET /v1/calls/{id}/events`): published per tenant so that every origin
//! replica can stream any call's events to a monitor. How a stream of them resumes and replays
//! a call's history: [`stream`].

use serde::{Deserialize, Serialize};

pub mod stream;
use crate::carrier::AnsweredBy;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEventKind {
    /// The call was created.
    CallStarted,
    /// The call ended.
    CallEnded,
    /// The caller spoke; a reply is being generated.
    TurnStarted,
    /// A reply is complete and durable.
    TurnFinished,
    /// The caller spoke over a reply.
    TurnInterrupted,
    /// Answering-machine detection said who (or what) answered an outbound call.
    AnsweredBy,
}

impl CallEventKind {
    /// The SSE event name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CallStarted => "call_started",
            Self::CallEnded => "call_ended",
            Self::TurnStarted => "turn_started",
            Self::TurnFinished => "turn_finished",
            Self::TurnInterrupted => "turn_interrupted",
            Self::AnsweredBy => "answered_by",
        }
    }
}

/// One event about one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEvent {
    /// What happened.
    pub kind: CallEventKind,
    /// The call.
    pub call_id: String,
    /// The tenant owning the call.
    pub tenant_id: String,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The turn concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u32>,
    /// The model that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Time to first token of the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u32>,
    /// Why a call ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Passed to the carrier when a call ends (`handoffData`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_data: Option<serde_json::Value>,
    /// What answering-machine detection found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<AnsweredBy>,
}

impl CallEvent {
    /// An event with only the required fields.
    pub fn new(kind: CallEventKind, tenant_id: &str, call_id: &str, at_ms: u64) -> Self {
        Self {
            kind,
            call_id: call_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            at_ms,
            seq: None,
            model: None,
            ttft_ms: None,
            reason: None,
            handoff_data: None,
            answered_by: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_serialise_as_their_sse_names() {
        for kind in [
            CallEventKind::CallStarted,
            CallEventKind::CallEnded,
            CallEventKind::TurnStarted,
            CallEventKind::TurnFinished,
            CallEventKind::TurnInterrupted,
            CallEventKind::AnsweredBy,
        ] {
            assert_eq!(
                serde_json::to_value(kind).expect("json"),
                serde_json::Value::String(kind.as_str().into())
            );
        }
    }

    #[test]
    fn optional_fields_are_omitted() {
        let event = CallEvent::new(CallEventKind::TurnStarted, "t1", "c1", 7);
        assert_eq!(
            serde_json::to_string(&event).expect("json"),
            r#"{"kind":"turn_started","call_id":"c1","tenant_id":"t1","at_ms":7}"#
        );
    }
}
