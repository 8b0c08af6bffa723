//! The whole life of one call's two sockets, as its `CallSession` Durable Object lives it:
//! the caller's socket (the carrier's ConversationRelay, or an API client's) and the socket to
//! the origin of the call's region. Events in (`on_*`, `start`, `end`, `touch`), [`Action`]s
//! out, the time passed in — like quinn-proto's `Connection`, so every rule is tested natively on
//! a virtual clock and the object only loads, calls, performs and stores.
//!
//! The rules:
//! - Caller messages go to the origin in order. While there is no origin connection they are
//!   held ([`RelayBuffer`]); a full buffer ends the call (`origin_unavailable`) rather than lose
//!   what the caller said.
//! - The carrier's `setup` is remembered (and stored); a new origin connection gets it first, so
//!   another region's origin learns which call this is.
//! - Connecting tries the current region's origin, then the next ones in the call's failover
//!   order, each once, reporting each failure; when none accepts, the call ends. When a live
//!   origin connection closes, the call moves on to the next region; a failed send reconnects
//!   to the same one. An origin that closes for a restart (1012, its drain) has answered every
//!   caller turn it read, so the turns it sent no word after are said again to the next origin;
//!   after any other close what the origin read is unknown, and nothing is said twice.
//! - The origin's messages go to the caller unchanged, except its `error` notes (for the log).
//!   When the origin is lost mid-reply, the caller's talk cycle is closed (`text` with
//!   `last: true`), so the carrier's turn-taking is not left waiting. The origin's `end` reaches
//!   the caller first, then the call ends for the reason its `handoffData` names
//!   (`crate::handoff::end_reason`: `transferred`, `idle_timeout`, else `agent_ended`).
//! - A turn is a final `prompt` or a `dtmf` from the caller (or an API turn); activity is stored
//!   at most every [`ACTIVITY_PERSIST_MS`], a turn or a region change at once.
//! - Alarms end idle or over-long calls and renew the concurrent-call lease; a lease reclaimed
//!   while the call lived on is taken again. Ending releases the lease exactly once, tells the
//!   origin, and closes both sockets — when the end did not come from the origin and its socket
//!   is open, only once the origin has said its last words (its `end`, carrying e.g. an API
//!   client's handoff data) or closed, or [`ORIGIN_END_GRACE_MS`] passed, so the carrier gets
//!   the `end` before anything closes.

use serde::{Deserialize, Serialize};

use super::wire::{CarrierReport, EndRequest, SessionRefusal, StartSession};
use super::{AlarmAction, CallSession, EndReason, RelayBuffer, SessionLimits};
use crate::carrier::{AnsweredBy, CallProgress};
use crate::geo::Target;
use crate::geo::targets;
use crate::principal::Principal;
use crate::rate_limit::api::LeaseRequest;
use crate::relay::{Outbound, RelayedKind, relayed_kind};

/// Caller messages held while the origin connection is (re-)established…
pub const BUFFER_MESSAGES: usize = 256;
/// …and their bytes.
pub const BUFFER_BYTES: usize = 256 * 1024;
/// Activity is stored at most this often (the in-memory copy is exact).
pub const ACTIVITY_PERSIST_MS: u64 = 10_000;
/// How long an ended call's sockets wait for the origin's `end` before they close anyway.
pub const ORIGIN_END_GRACE_MS: u64 = 3_000;

/// How to reach the call's origins and sign for it; stored beside the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    /// Who started the call; origin requests made for it are signed as this principal.
    pub principal: Principal,
    /// The origins in failover order, the call's region first.
    pub targets: Vec<Target>,
    /// The caller's country, for `X-CF-Country`.
    pub country: Option<String>,
    /// The call's trace id, continued by every request made for the call (absent in a session
    /// stored before traces, which then starts a trace per request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// One connection attempt (or connection) to an origin. A socket event names the link it
/// happened on, so an event of a link already given up is recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkId(pub u64);

/// Which stored record an [`Action::Persist`] writes (its current value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// The [`CallSession`].
    Session,
    /// The [`Routing`].
    Routing,
    /// The carrier's `setup` message.
    Setup,
}

