//! The ConversationRelay protocol: the JSON messages on a call's WebSocket (Twilio's
//! ConversationRelay, and carriers compatible with it). The `CallSession` Durable Object relays
//! the carrier's messages to the origin unchanged and the origin's back.
//!
//! Carrier → us: [`Inbound`] (`setup`, `prompt`, `dtmf`, `interrupt`, `error`).
//! Us → carrier: [`Outbound`] (`text`, `play`, `sendDigits`, `language`, `end`), plus
//! `error`, which the origin sends about a message it could not use; it is meant for the
//! Durable Object's logs and is not forwarded to the carrier.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Custom parameter (a `<Parameter>` of `<ConversationRelay>`, in `setup`'s
/// `customParameters`): the agent answering the call. voice-router sets it, the origin reads it.
pub const AGENT_ID_PARAM: &str = "agent_id";
/// The camelCase spelling of [`AGENT_ID_PARAM`], also accepted (a tenant's own TwiML may use it).
pub const AGENT_ID_PARAM_ALIAS: &str = "agentId";
/// Custom parameter: who speaks the agent's greeting.
pub const GREETING_PARAM: &str = "greeting";
/// [`GREETING_PARAM`]'s value when the carrier speaks the greeting (TwiML `welcomeGreeting`), so
/// the origin does not speak it again.
pub const GREETING_BY_CARRIER: &str = "carrier";

/// A message from the carrier.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// First message on a connection: which call this is.
    Setup(Setup),
    /// The caller said something (`last: false` for a partial transcript).
    Prompt(Prompt),
    /// The caller pressed a key.
    Dtmf(Dtmf),
    /// The caller spoke over the reply; says how much of it was heard.
    Interrupt(Interrupt),
    /// The carrier reports a problem with something we sent.
    Error(CarrierError),
}

/// `setup`: identifies the call. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Setup {
    /// The relay session id.
    pub session_id: String,
    /// The carrier's call id (`CA…` at Twilio).
    pub call_sid: String,
    /// The carrier account.
    pub account_sid: String,
    /// Caller's number.
    pub from: String,
    /// Called number.
    pub to: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Parameters set in the TwiML (`<Parameter name=… value=…/>`).
    pub custom_parameters: BTreeMap<String, serde_json::Value>,
}

impl Setup {
    /// The agent named by the custom parameters, in either spelling.
    pub fn agent_id(&self) -> Option<String> {
        self.parameter(AGENT_ID_PARAM_ALIAS)
            .or_else(|| self.parameter(AGENT_ID_PARAM))
    }

    /// Whether the carrier already spoke the greeting.
    pub fn carrier_greets(&self) -> bool {
        self.parameter(GREETING_PARAM).as_deref() == Some(GREETING_BY_CARRIER)
    }

    /// A custom parameter as text (numbers and booleans are rendered).
    pub fn parameter(&self, name: &str) -> Option<String> {
        match self.custom_parameters.get(name)? {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

/// `prompt`: a transcript of the caller's speech.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prompt {
    /// The transcript.
    pub voice_prompt: String,
    /// Language of the transcript, e.g. `en-US`.
    #[serde(default)]
    pub lang: Option<String>,
    /// `false` for a partial transcript (`partialPrompts` enabled); absent means final.
    #[serde(default = "yes")]
    pub last: bool,
}

fn yes() -> bool {
    true
}

/// `dtmf`: one key press.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Dtmf {
    /// `0`-`9`, `*`, `#`, `A`-`D`.
    pub digit: String,
}

/// `interrupt`: the caller spoke while the reply was being spoken.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interrupt {
    /// What the caller heard of the reply before speaking over it.
    #[serde(default)]
    pub utterance_until_interrupt: String,
    /// How long the reply played before the interruption.
    #[serde(default)]
    pub duration_until_interrupt_ms: Option<u64>,
}

/// `error` from the carrier.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CarrierError {
    /// The carrier's description.
    #[serde(default)]
    pub description: String,
}

/// A message to the carrier (and, for `Error`, to the Durable Object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Outbound {
    /// A piece of the reply to speak; `last: true` closes the turn.
    Text {
        /// The text to speak (may be empty on the closing message).
        token: String,
        /// Whether this closes the turn.
        last: bool,
        /// Language of this text, when it differs from the session's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lang: Option<String>,
        /// Whether caller speech may interrupt it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interruptible: Option<bool>,
        /// Whether the next turn's text may cut it off.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preemptible: Option<bool>,
    },
    /// Play an audio file.
    Play {
        /// URL of the audio.
        source: String,
        /// How many times to play it.
        #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
        loop_count: Option<u32>,
        /// Whether caller speech may interrupt it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interruptible: Option<bool>,
        /// Whether the next turn may cut it off.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preemptible: Option<bool>,
    },
    /// Send DTMF tones (`w` waits half a second).
    SendDigits {
        /// The digits.
        digits: String,
    },
    /// Switch languages.
    Language {
        /// Text-to-speech language.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tts_language: Option<String>,
        /// Speech-recognition language.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transcription_language: Option<String>,
    },
    /// End the relay session; `handoffData` (a JSON string) goes to the carrier's action URL.
    End {
        /// JSON text handed to the carrier.
        handoff_data: String,
    },
    /// A message from the carrier could not be used (origin → Durable Object only).
    Error {
        /// Machine-readable, e.g. `malformed_message`.
        code: String,
        /// For humans.
        description: String,
    },
}

