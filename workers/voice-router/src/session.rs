//! The `CallSession` Durable Object: one per call. It loads the call's stored state once, hands
//! every event to `shared::call_session::Relay` with the time, and performs the actions that
//! come back — storage, its alarm, the caller's WebSocket (hibernation API), the WebSocket to
//! the origin, the rate-limiter's lease, geo-router's failure reports, telling the origin the
//! call ended — feeding each answer back as the next event. Every rule is in the relay; this is
//! I/O. Routes and bodies: `shared::call_session::wire`.
//!
//! The relay's hot path is kept short (issue 15, measured by tests/bench/voice.bench.mjs): the
//! origin's messages arrive through JS event listeners on its socket and are handled at once,
//! with no task or channel between; actions that need no waiting (the sends) are performed
//! synchronously, and only the first that does (storage, a binding) and those after it go to a
//! task, while later events of that socket queue behind it, so their order is as before. The
//! caller's sockets are remembered in memory instead of asked of the runtime per message; after
//! a wake from hibernation (which drops that memory) they are asked once.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use worker::web_sys;

use edge_io::answer::rejection_response;
use shared::call_session::relay::{Action, LeaseAction, LinkId, Note, OriginClosed, Record};
use shared::call_session::wire::{
    CARRIER_PATH, CarrierReport, END_PATH, EndRequest, HEALTH_PATH, RELAY_PATH, START_PATH,
    STATE_PATH, StartSession, TENANT_HEADER, TOUCH_PATH, Touch,
};
use shared::call_session::{CallSession as CallState, Relay, Routing, SessionRefusal};
use shared::carrier::AnsweredBy;
use shared::edge_config::EdgeConfig;
use shared::geo::Target;
use shared::geo::wire::ReportRequest;
use worker::{
    DurableObject, Env, Method, Request, Response, Result, State, WebSocket,
    WebSocketIncomingMessage, WebSocketPair, console_error, console_log, console_warn,
    durable_object,
};

use crate::origin;
use crate::refusal::{Refusal, rejection};
use crate::services;

/// Storage key of the [`CallState`].
const SESSION_KEY: &str = "session";
/// Storage key of the [`Routing`].
const ROUTING_KEY: &str = "routing";
/// Storage key of the carrier's `setup` message.
const SETUP_KEY: &str = "setup";

#[durable_object]
pub struct CallSession {
    inner: Rc<Inner>,
}

struct Inner {
    state: State,
    env: Env,
    /// The call, once loaded; `None` when there is no such call.
    relay: RefCell<Option<Relay>>,
    loaded: Cell<bool>,
    /// Open origin sockets by link: the relay's current one, and one that opened after it was
    /// given up on until its close is done.
    origins: RefCell<Vec<Rc<OriginFeed>>>,
    /// The caller's sockets (hibernation API) as accepted here; `None` until known, e.g. after
    /// a wake from hibernation, when they are read from the runtime once.
    callers: RefCell<Option<Vec<WebSocket>>>,
}

/// What happened on an origin socket, in the order it happened.
enum OriginEvent {
    Text(String),
    Closed(OriginClosed),
}