/// A concurrent-call lease operation on the rate-limiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAction {
    /// Extend the live lease; answer with [`Relay::on_lease_renewed`].
    Renew(LeaseRequest),
    /// Take the lease again after it was reclaimed; answer with [`Relay::on_lease_acquired`].
    Acquire(LeaseRequest),
    /// Give it back (the call ended); nothing to answer.
    Release(LeaseRequest),
}

/// What a lease operation came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The lease is held (or the limiter answered degraded, which holds nothing to lose).
    Held,
    /// The limiter holds no such lease: it was reclaimed (renewal only).
    NotHeld,
    /// Refused, or the limiter could not be reached.
    Failed,
}

/// Something worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The call moved to another region's origin.
    Moved {
        /// The new region.
        region: String,
    },
    /// The caller said more than the buffer holds while the origin reconnected.
    BufferFull,
    /// No region's origin accepted the relay.
    NoOriginAccepted,
    /// The origin sent an `error` note about a caller message (its text, shortened).
    OriginReported(String),
    /// The lease could not be renewed or taken again; retried at the next alarm.
    LeaseNotRenewed,
    /// The call ended.
    Ended(EndReason),
}

/// What the object must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Store a record's current value.
    Persist(Record),
    /// Set the object's alarm at this Unix ms.
    ScheduleAlarm(u64),
    /// Delete the object's alarm.
    CancelAlarm,
    /// Open the relay socket to `target`'s origin; answer with [`Relay::on_origin_connected`]
    /// or [`Relay::on_connect_failed`].
    Connect {
        /// The attempt.
        link: LinkId,
        /// Where.
        target: Target,
    },
    /// Send on the origin socket of `link`; a failure is answered with [`Relay::on_send_failed`].
    SendToOrigin {
        /// The connection.
        link: LinkId,
        /// The message, byte for byte as the caller sent it.
        text: String,
    },
    /// Close the origin socket of `link` (when it is open).
    CloseOrigin {
        /// The connection.
        link: LinkId,
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: &'static str,
    },
    /// Send to the caller's socket(s).
    SendToCaller(String),
    /// Close every caller socket.
    CloseCallers {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: &'static str,
    },
    /// Tell geo-router this region's origin failed (best effort).
    ReportFailure {
        /// The region.
        region: String,
    },
    /// A lease operation.
    Lease(LeaseAction),
    /// Tell the origin the call ended: `POST /v1/calls/{id}/end` to these origins in order
    /// until one answers ([`origin_knows_it_ended`] judges the answer).
    EndAtOrigin {
        /// Where, the region in use first.
        targets: Vec<Target>,
        /// Why.
        reason: EndReason,
        /// An API client's own reason, told instead of `reason`'s name.
        said_reason: Option<String>,
        /// An API client's handoff data, for the relay's `end`.
        handoff_data: Option<serde_json::Value>,
    },
    /// Tell the origin what answering-machine detection found:
    /// `POST /v1/calls/{id}/answered-by` to these origins in order until one answers. The origin
    /// tells the call's live relay session (which leaves the voicemail or hangs up on a machine).
    AnsweredAtOrigin {
        /// Where, the region in use first.
        targets: Vec<Target>,
        /// The finding.
        answered_by: AnsweredBy,
    },
    /// A log line.
    Note(Note),
}

/// Whether the origin's answer to `POST /v1/calls/{id}/end` means it knows the call is over:
/// ended now (200), unknown there (404) or already ended (409).
pub fn origin_knows_it_ended(status: u16) -> bool {
    matches!(status, 200 | 404 | 409)
}

/// WebSocket close code "service restart" (RFC 6455 registry): the origin's drain.
pub const CLOSE_SERVICE_RESTART: u16 = 1012;

/// How an origin socket closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginClosed {
    /// The origin is restarting (close code [`CLOSE_SERVICE_RESTART`]): it finished the turn it
    /// was in before closing, so a caller turn it sent nothing after was never read.
    Restart,
    /// Any other way (a failure, a crash, a close without that code): what it read is unknown.
    Lost,
}

impl OriginClosed {
    /// From a close event's code (none when the socket failed without one).
    pub fn from_code(code: Option<u16>) -> Self {
        if code == Some(CLOSE_SERVICE_RESTART) {
            Self::Restart
        } else {
            Self::Lost
        }
    }
}

/// Most caller turns kept as possibly unread by the origin (more than a caller says between
/// two words of the origin).
const UNANSWERED_MAX: usize = 16;

