//! [`LlmClient`] over `aws-sdk-bedrockruntime` `ConverseStream`.
//!
//! SDK settings, chosen for voice (a caller cannot wait seconds):
//! - **No SDK retries** (`max_attempts = 1`). The standard retry strategy backs off for
//!   hundreds of milliseconds and retries the same model; a throttled voice turn is better
//!   served by the next model of the agent's chain at once. The turn engine owns that policy
//!   (`shared::model::recovery`), including one immediate retry of the same model after a
//!   connection blip.
//! - **Connect timeout** from `BEDROCK_CONNECT_TIMEOUT_MS` (default 1 s).
//! - **Stalled-stream protection**: the SDK installs it for upload/download bodies but not for
//!   event-stream operations like ConverseStream (checked in the 1.153 sources), so it cannot
//!   guard a reply. The turn engine enforces a first-token deadline and an inter-event stall
//!   deadline itself; the SDK setting is left enabled with the stall deadline as its grace for
//!   any other operation.
//! - HTTPS through rustls with ring; credentials from the standard chain (the ECS task role in
//!   production).

use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::Region;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError;
use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use aws_sdk_bedrockruntime::types::{
    CachePointBlock, CachePointType, ContentBlock, ContentBlockDelta, ContentBlockStart,
    ConversationRole, ConverseStreamOutput, GuardrailStreamConfiguration,
    GuardrailStreamProcessingMode, GuardrailTrace, InferenceConfiguration, Message,
    PerformanceConfigLatency, PerformanceConfiguration, SystemContentBlock, Tool,
    ToolConfiguration, ToolInputSchema, ToolResultBlock, ToolResultContentBlock, ToolResultStatus,
    ToolSpecification, ToolUseBlock,
};
use aws_smithy_http_client::tls;
use aws_smithy_types::{Document, Number};
use shared::conversation::Speaker;
use shared::model::ModelFailure;
use shared::turn::Usage;

use super::{
    LlmClient, LlmError, LlmEvent, LlmReadiness, LlmRequest, LlmStream, ToolResultContent,
    ToolRound, ToolUse,
};
use crate::config::BedrockConfig;

/// The Bedrock client.
#[derive(Clone)]
pub struct BedrockClient {
    client: Client,
    credentials: Option<SharedCredentialsProvider>,
    description: String,
}

impl BedrockClient {
    /// A client with the standard AWS credential chain.
    pub async fn from_config(config: &BedrockConfig) -> Self {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .http_client(http_client())
            .load()
            .await;
        let credentials = sdk.credentials_provider();
        let client = Client::from_conf(
            settings(aws_sdk_bedrockruntime::config::Builder::from(&sdk), config).build(),
        );
        Self::assemble(client, credentials, config)
    }

    /// A client with the given credentials (tests, the load generator, the local emulator).
    pub fn with_credentials(
        config: &BedrockConfig,
        credentials: impl ProvideCredentials + 'static,
    ) -> Self {
        let credentials = SharedCredentialsProvider::new(credentials);
        let builder = aws_sdk_bedrockruntime::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .http_client(http_client())
            .credentials_provider(credentials.clone());
        let client = Client::from_conf(settings(builder, config).build());
        Self::assemble(client, Some(credentials), config)
    }

    fn assemble(
        client: Client,
        credentials: Option<SharedCredentialsProvider>,
        config: &BedrockConfig,
    ) -> Self {
        let description = match &config.endpoint_url {
            Some(endpoint) => format!("region {} via {endpoint}", config.region),
            None => format!("region {}", config.region),
        };
        Self {
            client,
            credentials,
            description,
        }
    }
}

fn http_client() -> aws_sdk_bedrockruntime::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

fn settings(
    builder: aws_sdk_bedrockruntime::config::Builder,
    config: &BedrockConfig,
) -> aws_sdk_bedrockruntime::config::Builder {
    let mut builder = builder
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(config.connect_timeout)
                .build(),
        )
        .stalled_stream_protection(
            StalledStreamProtectionConfig::enabled()
                .grace_period(config.stall_timeout)
                .build(),
        );
    if let Some(endpoint) = &config.endpoint_url {
        builder = builder.endpoint_url(endpoint);
    }
    builder
}