/// The listeners of one origin socket and the events that wait for an earlier event's actions.
struct OriginFeed {
    link: LinkId,
    socket: WebSocket,
    /// Events not yet handled because `busy`.
    inbox: RefCell<VecDeque<OriginEvent>>,
    /// An earlier event's actions are still being performed (in a task).
    busy: Cell<bool>,
    /// The socket closed or failed: nothing more is handled.
    closed: Cell<bool>,
    /// The JS listeners (`message`, `close`, `error`); dropped once the socket is done.
    listeners: RefCell<Vec<(&'static str, Listener)>>,
}

/// A JS event listener calling into the object.
type Listener = Closure<dyn FnMut(web_sys::Event)>;

impl DurableObject for CallSession {
    fn new(state: State, env: Env) -> Self {
        let inner = Inner {
            state,
            env,
            relay: RefCell::new(None),
            loaded: Cell::new(false),
            origins: RefCell::new(Vec::new()),
            callers: RefCell::new(None),
        };
        Self {
            inner: Rc::new(inner),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let inner = &self.inner;
        if req.path() == HEALTH_PATH {
            return Response::from_json(&serde_json::json!({ "ok": true }));
        }
        inner.load().await?;
        match (req.method(), req.path().as_str()) {
            (Method::Post, START_PATH) => inner.start(req.json().await?).await,
            (Method::Get, STATE_PATH) => inner.answer(|_| Ok(Vec::new())).await,
            (Method::Post, TOUCH_PATH) => {
                let touch: Touch = req.json().await?;
                inner.answer(|relay| relay.touch(touch.turn, now())).await
            }
            (Method::Post, END_PATH) => {
                let end: EndRequest = req.json().await?;
                inner.answer(|relay| relay.end_requested(end, now())).await
            }
            (Method::Post, CARRIER_PATH) => {
                let report: CarrierReport = req.json().await?;
                inner
                    .answer(|relay| relay.on_carrier_report(report, now()))
                    .await
            }
            (Method::Get, RELAY_PATH) => {
                let tenant = req.headers().get(TENANT_HEADER)?.unwrap_or_default();
                inner.accept_caller(&tenant).await
            }
            _ => refused(Refusal::NoRoute),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        self.inner.load().await?;
        self.inner.on(|relay| relay.on_alarm(now())).await;
        Response::ok("done")
    }

    async fn websocket_message(
        &self,
        _ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        self.inner.load().await?;
        match message {
            WebSocketIncomingMessage::String(text) => {
                self.inner
                    .on(|relay| relay.on_caller_text(text, now()))
                    .await;
            }
            WebSocketIncomingMessage::Binary(_) => console_warn!(
                "call relay: binary message from the caller ignored (the protocol is JSON text)"
            ),
        }
        Ok(())
    }

    async fn websocket_close(&self, ws: WebSocket, _: usize, _: String, _: bool) -> Result<()> {
        // The runtime does not complete the close handshake for us.
        let _ = ws.close(Some(1000), Some("closing"));
        self.inner.forget_caller(&ws);
        self.inner.caller_left(&ws).await
    }

    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> Result<()> {
        console_warn!("call relay: caller socket error: {error}");
        let _ = ws.close(Some(1011), Some("socket error"));
        self.inner.forget_caller(&ws);
        self.inner.caller_left(&ws).await
    }
}

impl Inner {
    /// Loads the stored call once per object lifetime (after eviction or hibernation).
    async fn load(&self) -> Result<()> {
        if self.loaded.get() {
            return Ok(());
        }
        let storage = self.state.storage();
        let session: Option<CallState> = storage.get(SESSION_KEY).await?;
        let routing: Option<Routing> = storage.get(ROUTING_KEY).await?;
        let setup: Option<String> = storage.get(SETUP_KEY).await?;
        if !self.loaded.replace(true) {
            let limits = crate::config::session_limits(&self.env);
            *self.relay.borrow_mut() = session
                .zip(routing)
                .map(|(session, routing)| Relay::restore(session, routing, setup, limits));
        }
        Ok(())
    }

    async fn start(self: &Rc<Self>, start: StartSession) -> Result<Response> {
        if self.relay.borrow().is_some() {
            return refused(SessionRefusal::CallExists.into());
        }
        let request_id = start.request_id.clone();
        let trace_id = start.trace_id.clone().unwrap_or_default();
        let limits = crate::config::session_limits(&self.env);
        let (relay, actions) = match Relay::start(start, limits, now()) {
            Ok(started) => started,
            Err(refusal) => return refused(refusal.into()),
        };
        let session = relay.session().clone();
        *self.relay.borrow_mut() = Some(relay);
        self.perform(actions).await;
        console_log!(
            "call {} started for tenant {} in {} (request {request_id} trace {trace_id})",
            session.call_id,
            session.tenant_id,
            session.region
        );
        Ok(Response::from_json(&session)?.with_status(201))
    }

    /// Applies an event from a route; answers the call's state, or the refusal.
    async fn answer(
        self: &Rc<Self>,
        event: impl FnOnce(&mut Relay) -> std::result::Result<Vec<Action>, SessionRefusal>,
    ) -> Result<Response> {
        let outcome = match self.relay.borrow_mut().as_mut() {
            None => Err(SessionRefusal::UnknownCall),
            Some(relay) => event(relay),
        };
        match outcome {
            Ok(actions) => {
                self.perform(actions).await;
                match self.relay.borrow().as_ref() {
                    Some(relay) => Response::from_json(relay.session()),
                    None => refused(SessionRefusal::UnknownCall.into()),
                }
            }
            Err(refusal) => refused(refusal.into()),
        }
    }

    /// Applies an event from a socket or the alarm (nothing to do when there is no call).
    async fn on(self: &Rc<Self>, event: impl FnOnce(&mut Relay) -> Vec<Action>) {
        let actions = self.relay.borrow_mut().as_mut().map(event);
        self.perform(actions.unwrap_or_default()).await;
    }

    /// `/relay`: the previous caller socket is closed, the new one accepted (hibernation API),
    /// and the origin connection made if there is none.
    async fn accept_caller(self: &Rc<Self>, tenant: &str) -> Result<Response> {
        let joined = match self.relay.borrow_mut().as_mut() {
            None => Err(SessionRefusal::UnknownCall),
            Some(relay) => relay.on_caller_connected(tenant),
        };
        let actions = match joined {
            Ok(actions) => actions,
            Err(refusal) => return refused(refusal.into()),
        };
        let (closes, rest): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|action| matches!(action, Action::CloseCallers { .. }));
        self.perform(closes).await;
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
        // The previous callers were closed just now: the new one is the one to send to.
        *self.callers.borrow_mut() = Some(vec![pair.server.clone()]);
        self.perform(rest).await;
        Response::from_websocket(pair.client)
    }

    async fn caller_left(self: &Rc<Self>, left: &WebSocket) -> Result<()> {
        self.load().await?;
        let others_remain = self.state.get_websockets().iter().any(|ws| ws != left);
        self.on(|relay| relay.on_caller_left(others_remain)).await;
        Ok(())
    }

    /// Performs actions in order, and the actions their answers lead to. A failure is logged
    /// and the rest still happen: the call's other duties do not wait on one broken binding.
    async fn perform(self: &Rc<Self>, actions: Vec<Action>) {
        let mut queue = VecDeque::from(actions);
        self.perform_waiting(&mut queue).await;
    }

    /// [`Self::perform`] of a queue whose first actions may already be done by
    /// [`Self::perform_ready`].
    async fn perform_waiting(self: &Rc<Self>, queue: &mut VecDeque<Action>) {
        loop {
            self.perform_ready(queue);
            let Some(action) = queue.pop_front() else {
                return;
            };
            match self.perform_awaited(action).await {
                Ok(more) => queue.extend(more),
                Err(error) => console_error!("call {}: {error}", self.call_id()),
            }
        }
    }

    /// Performs the queue's actions that need no waiting, in order, up to the first that does
    /// (left at the front of the queue).
    fn perform_ready(self: &Rc<Self>, queue: &mut VecDeque<Action>) {
        while let Some(action) = queue.pop_front() {
            match self.perform_now(action) {
                Ok(Now::Done(more)) => queue.extend(more),
                Ok(Now::Wait(action)) => {
                    queue.push_front(action);
                    return;
                }
                Err(error) => console_error!("call {}: {error}", self.call_id()),
            }
        }
    }

    /// An action done at once, or handed back when it has to be awaited.
    fn perform_now(self: &Rc<Self>, action: Action) -> Result<Now> {
        match action {
            Action::Connect { link, target } => Inner::connect(self, link, target),
            Action::SendToOrigin { link, text } => {
                let sent = self
                    .origin_socket(link)
                    .is_some_and(|socket| socket.send_with_str(&text).is_ok());
                if !sent {
                    let more = self.with(|relay| relay.on_send_failed(link, text, now()));
                    return Ok(Now::Done(more));
                }
            }
            Action::CloseOrigin { link, code, reason } => {
                if let Some(socket) = self.origin_socket(link) {
                    let _ = socket.close(Some(code), Some(reason));
                }
            }
            Action::SendToCaller(text) => self.with_callers(|callers| {
                for caller in callers {
                    let _ = caller.send_with_str(&text);
                }
            }),
            Action::CloseCallers { code, reason } => {
                self.with_callers(|callers| {
                    for caller in callers {
                        let _ = caller.close(Some(code), Some(reason));
                    }
                });
                *self.callers.borrow_mut() = Some(Vec::new());
            }
            Action::Note(note) => self.log(note),
            action => return Ok(Now::Wait(action)),
        }
        Ok(Now::Done(Vec::new()))
    }

    async fn perform_awaited(self: &Rc<Self>, action: Action) -> Result<Vec<Action>> {
        let storage = self.state.storage();
        match action {
            // The value is copied out first: no borrow is held across the write.
            Action::Persist(Record::Session) => {
                if let Some(session) = self.read(|relay| relay.session().clone()) {
                    storage.put(SESSION_KEY, &session).await?;
                }
            }
            Action::Persist(Record::Routing) => {
                if let Some(routing) = self.read(|relay| relay.routing().clone()) {
                    storage.put(ROUTING_KEY, &routing).await?;
                }
            }
            Action::Persist(Record::Setup) => {
                if let Some(Some(setup)) = self.read(|relay| relay.setup().map(str::to_owned)) {
                    storage.put(SETUP_KEY, &setup).await?;
                }
            }
            Action::ScheduleAlarm(at) => storage.set_alarm(edge_io::clock::alarm_at(at)).await?,
            Action::CancelAlarm => storage.delete_alarm().await?,
            Action::ReportFailure { region } => {
                let client = self.read(|relay| relay.session().tenant_id.clone());
                let report = ReportRequest {
                    region,
                    client: client.unwrap_or_default(),
                };
                let request_id = format!("{}-report", self.call_id());
                services::report_failure(&self.env, &report, &request_id).await;
            }
            Action::Lease(lease) => return Ok(self.lease(lease).await),
            Action::EndAtOrigin {
                targets,
                reason,
                said_reason,
                handoff_data,
            } => {
                let told = origin::EndTold {
                    reason: said_reason.as_deref().unwrap_or(reason.as_str()),
                    handoff_data,
                };
                self.end_at_origin(&targets, told).await
            }
            Action::AnsweredAtOrigin {
                targets,
                answered_by,
            } => self.answered_at_origin(&targets, answered_by).await,
            // Done at once by `perform_now`, which never hands these back.
            action @ (Action::Connect { .. }
            | Action::SendToOrigin { .. }
            | Action::CloseOrigin { .. }
            | Action::SendToCaller(_)
            | Action::CloseCallers { .. }
            | Action::Note(_)) => {
                return match self.perform_now(action)? {
                    Now::Done(more) => Ok(more),
                    Now::Wait(_) => Ok(Vec::new()),
                };
            }
        }
        Ok(Vec::new())
    }

    /// Opens the origin socket of `link` in a task of its own; its outcome is the next event.
    fn connect(self: &Rc<Self>, link: LinkId, target: Target) {
        let inner = Rc::clone(self);
        worker::wasm_bindgen_futures::spawn_local(async move {
            let call_id = inner.call_id();
            let opened = match inner.signing() {
                Some((config, routing)) => {
                    let request_id = format!("{call_id}-relay-{}", now());
                    let signer = origin::call_signer(&config, &routing, &request_id);
                    let opened = origin::open_relay(&signer, &target, &call_id).await;
                    if opened.is_ok() {
                        console_log!(
                            "call {call_id}: relay open in {} ({})",
                            target.region,
                            signer.tag()
                        );
                    }
                    opened
                }
                None => Err(worker::Error::RustError("nothing to sign for".into())),
            };
            let actions = match opened {
                Ok(socket) => {
                    Inner::listen(&inner, link, socket);
                    inner.with(|relay| relay.on_origin_connected(link, now()))
                }
                Err(error) => {
                    let region = &target.region;
                    console_warn!("call {call_id}: origin in {region} refused the relay: {error}");
                    inner.with(|relay| relay.on_connect_failed(link, now()))
                }
            };
            inner.perform(actions).await;
        });
    }

    /// Relays the origin's messages of `link` until its socket closes (or fails), then says
    /// so: JS listeners on the socket hand each event to [`Self::on_origin_event`].
    fn listen(self: &Rc<Self>, link: LinkId, socket: WebSocket) {
        let feed = Rc::new(OriginFeed {
            link,
            socket,
            inbox: RefCell::new(VecDeque::new()),
            busy: Cell::new(false),
            closed: Cell::new(false),
            listeners: RefCell::new(Vec::new()),
        });
        for kind in ["message", "close", "error"] {
            let (inner, weak) = (Rc::clone(self), Rc::downgrade(&feed));
            let listener =
                Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
                    let Some(feed) = weak.upgrade() else {
                        return;
                    };
                    let event = match event.dyn_into::<web_sys::MessageEvent>() {
                        // Binary frames are not part of the protocol: ignored, as before.
                        Ok(message) => match message.data().as_string() {
                            Some(text) => OriginEvent::Text(text),
                            None => return,
                        },
                        Err(event) => {
                            if let Some(error) = event.dyn_ref::<web_sys::ErrorEvent>() {
                                console_warn!(
                                    "call relay: origin socket error: {}",
                                    error.message()
                                );
                            }
                            let code = event
                                .dyn_ref::<web_sys::CloseEvent>()
                                .map(web_sys::CloseEvent::code);
                            OriginEvent::Closed(OriginClosed::from_code(code))
                        }
                    };
                    Inner::on_origin_event(&inner, &feed, event);
                });
            let added = feed
                .socket
                .as_ref()
                .add_event_listener_with_callback(kind, listener.as_ref().unchecked_ref());
            if let Err(error) = added {
                console_error!("call relay: listening to the origin failed: {error:?}");
            }
            feed.listeners.borrow_mut().push((kind, listener));
        }
        // The listeners hold the feed only weakly: it is kept here until the socket is done.
        self.origins.borrow_mut().push(feed);
    }

