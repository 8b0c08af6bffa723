//! One turn of a conversation, the same for the relay WebSocket and for SSE: the caller's words
//! in, Claude's reply out as speakable pieces the moment they exist, then the turn made durable.
//!
//! Ordering, and why:
//! 1. The caller's words are written to the database *concurrently* with the model request, so
//!    the first token never waits for a database write.
//! 2. Pieces go to the caller as they are cut; nothing on that path touches the database.
//! 3. The reply is written when it ends (or is interrupted: then what the caller heard), and
//!    only after that write succeeds is the turn reported complete (`last: true` on the relay,
//!    `done` on SSE). If the caller's words could not be written, the model stream is cancelled
//!    and nothing of the turn is marked complete.
//!
//! Never silence: when every model of the chain fails (or the one answering fails mid-reply),
//! the agent's `fallback_utterance` goes to the caller like any reply piece, and the reply is
//! stored as what was said with the failure's reason (`failure_reason`); the call goes on.
//! A guardrail's intervention ends the reply with the guardrail's message, which Bedrock sends
//! as text; it is stored with `stop_reason: guardrail_intervened` and counted.
//!
//! Tools: the agent's tools (and, on a relay, its built-ins) are offered as `toolConfig`. When
//! the model stops with `tool_use`, what it said so far is flushed to the caller and kept, the
//! calls run (`crate::tools`: filler line when slow, cancelled by an interrupt), their results
//! go back as `toolResult`s, and the same model streams on — up to
//! [`crate::tools::MAX_TOOL_ROUNDS`] rounds. Every call is stored with the reply. A built-in that
//! ends the session (`end_call`, `transfer_call`) ends the reply there (after the agent's
//! goodbye or announcement when the model said nothing) and the report says how to end it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::agent::{Agent, Latency};
use shared::call_event::{CallEvent, CallEventKind};
use shared::chunking::{ChunkPolicy, Chunker};
use shared::conversation::{MAX_CONTEXT_MESSAGES, build_context, describe_tool_calls};
use shared::language::LanguageSession;
use shared::model::{ModelFailure, Recovery, recovery};
use shared::turn::{Fallback, GUARDRAIL_INTERVENED, Timings, ToolCall, Turn, TurnRole, Usage};
use tokio::sync::watch;
use tracing::Instrument;
use tracing::field::Empty;

use crate::AppState;
use crate::journal::{Announce, CallJournal, Record};
use crate::llm::{LlmError, LlmEvent, LlmRequest, LlmStream, ToolRound, ToolUse};
use crate::metrics::label;
use crate::store::{NewTurn, StoreError};
use crate::tools::{Carrier, RoundLog, RoundOutcome, SessionEnd, TurnTools};

/// Why a turn was stopped before its reply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The caller spoke over the reply; `heard` is what reached their ear.
    Interrupted {
        /// `utteranceUntilInterrupt`.
        heard: String,
    },
    /// A new prompt arrived before the reply ended.
    Superseded,
    /// The client went away (SSE disconnect, socket closed).
    ClientGone,
    /// The caller's words could not be made durable.
    NotDurable,
}

/// Stops a live turn; the first reason given wins. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Sender<Option<Stop>>);

impl Default for StopSignal {
    fn default() -> Self {
        Self(watch::Sender::new(None))
    }
}

