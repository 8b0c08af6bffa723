//! How a model behaves: timing, reply, usage and faults, set per model over the control API.

use serde::{Deserialize, Serialize};

/// One model's behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelScript {
    /// From the request's arrival to the first text delta.
    #[serde(default = "default_ttft_ms")]
    pub ttft_ms: u64,
    /// Between text deltas.
    #[serde(default = "default_inter_token_ms")]
    pub inter_token_ms: u64,
    /// The reply, split into word tokens; absent means the deterministic echo of the prompt.
    #[serde(default)]
    pub reply: Option<String>,
    /// The reply as exact deltas (wins over `reply`).
    #[serde(default)]
    pub tokens: Option<Vec<String>>,
    /// Reported usage; absent means computed (input ≈ characters / 4, output = deltas).
    #[serde(default)]
    pub usage: Option<ScriptedUsage>,
    /// A fault to inject.
    #[serde(default)]
    pub fault: Option<Fault>,
    /// A guardrail intervention, for requests that carry a `guardrailConfig`.
    #[serde(default)]
    pub guardrail: Option<GuardrailScript>,
    /// Tool use, per prompt: the first entry whose `when` the conversation's latest user text
    /// contains decides the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_use: Vec<ToolUseScript>,
}

/// How the model uses tools when the caller's latest words contain `when`, in ConverseStream's
/// wire format: the first request streams `before` (if any) as text, then one `toolUse` block
/// per call of `rounds[0]` (`contentBlockStart` with `toolUse {toolUseId, name}`, the input as
/// JSON-string `contentBlockDelta` pieces, `contentBlockStop`) and `messageStop` with
/// `stopReason: tool_use`. Each following request must carry the `toolResult` of every call of
/// the previous round (counted in the stats when it does not); while rounds remain the model
/// calls the next round's tools, then it streams `reply` — or `error_reply` when a result of
/// the last round had `status: error`
/// (<https://docs.aws.amazon.com/bedrock/latest/userguide/tool-use-inference-call.html>).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolUseScript {
    /// Matched, case-insensitively, against the latest user text message.
    pub when: String,
    /// Said before the first round's tool calls.
    #[serde(default)]
    pub before: Option<String>,
    /// The tool calls, one list per round.
    pub rounds: Vec<Vec<ScriptedToolCall>>,
    /// The reply once every round's results are in.
    pub reply: String,
    /// The reply when a result of the last round was an error.
    #[serde(default)]
    pub error_reply: Option<String>,
}

/// One tool call the model makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedToolCall {
    /// The tool's name (it must be offered in the request's `toolConfig`).
    pub name: String,
    /// The input object.
    #[serde(default = "empty_object")]
    pub input: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// How a guardrail intervenes mid-stream, as ConverseStream reports it: the text deltas that
/// passed, then the guardrail's blocked-output message as a delta, then `messageStop` with
/// `stopReason: guardrail_intervened`, and the assessment in `metadata.trace.guardrail` when
/// the request's `trace` is not `disabled`
/// (<https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-use-converse-api.html>,
/// <https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStreamTrace.html>).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailScript {
    /// Text deltas that pass before the intervention.
    #[serde(default)]
    pub after_tokens: usize,
    /// The guardrail's blocked-output message.
    pub message: String,
    /// `actionReason` of the trace.
    #[serde(default = "default_action_reason")]
    pub action_reason: String,
}

fn default_action_reason() -> String {
    "Guardrail blocked.".into()
}

fn default_ttft_ms() -> u64 {
    50
}

fn default_inter_token_ms() -> u64 {
    10
}

impl Default for ModelScript {
    fn default() -> Self {
        Self {
            ttft_ms: default_ttft_ms(),
            inter_token_ms: default_inter_token_ms(),
            reply: None,
            tokens: None,
            usage: None,
            fault: None,
            guardrail: None,
            tool_use: Vec::new(),
        }
    }
}

/// Usage reported in the `metadata` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptedUsage {
    /// `inputTokens`.
    pub input_tokens: u32,
    /// `outputTokens`.
    pub output_tokens: u32,
}

/// A failure to produce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Which failure.
    pub kind: FaultKind,
    /// For `exception_mid_stream` and `stall`: text deltas sent before it happens.
    #[serde(default)]
    pub after_tokens: usize,
    /// For `exception_mid_stream`: the event-stream exception type.
    #[serde(default = "default_exception")]
    pub exception: String,
    /// Only the next `times` requests fail; absent means every request.
    #[serde(default)]
    pub times: Option<u32>,
}

fn default_exception() -> String {
    "modelStreamErrorException".into()
}

/// Failures Bedrock produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 429 `ThrottlingException` before the stream.
    Throttle,
    /// HTTP 429 `ModelNotReadyException`.
    NotReady,
    /// HTTP 500 `InternalServerException`.
    ServerError,
    /// HTTP 503 `ServiceUnavailableException`.
    Unavailable,
    /// HTTP 408 `ModelTimeoutException`.
    ModelTimeout,
    /// HTTP 400 `ValidationException`.
    Validation,
    /// HTTP 404 `ResourceNotFoundException`.
    NotFound,
    /// HTTP 403 `AccessDeniedException`.
    AccessDenied,
    /// An exception frame after `after_tokens` deltas.
    ExceptionMidStream,
    /// Silence after `after_tokens` deltas, until the client gives up.
    Stall,
}

impl FaultKind {
    /// Status and `x-amzn-errortype` of a fault answered before the stream.
    pub fn http_error(self) -> Option<(u16, &'static str)> {
        match self {
            Self::Throttle => Some((429, "ThrottlingException")),
            Self::NotReady => Some((429, "ModelNotReadyException")),
            Self::ServerError => Some((500, "InternalServerException")),
            Self::Unavailable => Some((503, "ServiceUnavailableException")),
            Self::ModelTimeout => Some((408, "ModelTimeoutException")),
            Self::Validation => Some((400, "ValidationException")),
            Self::NotFound => Some((404, "ResourceNotFoundException")),
            Self::AccessDenied => Some((403, "AccessDeniedException")),
            Self::ExceptionMidStream | Self::Stall => None,
        }
    }
}

/// Splits a reply into word tokens the way Claude streams them: each after the first carries
/// its leading space.
pub fn word_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c == ' ' && !current.is_empty() && !current.ends_with(' ') {
            tokens.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_every_character() {
        let text = "Hello there.  How are you?";
        let tokens = word_tokens(text);
        assert_eq!(tokens, vec!["Hello", " there.", "  How", " are", " you?"]);
        assert_eq!(tokens.concat(), text);
    }

    #[test]
    fn scripts_parse_with_defaults() {
        let script: ModelScript =
            serde_json::from_str(r#"{"fault":{"kind":"throttle","times":1}}"#).expect("parses");
        assert_eq!(script.ttft_ms, 50);
        let fault = script.fault.expect("fault");
        assert_eq!(fault.kind, FaultKind::Throttle);
        assert_eq!(fault.times, Some(1));
        assert_eq!(fault.exception, "modelStreamErrorException");
        let tools: ModelScript = serde_json::from_str(
            r#"{"tool_use":[{"when":"order","rounds":[[{"name":"lookup"}]],"reply":"Shipped."}]}"#,
        )
        .expect("parses");
        assert_eq!(tools.tool_use[0].rounds[0][0].input, serde_json::json!({}));
    }
}
