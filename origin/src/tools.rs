//! Tool calls inside a turn: what happens between the model's `toolUse` blocks and the
//! `toolResult`s it is given back.
//!
//! - A tenant's tool gets a POST of `{"call_id","agent_id","tool","tool_use_id","input"}` to
//!   its URL, signed `X-Aybiza-Signature` with the tenant's secret, through the guarded client
//!   of [`crate::outbound`] (SSRF rule, no redirects, [`outbound::MAX_RESPONSE_BYTES`] cap),
//!   under its `timeout_ms`. A 2xx JSON answer is the result (an array or scalar is wrapped as
//!   `{"result": …}`: Claude takes objects); anything else — a non-2xx status, a timeout, a
//!   refused address, a larger or non-JSON answer — is an error result (`status: error`) in
//!   plain words, so the model can apologise; the call goes on.
//! - The calls of one round run at once. When they keep the line silent longer than the
//!   agent's `filler_after_ms`, its `filler_utterance` is said (once per round).
//! - An `interrupt` (any stop of the turn) cancels calls still running: they are dropped, which
//!   closes their connections, and recorded as `cancelled`.
//! - Built-ins act on the relay session: `send_digits` sends `sendDigits`, `switch_language`
//!   sends `language` (and the session switches), `end_call` and `transfer_call` end the turn
//!   and then the session (`end` with `handoffData`), after the agent's goodbye or announcement
//!   when the model had said nothing itself. They are offered only on a relay.
//! - Every call is recorded ([`ToolCall`], stored with the reply) and counted
//!   (`origin_tool_calls_total{kind,outcome}`, `origin_tool_call_duration_seconds{kind}`).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value, json};
use shared::agent::Agent;
use shared::agent::tools::{BuiltinCall, ToolSpec, builtin_call};
use shared::call_session::EndReason;
use shared::handoff::{HandoffData, REASON_AGENT_ENDED, REASON_TRANSFER};
use shared::language::LanguageSession;
use shared::relay::Outbound;
use shared::turn::{ToolCall, ToolOutcome};
use tracing::Instrument;

use crate::AppState;
use crate::llm::{ToolResult, ToolResultContent, ToolUse};
use crate::metrics::label;
use crate::outbound::{self, OutboundError, Post};
use crate::turn::{Stop, StopSignal};

/// Most tool rounds in one turn; a model asking for more ends the turn as failed
/// (`tool_rounds_exceeded`), and the caller hears the agent's fallback utterance.
pub const MAX_TOOL_ROUNDS: usize = 5;
/// Longest part of a tool's error answer repeated to the model.
const MAX_ERROR_DETAIL_CHARS: usize = 300;

/// The relay session a turn may act on.
pub struct Carrier<'a> {
    /// Sends a message to the carrier (`sendDigits`, `language`); false when it is gone.
    pub send: &'a (dyn Fn(Outbound) -> bool + Send + Sync),
    /// The session's languages as the turn began.
    pub languages: LanguageSession,
}

/// How the turn ends the relay session, once its reply is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    /// The call's stored end reason (`agent_ended`, `transferred`), as the edge records it.
    pub end_reason: EndReason,
    /// The `end`'s `handoffData`.
    pub handoff: HandoffData,
}

/// What a turn's tool calls need.
pub struct TurnTools<'a> {
    /// The tenant (its secret signs the calls).
    pub tenant: &'a str,
    /// The call.
    pub call_id: &'a str,
    /// The agent (its tools, built-ins, voice and filler).
    pub agent: &'a Agent,
    /// The relay session, when the turn has one (built-ins act on it).
    pub carrier: Option<&'a Carrier<'a>>,
}

/// What a round of tool calls came to.
#[derive(Debug)]
pub enum RoundOutcome {
    /// One result per call, in the calls' order: the model continues.
    Results(Vec<ToolResult>),
    /// The turn was stopped while calls ran.
    Stopped(Stop),
    /// A built-in ends the session: no more model rounds.
    EndSession(SessionEnd),
}

/// What the round said to the caller and recorded; owned by the turn's generation.
pub trait RoundLog {
    /// Says a line (the filler) to the caller; false when the caller is gone.
    fn say(&mut self, line: &str) -> bool;
    /// Records a call.
    fn record(&mut self, call: ToolCall);
    /// The session's languages changed (a `switch_language` call).
    fn switched(&mut self, languages: LanguageSession);
}

