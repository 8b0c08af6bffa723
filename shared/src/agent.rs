//! Agents: who answers a call — system prompt, greeting, model chain, inference settings,
//! voice and the phone numbers that reach it, what it says when it cannot answer or hears
//! nothing, and what it can do besides talk (its tools, [`tools`]). The origin's `/v1/agents`
//! speaks these types.

use serde::{Deserialize, Serialize};

use crate::identifier::{self, MAX_LEN as MAX_ID_LEN};
use crate::idle::IdlePolicy;

pub mod tools;
pub mod voice;

pub use tools::{BuiltinTools, ToolError, ToolSpec};
pub use voice::{VoiceError, VoiceSettings};

use crate::outbound_url::OutboundPolicy;

/// Longest agent name.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest system prompt (Claude's context is far larger; a voice agent's prompt is not).
pub const MAX_SYSTEM_PROMPT_CHARS: usize = 100_000;
/// Longest greeting.
pub const MAX_GREETING_CHARS: usize = 2_000;
/// Most models in a chain (the agent's model plus fallbacks).
pub const MAX_CHAIN_LEN: usize = 8;
/// Most stop sequences.
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Longest stop sequence.
pub const MAX_STOP_SEQUENCE_CHARS: usize = 100;
/// Most phone numbers per agent.
pub const MAX_PHONE_NUMBERS: usize = 20;
/// Largest `max_tokens`.
pub const MAX_MAX_TOKENS: u32 = 64_000;
/// Reply length when the agent does not say: a spoken reply is short.
pub const DEFAULT_MAX_TOKENS: u32 = 512;
/// Longest line the agent speaks on its own (apology, reprompt, goodbye).
pub const MAX_LINE_CHARS: usize = 500;
/// Longest voicemail message (about a minute and a half of speech).
pub const MAX_VOICEMAIL_CHARS: usize = 1_000;
/// Said when every model of the chain failed.
pub const DEFAULT_FALLBACK_UTTERANCE: &str =
    "I'm sorry, I'm having trouble answering right now. Could you say that again?";
/// Seconds of caller silence before the agent speaks up.
pub const DEFAULT_IDLE_REPROMPT_SECS: u32 = 10;
/// Longest `idle_reprompt_secs`.
pub const MAX_IDLE_REPROMPT_SECS: u32 = 600;
/// Said to a silent caller.
pub const DEFAULT_IDLE_REPROMPT: &str = "Are you still there?";
/// Reprompts before the goodbye.
pub const DEFAULT_IDLE_REPROMPTS: u8 = 2;
/// Most reprompts.
pub const MAX_IDLE_REPROMPTS: u8 = 5;
/// Said before the agent ends a silent call.
pub const DEFAULT_IDLE_GOODBYE: &str =
    "I haven't heard anything, so I'll end the call now. Goodbye.";
/// How long a tool call may keep the line silent before the filler line is said.
pub const DEFAULT_FILLER_AFTER_MS: u32 = 700;
/// Longest `filler_after_ms`.
pub const MAX_FILLER_AFTER_MS: u32 = 10_000;
/// Said while a slow tool call is under way.
pub const DEFAULT_FILLER_UTTERANCE: &str = "One moment, please.";

/// What `PUT /v1/agents/{id}` takes: the agent's whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Display name.
    pub name: String,
    /// The system prompt (cached by Bedrock where the model supports prompt caching).
    pub system_prompt: String,
    /// Spoken when a call connects, before the caller says anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting: Option<String>,
    /// Bedrock model id or inference profile; absent means the origin's default chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Models tried in order when the previous one is throttled or unavailable before its first
    /// token; absent means the origin's default chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_models: Option<Vec<String>>,
    /// Inference parameters.
    #[serde(default)]
    pub inference: InferenceSettings,
    /// Voice and language for the carrier.
    #[serde(default)]
    pub voice: VoiceSettings,
    /// E.164 numbers whose incoming calls this agent answers.
    #[serde(default)]
    pub phone_numbers: Vec<String>,
    /// Said (and stored as the reply) when every model of the chain failed.
    #[serde(default = "default_fallback_utterance")]
    pub fallback_utterance: String,
    /// Seconds of caller silence, after the agent finished speaking, before it reprompts;
    /// 0 turns the idle reprompt off (the edge's idle alarm still ends the call).
    #[serde(default = "default_idle_reprompt_secs")]
    pub idle_reprompt_secs: u32,
    /// Said to a silent caller.
    #[serde(default = "default_idle_reprompt")]
    pub idle_reprompt: String,
    /// How many times it is said before the goodbye.
    #[serde(default = "default_idle_reprompts")]
    pub idle_reprompts: u8,
    /// Said before the agent ends a silent call.
    #[serde(default = "default_idle_goodbye")]
    pub idle_goodbye: String,
    /// A Bedrock guardrail applied to every reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrail: Option<GuardrailSettings>,
    /// The tenant's tools the model may call (see [`tools`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// The built-in tools the model may call on a relay session.
    #[serde(default, skip_serializing_if = "is_default")]
    pub builtin_tools: BuiltinTools,
    /// Milliseconds a tool call may keep the caller waiting before `filler_utterance` is said.
    #[serde(default = "default_filler_after_ms")]
    pub filler_after_ms: u32,
    /// Said while a slow tool call is under way.
    #[serde(default = "default_filler_utterance")]
    pub filler_utterance: String,
    /// Left on an answering machine when an outbound call asked for `detect_message_end` and a
    /// machine answered: spoken once its greeting ends, then the call ends. Absent: a machine
    /// is hung up on without a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voicemail_message: Option<String>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn default_filler_after_ms() -> u32 {
    DEFAULT_FILLER_AFTER_MS
}