#[async_trait]
impl LlmClient for BedrockClient {
    async fn converse_stream(&self, request: LlmRequest) -> Result<Box<dyn LlmStream>, LlmError> {
        let mut system = vec![SystemContentBlock::Text(request.system_prompt)];
        if request.prompt_caching {
            let cache_point = CachePointBlock::builder()
                .r#type(CachePointType::Default)
                .build()
                .map_err(|error| LlmError::new(ModelFailure::Invalid, error.to_string()))?;
            system.push(SystemContentBlock::CachePoint(cache_point));
        }
        if let Some(note) = request.system_note {
            system.push(SystemContentBlock::Text(note));
        }
        let mut messages = Vec::with_capacity(request.messages.len());
        for message in request.messages {
            let role = match message.speaker {
                Speaker::User => ConversationRole::User,
                Speaker::Assistant => ConversationRole::Assistant,
            };
            messages.push(
                Message::builder()
                    .role(role)
                    .content(ContentBlock::Text(message.text))
                    .build()
                    .map_err(|error| LlmError::new(ModelFailure::Invalid, error.to_string()))?,
            );
        }
        for round in request.rounds {
            messages.extend(round_messages(round).map_err(invalid)?);
        }
        let tool_config = tool_configuration(&request.tools).map_err(invalid)?;
        let settings = request.inference;
        let mut inference = InferenceConfiguration::builder()
            .max_tokens(i32::try_from(settings.max_tokens).unwrap_or(i32::MAX))
            .set_temperature(settings.temperature)
            .set_top_p(settings.top_p);
        for stop in settings.stop_sequences {
            inference = inference.stop_sequences(stop);
        }
        let guardrail = request.guardrail.map(|guardrail| {
            GuardrailStreamConfiguration::builder()
                .guardrail_identifier(guardrail.identifier)
                .guardrail_version(guardrail.version)
                .trace(GuardrailTrace::from(guardrail.trace.as_str()))
                .stream_processing_mode(GuardrailStreamProcessingMode::from(
                    guardrail.stream_processing_mode.as_str(),
                ))
                .build()
        });
        let performance = request.latency_optimized.then(|| {
            PerformanceConfiguration::builder()
                .latency(PerformanceConfigLatency::Optimized)
                .build()
        });
        let output = self
            .client
            .converse_stream()
            .model_id(request.model)
            .set_system(Some(system))
            .set_messages(Some(messages))
            .inference_config(inference.build())
            .set_guardrail_config(guardrail)
            .set_performance_config(performance)
            .set_tool_config(tool_config)
            .send()
            .await
            .map_err(classify_send)?;
        Ok(Box::new(BedrockStream {
            receiver: output.stream,
            stop_reason: None,
            tool_uses: Vec::new(),
        }))
    }

    async fn readiness(&self) -> LlmReadiness {
        let Some(credentials) = &self.credentials else {
            return LlmReadiness {
                ok: false,
                detail: format!("{}: no AWS credentials provider", self.description),
            };
        };
        match tokio::time::timeout(Duration::from_secs(2), credentials.provide_credentials()).await
        {
            Ok(Ok(_)) => LlmReadiness {
                ok: true,
                detail: self.description.clone(),
            },
            Ok(Err(error)) => LlmReadiness {
                ok: false,
                detail: format!("{}: no AWS credentials: {error}", self.description),
            },
            Err(_) => LlmReadiness {
                ok: false,
                detail: format!(
                    "{}: AWS credentials did not resolve within 2 s",
                    self.description
                ),
            },
        }
    }
}

fn invalid(error: aws_smithy_types::error::operation::BuildError) -> LlmError {
    LlmError::new(ModelFailure::Invalid, error.to_string())
}

/// `toolConfig` for the tools offered; none when there are none.
fn tool_configuration(
    tools: &[shared::agent::tools::ToolDefinition],
) -> Result<Option<ToolConfiguration>, aws_smithy_types::error::operation::BuildError> {
    if tools.is_empty() {
        return Ok(None);
    }
    let mut specs = Vec::with_capacity(tools.len());
    for tool in tools {
        specs.push(Tool::ToolSpec(
            ToolSpecification::builder()
                .name(&tool.name)
                .description(&tool.description)
                .input_schema(ToolInputSchema::Json(document(&tool.input_schema)))
                .build()?,
        ));
    }
    ToolConfiguration::builder()
        .set_tools(Some(specs))
        .build()
        .map(Some)
}

/// A round as Converse messages: the assistant's text and `toolUse` blocks, then the user's
/// `toolResult` blocks.
fn round_messages(
    round: ToolRound,
) -> Result<[Message; 2], aws_smithy_types::error::operation::BuildError> {
    let mut asked = Vec::with_capacity(round.uses.len() + 1);
    if !round.said.trim().is_empty() {
        asked.push(ContentBlock::Text(round.said));
    }
    for tool_use in round.uses {
        asked.push(ContentBlock::ToolUse(
            ToolUseBlock::builder()
                .tool_use_id(tool_use.id)
                .name(tool_use.name)
                .input(document(&tool_use.input))
                .build()?,
        ));
    }
    let mut answered = Vec::with_capacity(round.results.len());
    for result in round.results {
        let (content, status) = match result.content {
            ToolResultContent::Json(value) => (
                ToolResultContentBlock::Json(document(&value)),
                ToolResultStatus::Success,
            ),
            ToolResultContent::Error(text) => {
                (ToolResultContentBlock::Text(text), ToolResultStatus::Error)
            }
        };
        answered.push(ContentBlock::ToolResult(
            ToolResultBlock::builder()
                .tool_use_id(result.id)
                .content(content)
                .status(status)
                .build()?,
        ));
    }
    Ok([
        Message::builder()
            .role(ConversationRole::Assistant)
            .set_content(Some(asked))
            .build()?,
        Message::builder()
            .role(ConversationRole::User)
            .set_content(Some(answered))
            .build()?,
    ])
}

