//! `GET /v1/calls/{id}/relay`: a call's ConversationRelay WebSocket, relayed unchanged by the
//! `CallSession` Durable Object.
//!
//! - `setup` binds the call (creating it when the edge has not: the agent from the
//!   `agentId` custom parameter, else the agent owning the called number) and loads its stored
//!   turns, so a reconnect to any replica continues the same conversation — while the database
//!   is away, from the context another replica kept in Redis (`crate::journal`, a takeover),
//!   whose waiting turns this session's journal adopts. The agent's greeting
//!   is spoken (and stored) on the call's first setup, unless the custom parameter
//!   `greeting=carrier` says the carrier already spoke it (TwiML `welcomeGreeting`).
//! - A final `prompt` starts a turn; its reply streams as `text` pieces with `last: false`, and
//!   an empty `text` with `last: true` closes the turn once it is journaled (`crate::journal`):
//!   written, while the database is up; waiting in the call's journal, to be written in order
//!   once it is back, while it is away — the call goes on either way.
//! - `interrupt` cancels the model stream at once and stores what the caller heard; after the
//!   reply already ended it corrects the stored reply to what was heard.
//! - `dtmf` is stored as a turn and reaches the model with the next prompt.
//! - Ending the call through the API (any replica) sends `end` with `handoffData` and closes.
//! - Malformed messages are answered with `{"type":"error",…}` (a note for the Durable
//!   Object's log, never forwarded to the carrier) and logged; the socket stays open. `info`
//!   messages are logged at debug and counted, nothing more. A type this protocol does not
//!   know is logged at debug and counted, and gets the same note (the edge's log keeps it);
//!   nothing else of the call changes.
//! - `setup` stores what an operator needs about the caller (caller name, forwarded-from, call
//!   type) with the call.
//! - Language: each prompt's `lang` is stored with the turn and given to the model; the reply
//!   switches the carrier's language (`language`) or marks its text (`lang`) as
//!   `shared::language` decides, and its `text` carries the agent's `interruptible` and
//!   `preemptible`.
//! - Never silence: a failed model turn ends with the agent's fallback utterance (see
//!   `turn`); a silent caller is reprompted, told goodbye, and the session ended with `end`
//!   (`handoffData.reason = "idle_timeout"`) as `shared::idle` decides; the call is recorded as
//!   ended with that reason.
//! - Tools (`crate::tools`): the agent's built-ins act on this session — `sendDigits` and
//!   `language` go out as the model calls them; `end_call` and `transfer_call` end the session
//!   once the reply is stored: the call is recorded as ended (`agent_ended`, `transferred`) and
//!   `end` carries `handoffData` (`shared::handoff`: `{"reason":"transfer","target",…}`), which
//!   the carrier hands to the edge's `<Connect action>` route.
//! - On shutdown the socket is closed (1012, service restart) once the live turn is done, so
//!   the Durable Object reconnects to another replica.
//! - Answering machines (outbound calls): when the edge reports what detection found
//!   (`POST /v1/calls/{id}/answered-by`, told to this session over the fan-out, or read from the
//!   call at `setup` when it came first), `shared::voicemail` decides: a person talks on; a
//!   machine whose greeting ended hears the agent's `voicemail_message` (stored with the call),
//!   and once it has had time to be said the session ends (`voicemail_left`); any other machine
//!   is hung up on (`machine_answered`). Nothing the machine says is answered meanwhile.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use shared::agent::Agent;
use shared::call::{Call, CallStatus, CreateCall};
use shared::call_event::{CallEvent, CallEventKind};
use shared::call_session::EndReason;
use shared::carrier::AnsweredBy;
use shared::chunking::{ChunkPolicy, chunk_text};
use shared::handoff::HandoffData;
use shared::idle::{IdleAction, IdleTimer};
use shared::language::LanguageSession;
use shared::relay::{
    Inbound, Outbound, PromptAssembler, RelayError, Setup, TextOptions, parse_inbound,
};
use shared::turn::{Turn, TurnRole};
use shared::voicemail::{self, OnAnswer};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::AppState;
use crate::edge_auth::Caller;
use crate::error::{AppError, Failed, OrFail};
use crate::fanout::SessionSignal;
use crate::journal::{Announce, CallJournal, Journals, Record, Reply, Takeover};
use crate::metrics::label;
use crate::request_id::RequestId;
use crate::routes::{load_agent, stored};
use crate::store::{EndOutcome, NewTurn, StoreError};
use crate::tools::{Carrier, SessionEnd};
use crate::turn::{self, Ending, Stop, StopSignal, TurnError, TurnInput, TurnReport};