/// One call of the round, decided before anything runs.
enum Planned<'a> {
    Tenant(&'a ToolSpec),
    Builtin(BuiltinCall),
    Invalid(String),
}

/// Runs one round: the model asked for `uses`; their results (or the end of the session, or
/// the turn's stop) come back. Records every call in `log`.
pub async fn run_round(
    state: &AppState,
    tools: &TurnTools<'_>,
    uses: &[ToolUse],
    log: &mut (dyn RoundLog + Send),
    stop: &StopSignal,
) -> RoundOutcome {
    let started = Instant::now();
    let spec = &tools.agent.spec;
    let planned: Vec<Planned<'_>> = uses
        .iter()
        .map(|tool_use| {
            let builtin = tools.carrier.and_then(|_| {
                builtin_call(
                    &tool_use.name,
                    &tool_use.input,
                    &spec.builtin_tools,
                    &spec.voice,
                )
            });
            match builtin {
                Some(Ok(call)) => Planned::Builtin(call),
                Some(Err(why)) => Planned::Invalid(why),
                None => match spec.tools.iter().find(|t| t.name == tool_use.name) {
                    Some(tool) => Planned::Tenant(tool),
                    None => Planned::Invalid(format!("there is no tool named {:?}", tool_use.name)),
                },
            }
        })
        .collect();

    let mut results: Vec<Option<(ToolResultContent, ToolCall)>> = vec![None; uses.len()];
    // Tenant tools, all at once.
    let mut running: FuturesUnordered<_> = planned
        .iter()
        .enumerate()
        .filter_map(|(index, plan)| match plan {
            Planned::Tenant(tool) => Some(async move {
                let span = tracing::info_span!(
                    "tool_call",
                    tool = %tool.name,
                    kind = "tenant",
                    outcome = tracing::field::Empty,
                );
                let (content, call) = call_tenant_tool(state, tools, tool, &uses[index])
                    .instrument(span.clone())
                    .await;
                span.record("outcome", call.outcome.as_str());
                (index, (content, call))
            }),
            _ => None,
        })
        .collect();
    // Built-ins that act at once, and refusals.
    let mut ends: Option<(usize, BuiltinCall)> = None;
    for (index, plan) in planned.iter().enumerate() {
        let tool_use = &uses[index];
        let done = match plan {
            Planned::Tenant(_) => continue,
            Planned::Invalid(why) => error(tool_use, ToolOutcome::Invalid, why.clone(), started),
            Planned::Builtin(call) if call.ends_session() => {
                if ends.is_none() {
                    ends = Some((index, call.clone()));
                    continue;
                }
                error(
                    tool_use,
                    ToolOutcome::Invalid,
                    "another call in this reply already ends the call".into(),
                    started,
                )
            }
            Planned::Builtin(call) => {
                let span = tracing::info_span!(
                    "tool_call",
                    tool = %tool_use.name,
                    kind = "builtin",
                    outcome = tracing::field::Empty,
                );
                let done = span.in_scope(|| perform(call, tool_use, tools, log, started));
                span.record("outcome", done.1.outcome.as_str());
                done
            }
        };
        results[index] = Some(done);
    }
    let filler_after = Duration::from_millis(u64::from(spec.filler_after_ms));
    let filler = tokio::time::sleep(filler_after);
    tokio::pin!(filler);
    let mut filled = running.is_empty();
    while !running.is_empty() {
        tokio::select! {
            reason = stop.stopped() => {
                // Dropping the futures cancels the requests (their connections close).
                drop(running);
                for (index, slot) in results.iter_mut().enumerate() {
                    if slot.is_none() {
                        *slot = Some(error(
                            &uses[index],
                            ToolOutcome::Cancelled,
                            "the caller spoke; the call was cancelled".into(),
                            started,
                        ));
                    }
                }
                finish(state, log, results);
                return RoundOutcome::Stopped(reason);
            }
            () = &mut filler, if !filled => {
                filled = true;
                if !log.say(&spec.filler_utterance) {
                    drop(running);
                    finish(state, log, results);
                    return RoundOutcome::Stopped(Stop::ClientGone);
                }
            }
            Some((index, done)) = running.next() => results[index] = Some(done),
        }
    }
    drop(running);
    match ends {
        Some((index, call)) => {
            let end = session_end(&call, tools);
            results[index] = Some((
                ToolResultContent::Json(json!({"ok": true})),
                record(
                    &uses[index],
                    ToolOutcome::Ok,
                    Some(json!({"ok": true})),
                    None,
                    started,
                ),
            ));
            finish(state, log, results);
            RoundOutcome::EndSession(end)
        }
        None => RoundOutcome::Results(
            finish(state, log, results)
                .into_iter()
                .zip(uses)
                .map(|(content, tool_use)| ToolResult {
                    id: tool_use.id.clone(),
                    content,
                })
                .collect(),
        ),
    }
}