    /// One event of an origin socket: handled now when nothing of the socket's is pending, or
    /// queued behind the event whose actions are still being performed.
    fn on_origin_event(self: &Rc<Self>, feed: &Rc<OriginFeed>, event: OriginEvent) {
        if feed.closed.get() {
            return;
        }
        if matches!(event, OriginEvent::Closed(_)) {
            feed.closed.set(true);
        }
        if feed.busy.get() {
            feed.inbox.borrow_mut().push_back(event);
            return;
        }
        let mut queue = VecDeque::from(self.handle_origin_event(feed, event));
        self.perform_ready(&mut queue);
        if queue.is_empty() {
            return;
        }
        feed.busy.set(true);
        let (inner, feed) = (Rc::clone(self), Rc::clone(feed));
        worker::wasm_bindgen_futures::spawn_local(async move {
            inner.perform_waiting(&mut queue).await;
            loop {
                let next = feed.inbox.borrow_mut().pop_front();
                let Some(event) = next else {
                    break;
                };
                let mut queue = VecDeque::from(inner.handle_origin_event(&feed, event));
                inner.perform_waiting(&mut queue).await;
            }
            feed.busy.set(false);
        });
    }

    /// The relay's answer to one origin event; a close also ends the socket's listening.
    fn handle_origin_event(
        self: &Rc<Self>,
        feed: &Rc<OriginFeed>,
        event: OriginEvent,
    ) -> Vec<Action> {
        let link = feed.link;
        match event {
            OriginEvent::Text(text) => self.with(|relay| relay.on_origin_text(link, text, now())),
            OriginEvent::Closed(closed) => {
                self.stop_listening(feed);
                let caller_present = !self.state.get_websockets().is_empty();
                self.with(|relay| relay.on_origin_closed(link, closed, caller_present, now()))
            }
        }
    }