/// A JSON value as the SDK's document type.
fn document(value: &serde_json::Value) -> Document {
    match value {
        serde_json::Value::Null => Document::Null,
        serde_json::Value::Bool(flag) => Document::Bool(*flag),
        serde_json::Value::Number(number) => Document::Number(
            number
                .as_u64()
                .map(Number::PosInt)
                .or_else(|| number.as_i64().map(Number::NegInt))
                .unwrap_or_else(|| Number::Float(number.as_f64().unwrap_or(0.0))),
        ),
        serde_json::Value::String(text) => Document::String(text.clone()),
        serde_json::Value::Array(items) => Document::Array(items.iter().map(document).collect()),
        serde_json::Value::Object(map) => Document::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), document(value)))
                .collect(),
        ),
    }
}

/// A `toolUse` block being streamed: its id, name and the input's JSON text so far.
struct PendingToolUse {
    index: i32,
    id: String,
    name: String,
    input: String,
}

struct BedrockStream {
    receiver: EventReceiver<ConverseStreamOutput, ConverseStreamOutputError>,
    stop_reason: Option<String>,
    tool_uses: Vec<PendingToolUse>,
}

#[async_trait]
impl LlmStream for BedrockStream {
    async fn next(&mut self) -> Result<Option<LlmEvent>, LlmError> {
        loop {
            let event = self.receiver.recv().await.map_err(classify_stream)?;
            match event {
                None => {
                    // A stream that ends without its metadata still ended.
                    return Ok(self
                        .stop_reason
                        .take()
                        .map(|stop_reason| LlmEvent::Finished {
                            stop_reason,
                            usage: None,
                            guardrail_trace: None,
                        }));
                }
                Some(ConverseStreamOutput::ContentBlockStart(start)) => {
                    if let Some(ContentBlockStart::ToolUse(tool_use)) = start.start {
                        self.tool_uses.push(PendingToolUse {
                            index: start.content_block_index,
                            id: tool_use.tool_use_id,
                            name: tool_use.name,
                            input: String::new(),
                        });
                    }
                }
                Some(ConverseStreamOutput::ContentBlockDelta(delta)) => match delta.delta {
                    Some(ContentBlockDelta::Text(text)) if !text.is_empty() => {
                        return Ok(Some(LlmEvent::Text(text)));
                    }
                    Some(ContentBlockDelta::ToolUse(piece)) => {
                        if let Some(pending) = self
                            .tool_uses
                            .iter_mut()
                            .find(|p| p.index == delta.content_block_index)
                        {
                            pending.input.push_str(&piece.input);
                        }
                    }
                    _ => {}
                },
                Some(ConverseStreamOutput::ContentBlockStop(stop)) => {
                    if let Some(at) = self
                        .tool_uses
                        .iter()
                        .position(|p| p.index == stop.content_block_index)
                    {
                        let pending = self.tool_uses.remove(at);
                        // A tool without parameters streams no input at all.
                        let input = if pending.input.trim().is_empty() {
                            serde_json::json!({})
                        } else {
                            serde_json::from_str(&pending.input).map_err(|error| {
                                LlmError::new(
                                    ModelFailure::StreamError,
                                    format!("tool input of {} is not JSON: {error}", pending.name),
                                )
                            })?
                        };
                        return Ok(Some(LlmEvent::ToolUse(ToolUse {
                            id: pending.id,
                            name: pending.name,
                            input,
                        })));
                    }
                }
                Some(ConverseStreamOutput::MessageStop(stop)) => {
                    self.stop_reason = Some(stop.stop_reason.as_str().to_owned());
                }
                Some(ConverseStreamOutput::Metadata(metadata)) => {
                    let usage = metadata.usage.map(|usage| Usage {
                        input_tokens: u32::try_from(usage.input_tokens).unwrap_or(0),
                        output_tokens: u32::try_from(usage.output_tokens).unwrap_or(0),
                    });
                    let guardrail_trace =
                        metadata
                            .trace
                            .and_then(|trace| trace.guardrail)
                            .map(|assessment| {
                                assessment
                                    .action_reason
                                    .unwrap_or_else(|| "assessed".to_owned())
                            });
                    return Ok(Some(LlmEvent::Finished {
                        stop_reason: self
                            .stop_reason
                            .take()
                            .unwrap_or_else(|| shared::turn::END_TURN.to_owned()),
                        usage,
                        guardrail_trace,
                    }));
                }
                Some(_) => {}
            }
        }
    }
}

