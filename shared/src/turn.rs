//! Turns: what the caller said, what the agent answered, which keys were pressed — and the
//! Server-Sent Events of `POST /v1/calls/{id}/turns`.

use serde::{Deserialize, Serialize};

/// Longest caller utterance accepted (a minute of speech is ~1,000 characters).
pub const MAX_TEXT_CHARS: usize = 8_000;
/// SSE event name of a reply piece ([`TokenEvent`]).
pub const EVENT_TOKEN: &str = "token";
/// SSE event name of the end of a durable turn ([`DoneEvent`]).
pub const EVENT_DONE: &str = "done";
/// SSE event name of a failed turn (an [`crate::error_body::ErrorBody`]).
pub const EVENT_ERROR: &str = "error";

/// `POST /v1/calls/{id}/turns`: what the caller said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnRequest {
    /// The caller's words.
    pub text: String,
    /// The language they were said in (BCP 47), when the client knows it: stored with the turn
    /// and given to the model, which answers in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
}

/// Why a turn request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    /// Nothing to answer.
    #[error("text must not be empty")]
    EmptyText,
    /// Longer than [`MAX_TEXT_CHARS`].
    #[error("text is longer than {MAX_TEXT_CHARS} characters")]
    TextTooLong,
    /// `lang` is not a language tag.
    #[error("lang must be a BCP 47 language tag such as en-US")]
    BadLang,
}

impl TurnRequest {
    /// Checks the text.
    pub fn validate(&self) -> Result<(), TurnError> {
        if self.text.trim().is_empty() {
            return Err(TurnError::EmptyText);
        }
        if self.text.chars().count() > MAX_TEXT_CHARS {
            return Err(TurnError::TextTooLong);
        }
        if self.lang.as_deref().is_some_and(|lang| {
            !crate::language::is_language_tag(lang) || lang == crate::language::MULTI
        }) {
            return Err(TurnError::BadLang);
        }
        Ok(())
    }
}

/// Who a stored turn is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnRole {
    /// The caller's words.
    User,
    /// The agent's reply (as heard, when interrupted).
    Assistant,
    /// A key the caller pressed.
    Dtmf,
}

impl TurnRole {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Dtmf => "dtmf",
        }
    }

    /// Whether a turn of this role is a caller turn — the one definition of a call's turn
    /// count, shared with the edge (`shared::relay::RelayedKind::CallerTurn`): the caller's
    /// words and key presses, however the reply went.
    pub fn is_caller_turn(self) -> bool {
        matches!(self, Self::User | Self::Dtmf)
    }

    /// Reads the stored form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "user" => Some(Self::User),
            "assistant" => Some(Self::Assistant),
            "dtmf" => Some(Self::Dtmf),
            _ => None,
        }
    }
}

/// A stored turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Position in the call, from 1.
    pub seq: u32,
    /// Who.
    pub role: TurnRole,
    /// What was said (for an interrupted reply: what the caller heard).
    pub text: String,
    /// A reply the caller spoke over.
    pub interrupted: bool,
    /// The model that answered (replies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Prompt tokens (replies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u32>,
    /// Reply tokens (replies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u32>,
    /// Time to the first token, from the request to the model (replies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u32>,
    /// From the request to the model to the last token (replies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u32>,
    /// The language the caller spoke (caller turns, as the carrier reported it) or the reply
    /// was spoken in (replies in another language than the session's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// Why the model stopped (replies): `end_turn`, `max_tokens`, `guardrail_intervened`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// Why the model failed, for a reply that is (or ends with) the agent's fallback utterance:
    /// `throttled`, `timeout`, `server_error`, … ([`crate::model::ModelFailure::as_str`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// The tools the model called while producing this reply, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Unix milliseconds.
    pub created_at_ms: u64,
}

/// One tool call made while producing a reply, as stored with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The tool's name (a tenant's tool or a built-in).
    pub name: String,
    /// What the model passed.
    pub input: serde_json::Value,
    /// How it went.
    pub outcome: ToolOutcome,
    /// What the tool answered (JSON), when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why it failed, as the model was told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// From the model's request to the result.
    pub duration_ms: u32,
}

/// How a tool call went; the model gets an error result for all but `ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolOutcome {
    /// Answered 2xx with JSON (or the built-in was performed).
    Ok,
    /// Answered, but not 2xx.
    Failed,
    /// No answer within the tool's `timeout_ms`.
    Timeout,
    /// Not called: its host resolves to an address the origin may not reach.
    Refused,
    /// Could not connect or the connection broke.
    Unreachable,
    /// The answer was larger than the cap.
    TooLarge,
    /// The answer was not JSON.
    NotJson,
    /// The model's input was unusable (a built-in's check) or named no tool of the agent.
    Invalid,
    /// The caller spoke over the wait; the call was cancelled.
    Cancelled,
}