/// The state of the connection to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// None, and none being made.
    Down,
    /// Connecting to `targets[target]`; `tried` regions already failed in this round.
    Connecting { id: LinkId, tried: usize },
    /// Open.
    Up { id: LinkId },
}

/// One call's relay: its stored state and its live connection state.
#[derive(Debug, Clone)]
pub struct Relay {
    session: CallSession,
    routing: Routing,
    setup: Option<String>,
    limits: SessionLimits,
    link: Link,
    /// Index into `routing.targets` of the origin in use (or being tried).
    target: usize,
    buffer: RelayBuffer,
    persisted_activity_ms: u64,
    /// A reply's pieces went to the caller and its `last: true` has not.
    reply_open: bool,
    /// Caller turns sent on the open link since the origin last said anything, oldest first:
    /// said again to the next origin when this one closes for a restart.
    unanswered: Vec<String>,
    next_link: u64,
    /// The call ended while the origin's socket was open: its `end` is awaited until this Unix ms.
    awaiting_origin_end: Option<u64>,
}

impl Relay {
    /// A new call at `now_ms` (its lease was just taken): stores it and sets its first alarm.
    pub fn start(
        start: StartSession,
        limits: SessionLimits,
        now_ms: u64,
    ) -> Result<(Self, Vec<Action>), SessionRefusal> {
        if start.targets.is_empty() {
            return Err(SessionRefusal::NoRegion);
        }
        let session = CallSession::start(start.call, now_ms);
        let routing = Routing {
            principal: start.principal,
            targets: start.targets,
            country: start.country,
            trace_id: start.trace_id,
        };
        let relay = Self::restore(session, routing, None, limits);
        let mut actions = vec![
            Action::Persist(Record::Routing),
            Action::Persist(Record::Session),
        ];
        actions.extend(relay.alarm_action());
        Ok((relay, actions))
    }

    /// The relay of a stored call (after eviction or hibernation): no origin connection, the
    /// region the call is pinned to as the current one.
    pub fn restore(
        session: CallSession,
        routing: Routing,
        setup: Option<String>,
        limits: SessionLimits,
    ) -> Self {
        let target = pinned_index(&session, &routing);
        Self {
            persisted_activity_ms: session.last_activity_ms,
            session,
            routing,
            setup,
            limits,
            link: Link::Down,
            target,
            buffer: RelayBuffer::new(BUFFER_MESSAGES, BUFFER_BYTES),
            reply_open: false,
            unanswered: Vec::new(),
            next_link: 0,
            awaiting_origin_end: None,
        }
    }

    /// The call's state.
    pub fn session(&self) -> &CallSession {
        &self.session
    }

    /// How the call reaches its origins.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// The carrier's `setup`, once it came.
    pub fn setup(&self) -> Option<&str> {
        self.setup.as_deref()
    }

    /// The origins from the one in use onwards: where a request for this call goes.
    pub fn targets_from_current(&self) -> Vec<Target> {
        targets::starting_at(&self.routing.targets, self.target)
    }

    /// A caller socket asks to join, authenticated as `tenant`. Another tenant's call does not
    /// exist for it. A new caller replaces the previous one (a reconnecting carrier).
    pub fn on_caller_connected(&mut self, tenant: &str) -> Result<Vec<Action>, SessionRefusal> {
        if self.session.tenant_id != tenant {
            return Err(SessionRefusal::UnknownCall);
        }
        if !self.session.is_active() {
            return Err(SessionRefusal::CallEnded);
        }
        let mut actions = vec![Action::CloseCallers {
            code: 1000,
            reason: "replaced by a new connection",
        }];
        if self.link == Link::Down {
            actions.push(self.connect(0));
        }
        Ok(actions)
    }