fn default_filler_utterance() -> String {
    DEFAULT_FILLER_UTTERANCE.to_owned()
}

fn default_fallback_utterance() -> String {
    DEFAULT_FALLBACK_UTTERANCE.to_owned()
}

fn default_idle_reprompt_secs() -> u32 {
    DEFAULT_IDLE_REPROMPT_SECS
}

fn default_idle_reprompt() -> String {
    DEFAULT_IDLE_REPROMPT.to_owned()
}

fn default_idle_reprompts() -> u8 {
    DEFAULT_IDLE_REPROMPTS
}

fn default_idle_goodbye() -> String {
    DEFAULT_IDLE_GOODBYE.to_owned()
}

/// A Bedrock guardrail for ConverseStream (`guardrailConfig`, a `GuardrailStreamConfiguration`:
/// <https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_GuardrailStreamConfiguration.html>).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailSettings {
    /// The guardrail's id or ARN.
    pub identifier: String,
    /// Its version: `DRAFT` or a number.
    pub version: String,
    /// Whether Bedrock reports what the guardrail assessed (logged by the origin).
    #[serde(default)]
    pub trace: GuardrailTrace,
    /// `sync` checks each piece before it is sent (the caller never hears blocked words);
    /// `async` sends at once and checks beside it (faster, may leak a few words).
    #[serde(default)]
    pub stream_processing_mode: StreamProcessingMode,
}

/// `guardrailConfig.trace`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardrailTrace {
    /// The assessment is reported (the default here: interventions are logged with it).
    #[default]
    Enabled,
    /// Nothing reported.
    Disabled,
    /// Everything reported, including what passed.
    EnabledFull,
}

impl GuardrailTrace {
    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::EnabledFull => "enabled_full",
        }
    }
}

/// `guardrailConfig.streamProcessingMode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamProcessingMode {
    /// Checked before sent.
    #[default]
    Sync,
    /// Sent, checked beside.
    Async,
}

impl StreamProcessingMode {
    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Async => "async",
        }
    }
}

impl GuardrailSettings {
    /// Checks the id and version against the API's patterns.
    pub fn validate(&self) -> Result<(), AgentError> {
        if !is_guardrail_identifier(&self.identifier) {
            return Err(AgentError::BadGuardrailIdentifier);
        }
        let version = self.version.as_str();
        let numbered = !version.is_empty()
            && version.len() <= 8
            && version.bytes().all(|b| b.is_ascii_digit())
            && !version.starts_with('0');
        if version != "DRAFT" && !numbered {
            return Err(AgentError::BadGuardrailVersion);
        }
        Ok(())
    }
}

/// `[a-z0-9]+`, or `arn:aws…:bedrock:<region>:<account>:guardrail/[a-z0-9]+`, at most 2048.
fn is_guardrail_identifier(identifier: &str) -> bool {
    let id = |text: &str| {
        !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if identifier.len() > 2_048 {
        return false;
    }
    if id(identifier) {
        return true;
    }
    let parts: Vec<&str> = identifier.split(':').collect();
    match parts.as_slice() {
        ["arn", partition, "bedrock", region, account, resource] => {
            partition.starts_with("aws")
                && !region.is_empty()
                && region.len() <= 20
                && region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.strip_prefix("guardrail/").is_some_and(id)
        }
        _ => false,
    }
}

/// `performanceConfig.latency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Latency {
    /// Bedrock's standard inference.
    Standard,
    /// Latency-optimized inference, where the model offers it
    /// ([`crate::model::supports_latency_optimized`]).
    Optimized,
}