/// Close code when the origin shuts down: the edge reconnects elsewhere, and says again there
/// a caller turn this session never answered (`shared::call_session::relay::OriginClosed`).
const CLOSE_RESTART: u16 = shared::call_session::relay::CLOSE_SERVICE_RESTART;
/// Read buffer per socket; relay messages are small, and 10,000 sockets share the memory.
const READ_BUFFER: usize = 4 * 1024;
/// Largest frame read; bigger ones are answered `message_too_large` by the parser.
const MAX_MESSAGE: usize = 1024 * 1024;

/// The upgrade: refuses a draining origin, an ended call or an unavailable database before
/// switching protocols.
pub async fn upgrade(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(id): Path<String>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, Failed> {
    if state.draining() {
        // Before anything else: the Durable Object moves on to its next target at once.
        return Err(Failed(AppError::Draining, request_id));
    }
    let ws = ws
        .map_err(|rejection| AppError::bad_request("websocket_required", rejection.body_text()))
        .or_fail(&request_id)?;
    shared::call::check_id(&id)
        .map_err(|error| AppError::bad_request("invalid_id", error.to_string()))
        .or_fail(&request_id)?;
    let tenant = caller.tenant().to_owned();
    let call = match stored_call(&state, &tenant, &id).await {
        // The database is away: a call another replica kept the context of goes on here.
        Err(error @ StoreError::Unavailable(_)) => match Takeover::load(&state, &tenant, &id).await
        {
            Some(takeover) => Some(takeover.call),
            None => return Err(Failed(error.into(), request_id)),
        },
        call => call.or_fail(&request_id)?,
    };
    if call.as_ref().is_some_and(|c| c.status == CallStatus::Ended) {
        return Err(Failed(
            AppError::conflict("call_ended", "the call has ended"),
            request_id,
        ));
    }
    let region = crate::routes::calls::region(&state, &headers);
    // The session runs in a task of its own after the upgrade: it stays inside this request's
    // span (and so the edge's trace) for the whole call.
    let span = tracing::Span::current();
    Ok(ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| {
            async move {
                Session::new(state, tenant, id, region).run(socket).await;
            }
            .instrument(span)
        }))
}

/// The stored call; unavailable at once while the probe finds the database down (a takeover
/// is then read instead of waiting out the pool's timeout).
async fn stored_call(state: &AppState, tenant: &str, id: &str) -> Result<Option<Call>, StoreError> {
    if !state.db_health.is_up() {
        return Err(StoreError::Unavailable("the database is down".into()));
    }
    stored(state, state.store.get_call(tenant, id).await)
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
    lang: Option<String>,
    handle: JoinHandle<Result<TurnReport, TurnError>>,
}

/// The call a session is bound to.
struct Bound {
    call: Call,
    agent: Arc<Agent>,
    history: Vec<Turn>,
    languages: LanguageSession,
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
    /// The language of the utterance being gathered (the latest prompt that reported one).
    prompt_lang: Option<String>,
    /// The last reply, which a late `interrupt` corrects: (its journal entry, index in history).
    last_reply: Option<(u64, usize)>,
    /// Where every turn is kept until the database has it (`crate::journal`).
    journal: Arc<CallJournal>,
    /// When a silent caller is reprompted.
    idle: IdleTimer,
    /// A built-in ended the session: done once the turn that called it is recorded.
    ending: Option<SessionEnd>,
    /// When the voicemail message being left has been said (the session ends then).
    voicemail_said_at: Option<u64>,
    /// The session ended itself (`end` sent): the loop stops.
    finished: bool,
}