    /// A text message from the caller.
    pub fn on_caller_text(&mut self, text: String, now_ms: u64) -> Vec<Action> {
        if !self.session.is_active() {
            return Vec::new();
        }
        // Sends come before storage: the caller's words never wait for a write.
        let mut actions = Vec::new();
        let mut persists = Vec::new();
        let mut turn = false;
        match relayed_kind(&text) {
            RelayedKind::Setup => {
                self.setup = Some(text.clone());
                persists.push(Action::Persist(Record::Setup));
            }
            RelayedKind::CallerTurn => turn = self.session.record_turn(now_ms).is_ok(),
            _ => {}
        }
        self.session.touch(now_ms);
        match self.link {
            Link::Up { id } => {
                if turn {
                    self.sent_turn(&text);
                }
                actions.push(Action::SendToOrigin { link: id, text });
            }
            Link::Connecting { .. } | Link::Down => {
                actions.extend(self.hold(text, now_ms));
                if !self.session.is_active() {
                    return actions;
                }
            }
        }
        actions.extend(persists);
        actions.extend(self.persist_session(turn));
        actions
    }

    /// The origin socket of `link` opened.
    pub fn on_origin_connected(&mut self, link: LinkId, now_ms: u64) -> Vec<Action> {
        let awaited = matches!(self.link, Link::Connecting { id, .. } if id == link);
        if !awaited || !self.session.is_active() {
            // Given up on meanwhile (the caller left, or the call ended).
            return vec![Action::CloseOrigin {
                link,
                code: 1000,
                reason: "no longer needed",
            }];
        }
        self.link = Link::Up { id: link };
        let mut actions = Vec::new();
        let held = self.buffer.drain();
        // A new origin learns the call from `setup`; on the first connection it is the first
        // held message already. Everything held goes out before anything else is done, so a
        // message said meanwhile cannot overtake it.
        if let Some(setup) = &self.setup
            && held.first() != Some(setup)
        {
            actions.push(Action::SendToOrigin {
                link,
                text: setup.clone(),
            });
        }
        for text in held {
            if relayed_kind(&text) == RelayedKind::CallerTurn {
                self.sent_turn(&text);
            }
            actions.push(Action::SendToOrigin { link, text });
        }
        let region = self.routing.targets[self.target].region.clone();
        if region != self.session.region && self.session.repin(&region, now_ms).is_ok() {
            actions.push(Action::Note(Note::Moved { region }));
            actions.extend(self.persist_session(true));
        }
        actions
    }

    /// Opening the origin socket of `link` failed: the next region is tried, until every one
    /// has been; then the call ends.
    pub fn on_connect_failed(&mut self, link: LinkId, now_ms: u64) -> Vec<Action> {
        let Link::Connecting { id, tried } = self.link else {
            return Vec::new();
        };
        if id != link {
            return Vec::new();
        }
        let mut actions = vec![Action::ReportFailure {
            region: self.routing.targets[self.target].region.clone(),
        }];
        let tried = tried + 1;
        if tried >= self.routing.targets.len() {
            self.link = Link::Down;
            self.target = pinned_index(&self.session, &self.routing);
            actions.push(Action::Note(Note::NoOriginAccepted));
            actions.extend(self.end(EndReason::OriginUnavailable, now_ms));
        } else {
            self.target = targets::next_index(self.target, self.routing.targets.len());
            actions.push(self.connect(tried));
        }
        actions
    }

    /// A text message from the origin of `link`.
    pub fn on_origin_text(&mut self, link: LinkId, text: String, now_ms: u64) -> Vec<Action> {
        if self.link != (Link::Up { id: link }) {
            // A connection already replaced: its late words must not reach the caller twice.
            return Vec::new();
        }
        // The origin speaks after reading what came before: nothing sent so far is unread.
        self.unanswered.clear();
        match relayed_kind(&text) {
            RelayedKind::OriginError => {
                let shortened = text.chars().take(300).collect();
                return vec![Action::Note(Note::OriginReported(shortened))];
            }
            RelayedKind::ReplyPiece => self.reply_open = true,
            RelayedKind::TurnEnd => self.reply_open = false,
            RelayedKind::SessionEnd => {
                self.reply_open = false;
                let reason = EndReason::of_agent_end(&text);
                let mut actions = vec![Action::SendToCaller(text)];
                if self.session.is_active() {
                    actions.extend(self.end_with(EndRequest::new(reason), true, now_ms));
                } else {
                    // The origin's last words after an end told to it: now everything closes.
                    actions.extend(self.close_after_end(link));
                }
                return actions;
            }
            _ => {}
        }
        if !self.session.is_active() {
            // Ending: the origin's last words (its `end`) still reach the caller.
            return vec![Action::SendToCaller(text)];
        }
        self.session.touch(now_ms);
        let mut actions = vec![Action::SendToCaller(text)];
        actions.extend(self.persist_session(false));
        actions
    }