/// Inference parameters passed to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceSettings {
    /// Longest reply, in tokens.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// 0.0 – 1.0; absent means the model's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// 0.0 – 1.0; absent means the model's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Text at which the model stops.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<String>,
    /// `performanceConfig.latency`, sent to the models of the chain that offer it; absent means
    /// standard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
}

impl Default for InferenceSettings {
    fn default() -> Self {
        Self {
            max_tokens: DEFAULT_MAX_TOKENS,
            temperature: None,
            top_p: None,
            stop_sequences: Vec::new(),
            latency: None,
        }
    }
}

fn default_max_tokens() -> u32 {
    DEFAULT_MAX_TOKENS
}

/// An agent as stored and answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// The agent's id (unique within its tenant).
    pub id: String,
    /// The owning tenant.
    pub tenant_id: String,
    /// The configuration.
    #[serde(flatten)]
    pub spec: AgentSpec,
    /// Incremented on every update.
    pub version: u64,
    /// Unix milliseconds.
    pub created_at_ms: u64,
    /// Unix milliseconds.
    pub updated_at_ms: u64,
}

/// `GET /v1/agents`: a page of agents, ordered by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentPage {
    /// The agents.
    pub agents: Vec<Agent>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// Why an agent configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The id fails [`identifier::is_resource_id`].
    #[error("the agent id must be 1 to {MAX_ID_LEN} letters, digits, '-' or '_'")]
    BadId,
    /// Empty or too long name.
    #[error("name must be 1 to {MAX_NAME_CHARS} characters")]
    BadName,
    /// Empty or too long system prompt.
    #[error("system_prompt must be 1 to {MAX_SYSTEM_PROMPT_CHARS} characters")]
    BadSystemPrompt,
    /// Empty or too long greeting.
    #[error("greeting must be 1 to {MAX_GREETING_CHARS} characters when present")]
    BadGreeting,
    /// A model id that is empty, too long or has odd characters.
    #[error("model id {0:?} is not a Bedrock model id or inference profile")]
    BadModel(String),
    /// More than [`MAX_CHAIN_LEN`] models.
    #[error("a model chain holds at most {MAX_CHAIN_LEN} models")]
    ChainTooLong,
    /// `max_tokens` out of range.
    #[error("inference.max_tokens must be 1 to {MAX_MAX_TOKENS}")]
    BadMaxTokens,
    /// Temperature out of range.
    #[error("inference.temperature must be between 0 and 1")]
    BadTemperature,
    /// top_p out of range.
    #[error("inference.top_p must be between 0 and 1")]
    BadTopP,
    /// Too many or bad stop sequences.
    #[error(
        "inference.stop_sequences holds at most {MAX_STOP_SEQUENCES} non-empty sequences of at most {MAX_STOP_SEQUENCE_CHARS} characters"
    )]
    BadStopSequences,
    /// A phone number not in E.164.
    #[error("phone number {0:?} is not E.164 (+ and 7 to 15 digits)")]
    BadPhoneNumber(String),
    /// Too many or repeated phone numbers.
    #[error("phone_numbers holds at most {MAX_PHONE_NUMBERS} distinct numbers")]
    BadPhoneNumbers,
    /// A voice (ConversationRelay) setting refused.
    #[error(transparent)]
    Voice(#[from] VoiceError),
    /// One of the lines the agent speaks on its own is empty or too long.
    #[error("{0} must be 1 to {MAX_LINE_CHARS} characters")]
    BadLine(&'static str),
    /// `idle_reprompt_secs` out of range.
    #[error("idle_reprompt_secs must be 0 (off) to {MAX_IDLE_REPROMPT_SECS}")]
    BadIdleSeconds,
    /// `idle_reprompts` out of range.
    #[error("idle_reprompts must be 0 to {MAX_IDLE_REPROMPTS}")]
    BadIdleReprompts,
    /// Not a guardrail id or ARN.
    #[error(
        "guardrail.identifier must be a guardrail id ([a-z0-9]+) or arn:aws:bedrock:<region>:<account>:guardrail/<id>"
    )]
    BadGuardrailIdentifier,
    /// Not a guardrail version.
    #[error("guardrail.version must be DRAFT or a version number (1 to 99999999)")]
    BadGuardrailVersion,
    /// An empty or too long voicemail message.
    #[error("voicemail_message must be 1 to {MAX_VOICEMAIL_CHARS} characters when present")]
    BadVoicemail,
    /// Latency-optimized inference asked of a model that does not offer it.
    #[error(
        "inference.latency contradicts model: Bedrock offers no latency-optimized inference for {0:?} (only Claude 3.5 Haiku, Amazon Nova Pro and Llama 3.1 70B/405B have it)"
    )]
    LatencyUnsupported(String),
    /// A tool or built-in refused.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// `filler_after_ms` out of range.
    #[error("filler_after_ms must be 0 to {MAX_FILLER_AFTER_MS}")]
    BadFillerAfter,
}