/// Records and counts every call, in the model's order; returns the results.
fn finish(
    state: &AppState,
    log: &mut (dyn RoundLog + Send),
    results: Vec<Option<(ToolResultContent, ToolCall)>>,
) -> Vec<ToolResultContent> {
    results
        .into_iter()
        .flatten()
        .map(|(content, call)| {
            let kind = kind_of(&call.name);
            state
                .metrics
                .tool_calls
                .get_or_create(&vec![
                    ("kind", kind.to_owned()),
                    ("outcome", call.outcome.as_str().to_owned()),
                ])
                .inc();
            state
                .metrics
                .tool_call_duration
                .get_or_create(&label("kind", kind))
                .observe(f64::from(call.duration_ms) / 1_000.0);
            log.record(call);
            content
        })
        .collect()
}

/// The metric label of a tool: the built-in's name, or `tenant` (tenants' names are theirs and
/// unbounded).
fn kind_of(name: &str) -> &str {
    shared::agent::tools::BUILTIN_NAMES
        .iter()
        .find(|builtin| **builtin == name)
        .copied()
        .unwrap_or("tenant")
}

/// Performs a built-in that does not end the session.
fn perform(
    call: &BuiltinCall,
    tool_use: &ToolUse,
    tools: &TurnTools<'_>,
    log: &mut (dyn RoundLog + Send),
    started: Instant,
) -> (ToolResultContent, ToolCall) {
    let Some(carrier) = tools.carrier else {
        return error(
            tool_use,
            ToolOutcome::Invalid,
            "this call has no phone line to act on".into(),
            started,
        );
    };
    let (message, result) = match call {
        BuiltinCall::SendDigits { digits } => match Outbound::send_digits(digits) {
            Ok(message) => (message, json!({"sent": digits})),
            Err(why) => return error(tool_use, ToolOutcome::Invalid, why.to_string(), started),
        },
        BuiltinCall::SwitchLanguage { language } => {
            let mut languages = carrier.languages.clone();
            let (tts, transcription) = languages.switch_to(language);
            log.switched(languages);
            (
                Outbound::Language {
                    tts_language: Some(tts),
                    transcription_language: transcription,
                },
                json!({"language": language}),
            )
        }
        BuiltinCall::EndCall { .. } | BuiltinCall::Transfer { .. } => {
            return error(
                tool_use,
                ToolOutcome::Invalid,
                "ends the call; handled apart".into(),
                started,
            );
        }
    };
    if !(carrier.send)(message) {
        return error(
            tool_use,
            ToolOutcome::Unreachable,
            "the phone line is gone".into(),
            started,
        );
    }
    (
        ToolResultContent::Json(result.clone()),
        record(tool_use, ToolOutcome::Ok, Some(result), None, started),
    )
}

/// The end of the session a terminal built-in asks for.
fn session_end(call: &BuiltinCall, tools: &TurnTools<'_>) -> SessionEnd {
    match call {
        BuiltinCall::Transfer { target, summary } => {
            let transfer = tools.agent.spec.builtin_tools.transfer_call.as_ref();
            let mut handoff = HandoffData::new(REASON_TRANSFER, tools.call_id);
            handoff.target = Some(target.to.clone());
            handoff.summary.clone_from(summary);
            handoff.caller_id = transfer.and_then(|t| t.caller_id.clone());
            handoff.whisper = transfer.is_some_and(|t| t.whisper);
            SessionEnd {
                end_reason: EndReason::Transferred,
                handoff,
            }
        }
        _ => SessionEnd {
            end_reason: EndReason::AgentEnded,
            handoff: HandoffData::new(REASON_AGENT_ENDED, tools.call_id),
        },
    }
}

/// The line said before a session-ending built-in, when the model said nothing itself.
pub fn closing_line<'a>(agent: &'a Agent, end: &SessionEnd) -> &'a str {
    let builtins = &agent.spec.builtin_tools;
    match end.end_reason {
        EndReason::Transferred => builtins
            .transfer_call
            .as_ref()
            .map_or(shared::agent::tools::DEFAULT_TRANSFER_ANNOUNCEMENT, |t| {
                t.announcement.as_str()
            }),
        _ => builtins
            .end_call
            .as_ref()
            .map_or(shared::agent::tools::DEFAULT_GOODBYE, |e| {
                e.goodbye.as_str()
            }),
    }
}

