//! A Bedrock Runtime emulator for tests and benchmarks: it answers `ConverseStream` in the real
//! wire format (`application/vnd.amazon.eventstream` frames with their CRCs, written by
//! `aws-smithy-eventstream`), so the origin talks to it through the real AWS SDK.
//!
//! Model behaviour — time to first token, inter-token delay, reply, usage, faults and guardrail
//! interventions — is set per model over a control API on the same port; it counts requests,
//! completions and cancellations per model so tests can assert that fallbacks and
//! interruptions happened, and echoes the `guardrailConfig` and `performanceConfig` each model
//! last received.
//!
//! | route | does |
//! | --- | --- |
//! | `POST /model/{model}/converse-stream` | Bedrock's ConverseStream |
//! | `PUT /control/models/{model}` | set a [`ModelScript`] |
//! | `DELETE /control/models/{model}` | back to the default script |
//! | `GET /control/stats` | [`Stats`] per model |
//! | `GET /control/models/{model}/requests` | the last request bodies the model received |
//! | `POST /control/reset` | forget scripts, counters and recorded requests |
//! | `GET /health` | 200 |

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_smithy_types::event_stream::{Header, HeaderValue as FrameHeaderValue, Message};
use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub mod script;

pub use script::{Fault, FaultKind, GuardrailScript, ModelScript, ScriptedUsage, word_tokens};

/// Request bodies kept per model for inspection.
const KEPT_REQUESTS: usize = 64;

/// Counters of one model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelStats {
    /// ConverseStream requests received.
    pub requests: u64,
    /// Streams sent to the end.
    pub completed: u64,
    /// Streams the client abandoned before the end (connection closed).
    pub cancelled: u64,
    /// Requests answered with a fault.
    pub faulted: u64,
    /// Streams open right now.
    pub in_flight: u64,
    /// Requests that carried a SigV4 `Authorization` header.
    pub signed: u64,
    /// Requests that carried a `guardrailConfig`.
    #[serde(default)]
    pub guarded: u64,
    /// Streams a guardrail ended (`stopReason: guardrail_intervened`).
    #[serde(default)]
    pub guardrail_interventions: u64,
    /// Requests that asked for `performanceConfig.latency = optimized`.
    #[serde(default)]
    pub latency_optimized: u64,
    /// The last `guardrailConfig` received, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_guardrail_config: Option<serde_json::Value>,
    /// The last `performanceConfig` received, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_performance_config: Option<serde_json::Value>,
}

/// `GET /control/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Counters by model id.
    pub models: BTreeMap<String, ModelStats>,
}

#[derive(Default)]
struct Inner {
    scripts: HashMap<String, ModelScript>,
    stats: BTreeMap<String, ModelStats>,
    requests: HashMap<String, VecDeque<serde_json::Value>>,
}

/// The emulator's shared state.
#[derive(Clone)]
pub struct Emulator {
    default_script: Arc<ModelScript>,
    inner: Arc<Mutex<Inner>>,
}

