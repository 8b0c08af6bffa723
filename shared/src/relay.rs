//! The ConversationRelay protocol: the JSON messages on a call's WebSocket (Twilio's
//! ConversationRelay, and carriers compatible with it). The `CallSession` Durable Object relays
//! the carrier's messages to the origin unchanged and the origin's back.
//!
//! Carrier → us: [`Inbound`] (`setup`, `prompt`, `dtmf`, `interrupt`, `error`, `info`).
//! Us → carrier: [`Outbound`] (`text`, `play`, `sendDigits`, `language`, `end`), plus
//! `error`, which the origin sends about a message it could not use; it is meant for the
//! Durable Object's logs and is not forwarded to the carrier.
//!
//! Inbound messages are read the way carriers actually send them, not the way one example
//! shows them: Twilio's own page shows `"durationUntilInterruptMs": "460"` (a string) where
//! other copies and Telnyx send a number, so every number is accepted as a JSON number or a
//! numeric string, every boolean as `true`/`false` or `"true"`/`"false"`, and unknown fields
//! are ignored. A field in an unusable form reads as absent rather than refusing the whole
//! message — a barge-in must never be lost over a field's type — except the fields a message
//! is useless without (`voicePrompt`, `digit`). Sources:
//! <https://www.twilio.com/docs/voice/conversationrelay/websocket-messages> and
//! <https://developers.telnyx.com/api-reference/websockets/conversationrelay-websocket-channel>.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::call::{CallerDetails, MAX_CALLER_DETAIL_CHARS};

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
    /// First message on a connection: which call this is (boxed: it is far larger than the
    /// messages that follow).
    Setup(Box<Setup>),
    /// The caller said something (`last: false` for a partial transcript).
    Prompt(Prompt),
    /// The caller pressed a key.
    Dtmf(Dtmf),
    /// The caller spoke over the reply; says how much of it was heard.
    Interrupt(Interrupt),
    /// The carrier reports a problem with something we sent.
    Error(CarrierError),
    /// Diagnostics the carrier sends when the TwiML's `debug` attribute asks for them: logged,
    /// never answered. Its fields are kept as sent (they vary with the debug option).
    Info(serde_json::Map<String, serde_json::Value>),
}

/// `setup`: identifies the call. Every field Twilio documents is kept; unknown fields (Telnyx
/// adds `callControlId`, `callSessionId`, `callLegId`) are ignored.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Setup {
    /// The relay session id (`VX…`).
    #[serde(deserialize_with = "lenient::text")]
    pub session_id: String,
    /// The carrier account (`AC…`).
    #[serde(deserialize_with = "lenient::text")]
    pub account_sid: String,
    /// The parent call, for a call created by `<Dial>` (empty otherwise).
    #[serde(deserialize_with = "lenient::text")]
    pub parent_call_sid: String,
    /// The carrier's call id (`CA…` at Twilio).
    #[serde(deserialize_with = "lenient::text")]
    pub call_sid: String,
    /// Caller's number (or SIP URI, or client identity).
    #[serde(deserialize_with = "lenient::text")]
    pub from: String,
    /// Called number.
    #[serde(deserialize_with = "lenient::text")]
    pub to: String,
    /// The number that forwarded the call here, when it was forwarded.
    #[serde(deserialize_with = "lenient::text")]
    pub forwarded_from: String,
    /// `PSTN`, `SIP`, `CLIENT`, … as the carrier names it.
    #[serde(deserialize_with = "lenient::text")]
    pub call_type: String,
    /// Caller ID name (CNAM), when the carrier looked it up.
    #[serde(deserialize_with = "lenient::text")]
    pub caller_name: String,
    /// `inbound` or `outbound`.
    #[serde(deserialize_with = "lenient::text")]
    pub direction: String,
    /// The call's status at setup, e.g. `RINGING`, `IN-PROGRESS`.
    #[serde(deserialize_with = "lenient::text")]
    pub call_status: String,
    /// Parameters set in the TwiML (`<Parameter name=… value=…/>`).
    #[serde(deserialize_with = "lenient::object")]
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

    /// What an operator needs to know about the caller, from this setup.
    pub fn caller(&self) -> CallerDetails {
        CallerDetails {
            caller_name: stored_field(&self.caller_name),
            forwarded_from: stored_field(&self.forwarded_from),
            call_type: stored_field(&self.call_type),
        }
    }
}

