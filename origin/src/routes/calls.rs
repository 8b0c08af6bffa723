//! `/v1/calls`: create, read, end; a turn as Server-Sent Events; live events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use shared::call::{
    AnsweredByReport, Call, CallSource, CallStatus, CallerDetails, CreateCall, EndCall, check_id,
};
use shared::call_event::stream::{EventId, Resume, replay};
use shared::call_event::{CallEvent, CallEventKind};
use shared::call_list::{CallListQuery, CallPage};
use shared::error_body::{ErrorBody, ErrorCode};
use shared::headers::LAST_EVENT_ID;
use shared::turn::{
    DoneEvent, EVENT_DONE, EVENT_ERROR, EVENT_TOKEN, TokenEvent, TurnList, TurnRequest,
};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{json_body, load_agent, stored};
use crate::AppState;
use crate::edge_auth::Caller;
use crate::error::{AppError, Failed, OrFail};
use crate::request_id::RequestId;
use crate::store::{AnswerOutcome, EndOutcome};
use crate::turn::{self, Ending, Stop, StopSignal, TurnError, TurnInput};

/// Keeps idle event streams open through proxies (the ALB's idle timeout is 60 s).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn valid_id(id: &str) -> Result<(), AppError> {
    check_id(id).map_err(|error| AppError::bad_request("invalid_id", error.to_string()))
}

/// The region serving a call: the edge's choice when it sent a sane one, else ours.
pub fn region(state: &AppState, headers: &HeaderMap) -> String {
    headers
        .get(shared::headers::CF_REGION)
        .and_then(|v| v.to_str().ok())
        .filter(|r| {
            !r.is_empty()
                && r.len() <= 32
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        .map_or_else(|| state.config.region.clone(), str::to_owned)
}

/// Creates and stores a call, then announces it. Shared with the relay's `setup`.
pub async fn start_call(
    state: &AppState,
    tenant: &str,
    request: &CreateCall,
    region: String,
) -> Result<Call, AppError> {
    let agent = match (&request.agent_id, &request.to) {
        (Some(agent_id), _) => load_agent(state, tenant, agent_id).await?,
        (None, Some(to)) => stored(state, state.store.agent_for_number(tenant, to).await)?,
        (None, None) => None,
    }
    .ok_or(AppError::Missing("agent"))?;
    let call = Call {
        id: request
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        tenant_id: tenant.to_owned(),
        agent_id: agent.id,
        source: request.source,
        carrier_call_sid: request.carrier_call_sid.clone(),
        from: request.from.clone(),
        to: request.to.clone(),
        region,
        status: CallStatus::Active,
        turn_count: 0,
        started_at_ms: state.now_ms(),
        ended_at_ms: None,
        end_reason: None,
        caller: CallerDetails::default(),
        direction: request.direction,
        carrier: request.carrier,
        answered_by: None,
        voicemail_message: None,
        voicemail_left_at_ms: None,
        metadata: request.metadata.clone(),
    };
    stored(state, state.store.create_call(&call).await)?;
    state.webhooks.wake();
    turn::publish(
        state,
        tenant,
        &call.id,
        CallEventKind::CallStarted,
        None,
        None,
        None,
        call.started_at_ms,
    )
    .await;
    Ok(call)
}

/// `POST /v1/calls`.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failed> {
    if state.draining() {
        return Err(Failed(AppError::Draining, request_id));
    }
    let request: CreateCall = json_body(&body).or_fail(&request_id)?;
    request
        .validate()
        .map_err(|error| AppError::bad_request("invalid_call", error.to_string()))
        .or_fail(&request_id)?;
    let call = start_call(&state, caller.tenant(), &request, region(&state, &headers))
        .await
        .or_fail(&request_id)?;
    Ok((StatusCode::CREATED, Json(call)).into_response())
}

async fn existing_call(state: &AppState, tenant: &str, id: &str) -> Result<Call, AppError> {
    valid_id(id)?;
    stored(state, state.store.get_call(tenant, id).await)?.ok_or(AppError::Missing("call"))
}

/// `GET /v1/calls?status=&agent_id=&source=&started_after_ms=&started_before_ms=&cursor=&limit=`:
/// a page of the tenant's calls, newest first (`shared::call_list`).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    uri: Uri,
) -> Result<Json<CallPage>, Failed> {
    let query = CallListQuery::parse(uri.query().unwrap_or_default())
        .map_err(|error| AppError::bad_request(error.code().as_str(), error.to_string()))
        .or_fail(&request_id)?;
    let calls = stored(
        &state,
        state.store.list_calls(caller.tenant(), &query).await,
    )
    .or_fail(&request_id)?;
    Ok(Json(CallPage::of(calls, query.limit)))
}

