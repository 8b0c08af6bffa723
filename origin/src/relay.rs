//! `GET /v1/calls/{id}/relay`: a call's ConversationRelay WebSocket, relayed unchanged by the
//! `CallSession` Durable Object.
//!
//! - `setup` binds the call (creating it when the edge has not: the agent from the
//!   `agentId` custom parameter, else the agent owning the called number) and loads its stored
//!   turns, so a reconnect to any replica continues the same conversation. The agent's greeting
//!   is spoken (and stored) on the call's first setup, unless the custom parameter
//!   `greeting=carrier` says the carrier already spoke it (TwiML `welcomeGreeting`).
//! - A final `prompt` starts a turn; its reply streams as `text` pieces with `last: false`, and
//!   an empty `text` with `last: true` closes the turn once it is durable.
//! - `interrupt` cancels the model stream at once and stores what the caller heard; after the
//!   reply already ended it corrects the stored reply to what was heard.
//! - `dtmf` is stored as a turn and reaches the model with the next prompt.
//! - Ending the call through the API (any replica) sends `end` with `handoffData` and closes.
//! - Unknown or malformed messages are answered with `{"type":"error",…}` and logged; the
//!   socket stays open.
//! - On shutdown the socket is closed (1012, service restart) once the live turn is done, so
//!   the Durable Object reconnects to another replica.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use shared::agent::Agent;
use shared::call::{Call, CallStatus, CreateCall};
use shared::call_event::CallEventKind;
use shared::chunking::{ChunkPolicy, chunk_text};
use shared::relay::{Inbound, Outbound, PromptAssembler, RelayError, Setup, parse_inbound};
use shared::turn::{Turn, TurnRole};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::AppState;
use crate::edge_auth::Caller;
use crate::error::{AppError, Failed, OrFail};
use crate::fanout::SessionSignal;
use crate::metrics::label;
use crate::request_id::RequestId;
use crate::routes::{load_agent, stored};
use crate::store::NewTurn;
use crate::turn::{self, Ending, Stop, StopSignal, TurnError, TurnInput, TurnReport};

/// Close code when the origin shuts down: the edge reconnects elsewhere.
const CLOSE_RESTART: u16 = 1012;
/// Read buffer per socket; relay messages are small, and 10,000 sockets share the memory.
const READ_BUFFER: usize = 4 * 1024;
/// Largest frame read; bigger ones are answered `message_too_large` by the parser.
const MAX_MESSAGE: usize = 1024 * 1024;

/// The upgrade: refuses an ended call or an unavailable database before switching protocols.
pub async fn upgrade(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(id): Path<String>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, Failed> {
    let ws = ws
        .map_err(|rejection| AppError::bad_request("websocket_required", rejection.body_text()))
        .or_fail(&request_id)?;
    shared::call::check_id(&id)
        .map_err(|error| AppError::bad_request("invalid_id", error.to_string()))
        .or_fail(&request_id)?;
    let tenant = caller.tenant().to_owned();
    let call = stored(&state, state.store.get_call(&tenant, &id).await).or_fail(&request_id)?;
    if call.as_ref().is_some_and(|c| c.status == CallStatus::Ended) {
        return Err(Failed(
            AppError::conflict("call_ended", "the call has ended"),
            request_id,
        ));
    }
    let region = crate::routes::calls::region(&state, &headers);
    Ok(ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            Session::new(state, tenant, id, region).run(socket).await;
        }))
}

/// What a socket writer is asked to do.
enum Out {
    Text(String),
    Close(u16, &'static str),
}

/// A turn running in the background, with what the session needs when it ends.
struct LiveTurn {
    stop: StopSignal,
    text: String,
    handle: JoinHandle<Result<TurnReport, TurnError>>,
}

/// The call a session is bound to.
struct Bound {
    call: Call,
    agent: Arc<Agent>,
    history: Vec<Turn>,
}

struct Session {
    state: AppState,
    tenant: String,
    call_id: String,
    region: String,
    out: mpsc::UnboundedSender<Out>,
    out_rx: Option<mpsc::UnboundedReceiver<Out>>,
    bound: Option<Bound>,
    live: Option<LiveTurn>,
    prompts: PromptAssembler,
    /// The last stored reply, which a late `interrupt` corrects: (seq, index in history).
    last_reply: Option<(u32, usize)>,
}

impl Session {
    fn new(state: AppState, tenant: String, call_id: String, region: String) -> Self {
        let (out, out_rx) = mpsc::unbounded_channel();
        Self {
            state,
            tenant,
            call_id,
            region,
            out,
            out_rx: Some(out_rx),
            bound: None,
            live: None,
            prompts: PromptAssembler::default(),
            last_reply: None,
        }
    }