/// Maps a failure of the initial request.
fn classify_send(
    error: SdkError<ConverseStreamError, aws_sdk_bedrockruntime::config::http::HttpResponse>,
) -> LlmError {
    let detail = format!(
        "{}",
        aws_sdk_bedrockruntime::error::DisplayErrorContext(&error)
    );
    let failure = match &error {
        SdkError::ServiceError(context) => match context.err() {
            ConverseStreamError::ThrottlingException(_) => ModelFailure::Throttled,
            ConverseStreamError::ModelNotReadyException(_) => ModelFailure::NotReady,
            ConverseStreamError::ModelTimeoutException(_) => ModelFailure::Timeout,
            ConverseStreamError::InternalServerException(_)
            | ConverseStreamError::ModelErrorException(_)
            | ConverseStreamError::ModelStreamErrorException(_) => ModelFailure::ServerError,
            ConverseStreamError::ServiceUnavailableException(_) => ModelFailure::Unavailable,
            ConverseStreamError::ResourceNotFoundException(_)
            | ConverseStreamError::AccessDeniedException(_) => ModelFailure::ModelUnavailable,
            ConverseStreamError::ValidationException(_) => ModelFailure::Invalid,
            other => by_status(context.raw().status().as_u16(), other.code()),
        },
        SdkError::TimeoutError(_) => ModelFailure::Timeout,
        SdkError::DispatchFailure(failure) if failure.is_timeout() => ModelFailure::Timeout,
        SdkError::DispatchFailure(_) => ModelFailure::Connection,
        SdkError::ResponseError(_) => ModelFailure::ServerError,
        SdkError::ConstructionFailure(_) => ModelFailure::Invalid,
        _ => ModelFailure::ServerError,
    };
    LlmError::new(failure, detail)
}

/// Maps an exception inside the stream, or a broken stream.
fn classify_stream(
    error: SdkError<ConverseStreamOutputError, aws_smithy_types::event_stream::RawMessage>,
) -> LlmError {
    let detail = format!(
        "{}",
        aws_sdk_bedrockruntime::error::DisplayErrorContext(&error)
    );
    let failure = match &error {
        SdkError::ServiceError(context) => match context.err() {
            ConverseStreamOutputError::ThrottlingException(_) => ModelFailure::Throttled,
            ConverseStreamOutputError::ServiceUnavailableException(_) => ModelFailure::Unavailable,
            ConverseStreamOutputError::ValidationException(_) => ModelFailure::Invalid,
            _ => ModelFailure::StreamError,
        },
        SdkError::TimeoutError(_) => ModelFailure::Stalled,
        _ => ModelFailure::StreamError,
    };
    LlmError::new(failure, detail)
}

/// An unmodelled error, judged by its status and code.
fn by_status(status: u16, code: Option<&str>) -> ModelFailure {
    match (status, code) {
        (_, Some("ThrottlingException")) | (429, _) => ModelFailure::Throttled,
        (408, _) => ModelFailure::Timeout,
        (503, _) => ModelFailure::Unavailable,
        (500..=599, _) => ModelFailure::ServerError,
        (403 | 404, _) => ModelFailure::ModelUnavailable,
        _ => ModelFailure::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_become_documents() {
        let value = serde_json::json!({"a": [1, -2, 2.5, true, null, "x"], "b": {}});
        let Document::Object(map) = document(&value) else {
            panic!("an object");
        };
        assert_eq!(
            map.get("a"),
            Some(&Document::Array(vec![
                Document::Number(Number::PosInt(1)),
                Document::Number(Number::NegInt(-2)),
                Document::Number(Number::Float(2.5)),
                Document::Bool(true),
                Document::Null,
                Document::String("x".into()),
            ]))
        );
        assert_eq!(map.get("b"), Some(&Document::Object(Default::default())));
    }

    #[test]
    fn unmodelled_errors_are_judged_by_status() {
        assert_eq!(by_status(429, None), ModelFailure::Throttled);
        assert_eq!(
            by_status(400, Some("ThrottlingException")),
            ModelFailure::Throttled
        );
        assert_eq!(by_status(502, None), ModelFailure::ServerError);
        assert_eq!(by_status(503, None), ModelFailure::Unavailable);
        assert_eq!(by_status(404, None), ModelFailure::ModelUnavailable);
        assert_eq!(by_status(400, None), ModelFailure::Invalid);
    }
}
