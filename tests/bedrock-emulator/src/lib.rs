//! A Bedrock Runtime emulator for tests and benchmarks: it answers `ConverseStream` in the real
//! wire format (`application/vnd.amazon.eventstream` frames with their CRCs, written by
//! `aws-smithy-eventstream`), so the origin talks to it through the real AWS SDK.
//!
//! Model behaviour — time to first token, inter-token delay, reply, usage, faults, guardrail
//! interventions and tool use ([`ToolUseScript`]) — is set per model over a control API on the
//! same port; it counts requests, completions and cancellations per model so tests can assert
//! that fallbacks and interruptions happened, echoes the `guardrailConfig` and
//! `performanceConfig` each model last received, and checks that each request following a tool
//! call carries the matching `toolResult`s (mismatches are counted). A request whose messages
//! hold `toolUse` or `toolResult` blocks without a `toolConfig` is refused, as Bedrock does.
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

pub use script::{
    Fault, FaultKind, GuardrailScript, ModelScript, ScriptedToolCall, ScriptedUsage, ToolUseScript,
    word_tokens,
};

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
    /// `toolUse` blocks streamed.
    #[serde(default)]
    pub tool_uses: u64,
    /// `toolResult`s received that answered the previous round's calls exactly.
    #[serde(default)]
    pub tool_results: u64,
    /// Requests after a tool round whose `toolResult`s did not match its `toolUse` ids.
    #[serde(default)]
    pub tool_result_mismatches: u64,
    /// Scripted tool calls not made because the request did not offer the tool.
    #[serde(default)]
    pub tools_not_offered: u64,
    /// The tool names the last request offered (`toolConfig`).
    #[serde(default)]
    pub last_tools_offered: Vec<String>,
    /// Unix microseconds at which the last tool round's `messageStop` was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tool_use_sent_at_us: Option<u64>,
    /// Unix microseconds at which the last request carrying `toolResult`s arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tool_result_at_us: Option<u64>,
}

/// Unix microseconds now.
fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
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
    /// `toolUseId`s handed out, so a `toolResult` can be checked against them.
    issued_tool_uses: std::collections::HashSet<String>,
    next_tool_use: u64,
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

    /// Decides the tool part of a request: checks the results it carries against the ids
    /// handed out, counts them, and picks what the model does next (see [`ToolUseScript`]).
    fn tool_turn(
        &self,
        model: &str,
        script: &ModelScript,
        request: &ConverseRequest,
        offered: &[String],
    ) -> ToolTurn {
        let mut inner = self.lock();
        let exchange = exchange_of(&request.messages, &inner.issued_tool_uses);
        let entry = script.tool_use.iter().find(|entry| {
            exchange
                .anchor
                .to_lowercase()
                .contains(&entry.when.to_lowercase())
        });
        let mut decided = ToolTurn::None;
        let mut not_offered = false;
        if let Some(entry) = entry {
            if let Some(round) = entry.rounds.get(exchange.rounds_done) {
                if round.iter().all(|call| offered.contains(&call.name)) {
                    let mut calls = Vec::new();
                    for call in round {
                        inner.next_tool_use += 1;
                        let id = format!("tooluse_emu{:08}", inner.next_tool_use);
                        inner.issued_tool_uses.insert(id.clone());
                        calls.push((id, call.name.clone(), call.input.to_string()));
                    }
                    let before = entry.before.clone().filter(|_| exchange.rounds_done == 0);
                    decided = ToolTurn::Call { before, calls };
                } else {
                    not_offered = true;
                }
            } else if exchange.rounds_done > 0 {
                let reply = match (&entry.error_reply, exchange.any_error) {
                    (Some(error_reply), true) => error_reply.clone(),
                    _ => entry.reply.clone(),
                };
                decided = ToolTurn::Reply(reply);
            }
        }
        let stats = inner.stats.entry(model.to_owned()).or_default();
        stats.last_tools_offered = offered.to_vec();
        if not_offered {
            stats.tools_not_offered += 1;
        }
        match exchange.results_match {
            Some(true) => {
                stats.tool_results += exchange.results as u64;
                stats.last_tool_result_at_us = Some(unix_micros());
            }
            Some(false) => {
                stats.tool_result_mismatches += 1;
                stats.last_tool_result_at_us = Some(unix_micros());
            }
            None => {}
        }
        decided
    }
}