impl AgentSpec {
    /// Checks every field as a production origin does (tool URLs public); the first problem
    /// found is returned.
    pub fn validate(&self) -> Result<(), AgentError> {
        self.validate_with(OutboundPolicy::PublicOnly)
    }

    /// Checks every field, tool URLs under `policy` (a development origin lets them be loopback).
    pub fn validate_with(&self, policy: OutboundPolicy) -> Result<(), AgentError> {
        let name_chars = self.name.trim().chars().count();
        if name_chars == 0 || name_chars > MAX_NAME_CHARS {
            return Err(AgentError::BadName);
        }
        let prompt_chars = self.system_prompt.chars().count();
        if self.system_prompt.trim().is_empty() || prompt_chars > MAX_SYSTEM_PROMPT_CHARS {
            return Err(AgentError::BadSystemPrompt);
        }
        if let Some(greeting) = &self.greeting
            && (greeting.trim().is_empty() || greeting.chars().count() > MAX_GREETING_CHARS)
        {
            return Err(AgentError::BadGreeting);
        }
        let models = self
            .model
            .iter()
            .chain(self.fallback_models.iter().flatten());
        let mut count = 0;
        for model in models {
            count += 1;
            if !is_model_id(model) {
                return Err(AgentError::BadModel(model.clone()));
            }
        }
        if count > MAX_CHAIN_LEN {
            return Err(AgentError::ChainTooLong);
        }
        let inference = &self.inference;
        if inference.max_tokens == 0 || inference.max_tokens > MAX_MAX_TOKENS {
            return Err(AgentError::BadMaxTokens);
        }
        if inference
            .temperature
            .is_some_and(|t| !(0.0..=1.0).contains(&t))
        {
            return Err(AgentError::BadTemperature);
        }
        if inference.top_p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
            return Err(AgentError::BadTopP);
        }
        if inference.stop_sequences.len() > MAX_STOP_SEQUENCES
            || inference
                .stop_sequences
                .iter()
                .any(|s| s.is_empty() || s.chars().count() > MAX_STOP_SEQUENCE_CHARS)
        {
            return Err(AgentError::BadStopSequences);
        }
        for number in &self.phone_numbers {
            if !is_e164(number) {
                return Err(AgentError::BadPhoneNumber(number.clone()));
            }
        }
        let mut numbers = self.phone_numbers.clone();
        numbers.sort();
        numbers.dedup();
        if self.phone_numbers.len() > MAX_PHONE_NUMBERS || numbers.len() != self.phone_numbers.len()
        {
            return Err(AgentError::BadPhoneNumbers);
        }
        if let (Some(Latency::Optimized), Some(model)) = (inference.latency, &self.model)
            && !crate::model::supports_latency_optimized(model)
        {
            return Err(AgentError::LatencyUnsupported(model.clone()));
        }
        self.voice.validate(self.greeting.as_deref())?;
        for (field, line) in [
            ("fallback_utterance", &self.fallback_utterance),
            ("idle_reprompt", &self.idle_reprompt),
            ("idle_goodbye", &self.idle_goodbye),
            ("filler_utterance", &self.filler_utterance),
        ] {
            if line.trim().is_empty() || line.chars().count() > MAX_LINE_CHARS {
                return Err(AgentError::BadLine(field));
            }
        }
        if self.idle_reprompt_secs > MAX_IDLE_REPROMPT_SECS {
            return Err(AgentError::BadIdleSeconds);
        }
        if self.idle_reprompts > MAX_IDLE_REPROMPTS {
            return Err(AgentError::BadIdleReprompts);
        }
        if let Some(guardrail) = &self.guardrail {
            guardrail.validate()?;
        }
        if self.filler_after_ms > MAX_FILLER_AFTER_MS {
            return Err(AgentError::BadFillerAfter);
        }
        tools::validate(&self.tools, &self.builtin_tools, &self.voice, policy)?;
        if let Some(message) = &self.voicemail_message
            && (message.trim().is_empty() || message.chars().count() > MAX_VOICEMAIL_CHARS)
        {
            return Err(AgentError::BadVoicemail);
        }
        Ok(())
    }

    /// The field `error` is about, as its JSON path in this spec (what a client shows the error
    /// next to): a bad model is `model` when it is the agent's own, else `fallback_models`.
    pub fn field_of(&self, error: &AgentError) -> String {
        let field = match error {
            AgentError::BadId => "id",
            AgentError::BadName => "name",
            AgentError::BadSystemPrompt => "system_prompt",
            AgentError::BadGreeting => "greeting",
            AgentError::BadModel(model) if self.model.as_ref() == Some(model) => "model",
            AgentError::BadModel(_) | AgentError::ChainTooLong => "fallback_models",
            AgentError::BadMaxTokens => "inference.max_tokens",
            AgentError::BadTemperature => "inference.temperature",
            AgentError::BadTopP => "inference.top_p",
            AgentError::BadStopSequences => "inference.stop_sequences",
            AgentError::BadPhoneNumber(_) | AgentError::BadPhoneNumbers => "phone_numbers",
            AgentError::Voice(
                VoiceError::BadValue { field, .. } | VoiceError::Contradiction { field, .. },
            ) => field,
            AgentError::BadLine(field) => field,
            AgentError::BadIdleSeconds => "idle_reprompt_secs",
            AgentError::BadIdleReprompts => "idle_reprompts",
            AgentError::BadGuardrailIdentifier => "guardrail.identifier",
            AgentError::BadGuardrailVersion => "guardrail.version",
            AgentError::LatencyUnsupported(_) => "inference.latency",
            AgentError::Tool(error) => &error.field,
            AgentError::BadFillerAfter => "filler_after_ms",
            AgentError::BadVoicemail => "voicemail_message",
        };
        field.to_owned()
    }

    /// The idle policy, `None` when the agent turned it off.
    pub fn idle_policy(&self) -> Option<IdlePolicy> {
        (self.idle_reprompt_secs > 0).then(|| IdlePolicy {
            after_ms: u64::from(self.idle_reprompt_secs) * 1_000,
            reprompts: self.idle_reprompts,
        })
    }

    /// The models to try, in order: the agent's own, then its fallbacks, each once; either part
    /// missing is taken from `default_chain`.
    pub fn model_chain(&self, default_chain: &[String]) -> Vec<String> {
        let first = self
            .model
            .clone()
            .or_else(|| default_chain.first().cloned());
        let rest: Vec<String> = match &self.fallback_models {
            Some(fallbacks) => fallbacks.clone(),
            None => default_chain.to_vec(),
        };
        let mut chain: Vec<String> = Vec::new();
        for model in first.into_iter().chain(rest) {
            if !chain.contains(&model) {
                chain.push(model);
            }
        }
        chain.truncate(MAX_CHAIN_LEN);
        chain
    }
}