/// Trimmed, control characters dropped, at most [`MAX_CALLER_DETAIL_CHARS`]; `None` when
/// nothing is left. A carrier's metadata never refuses a call: it is cut, not rejected.
fn stored_field(text: &str) -> Option<String> {
    let cleaned: String = text
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_CALLER_DETAIL_CHARS)
        .collect();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// `prompt`: a transcript of the caller's speech.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prompt {
    /// The transcript.
    pub voice_prompt: String,
    /// Language of the transcript, e.g. `en-US` (only the primary tag, `en`, when the
    /// transcription language is `multi`).
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub lang: Option<String>,
    /// `false` for a partial transcript (`partialPrompts` enabled); absent means final.
    #[serde(default = "yes", deserialize_with = "lenient::flag_or_yes")]
    pub last: bool,
}

fn yes() -> bool {
    true
}

/// `dtmf`: one key press.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Dtmf {
    /// `0`-`9`, `*`, `#`, `A`-`D` (a number is read as its digit).
    #[serde(deserialize_with = "lenient::text")]
    pub digit: String,
}

/// `interrupt`: the caller spoke while the reply was being spoken.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interrupt {
    /// What the caller heard of the reply before speaking over it.
    #[serde(default, deserialize_with = "lenient::text")]
    pub utterance_until_interrupt: String,
    /// How long the reply played before the interruption (a number or a numeric string).
    #[serde(default, deserialize_with = "lenient::opt_millis")]
    pub duration_until_interrupt_ms: Option<u64>,
}

/// `error` from the carrier.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CarrierError {
    /// The carrier's description.
    #[serde(default, deserialize_with = "lenient::text")]
    pub description: String,
}

/// Deserializers that take a field in any form a carrier sends it, and read an unusable form
/// as absent.
mod lenient {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// A string; numbers and booleans as their text; anything else as empty.
    pub fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        Ok(as_text(Value::deserialize(deserializer)?).unwrap_or_default())
    }

    /// Like [`text`], `None` when absent, empty or unusable.
    pub fn opt_text<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<String>, D::Error> {
        Ok(as_text(Value::deserialize(deserializer)?).filter(|t| !t.trim().is_empty()))
    }

    fn as_text(value: Value) -> Option<String> {
        match value {
            Value::String(text) => Some(text),
            Value::Number(number) => Some(number.to_string()),
            Value::Bool(flag) => Some(flag.to_string()),
            _ => None,
        }
    }

    /// A non-negative whole number of milliseconds, from a number (`460`, `460.0`) or a numeric
    /// string (`"460"`, `" 460 "`, `"460.5"`, read as 460).
    pub fn opt_millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        Ok(match Value::deserialize(deserializer)? {
            Value::Number(number) => number
                .as_u64()
                .or_else(|| number.as_f64().and_then(whole_millis)),
            Value::String(text) => {
                let text = text.trim();
                text.parse::<u64>()
                    .ok()
                    .or_else(|| text.parse::<f64>().ok().and_then(whole_millis))
            }
            _ => None,
        })
    }

    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn whole_millis(value: f64) -> Option<u64> {
        // A day is far beyond any interruption; also keeps the cast in range.
        (value.is_finite() && (0.0..86_400_000.0).contains(&value)).then_some(value as u64)
    }

    /// A boolean from `true`/`false` or their text; absent or unusable means `true`.
    pub fn flag_or_yes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
        Ok(match Value::deserialize(deserializer)? {
            Value::Bool(flag) => flag,
            Value::String(text) if text.trim().eq_ignore_ascii_case("false") => false,
            _ => true,
        })
    }

    /// A JSON object; anything else as an empty map.
    pub fn object<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, Value>, D::Error> {
        Ok(match Value::deserialize(deserializer)? {
            Value::Object(map) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        })
    }
}