    fn send(&self, message: &Outbound) {
        let _ = self.out.send(Out::Text(message.to_json()));
    }

    fn reject(&self, error: &RelayError) {
        tracing::warn!(call_id = %self.call_id, code = error.code(), %error, "relay message refused");
        self.state
            .metrics
            .relay_rejected
            .get_or_create(&label("code", error.code()))
            .inc();
        self.send(&Outbound::error(error));
    }

    fn fail(&self, code: &str, description: String) {
        tracing::warn!(call_id = %self.call_id, code, %description, "relay request failed");
        let _ = self.out.send(Out::Text(
            Outbound::Error {
                code: code.to_owned(),
                description,
            }
            .to_json(),
        ));
    }

    async fn run(mut self, socket: WebSocket) {
        let metrics = Arc::clone(&self.state.metrics);
        metrics.relay_connections.inc();
        let (mut sink, mut stream) = socket.split();
        let Some(mut out_rx) = self.out_rx.take() else {
            return;
        };
        let writer = tokio::spawn(async move {
            while let Some(item) = out_rx.recv().await {
                let sent = match item {
                    Out::Text(text) => sink.send(Message::Text(Utf8Bytes::from(text))).await,
                    Out::Close(code, reason) => {
                        let _ = sink
                            .send(Message::Close(Some(CloseFrame {
                                code,
                                reason: Utf8Bytes::from_static(reason),
                            })))
                            .await;
                        break;
                    }
                };
                if sent.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let (_registration, mut signals) = self
            .state
            .fanout
            .register_session(&self.tenant, &self.call_id);
        let shutdown = self.state.shutdown.clone();
        let mut closing = false;

        loop {
            tokio::select! {
                inbound = stream.next() => match inbound {
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
                    Some(Ok(Message::Binary(_))) => self.reject(&RelayError::Binary),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(error)) => {
                        tracing::info!(call_id = %self.call_id, %error, "relay socket failed");
                        break;
                    }
                },
                finished = live_turn(&mut self.live) => self.on_turn_finished(finished),
                Some(signal) = signals.recv() => {
                    match signal {
                        SessionSignal::Ended { reason, handoff_data } => {
                            if let Some(live) = &self.live {
                                live.stop.stop(Stop::Superseded);
                            }
                            self.settle_live_turn().await;
                            let mut handoff = serde_json::json!({ "reason": reason, "callId": self.call_id });
                            if let Some(data) = handoff_data {
                                handoff["data"] = data;
                            }
                            self.send(&Outbound::End { handoff_data: handoff.to_string() });
                            let _ = self.out.send(Out::Close(1000, "call ended"));
                            break;
                        }
                    }
                },
                () = shutdown.cancelled(), if !closing => {
                    closing = true;
                    if self.live.is_none() {
                        let _ = self.out.send(Out::Close(CLOSE_RESTART, "origin restarting"));
                        break;
                    }
                    // The live turn finishes first; the loop closes after it (below).
                }
            }
            if closing && self.live.is_none() {
                let _ = self
                    .out
                    .send(Out::Close(CLOSE_RESTART, "origin restarting"));
                break;
            }
        }
        // The caller is gone (or the call ended): a live reply is cut where it was.
        if let Some(live) = &self.live {
            live.stop.stop(Stop::ClientGone);
        }
        self.settle_live_turn().await;
        drop(self.out);
        let _ = writer.await;
        metrics.relay_connections.dec();
    }

    /// Waits for the live turn (already told to stop) and records its outcome.
    async fn settle_live_turn(&mut self) {
        if let Some(live) = self.live.take() {
            let finished = live.handle.await.map_err(|join| join.to_string());
            self.record(finished, live.text);
        }
    }

    async fn on_text(&mut self, text: &str) {
        let message = match parse_inbound(text) {
            Ok(message) => message,
            Err(error) => return self.reject(&error),
        };
        match (message, self.bound.is_some()) {
            (Inbound::Setup(_), true) => self.reject(&RelayError::SetupTwice),
            (Inbound::Setup(setup), false) => self.on_setup(setup).await,
            (Inbound::Error(error), _) => {
                tracing::warn!(call_id = %self.call_id, description = %error.description, "carrier reported an error");
            }
            (_, false) => self.reject(&RelayError::SetupFirst),
            (Inbound::Prompt(prompt), true) => {
                if let Some(utterance) = self.prompts.push(&prompt)
                    && !utterance.trim().is_empty()
                {
                    self.start_turn(utterance).await;
                }
            }
            (Inbound::Dtmf(dtmf), true) => self.on_dtmf(dtmf.digit).await,
            (Inbound::Interrupt(interrupt), true) => {
                self.on_interrupt(interrupt.utterance_until_interrupt).await;
            }
        }
    }

    async fn on_setup(&mut self, setup: Setup) {
        let state = &self.state;
        let call = match stored(
            state,
            state.store.get_call(&self.tenant, &self.call_id).await,
        ) {
            Ok(Some(call)) => call,
            Ok(None) => {
                let request = CreateCall {
                    id: Some(self.call_id.clone()),
                    agent_id: setup.agent_id(),
                    source: crate::routes::calls::RELAY_SOURCE,
                    carrier_call_sid: non_empty(&setup.call_sid),
                    from: non_empty(&setup.from),
                    to: non_empty(&setup.to),
                };
                if let Err(error) = request.validate() {
                    return self.fail("invalid_setup", error.to_string());
                }
                match crate::routes::calls::start_call(
                    state,
                    &self.tenant,
                    &request,
                    self.region.clone(),
                )
                .await
                {
                    Ok(call) => call,
                    Err(error) => return self.fail(error.code(), error.to_string()),
                }
            }
            Err(error) => {
                return self.fail(
                    AppError::from(error).code(),
                    "the database is unavailable; retry the setup".into(),
                );
            }
        };
        if call.status == CallStatus::Ended {
            return self.fail("call_ended", "the call has ended".into());
        }
        let agent = match load_agent(state, &self.tenant, &call.agent_id).await {
            Ok(Some(agent)) => Arc::new(agent),
            Ok(None) => {
                return self.fail("agent_missing", "the call's agent no longer exists".into());
            }
            Err(error) => {
                return self.fail(
                    AppError::from(error).code(),
                    "the database is unavailable; retry the setup".into(),
                );
            }
        };
        let history = match stored(
            state,
            state.store.list_turns(&self.tenant, &self.call_id).await,
        ) {
            Ok(history) => history,
            Err(error) => {
                return self.fail(
                    AppError::from(error).code(),
                    "the database is unavailable; retry the setup".into(),
                );
            }
        };
        let greet = history.is_empty() && !setup.carrier_greets();
        self.bound = Some(Bound {
            call,
            agent: Arc::clone(&agent),
            history,
        });
        if greet && let Some(greeting) = agent.spec.greeting.clone() {
            self.greet(greeting).await;
        }
    }

    /// Speaks the greeting and stores it as the agent's first turn.
    async fn greet(&mut self, greeting: String) {
        for piece in chunk_text(&greeting, ChunkPolicy::default()) {
            self.send(&Outbound::token(piece));
        }
        let turn = NewTurn::said(TurnRole::Assistant, greeting, self.state.now_ms());
        match stored(
            &self.state,
            self.state
                .store
                .append_turns(&self.tenant, &self.call_id, std::slice::from_ref(&turn))
                .await,
        ) {
            Ok(seqs) => {
                let seq = seqs.first().copied().unwrap_or(0);
                self.push_history(seq, &turn);
                self.send(&Outbound::turn_end());
            }
            Err(error) => self.fail(
                AppError::from(error).code(),
                "the greeting could not be stored".into(),
            ),
        }
    }

    fn push_history(&mut self, seq: u32, turn: &NewTurn) {
        if let Some(bound) = &mut self.bound {
            bound.history.push(Turn {
                seq,
                role: turn.role,
                text: turn.text.clone(),
                interrupted: turn.interrupted,
                model: turn.model.clone(),
                input_tokens: turn.input_tokens,
                output_tokens: turn.output_tokens,
                ttft_ms: turn.ttft_ms,
                duration_ms: turn.duration_ms,
                created_at_ms: turn.created_at_ms,
            });
            if turn.role == TurnRole::Assistant {
                self.last_reply = Some((seq, bound.history.len() - 1));
            } else {
                self.last_reply = None;
            }
        }
    }

    async fn start_turn(&mut self, text: String) {
        if let Some(live) = &self.live {
            // The caller spoke again before the reply ended: that reply is cut where it was.
            live.stop.stop(Stop::Superseded);
            self.settle_live_turn().await;
        }
        let Some(bound) = &self.bound else { return };
        let state = self.state.clone();
        let out = self.out.clone();
        let stop = StopSignal::default();
        let tenant = self.tenant.clone();
        let call_id = bound.call.id.clone();
        let agent = Arc::clone(&bound.agent);
        let history = bound.history.clone();
        let turn_text = text.clone();
        let turn_stop = stop.clone();
        let handle = tokio::spawn(async move {
            let sink = move |piece: String| {
                out.send(Out::Text(Outbound::token(piece).to_json()))
                    .is_ok()
            };
            turn::run(
                &state,
                TurnInput {
                    tenant: &tenant,
                    call_id: &call_id,
                    agent: &agent,
                    history: &history,
                    text: &turn_text,
                },
                &sink,
                &turn_stop,
            )
            .await
        });
        self.live = Some(LiveTurn { stop, text, handle });
    }

    fn on_turn_finished(&mut self, finished: Result<Result<TurnReport, TurnError>, String>) {
        let user_text = self.live.take().map(|live| live.text).unwrap_or_default();
        self.record(finished, user_text);
    }

    /// Updates the session after a turn and tells the carrier how it went.
    fn record(
        &mut self,
        finished: Result<Result<TurnReport, TurnError>, String>,
        user_text: String,
    ) {
        let report = match finished {
            Ok(Ok(report)) => report,
            Ok(Err(error)) => {
                return self.fail(
                    "not_durable",
                    format!("{error}; the turn is not complete, say it again"),
                );
            }
            Err(join) => return self.fail("internal", format!("the turn task failed: {join}")),
        };
        let now = self.state.now_ms();
        let user = NewTurn::said(TurnRole::User, user_text, now);
        self.push_history(report.user_seq, &user);
        if let Some(seq) = report.reply_seq {
            let reply = NewTurn {
                role: TurnRole::Assistant,
                text: report.reply_text.clone(),
                interrupted: matches!(report.ending, Ending::Stopped(_)),
                model: report.model.clone(),
                input_tokens: Some(report.usage.input_tokens),
                output_tokens: Some(report.usage.output_tokens),
                ttft_ms: Some(report.timings.ttft_ms),
                duration_ms: Some(report.timings.duration_ms),
                created_at_ms: now,
            };
            self.push_history(seq, &reply);
        }
        match &report.ending {
            Ending::Completed => self.send(&Outbound::turn_end()),
            // An interrupted reply gets no closing message: the carrier already moved on.
            Ending::Stopped(_) => {}
            Ending::Failed(error) => {
                self.fail(
                    "model_unavailable",
                    format!(
                        "the model failed ({}); every model of the agent's chain was tried",
                        error.failure.as_str()
                    ),
                );
                self.send(&Outbound::turn_end());
            }
        }
    }

    async fn on_dtmf(&mut self, digit: String) {
        let turn = NewTurn::said(TurnRole::Dtmf, digit, self.state.now_ms());
        match stored(
            &self.state,
            self.state
                .store
                .append_turns(&self.tenant, &self.call_id, std::slice::from_ref(&turn))
                .await,
        ) {
            Ok(seqs) => {
                let seq = seqs.first().copied().unwrap_or(0);
                self.push_history(seq, &turn);
            }
            Err(error) => self.fail(
                AppError::from(error).code(),
                "the key press could not be stored".into(),
            ),
        }
    }

    async fn on_interrupt(&mut self, heard: String) {
        if let Some(live) = &self.live {
            live.stop.stop(Stop::Interrupted { heard });
            // The model stream is dropped at once; waiting for the turn to store what was heard
            // (one write) keeps whatever the caller does next after it in the call's order.
            self.settle_live_turn().await;
            return;
        }
        // The reply had already been generated; the caller cut its playback short.
        let Some((seq, index)) = self.last_reply else {
            return;
        };
        match stored(
            &self.state,
            self.state
                .store
                .mark_interrupted(&self.tenant, &self.call_id, seq, &heard)
                .await,
        ) {
            Ok(_) => {
                if let Some(turn) = self.bound.as_mut().and_then(|b| b.history.get_mut(index)) {
                    turn.text.clone_from(&heard);
                    turn.interrupted = true;
                }
                self.last_reply = None;
                self.state.metrics.interruptions.inc();
                turn::publish(
                    &self.state,
                    &self.tenant,
                    &self.call_id,
                    CallEventKind::TurnInterrupted,
                    Some(seq),
                    None,
                    None,
                    self.state.now_ms(),
                )
                .await;
            }
            Err(error) => self.fail(
                AppError::from(error).code(),
                "the interruption could not be stored".into(),
            ),
        }
    }
}

/// Resolves when the live turn ends; never when there is none.
async fn live_turn(live: &mut Option<LiveTurn>) -> Result<Result<TurnReport, TurnError>, String> {
    match live {
        Some(live) => (&mut live.handle).await.map_err(|join| join.to_string()),
        None => std::future::pending().await,
    }
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}