impl StopSignal {
    /// Stops the turn for `reason`, unless it was already stopped.
    pub fn stop(&self, reason: Stop) {
        self.0.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Resolves with the reason once stopped.
    pub async fn stopped(&self) -> Stop {
        let mut receiver = self.0.subscribe();
        loop {
            if let Some(reason) = receiver.borrow_and_update().clone() {
                return reason;
            }
            if receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// How the model part of a turn ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The reply is complete.
    Completed,
    /// Stopped before the end.
    Stopped(Stop),
    /// Every model failed before its first token, or the one answering failed mid-reply.
    Failed(LlmError),
}

/// What the model produced.
#[derive(Debug, Clone)]
pub struct Generation {
    /// How it ended.
    pub ending: Ending,
    /// Every piece handed to the caller, concatenated.
    pub sent: String,
    /// The model that answered (or the last one tried).
    pub model: Option<String>,
    /// Turn start → first token from the model.
    pub ttft: Option<Duration>,
    /// Turn start → last event.
    pub duration: Duration,
    /// Usage reported by the model.
    pub usage: Option<Usage>,
    /// Text deltas received (an estimate of output tokens when usage is missing).
    pub deltas: u32,
    /// Models skipped, in order.
    pub fallbacks: Vec<Fallback>,
    /// Why the model stopped, as it reported it.
    pub stop_reason: Option<String>,
    /// Whether the agent's fallback utterance was said (the model failed).
    pub fallback_spoken: bool,
    /// What the model itself said (not the filler or the fallback utterance).
    pub model_said: String,
    /// The tools called, in order.
    pub tool_calls: Vec<ToolCall>,
    /// A built-in ended the session: how.
    pub session_end: Option<SessionEnd>,
    /// A built-in switched the session's language: the session now.
    pub languages: Option<LanguageSession>,
}

/// The report of a finished turn.
#[derive(Debug, Clone)]
pub struct TurnReport {
    /// `seq` of the caller's words.
    pub user_seq: u32,
    /// `seq` of the stored reply (absent when nothing was said).
    pub reply_seq: Option<u32>,
    /// How the model part ended.
    pub ending: Ending,
    /// The stored reply text.
    pub reply_text: String,
    /// The model that answered.
    pub model: Option<String>,
    /// Tokens.
    pub usage: Usage,
    /// Timings.
    pub timings: Timings,
    /// Models skipped.
    pub fallbacks: Vec<Fallback>,
    /// Why the model stopped, as it reported it.
    pub stop_reason: Option<String>,
    /// The reply exactly as stored at `reply_seq`.
    pub reply: Option<NewTurn>,
    /// A built-in ended the session: how (the relay sends `end` after the turn).
    pub session_end: Option<SessionEnd>,
    /// A built-in switched the session's language: the session now.
    pub languages: Option<LanguageSession>,
    /// The reply's entry in the session's journal (journaled turns only).
    pub reply_entry: Option<u64>,
}

/// A turn that could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// Writing the caller's words or the reply failed.
    #[error("the turn could not be stored: {0}")]
    Store(#[from] StoreError),
}

/// What a turn needs to know about its call.
pub struct TurnInput<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// The call.
    pub call_id: &'a str,
    /// The agent answering.
    pub agent: &'a Agent,
    /// Stored turns before this one.
    pub history: &'a [Turn],
    /// What the caller said.
    pub text: &'a str,
    /// The language they said it in, as the carrier (or API client) reported it.
    pub lang: Option<&'a str>,
    /// The language the reply is spoken in, when it is not the session's (stored with it).
    pub reply_lang: Option<&'a str>,
    /// The relay session the turn may act on (built-in tools); absent for an SSE turn.
    pub carrier: Option<&'a Carrier<'a>>,
    /// The relay session's write-behind journal (`crate::journal`): the turn is kept there and
    /// written behind, so the reply closes even while the database is away. Absent for an SSE
    /// turn, whose `done` says the turn is durable.
    pub journal: Option<&'a CallJournal>,
}

/// Where a turn's pieces go; `false` means the client is gone.
pub type PieceSink<'a> = &'a (dyn Fn(String) -> bool + Send + Sync);

/// Runs one turn: pieces go to `pieces` as they are cut; `stop` ends it early. The turn is a
/// span (`crate::telemetry`) holding its model attempts, tool calls and writes.
pub async fn run(
    state: &AppState,
    input: TurnInput<'_>,
    pieces: PieceSink<'_>,
    stop: &StopSignal,
) -> Result<TurnReport, TurnError> {
    let span = tracing::info_span!(
        "turn",
        call_id = input.call_id,
        model = Empty,
        ttft_ms = Empty,
        fallbacks = Empty,
    );
    let report = run_turn(state, input, pieces, stop)
        .instrument(span.clone())
        .await;
    if let Ok(report) = &report {
        if let Some(model) = &report.model {
            span.record("model", model.as_str());
        }
        // Signed integers: tracing-opentelemetry exports unsigned ones as text.
        span.record("ttft_ms", i64::from(report.timings.ttft_ms));
        span.record(
            "fallbacks",
            i64::try_from(report.fallbacks.len()).unwrap_or(i64::MAX),
        );
    }
    report
}

async fn run_turn(
    state: &AppState,
    input: TurnInput<'_>,
    pieces: PieceSink<'_>,
    stop: &StopSignal,
) -> Result<TurnReport, TurnError> {
    let started = Instant::now();
    let now_ms = state.now_ms();

    // 1. The caller's words, written beside the model request rather than before it (or
    //    journaled, written behind by the journal's flusher).
    let user_turn = NewTurn {
        lang: input.lang.map(str::to_owned),
        ..NewTurn::said(TurnRole::User, input.text, now_ms)
    };
    let user_write = match input.journal {
        Some(journal) => {
            let entry = journal.push(
                state,
                Record::Turn {
                    turn: user_turn,
                    announce: Some(Announce {
                        kind: CallEventKind::TurnStarted,
                        model: None,
                        ttft_ms: None,
                    }),
                },
            );
            UserWrite::Journaled(entry)
        }
        None => {
            let store = Arc::clone(&state.store);
            let (tenant, call_id) = (input.tenant.to_owned(), input.call_id.to_owned());
            let write_stop = stop.clone();
            UserWrite::Direct(tokio::spawn(
                async move {
                    let written = store.append_turns(&tenant, &call_id, &[user_turn]).await;
                    if written.is_err() {
                        write_stop.stop(Stop::NotDurable);
                    }
                    written
                }
                .in_current_span(),
            ))
        }
    };

    // 2. The model's reply.
    let request = request_for(&input);
    let chain = input
        .agent
        .spec
        .model_chain(&state.config.bedrock.default_models);
    let latency = input.agent.spec.inference.latency;
    let tools = TurnTools {
        tenant: input.tenant,
        call_id: input.call_id,
        agent: input.agent,
        carrier: input.carrier,
    };
    let mut generation = generate(
        state, &chain, request, latency, pieces, stop, started, &tools,
    )
    .await;
    let guardrail_said_nothing = generation.stop_reason.as_deref() == Some(GUARDRAIL_INTERVENED)
        && generation.sent.trim().is_empty();
    if matches!(generation.ending, Ending::Failed(_)) || guardrail_said_nothing {
        speak_fallback(
            &mut generation,
            &input.agent.spec.fallback_utterance,
            pieces,
        );
    }

    // 3. Durability, then the report.
    let user_write = match user_write {
        UserWrite::Journaled(entry) => {
            let seq = entry.and_then(|entry| input.journal.and_then(|j| j.seq_of(entry)));
            return finish(state, &input, seq.unwrap_or(0), generation).await;
        }
        UserWrite::Direct(write) => write,
    };
    let user_seq = match user_write.await {
        Ok(Ok(seqs)) => seqs.first().copied().unwrap_or(0),
        Ok(Err(error)) => return Err(not_durable(state, error)),
        Err(join) => {
            return Err(TurnError::Store(StoreError::Unavailable(format!(
                "the write task failed: {join}"
            ))));
        }
    };
    publish(
        state,
        input.tenant,
        input.call_id,
        CallEventKind::TurnStarted,
        Some(user_seq),
        None,
        None,
        now_ms,
    )
    .await;
    finish(state, &input, user_seq, generation).await
}

/// Where the caller's words are being kept.
enum UserWrite {
    /// Written directly, beside the model request.
    Direct(tokio::task::JoinHandle<Result<Vec<u32>, StoreError>>),
    /// Journaled at this entry (`None`: the journal was full).
    Journaled(Option<u64>),
}

fn request_for(input: &TurnInput<'_>) -> LlmRequest {
    // A past reply's tool calls read as notes before what was said (see `describe_tool_calls`).
    let texts: Vec<std::borrow::Cow<'_, str>> = input
        .history
        .iter()
        .map(|turn| {
            if turn.tool_calls.is_empty() {
                std::borrow::Cow::Borrowed(turn.text.as_str())
            } else {
                std::borrow::Cow::Owned(format!(
                    "{}\n{}",
                    describe_tool_calls(&turn.tool_calls),
                    turn.text
                ))
            }
        })
        .collect();
    let history = input
        .history
        .iter()
        .zip(&texts)
        .map(|(turn, text)| (turn.role, text.as_ref()))
        .chain([(TurnRole::User, input.text)]);
    let context = build_context(history, MAX_CONTEXT_MESSAGES);
    let spec = &input.agent.spec;
    LlmRequest {
        model: String::new(),
        system_prompt: input.agent.spec.system_prompt.clone(),
        system_note: context.system_note(input.lang),
        messages: context.messages,
        inference: input.agent.spec.inference.clone(),
        prompt_caching: false,
        guardrail: input.agent.spec.guardrail.clone(),
        latency_optimized: false,
        tools: shared::agent::tools::definitions(
            &spec.tools,
            &spec.builtin_tools,
            &spec.voice,
            input.carrier.is_some(),
        ),
        rounds: Vec::new(),
    }
}

/// Says the agent's fallback utterance after what the caller already heard, if anything.
fn speak_fallback(generation: &mut Generation, utterance: &str, pieces: PieceSink<'_>) {
    generation.fallback_spoken = true;
    say_line(pieces, generation, utterance, false);
}

/// Tries the chain until a model answers; streams its pieces, through its tool rounds.
#[allow(clippy::too_many_arguments)]
async fn generate(
    state: &AppState,
    chain: &[String],
    base: LlmRequest,
    latency: Option<Latency>,
    pieces: PieceSink<'_>,
    stop: &StopSignal,
    started: Instant,
    tools: &TurnTools<'_>,
) -> Generation {
    let deadlines = &state.config.bedrock;
    let mut generation = Generation {
        ending: Ending::Failed(LlmError::new(
            shared::model::ModelFailure::ModelUnavailable,
            "the agent has no model to try",
        )),
        sent: String::new(),
        model: None,
        ttft: None,
        duration: Duration::ZERO,
        usage: None,
        deltas: 0,
        fallbacks: Vec::new(),
        stop_reason: None,
        fallback_spoken: false,
        model_said: String::new(),
        tool_calls: Vec::new(),
        session_end: None,
        languages: None,
    };
    let mut chunker = Chunker::new(ChunkPolicy::default());
    let mut attempt: u32 = 0;
    'models: for model in chain {
        let mut retried_same_model = false;
        loop {
            attempt += 1;
            // One span per request to a model: how it ended, and why the chain moved on.
            let attempt_span = tracing::info_span!(
                "model_attempt",
                model = %model,
                attempt = i64::from(attempt),
                outcome = Empty,
                fallback_reason = Empty,
                error = Empty,
            );
            generation.model = Some(model.clone());
            let request = LlmRequest {
                model: model.clone(),
                prompt_caching: shared::model::supports_prompt_caching(model),
                latency_optimized: latency == Some(Latency::Optimized)
                    && shared::model::supports_latency_optimized(model),
                ..base.clone()
            };
            // Phase 1: the request and the first event, under the first-token deadline.
            let first = tokio::select! {
                reason = stop.stopped() => {
                    attempt_span.record("outcome", "stopped");
                    generation.ending = Ending::Stopped(reason);
                    break 'models;
                }
                first = tokio::time::timeout(deadlines.first_token_timeout, first_event(state, request.clone()))
                    .instrument(attempt_span.clone()) => first,
            };
            let failure = match first {
                Err(_) => LlmError::new(
                    shared::model::ModelFailure::Timeout,
                    format!("no first token within {:?}", deadlines.first_token_timeout),
                ),
                Ok(Err(error)) => error,
                Ok(Ok((stream, event))) => {
                    let ttft = started.elapsed();
                    generation.ttft = Some(ttft);
                    attempt_span.record("outcome", "answered");
                    attempt_span.in_scope(|| {
                        tracing::info!(ttft_ms = i64::from(millis(ttft)), "first_token");
                    });
                    generation.ending = converse(
                        state,
                        request,
                        (stream, event),
                        &mut chunker,
                        &mut generation,
                        pieces,
                        stop,
                        tools,
                    )
                    .instrument(attempt_span.clone())
                    .await;
                    break 'models;
                }
            };
            attempt_span.record("error", failure.failure.as_str());
            match recovery(failure.failure, false, retried_same_model) {
                Recovery::SameModelAgain => {
                    attempt_span.record("outcome", "retried");
                    tracing::info!(%model, error = %failure, "model request failed; retrying once");
                    retried_same_model = true;
                }
                Recovery::NextModel => {
                    attempt_span.record("outcome", "fell_back");
                    attempt_span.record("fallback_reason", failure.failure.as_str());
                    tracing::warn!(%model, error = %failure, "model failed before its first token; falling back");
                    state
                        .metrics
                        .fallbacks
                        .get_or_create(&vec![
                            ("model", model.clone()),
                            ("reason", failure.failure.as_str().to_owned()),
                        ])
                        .inc();
                    generation.fallbacks.push(Fallback {
                        model: model.clone(),
                        reason: failure.failure.as_str().to_owned(),
                    });
                    generation.ending = Ending::Failed(failure);
                    continue 'models;
                }
                Recovery::GiveUp => {
                    attempt_span.record("outcome", "gave_up");
                    tracing::warn!(%model, error = %failure, "model refused the request");
                    generation.ending = Ending::Failed(failure);
                    break 'models;
                }
            }
        }
    }
    generation.duration = started.elapsed();
    generation
}

/// Sends the request and waits for the first event.
async fn first_event(
    state: &AppState,
    request: LlmRequest,
) -> Result<(Box<dyn LlmStream>, Option<LlmEvent>), LlmError> {
    let mut stream = state.llm.converse_stream(request).await?;
    let event = stream.next().await?;
    Ok((stream, event))
}

/// How one model response ended.
enum Round {
    /// The reply ended (or failed, or was stopped).
    Ended(Ending),
    /// The model asked for tools: what it said in this response, and its calls.
    ToolUse { said: String, uses: Vec<ToolUse> },
}

/// A started reply through its tool rounds: each `tool_use` stop runs the calls and asks the same
/// model again with their results, under the same deadlines, at most
/// [`crate::tools::MAX_TOOL_ROUNDS`] times.
#[allow(clippy::too_many_arguments)]
async fn converse(
    state: &AppState,
    mut request: LlmRequest,
    started: (Box<dyn LlmStream>, Option<LlmEvent>),
    chunker: &mut Chunker,
    generation: &mut Generation,
    pieces: PieceSink<'_>,
    stop: &StopSignal,
    tools: &TurnTools<'_>,
) -> Ending {
    let (mut stream, mut event) = started;
    let mut rounds = 0;
    loop {
        let (said, uses) =
            match stream_reply(state, stream, event, chunker, generation, pieces, stop).await {
                Round::Ended(ending) => return ending,
                Round::ToolUse { said, uses } => (said, uses),
            };
        // What the model said before asking is the caller's to hear now, and stays said.
        if let Some(rest) = chunker.finish()
            && !send_piece(pieces, generation, rest)
        {
            return Ending::Stopped(Stop::ClientGone);
        }
        if rounds == crate::tools::MAX_TOOL_ROUNDS {
            tracing::warn!(
                call_id = tools.call_id,
                rounds,
                "the model kept calling tools; the turn ends"
            );
            return Ending::Failed(LlmError::new(
                ModelFailure::ToolRounds,
                format!("more than {rounds} tool rounds"),
            ));
        }
        rounds += 1;
        let outcome = {
            let mut log = Log {
                generation: &mut *generation,
                pieces,
            };
            crate::tools::run_round(state, tools, &uses, &mut log, stop).await
        };
        match outcome {
            RoundOutcome::Stopped(reason) => return Ending::Stopped(reason),
            RoundOutcome::EndSession(end) => {
                if generation.model_said.trim().is_empty() {
                    let line = crate::tools::closing_line(tools.agent, &end).to_owned();
                    if !say_line(pieces, generation, &line, false) {
                        return Ending::Stopped(Stop::ClientGone);
                    }
                }
                generation.session_end = Some(end);
                return Ending::Completed;
            }
            RoundOutcome::Results(results) => request.rounds.push(ToolRound {
                said,
                uses,
                results,
            }),
        }
        let deadline = state.config.bedrock.first_token_timeout;
        let next = tokio::select! {
            reason = stop.stopped() => return Ending::Stopped(reason),
            next = tokio::time::timeout(deadline, first_event(state, request.clone())) => next,
        };
        (stream, event) = match next {
            Ok(Ok(started)) => started,
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "model failed after a tool round");
                return Ending::Failed(error);
            }
            Err(_) => {
                return Ending::Failed(LlmError::new(
                    ModelFailure::Timeout,
                    format!("no first token within {deadline:?} after a tool round"),
                ));
            }
        };
    }
}