    /// The origin socket of `link` closed (or failed), as `closed` says. A live call with a
    /// caller moves on to the next region; after a restart, the caller turns the origin sent no
    /// word after go to the next origin first (after `setup`).
    pub fn on_origin_closed(
        &mut self,
        link: LinkId,
        closed: OriginClosed,
        caller_present: bool,
        _now_ms: u64,
    ) -> Vec<Action> {
        if self.link != (Link::Up { id: link }) {
            return Vec::new();
        }
        if self.awaiting_origin_end.is_some() {
            // Closed without an `end` after the call ended: nothing more will come.
            return self.close_after_end(link);
        }
        self.link = Link::Down;
        let unanswered = std::mem::take(&mut self.unanswered);
        let mut actions = self.close_open_reply();
        if self.session.is_active() && caller_present {
            if closed == OriginClosed::Restart {
                // The buffer is empty while a link is up: these go first, in their order.
                for text in unanswered {
                    if self.buffer.push(text).is_err() {
                        break;
                    }
                }
            }
            self.target = targets::next_index(self.target, self.routing.targets.len());
            actions.push(self.connect(0));
        }
        actions
    }

    /// A caller turn went out on the open link.
    fn sent_turn(&mut self, text: &str) {
        if self.unanswered.len() >= UNANSWERED_MAX {
            self.unanswered.remove(0);
        }
        self.unanswered.push(text.to_owned());
    }

    /// Sending `text` on the origin socket of `link` failed: the message is held and the same
    /// region is connected again (the socket broke, the region may be fine).
    pub fn on_send_failed(&mut self, link: LinkId, text: String, now_ms: u64) -> Vec<Action> {
        if !self.session.is_active() {
            return Vec::new();
        }
        let mut actions = Vec::new();
        if self.link == (Link::Up { id: link }) {
            self.link = Link::Down;
            // The socket broke: what the origin read of it is unknown.
            self.unanswered.clear();
            actions.extend(self.close_open_reply());
        }
        actions.extend(self.hold(text, now_ms));
        actions
    }

    /// Holds a caller message until an origin connection is open (making one if none is
    /// under way); a full buffer ends the call rather than lose what the caller said.
    fn hold(&mut self, text: String, now_ms: u64) -> Vec<Action> {
        if self.buffer.push(text).is_err() {
            let mut actions = vec![Action::Note(Note::BufferFull)];
            actions.extend(self.end(EndReason::OriginUnavailable, now_ms));
            return actions;
        }
        match self.link {
            Link::Down => vec![self.connect(0)],
            Link::Connecting { .. } | Link::Up { .. } => Vec::new(),
        }
    }

    /// The caller's socket closed; `others_remain` when another caller socket is still open.
    /// The call itself ends on the carrier's status callback, the API or an alarm; without a
    /// caller the origin connection has nothing to do.
    pub fn on_caller_left(&mut self, others_remain: bool) -> Vec<Action> {
        if others_remain {
            return Vec::new();
        }
        let mut actions = Vec::new();
        match self.link {
            Link::Up { id } => actions.push(Action::CloseOrigin {
                link: id,
                code: 1000,
                reason: "caller left",
            }),
            Link::Connecting { .. } => {}
            Link::Down => return actions,
        }
        self.link = Link::Down;
        self.unanswered.clear();
        self.reply_open = false;
        // Nobody is left to hear an ended call's last words.
        self.awaiting_origin_end = None;
        actions.extend(self.persist_session(true));
        actions
    }

    /// The object's alarm fired.
    pub fn on_alarm(&mut self, now_ms: u64) -> Vec<Action> {
        if let (Some(deadline), Link::Up { id }) = (self.awaiting_origin_end, self.link) {
            if now_ms >= deadline {
                return self.close_after_end(id);
            }
            return vec![Action::ScheduleAlarm(deadline)];
        }
        match self.session.on_alarm(now_ms, &self.limits) {
            AlarmAction::End(reason) => self.end(reason, now_ms),
            AlarmAction::RenewLease => vec![Action::Lease(LeaseAction::Renew(self.lease()))],
            AlarmAction::Nothing => self.alarm_action().into_iter().collect(),
        }
    }