impl Emulator {
    /// An emulator whose unscripted models behave like `default_script`.
    pub fn new(default_script: ModelScript) -> Self {
        Self {
            default_script: Arc::new(default_script),
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind; keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets a model's behaviour.
    pub fn set_script(&self, model: &str, script: ModelScript) {
        self.lock().scripts.insert(model.to_owned(), script);
    }

    /// Counters per model.
    pub fn stats(&self) -> Stats {
        Stats {
            models: self.lock().stats.clone(),
        }
    }

    /// Counters of one model (zero when it was never asked).
    pub fn model_stats(&self, model: &str) -> ModelStats {
        self.lock().stats.get(model).cloned().unwrap_or_default()
    }

    /// The request bodies a model received, oldest first (at most the last 64).
    pub fn requests(&self, model: &str) -> Vec<serde_json::Value> {
        self.lock()
            .requests
            .get(model)
            .map(|kept| kept.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Starts a request: counts it, records its body, and decides whether a fault applies.
    fn begin(
        &self,
        model: &str,
        body: serde_json::Value,
        signed: bool,
    ) -> (ModelScript, Option<Fault>) {
        let mut inner = self.lock();
        let stats = inner.stats.entry(model.to_owned()).or_default();
        stats.requests += 1;
        if signed {
            stats.signed += 1;
        }
        if let Some(guardrail) = body.get("guardrailConfig") {
            stats.guarded += 1;
            stats.last_guardrail_config = Some(guardrail.clone());
        }
        if let Some(performance) = body.get("performanceConfig") {
            if performance
                .get("latency")
                .and_then(serde_json::Value::as_str)
                == Some("optimized")
            {
                stats.latency_optimized += 1;
            }
            stats.last_performance_config = Some(performance.clone());
        }
        let kept = inner.requests.entry(model.to_owned()).or_default();
        if kept.len() == KEPT_REQUESTS {
            kept.pop_front();
        }
        kept.push_back(body);
        let script = inner
            .scripts
            .get(model)
            .cloned()
            .unwrap_or_else(|| (*self.default_script).clone());
        let fault = match script.fault.clone() {
            Some(fault) => match fault.times {
                None => Some(fault),
                Some(0) => None,
                Some(times) => {
                    if let Some(stored) =
                        inner.scripts.get_mut(model).and_then(|s| s.fault.as_mut())
                    {
                        stored.times = Some(times - 1);
                    }
                    Some(fault)
                }
            },
            None => None,
        };
        if fault.is_some() {
            inner.stats.entry(model.to_owned()).or_default().faulted += 1;
        }
        (script, fault)
    }

    fn count(&self, model: &str, change: impl FnOnce(&mut ModelStats)) {
        change(self.lock().stats.entry(model.to_owned()).or_default());
    }
}

/// The emulator's routes.
pub fn app(emulator: Emulator) -> Router {
    Router::new()
        .route("/model/{model}/converse-stream", post(converse_stream))
        .route(
            "/control/models/{model}",
            put(set_script).delete(clear_script),
        )
        .route("/control/models/{model}/requests", get(recorded_requests))
        .route("/control/stats", get(stats))
        .route("/control/reset", post(reset))
        .route("/health", get(|| async { "ok" }))
        .with_state(emulator)
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    emulator: Emulator,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(emulator))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Starts an emulator on a free loopback port in the background; returns its base URL.
pub async fn spawn(emulator: Emulator) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = serve(listener, emulator, std::future::pending()).await {
            tracing::error!(%error, "emulator stopped");
        }
    });
    Ok(format!("http://{addr}"))
}

async fn set_script(
    State(emulator): State<Emulator>,
    Path(model): Path<String>,
    Json(script): Json<ModelScript>,
) -> StatusCode {
    emulator.set_script(&model, script);
    StatusCode::NO_CONTENT
}

async fn clear_script(State(emulator): State<Emulator>, Path(model): Path<String>) -> StatusCode {
    emulator.lock().scripts.remove(&model);
    StatusCode::NO_CONTENT
}

async fn recorded_requests(
    State(emulator): State<Emulator>,
    Path(model): Path<String>,
) -> Json<Vec<serde_json::Value>> {
    Json(emulator.requests(&model))
}

async fn stats(State(emulator): State<Emulator>) -> Json<Stats> {
    Json(emulator.stats())
}

async fn reset(State(emulator): State<Emulator>) -> StatusCode {
    *emulator.lock() = Inner::default();
    StatusCode::NO_CONTENT
}

/// The parts of a Converse request the emulator reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ConverseRequest {
    messages: Vec<RequestMessage>,
    system: Vec<serde_json::Value>,
    inference_config: InferenceConfig,
    guardrail_config: Option<GuardrailConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct GuardrailConfig {
    trace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RequestMessage {
    role: String,
    content: Vec<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct InferenceConfig {
    max_tokens: Option<usize>,
    stop_sequences: Vec<String>,
}

fn block_text(block: &serde_json::Value) -> &str {
    block
        .get("text")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
}

async fn converse_stream(
    State(emulator): State<Emulator>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(_) => return http_error(400, "ValidationException", "request body is not JSON"),
    };
    let signed = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 "));
    let (script, fault) = emulator.begin(&model, value.clone(), signed);
    if let Some(fault) = &fault
        && let Some((status, kind)) = fault.kind.http_error()
    {
        // Real Bedrock answers these after a short think; keep the script's TTFT as that delay
        // only for timeouts, answer the rest at once.
        if fault.kind == FaultKind::ModelTimeout {
            tokio::time::sleep(Duration::from_millis(script.ttft_ms)).await;
        }
        return http_error(status, kind, "emulated fault");
    }
    let request: ConverseRequest = serde_json::from_value(value).unwrap_or_default();
    if request.messages.is_empty() {
        return http_error(400, "ValidationException", "messages must not be empty");
    }
    let plan = Plan::new(&model, &script, &request);

    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(32);
    emulator.count(&model, |s| s.in_flight += 1);
    let task_emulator = emulator.clone();
    tokio::spawn(async move {
        let outcome = plan.run(&tx, started, fault.as_ref()).await;
        task_emulator.count(&model, |s| {
            s.in_flight -= 1;
            match outcome {
                Outcome::Completed => s.completed += 1,
                Outcome::Intervened => {
                    s.completed += 1;
                    s.guardrail_interventions += 1;
                }
                Outcome::Cancelled => s.cancelled += 1,
                Outcome::Faulted => {}
            }
        });
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    response.headers_mut().insert(
        "x-amzn-requestid",
        HeaderValue::from_static("00000000-0000-0000-0000-emulator0000"),
    );
    response
}

/// What a stream will say, decided before it starts.
struct Plan {
    tokens: Vec<String>,
    stop_reason: &'static str,
    input_tokens: u32,
    output_tokens: u32,
    ttft: Duration,
    inter_token: Duration,
    /// The guardrail's `trace.guardrail`, when it intervenes and the request asked for traces.
    guardrail_trace: Option<serde_json::Value>,
}

enum Outcome {
    Completed,
    Intervened,
    Cancelled,
    Faulted,
}

impl Plan {
    fn new(model: &str, script: &ModelScript, request: &ConverseRequest) -> Self {
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| {
                m.content
                    .iter()
                    .map(block_text)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let mut tokens = match (&script.tokens, &script.reply) {
            (Some(tokens), _) => tokens.clone(),
            (None, Some(reply)) => word_tokens(reply),
            (None, None) => word_tokens(&echo(model, request.messages.len(), &last_user)),
        };
        let mut stop_reason = "end_turn";
        if let Some(cut) = stop_cut(&tokens, &request.inference_config.stop_sequences) {
            tokens = cut;
            stop_reason = "stop_sequence";
        }
        if let Some(max) = request.inference_config.max_tokens
            && tokens.len() > max
        {
            tokens.truncate(max);
            stop_reason = "max_tokens";
        }
        // A guardrail intervenes only where the request names one, as on Bedrock.
        let mut guardrail_trace = None;
        if let (Some(guardrail), Some(config)) = (&script.guardrail, &request.guardrail_config) {
            let passed: Vec<String> = tokens
                .iter()
                .take(guardrail.after_tokens)
                .cloned()
                .collect();
            let model_output = tokens.concat();
            tokens = passed;
            tokens.push(guardrail.message.clone());
            stop_reason = "guardrail_intervened";
            if config.trace.as_deref() != Some("disabled") {
                guardrail_trace = Some(serde_json::json!({
                    "modelOutput": [model_output],
                    "outputAssessments": {
                        "0": [{"contentPolicy": {"filters": [
                            {"type": "VIOLENCE", "confidence": "HIGH", "filterStrength": "HIGH", "action": "BLOCKED", "detected": true}
                        ]}}]
                    },
                    "actionReason": guardrail.action_reason,
                }));
            }
        }
        let characters: usize = request
            .system
            .iter()
            .map(|b| block_text(b).chars().count())
            .sum::<usize>()
            + request
                .messages
                .iter()
                .flat_map(|m| m.content.iter())
                .map(|b| block_text(b).chars().count())
                .sum::<usize>();
        let computed_input = u32::try_from(characters.div_ceil(4)).unwrap_or(u32::MAX);
        let computed_output = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        let (input_tokens, output_tokens) = match script.usage {
            Some(usage) => (usage.input_tokens, usage.output_tokens),
            None => (computed_input, computed_output),
        };
        Self {
            tokens,
            stop_reason,
            input_tokens,
            output_tokens,
            ttft: Duration::from_millis(script.ttft_ms),
            inter_token: Duration::from_millis(script.inter_token_ms),
            guardrail_trace,
        }
    }

    async fn run(
        self,
        tx: &mpsc::Sender<Result<Bytes, Infallible>>,
        started: Instant,
        fault: Option<&Fault>,
    ) -> Outcome {
        let mut due = started + self.ttft;
        if !wait_until(tx, due).await {
            return Outcome::Cancelled;
        }
        if !send(tx, event("messageStart", r#"{"role":"assistant"}"#.into())).await {
            return Outcome::Cancelled;
        }
        for (index, token) in self.tokens.iter().enumerate() {
            if let Some(fault) = fault
                && index == fault.after_tokens
            {
                return self.fail(tx, fault).await;
            }
            if index > 0 {
                due += self.inter_token;
                if !wait_until(tx, due).await {
                    return Outcome::Cancelled;
                }
            }
            let delta = serde_json::json!({"contentBlockIndex": 0, "delta": {"text": token}});
            if !send(tx, event("contentBlockDelta", delta.to_string())).await {
                return Outcome::Cancelled;
            }
        }
        if let Some(fault) = fault {
            return self.fail(tx, fault).await;
        }
        let latency_ms = started.elapsed().as_millis();
        let mut metadata = serde_json::json!({
            "usage": {
                "inputTokens": self.input_tokens,
                "outputTokens": self.output_tokens,
                "totalTokens": self.input_tokens + self.output_tokens,
            },
            "metrics": {"latencyMs": latency_ms},
        });
        if let Some(trace) = &self.guardrail_trace {
            metadata["trace"] = serde_json::json!({ "guardrail": trace });
        }
        let frames = [
            event("contentBlockStop", r#"{"contentBlockIndex":0}"#.into()),
            event(
                "messageStop",
                serde_json::json!({"stopReason": self.stop_reason}).to_string(),
            ),
            event("metadata", metadata.to_string()),
        ];
        for frame in frames {
            if !send(tx, frame).await {
                return Outcome::Cancelled;
            }
        }
        if self.stop_reason == "guardrail_intervened" {
            Outcome::Intervened
        } else {
            Outcome::Completed
        }
    }

    async fn fail(&self, tx: &mpsc::Sender<Result<Bytes, Infallible>>, fault: &Fault) -> Outcome {
        match fault.kind {
            FaultKind::Stall => {
                // Silence until the client hangs up.
                tx.closed().await;
                Outcome::Cancelled
            }
            _ => {
                let frame = exception(&fault.exception, "emulated mid-stream fault");
                if send(tx, frame).await {
                    Outcome::Faulted
                } else {
                    Outcome::Cancelled
                }
            }
        }
    }
}

/// The deterministic reply: says how much context arrived and echoes the last user message.
fn echo(model: &str, messages: usize, last_user: &str) -> String {
    let said: String = last_user.chars().take(200).collect();
    format!(
        "I heard {messages} message{s}. You said: {said}. This reply comes from {model}.",
        s = if messages == 1 { "" } else { "s" }
    )
}

/// Tokens up to the first stop sequence, when one occurs.
fn stop_cut(tokens: &[String], stop_sequences: &[String]) -> Option<Vec<String>> {
    let text = tokens.concat();
    let at = stop_sequences
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()?;
    let mut kept = Vec::new();
    let mut length = 0;
    for token in tokens {
        if length + token.len() <= at {
            length += token.len();
            kept.push(token.clone());
        } else {
            let rest = &token[..at - length];
            if !rest.is_empty() {
                kept.push(rest.to_owned());
            }
            break;
        }
    }
    Some(kept)
}

/// Waits until `due`; false when the client went away meanwhile.
async fn wait_until(tx: &mpsc::Sender<Result<Bytes, Infallible>>, due: Instant) -> bool {
    tokio::select! {
        () = tokio::time::sleep_until(due) => !tx.is_closed(),
        () = tx.closed() => false,
    }
}

async fn send(tx: &mpsc::Sender<Result<Bytes, Infallible>>, frame: Bytes) -> bool {
    tx.send(Ok(frame)).await.is_ok()
}

/// An event frame: `:event-type`, `:content-type`, `:message-type=event`, JSON payload.
pub fn event(event_type: &str, payload: String) -> Bytes {
    encode(
        Message::new(payload.into_bytes()).add_header(Header::new(
            ":event-type",
            FrameHeaderValue::String(event_type.to_owned().into()),
        )),
        "event",
    )
}

/// An exception frame: `:exception-type`, `:message-type=exception`, `{"message":…}`.
pub fn exception(exception_type: &str, message: &str) -> Bytes {
    let payload = serde_json::json!({ "message": message }).to_string();
    encode(
        Message::new(payload.into_bytes()).add_header(Header::new(
            ":exception-type",
            FrameHeaderValue::String(exception_type.to_owned().into()),
        )),
        "exception",
    )
}

/// Adds `:content-type` and `:message-type`, then encodes prelude, headers, payload and CRCs.
fn encode(message: Message, message_type: &str) -> Bytes {
    let message = message
        .add_header(Header::new(
            ":content-type",
            FrameHeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            FrameHeaderValue::String(message_type.to_owned().into()),
        ));
    let mut buffer = Vec::with_capacity(256);
    // Encoding fails only beyond the format's limits (16 MB payloads); ours are tiny.
    if aws_smithy_eventstream::frame::write_message_to(&message, &mut buffer).is_err() {
        tracing::error!("event-stream frame too large to encode");
    }
    Bytes::from(buffer)
}

fn http_error(status: u16, error_type: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(serde_json::json!({ "message": message }))).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    )) {
        response.headers_mut().insert("x-amzn-errortype", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_with_valid_crcs() {
        let bytes = event("contentBlockDelta", r#"{"x":1}"#.into());
        let message =
            aws_smithy_eventstream::frame::read_message_from(&bytes[..]).expect("valid frame");
        let headers: Vec<(String, String)> = message
            .headers()
            .iter()
            .map(|h| {
                (
                    h.name().as_str().to_owned(),
                    h.value()
                        .as_string()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                )
            })
            .collect();
        assert!(headers.contains(&(":event-type".into(), "contentBlockDelta".into())));
        assert!(headers.contains(&(":message-type".into(), "event".into())));
        assert_eq!(&message.payload()[..], br#"{"x":1}"#);

        let mut corrupted = bytes.to_vec();
        let last = corrupted.len() - 1;
        corrupted[last] ^= 0xff;
        assert!(aws_smithy_eventstream::frame::read_message_from(&corrupted[..]).is_err());
    }

    #[test]
    fn stop_sequences_cut_the_reply() {
        let tokens = word_tokens("one two STOP three");
        assert_eq!(
            stop_cut(&tokens, &["STOP".into()]),
            Some(vec!["one".to_owned(), " two".into(), " ".into()])
        );
        assert_eq!(stop_cut(&tokens, &["nope".into()]), None);
    }
}