    /// Removes an origin socket's listeners; they are dropped in a task of their own, since
    /// one of them may be running now.
    fn stop_listening(&self, feed: &Rc<OriginFeed>) {
        let listeners = std::mem::take(&mut *feed.listeners.borrow_mut());
        for (kind, listener) in &listeners {
            let _ = feed
                .socket
                .as_ref()
                .remove_event_listener_with_callback(kind, listener.as_ref().unchecked_ref());
        }
        self.origins
            .borrow_mut()
            .retain(|kept| !Rc::ptr_eq(kept, feed));
        worker::wasm_bindgen_futures::spawn_local(async move { drop(listeners) });
    }

    async fn lease(&self, lease: LeaseAction) -> Vec<Action> {
        let request_id = format!("{}-lease", self.call_id());
        let outcome = services::call_lease(&self.env, &lease, &request_id).await;
        match lease {
            LeaseAction::Renew(_) => self.with(|relay| relay.on_lease_renewed(outcome, now())),
            LeaseAction::Acquire(_) => self.with(|relay| relay.on_lease_acquired(outcome, now())),
            LeaseAction::Release(_) => Vec::new(),
        }
    }

    /// Tells the origin the call ended (`POST /v1/calls/{id}/end`, the region in use first).
    async fn end_at_origin(&self, targets: &[Target], told: origin::EndTold<'_>) {
        let call_id = self.call_id();
        if let Some((config, routing)) = self.signing() {
            let request_id = format!("{call_id}-end");
            let signer = origin::call_signer(&config, &routing, &request_id);
            origin::end_call(&self.env, &signer, targets, &call_id, told).await;
        }
    }