    /// The answer to a [`LeaseAction::Renew`].
    pub fn on_lease_renewed(&mut self, outcome: LeaseOutcome, now_ms: u64) -> Vec<Action> {
        match outcome {
            LeaseOutcome::NotHeld if self.session.is_active() => {
                vec![Action::Lease(LeaseAction::Acquire(self.lease()))]
            }
            outcome => self.lease_attempted(outcome == LeaseOutcome::Held, now_ms),
        }
    }

    /// The answer to a [`LeaseAction::Acquire`].
    pub fn on_lease_acquired(&mut self, outcome: LeaseOutcome, now_ms: u64) -> Vec<Action> {
        self.lease_attempted(outcome == LeaseOutcome::Held, now_ms)
    }

    /// An API turn (`turn`) or other activity.
    pub fn touch(&mut self, turn: bool, now_ms: u64) -> Result<Vec<Action>, SessionRefusal> {
        if !self.session.is_active() {
            return Err(SessionRefusal::CallEnded);
        }
        if turn {
            self.session
                .record_turn(now_ms)
                .map_err(|_| SessionRefusal::CallEnded)?;
        } else {
            self.session.touch(now_ms);
        }
        Ok(self.persist_session(true).into_iter().collect())
    }

    /// Ends the call (the carrier, the API, an alarm or the relay said so): stored, the alarm
    /// cancelled, the lease released, the origin told, both sockets closed. Ending twice is
    /// refused, so all of that happens once.
    pub fn end(&mut self, reason: EndReason, now_ms: u64) -> Vec<Action> {
        self.end_with(EndRequest::new(reason), false, now_ms)
    }

    /// [`Relay::end`], telling the origin what the request adds (an API client's reason and
    /// handoff data); `origin_said_end` when the end is the origin's own `end`, already passed on.
    fn end_with(&mut self, request: EndRequest, origin_said_end: bool, now_ms: u64) -> Vec<Action> {
        let EndRequest {
            reason,
            said_reason,
            handoff_data,
        } = request;
        if self.session.end(reason, now_ms).is_err() {
            return Vec::new();
        }
        self.buffer.drain();
        self.reply_open = false;
        let mut actions: Vec<Action> = self.persist_session(true).into_iter().collect();
        actions.extend([
            Action::CancelAlarm,
            Action::Lease(LeaseAction::Release(self.lease())),
            Action::EndAtOrigin {
                targets: self.targets_from_current(),
                reason,
                said_reason,
                handoff_data,
            },
        ]);
        match self.link {
            // The origin's last words (its `end`, sent when it is told the call ended) reach the
            // caller before anything closes: both sockets stay until it says them or closes.
            Link::Up { .. } if !origin_said_end => {
                let deadline = now_ms.saturating_add(ORIGIN_END_GRACE_MS);
                self.awaiting_origin_end = Some(deadline);
                // Replaces the cancelled alarm: the grace's end.
                actions.push(Action::ScheduleAlarm(deadline));
                actions.push(Action::Note(Note::Ended(reason)));
                return actions;
            }
            // Stays up until its close is seen.
            Link::Up { id } => actions.push(Action::CloseOrigin {
                link: id,
                code: 1000,
                reason: "call ended",
            }),
            // The attempt is closed when it completes.
            Link::Connecting { .. } => self.link = Link::Down,
            Link::Down => {}
        }
        let (code, why) = match reason {
            EndReason::OriginUnavailable => (1011, "no origin available"),
            _ => (1000, "call ended"),
        };
        actions.push(Action::CloseCallers { code, reason: why });
        actions.push(Action::Note(Note::Ended(reason)));
        actions
    }

    /// An ended call's origin said its `end` (or closed, or its grace passed): both sockets
    /// close now.
    fn close_after_end(&mut self, link: LinkId) -> Vec<Action> {
        if self.awaiting_origin_end.take().is_none() {
            return Vec::new();
        }
        let mut actions = Vec::new();
        if self.link == (Link::Up { id: link }) {
            actions.push(Action::CloseOrigin {
                link,
                code: 1000,
                reason: "call ended",
            });
        }
        actions.extend([
            Action::CancelAlarm,
            Action::CloseCallers {
                code: 1000,
                reason: "call ended",
            },
        ]);
        actions
    }

