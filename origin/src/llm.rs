//! The model behind the conversation, behind a trait so handlers never see SDK types and router
//! tests can script a fake. [`bedrock::BedrockClient`] is the real one.

use async_trait::async_trait;
use shared::agent::tools::ToolDefinition;
use shared::agent::{GuardrailSettings, InferenceSettings};
use shared::conversation::Message;
use shared::model::ModelFailure;
use shared::turn::Usage;

pub mod bedrock;

/// One streamed completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    /// Bedrock model id or inference profile.
    pub model: String,
    /// The agent's system prompt (the cacheable part).
    pub system_prompt: String,
    /// Per-call system text after the cache point (e.g. the greeting already spoken).
    pub system_note: Option<String>,
    /// Alternating messages, first and last from the user.
    pub messages: Vec<Message>,
    /// Inference parameters.
    pub inference: InferenceSettings,
    /// Mark the system prompt as a prompt-cache prefix.
    pub prompt_caching: bool,
    /// A Bedrock guardrail to apply (`guardrailConfig`).
    pub guardrail: Option<GuardrailSettings>,
    /// Ask for latency-optimized inference (`performanceConfig`); set only for models that
    /// offer it.
    pub latency_optimized: bool,
    /// The tools offered (`toolConfig`); none when empty.
    pub tools: Vec<ToolDefinition>,
    /// This turn's tool rounds so far, after `messages`: what the model said and asked for, then
    /// the results it is given.
    pub rounds: Vec<ToolRound>,
}

/// One round of tool use inside a turn: an assistant message (its text, its `toolUse` blocks)
/// and the user message answering every call (`toolResult` blocks).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRound {
    /// What the model said before asking (may be empty).
    pub said: String,
    /// The calls, in the model's order.
    pub uses: Vec<ToolUse>,
    /// One result per call, same order.
    pub results: Vec<ToolResult>,
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolUse {
    /// `toolUseId`.
    pub id: String,
    /// The tool.
    pub name: String,
    /// Its input (an object).
    pub input: serde_json::Value,
}

/// The answer to a [`ToolUse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// `toolUseId` of the call answered.
    pub id: String,
    /// A JSON object (success) or a sentence (an error the model may tell the caller about).
    pub content: ToolResultContent,
}

/// What a tool result holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolResultContent {
    /// `status: success`, `content: [{json}]`.
    Json(serde_json::Value),
    /// `status: error`, `content: [{text}]`.
    Error(String),
}

/// What a stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmEvent {
    /// A piece of reply text.
    Text(String),
    /// A complete `toolUse` block (its input assembled from the streamed pieces).
    ToolUse(ToolUse),
    /// The end of the reply: why it stopped and what it used (when reported).
    Finished {
        /// `end_turn`, `max_tokens`, `stop_sequence`, `guardrail_intervened`, …
        stop_reason: String,
        /// Tokens used.
        usage: Option<Usage>,
        /// What the guardrail trace said, when a guardrail assessed the reply (for the log).
        guardrail_trace: Option<String>,
    },
}

/// A failed model call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", failure.as_str())]
pub struct LlmError {
    /// The kind of failure, which decides the fallback.
    pub failure: ModelFailure,
    /// For the log.
    pub detail: String,
}

impl LlmError {
    /// An error of `failure` with a detail.
    pub fn new(failure: ModelFailure, detail: impl Into<String>) -> Self {
        Self {
            failure,
            detail: detail.into(),
        }
    }
}

/// A reply being streamed. Dropping it cancels the request (the connection is closed).
#[async_trait]
pub trait LlmStream: Send {
    /// The next event; `Ok(None)` after the stream ended.
    async fn next(&mut self) -> Result<Option<LlmEvent>, LlmError>;
}

/// What `/ready` reports about the model configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmReadiness {
    /// Whether requests can be sent (region and credentials resolved).
    pub ok: bool,
    /// Region and endpoint, or why not.
    pub detail: String,
}

/// A streaming model client.
#[async_trait]
pub trait LlmClient: Send + Sync {
    /// Starts a streamed reply; resolves once the model accepted the request.
    async fn converse_stream(&self, request: LlmRequest) -> Result<Box<dyn LlmStream>, LlmError>;
    /// Whether the client is configured well enough to send requests.
    async fn readiness(&self) -> LlmReadiness;
}