/// Validates an agent id from a path.
pub fn check_id(id: &str) -> Result<(), AgentError> {
    if identifier::is_resource_id(id) {
        Ok(())
    } else {
        Err(AgentError::BadId)
    }
}

/// A Bedrock model id, inference profile id or ARN: 1–256 of `[A-Za-z0-9.:_/-]`.
pub fn is_model_id(model: &str) -> bool {
    !model.is_empty()
        && model.len() <= 256
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'_' | b'/' | b'-'))
}

/// E.164: `+`, a non-zero digit, then 6 to 14 more digits.
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AgentSpec {
        serde_json::from_str(
            r#"{"name":"Front desk","system_prompt":"You are polite.","phone_numbers":["+14155550100"]}"#,
        )
        .expect("minimal spec parses")
    }

    #[test]
    fn a_minimal_spec_gets_defaults_and_is_valid() {
        let spec = spec();
        assert_eq!(spec.inference.max_tokens, DEFAULT_MAX_TOKENS);
        assert_eq!(spec.model, None);
        assert_eq!(spec.fallback_utterance, DEFAULT_FALLBACK_UTTERANCE);
        assert_eq!(spec.idle_reprompt_secs, DEFAULT_IDLE_REPROMPT_SECS);
        assert_eq!(spec.idle_reprompt, DEFAULT_IDLE_REPROMPT);
        assert_eq!(spec.idle_reprompts, DEFAULT_IDLE_REPROMPTS);
        assert_eq!(spec.idle_goodbye, DEFAULT_IDLE_GOODBYE);
        assert_eq!(spec.guardrail, None);
        assert_eq!(spec.filler_after_ms, DEFAULT_FILLER_AFTER_MS);
        assert_eq!(spec.filler_utterance, DEFAULT_FILLER_UTTERANCE);
        assert!(spec.tools.is_empty() && !spec.builtin_tools.any());
        assert_eq!(
            spec.idle_policy(),
            Some(IdlePolicy {
                after_ms: 10_000,
                reprompts: 2
            })
        );
        assert_eq!(spec.validate(), Ok(()));
        // The defaults are shown, so an operator sees what the agent will do.
        let json = serde_json::to_value(&spec).expect("json");
        assert_eq!(json["idle_reprompt_secs"], 10);
        assert_eq!(json["fallback_utterance"], DEFAULT_FALLBACK_UTTERANCE);
        assert_eq!(json["filler_after_ms"], 700);
        assert!(
            json.get("tools").is_none() && json.get("builtin_tools").is_none(),
            "no tools, nothing shown: {json}"
        );
    }

    #[test]
    fn tools_and_builtins_parse_validate_and_name_their_fields() {
        let mut spec: AgentSpec = serde_json::from_value(serde_json::json!({
            "name": "a", "system_prompt": "p", "filler_after_ms": 300, "filler_utterance": "Hang on.",
            "voice": {"language": "en-US", "languages": [{"code": "es-ES", "voice": "es-ES-Neural2-B"}]},
            "tools": [{"name": "lookup", "description": "d", "input_schema": {"type": "object"},
                       "url": "https://tools.example.com/x", "timeout_ms": 500}],
            "builtin_tools": {"end_call": {}, "switch_language": {}},
        }))
        .expect("parses");
        assert_eq!(spec.validate(), Ok(()));
        let json = serde_json::to_value(&spec).expect("json");
        assert_eq!(json["tools"][0]["timeout_ms"], 500);
        assert_eq!(
            json["builtin_tools"]["end_call"]["goodbye"],
            tools::DEFAULT_GOODBYE
        );
        spec.tools[0].url = "http://127.0.0.1:8080/x".into();
        let error = spec.validate().expect_err("http in production");
        assert_eq!(spec.field_of(&error), "tools[0].url");
        assert_eq!(spec.validate_with(OutboundPolicy::LoopbackToo), Ok(()));
        spec.filler_after_ms = MAX_FILLER_AFTER_MS + 1;
        assert_eq!(
            spec.validate_with(OutboundPolicy::LoopbackToo),
            Err(AgentError::BadFillerAfter)
        );
        assert_eq!(
            spec.field_of(&AgentError::BadFillerAfter),
            "filler_after_ms"
        );
        spec.filler_after_ms = 0;
        spec.filler_utterance = String::new();
        assert_eq!(
            spec.validate_with(OutboundPolicy::LoopbackToo),
            Err(AgentError::BadLine("filler_utterance"))
        );
    }

    #[test]
    fn guardrails_latency_and_idle_settings_parse_and_check() {
        let spec: AgentSpec = serde_json::from_value(serde_json::json!({
            "name": "a", "system_prompt": "p", "idle_reprompt_secs": 0,
            "model": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            "inference": {"latency": "optimized"},
            "guardrail": {"identifier": "gr1abc", "version": "3", "trace": "enabled_full", "stream_processing_mode": "async"},
        }))
        .expect("parses");
        assert_eq!(spec.validate(), Ok(()));
        assert_eq!(spec.idle_policy(), None, "0 turns it off");
        let guardrail = spec.guardrail.expect("guardrail");
        assert_eq!(guardrail.trace, GuardrailTrace::EnabledFull);
        assert_eq!(
            guardrail.stream_processing_mode,
            StreamProcessingMode::Async
        );
        let defaults: GuardrailSettings =
            serde_json::from_str(r#"{"identifier":"abc","version":"DRAFT"}"#).expect("parses");
        assert_eq!(
            (defaults.trace, defaults.stream_processing_mode),
            (GuardrailTrace::Enabled, StreamProcessingMode::Sync)
        );
        for ok in [
            "abc123",
            "arn:aws:bedrock:us-east-1:123456789012:guardrail/abc123",
            "arn:aws-us-gov:bedrock:us-gov-west-1:123456789012:guardrail/x1",
        ] {
            assert!(is_guardrail_identifier(ok), "{ok}");
        }
        for bad in [
            "",
            "ABC",
            "gr-1",
            "arn:aws:bedrock:us-east-1:1234:guardrail/abc",
            "arn:aws:s3:us-east-1:123456789012:guardrail/abc",
            "arn:aws:bedrock:us-east-1:123456789012:agent/abc",
        ] {
            assert!(!is_guardrail_identifier(bad), "{bad}");
        }
        assert!(
            serde_json::from_str::<GuardrailSettings>(
                r#"{"identifier":"a","version":"1","mode":"x"}"#
            )
            .is_err(),
            "unknown guardrail fields are refused"
        );
    }

    #[test]
    fn unknown_fields_are_refused_so_typos_do_not_pass_silently() {
        let result: Result<AgentSpec, _> =
            serde_json::from_str(r#"{"name":"a","system_prompt":"b","temprature":0.2}"#);
        assert!(result.is_err());
    }

    #[test]
    fn each_problem_is_named() {
        type Change = Box<dyn Fn(&mut AgentSpec)>;
        let cases: Vec<(Change, AgentError)> = vec![
            (Box::new(|s| s.name = " ".into()), AgentError::BadName),
            (
                Box::new(|s| s.system_prompt = "".into()),
                AgentError::BadSystemPrompt,
            ),
            (
                Box::new(|s| s.greeting = Some(" ".into())),
                AgentError::BadGreeting,
            ),
            (
                Box::new(|s| s.model = Some("bad model".into())),
                AgentError::BadModel("bad model".into()),
            ),
            (
                Box::new(|s| s.fallback_models = Some(vec!["m".into(); 9])),
                AgentError::ChainTooLong,
            ),
            (
                Box::new(|s| s.inference.max_tokens = 0),
                AgentError::BadMaxTokens,
            ),
            (
                Box::new(|s| s.inference.temperature = Some(1.5)),
                AgentError::BadTemperature,
            ),
            (
                Box::new(|s| s.inference.top_p = Some(-0.1)),
                AgentError::BadTopP,
            ),
            (
                Box::new(|s| s.inference.stop_sequences = vec!["".into()]),
                AgentError::BadStopSequences,
            ),
            (
                Box::new(|s| s.phone_numbers = vec!["4155550100".into()]),
                AgentError::BadPhoneNumber("4155550100".into()),
            ),
            (
                Box::new(|s| s.phone_numbers = vec!["+14155550100".into(); 2]),
                AgentError::BadPhoneNumbers,
            ),
            (
                Box::new(|s| s.fallback_utterance = " ".into()),
                AgentError::BadLine("fallback_utterance"),
            ),
            (
                Box::new(|s| s.idle_reprompt = "x".repeat(MAX_LINE_CHARS + 1)),
                AgentError::BadLine("idle_reprompt"),
            ),
            (
                Box::new(|s| s.idle_goodbye = String::new()),
                AgentError::BadLine("idle_goodbye"),
            ),
            (
                Box::new(|s| s.idle_reprompt_secs = MAX_IDLE_REPROMPT_SECS + 1),
                AgentError::BadIdleSeconds,
            ),
            (
                Box::new(|s| s.voicemail_message = Some("  ".into())),
                AgentError::BadVoicemail,
            ),
            (
                Box::new(|s| s.voicemail_message = Some("x".repeat(MAX_VOICEMAIL_CHARS + 1))),
                AgentError::BadVoicemail,
            ),
            (
                Box::new(|s| s.idle_reprompts = MAX_IDLE_REPROMPTS + 1),
                AgentError::BadIdleReprompts,
            ),
            (
                Box::new(|s| {
                    s.guardrail = Some(GuardrailSettings {
                        identifier: "Bad Id".into(),
                        version: "1".into(),
                        trace: GuardrailTrace::Enabled,
                        stream_processing_mode: StreamProcessingMode::Sync,
                    });
                }),
                AgentError::BadGuardrailIdentifier,
            ),
            (
                Box::new(|s| {
                    s.guardrail = Some(GuardrailSettings {
                        identifier: "abc".into(),
                        version: "01".into(),
                        trace: GuardrailTrace::Enabled,
                        stream_processing_mode: StreamProcessingMode::Sync,
                    });
                }),
                AgentError::BadGuardrailVersion,
            ),
            (
                Box::new(|s| {
                    s.model = Some("us.anthropic.claude-sonnet-4-6".into());
                    s.inference.latency = Some(Latency::Optimized);
                }),
                AgentError::LatencyUnsupported("us.anthropic.claude-sonnet-4-6".into()),
            ),
            (
                Box::new(|s| s.voice.language = Some("english".into())),
                AgentError::Voice(VoiceError::BadValue {
                    field: "voice.language".into(),
                    expected: "a BCP 47 language tag such as en-US, or multi",
                }),
            ),
        ];
        for (change, expected) in cases {
            let mut spec = spec();
            change(&mut spec);
            assert_eq!(spec.validate(), Err(expected.clone()), "{expected:?}");
        }
    }

    #[test]
    fn each_problem_names_its_field_by_json_path() {
        let mut spec = spec();
        let cases = [
            (AgentError::BadName, "name"),
            (AgentError::BadSystemPrompt, "system_prompt"),
            (AgentError::BadGreeting, "greeting"),
            (AgentError::ChainTooLong, "fallback_models"),
            (AgentError::BadMaxTokens, "inference.max_tokens"),
            (AgentError::BadTemperature, "inference.temperature"),
            (AgentError::BadTopP, "inference.top_p"),
            (AgentError::BadStopSequences, "inference.stop_sequences"),
            (AgentError::BadPhoneNumber("1".into()), "phone_numbers"),
            (AgentError::BadPhoneNumbers, "phone_numbers"),
            (AgentError::BadLine("idle_goodbye"), "idle_goodbye"),
            (AgentError::BadVoicemail, "voicemail_message"),
            (AgentError::BadIdleSeconds, "idle_reprompt_secs"),
            (AgentError::BadGuardrailVersion, "guardrail.version"),
            (
                AgentError::LatencyUnsupported("m".into()),
                "inference.latency",
            ),
            (
                AgentError::Voice(VoiceError::Contradiction {
                    field: "voice.elevenlabs_text_normalization".into(),
                    other: "voice.tts_provider".into(),
                    why: "x",
                }),
                "voice.elevenlabs_text_normalization",
            ),
        ];
        for (error, field) in cases {
            assert_eq!(spec.field_of(&error), field, "{error:?}");
        }
        // A bad model id is the agent's own model, or one of its fallbacks.
        spec.model = Some("bad model".into());
        spec.fallback_models = Some(vec!["bad fallback".into()]);
        assert_eq!(
            spec.validate(),
            Err(AgentError::BadModel("bad model".into()))
        );
        assert_eq!(
            spec.field_of(&AgentError::BadModel("bad model".into())),
            "model"
        );
        spec.model = Some("good".into());
        let error = spec.validate().expect_err("the fallback is bad");
        assert_eq!(spec.field_of(&error), "fallback_models");
    }

    #[test]
    fn model_ids_and_numbers() {
        for ok in [
            "anthropic.claude-3-haiku-20240307-v1:0",
            "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude",
        ] {
            assert!(is_model_id(ok), "{ok}");
        }
        assert!(!is_model_id(""));
        assert!(!is_model_id("a b"));
        assert!(is_e164("+14155550100"));
        assert!(is_e164("+4930123456"));
        for bad in [
            "+0123456789",
            "+12345",
            "14155550100",
            "+1415555010a",
            "+1234567890123456",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn the_chain_is_the_model_then_fallbacks_without_repeats() {
        let defaults: Vec<String> = vec!["d1".into(), "d2".into()];
        let mut spec = spec();
        assert_eq!(spec.model_chain(&defaults), vec!["d1", "d2"]);
        spec.model = Some("m".into());
        assert_eq!(spec.model_chain(&defaults), vec!["m", "d1", "d2"]);
        spec.fallback_models = Some(vec!["f".into(), "m".into()]);
        assert_eq!(spec.model_chain(&defaults), vec!["m", "f"]);
        spec.fallback_models = Some(vec![]);
        assert_eq!(spec.model_chain(&defaults), vec!["m"]);
    }

    #[test]
    fn agent_json_flattens_the_spec() {
        let agent = Agent {
            id: "a1".into(),
            tenant_id: "t1".into(),
            spec: spec(),
            version: 1,
            created_at_ms: 5,
            updated_at_ms: 6,
        };
        let json = serde_json::to_value(&agent).expect("serialises");
        assert_eq!(json["name"], "Front desk");
        assert_eq!(json["inference"]["max_tokens"], 512);
        let back: Agent = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, agent);
    }
}