/// What a request does about tools.
enum ToolTurn {
    /// Nothing: the script's ordinary reply.
    None,
    /// Call tools: (id, name, input JSON) each, after saying `before`.
    Call {
        before: Option<String>,
        calls: Vec<(String, String, String)>,
    },
    /// Every round is answered: this is the reply.
    Reply(String),
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
    use axum::serve::ListenerExt;
    // Small event frames go out as they are written (no Nagle delay behind the client's
    // delayed ACK), as Bedrock's own front end sends them.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
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
    tool_config: Option<ToolConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ToolConfig {
    tools: Vec<serde_json::Value>,
}

impl ToolConfig {
    fn names(&self) -> Vec<String> {
        self.tools
            .iter()
            .filter_map(|tool| tool.pointer("/toolSpec/name")?.as_str().map(str::to_owned))
            .collect()
    }
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

impl RequestMessage {
    fn has(&self, block: &str) -> bool {
        self.content.iter().any(|b| b.get(block).is_some())
    }

    fn has_text(&self) -> bool {
        self.content.iter().any(|b| b.get("text").is_some())
    }

    /// The `toolUseId`s of this message's `toolUse` (or `toolResult`) blocks.
    fn tool_ids(&self, block: &str) -> Vec<String> {
        self.content
            .iter()
            .filter_map(|b| b.get(block)?.get("toolUseId")?.as_str().map(str::to_owned))
            .collect()
    }