/// How a text message is spoken, beyond its words (ConversationRelay's `text` fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextOptions {
    /// Language of the text when it differs from the session's, e.g. `es-ES`.
    pub lang: Option<String>,
    /// Whether the caller's speech may interrupt it.
    pub interruptible: Option<bool>,
    /// Whether the next talk cycle's text may cut it off.
    pub preemptible: Option<bool>,
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

    /// A `text` message spoken with `options`.
    pub fn text(token: impl Into<String>, last: bool, options: &TextOptions) -> Self {
        Self::Text {
            token: token.into(),
            last,
            lang: options.lang.clone(),
            interruptible: options.interruptible,
            preemptible: options.preemptible,
        }
    }

    /// `sendDigits`: DTMF tones into the call (`0`-`9`, `*`, `#`, `A`-`D`; `w` waits half a
    /// second), at most [`MAX_SEND_DIGITS`] characters.
    pub fn send_digits(digits: &str) -> Result<Self, RelayError> {
        let valid = !digits.is_empty()
            && digits.len() <= MAX_SEND_DIGITS
            && digits
                .chars()
                .all(|c| matches!(c, '0'..='9' | '*' | '#' | 'A'..='D' | 'w' | 'W'));
        if valid {
            Ok(Self::SendDigits {
                digits: digits.to_owned(),
            })
        } else {
            Err(RelayError::BadDigit(digits.to_owned()))
        }
    }

    /// `play`: an audio file at an `https://` (or `http://`) URL, once.
    pub fn play(source: &str, options: &TextOptions) -> Result<Self, RelayError> {
        let valid = (source.starts_with("https://") || source.starts_with("http://"))
            && source.len() <= MAX_PLAY_URL_CHARS
            && !source.chars().any(char::is_whitespace);
        if valid {
            Ok(Self::Play {
                source: source.to_owned(),
                loop_count: None,
                interruptible: options.interruptible,
                preemptible: options.preemptible,
            })
        } else {
            Err(RelayError::BadSource)
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
    /// A `play` source that is not an http(s) URL.
    #[error("the audio source must be an http(s) URL of at most {MAX_PLAY_URL_CHARS} characters")]
    BadSource,
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
            Self::BadSource => "bad_source",
        }
    }
}

/// Largest inbound message accepted (a transcript is far smaller).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Most characters of one `sendDigits`.
pub const MAX_SEND_DIGITS: usize = 64;
/// Longest `play` URL.
pub const MAX_PLAY_URL_CHARS: usize = 2_048;

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
        "setup" => fields(&kind, value).map(|setup| Inbound::Setup(Box::new(setup))),
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
        "info" => match value {
            serde_json::Value::Object(map) => Ok(Inbound::Info(map)),
            _ => Err(RelayError::NotJson),
        },
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
    /// A caller turn: a final `prompt` (`last` true or absent) or a `dtmf` key press. The one
    /// definition of a turn: the origin counts the same (its stored `user` and `dtmf` turns).
    CallerTurn,
    /// The origin's `text` with `last: false`: a piece of a reply is being spoken.
    ReplyPiece,
    /// The origin's `text` with `last: true`: a reply is complete.
    TurnEnd,
    /// The origin's `end`: the agent ended the relay session (goodbye, transfer, or
    /// `handoffData.reason` `idle_timeout`); the origin has already recorded the call as ended
    /// and closes its socket next. Forwarded to the carrier.
    SessionEnd,
    /// The origin's `error` note about a message it could not use: logged, never forwarded.
    OriginError,
    /// Anything else: passed on unchanged.
    Other,
}