impl ToolOutcome {
    /// The stored form (and metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Refused => "refused",
            Self::Unreachable => "unreachable",
            Self::TooLarge => "too_large",
            Self::NotJson => "not_json",
            Self::Invalid => "invalid",
            Self::Cancelled => "cancelled",
        }
    }
}

/// `GET /v1/calls/{id}/turns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnList {
    /// The call.
    pub call_id: String,
    /// Its turns, by `seq`.
    pub turns: Vec<Turn>,
}

/// SSE `token`: a speakable piece of the reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEvent {
    /// The piece.
    pub text: String,
}

/// Tokens a reply used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Reply tokens.
    pub output_tokens: u32,
}

/// How long a reply took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// From the turn's start to the first token from the model.
    pub ttft_ms: u32,
    /// From the turn's start to the last token.
    pub duration_ms: u32,
}

/// A model that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    /// The model skipped.
    pub model: String,
    /// Why, e.g. `throttled`, `timeout`.
    pub reason: String,
}

/// SSE `done`: the reply is complete and durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneEvent {
    /// `seq` of the stored reply.
    pub turn: u32,
    /// The model that answered.
    pub model: String,
    /// Tokens used.
    pub usage: Usage,
    /// Timings.
    pub timings: Timings,
    /// Models tried before `model`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<Fallback>,
    /// Why the model stopped, when it was not the end of its turn (`max_tokens`,
    /// `guardrail_intervened`, …): a guardrail's intervention is a reply, not an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
}

/// The stop reason Bedrock reports when a guardrail intervened.
pub const GUARDRAIL_INTERVENED: &str = "guardrail_intervened";
/// The stop reason of a reply that ended normally.
pub const END_TURN: &str = "end_turn";
/// The stop reason of a response that asks for tools.
pub const TOOL_USE: &str = "tool_use";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_limits() {
        let request = |text: &str, lang: Option<&str>| TurnRequest {
            text: text.into(),
            lang: lang.map(str::to_owned),
        };
        assert_eq!(request("hi", None).validate(), Ok(()));
        assert_eq!(request("hola", Some("es-ES")).validate(), Ok(()));
        assert_eq!(request("  ", None).validate(), Err(TurnError::EmptyText));
        assert_eq!(
            request(&"é".repeat(MAX_TEXT_CHARS + 1), None).validate(),
            Err(TurnError::TextTooLong)
        );
        for bad in ["spanish", "multi", ""] {
            assert_eq!(
                request("hola", Some(bad)).validate(),
                Err(TurnError::BadLang),
                "{bad}"
            );
        }
    }

    #[test]
    fn tool_calls_are_shown_only_when_there_are_some() {
        let call = ToolCall {
            name: "lookup_order".into(),
            input: serde_json::json!({"id": "42"}),
            outcome: ToolOutcome::Timeout,
            result: None,
            error: Some("no answer within 300 ms".into()),
            duration_ms: 301,
        };
        assert_eq!(
            serde_json::to_value(&call).expect("json"),
            serde_json::json!({"name": "lookup_order", "input": {"id": "42"}, "outcome": "timeout",
                               "error": "no answer within 300 ms", "duration_ms": 301})
        );
        for outcome in [
            ToolOutcome::Ok,
            ToolOutcome::Failed,
            ToolOutcome::Timeout,
            ToolOutcome::Refused,
            ToolOutcome::Unreachable,
            ToolOutcome::TooLarge,
            ToolOutcome::NotJson,
            ToolOutcome::Invalid,
            ToolOutcome::Cancelled,
        ] {
            assert_eq!(
                serde_json::to_value(outcome).expect("json"),
                serde_json::Value::from(outcome.as_str())
            );
        }
    }

    #[test]
    fn roles_round_trip() {
        for role in [TurnRole::User, TurnRole::Assistant, TurnRole::Dtmf] {
            assert_eq!(TurnRole::parse(role.as_str()), Some(role));
        }
    }

    #[test]
    fn done_event_shape() {
        let done = DoneEvent {
            turn: 4,
            model: "m".into(),
            usage: Usage {
                input_tokens: 10,
                output_tokens: 3,
            },
            timings: Timings {
                ttft_ms: 50,
                duration_ms: 90,
            },
            fallbacks: vec![],
            stop_reason: None,
        };
        assert_eq!(
            serde_json::to_value(&done).expect("json"),
            serde_json::json!({"turn":4,"model":"m","usage":{"input_tokens":10,"output_tokens":3},"timings":{"ttft_ms":50,"duration_ms":90}})
        );
    }
}