/// A round's view of the generation: the filler goes to the caller, calls are recorded.
struct Log<'g, 'p> {
    generation: &'g mut Generation,
    pieces: PieceSink<'p>,
}

impl RoundLog for Log<'_, '_> {
    fn say(&mut self, line: &str) -> bool {
        say_line(self.pieces, self.generation, line, true)
    }

    fn record(&mut self, call: ToolCall) {
        self.generation.tool_calls.push(call);
    }

    fn switched(&mut self, languages: LanguageSession) {
        self.generation.languages = Some(languages);
    }
}

/// Says one of the agent's own lines as a piece of the reply, after what was said (spaced so
/// that what `more_follows` reads on).
fn say_line(
    pieces: PieceSink<'_>,
    generation: &mut Generation,
    line: &str,
    more_follows: bool,
) -> bool {
    let before = if generation.sent.is_empty() || generation.sent.ends_with(char::is_whitespace) {
        ""
    } else {
        " "
    };
    let after = if more_follows { " " } else { "" };
    send_piece(pieces, generation, format!("{before}{line}{after}"))
}

/// Streams one model response, until it ends, asks for tools, fails, stalls or is stopped.
/// Dropping the stream on the way out cancels the model request.
async fn stream_reply(
    state: &AppState,
    mut stream: Box<dyn LlmStream>,
    mut event: Option<LlmEvent>,
    chunker: &mut Chunker,
    generation: &mut Generation,
    pieces: PieceSink<'_>,
    stop: &StopSignal,
) -> Round {
    let stall = state.config.bedrock.stall_timeout;
    let mut said = String::new();
    let mut uses = Vec::new();
    loop {
        match event {
            Some(LlmEvent::Text(mut text)) => {
                generation.deltas += 1;
                // A response resuming after a tool round starts where the caller's ear is:
                // spaced from what was already said.
                if said.is_empty()
                    && !generation.sent.is_empty()
                    && !generation.sent.ends_with(char::is_whitespace)
                    && !text.starts_with(char::is_whitespace)
                {
                    text.insert(0, ' ');
                }
                said.push_str(&text);
                generation.model_said.push_str(&text);
                for piece in chunker.push(&text) {
                    if !send_piece(pieces, generation, piece) {
                        return Round::Ended(Ending::Stopped(Stop::ClientGone));
                    }
                }
            }
            Some(LlmEvent::ToolUse(tool_use)) => uses.push(tool_use),
            Some(LlmEvent::Finished {
                stop_reason,
                usage,
                guardrail_trace,
            }) => {
                if stop_reason == GUARDRAIL_INTERVENED {
                    tracing::info!(
                        model = generation.model.as_deref().unwrap_or(""),
                        trace = guardrail_trace.as_deref().unwrap_or(""),
                        "the guardrail intervened"
                    );
                }
                // Every response of the turn is paid for: usage adds up over tool rounds.
                if let Some(usage) = usage {
                    let total = generation.usage.get_or_insert_with(Usage::default);
                    total.input_tokens += usage.input_tokens;
                    total.output_tokens += usage.output_tokens;
                }
                let asked_for_tools = stop_reason == shared::turn::TOOL_USE && !uses.is_empty();
                generation.stop_reason = Some(stop_reason);
                if asked_for_tools {
                    drop(stream);
                    return Round::ToolUse { said, uses };
                }
                break;
            }
            None => break,
        }
        event = tokio::select! {
            reason = stop.stopped() => return Round::Ended(Ending::Stopped(reason)),
            next = tokio::time::timeout(stall, stream.next()) => match next {
                Ok(Ok(next)) => next,
                Ok(Err(error)) => {
                    tracing::warn!(error = %error, "model failed mid-reply");
                    return Round::Ended(Ending::Failed(error));
                }
                Err(_) => {
                    tracing::warn!(stall_ms = stall.as_millis(), "model stream stalled mid-reply");
                    return Round::Ended(Ending::Failed(LlmError::new(
                        shared::model::ModelFailure::Stalled,
                        format!("no event within {stall:?}"),
                    )));
                }
            },
        };
    }
    drop(stream);
    if let Some(rest) = chunker.finish()
        && !send_piece(pieces, generation, rest)
    {
        return Round::Ended(Ending::Stopped(Stop::ClientGone));
    }
    Round::Ended(Ending::Completed)
}