/// Classifies a relayed message by its `type` (and `last` for `text` and `prompt`).
pub fn relayed_kind(text: &str) -> RelayedKind {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        last: Option<serde_json::Value>,
    }
    let Ok(peek) = serde_json::from_str::<Peek<'_>>(text) else {
        return RelayedKind::Other;
    };
    // Carriers send booleans; a string "false" is read as they mean it.
    let last = match peek.last {
        None => None,
        Some(serde_json::Value::Bool(last)) => Some(last),
        Some(serde_json::Value::String(last)) => Some(!last.eq_ignore_ascii_case("false")),
        Some(_) => Some(true),
    };
    match (peek.kind.as_deref(), last) {
        (Some("setup"), _) => RelayedKind::Setup,
        (Some("prompt"), Some(false)) => RelayedKind::Other,
        (Some("prompt"), _) | (Some("dtmf"), _) => RelayedKind::CallerTurn,
        (Some("text"), Some(true)) => RelayedKind::TurnEnd,
        (Some("text"), _) => RelayedKind::ReplyPiece,
        (Some("end"), _) => RelayedKind::SessionEnd,
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
                RelayedKind::ReplyPiece,
            ),
            (
                r#"{"type":"error","code":"unknown_message_type"}"#,
                RelayedKind::OriginError,
            ),
            (
                r#"{"type":"prompt","voicePrompt":"x","last":true}"#,
                RelayedKind::CallerTurn,
            ),
            (
                r#"{"type":"prompt","voicePrompt":"x"}"#,
                RelayedKind::CallerTurn,
            ),
            (
                r#"{"type":"prompt","voicePrompt":"x","last":false}"#,
                RelayedKind::Other,
            ),
            (r#"{"type":"dtmf","digit":"5"}"#, RelayedKind::CallerTurn),
            (
                r#"{"type":"end","handoffData":"{\"reason\":\"idle_timeout\"}"}"#,
                RelayedKind::SessionEnd,
            ),
            (r#"{"type":"interrupt"}"#, RelayedKind::Other),
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

    /// The inbound messages as the carriers publish them, numbers and strings alike.
    /// Twilio: <https://www.twilio.com/docs/voice/conversationrelay/websocket-messages> (its
    /// interrupt example sends `"460"`); an earlier copy of the same page sends `460`; Telnyx:
    /// <https://developers.telnyx.com/api-reference/websockets/conversationrelay-websocket-channel>.
    #[test]
    fn carriers_published_examples_parse_in_every_form() {
        let interrupt = |heard: &str, ms: Option<u64>| {
            Ok(Inbound::Interrupt(Interrupt {
                utterance_until_interrupt: heard.into(),
                duration_until_interrupt_ms: ms,
            }))
        };
        let prompt = |text: &str, lang: Option<&str>, last: bool| {
            Ok(Inbound::Prompt(Prompt {
                voice_prompt: text.into(),
                lang: lang.map(str::to_owned),
                last,
            }))
        };
        let cases = [
            // Twilio, current page: the duration as a string.
            (
                r#"{"type":"interrupt","utteranceUntilInterrupt":"Life is a complex set of","durationUntilInterruptMs":"460"}"#,
                interrupt("Life is a complex set of", Some(460)),
            ),
            // Twilio, earlier copy: a number.
            (
                r#"{"type":"interrupt","utteranceUntilInterrupt":"Life is a complex set of","durationUntilInterruptMs":460}"#,
                interrupt("Life is a complex set of", Some(460)),
            ),
            // Telnyx.
            (
                r#"{"type":"interrupt","utteranceUntilInterrupt":"Welcome to Telnyx, how can I help","durationUntilInterruptMs":1820}"#,
                interrupt("Welcome to Telnyx, how can I help", Some(1820)),
            ),
            // Forms no example shows but a tolerant reader takes.
            (
                r#"{"type":"interrupt","utteranceUntilInterrupt":"Hi","durationUntilInterruptMs":" 12 "}"#,
                interrupt("Hi", Some(12)),
            ),
            (
                r#"{"type":"interrupt","utteranceUntilInterrupt":"Hi","durationUntilInterruptMs":460.7}"#,
                interrupt("Hi", Some(460)),
            ),
            (
                r#"{"type":"interrupt","utteranceUntilInterrupt":"Hi","durationUntilInterruptMs":"soon"}"#,
                interrupt("Hi", None),
            ),
            (
                r#"{"type":"interrupt","durationUntilInterruptMs":-5}"#,
                interrupt("", None),
            ),
            (
                r#"{"type":"interrupt","utteranceUntilInterrupt":null,"durationUntilInterruptMs":null,"extra":{"x":1}}"#,
                interrupt("", None),
            ),
            (
                r#"{"type":"prompt","voicePrompt":"Hi! Can you tell me about life?","lang":"en-US","last":true}"#,
                prompt("Hi! Can you tell me about life?", Some("en-US"), true),
            ),
            (
                r#"{"type":"prompt","voicePrompt":"hello there","lang":"en","last":false}"#,
                prompt("hello there", Some("en"), false),
            ),
            (
                r#"{"type":"prompt","voicePrompt":"hola","lang":"es-ES","last":"false"}"#,
                prompt("hola", Some("es-ES"), false),
            ),
            (
                r#"{"type":"prompt","voicePrompt":"hola","last":"true","lang":""}"#,
                prompt("hola", None, true),
            ),
            (
                r#"{"type":"prompt","voicePrompt":"hola"}"#,
                prompt("hola", None, true),
            ),
            (
                r#"{"type":"dtmf","digit":"1"}"#,
                Ok(Inbound::Dtmf(Dtmf { digit: "1".into() })),
            ),
            (
                r#"{"type":"dtmf","digit":7}"#,
                Ok(Inbound::Dtmf(Dtmf { digit: "7".into() })),
            ),
            (
                r#"{"type":"error","description":"Invalid message received: { \"foo\" : \"bar\" }"}"#,
                Ok(Inbound::Error(CarrierError {
                    description: r#"Invalid message received: { "foo" : "bar" }"#.into(),
                })),
            ),
            (
                r#"{"type":"error","description":"Invalid message: unknown type: foo"}"#,
                Ok(Inbound::Error(CarrierError {
                    description: "Invalid message: unknown type: foo".into(),
                })),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_inbound(text), expected, "{text}");
        }
    }

    #[test]
    fn setup_keeps_every_documented_field_from_either_carrier() {
        // Twilio's documented setup.
        let Ok(Inbound::Setup(twilio)) = parse_inbound(
            r#"{"type":"setup","sessionId":"VX00000000000000000000000000000000","accountSid":"ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "parentCallSid":"","callSid":"CA00000000000000000000000000000000","from":"+18005550100","to":"+18005550101",
            "forwardedFrom":"+18005550102","callType":"PSTN","callerName":"","direction":"inbound","callStatus":"RINGING",
            "customParameters":{"callReference":"bar"}}"#,
        ) else {
            panic!("Twilio's setup parses")
        };
        assert_eq!(twilio.session_id, "VX00000000000000000000000000000000");
        assert_eq!(twilio.account_sid, "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX");
        assert_eq!(twilio.parent_call_sid, "");
        assert_eq!(twilio.call_sid, "CA00000000000000000000000000000000");
        assert_eq!(
            (twilio.from.as_str(), twilio.to.as_str()),
            ("+18005550100", "+18005550101")
        );
        assert_eq!(twilio.forwarded_from, "+18005550102");
        assert_eq!(twilio.call_type, "PSTN");
        assert_eq!(twilio.direction, "inbound");
        assert_eq!(twilio.call_status, "RINGING");
        assert_eq!(twilio.parameter("callReference").as_deref(), Some("bar"));
        assert_eq!(
            twilio.caller(),
            CallerDetails {
                caller_name: None,
                forwarded_from: Some("+18005550102".into()),
                call_type: Some("PSTN".into()),
            }
        );

        // Telnyx's: its own extra ids are ignored, a caller name is kept.
        let Ok(Inbound::Setup(telnyx)) = parse_inbound(
            r#"{"type":"setup","sessionId":"7a7e6a4f-1d44-4f0c-b5d4-9f9bf3a5c1f2","accountSid":"1f1a8b6f-1234-4abc-9def-1234567890ab",
            "callSid":"v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ","callControlId":"v2:T02","callSessionId":"ff55a038",
            "callLegId":"428c31b6","from":"+13122010094","to":"+13122123456","direction":"inbound","callerName":"ACME CORP",
            "callStatus":"active","customParameters":{"customer_id":"customer_123"}}"#,
        ) else {
            panic!("Telnyx's setup parses")
        };
        assert_eq!(telnyx.caller_name, "ACME CORP");
        assert_eq!(telnyx.call_status, "active");
        assert_eq!(telnyx.caller().caller_name.as_deref(), Some("ACME CORP"));
        assert!(telnyx.caller().forwarded_from.is_none());

        // Odd forms are read, not refused: numbers as text, a non-object parameter bag as none.
        let Ok(Inbound::Setup(odd)) = parse_inbound(
            r#"{"type":"setup","callSid":"CA1","from":18005550100,"callerName":"  Ada\u0007 Lovelace  ","customParameters":"x"}"#,
        ) else {
            panic!("odd setup parses")
        };
        assert_eq!(odd.from, "18005550100");
        assert!(odd.custom_parameters.is_empty());
        assert_eq!(odd.caller().caller_name.as_deref(), Some("Ada Lovelace"));
        let long = format!(r#"{{"type":"setup","callerName":"{}"}}"#, "n".repeat(500));
        let Ok(Inbound::Setup(long)) = parse_inbound(&long) else {
            panic!("long setup parses")
        };
        assert_eq!(
            long.caller().caller_name.map(|n| n.chars().count()),
            Some(MAX_CALLER_DETAIL_CHARS)
        );
    }

    #[test]
    fn info_messages_parse_and_keep_their_fields() {
        let Ok(Inbound::Info(info)) =
            parse_inbound(r#"{"type":"info","name":"roundTripDelayMs","value":"120"}"#)
        else {
            panic!("info parses")
        };
        assert_eq!(info["name"], "roundTripDelayMs");
        assert_eq!(info["value"], "120");
    }

    #[test]
    fn outbound_text_carries_its_options_and_digits_and_sources_are_checked() {
        let options = TextOptions {
            lang: Some("es-ES".into()),
            interruptible: Some(false),
            preemptible: Some(true),
        };
        assert_eq!(
            Outbound::text("Hola.", true, &options).to_json(),
            r#"{"type":"text","token":"Hola.","last":true,"lang":"es-ES","interruptible":false,"preemptible":true}"#
        );
        assert_eq!(
            Outbound::text("Hi.", false, &TextOptions::default()).to_json(),
            r#"{"type":"text","token":"Hi.","last":false}"#
        );
        assert_eq!(
            Outbound::send_digits("9ww1#").map(|m| m.to_json()),
            Ok(r#"{"type":"sendDigits","digits":"9ww1#"}"#.to_owned())
        );
        for bad in ["", "12x", &"1".repeat(MAX_SEND_DIGITS + 1)] {
            assert_eq!(
                Outbound::send_digits(bad),
                Err(RelayError::BadDigit(bad.to_owned()))
            );
        }
        assert_eq!(
            Outbound::play("https://x.example/hold.mp3", &TextOptions::default())
                .map(|m| m.to_json()),
            Ok(r#"{"type":"play","source":"https://x.example/hold.mp3"}"#.to_owned())
        );
        for bad in ["ftp://x/a.mp3", "https://x/a b.mp3", "x"] {
            assert_eq!(
                Outbound::play(bad, &TextOptions::default()),
                Err(RelayError::BadSource)
            );
        }
    }
}