    /// What the carrier reported (a status callback, an AMD result, or its answer to placing the
    /// call): the call binds to the first carrier call id it hears and refuses another; its
    /// status moves forward as reported (`ringing`, answered) and a final status ends it, which
    /// gives the lease back at once; the first `AnsweredBy` is kept and told to the origin. A
    /// report about an ended call is refused as [`SessionRefusal::CallEnded`].
    pub fn on_carrier_report(
        &mut self,
        report: CarrierReport,
        now_ms: u64,
    ) -> Result<Vec<Action>, SessionRefusal> {
        if let (Some(bound), Some(named)) = (
            self.session.carrier_call_id.as_deref(),
            report.carrier_call_id.as_deref(),
        ) && bound != named
        {
            return Err(SessionRefusal::CarrierMismatch);
        }
        if !self.session.is_active() {
            return Err(SessionRefusal::CallEnded);
        }
        if self.session.carrier_call_id.is_none() {
            self.session.carrier_call_id = report.carrier_call_id;
        }
        if report.carrier_status.is_some() {
            self.session.carrier_status = report.carrier_status;
        }
        self.session.touch(now_ms);
        let detected = report
            .answered_by
            .filter(|_| self.session.answered_by.is_none());
        if detected.is_some() {
            self.session.answered_by = detected;
        }
        if let Some(CallProgress::Ended(reason)) = report.progress {
            return Ok(self.end(reason, now_ms));
        }
        if let Some(progress) = report.progress {
            self.session.advance(progress);
        }
        let mut actions: Vec<Action> = self.persist_session(true).into_iter().collect();
        if let Some(answered_by) = detected {
            actions.push(Action::AnsweredAtOrigin {
                targets: self.targets_from_current(),
                answered_by,
            });
        }
        Ok(actions)
    }

    /// Ends the call on request (`/end`): refused when there is no live call to end.
    pub fn end_requested(
        &mut self,
        request: EndRequest,
        now_ms: u64,
    ) -> Result<Vec<Action>, SessionRefusal> {
        if !self.session.is_active() {
            return Err(SessionRefusal::CallEnded);
        }
        Ok(self.end_with(request, false, now_ms))
    }

    fn connect(&mut self, tried: usize) -> Action {
        let id = LinkId(self.next_link);
        self.next_link += 1;
        self.link = Link::Connecting { id, tried };
        Action::Connect {
            link: id,
            target: self.routing.targets[self.target].clone(),
        }
    }

    /// The caller heard part of a reply whose end will not come: close its talk cycle.
    fn close_open_reply(&mut self) -> Vec<Action> {
        if std::mem::take(&mut self.reply_open) && self.session.is_active() {
            vec![Action::SendToCaller(Outbound::turn_end().to_json())]
        } else {
            Vec::new()
        }
    }

    fn lease(&self) -> LeaseRequest {
        LeaseRequest::for_call(
            &self.session.tenant_id,
            &self.routing.principal.plan,
            &self.session.call_id,
        )
    }

    fn lease_attempted(&mut self, held: bool, now_ms: u64) -> Vec<Action> {
        // Renewal is attempted on schedule either way; a failure is retried at the next alarm.
        self.session.lease_renewed(now_ms);
        let mut actions = Vec::new();
        if !held {
            actions.push(Action::Note(Note::LeaseNotRenewed));
        }
        actions.extend(self.persist_session(true));
        actions.extend(self.alarm_action());
        actions
    }

    /// Stores the session now (`now`) or when its activity is due.
    fn persist_session(&mut self, now: bool) -> Option<Action> {
        let due = self.session.last_activity_ms
            >= self
                .persisted_activity_ms
                .saturating_add(ACTIVITY_PERSIST_MS);
        (now || due).then(|| {
            self.persisted_activity_ms = self.session.last_activity_ms;
            Action::Persist(Record::Session)
        })
    }

    fn alarm_action(&self) -> Option<Action> {
        Some(match self.session.next_alarm_ms(&self.limits) {
            Some(at) => Action::ScheduleAlarm(at),
            None => Action::CancelAlarm,
        })
    }
}

/// The index of the call's region among its targets (the first when it is not one of them).
fn pinned_index(session: &CallSession, routing: &Routing) -> usize {
    routing
        .targets
        .iter()
        .position(|t| t.region == session.region)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
