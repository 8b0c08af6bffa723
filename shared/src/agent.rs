//! Agents: who answers a call — system prompt, greeting, model chain, inference settings,
//! voice and the phone numbers that reach it. The origin's `/v1/agents` speaks these types.

use serde::{Deserialize, Serialize};

use crate::identifier::{self, MAX_LEN as MAX_ID_LEN};

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
}

impl Default for InferenceSettings {
    fn default() -> Self {
        Self {
            max_tokens: DEFAULT_MAX_TOKENS,
            temperature: None,
            top_p: None,
            stop_sequences: Vec::new(),
        }
    }
}

fn default_max_tokens() -> u32 {
    DEFAULT_MAX_TOKENS
}

/// How the carrier speaks and listens for this agent (TwiML `<ConversationRelay>` attributes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceSettings {
    /// TTS voice, e.g. `en-US-Journey-O`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// BCP 47 language, e.g. `en-US`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// TTS provider, e.g. `Google`, `ElevenLabs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tts_provider: Option<String>,
    /// Speech-recognition provider, e.g. `Deepgram`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcription_provider: Option<String>,
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
}

impl AgentSpec {
    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), AgentError> {
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
        Ok(())
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
        assert_eq!(spec.validate(), Ok(()));
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
        ];
        for (change, expected) in cases {
            let mut spec = spec();
            change(&mut spec);
            assert_eq!(spec.validate(), Err(expected.clone()), "{expected:?}");
        }
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