fn send_piece(pieces: PieceSink<'_>, generation: &mut Generation, piece: String) -> bool {
    generation.sent.push_str(&piece);
    pieces(piece)
}

/// Stores the reply, publishes the event, counts the metrics.
async fn finish(
    state: &AppState,
    input: &TurnInput<'_>,
    user_seq: u32,
    generation: Generation,
) -> Result<TurnReport, TurnError> {
    let guardrail = generation.stop_reason.as_deref() == Some(GUARDRAIL_INTERVENED);
    let (reply_text, interrupted, outcome) = match &generation.ending {
        Ending::Completed if guardrail => (generation.sent.clone(), false, "guardrail_intervened"),
        Ending::Completed => (generation.sent.clone(), false, "completed"),
        Ending::Stopped(Stop::Interrupted { heard }) => (heard.clone(), true, "interrupted"),
        Ending::Stopped(Stop::Superseded | Stop::ClientGone) => {
            (generation.sent.clone(), true, "interrupted")
        }
        Ending::Stopped(Stop::NotDurable) => (String::new(), false, "not_durable"),
        Ending::Failed(_) => (generation.sent.clone(), false, "failed"),
    };
    let ttft_ms = generation.ttft.map(millis);
    let usage = generation.usage.unwrap_or(Usage {
        input_tokens: 0,
        output_tokens: generation.deltas,
    });
    // What the caller heard is stored: the model's words, the fallback utterance, or both. A
    // reply no model produced carries no model (and counts no model usage).
    let answered = generation.ttft.is_some();
    let spoke = (answered || generation.fallback_spoken) && outcome != "not_durable";
    if !spoke && !generation.tool_calls.is_empty() {
        tracing::warn!(
            call_id = input.call_id,
            calls = generation.tool_calls.len(),
            "tool calls made by a reply that was not stored"
        );
    }
    let failure_reason = match &generation.ending {
        Ending::Failed(error) => Some(error.failure.as_str().to_owned()),
        _ => None,
    };
    let mut reply_entry = None;
    let reply_seq = if spoke {
        let reply = NewTurn {
            role: TurnRole::Assistant,
            text: reply_text.clone(),
            interrupted,
            model: generation.model.clone().filter(|_| answered),
            input_tokens: generation.usage.map(|u| u.input_tokens),
            output_tokens: answered.then_some(usage.output_tokens),
            ttft_ms,
            duration_ms: Some(millis(generation.duration)),
            lang: input.reply_lang.map(str::to_owned),
            stop_reason: generation.stop_reason.clone(),
            failure_reason,
            tool_calls: generation.tool_calls.clone(),
            created_at_ms: state.now_ms(),
        };
        if let Some(journal) = input.journal {
            let announce = Announce {
                kind: reply_event(interrupted),
                model: generation.model.clone(),
                ttft_ms,
            };
            reply_entry = journal.push(
                state,
                Record::Turn {
                    turn: reply.clone(),
                    announce: Some(announce),
                },
            );
            // Written at once while the database is up (the session waits a little for it);
            // behind, when it returns, otherwise.
            let wait = if state.db_health.is_up() {
                state.config.journal_write_wait
            } else {
                Duration::ZERO
            };
            let seq = match reply_entry {
                Some(entry) => journal.written(entry, wait).await,
                None => None,
            };
            Some((seq.unwrap_or(0), reply))
        } else {
            match state
                .store
                .append_turns(input.tenant, input.call_id, std::slice::from_ref(&reply))
                .await
            {
                Ok(seqs) => {
                    // A `turn.completed` may be waiting in the outbox.
                    state.webhooks.wake();
                    seqs.first().copied().map(|seq| (seq, reply))
                }
                Err(error) => return Err(not_durable(state, error)),
            }
        }
    } else {
        None
    };

    let metrics = &state.metrics;
    metrics
        .turns
        .get_or_create(&label("outcome", outcome))
        .inc();
    // One line per turn, for the CloudWatch metric filters of origin/deploy/origin.yaml (turn
    // outcomes, interruptions, time to first token): the log group needs no signed scrape.
    tracing::info!(
        outcome,
        interrupted,
        model = generation.model.as_deref().unwrap_or(""),
        ttft_ms = ttft_ms.unwrap_or(0),
        answered = ttft_ms.is_some(),
        "turn finished"
    );
    if interrupted {
        metrics.interruptions.inc();
    }
    if guardrail {
        metrics
            .guardrail_interventions
            .get_or_create(&label(
                "model",
                generation.model.clone().unwrap_or_default(),
            ))
            .inc();
    }
    if let (Some(model), Some(ttft)) = (&generation.model, generation.ttft) {
        metrics
            .ttft
            .get_or_create(&label("model", model.clone()))
            .observe(ttft.as_secs_f64());
        metrics
            .turn_duration
            .get_or_create(&label("model", model.clone()))
            .observe(generation.duration.as_secs_f64());
        metrics
            .tokens
            .get_or_create(&label("direction", "input"))
            .inc_by(u64::from(usage.input_tokens));
        metrics
            .tokens
            .get_or_create(&label("direction", "output"))
            .inc_by(u64::from(usage.output_tokens));
    }
    let (reply_seq, reply) = reply_seq.unzip();
    // A journaled reply is announced by the journal, once written.
    if let Some(seq) = reply_seq.filter(|_| input.journal.is_none()) {
        let kind = reply_event(interrupted);
        publish(
            state,
            input.tenant,
            input.call_id,
            kind,
            Some(seq),
            generation.model.clone(),
            ttft_ms,
            state.now_ms(),
        )
        .await;
    }
    Ok(TurnReport {
        user_seq,
        reply_seq,
        ending: generation.ending,
        reply_text,
        model: generation.model,
        usage,
        timings: Timings {
            ttft_ms: ttft_ms.unwrap_or(0),
            duration_ms: millis(generation.duration),
        },
        fallbacks: generation.fallbacks,
        stop_reason: generation.stop_reason,
        reply,
        session_end: generation.session_end,
        languages: generation.languages,
        reply_entry,
    })
}

/// Counts a turn that could not be made durable, and says why.
fn not_durable(state: &AppState, error: StoreError) -> TurnError {
    state.metrics.db_error(&error);
    state
        .metrics
        .turns
        .get_or_create(&label("outcome", "not_durable"))
        .inc();
    TurnError::Store(error)
}

/// The event a stored reply announces.
fn reply_event(interrupted: bool) -> CallEventKind {
    if interrupted {
        CallEventKind::TurnInterrupted
    } else {
        CallEventKind::TurnFinished
    }
}

/// Publishes a call event.
#[allow(clippy::too_many_arguments)]
pub async fn publish(
    state: &AppState,
    tenant: &str,
    call_id: &str,
    kind: CallEventKind,
    seq: Option<u32>,
    model: Option<String>,
    ttft_ms: Option<u32>,
    at_ms: u64,
) {
    let mut event = CallEvent::new(kind, tenant, call_id, at_ms);
    event.seq = seq;
    event.model = model;
    event.ttft_ms = ttft_ms;
    state.fanout.publish(event).await;
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}