impl Outbound {
    /// A reply piece (`last: false`).
    pub fn token(text: impl Into<String>) -> Self {
        Self::Text {
            token: text.into(),
            last: false,
            lang: None,
            interruptible: None,
            preemptible: None,
        }
    }

    /// The empty closing message of a turn (`last: true`).
    pub fn turn_end() -> Self {
        Self::Text {
            token: String::new(),
            last: true,
            lang: None,
            interruptible: None,
            preemptible: None,
        }
    }

    /// An `error` for the Durable Object.
    pub fn error(error: &RelayError) -> Self {
        Self::Error {
            code: error.code().to_owned(),
            description: error.to_string(),
        }
    }

    /// Serialises the message.
    pub fn to_json(&self) -> String {
        // Only strings, numbers and booleans inside: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why a relay message was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// Not JSON, or not a JSON object.
    #[error("the message is not a JSON object")]
    NotJson,
    /// A JSON object without a string `type`.
    #[error("the message has no type")]
    MissingType,
    /// A `type` this protocol does not have.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A known type with missing or mistyped fields.
    #[error("malformed {kind} message: {reason}")]
    Malformed {
        /// The message type.
        kind: String,
        /// What was wrong.
        reason: String,
    },
    /// Binary frames are not part of the protocol.
    #[error("binary messages are not part of the protocol")]
    Binary,
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("the message is larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    /// Anything but `setup` before `setup`.
    #[error("the first message must be setup")]
    SetupFirst,
    /// A second `setup` on the same connection.
    #[error("the call is already set up on this connection")]
    SetupTwice,
    /// A DTMF digit outside `0-9*#A-D`.
    #[error("{0:?} is not a DTMF digit")]
    BadDigit(String),
}

impl RelayError {
    /// Stable code for the `error` reply.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotJson | Self::MissingType | Self::Malformed { .. } | Self::Binary => {
                "malformed_message"
            }
            Self::UnknownType(_) => "unknown_message_type",
            Self::TooLarge => "message_too_large",
            Self::SetupFirst | Self::SetupTwice => "unexpected_message",
            Self::BadDigit(_) => "bad_digit",
        }
    }
}

/// Largest inbound message accepted (a transcript is far smaller).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Parses one inbound text frame.
pub fn parse_inbound(text: &str) -> Result<Inbound, RelayError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(RelayError::TooLarge);
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| RelayError::NotJson)?;
    let kind = match &value {
        serde_json::Value::Object(map) => match map.get("type") {
            Some(serde_json::Value::String(kind)) => kind.clone(),
            _ => return Err(RelayError::MissingType),
        },
        _ => return Err(RelayError::NotJson),
    };
    fn fields<T: serde::de::DeserializeOwned>(
        kind: &str,
        value: serde_json::Value,
    ) -> Result<T, RelayError> {
        serde_json::from_value(value).map_err(|error| RelayError::Malformed {
            kind: kind.to_owned(),
            reason: error.to_string(),
        })
    }
    match kind.as_str() {
        "setup" => fields(&kind, value).map(Inbound::Setup),
        "prompt" => fields(&kind, value).map(Inbound::Prompt),
        "dtmf" => {
            let dtmf: Dtmf = fields(&kind, value)?;
            if is_dtmf_digit(&dtmf.digit) {
                Ok(Inbound::Dtmf(dtmf))
            } else {
                Err(RelayError::BadDigit(dtmf.digit))
            }
        }
        "interrupt" => fields(&kind, value).map(Inbound::Interrupt),
        "error" => fields(&kind, value).map(Inbound::Error),
        _ => Err(RelayError::UnknownType(kind)),
    }
}

fn is_dtmf_digit(digit: &str) -> bool {
    let mut chars = digit.chars();
    matches!(
        (chars.next(), chars.next()),
        (Some('0'..='9' | '*' | '#' | 'A'..='D'), None)
    )
}

/// Joins partial transcripts (`last: false`) into the final one.
///
/// Carriers either repeat the whole utterance in each message (cumulative) or send only the new
/// words (incremental); both are handled: a final transcript that extends what was gathered
/// replaces it, otherwise the pieces are joined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptAssembler {
    gathered: String,
}