    /// Tells the origin what answering-machine detection found (`POST …/answered-by`).
    async fn answered_at_origin(&self, targets: &[Target], answered_by: AnsweredBy) {
        let call_id = self.call_id();
        if let Some((config, routing)) = self.signing() {
            let request_id = format!("{call_id}-answered-by");
            let signer = origin::call_signer(&config, &routing, &request_id);
            origin::answered_by(&self.env, &signer, targets, &call_id, answered_by).await;
        }
    }

    fn log(&self, note: Note) {
        let call_id = self.call_id();
        match note {
            Note::Moved { region } => console_log!("call {call_id} moved to {region}"),
            Note::BufferFull => console_error!(
                "call {call_id}: caller buffer full while the origin reconnects; ending the call"
            ),
            Note::NoOriginAccepted => {
                console_error!("call {call_id}: no region's origin accepted the relay")
            }
            Note::OriginReported(text) => console_warn!("call {call_id}: origin reported: {text}"),
            Note::LeaseNotRenewed => {
                console_warn!("call {call_id}: continues without a renewed lease")
            }
            Note::Ended(reason) => console_log!("call {call_id} ended: {reason:?}"),
        }
    }

    fn with(&self, event: impl FnOnce(&mut Relay) -> Vec<Action>) -> Vec<Action> {
        self.relay
            .borrow_mut()
            .as_mut()
            .map(event)
            .unwrap_or_default()
    }

