//! The `CallSession` Durable Object: one per call. Holds the call's state (surviving eviction),
//! terminates the caller's WebSocket with the hibernation API, holds the WebSocket to the origin
//! of the call's region, relays messages both ways in order, moves the call to the next region
//! when its origin drops, and ends the call — releasing its concurrent-call lease — when the
//! carrier, the API or an alarm says so.
//!
//! Internal routes (voice-router only, via the `CALL_SESSION` binding):
//!
//! | route | body | answer |
//! | --- | --- | --- |
//! | `POST /start` | [`StartSession`] | 201 `shared::call_session::CallSession`; 409 `call_exists` |
//! | `GET /state` | — | 200 `CallSession`; 404 `unknown_call` |
//! | `POST /touch` | [`Touch`] | 200 `CallSession`; 404; 409 `call_ended` |
//! | `POST /end` | [`EndRequest`] | 200 `CallSession`; 404; 409 `call_ended` |
//! | `GET /relay` | WebSocket upgrade, tenant in `x-session-tenant` | 101; 404; 403 `wrong_tenant`; 409 `call_ended` |
//! | `GET /health` | — | 200 |

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use shared::call_session::{
    AlarmAction, CallSession as CallState, EndReason, RelayBuffer, StartCall,
};
use shared::principal::Principal;
use shared::rate_limit::api::LeaseRequest;
use shared::relay::{RelayedKind, relayed_kind};
use worker::{
    DurableObject, Env, Method, Request, Response, Result, State, WebSocket,
    WebSocketIncomingMessage, WebSocketPair, console_error, console_log, console_warn,
    durable_object,
};

use crate::origin::{self, Target};
use crate::services;

/// Storage key of the call's [`CallSession`].
const SESSION_KEY: &str = "session";
/// Storage key of the call's [`Routing`].
const ROUTING_KEY: &str = "routing";
/// Storage key of the carrier's `setup` message, replayed to a new origin after a failover.
const SETUP_KEY: &str = "setup";
/// Header carrying the authenticated tenant on `/relay`.
pub const TENANT_HEADER: &str = "x-session-tenant";

/// Caller messages held while the origin connection is re-established.
const BUFFER_MESSAGES: usize = 256;
/// …and their bytes.
const BUFFER_BYTES: usize = 256 * 1024;
/// Activity is persisted at most this often (the in-memory copy is exact).
const ACTIVITY_PERSIST_MS: u64 = 10_000;

/// Everything `/start` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartSession {
    /// The call.
    pub call: StartCall,
    /// Who started it; its tenant owns the call, and it signs origin requests made for it.
    pub principal: Principal,
    /// The origin of the call's region, then the others in failover order.
    pub targets: Vec<Target>,
    /// The caller's country, for `X-CF-Country`.
    pub country: Option<String>,
    /// The request that started the call (for logs).
    pub request_id: String,
}

/// How to reach the call's origins and sign for it; stored beside the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Routing {
    principal: Principal,
    targets: Vec<Target>,
    country: Option<String>,
}

/// `/touch`: activity on the call (an API turn).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Touch {
    /// Whether a caller turn started.
    pub turn: bool,
}

/// `/end`: end the call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndRequest {
    /// Why.
    pub reason: EndReason,
}

/// What the object keeps in memory between events.
struct Live {
    session: Option<CallState>,
    routing: Option<Routing>,
    setup: Option<String>,
    origin: Option<WebSocket>,
    /// Index into `targets` of the origin in use.
    target: usize,
    /// Whether a connection to an origin is being established.
    connecting: bool,
    buffer: RelayBuffer,
    persisted_activity_ms: u64,
    loaded: bool,
}

struct Inner {
    state: State,
    env: Env,
    live: RefCell<Live>,
}

#[durable_object]
pub struct CallSession {
    inner: Rc<Inner>,
}