impl PromptAssembler {
    /// Adds a prompt message; returns the complete utterance when `last` is true.
    pub fn push(&mut self, prompt: &Prompt) -> Option<String> {
        let piece = prompt.voice_prompt.trim();
        if self.gathered.is_empty() || piece.starts_with(self.gathered.as_str()) {
            self.gathered = piece.to_owned();
        } else if !piece.is_empty() && !self.gathered.ends_with(piece) {
            self.gathered.push(' ');
            self.gathered.push_str(piece);
        }
        if prompt.last {
            Some(std::mem::take(&mut self.gathered))
        } else {
            None
        }
    }
}

/// What the edge's `CallSession` needs to know about a message it relays, without parsing (or
/// re-serialising) the rest: relayed messages pass through byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayedKind {
    /// The carrier's `setup`: remembered, and replayed to a new origin after a failover.
    Setup,
    /// The origin's `text` with `last: true`: a reply (a turn) is complete.
    TurnEnd,
    /// The origin's `error` note about a message it could not use: logged, never forwarded.
    OriginError,
    /// Anything else: passed on unchanged.
    Other,
}

/// Classifies a relayed message by its `type` (and `last` for `text`).
pub fn relayed_kind(text: &str) -> RelayedKind {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        last: Option<bool>,
    }
    let Ok(peek) = serde_json::from_str::<Peek<'_>>(text) else {
        return RelayedKind::Other;
    };
    match (peek.kind.as_deref(), peek.last) {
        (Some("setup"), _) => RelayedKind::Setup,
        (Some("text"), Some(true)) => RelayedKind::TurnEnd,
        (Some("error"), _) => RelayedKind::OriginError,
        _ => RelayedKind::Other,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn relayed_messages_are_classified_by_type() {
        let cases = [
            (r#"{"type":"setup","callSid":"CA1"}"#, RelayedKind::Setup),
            (
                r#"{"type":"text","token":"","last":true}"#,
                RelayedKind::TurnEnd,
            ),
            (
                r#"{"type":"text","token":"Hi","last":false}"#,
                RelayedKind::Other,
            ),
            (
                r#"{"type":"error","code":"unknown_message_type"}"#,
                RelayedKind::OriginError,
            ),
            (
                r#"{"type":"prompt","voicePrompt":"x","last":true}"#,
                RelayedKind::Other,
            ),
            ("not json", RelayedKind::Other),
            (r#"{"last":true}"#, RelayedKind::Other),
        ];
        for (text, expected) in cases {
            assert_eq!(relayed_kind(text), expected, "{text}");
        }
    }
    use super::*;

    #[test]
    fn the_edges_custom_parameters_name_the_agent_and_who_greets() {
        let setup = |parameters: serde_json::Value| Setup {
            custom_parameters: serde_json::from_value(parameters).expect("an object"),
            ..Setup::default()
        };
        let edge =
            setup(serde_json::json!({AGENT_ID_PARAM: "ava", GREETING_PARAM: GREETING_BY_CARRIER}));
        assert_eq!(edge.agent_id().as_deref(), Some("ava"));
        assert!(edge.carrier_greets());
        let tenant =
            setup(serde_json::json!({AGENT_ID_PARAM_ALIAS: "bob", GREETING_PARAM: "origin"}));
        assert_eq!(tenant.agent_id().as_deref(), Some("bob"));
        assert!(!tenant.carrier_greets());
        assert_eq!(Setup::default().agent_id(), None);
    }

    #[test]
    fn twilio_documented_messages_parse() {
        let setup = parse_inbound(
            r#"{"type":"setup","sessionId":"VX00","accountSid":"AC00","parentCallSid":"","callSid":"CA00",
            "from":"+18005550100","to":"+18005550101","forwardedFrom":"+18005550102","callType":"PSTN",
            "callerName":"","direction":"inbound","callStatus":"RINGING","customParameters":{"callReference":"bar","n":3}}"#,
        )
        .expect("setup");
        let Inbound::Setup(setup) = setup else {
            panic!("not setup: {setup:?}")
        };
        assert_eq!(setup.call_sid, "CA00");
        assert_eq!(setup.to, "+18005550101");
        assert_eq!(setup.parameter("callReference").as_deref(), Some("bar"));
        assert_eq!(setup.parameter("n").as_deref(), Some("3"));

        assert_eq!(
            parse_inbound(
                r#"{"type":"prompt","voicePrompt":"hello there","lang":"en-US","last":true}"#
            ),
            Ok(Inbound::Prompt(Prompt {
                voice_prompt: "hello there".into(),
                lang: Some("en-US".into()),
                last: true
            }))
        );
        assert_eq!(
            parse_inbound(r##"{"type":"dtmf","digit":"#"}"##),
            Ok(Inbound::Dtmf(Dtmf { digit: "#".into() }))
        );
        assert_eq!(
            parse_inbound(
                r#"{"type":"interrupt","utteranceUntilInterrupt":"Welcome to","durationUntilInterruptMs":460}"#
            ),
            Ok(Inbound::Interrupt(Interrupt {
                utterance_until_interrupt: "Welcome to".into(),
                duration_until_interrupt_ms: Some(460)
            }))
        );
        assert_eq!(
            parse_inbound(r#"{"type":"error","description":"Invalid message"}"#),
            Ok(Inbound::Error(CarrierError {
                description: "Invalid message".into()
            }))
        );
    }

    #[test]
    fn bad_messages_state_what_is_wrong() {
        let cases = [
            ("not json", RelayError::NotJson),
            ("[1,2]", RelayError::NotJson),
            (r#"{"voicePrompt":"x"}"#, RelayError::MissingType),
            (r#"{"type":7}"#, RelayError::MissingType),
            (
                r#"{"type":"dance"}"#,
                RelayError::UnknownType("dance".into()),
            ),
            (
                r#"{"type":"dtmf","digit":"12"}"#,
                RelayError::BadDigit("12".into()),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_inbound(text), Err(expected.clone()), "{text}");
        }
        let malformed = parse_inbound(r#"{"type":"prompt","voicePrompt":5}"#).expect_err("bad");
        assert!(
            matches!(&malformed, RelayError::Malformed { kind, .. } if kind == "prompt"),
            "{malformed:?}"
        );
        assert_eq!(malformed.code(), "malformed_message");
        assert_eq!(
            parse_inbound(&format!(
                r#"{{"type":"prompt","voicePrompt":"{}"}}"#,
                "a".repeat(MAX_MESSAGE_BYTES)
            )),
            Err(RelayError::TooLarge)
        );
    }

    #[test]
    fn outbound_messages_have_the_documented_shape() {
        let cases = [
            (
                Outbound::token("Hello. "),
                r#"{"type":"text","token":"Hello. ","last":false}"#,
            ),
            (
                Outbound::turn_end(),
                r#"{"type":"text","token":"","last":true}"#,
            ),
            (
                Outbound::SendDigits {
                    digits: "9www1".into(),
                },
                r#"{"type":"sendDigits","digits":"9www1"}"#,
            ),
            (
                Outbound::Language {
                    tts_language: Some("es-ES".into()),
                    transcription_language: None,
                },
                r#"{"type":"language","ttsLanguage":"es-ES"}"#,
            ),
            (
                Outbound::Play {
                    source: "https://x/a.mp3".into(),
                    loop_count: Some(2),
                    interruptible: None,
                    preemptible: None,
                },
                r#"{"type":"play","source":"https://x/a.mp3","loop":2}"#,
            ),
            (
                Outbound::End {
                    handoff_data: r#"{"reason":"done"}"#.into(),
                },
                r#"{"type":"end","handoffData":"{\"reason\":\"done\"}"}"#,
            ),
            (
                Outbound::error(&RelayError::UnknownType("x".into())),
                r#"{"type":"error","code":"unknown_message_type","description":"unknown message type \"x\""}"#,
            ),
        ];
        for (message, json) in cases {
            assert_eq!(message.to_json(), json);
            let back: Outbound = serde_json::from_str(json).expect("round trip");
            assert_eq!(back, message);
        }
    }

    fn prompt(text: &str, last: bool) -> Prompt {
        Prompt {
            voice_prompt: text.into(),
            lang: None,
            last,
        }
    }

    #[test]
    fn partial_prompts_are_assembled_either_way() {
        let mut cumulative = PromptAssembler::default();
        assert_eq!(cumulative.push(&prompt("I would", false)), None);
        assert_eq!(cumulative.push(&prompt("I would like", false)), None);
        assert_eq!(
            cumulative
                .push(&prompt("I would like a table", true))
                .as_deref(),
            Some("I would like a table")
        );

        let mut incremental = PromptAssembler::default();
        assert_eq!(incremental.push(&prompt("I would", false)), None);
        assert_eq!(
            incremental.push(&prompt("like a table", true)).as_deref(),
            Some("I would like a table")
        );
        // Empty final after partials: what was gathered.
        let mut trailing = PromptAssembler::default();
        trailing.push(&prompt("yes please", false));
        assert_eq!(
            trailing.push(&prompt("", true)).as_deref(),
            Some("yes please")
        );
        // And the assembler starts over.
        assert_eq!(
            trailing.push(&prompt("next", true)).as_deref(),
            Some("next")
        );
    }
}