    /// Calls `use_them` with the caller's sockets, read from the runtime when not yet known.
    fn with_callers(&self, use_them: impl FnOnce(&[WebSocket])) {
        if self.callers.borrow().is_none() {
            let known = self.state.get_websockets();
            *self.callers.borrow_mut() = Some(known);
        }
        if let Some(callers) = self.callers.borrow().as_deref() {
            use_them(callers);
        }
    }

    /// A caller socket closed or failed: no longer sent to.
    fn forget_caller(&self, left: &WebSocket) {
        if let Some(callers) = self.callers.borrow_mut().as_mut() {
            callers.retain(|caller| caller != left);
        }
    }

    fn origin_socket(&self, link: LinkId) -> Option<WebSocket> {
        let origins = self.origins.borrow();
        let found = origins.iter().find(|feed| feed.link == link);
        found.map(|feed| feed.socket.clone())
    }

    fn read<T>(&self, read: impl FnOnce(&Relay) -> T) -> Option<T> {
        self.relay.borrow().as_ref().map(read)
    }

    fn call_id(&self) -> String {
        self.read(|relay| relay.session().call_id.clone())
            .unwrap_or_default()
    }

    /// What signing an origin request for this call takes: the edge's key and the call's
    /// routing; `None` (logged) when either is missing.
    fn signing(&self) -> Option<(Rc<EdgeConfig>, Routing)> {
        let config = crate::config::load(&self.env)
            .map_err(|error| console_error!("call {}: {error}", self.call_id()))
            .ok()?;
        Some((config, self.read(|relay| relay.routing().clone())?))
    }
}

/// What [`Inner::perform_now`] did with an action.
enum Now {
    /// Done; these actions follow from it.
    Done(Vec<Action>),
    /// It must be awaited: handed back.
    Wait(Action),
}

/// The object's answer to a refused request: the one error envelope, its status from
/// voice-router's one status map.
fn refused(refusal: Refusal) -> Result<Response> {
    rejection_response(&rejection(refusal, &"call session"), "")
}

fn now() -> u64 {
    edge_io::clock::now_ms()
}