impl DurableObject for CallSession {
    fn new(state: State, env: Env) -> Self {
        Self {
            inner: Rc::new(Inner {
                state,
                env,
                live: RefCell::new(Live {
                    session: None,
                    routing: None,
                    setup: None,
                    origin: None,
                    target: 0,
                    connecting: false,
                    buffer: RelayBuffer::new(BUFFER_MESSAGES, BUFFER_BYTES),
                    persisted_activity_ms: 0,
                    loaded: false,
                }),
            }),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let inner = &self.inner;
        if req.path() == shared::health::HEALTH_PATH {
            return Response::from_json(&serde_json::json!({ "ok": true }));
        }
        inner.load().await?;
        match (req.method(), req.path().as_str()) {
            (Method::Post, "/start") => {
                let start: StartSession = req.json().await?;
                inner.start(start).await
            }
            (Method::Get, "/state") => match inner.session() {
                Some(session) => Response::from_json(&session),
                None => refusal(404, "unknown_call", "no such call"),
            },
            (Method::Post, "/touch") => {
                let touch: Touch = req.json().await?;
                inner.touch(touch).await
            }
            (Method::Post, "/end") => {
                let end: EndRequest = req.json().await?;
                match Inner::finish(inner, end.reason).await? {
                    Some(session) => Response::from_json(&session),
                    None => match inner.session() {
                        Some(_) => refusal(409, "call_ended", "the call already ended"),
                        None => refusal(404, "unknown_call", "no such call"),
                    },
                }
            }
            (Method::Get, "/relay") => {
                let tenant = req.headers().get(TENANT_HEADER)?.unwrap_or_default();
                Inner::relay(inner, &tenant)
            }
            _ => refusal(404, "not_found", "no such Durable Object route"),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let inner = &self.inner;
        inner.load().await?;
        let Some(session) = inner.session() else {
            return Response::ok("no call");
        };
        let limits = crate::config::session_limits(&inner.env);
        match session.on_alarm(now(), &limits) {
            AlarmAction::End(reason) => {
                console_log!("call {}: ending on alarm ({reason:?})", session.call_id);
                Inner::finish(inner, reason).await?;
            }
            AlarmAction::RenewLease => inner.renew_lease().await?,
            AlarmAction::Nothing => {}
        }
        inner.schedule_alarm().await?;
        Response::ok("done")
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let inner = &self.inner;
        inner.load().await?;
        match message {
            WebSocketIncomingMessage::String(text) => {
                Inner::on_caller_message(inner, &ws, text).await
            }
            WebSocketIncomingMessage::Binary(_) => {
                console_warn!(
                    "call relay: binary message from the caller ignored (the protocol is JSON text)"
                );
                Ok(())
            }
        }
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        // The runtime does not complete the close handshake for us.
        let _ = ws.close(Some(1000), Some("closing"));
        self.inner.caller_left(&ws).await
    }

    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> Result<()> {
        console_warn!("call relay: caller socket error: {error}");
        let _ = ws.close(Some(1011), Some("socket error"));
        self.inner.caller_left(&ws).await
    }
}

impl Inner {
    /// Loads the stored state once per object lifetime (after eviction or hibernation).
    async fn load(&self) -> Result<()> {
        if self.live.borrow().loaded {
            return Ok(());
        }
        let storage = self.state.storage();
        let session: Option<CallState> = storage.get(SESSION_KEY).await?;
        let routing: Option<Routing> = storage.get(ROUTING_KEY).await?;
        let setup: Option<String> = storage.get(SETUP_KEY).await?;
        let mut live = self.live.borrow_mut();
        if !live.loaded {
            live.persisted_activity_ms = session.as_ref().map_or(0, |s| s.last_activity_ms);
            live.session = session;
            live.routing = routing;
            live.setup = setup;
            live.loaded = true;
        }
        Ok(())
    }

    fn session(&self) -> Option<CallState> {
        self.live.borrow().session.clone()
    }

    fn routing(&self) -> Option<Routing> {
        self.live.borrow().routing.clone()
    }

    async fn persist_session(&self) -> Result<()> {
        let session = self.session();
        if let Some(session) = session {
            self.live.borrow_mut().persisted_activity_ms = session.last_activity_ms;
            self.state.storage().put(SESSION_KEY, &session).await?;
        }
        Ok(())
    }

    async fn schedule_alarm(&self) -> Result<()> {
        let limits = crate::config::session_limits(&self.env);
        let next = self
            .session()
            .and_then(|session| session.next_alarm_ms(&limits));
        match next {
            Some(at) => {
                let at = edge_io::clock::alarm_at(at);
                self.state.storage().set_alarm(at).await
            }
            None => self.state.storage().delete_alarm().await,
        }
    }

    async fn start(&self, start: StartSession) -> Result<Response> {
        if self.session().is_some() {
            return refusal(409, "call_exists", "a call with this id already exists");
        }
        if start.targets.is_empty() {
            return refusal(400, "no_region", "a call needs at least one region");
        }
        let session = CallState::start(start.call, now());
        let routing = Routing {
            principal: start.principal,
            targets: start.targets,
            country: start.country,
        };
        {
            let mut live = self.live.borrow_mut();
            live.session = Some(session.clone());
            live.routing = Some(routing.clone());
            live.target = 0;
        }
        let storage = self.state.storage();
        storage.put(ROUTING_KEY, &routing).await?;
        storage.put(SESSION_KEY, &session).await?;
        self.schedule_alarm().await?;
        console_log!(
            "call {} started for tenant {} in {} (request {})",
            session.call_id,
            session.tenant_id,
            session.region,
            start.request_id
        );
        Ok(Response::from_json(&session)?.with_status(201))
    }

    async fn touch(&self, touch: Touch) -> Result<Response> {
        let outcome = {
            let mut live = self.live.borrow_mut();
            match live.session.as_mut() {
                None => None,
                Some(session) if touch.turn => {
                    Some(session.record_turn(now()).map(|()| session.clone()))
                }
                Some(session) if session.is_active() => {
                    session.touch(now());
                    Some(Ok(session.clone()))
                }
                Some(session) => Some(Err(shared::call_session::AlreadyEnded(session.end_reason))),
            }
        };
        match outcome {
            None => refusal(404, "unknown_call", "no such call"),
            Some(Err(_)) => refusal(409, "call_ended", "the call already ended"),
            Some(Ok(session)) => {
                self.persist_session().await?;
                Response::from_json(&session)
            }
        }
    }

    /// Ends the call once: stores the end, releases the lease, tells the origin, closes the
    /// sockets. `None` when there was no live call to end.
    async fn finish(self: &Rc<Self>, reason: EndReason) -> Result<Option<CallState>> {
        let ended = {
            let mut live = self.live.borrow_mut();
            match live.session.as_mut() {
                Some(session) => session.end(reason, now()).ok().map(|()| session.clone()),
                None => None,
            }
        };
        let Some(session) = ended else {
            return Ok(None);
        };
        self.persist_session().await?;
        self.state.storage().delete_alarm().await?;

        let request_id = format!("{}-end", session.call_id);
        if let Some(routing) = self.routing() {
            let lease = lease_request(&session, &routing.principal);
            let release = services::release_lease(&self.env, &lease, &request_id);
            let tell_origin = self.end_at_origin(&session, &routing, reason, &request_id);
            let (released, _) = futures::join!(release, tell_origin);
            if let Err(error) = released {
                console_error!(
                    "call {}: releasing its lease failed: {error:?}",
                    session.call_id
                );
            }
        }
        let origin = self.live.borrow_mut().origin.take();
        if let Some(origin) = origin {
            let _ = origin.close(Some(1000), Some("call ended"));
        }
        for caller in self.state.get_websockets() {
            let _ = caller.close(Some(1000), Some("call ended"));
        }
        console_log!("call {} ended: {reason:?}", session.call_id);
        Ok(Some(session))
    }

    async fn end_at_origin(
        &self,
        session: &CallState,
        routing: &Routing,
        reason: EndReason,
        request_id: &str,
    ) {
        let config = match crate::config::load(&self.env) {
            Ok(config) => config,
            Err(error) => {
                console_error!("call {}: cannot tell the origin: {error}", session.call_id);
                return;
            }
        };
        let body = serde_json::json!({ "reason": end_reason_name(reason) }).to_string();
        let path = shared::origin_path::call_end(&session.call_id);
        let signer = origin::Signer {
            secret: &config.signing_secret,
            principal: &routing.principal,
            country: routing.country.as_deref(),
            request_id,
        };
        let forward = origin::Forward {
            method: Method::Post,
            path_and_query: &path,
            body: origin::Body::Bytes(body.as_bytes()),
            content_type: Some("application/json"),
            extra: &[],
            may_retry: &|_| true,
            reporter: &session.tenant_id,
        };
        let targets = self.targets_from_current(routing);
        match origin::send(&self.env, &signer, &targets, &forward).await {
            Ok((response, _)) if matches!(response.status_code(), 200 | 404 | 409) => {}
            Ok((response, target)) => console_warn!(
                "call {}: the origin in {} answered {} to its end",
                session.call_id,
                target.region,
                response.status_code()
            ),
            Err(error) => console_error!(
                "call {}: telling the origin it ended failed: {error}",
                session.call_id
            ),
        }
    }

    async fn renew_lease(&self) -> Result<()> {
        let (Some(session), Some(routing)) = (self.session(), self.routing()) else {
            return Ok(());
        };
        let lease = lease_request(&session, &routing.principal);
        let request_id = format!("{}-renew", session.call_id);
        let renewed = match services::renew_lease(&self.env, &lease, &request_id).await {
            Ok(response) => response.lease.is_some() || response.decision.degraded,
            // Reclaimed while the call lived on (renewals failed): take it again if there is room.
            Err(services::ServiceError::Refused(rejection)) if rejection.status == 404 => {
                match services::acquire_lease(&self.env, &lease, &request_id).await {
                    Ok(response) => response.lease.is_some(),
                    Err(error) => {
                        console_error!(
                            "call {}: re-acquiring its lease failed: {error:?}",
                            session.call_id
                        );
                        false
                    }
                }
            }
            Err(error) => {
                console_error!(
                    "call {}: renewing its lease failed: {error:?}",
                    session.call_id
                );
                false
            }
        };
        if !renewed {
            console_warn!(
                "call {}: continues without a renewed lease",
                session.call_id
            );
        }
        // Renewal is attempted on schedule either way; a failure is retried at the next alarm.
        if let Some(session) = self.live.borrow_mut().session.as_mut() {
            session.lease_renewed(now());
        }
        self.persist_session().await
    }

    /// `/relay`: accepts the caller's WebSocket (hibernation API) and makes sure an origin
    /// connection exists or is being made.
    fn relay(self: &Rc<Self>, tenant: &str) -> Result<Response> {
        let Some(session) = self.session() else {
            return refusal(404, "unknown_call", "no such call");
        };
        if session.tenant_id != tenant {
            return refusal(403, "wrong_tenant", "this call belongs to another tenant");
        }
        if !session.is_active() {
            return refusal(409, "call_ended", "the call already ended");
        }
        // One caller per call: a reconnecting carrier replaces its previous socket.
        for previous in self.state.get_websockets() {
            let _ = previous.close(Some(1000), Some("replaced by a new connection"));
        }
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
        Inner::ensure_origin(self);
        Response::from_websocket(pair.client)
    }

    /// A message from the caller: remembered if it is `setup`, then sent to the origin in order,
    /// or held while the origin connection is being made.
    async fn on_caller_message(self: &Rc<Self>, _ws: &WebSocket, text: String) -> Result<()> {
        let is_setup = relayed_kind(&text) == RelayedKind::Setup;
        let (origin, overflow) = {
            let mut live = self.live.borrow_mut();
            if let Some(session) = live.session.as_mut() {
                session.touch(now());
            }
            if is_setup {
                live.setup = Some(text.clone());
            }
            match (&live.origin, live.connecting) {
                (Some(origin), false) => (Some(origin.clone()), false),
                _ => (None, live.buffer.push(text.clone()).is_err()),
            }
        };
        if is_setup {
            self.state.storage().put(SETUP_KEY, &text).await?;
        }
        match origin {
            Some(origin) => {
                if origin.send_with_str(&text).is_err() {
                    // The origin socket broke under us: hold the message and reconnect.
                    let _ = self.live.borrow_mut().buffer.push(text);
                    self.live.borrow_mut().origin = None;
                    Inner::ensure_origin(self);
                }
            }
            None if overflow => {
                console_error!(
                    "call relay: caller buffer full while the origin reconnects; ending the call"
                );
                Inner::finish(self, EndReason::OriginUnavailable).await?;
            }
            None => Inner::ensure_origin(self),
        }
        self.persist_activity_if_due().await
    }

    async fn persist_activity_if_due(&self) -> Result<()> {
        let due = {
            let live = self.live.borrow();
            live.session.as_ref().is_some_and(|s| {
                s.last_activity_ms >= live.persisted_activity_ms + ACTIVITY_PERSIST_MS
            })
        };
        if due {
            self.persist_session().await?;
        }
        Ok(())
    }

    /// The caller's socket closed. The call itself ends on the carrier's status callback, an
    /// API `end` or the idle alarm; without a caller the origin socket has nothing to do.
    async fn caller_left(&self, left: &WebSocket) -> Result<()> {
        if self.state.get_websockets().iter().any(|ws| ws != left) {
            return Ok(());
        }
        let origin = self.live.borrow_mut().origin.take();
        if let Some(origin) = origin {
            let _ = origin.close(Some(1000), Some("caller left"));
        }
        self.persist_session().await
    }

    /// Starts connecting to the origin unless a connection exists or is under way.
    fn ensure_origin(self: &Rc<Self>) {
        {
            let mut live = self.live.borrow_mut();
            if live.origin.is_some() || live.connecting {
                return;
            }
            live.connecting = true;
        }
        let inner = Rc::clone(self);
        worker::wasm_bindgen_futures::spawn_local(async move {
            if let Err(error) = Inner::connect_origin(&inner).await {
                console_error!("call relay: connecting to the origin failed: {error}");
                inner.live.borrow_mut().connecting = false;
            }
        });
    }

    /// Connects to the current region's origin, or the next ones in order; then replays `setup`
    /// when this is a reconnection, flushes what the caller said meanwhile, and pumps the
    /// origin's messages to the caller. Ends the call when no region answers.
    async fn connect_origin(self: &Rc<Self>) -> Result<()> {
        let (Some(session), Some(routing)) = (self.session(), self.routing()) else {
            self.live.borrow_mut().connecting = false;
            return Ok(());
        };
        if !session.is_active() {
            self.live.borrow_mut().connecting = false;
            return Ok(());
        }
        let config =
            crate::config::load(&self.env).map_err(|e| worker::Error::RustError(e.to_string()))?;
        let request_id = format!("{}-relay-{}", session.call_id, now());
        let path = shared::origin_path::call_relay(&session.call_id);
        let start = self.live.borrow().target;
        let count = routing.targets.len();
        for step in 0..count {
            let index = (start + step) % count;
            let target = &routing.targets[index];
            let signer = origin::Signer {
                secret: &config.signing_secret,
                principal: &routing.principal,
                country: routing.country.as_deref(),
                request_id: &request_id,
            };
            match connect_socket(&signer, target, &path).await {
                Ok(socket) => {
                    let (setup, held) = {
                        let mut live = self.live.borrow_mut();
                        let held = live.buffer.drain();
                        (live.setup.clone(), held)
                    };
                    // A new origin learns the call from `setup`; on the first connection it is
                    // the first held message already.
                    if let Some(setup) = setup
                        && held.first() != Some(&setup)
                    {
                        socket.send_with_str(&setup)?;
                    }
                    for message in &held {
                        socket.send_with_str(message)?;
                    }
                    let moved = {
                        let mut live = self.live.borrow_mut();
                        live.origin = Some(socket.clone());
                        live.connecting = false;
                        live.target = index;
                        let moved = live
                            .session
                            .as_ref()
                            .is_some_and(|s| s.region != target.region);
                        if moved && let Some(session) = live.session.as_mut() {
                            let _ = session.repin(&target.region, now());
                        }
                        moved
                    };
                    if moved {
                        console_log!("call {} moved to {}", session.call_id, target.region);
                        self.persist_session().await?;
                    }
                    Inner::pump(self, socket);
                    return Ok(());
                }
                Err(error) => {
                    console_warn!(
                        "call {}: origin in {} refused the relay: {error}",
                        session.call_id,
                        target.region
                    );
                    services::report_failure(
                        &self.env,
                        &shared::geo::wire::ReportRequest {
                            region: target.region.clone(),
                            client: session.tenant_id.clone(),
                        },
                        &request_id,
                    )
                    .await;
                }
            }
        }
        self.live.borrow_mut().connecting = false;
        console_error!(
            "call {}: no region's origin accepted the relay",
            session.call_id
        );
        for caller in self.state.get_websockets() {
            let _ = caller.close(Some(1011), Some("no origin available"));
        }
        Inner::finish(self, EndReason::OriginUnavailable).await?;
        Ok(())
    }

    /// Relays the origin's messages to the caller until the origin socket closes; an
    /// unexpected close of the current origin socket moves the call to the next region.
    fn pump(self: &Rc<Self>, socket: WebSocket) {
        let inner = Rc::clone(self);
        worker::wasm_bindgen_futures::spawn_local(async move {
            use futures::StreamExt;
            let mut events = match socket.events() {
                Ok(events) => events,
                Err(error) => {
                    console_error!("call relay: listening to the origin failed: {error}");
                    return;
                }
            };
            while let Some(event) = events.next().await {
                match event {
                    Ok(worker::WebsocketEvent::Message(message)) => {
                        if let Some(text) = message.text() {
                            inner.on_origin_message(text).await;
                        }
                    }
                    Ok(worker::WebsocketEvent::Close(_)) => break,
                    Err(error) => {
                        console_warn!("call relay: origin socket error: {error}");
                        break;
                    }
                }
            }
            let current = {
                let mut live = inner.live.borrow_mut();
                if live.origin.as_ref() == Some(&socket) {
                    live.origin = None;
                    true
                } else {
                    false
                }
            };
            let active = inner.session().is_some_and(|s| s.is_active());
            let caller_present = !inner.state.get_websockets().is_empty();
            if current && active && caller_present {
                // The origin went away mid-call: try the next region, starting after this one.
                {
                    let mut live = inner.live.borrow_mut();
                    let count = live.routing.as_ref().map_or(1, |r| r.targets.len().max(1));
                    live.target = (live.target + 1) % count;
                }
                Inner::ensure_origin(&inner);
            }
        });
    }

    /// A message from the origin: counted, then passed to the caller unchanged, except the
    /// origin's `error` notes, which are for our logs and not for the carrier.
    async fn on_origin_message(&self, text: String) {
        let kind = relayed_kind(&text);
        if kind == RelayedKind::OriginError {
            console_warn!(
                "call relay: origin reported: {}",
                text.chars().take(300).collect::<String>()
            );
            return;
        }
        let turn_closed = kind == RelayedKind::TurnEnd;
        {
            let mut live = self.live.borrow_mut();
            if let Some(session) = live.session.as_mut() {
                if turn_closed {
                    let _ = session.record_turn(now());
                } else {
                    session.touch(now());
                }
            }
        }
        for caller in self.state.get_websockets() {
            let _ = caller.send_with_str(&text);
        }
        if turn_closed && let Err(error) = self.persist_session().await {
            console_error!("call relay: storing the turn count failed: {error}");
        }
    }

    /// The targets starting with the one in use.
    fn targets_from_current(&self, routing: &Routing) -> Vec<Target> {
        let start = self.live.borrow().target;
        let count = routing.targets.len();
        (0..count)
            .map(|step| routing.targets[(start + step) % count].clone())
            .collect()
    }
}

/// Opens the signed WebSocket to one origin.
async fn connect_socket(
    signer: &origin::Signer<'_>,
    target: &Target,
    path: &str,
) -> Result<WebSocket> {
    let request = origin::signed_request(
        signer,
        target,
        Method::Get,
        path,
        &origin::Body::Upgrade,
        None,
        &[],
    )?;
    let response = edge_io::clock::within(
        std::time::Duration::from_secs(5),
        worker::Fetch::Request(request).send(),
    )
    .await
    .ok_or_else(|| worker::Error::RustError("no answer within 5 s".into()))??;
    let mut response = response;
    let status = response.status_code();
    if status != 101 {
        let text = response.text().await.unwrap_or_default();
        return Err(worker::Error::RustError(format!(
            "answered {status} instead of upgrading: {}",
            text.chars().take(200).collect::<String>()
        )));
    }
    let socket = response
        .websocket()
        .ok_or_else(|| worker::Error::RustError("answered 101 without a WebSocket".into()))?;
    socket.accept()?;
    Ok(socket)
}

fn lease_request(session: &CallState, principal: &Principal) -> LeaseRequest {
    LeaseRequest::for_call(&session.tenant_id, &principal.plan, &session.call_id)
}

fn end_reason_name(reason: EndReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "ended".to_owned())
}

fn refusal(status: u16, code: &str, message: &str) -> Result<Response> {
    Ok(Response::from_json(&serde_json::json!({
        "error": { "code": code, "message": message, "request_id": "" }
    }))?
    .with_status(status))
}

fn now() -> u64 {
    edge_io::clock::now_ms()
}