/// `handoffData` of an `end` a client asked for: why, which call, and what the client added
/// (under `data`; a transfer's `target`, `summary`, `caller_id` and `whisper` are also lifted
/// to the top, where the edge's action route reads them).
fn handoff(reason: &str, call_id: &str, data: Option<serde_json::Value>) -> HandoffData {
    let mut handoff = HandoffData::new(reason, call_id);
    if let Some(serde_json::Value::Object(fields)) = &data {
        let text = |key: &str| {
            fields
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        handoff.target = text("target");
        handoff.summary = text("summary");
        handoff.caller_id = text("caller_id").or_else(|| text("callerId"));
        handoff.whisper = fields
            .get("whisper")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
    }
    handoff.data = data;
    handoff
}

/// Resolves at `deadline_ms` on the state's clock; never without one.
async fn wake_at(state: &AppState, deadline_ms: Option<u64>) {
    match deadline_ms {
        Some(due) => {
            let wait = due.saturating_sub(state.now_ms());
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        }
        None => std::future::pending().await,
    }
}

impl Session {
    fn new(state: AppState, tenant: String, call_id: String, region: String) -> Self {
        let (out, out_rx) = mpsc::unbounded_channel();
        let journal = Journals::open(&state, &tenant, &call_id);
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
            prompt_lang: None,
            last_reply: None,
            journal,
            idle: IdleTimer::new(None),
            ending: None,
            voicemail_said_at: None,
            finished: false,
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
                            self.send(&Outbound::End {
                                handoff_data: handoff(&reason, &self.call_id, handoff_data)
                                    .to_json(),
                            });
                            let _ = self.out.send(Out::Close(1000, "call ended"));
                            break;
                        }
                        SessionSignal::Answered(answered_by) => self.on_answered(answered_by).await,
                    }
                },
                () = wake_at(&self.state, self.voicemail_said_at) => {
                    self.end_for(EndReason::VoicemailLeft).await;
                },
                () = wake_at(&self.state, self.idle.poll_timeout()), if self.live.is_none() => {
                    if self.on_idle().await {
                        break;
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
            if let Some(end) = self.ending.take() {
                // A built-in ended the session; its reply is recorded and closed.
                self.end_session(end).await;
            }
            if self.finished {
                break;
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
        // What waits is written once the database has returned; the flusher then ends.
        self.journal.close();
        drop(self.out);
        let _ = writer.await;
        metrics.relay_connections.dec();
    }

    /// Waits for the live turn (already told to stop) and records its outcome.
    async fn settle_live_turn(&mut self) {
        if let Some(live) = self.live.take() {
            let finished = live.handle.await.map_err(|join| join.to_string());
            self.record(finished, live.text, live.lang);
        }
    }

    /// Counts a carrier message that is read and let be.
    fn ignore(&self, kind: &str) {
        self.state
            .metrics
            .relay_ignored
            .get_or_create(&label("type", kind))
            .inc();
    }

    async fn on_text(&mut self, text: &str) {
        let message = match parse_inbound(text) {
            Ok(message) => message,
            Err(RelayError::UnknownType(kind)) => {
                // A type added after this code: the carrier gets nothing back; the edge's log
                // keeps a note of it.
                tracing::debug!(call_id = %self.call_id, %kind, "relay message of an unknown type");
                self.ignore("unknown");
                return self.send(&Outbound::error(&RelayError::UnknownType(kind)));
            }
            Err(error) => return self.reject(&error),
        };
        let now = self.state.now_ms();
        match (message, self.bound.is_some()) {
            (Inbound::Info(info), _) => {
                tracing::debug!(call_id = %self.call_id, info = %serde_json::Value::Object(info), "carrier info");
                self.ignore("info");
            }
            (Inbound::Setup(_), true) => self.reject(&RelayError::SetupTwice),
            (Inbound::Setup(setup), false) => self.on_setup(*setup).await,
            (Inbound::Error(error), _) => {
                tracing::warn!(call_id = %self.call_id, description = %error.description, "carrier reported an error");
            }
            (_, false) => self.reject(&RelayError::SetupFirst),
            // Leaving a voicemail: what the machine says (its beep, its silence) is not a turn.
            (Inbound::Prompt(_) | Inbound::Dtmf(_) | Inbound::Interrupt(_), true)
                if self.voicemail_said_at.is_some() =>
            {
                self.ignore("voicemail");
            }
            (Inbound::Prompt(prompt), true) => {
                if prompt.lang.is_some() {
                    self.prompt_lang.clone_from(&prompt.lang);
                }
                if let Some(utterance) = self.prompts.push(&prompt) {
                    let lang = self.prompt_lang.take();
                    if utterance.trim().is_empty() {
                        self.idle.on_caller(now);
                    } else {
                        self.start_turn(utterance, lang).await;
                    }
                } else {
                    // The caller is still speaking.
                    self.idle.on_caller(now);
                }
            }
            (Inbound::Dtmf(dtmf), true) => {
                self.idle.on_caller(now);
                self.on_dtmf(dtmf.digit).await;
            }
            (Inbound::Interrupt(interrupt), true) => {
                self.idle.on_caller(now);
                self.on_interrupt(interrupt.utterance_until_interrupt).await;
            }
        }
    }

    async fn on_setup(&mut self, setup: Setup) {
        let state = &self.state;
        let call = match stored_call(state, &self.tenant, &self.call_id).await {
            Err(StoreError::Unavailable(_))
                if let Some(takeover) =
                    Takeover::load(state, &self.tenant, &self.call_id).await =>
            {
                return self.take_over(&setup, takeover).await;
            }
            Ok(Some(call)) => call,
            Ok(None) => {
                let request = CreateCall {
                    id: Some(self.call_id.clone()),
                    agent_id: setup.agent_id(),
                    source: crate::routes::calls::RELAY_SOURCE,
                    carrier_call_sid: non_empty(&setup.call_sid),
                    from: non_empty(&setup.from),
                    to: non_empty(&setup.to),
                    ..CreateCall::default()
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
        let caller = setup.caller();
        if !caller.is_empty()
            && let Err(error) = stored(
                state,
                state
                    .store
                    .record_caller(&self.tenant, &self.call_id, &caller)
                    .await,
            )
        {
            // The call goes on without them; the operator loses a detail, not the caller.
            tracing::warn!(call_id = %self.call_id, %error, "caller details not stored");
        }
        self.bind(&setup, call, agent, history).await;
    }

    /// Goes on with a call another replica's session held while the database is away: its
    /// history from the kept context, its waiting turns adopted by this session's journal.
    async fn take_over(&mut self, setup: &Setup, takeover: Takeover) {
        let Takeover {
            call,
            agent,
            history,
            pending,
        } = takeover;
        if call.status == CallStatus::Ended {
            return self.fail("call_ended", "the call has ended".into());
        }
        tracing::info!(call_id = %self.call_id, turns = history.len(), waiting = pending.len(), "taking a live call over while the database is away");
        self.journal.adopt(&self.state, pending);
        self.bind(setup, call, Arc::new(agent), history).await;
    }

    /// Binds the session to its call and greets (or waits for) the caller.
    async fn bind(&mut self, setup: &Setup, call: Call, agent: Arc<Agent>, history: Vec<Turn>) {
        let greet = history.is_empty() && !setup.carrier_greets();
        self.journal.bind(&self.state, &call, &agent, &history);
        self.bound = Some(Bound {
            call,
            agent: Arc::clone(&agent),
            history,
            languages: LanguageSession::new(&agent.spec.voice),
        });
        self.idle = IdleTimer::new(agent.spec.idle_policy());
        let answered_by = self.bound.as_ref().and_then(|bound| bound.call.answered_by);
        match agent.spec.greeting.clone() {
            Some(greeting) if greet && answered_by.is_none() => self.greet(greeting).await,
            // The carrier speaks it (or spoke it before a reconnect): silence counts after it.
            greeting => self
                .idle
                .on_spoke(self.state.now_ms(), greeting.as_deref().unwrap_or("")),
        }
        // Detection reported before the relay connected.
        if let Some(answered_by) = answered_by {
            self.on_answered(answered_by).await;
        }
    }

    /// What answering-machine detection found (see the module's documentation).
    async fn on_answered(&mut self, answered_by: AnsweredBy) {
        // Before `setup` the call is not bound: `setup` reads the stored result.
        let Some(bound) = &self.bound else { return };
        if self.voicemail_said_at.is_some() || self.finished {
            return;
        }
        let agent = Arc::clone(&bound.agent);
        let action = voicemail::on_answer(answered_by, agent.spec.voicemail_message.as_deref());
        tracing::info!(call_id = %self.call_id, answered_by = answered_by.as_str(), ?action, "answering-machine detection");
        if action == OnAnswer::Converse {
            return;
        }
        // Nothing more is said to a machine than the message.
        if let Some(live) = &self.live {
            live.stop.stop(Stop::Superseded);
        }
        self.settle_live_turn().await;
        self.idle = IdleTimer::new(None);
        match action {
            OnAnswer::LeaveMessage(message) => self.leave_voicemail(message).await,
            OnAnswer::HangUp | OnAnswer::Converse => self.end_for(EndReason::MachineAnswered).await,
        }
    }

    /// Says the voicemail message, stores it with the call, and ends the session once it has
    /// had time to be said.
    async fn leave_voicemail(&mut self, message: String) {
        let Some(bound) = &self.bound else { return };
        let voice = &bound.agent.spec.voice;
        let options = voice.text_options(bound.languages.line_lang(voice));
        self.send(&Outbound::text(message.clone(), true, &options));
        let now = self.state.now_ms();
        if let Err(error) = stored(
            &self.state,
            self.state
                .store
                .record_voicemail(&self.tenant, &self.call_id, &message, now)
                .await,
        ) {
            // Said all the same: the machine records it whatever the database does.
            tracing::warn!(call_id = %self.call_id, %error, "the voicemail was left but not stored");
        }
        self.voicemail_said_at = Some(now.saturating_add(voicemail::speaking_ms(&message)));
    }

    /// Speaks the greeting and stores it as the agent's first turn.
    async fn greet(&mut self, greeting: String) {
        for piece in chunk_text(&greeting, ChunkPolicy::default()) {
            self.send(&Outbound::token(piece));
        }
        let turn = NewTurn::said(TurnRole::Assistant, greeting, self.state.now_ms());
        self.store_turn(&turn, None).await;
        self.send(&Outbound::turn_end());
        self.idle.on_spoke(self.state.now_ms(), &turn.text);
    }

    /// Journals one turn (written at once while the database is up, the session waiting for
    /// it a little; behind otherwise) and keeps it in the session's history.
    async fn store_turn(&mut self, turn: &NewTurn, announce: Option<Announce>) {
        let entry = self.journal.push(
            &self.state,
            Record::Turn {
                turn: turn.clone(),
                announce,
            },
        );
        if entry.is_none() {
            self.journal_full();
        }
        let wait = if self.state.db_health.is_up() {
            self.state.config.journal_write_wait
        } else {
            std::time::Duration::ZERO
        };
        let seq = match entry {
            Some(entry) => self.journal.written(entry, wait).await,
            None => None,
        };
        self.push_history(seq.unwrap_or(0), entry, turn);
    }

    /// A turn did not fit in the journal (logged with its hash where it was refused): the
    /// edge's log gets a note; the call goes on.
    fn journal_full(&self) {
        self.fail(
            "journal_full",
            "a turn could not be kept while the database is away".into(),
        );
    }

    /// Says one of the agent's own lines (reprompt, goodbye) as one `text … last: true`, and
    /// stores it. Spoken even when it cannot be stored: the caller must not hear silence.
    async fn say_line(&mut self, line: String) {
        let Some(bound) = &self.bound else { return };
        let voice = &bound.agent.spec.voice;
        let options = voice.text_options(bound.languages.line_lang(voice));
        self.send(&Outbound::text(line.clone(), true, &options));
        let turn = NewTurn {
            lang: options.lang,
            ..NewTurn::said(TurnRole::Assistant, line, self.state.now_ms())
        };
        self.store_turn(&turn, None).await;
        self.idle.on_spoke(self.state.now_ms(), &turn.text);
    }

    /// The idle timer fired. True when the session ended.
    async fn on_idle(&mut self) -> bool {
        let Some(agent) = self.bound.as_ref().map(|b| Arc::clone(&b.agent)) else {
            return false;
        };
        let Some(action) = self.idle.on_timeout(self.state.now_ms()) else {
            return false;
        };
        let name = match action {
            IdleAction::Reprompt(_) => "reprompt",
            IdleAction::Goodbye => "goodbye",
            IdleAction::End => "end",
        };
        tracing::info!(call_id = %self.call_id, action = name, "the caller is silent");
        self.state
            .metrics
            .idle_actions
            .get_or_create(&label("action", name))
            .inc();
        match action {
            IdleAction::Reprompt(_) => self.say_line(agent.spec.idle_reprompt.clone()).await,
            IdleAction::Goodbye => self.say_line(agent.spec.idle_goodbye.clone()).await,
            IdleAction::End => {
                self.end_for(EndReason::IdleTimeout).await;
                return true;
            }
        }
        false
    }

    /// Ends the session for a reason of the origin's own (`idle_timeout`, `voicemail_left`,
    /// `machine_answered`): its `handoffData` names the reason and the call, nothing else.
    async fn end_for(&mut self, reason: EndReason) {
        let end = SessionEnd {
            end_reason: reason,
            handoff: HandoffData::new(reason.as_str(), &self.call_id),
        };
        self.end_session(end).await;
    }

    /// Records the end, tells every replica, and ends the relay session with `end`; the carrier
    /// then runs the `<Connect action>` (a transfer is dialled there) or hangs up.
    async fn end_session(&mut self, end: SessionEnd) {
        self.finished = true;
        self.voicemail_said_at = None;
        let state = &self.state;
        let reason = end.end_reason.as_str();
        let handoff = serde_json::to_value(&end.handoff).ok();
        match stored(
            state,
            state
                .store
                .end_call(
                    &self.tenant,
                    &self.call_id,
                    reason,
                    handoff.as_ref(),
                    state.now_ms(),
                )
                .await,
        ) {
            Ok(EndOutcome::Ended(call)) => {
                state.conversations.forget(&self.tenant, &self.call_id);
                let mut event = CallEvent::new(
                    CallEventKind::CallEnded,
                    &self.tenant,
                    &self.call_id,
                    call.ended_at_ms.unwrap_or_else(|| state.now_ms()),
                );
                event.reason = Some(reason.to_owned());
                event.handoff_data = handoff;
                state.fanout.publish(event).await;
                state.webhooks.wake();
            }
            Ok(EndOutcome::AlreadyEnded(_) | EndOutcome::NotFound) => {}
            Err(error) => {
                // The relay still ends: the edge's status callback records the end later.
                tracing::warn!(call_id = %self.call_id, %error, reason, "the session's end was not stored");
            }
        }
        tracing::info!(call_id = %self.call_id, reason, "the agent ended the session");
        self.send(&Outbound::End {
            handoff_data: end.handoff.to_json(),
        });
        let _ = self.out.send(Out::Close(1000, "call ended"));
    }

    /// Keeps a turn in the session's history (`seq` 0 while it is not written yet); a reply
    /// journaled at `entry` is the one a late `interrupt` corrects.
    fn push_history(&mut self, seq: u32, entry: Option<u64>, turn: &NewTurn) {
        if let Some(bound) = &mut self.bound {
            bound.history.push(turn.stored(seq));
            self.last_reply = entry
                .filter(|_| turn.role == TurnRole::Assistant)
                .map(|entry| (entry, bound.history.len() - 1));
        }
    }

    async fn start_turn(&mut self, text: String, lang: Option<String>) {
        if let Some(live) = &self.live {
            // The caller spoke again before the reply ended: that reply is cut where it was.
            live.stop.stop(Stop::Superseded);
            self.settle_live_turn().await;
        }
        self.idle.on_busy();
        let Some(bound) = &mut self.bound else { return };
        let voice = &bound.agent.spec.voice;
        let plan = bound.languages.plan(voice, lang.as_deref());
        if let Some((tts, transcription)) = plan.switch {
            tracing::info!(call_id = %self.call_id, tts = %tts, "the caller switched language");
            let _ = self.out.send(Out::Text(
                Outbound::Language {
                    tts_language: Some(tts),
                    transcription_language: transcription,
                }
                .to_json(),
            ));
        }
        let options: TextOptions = voice.text_options(plan.text_lang);
        let languages = bound.languages.clone();
        let state = self.state.clone();
        let out = self.out.clone();
        let stop = StopSignal::default();
        let tenant = self.tenant.clone();
        let call_id = bound.call.id.clone();
        let agent = Arc::clone(&bound.agent);
        let history = bound.history.clone();
        let turn_text = text.clone();
        let turn_lang = lang.clone();
        let turn_stop = stop.clone();
        let journal = Arc::clone(&self.journal);
        let handle = tokio::spawn(
            async move {
                let reply_lang = options.lang.clone();
                let options = std::sync::Mutex::new(options);
                let sink = |piece: String| {
                    let options = options.lock().unwrap_or_else(|e| e.into_inner());
                    out.send(Out::Text(Outbound::text(piece, false, &options).to_json()))
                        .is_ok()
                };
                let send = |message: Outbound| {
                    if matches!(message, Outbound::Language { .. }) {
                        // The session now speaks the new language: text needs no `lang` of its own.
                        options.lock().unwrap_or_else(|e| e.into_inner()).lang = None;
                    }
                    out.send(Out::Text(message.to_json())).is_ok()
                };
                let carrier = Carrier {
                    send: &send,
                    languages,
                };
                turn::run(
                    &state,
                    TurnInput {
                        tenant: &tenant,
                        call_id: &call_id,
                        agent: &agent,
                        history: &history,
                        text: &turn_text,
                        lang: turn_lang.as_deref(),
                        reply_lang: reply_lang.as_deref(),
                        carrier: Some(&carrier),
                        journal: Some(&journal),
                    },
                    &sink,
                    &turn_stop,
                )
                .await
            }
            .in_current_span(),
        );
        self.live = Some(LiveTurn {
            stop,
            text,
            lang,
            handle,
        });
    }

    fn on_turn_finished(&mut self, finished: Result<Result<TurnReport, TurnError>, String>) {
        let (text, lang) = self
            .live
            .take()
            .map(|live| (live.text, live.lang))
            .unwrap_or_default();
        self.record(finished, text, lang);
    }

    /// Updates the session after a turn and tells the carrier how it went.
    fn record(
        &mut self,
        finished: Result<Result<TurnReport, TurnError>, String>,
        user_text: String,
        user_lang: Option<String>,
    ) {
        let now = self.state.now_ms();
        let report = match finished {
            Ok(Ok(report)) => report,
            Ok(Err(error)) => {
                self.idle.on_caller(now);
                return self.fail(
                    "not_durable",
                    format!("{error}; the turn is not complete, say it again"),
                );
            }
            Err(join) => {
                self.idle.on_caller(now);
                return self.fail("internal", format!("the turn task failed: {join}"));
            }
        };
        let user = NewTurn {
            lang: user_lang,
            ..NewTurn::said(TurnRole::User, user_text, now)
        };
        self.push_history(report.user_seq, None, &user);
        if let (Some(seq), Some(reply)) = (report.reply_seq, &report.reply) {
            self.push_history(seq, report.reply_entry, reply);
        }
        if let (Some(languages), Some(bound)) = (report.languages, &mut self.bound) {
            bound.languages = languages;
        }
        self.ending = report.session_end;
        match &report.ending {
            Ending::Completed => {
                self.send(&Outbound::turn_end());
                self.idle.on_spoke(now, &report.reply_text);
            }
            // An interrupted reply gets no closing message: the carrier already moved on, and
            // the caller is speaking.
            Ending::Stopped(_) => self.idle.on_caller(now),
            Ending::Failed(error) => {
                // The fallback utterance went out as the reply's text; this closes it, and the
                // note (for the edge's log, never the carrier) says why.
                self.send(&Outbound::turn_end());
                self.fail(
                    "model_unavailable",
                    format!(
                        "the model failed ({}); the agent's fallback utterance was said",
                        error.failure.as_str()
                    ),
                );
                self.idle.on_spoke(now, &report.reply_text);
            }
        }
    }

    async fn on_dtmf(&mut self, digit: String) {
        let turn = NewTurn::said(TurnRole::Dtmf, digit, self.state.now_ms());
        self.store_turn(&turn, None).await;
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
        let Some((entry, index)) = self.last_reply.take() else {
            return;
        };
        if let Some(turn) = self.bound.as_mut().and_then(|b| b.history.get_mut(index)) {
            turn.text.clone_from(&heard);
            turn.interrupted = true;
        }
        self.state.metrics.interruptions.inc();
        // Written (and announced) after the reply it corrects, in the journal's order.
        if self
            .journal
            .push(
                &self.state,
                Record::Interrupted {
                    reply: Reply::Entry(entry),
                    heard,
                },
            )
            .is_none()
        {
            self.journal_full();
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