/// `GET /v1/calls/{id}`.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(id): Path<String>,
) -> Result<Json<Call>, Failed> {
    existing_call(&state, caller.tenant(), &id)
        .await
        .map(Json)
        .or_fail(&request_id)
}

/// `POST /v1/calls/{id}/end`.
pub async fn end(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Call>, Failed> {
    valid_id(&id).or_fail(&request_id)?;
    let request: EndCall = json_body(&body).or_fail(&request_id)?;
    request
        .validate()
        .map_err(|error| AppError::bad_request("invalid_end", error.to_string()))
        .or_fail(&request_id)?;
    let outcome = stored(
        &state,
        state
            .store
            .end_call(
                caller.tenant(),
                &id,
                request.reason.trim(),
                request.handoff_data.as_ref(),
                state.now_ms(),
            )
            .await,
    )
    .or_fail(&request_id)?;
    match outcome {
        EndOutcome::Ended(call) => {
            let mut event = CallEvent::new(
                CallEventKind::CallEnded,
                caller.tenant(),
                &call.id,
                call.ended_at_ms.unwrap_or_else(|| state.now_ms()),
            );
            event.reason = call.end_reason.clone();
            event.handoff_data = request.handoff_data;
            state.fanout.publish(event).await;
            state.webhooks.wake();
            Ok(Json(call))
        }
        EndOutcome::AlreadyEnded(_) => Err(ended(request_id)),
        EndOutcome::NotFound => Err(Failed(AppError::Missing("call"), request_id)),
    }
}

/// `POST /v1/calls/{id}/answered-by`: what answering-machine detection found (the edge's
/// `CallSession` forwards the carrier's result). Stored with the call (the first result stays)
/// and told to the call's live relay session on whichever replica holds it, which leaves the
/// agent's voicemail message or hangs up on a machine (`crate::relay`). 409 once the call ended.
pub async fn answered_by(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Call>, Failed> {
    valid_id(&id).or_fail(&request_id)?;
    let report: AnsweredByReport = json_body(&body).or_fail(&request_id)?;
    let outcome = stored(
        &state,
        state
            .store
            .record_answer(caller.tenant(), &id, report.answered_by)
            .await,
    )
    .or_fail(&request_id)?;
    match outcome {
        AnswerOutcome::Recorded(call) => {
            let mut event = CallEvent::new(
                CallEventKind::AnsweredBy,
                caller.tenant(),
                &call.id,
                state.now_ms(),
            );
            event.answered_by = call.answered_by;
            state.fanout.publish(event).await;
            Ok(Json(call))
        }
        AnswerOutcome::Ended(_) => Err(ended(request_id)),
        AnswerOutcome::NotFound => Err(Failed(AppError::Missing("call"), request_id)),
    }
}

/// A change refused because the call has already ended.
fn ended(request_id: RequestId) -> Failed {
    Failed(
        AppError::conflict("call_ended", "the call has already ended"),
        request_id,
    )
}

/// `GET /v1/calls/{id}/turns`.
pub async fn turns(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(id): Path<String>,
) -> Result<Json<TurnList>, Failed> {
    existing_call(&state, caller.tenant(), &id)
        .await
        .or_fail(&request_id)?;
    let turns =
        stored(&state, state.store.list_turns(caller.tenant(), &id).await).or_fail(&request_id)?;
    Ok(Json(TurnList { call_id: id, turns }))
}

/// `POST /v1/calls/{id}/turns`: the reply as Server-Sent Events. Everything that can be refused
/// is refused with a status before the stream starts; `done` comes only once the turn is
/// durable. When the model fails (every model of the chain, or the one answering mid-reply),
/// the agent's fallback utterance streams as `token` events like any reply, is stored as the
/// failed turn's reply, and the stream ends with an `error` event (`model_unavailable`) that
/// says so — the same treatment a caller on the phone gets, in this API's shape.
pub async fn turn(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Failed> {
    let request: TurnRequest = json_body(&body).or_fail(&request_id)?;
    request
        .validate()
        .map_err(|error| AppError::bad_request("invalid_turn", error.to_string()))
        .or_fail(&request_id)?;
    let tenant = caller.tenant().to_owned();
    let call = existing_call(&state, &tenant, &id)
        .await
        .or_fail(&request_id)?;
    if call.status == CallStatus::Ended {
        return Err(Failed(
            AppError::conflict("call_ended", "the call has ended"),
            request_id,
        ));
    }
    let agent = load_agent(&state, &tenant, &call.agent_id)
        .await
        .or_fail(&request_id)?
        .ok_or_else(|| {
            Failed(
                AppError::conflict("agent_missing", "the call's agent no longer exists"),
                request_id.clone(),
            )
        })?;
    let history =
        stored(&state, state.store.list_turns(&tenant, &id).await).or_fail(&request_id)?;

    let (pieces_tx, pieces_rx) = mpsc::unbounded_channel::<String>();
    let (final_tx, final_rx) = tokio::sync::oneshot::channel::<Event>();
    let stop = StopSignal::default();
    let task_state = state.clone();
    let rid = request_id.as_str().to_owned();
    tokio::spawn(
        async move {
            // A client that hangs up stops the turn, which cancels the model request.
            let watcher_stop = stop.clone();
            let watched = pieces_tx.clone();
            let watcher = tokio::spawn(async move {
                watched.closed().await;
                watcher_stop.stop(Stop::ClientGone);
            });
            let sink = move |piece: String| pieces_tx.send(piece).is_ok();
            let outcome = turn::run(
                &task_state,
                TurnInput {
                    tenant: &tenant,
                    call_id: &call.id,
                    agent: &agent,
                    history: &history,
                    text: request.text.trim(),
                    lang: request.lang.as_deref(),
                    reply_lang: None,
                    // An API client's turn has no carrier session: built-ins are not offered.
                    carrier: None,
                    // `done` says the turn is durable: written directly, never behind.
                    journal: None,
                },
                &sink,
                &stop,
            )
            .await;
            drop(sink);
            watcher.abort();
            let event = final_event(&outcome, &rid);
            let _ = final_tx.send(event);
        }
        .in_current_span(),
    );

    let tokens = stream::unfold(pieces_rx, |mut rx| async move {
        let piece = rx.recv().await?;
        let event = Event::default()
            .event(EVENT_TOKEN)
            .json_data(TokenEvent { text: piece })
            .unwrap_or_default();
        Some((Ok::<Event, Infallible>(event), rx))
    });
    let last = stream::once(async move {
        Ok::<Event, Infallible>(final_rx.await.unwrap_or_else(|_| {
            Event::default()
                .event(EVENT_ERROR)
                .data(ErrorBody::new("internal", "internal error", "").to_json())
        }))
    });
    Ok(Sse::new(tokens.chain(last))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// `done` for a durable turn, `error` otherwise.
fn final_event(outcome: &Result<turn::TurnReport, TurnError>, request_id: &str) -> Event {
    let error = |code: &str, message: String| {
        Event::default()
            .event(EVENT_ERROR)
            .data(ErrorBody::new(code, message, request_id).to_json())
    };
    match outcome {
        Ok(report) => match &report.ending {
            Ending::Completed | Ending::Stopped(_) => match (report.reply_seq, &report.model) {
                (Some(turn), Some(model)) => Event::default()
                    .event(EVENT_DONE)
                    .json_data(DoneEvent {
                        turn,
                        model: model.clone(),
                        usage: report.usage,
                        timings: report.timings,
                        fallbacks: report.fallbacks.clone(),
                        stop_reason: report
                            .stop_reason
                            .clone()
                            .filter(|reason| reason != shared::turn::END_TURN),
                    })
                    .unwrap_or_default(),
                _ => error(
                    "interrupted",
                    "the turn was stopped before the model answered".into(),
                ),
            },
            Ending::Failed(failure) => {
                tracing::warn!(error = %failure, "turn failed");
                error(
                    "model_unavailable",
                    format!(
                        "the model failed ({}); the agent's fallback utterance was said and \
                         stored as turn {}; the call goes on",
                        failure.failure.as_str(),
                        report.reply_seq.unwrap_or(0)
                    ),
                )
            }
        },
        Err(TurnError::Store(store_error)) => {
            tracing::warn!(error = %store_error, "turn not durable");
            error(
                "not_durable",
                "the turn could not be stored; it is not complete, retry it".into(),
            )
        }
    }
}

/// `GET /v1/calls/{id}/events`: the call's history rebuilt from what is stored, then its live
/// events from any replica, each with its id (`shared::call_event::stream`); the stream ends
/// after `call_ended`. `Last-Event-ID` resumes after that event; a call that ended with nothing
/// after it is `204` (which tells a browser's `EventSource` to stop reconnecting).
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failed> {
    let tenant = caller.tenant().to_owned();
    let after = headers
        .get(LAST_EVENT_ID)
        .map(|value| value.to_str().ok().and_then(EventId::parse))
        .map(|id| {
            id.ok_or(AppError::bad_request(
                ErrorCode::InvalidRequest.as_str(),
                "Last-Event-ID is not an id this stream gave",
            ))
        })
        .transpose()
        .or_fail(&request_id)?;
    // Subscribed before the history is read, so nothing falls between the two; what both
    // carry is sent once.
    let receiver = state.fanout.subscribe();
    let call = existing_call(&state, &tenant, &id)
        .await
        .or_fail(&request_id)?;
    let turns = stored(&state, state.store.list_turns(&tenant, &id).await).or_fail(&request_id)?;
    let mut resume = Resume::after(after);
    let history: Vec<Event> = replay(&call, &turns)
        .into_iter()
        .filter(|event| resume.admit(event))
        .map(|event| sse_event(&event, true))
        .collect();
    if call.status == CallStatus::Ended && history.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let history = stream::iter(history.into_iter().map(Ok::<Event, Infallible>));
    let events = if call.status == CallStatus::Ended {
        history.boxed()
    } else {
        let pick = move |event: &CallEvent| {
            if event.tenant_id != tenant || event.call_id != id || !resume.admit(event) {
                Relay::Skip
            } else if resume.ended() {
                Relay::Last(sse_event(event, true))
            } else {
                Relay::Send(sse_event(event, true))
            }
        };
        history.chain(live_events(&state, pick, receiver)).boxed()
    };
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// `GET /v1/events`: every live event of the tenant's calls, from any replica (no history, no
/// ids): what a list of calls needs to know it changed.
pub async fn tenant_events(State(state): State<AppState>, caller: Caller) -> Response {
    let tenant = caller.tenant().to_owned();
    let receiver = state.fanout.subscribe();
    let live = live_events(
        &state,
        move |event| {
            if event.tenant_id == tenant {
                Relay::Send(sse_event(event, false))
            } else {
                Relay::Skip
            }
        },
        receiver,
    );
    // A first line at once: the edge's forward waits for the answer to begin, and a quiet
    // tenant may have nothing to say for a long while.
    let opened = stream::once(async { Ok(Event::default().comment("live")) });
    Sse::new(opened.chain(live))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// The SSE form of an event: named by its kind, with its id in its call when `with_id`.
fn sse_event(event: &CallEvent, with_id: bool) -> Event {
    let sse = Event::default()
        .event(event.kind.as_str())
        .json_data(event)
        .unwrap_or_default();
    match EventId::of(event) {
        Some(id) if with_id => sse.id(id.to_string()),
        _ => sse,
    }
}

/// What a live stream does with one published event.
enum Relay {
    /// Not for this stream.
    Skip,
    /// Send it.
    Send(Event),
    /// Send it; the stream ends after it.
    Last(Event),
}

/// The events of this replica's fan-out that `pick` relays, until the client goes, the origin
/// shuts down or `pick` says the last one went; counted in the subscribers gauge meanwhile.
fn live_events(
    state: &AppState,
    pick: impl FnMut(&CallEvent) -> Relay + Send + 'static,
    receiver: tokio::sync::broadcast::Receiver<Arc<CallEvent>>,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let shutdown = state.shutdown.clone();
    let gauge = Arc::clone(&state.metrics);
    gauge.event_subscribers.inc();
    let guard = SubscriberGuard(gauge);
    stream::unfold(Some((receiver, shutdown, pick, guard)), |live| async move {
        let (mut receiver, shutdown, mut pick, guard) = live?;
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => return None,
                received = receiver.recv() => received,
            };
            match received {
                Ok(event) => match pick(&event) {
                    Relay::Skip => {}
                    Relay::Send(sse) => {
                        return Some((Ok(sse), Some((receiver, shutdown, pick, guard))));
                    }
                    Relay::Last(sse) => return Some((Ok(sse), None)),
                },
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "event stream lagged");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

struct SubscriberGuard(Arc<crate::metrics::Metrics>);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.event_subscribers.dec();
    }
}

/// The source of a call created by the relay's `setup`.
pub const RELAY_SOURCE: CallSource = CallSource::Phone;