/// Calls a tenant's tool.
async fn call_tenant_tool(
    state: &AppState,
    tools: &TurnTools<'_>,
    tool: &ToolSpec,
    tool_use: &ToolUse,
) -> (ToolResultContent, ToolCall) {
    let started = Instant::now();
    let signer = match crate::signing_secret::signer(state, tools.tenant).await {
        Ok(signer) => signer,
        Err(store) => {
            tracing::warn!(tool = %tool.name, error = %store, "tool call not signed: no secret");
            return error(
                tool_use,
                ToolOutcome::Unreachable,
                "the tool could not be called right now".into(),
                started,
            );
        }
    };
    let body = json!({
        "call_id": tools.call_id,
        "agent_id": tools.agent.id,
        "tool": tool.name,
        "tool_use_id": tool_use.id,
        "input": tool_use.input,
    })
    .to_string()
    .into_bytes();
    let signature = signer.sign(&body, state.now_ms() / 1_000);
    let timeout = Duration::from_millis(u64::from(tool.timeout_ms));
    let answer = state
        .outbound
        .post(Post {
            url: &tool.url,
            body,
            signature,
            timeout,
            max_response: outbound::MAX_RESPONSE_BYTES,
            // The tenant's service may continue the call's trace.
            headers: crate::telemetry::current_traceparent()
                .map(|traceparent| vec![(shared::headers::TRACEPARENT, traceparent)])
                .unwrap_or_default(),
        })
        .await;
    let failed = |outcome: ToolOutcome, why: String| {
        tracing::info!(tool = %tool.name, call_id = tools.call_id, outcome = outcome.as_str(), %why, "tool call failed");
        error(tool_use, outcome, why, started)
    };
    match answer {
        Ok(response) if (200..300).contains(&response.status) => {
            match serde_json::from_slice::<Value>(&response.body) {
                Ok(value) => {
                    let result = match value {
                        Value::Object(_) => value,
                        other => json!({ "result": other }),
                    };
                    (
                        ToolResultContent::Json(result.clone()),
                        record(tool_use, ToolOutcome::Ok, Some(result), None, started),
                    )
                }
                Err(_) => failed(
                    ToolOutcome::NotJson,
                    "the tool's answer was not JSON".into(),
                ),
            }
        }
        Ok(response) => {
            let detail: String = String::from_utf8_lossy(&response.body)
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_ERROR_DETAIL_CHARS)
                .collect();
            let why = if detail.trim().is_empty() {
                format!("the tool answered HTTP {}", response.status)
            } else {
                format!("the tool answered HTTP {}: {detail}", response.status)
            };
            failed(ToolOutcome::Failed, why)
        }
        Err(OutboundError::Timeout(ms)) => failed(
            ToolOutcome::Timeout,
            format!("the tool did not answer within {ms} ms"),
        ),
        Err(OutboundError::Refused(why)) => {
            tracing::warn!(tool = %tool.name, %why, "tool call refused (SSRF rule)");
            failed(
                ToolOutcome::Refused,
                "the tool's address may not be reached from here".into(),
            )
        }
        Err(OutboundError::TooLarge(max)) => failed(
            ToolOutcome::TooLarge,
            format!("the tool's answer was larger than {} KB", max / 1_024),
        ),
        Err(OutboundError::Unreachable(why)) => {
            tracing::info!(tool = %tool.name, %why, "tool unreachable");
            failed(
                ToolOutcome::Unreachable,
                "the tool could not be reached".into(),
            )
        }
    }
}

fn record(
    tool_use: &ToolUse,
    outcome: ToolOutcome,
    result: Option<Value>,
    error: Option<String>,
    started: Instant,
) -> ToolCall {
    ToolCall {
        name: tool_use.name.clone(),
        input: tool_use.input.clone(),
        outcome,
        result,
        error,
        duration_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
    }
}

fn error(
    tool_use: &ToolUse,
    outcome: ToolOutcome,
    why: String,
    started: Instant,
) -> (ToolResultContent, ToolCall) {
    (
        ToolResultContent::Error(why.clone()),
        record(tool_use, outcome, None, Some(why), started),
    )
}