    fn text(&self) -> String {
        self.content
            .iter()
            .map(block_text)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Where a request stands in a tool exchange.
struct Exchange {
    /// The latest user message with text (the caller's words).
    anchor: String,
    /// Tool rounds answered since it.
    rounds_done: usize,
    /// The last message's `toolResult` ids matched the previous `toolUse` ids exactly.
    results_match: Option<bool>,
    /// How many results the last message carried.
    results: usize,
    /// Whether one of them was `status: error`.
    any_error: bool,
}

fn exchange_of(
    messages: &[RequestMessage],
    issued: &std::collections::HashSet<String>,
) -> Exchange {
    let anchor_at = messages
        .iter()
        .rposition(|m| m.role == "user" && m.has_text() && !m.has("toolResult"));
    let anchor = anchor_at.map(|i| messages[i].text()).unwrap_or_default();
    let after = anchor_at.map_or(messages, |i| &messages[i + 1..]);
    let rounds_done = after
        .iter()
        .filter(|m| m.role == "user" && m.has("toolResult"))
        .count();
    let last = messages.last();
    let (results_match, results, any_error) = match last {
        Some(last) if last.role == "user" && last.has("toolResult") => {
            let mut results = last.tool_ids("toolResult");
            let previous = messages.len().checked_sub(2).map(|i| &messages[i]);
            let mut uses = previous.map(|m| m.tool_ids("toolUse")).unwrap_or_default();
            let count = results.len();
            results.sort();
            uses.sort();
            let matched = !results.is_empty()
                && results == uses
                && results.iter().all(|id| issued.contains(id));
            let any_error = last.content.iter().any(|b| {
                b.pointer("/toolResult/status")
                    .and_then(serde_json::Value::as_str)
                    == Some("error")
            });
            (Some(matched), count, any_error)
        }
        _ => (None, 0, false),
    };
    Exchange {
        anchor,
        rounds_done,
        results_match,
        results,
        any_error,
    }
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
    let uses_tools = request
        .messages
        .iter()
        .any(|m| m.has("toolUse") || m.has("toolResult"));
    if uses_tools && request.tool_config.is_none() {
        // Bedrock's own refusal.
        return http_error(
            400,
            "ValidationException",
            "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
        );
    }
    let offered = request
        .tool_config
        .as_ref()
        .map(ToolConfig::names)
        .unwrap_or_default();
    let tools = emulator.tool_turn(&model, &script, &request, &offered);
    let plan = Plan::new(&model, &script, &request, tools);

    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(32);
    emulator.count(&model, |s| s.in_flight += 1);
    let task_emulator = emulator.clone();
    tokio::spawn(async move {
        let outcome = plan.run(&tx, started, fault.as_ref()).await;
        task_emulator.count(&model, |s| {
            s.in_flight -= 1;
            match outcome {
                Outcome::Completed {
                    tool_calls,
                    tool_use_sent_at,
                } => {
                    s.completed += 1;
                    s.tool_uses += tool_calls;
                    if tool_use_sent_at.is_some() {
                        s.last_tool_use_sent_at_us = tool_use_sent_at;
                    }
                }
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
    /// `toolUse` blocks after the text: (id, name, input JSON).
    tool_calls: Vec<(String, String, String)>,
    stop_reason: &'static str,
    input_tokens: u32,
    output_tokens: u32,
    ttft: Duration,
    inter_token: Duration,
    /// The guardrail's `trace.guardrail`, when it intervenes and the request asked for traces.
    guardrail_trace: Option<serde_json::Value>,
}

enum Outcome {
    Completed {
        tool_calls: u64,
        tool_use_sent_at: Option<u64>,
    },
    Intervened,
    Cancelled,
    Faulted,
}

impl Plan {
    fn new(model: &str, script: &ModelScript, request: &ConverseRequest, tools: ToolTurn) -> Self {
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
        let mut tool_calls = Vec::new();
        let mut tokens = match (tools, &script.tokens, &script.reply) {
            (ToolTurn::Call { before, calls }, _, _) => {
                tool_calls = calls;
                before.as_deref().map(word_tokens).unwrap_or_default()
            }
            (ToolTurn::Reply(reply), _, _) => word_tokens(&reply),
            (ToolTurn::None, Some(tokens), _) => tokens.clone(),
            (ToolTurn::None, None, Some(reply)) => word_tokens(reply),
            (ToolTurn::None, None, None) => {
                word_tokens(&echo(model, request.messages.len(), &last_user))
            }
        };
        let mut stop_reason = if tool_calls.is_empty() {
            "end_turn"
        } else {
            "tool_use"
        };
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
        let computed_output =
            u32::try_from(tokens.len() + tool_calls.len() * 10).unwrap_or(u32::MAX);
        let (input_tokens, output_tokens) = match script.usage {
            Some(usage) => (usage.input_tokens, usage.output_tokens),
            None => (computed_input, computed_output),
        };
        Self {
            tokens,
            tool_calls,
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
        let mut frames = Vec::new();
        let mut index = 0;
        if !self.tokens.is_empty() {
            frames.push(event(
                "contentBlockStop",
                r#"{"contentBlockIndex":0}"#.into(),
            ));
            index = 1;
        }
        for (id, name, input) in &self.tool_calls {
            frames.push(event(
                "contentBlockStart",
                serde_json::json!({"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": id, "name": name}}})
                    .to_string(),
            ));
            // The input arrives as pieces of a JSON string, as Bedrock streams it.
            for piece in json_pieces(input) {
                frames.push(event(
                    "contentBlockDelta",
                    serde_json::json!({"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}})
                        .to_string(),
                ));
            }
            frames.push(event(
                "contentBlockStop",
                serde_json::json!({"contentBlockIndex": index}).to_string(),
            ));
            index += 1;
        }
        frames.push(event(
            "messageStop",
            serde_json::json!({"stopReason": self.stop_reason}).to_string(),
        ));
        for frame in frames {
            if !send(tx, frame).await {
                return Outcome::Cancelled;
            }
        }
        let tool_use_sent_at = (!self.tool_calls.is_empty()).then(unix_micros);
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
        if !send(tx, event("metadata", metadata.to_string())).await {
            return Outcome::Cancelled;
        }
        if self.stop_reason == "guardrail_intervened" {
            Outcome::Intervened
        } else {
            Outcome::Completed {
                tool_calls: self.tool_calls.len() as u64,
                tool_use_sent_at,
            }
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

/// A JSON text cut into three pieces (at character boundaries), as input deltas arrive.
fn json_pieces(input: &str) -> Vec<String> {
    let chars: Vec<char> = input.chars().collect();
    let third = chars.len().div_ceil(3).max(1);
    chars
        .chunks(third)
        .map(|piece| piece.iter().collect())
        .collect()
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
    fn tool_input_pieces_join_back() {
        let input = r#"{"id":"42","note":"é"}"#;
        let pieces = json_pieces(input);
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces.concat(), input);
        assert_eq!(json_pieces("{}").concat(), "{}");
    }

    #[test]
    fn a_tool_exchange_is_read_from_the_messages() {
        let message = |role: &str, content: serde_json::Value| RequestMessage {
            role: role.into(),
            content: content.as_array().cloned().unwrap_or_default(),
        };
        let issued: std::collections::HashSet<String> =
            ["t1".to_owned(), "t2".to_owned()].into_iter().collect();
        let messages = vec![
            message("user", serde_json::json!([{"text": "Where is my order?"}])),
            message(
                "assistant",
                serde_json::json!([{"text": "Let me check."}, {"toolUse": {"toolUseId": "t1", "name": "a", "input": {}}}, {"toolUse": {"toolUseId": "t2", "name": "b", "input": {}}}]),
            ),
            message(
                "user",
                serde_json::json!([{"toolResult": {"toolUseId": "t2", "content": [{"json": {}}], "status": "error"}}, {"toolResult": {"toolUseId": "t1", "content": [{"json": {}}]}}]),
            ),
        ];
        let exchange = exchange_of(&messages, &issued);
        assert_eq!(exchange.anchor, "Where is my order?");
        assert_eq!(exchange.rounds_done, 1);
        assert_eq!(exchange.results_match, Some(true));
        assert_eq!(exchange.results, 2);
        assert!(exchange.any_error);
        let mut wrong = messages;
        wrong[2] = message(
            "user",
            serde_json::json!([{"toolResult": {"toolUseId": "t1", "content": []}}]),
        );
        assert_eq!(exchange_of(&wrong, &issued).results_match, Some(false));
        assert_eq!(exchange_of(&wrong[..1], &issued).results_match, None);
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
