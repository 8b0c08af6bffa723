//! The relay driven on a virtual clock against simulated origins, a simulated caller, storage,
//! an alarm and a lease service — quinn-proto's `tests/util.rs` `Pair::drive` in spirit: every
//! action is performed by [`World::drive`] until nothing is left to do, so a test states events
//! and checks what the caller, the origins and storage saw.

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;

use super::*;
use crate::call_session::wire::{EndRequest, StartSession};
use crate::call_session::{CallDirection, CallSource, CallStatus, StartCall};
use crate::carrier::CarrierKind;
use crate::principal::AuthMethod;

const T0: u64 = 1_700_000_000_000;
const TENANT: &str = "t1";

fn limits() -> SessionLimits {
    SessionLimits {
        idle_timeout_ms: 300_000,
        max_duration_ms: 3_600_000,
        lease_renew_every_ms: 20_000,
    }
}

fn target(region: &str) -> Target {
    Target::new(region, &format!("https://{region}.origin"))
}

fn setup() -> String {
    r#"{"type":"setup","callSid":"CA1","customParameters":{"agent_id":"a1"}}"#.to_owned()
}

fn prompt(text: &str) -> String {
    format!(r#"{{"type":"prompt","voicePrompt":"{text}","last":true}}"#)
}

fn piece(text: &str) -> String {
    format!(r#"{{"type":"text","token":"{text}","last":false}}"#)
}

fn turn_end() -> String {
    Outbound::turn_end().to_json()
}

/// One simulated origin (a region).
#[derive(Default)]
struct Origin {
    up: bool,
    /// Everything it received, in order, over all its connections.
    received: Vec<String>,
    connections: u32,
}

/// What the object's storage holds, as JSON (so every restore is a real round trip).
#[derive(Default)]
struct Storage {
    session: Option<String>,
    routing: Option<String>,
    setup: Option<String>,
}

struct World {
    now: u64,
    relay: Relay,
    origins: BTreeMap<String, Origin>,
    /// Open origin sockets (link, region), oldest first: the object's own list.
    sockets: Vec<(LinkId, String)>,
    /// Connection attempts not yet answered.
    pending: VecDeque<(LinkId, Target)>,
    /// Whether attempts are answered as soon as they are made.
    auto_connect: bool,
    caller_present: bool,
    caller_received: Vec<String>,
    caller_closed: Option<u16>,
    storage: Storage,
    alarm: Option<u64>,
    lease_held: bool,
    lease_ops: Vec<&'static str>,
    reports: Vec<String>,
    ended_at_origin: Vec<(String, EndReason)>,
    /// What each end told the origin besides its reason: (said reason, handoff data).
    told_origin: Vec<(Option<String>, Option<serde_json::Value>)>,
    notes: Vec<Note>,
    /// Every message an origin received, in the order they arrived, over all origins.
    delivered: Vec<String>,
    /// What the origins were told answering-machine detection found.
    answered_at_origin: Vec<AnsweredBy>,
    /// Every action performed, for tests about order.
    log: Vec<Action>,
    /// Whether an origin told of the call's end answers on the relay with `end` (as the real
    /// origin does when the call's session is on it).
    origin_answers_end: bool,
}

impl World {
    /// A call started at `T0` over `regions` (the first is the call's), with a caller connected.
    fn new(regions: &[&str]) -> Self {
        Self::started(regions, CallDirection::Inbound)
    }

    /// An outbound call placed at `T0`: queued, its carrier call id not yet known.
    fn outbound(regions: &[&str]) -> Self {
        Self::started(regions, CallDirection::Outbound)
    }

    fn started(regions: &[&str], direction: CallDirection) -> Self {
        let start = StartSession {
            call: StartCall {
                call_id: "CA1".into(),
                tenant_id: TENANT.into(),
                agent_id: Some("a1".into()),
                source: CallSource::Phone,
                region: regions[0].into(),
                direction,
                carrier: Some(CarrierKind::Twilio),
                carrier_call_id: (direction == CallDirection::Inbound).then(|| "CA1".into()),
            },
            principal: Principal {
                tenant_id: TENANT.into(),
                subject: "carrier".into(),
                scopes: Vec::new(),
                plan: "pro".into(),
                method: AuthMethod::TwilioSignature,
            },
            targets: regions.iter().map(|r| target(r)).collect(),
            country: Some("US".into()),
            request_id: "req-1".into(),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        };
        let (relay, actions) = Relay::start(start, limits(), T0).expect("starts");
        let mut world = World {
            now: T0,
            relay,
            origins: regions
                .iter()
                .map(|r| {
                    (
                        (*r).to_owned(),
                        Origin {
                            up: true,
                            ..Origin::default()
                        },
                    )
                })
                .collect(),
            sockets: Vec::new(),
            pending: VecDeque::new(),
            auto_connect: true,
            caller_present: false,
            caller_received: Vec::new(),
            caller_closed: None,
            storage: Storage::default(),
            alarm: None,
            lease_held: true,
            lease_ops: Vec::new(),
            reports: Vec::new(),
            ended_at_origin: Vec::new(),
            told_origin: Vec::new(),
            notes: Vec::new(),
            delivered: Vec::new(),
            answered_at_origin: Vec::new(),
            log: Vec::new(),
            origin_answers_end: true,
        };
        world.drive(actions);
        world
    }

    /// As the object does: the previous caller is closed, the new socket accepted, and only
    /// then does the origin connection (a task of its own) get under way.
    fn connect_caller(&mut self) {
        let actions = self.relay.on_caller_connected(TENANT).expect("joins");
        let (closes, rest): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::CloseCallers { .. }));
        self.drive(closes);
        self.caller_present = true;
        self.caller_closed = None;
        self.drive(rest);
    }

    /// The caller hangs up its socket.
    fn caller_leaves(&mut self) {
        self.caller_present = false;
        let actions = self.relay.on_caller_left(false);
        self.drive(actions);
    }

    fn caller_says(&mut self, text: &str) {
        let actions = self.relay.on_caller_text(text.to_owned(), self.now);
        self.drive(actions);
    }

    fn origin_says(&mut self, text: &str) {
        let (link, _) = self.open().expect("an origin is connected");
        let actions = self.relay.on_origin_text(link, text.to_owned(), self.now);
        self.drive(actions);
    }

    /// The region's origin dies: its socket (if open) closes, and it refuses new connections.
    fn kill(&mut self, region: &str) {
        self.close_region(region, OriginClosed::Lost);
    }

    /// The region's origin drains: its socket closes with 1012, and it refuses new connections.
    fn restart(&mut self, region: &str) {
        self.close_region(region, OriginClosed::Restart);
    }

    fn close_region(&mut self, region: &str, closed: OriginClosed) {
        self.origin(region).up = false;
        let dropped: Vec<LinkId> = self
            .sockets
            .iter()
            .filter(|(_, open_region)| open_region == region)
            .map(|(link, _)| *link)
            .collect();
        self.sockets
            .retain(|(_, open_region)| open_region != region);
        for link in dropped {
            let actions = self
                .relay
                .on_origin_closed(link, closed, self.caller_present, self.now);
            self.drive(actions);
        }
    }

    fn revive(&mut self, region: &str) {
        self.origin(region).up = true;
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        while let Some(at) = self.alarm
            && at <= self.now
        {
            self.alarm = None;
            let actions = self.relay.on_alarm(self.now);
            self.drive(actions);
        }
    }

    /// The object is evicted and comes back: only storage survives.
    fn evict(&mut self) {
        assert!(
            self.sockets.is_empty(),
            "an open origin socket keeps the object alive"
        );
        let session = serde_json::from_str(self.storage.session.as_deref().expect("stored"))
            .expect("session parses");
        let routing = serde_json::from_str(self.storage.routing.as_deref().expect("stored"))
            .expect("routing parses");
        let setup = self.storage.setup.clone();
        self.relay = Relay::restore(session, routing, setup, limits());
    }

    /// Answers the connection attempts made so far.
    fn complete_connects(&mut self) {
        while let Some((link, target)) = self.pending.pop_front() {
            let actions = if self.origin(&target.region).up {
                self.origin(&target.region).connections += 1;
                self.sockets.push((link, target.region.clone()));
                self.relay.on_origin_connected(link, self.now)
            } else {
                self.relay.on_connect_failed(link, self.now)
            };
            self.drive(actions);
        }
    }

    /// The newest open origin socket (the one a healthy relay uses).
    fn open(&self) -> Option<(LinkId, String)> {
        self.sockets.last().cloned()
    }

    fn origin(&mut self, region: &str) -> &mut Origin {
        self.origins.get_mut(region).expect("known region")
    }

    fn stored_session(&self) -> CallSession {
        serde_json::from_str(self.storage.session.as_deref().expect("stored")).expect("parses")
    }

    /// Performs actions, and the actions their answers lead to, until none is left.
    fn drive(&mut self, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        loop {
            while let Some(action) = queue.pop_front() {
                self.log.push(action.clone());
                let more = self.perform(action);
                // Answers come after what was already queued, as the object awaits in order.
                queue.extend(more);
            }
            if !self.auto_connect || self.pending.is_empty() {
                return;
            }
            self.complete_connects();
        }
    }

    fn perform(&mut self, action: Action) -> Vec<Action> {
        match action {
            Action::Persist(Record::Session) => {
                self.storage.session =
                    Some(serde_json::to_string(self.relay.session()).expect("json"));
            }
            Action::Persist(Record::Routing) => {
                self.storage.routing =
                    Some(serde_json::to_string(self.relay.routing()).expect("json"));
            }
            Action::Persist(Record::Setup) => {
                self.storage.setup = self.relay.setup().map(str::to_owned);
            }
            Action::ScheduleAlarm(at) => self.alarm = Some(at),
            Action::CancelAlarm => self.alarm = None,
            Action::Connect { link, target } => self.pending.push_back((link, target)),
            Action::SendToOrigin { link, text } => {
                let socket = self.sockets.iter().find(|(open, _)| *open == link).cloned();
                let delivered = match socket {
                    Some((_, region)) if self.origin(&region).up => {
                        self.origin(&region).received.push(text.clone());
                        self.delivered.push(text.clone());
                        true
                    }
                    _ => false,
                };
                if !delivered {
                    return self.relay.on_send_failed(link, text, self.now);
                }
            }
            Action::CloseOrigin { link, .. } => {
                if self.sockets.iter().any(|(open, _)| *open == link) {
                    self.sockets.retain(|(open, _)| *open != link);
                    // The object sees its own close come back.
                    return self.relay.on_origin_closed(
                        link,
                        OriginClosed::Lost,
                        self.caller_present,
                        self.now,
                    );
                }
            }
            Action::SendToCaller(text) => {
                if self.caller_present {
                    self.caller_received.push(text);
                }
            }
            Action::CloseCallers { code, reason } => {
                if self.caller_present {
                    self.caller_present = false;
                    self.caller_closed = Some(code);
                    // A replaced caller's close is seen once its successor is in.
                    let others_remain = reason == "replaced by a new connection";
                    return self.relay.on_caller_left(others_remain);
                }
            }
            Action::ReportFailure { region } => self.reports.push(region),
            Action::Lease(LeaseAction::Renew(_)) => {
                self.lease_ops.push("renew");
                let outcome = if self.lease_held {
                    LeaseOutcome::Held
                } else {
                    LeaseOutcome::NotHeld
                };
                return self.relay.on_lease_renewed(outcome, self.now);
            }
            Action::Lease(LeaseAction::Acquire(_)) => {
                self.lease_ops.push("acquire");
                self.lease_held = true;
                return self.relay.on_lease_acquired(LeaseOutcome::Held, self.now);
            }
            Action::Lease(LeaseAction::Release(_)) => {
                self.lease_ops.push("release");
                self.lease_held = false;
            }
            Action::EndAtOrigin {
                targets,
                reason,
                said_reason,
                handoff_data,
            } => {
                self.ended_at_origin
                    .push((targets[0].region.clone(), reason));
                let said = said_reason
                    .clone()
                    .unwrap_or_else(|| reason.as_str().to_owned());
                self.told_origin.push((said_reason, handoff_data.clone()));
                // The origin's relay session says its last words: `end` with the handoff.
                if self.origin_answers_end
                    && let Some((link, region)) = self.open()
                    && self.origin(&region).up
                {
                    let mut handoff = crate::handoff::HandoffData::new(&said, "CA1");
                    handoff.data = handoff_data;
                    let end = Outbound::End {
                        handoff_data: handoff.to_json(),
                    };
                    return self.relay.on_origin_text(link, end.to_json(), self.now);
                }
            }
            Action::AnsweredAtOrigin {
                targets,
                answered_by,
            } => {
                assert_eq!(targets[0].region, self.relay.session().region);
                self.answered_at_origin.push(answered_by);
            }
            Action::Note(note) => self.notes.push(note),
        }
        Vec::new()
    }

    /// The carrier posts a status callback (or an AMD result) about `carrier_call_id`.
    fn carrier_reports(
        &mut self,
        carrier_call_id: &str,
        status: Option<&str>,
        answered_by: Option<AnsweredBy>,
    ) -> Result<(), SessionRefusal> {
        let report = CarrierReport {
            carrier_call_id: Some(carrier_call_id.to_owned()),
            carrier_status: status.map(str::to_owned),
            progress: status.and_then(CallProgress::from_call_status),
            answered_by,
        };
        let actions = self.relay.on_carrier_report(report, self.now)?;
        self.drive(actions);
        Ok(())
    }
}

#[test]
fn an_outbound_call_follows_its_carrier_from_queued_to_ended() {
    let mut w = World::outbound(&["us-east-1"]);
    assert_eq!(w.stored_session().status, CallStatus::Queued);
    w.advance(1_000);
    w.carrier_reports("CA9", Some("initiated"), None)
        .expect("live");
    assert_eq!(w.stored_session().carrier_call_id.as_deref(), Some("CA9"));
    w.carrier_reports("CA9", Some("ringing"), None)
        .expect("live");
    assert_eq!(w.stored_session().status, CallStatus::Ringing);
    w.carrier_reports("CA9", Some("in-progress"), None)
        .expect("live");
    let stored = w.stored_session();
    assert_eq!(
        (stored.status, stored.carrier_status.as_deref()),
        (CallStatus::Active, Some("in-progress"))
    );
    assert_eq!(
        stored.last_activity_ms,
        T0 + 1_000,
        "a callback is activity"
    );
    w.connect_caller();
    w.caller_says(&setup());
    w.carrier_reports("CA9", Some("completed"), None)
        .expect("live");
    let ended = w.stored_session();
    assert_eq!(
        (ended.status, ended.end_reason),
        (CallStatus::Ended, Some(EndReason::Completed))
    );
    assert_eq!(w.lease_ops, ["release"]);
    assert_eq!(w.caller_closed, Some(1000));
    assert_eq!(
        w.carrier_reports("CA9", Some("completed"), None),
        Err(SessionRefusal::CallEnded),
        "told twice: the lease is not released twice"
    );
    assert_eq!(w.lease_ops, ["release"]);
}

#[test]
fn busy_and_no_answer_give_the_line_back_at_once() {
    for (status, reason) in [
        ("busy", EndReason::Busy),
        ("no-answer", EndReason::NoAnswer),
    ] {
        let mut w = World::outbound(&["us-east-1"]);
        w.carrier_reports("CA9", Some("ringing"), None)
            .expect("live");
        w.carrier_reports("CA9", Some(status), None).expect("live");
        assert_eq!(w.lease_ops, ["release"], "{status}");
        assert_eq!(w.ended_at_origin, [("us-east-1".to_owned(), reason)]);
        assert_eq!(w.alarm, None, "{status}: nothing left to wake up for");
    }
}

#[test]
fn a_callback_about_another_carrier_call_is_refused() {
    let mut w = World::new(&["us-east-1"]);
    assert_eq!(
        w.carrier_reports("CA2", Some("completed"), None),
        Err(SessionRefusal::CarrierMismatch)
    );
    assert!(w.relay.session().is_active());
    assert!(w.lease_ops.is_empty());
}

#[test]
fn the_first_amd_result_is_kept_and_told_to_the_origin_once() {
    let mut w = World::outbound(&["us-east-1", "us-west-2"]);
    w.carrier_reports("CA9", Some("in-progress"), None)
        .expect("live");
    w.carrier_reports("CA9", None, Some(AnsweredBy::MachineEndBeep))
        .expect("live");
    w.carrier_reports("CA9", None, Some(AnsweredBy::Human))
        .expect("live");
    assert_eq!(w.answered_at_origin, [AnsweredBy::MachineEndBeep]);
    let stored = w.stored_session();
    assert_eq!(stored.answered_by, Some(AnsweredBy::MachineEndBeep));
    assert_eq!(
        stored.status,
        CallStatus::Active,
        "detection is not progress"
    );
    // A final status with a finding records it but tells the origin nothing: it ends anyway.
    let mut ended = World::outbound(&["us-east-1"]);
    ended
        .carrier_reports("CA9", Some("completed"), Some(AnsweredBy::MachineStart))
        .expect("live");
    assert!(ended.answered_at_origin.is_empty());
    assert_eq!(
        ended.stored_session().answered_by,
        Some(AnsweredBy::MachineStart)
    );
}

/// One carrier callback of a property test.
#[derive(Debug, Clone)]
enum Callback {
    Status(&'static str),
    Amd(AnsweredBy),
    Other,
}

fn callback() -> impl Strategy<Value = Callback> {
    prop_oneof![
        Just(Callback::Status("initiated")),
        Just(Callback::Status("ringing")),
        Just(Callback::Status("in-progress")),
        Just(Callback::Status("completed")),
        Just(Callback::Status("busy")),
        Just(Callback::Status("no-answer")),
        Just(Callback::Status("weird")),
        Just(Callback::Amd(AnsweredBy::Human)),
        Just(Callback::Amd(AnsweredBy::MachineEndBeep)),
        Just(Callback::Other),
    ]
}

proptest! {
    /// Whatever the carrier posts and in whatever order, the status never moves back, the lease
    /// is released at most once (exactly once when a final status came), and the origin hears
    /// at most one AMD result.
    #[test]
    fn carrier_callbacks_move_an_outbound_call_forward_only(callbacks in proptest::collection::vec(callback(), 1..30)) {
        let mut w = World::outbound(&["us-east-1"]);
        let mut previous = CallStatus::Queued;
        let mut final_seen = false;
        for callback in callbacks {
            let outcome = match callback {
                Callback::Status(status) => {
                    final_seen |= matches!(CallProgress::from_call_status(status), Some(CallProgress::Ended(_)));
                    w.carrier_reports("CA9", Some(status), None)
                }
                Callback::Amd(answered_by) => w.carrier_reports("CA9", None, Some(answered_by)),
                // Another call's callback, once this call is bound to its carrier call.
                Callback::Other if w.relay.session().carrier_call_id.is_some() => {
                    w.carrier_reports("CA8", Some("completed"), None)
                }
                Callback::Other => Ok(()),
            };
            if let Err(refusal) = outcome {
                prop_assert!(matches!(refusal, SessionRefusal::CallEnded | SessionRefusal::CarrierMismatch), "{:?}", refusal);
            }
            let status = w.relay.session().status;
            prop_assert!(status >= previous, "{:?} after {:?}", status, previous);
            previous = status;
        }
        let releases = w.lease_ops.iter().filter(|op| **op == "release").count();
        prop_assert_eq!(releases, usize::from(final_seen));
        prop_assert!(w.answered_at_origin.len() <= 1);
    }
}

#[test]
fn a_call_relays_both_ways_in_order() {
    let mut w = World::new(&["us-east-1", "us-west-2"]);
    assert_eq!(
        w.alarm,
        Some(T0 + 20_000),
        "the first alarm renews the lease"
    );
    assert!(w.storage.session.is_some() && w.storage.routing.is_some());
    w.connect_caller();
    w.caller_says(&setup());
    w.caller_says(&prompt("When are you open?"));
    w.origin_says(&piece("We open at nine. "));
    w.origin_says(&turn_end());
    assert_eq!(
        w.origins["us-east-1"].received,
        vec![setup(), prompt("When are you open?")]
    );
    assert_eq!(
        w.caller_received,
        vec![piece("We open at nine. "), turn_end()]
    );
    assert_eq!(
        w.storage.setup,
        Some(setup()),
        "setup is stored for a failover"
    );
    assert_eq!(w.origins["us-east-1"].connections, 1);
}

#[test]
fn words_said_while_connecting_are_held_and_flushed_in_order_without_a_second_setup() {
    let mut w = World::new(&["us-east-1"]);
    w.auto_connect = false;
    w.connect_caller();
    w.caller_says(&setup());
    w.caller_says(&prompt("one"));
    w.caller_says(&prompt("two"));
    assert!(w.origins["us-east-1"].received.is_empty());
    w.auto_connect = true;
    w.complete_connects();
    assert_eq!(
        w.origins["us-east-1"].received,
        vec![setup(), prompt("one"), prompt("two")]
    );
}

#[test]
fn a_dead_origin_moves_the_call_on_with_setup_replayed_and_the_open_reply_closed() {
    let mut w = World::new(&["us-east-1", "us-west-2"]);
    w.connect_caller();
    w.caller_says(&setup());
    w.caller_says(&prompt("When are you open?"));
    w.origin_says(&piece("We open"));
    w.kill("us-east-1");
    assert_eq!(
        w.caller_received,
        vec![piece("We open"), turn_end()],
        "the caller's talk cycle is closed, not left waiting"
    );
    w.caller_says(&prompt("And on Sundays?"));
    assert_eq!(
        w.origins["us-west-2"].received,
        vec![setup(), prompt("And on Sundays?")]
    );
    assert_eq!(w.relay.session().region, "us-west-2");
    assert_eq!(
        w.stored_session().region,
        "us-west-2",
        "the move is stored at once"
    );
    assert!(w.notes.contains(&Note::Moved {
        region: "us-west-2".into()
    }));
    assert!(w.relay.session().is_active());
    assert_eq!(w.caller_closed, None, "the caller's socket stayed up");
}

#[test]
fn connect_failures_try_each_region_once_reporting_each() {
    let mut w = World::new(&["us-east-1", "us-west-2", "eu-west-2"]);
    w.kill("us-east-1");
    w.kill("us-west-2");
    w.connect_caller();
    w.caller_says(&setup());
    assert_eq!(w.reports, vec!["us-east-1", "us-west-2"]);
    assert_eq!(w.origins["eu-west-2"].received, vec![setup()]);
    assert_eq!(w.relay.session().region, "eu-west-2");
}

#[test]
fn when_no_region_accepts_the_call_ends_once_and_everything_is_released() {
    let mut w = World::new(&["us-east-1", "us-west-2"]);
    w.kill("us-east-1");
    w.kill("us-west-2");
    w.connect_caller();
    w.caller_says(&setup());
    assert_eq!(w.reports, vec!["us-east-1", "us-west-2"]);
    assert_eq!(w.caller_closed, Some(1011));
    let session = w.stored_session();
    assert_eq!(session.end_reason, Some(EndReason::OriginUnavailable));
    assert_eq!(w.lease_ops, vec!["release"]);
    assert_eq!(w.alarm, None);
    assert_eq!(
        w.ended_at_origin,
        vec![("us-east-1".to_owned(), EndReason::OriginUnavailable)]
    );
    // A late message changes nothing.
    w.caller_says(&prompt("hello?"));
    assert_eq!(w.lease_ops, vec!["release"]);
    assert!(w.pending.is_empty());
}

#[test]
fn a_full_buffer_ends_the_call_rather_than_lose_what_the_caller_said() {
    let mut w = World::new(&["us-east-1"]);
    w.auto_connect = false;
    w.connect_caller();
    for i in 0..BUFFER_MESSAGES {
        w.caller_says(&prompt(&format!("m{i}")));
    }
    assert!(w.relay.session().is_active(), "a full buffer is still fine");
    w.caller_says(&prompt("one too many"));
    assert_eq!(
        w.relay.session().end_reason,
        Some(EndReason::OriginUnavailable)
    );
    assert!(w.notes.contains(&Note::BufferFull));
    assert_eq!(w.caller_closed, Some(1011));
    // The attempt under way completes after the end: it is closed, nothing is sent.
    w.complete_connects();
    assert!(w.origins["us-east-1"].received.is_empty());
    assert!(w.sockets.is_empty());
}

#[test]
fn the_buffer_bounds_bytes_too() {
    let mut w = World::new(&["us-east-1"]);
    w.auto_connect = false;
    w.connect_caller();
    let big = prompt(&"x".repeat(BUFFER_BYTES / 2));
    w.caller_says(&big);
    assert!(w.relay.session().is_active());
    w.caller_says(&big);
    assert!(!w.relay.session().is_active());
}

#[test]
fn a_failed_send_holds_the_message_and_reconnects_to_the_same_region() {
    let mut w = World::new(&["us-east-1", "us-west-2"]);
    w.connect_caller();
    w.caller_says(&setup());
    // The socket breaks without a close event yet: the next send fails.
    w.origin("us-east-1").up = false;
    w.auto_connect = false;
    w.caller_says(&prompt("are you there?"));
    assert_eq!(w.pending.len(), 1);
    assert_eq!(w.pending[0].1.region, "us-east-1", "same region first");
    w.revive("us-east-1");
    w.auto_connect = true;
    w.complete_connects();
    assert_eq!(
        w.origins["us-east-1"].received,
        vec![setup(), setup(), prompt("are you there?")],
        "the new connection learns the call, then hears what was held"
    );
}

#[test]
fn a_replaced_origins_late_words_never_reach_the_caller() {
    let mut w = World::new(&["us-east-1", "us-west-2"]);
    w.connect_caller();
    w.caller_says(&setup());
    let (old_link, _) = w.open().expect("open");
    w.kill("us-east-1");
    let late = w.relay.on_origin_text(old_link, piece("stale"), w.now);
    assert!(late.is_empty());
    let late_close = w
        .relay
        .on_origin_closed(old_link, OriginClosed::Lost, true, w.now);
    assert!(
        late_close.is_empty(),
        "no second failover for an old socket"
    );
}

#[test]
fn the_origins_end_reaches_the_caller_then_the_call_ends_without_a_failover() {
    let mut w = World::new(&["us-east-1", "us-west-2"]);
    w.connect_caller();
    w.caller_says(&setup());
    let end = r#"{"type":"end","handoffData":"{\"reason\":\"goodbye\"}"}"#;
    w.origin_says(end);
    assert_eq!(w.caller_received, vec![end.to_owned()]);
    assert_eq!(w.caller_closed, Some(1000));
    assert_eq!(w.stored_session().end_reason, Some(EndReason::AgentEnded));
    assert_eq!(w.lease_ops, vec!["release"]);
    assert_eq!(w.origins["us-west-2"].connections, 0, "no failover");
    let position = |wanted: fn(&Action) -> bool| w.log.iter().position(wanted).expect("done");
    assert!(
        position(|a| matches!(a, Action::SendToCaller(_)))
            < position(|a| matches!(
                a,
                Action::CloseCallers {
                    reason: "call ended",
                    ..
                }
            )),
        "the end reaches the carrier before anything closes"
    );
}

#[test]
fn the_origins_end_names_the_reason_the_call_is_recorded_with() {
    let cases = [
        (
            r#"{"type":"end","handoffData":"{\"reason\":\"transfer\",\"callId\":\"CA1\",\"target\":\"+14155550123\"}"}"#,
            EndReason::Transferred,
        ),
        (
            r#"{"type":"end","handoffData":"{\"reason\":\"idle_timeout\"}"}"#,
            EndReason::IdleTimeout,
        ),
        (
            r#"{"type":"end","handoffData":"{\"reason\":\"agent_ended\"}"}"#,
            EndReason::AgentEnded,
        ),
        (
            r#"{"type":"end","handoffData":{"reason":"transfer"}}"#,
            EndReason::Transferred,
        ),
        (r#"{"type":"end"}"#, EndReason::AgentEnded),
    ];
    for (end, reason) in cases {
        let mut w = World::new(&["us-east-1", "us-west-2"]);
        w.connect_caller();
        w.caller_says(&setup());
        w.origin_says(end);
        assert_eq!(w.caller_received, vec![end.to_owned()], "{end}");
        assert_eq!(w.stored_session().end_reason, Some(reason), "{end}");
        assert_eq!(
            w.ended_at_origin,
            vec![("us-east-1".to_owned(), reason)],
            "the origin is told once"
        );
        assert_eq!(w.lease_ops, vec!["release"], "{end}");
        assert_eq!(w.caller_closed, Some(1000));
    }
}

#[test]
fn an_api_clients_reason_and_handoff_data_reach_the_origin() {
    let mut w = World::new(&["us-east-1"]);
    w.connect_caller();
    w.caller_says(&setup());
    let request =
        EndRequest::from_api_body(br#"{"reason":"transfer","handoff_data":{"queue":"sales"}}"#)
            .expect("valid");
    let actions = w.relay.end_requested(request, w.now).expect("live");
    w.drive(actions);
    assert_eq!(
        w.ended_at_origin,
        vec![("us-east-1".to_owned(), EndReason::Requested)]
    );
    assert_eq!(
        w.told_origin,
        vec![(
            Some("transfer".to_owned()),
            Some(serde_json::json!({"queue": "sales"}))
        )]
    );
    assert_eq!(w.stored_session().end_reason, Some(EndReason::Requested));
}

#[test]
fn an_ended_calls_origin_still_says_its_last_words() {
    let mut w = World::new(&["us-east-1", "us-west-2"]);
    w.connect_caller();
    w.caller_says(&setup());
    w.origin_answers_end = false;
    let (link, _) = w.open().expect("open");
    // The API ends the call; while the origin is told, it answers on the relay with `end`.
    let actions = w
        .relay
        .end_requested(EndRequest::new(EndReason::Requested), w.now)
        .expect("live");
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::CloseCallers { .. } | Action::CloseOrigin { .. })),
        "nothing closes before the origin's last words: {actions:?}"
    );
    w.drive(actions);
    assert_eq!(w.caller_closed, None);
    let end = r#"{"type":"end","handoffData":"{}"}"#;
    let told = w.relay.on_origin_text(link, end.to_owned(), w.now);
    assert_eq!(told[0], Action::SendToCaller(end.to_owned()));
    assert!(told.contains(&Action::CloseCallers {
        code: 1000,
        reason: "call ended"
    }));
    w.drive(told);
    assert_eq!(w.caller_received, vec![end.to_owned()]);
    assert_eq!(w.caller_closed, Some(1000));
    assert!(w.sockets.is_empty(), "the origin's socket closed too");
    assert_eq!(
        w.ended_at_origin,
        vec![("us-east-1".to_owned(), EndReason::Requested)]
    );
    assert_eq!(w.origins["us-west-2"].connections, 0);
    assert_eq!(
        w.relay
            .end_requested(EndRequest::new(EndReason::Completed), w.now),
        Err(SessionRefusal::CallEnded)
    );
    assert_eq!(w.lease_ops, vec!["release"], "released once");
    assert_eq!(w.alarm, None);
}

#[test]
fn an_api_clients_handoff_reaches_the_caller_in_the_origins_end_before_anything_closes() {
    let mut w = World::new(&["us-east-1"]);
    w.connect_caller();
    w.caller_says(&setup());
    let request = EndRequest::from_api_body(
        br#"{"reason":"transfer","handoff_data":{"target":"+14155550123"}}"#,
    )
    .expect("valid");
    let actions = w.relay.end_requested(request, w.now).expect("live");
    w.drive(actions);
    let [end] = w.caller_received.as_slice() else {
        panic!("one message: {:?}", w.caller_received);
    };
    assert!(end.contains(r#"\"target\":\"+14155550123\""#), "{end}");
    let position = |wanted: fn(&Action) -> bool| w.log.iter().position(wanted).expect("done");
    assert!(
        position(|a| matches!(a, Action::SendToCaller(_)))
            < position(|a| matches!(
                a,
                Action::CloseCallers {
                    reason: "call ended",
                    ..
                }
            ))
    );
    assert_eq!(w.caller_closed, Some(1000));
    assert_eq!(
        w.stored_session().end_reason,
        Some(EndReason::Requested),
        "not the origin's"
    );
}

#[test]
fn an_ended_calls_sockets_close_when_the_origin_closes_or_its_grace_passes() {
    // The origin closes without a word.
    let mut w = World::new(&["us-east-1", "us-west-2"]);
    w.connect_caller();
    w.caller_says(&setup());
    w.origin_answers_end = false;
    let actions = w.relay.end(EndReason::Completed, w.now);
    w.drive(actions);
    assert_eq!(w.caller_closed, None);
    w.kill("us-east-1");
    assert_eq!(w.caller_closed, Some(1000));
    assert_eq!(
        w.origins["us-west-2"].connections, 0,
        "no failover of an ended call"
    );

    // The origin never answers: the grace's alarm closes both.
    let mut w = World::new(&["us-east-1"]);
    w.connect_caller();
    w.caller_says(&setup());
    w.origin_answers_end = false;
    let actions = w.relay.end(EndReason::MaxDuration, w.now);
    w.drive(actions);
    assert_eq!(w.alarm, Some(T0 + ORIGIN_END_GRACE_MS));
    w.advance(ORIGIN_END_GRACE_MS - 1);
    assert_eq!(w.caller_closed, None);
    w.advance(1);
    assert_eq!(w.caller_closed, Some(1000));
    assert!(w.sockets.is_empty());
    assert_eq!(w.alarm, None);
    assert_eq!(w.lease_ops, vec!["release"]);
}

#[test]
fn turns_are_final_prompts_and_key_presses_however_the_reply_went() {
    let mut w = World::new(&["us-east-1"]);
    w.connect_caller();
    w.caller_says(&setup());
    w.caller_says(r#"{"type":"prompt","voicePrompt":"I would","last":false}"#);
    w.caller_says(&prompt("I would like a table"));
    w.origin_says(&piece("Sure"));
    w.caller_says(
        r#"{"type":"interrupt","utteranceUntilInterrupt":"Sure","durationUntilInterruptMs":"460"}"#,
    );
    w.caller_says(r#"{"type":"dtmf","digit":"5"}"#);
    w.caller_says(r#"{"type":"prompt","voicePrompt":"at seven"}"#);
    w.origin_says(&turn_end());
    assert_eq!(w.relay.session().turn_count, 3);
    assert_eq!(
        w.stored_session().turn_count,
        3,
        "each turn is stored at once"
    );
    w.relay.touch(true, w.now).expect("live");
    assert_eq!(w.relay.session().turn_count, 4, "an API turn is one too");
}

#[test]
fn activity_is_stored_at_most_every_ten_seconds() {
    let mut w = World::new(&["us-east-1"]);
    w.connect_caller();
    w.caller_says(&setup());
    let stored_at = w.stored_session().last_activity_ms;
    w.advance(5_000);
    w.origin_says(&piece("a"));
    assert_eq!(w.stored_session().last_activity_ms, stored_at);
    assert_eq!(
        w.relay.session().last_activity_ms,
        T0 + 5_000,
        "memory is exact"
    );
    w.advance(5_000);
    w.origin_says(&piece("b"));
    assert_eq!(w.stored_session().last_activity_ms, T0 + 10_000);
}

#[test]
fn alarms_renew_the_lease_then_end_an_idle_call() {
    let mut w = World::new(&["us-east-1"]);
    w.connect_caller();
    w.caller_says(&setup());
    w.advance(20_000);
    assert_eq!(w.lease_ops, vec!["renew"]);
    assert_eq!(w.stored_session().lease_renewed_at_ms, T0 + 20_000);
    assert_eq!(w.alarm, Some(T0 + 40_000));
    // Nothing more is said: renewals go on until the idle timeout ends the call.
    w.advance(280_000);
    let session = w.stored_session();
    assert_eq!(session.end_reason, Some(EndReason::IdleTimeout));
    assert_eq!(session.ended_at_ms, Some(T0 + 300_000));
    assert_eq!(w.lease_ops.last(), Some(&"release"));
    assert_eq!(w.alarm, None);
    assert_eq!(w.caller_closed, Some(1000));
}

#[test]
fn a_lease_reclaimed_while_the_call_lived_on_is_taken_again() {
    let mut w = World::new(&["us-east-1"]);
    w.connect_caller();
    w.lease_held = false;
    w.advance(20_000);
    assert_eq!(w.lease_ops, vec!["renew", "acquire"]);
    assert!(w.lease_held);
    assert_eq!(w.alarm, Some(T0 + 40_000));
}

#[test]
fn a_lease_that_cannot_be_renewed_is_retried_at_the_next_alarm() {
    let mut w = World::new(&["us-east-1"]);
    let actions = w.relay.on_lease_renewed(LeaseOutcome::Failed, T0 + 20_000);
    w.drive(actions);
    assert!(w.notes.contains(&Note::LeaseNotRenewed));
    assert_eq!(w.alarm, Some(T0 + 40_000));
    assert!(w.relay.session().is_active());
}

#[test]
fn the_maximum_duration_ends_even_a_busy_call() {
    let mut w = World::new(&["us-east-1"]);
    w.connect_caller();
    w.caller_says(&setup());
    for _ in 0..(3_600_000 / 20_000) {
        w.advance(20_000);
        w.caller_says(&prompt("still here"));
    }
    assert_eq!(w.stored_session().end_reason, Some(EndReason::MaxDuration));
}

#[test]
fn an_alarm_that_fires_early_or_twice_only_reschedules() {
    let mut w = World::new(&["us-east-1"]);
    let actions = w.relay.on_alarm(T0 + 1);
    assert_eq!(actions, vec![Action::ScheduleAlarm(T0 + 20_000)]);
}

#[test]
fn another_tenants_credential_finds_no_call_and_an_ended_call_takes_no_caller() {
    let mut w = World::new(&["us-east-1"]);
    assert_eq!(
        w.relay.on_caller_connected("tenant-other"),
        Err(SessionRefusal::UnknownCall)
    );
    let actions = w.relay.end(EndReason::Completed, w.now);
    w.drive(actions);
    assert_eq!(
        w.relay.on_caller_connected(TENANT),
        Err(SessionRefusal::CallEnded)
    );
    assert_eq!(w.relay.touch(true, w.now), Err(SessionRefusal::CallEnded));
}

#[test]
fn a_new_caller_socket_replaces_the_previous_one() {
    let mut w = World::new(&["us-east-1"]);
    w.connect_caller();
    let actions = w.relay.on_caller_connected(TENANT).expect("joins");
    assert_eq!(
        actions,
        vec![Action::CloseCallers {
            code: 1000,
            reason: "replaced by a new connection"
        }],
        "the origin connection is kept"
    );
}

#[test]
fn an_evicted_session_resumes_from_storage_on_its_region() {
    let mut w = World::new(&["us-east-1", "us-west-2"]);
    w.connect_caller();
    w.caller_says(&setup());
    w.kill("us-east-1");
    w.caller_says(&prompt("first"));
    // The caller leaves; the object is evicted; the carrier comes back.
    w.caller_leaves();
    assert!(w.sockets.is_empty());
    w.caller_present = false;
    w.evict();
    assert_eq!(w.relay.targets_from_current()[0].region, "us-west-2");
    w.connect_caller();
    w.caller_says(&prompt("second"));
    assert_eq!(
        w.origins["us-west-2"].received,
        vec![setup(), prompt("first"), setup(), prompt("second")]
    );
    assert_eq!(w.relay.session().turn_count, 2);
}

#[test]
fn a_caller_leaving_closes_the_origin_and_a_late_connection_is_closed_too() {
    let mut w = World::new(&["us-east-1"]);
    w.connect_caller();
    w.caller_says(&setup());
    w.caller_leaves();
    assert!(w.sockets.is_empty());
    assert!(w.relay.session().is_active(), "the call itself goes on");
    // A reconnecting carrier's socket, then it leaves before the origin answers.
    w.auto_connect = false;
    w.connect_caller();
    w.caller_leaves();
    w.complete_connects();
    assert!(w.sockets.is_empty(), "the late connection was closed");
    assert!(w.log.iter().any(|a| matches!(
        a,
        Action::CloseOrigin {
            reason: "no longer needed",
            ..
        }
    )));
}

#[test]
fn a_start_without_regions_is_refused() {
    let start = StartSession {
        call: StartCall {
            call_id: "c".into(),
            tenant_id: TENANT.into(),
            agent_id: None,
            source: CallSource::Api,
            region: "us-east-1".into(),
            direction: CallDirection::Inbound,
            carrier: None,
            carrier_call_id: None,
        },
        principal: Principal {
            tenant_id: TENANT.into(),
            subject: "s".into(),
            scopes: Vec::new(),
            plan: "free".into(),
            method: AuthMethod::ApiKey,
        },
        targets: Vec::new(),
        country: None,
        request_id: "r".into(),
        trace_id: None,
    };
    assert!(matches!(
        Relay::start(start, limits(), T0),
        Err(SessionRefusal::NoRegion)
    ));
}

#[test]
fn the_call_keeps_the_trace_it_started_in_even_when_stored_before_traces() {
    let world = World::new(&["us-east-1"]);
    let routing = world.relay.routing().clone();
    assert_eq!(
        routing.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let stored = serde_json::to_value(&routing).expect("json");
    let restored: Routing = serde_json::from_value(stored.clone()).expect("reads back");
    assert_eq!(restored, routing);
    // A routing stored by an edge from before traces has no trace id, and still reads.
    let mut old = stored;
    old.as_object_mut().expect("object").remove("trace_id");
    let restored: Routing = serde_json::from_value(old).expect("reads without a trace id");
    assert_eq!(restored.trace_id, None);
}

#[test]
fn the_origins_answers_to_an_end_that_mean_it_knows() {
    for (status, known) in [
        (200, true),
        (404, true),
        (409, true),
        (500, false),
        (503, false),
    ] {
        assert_eq!(origin_knows_it_ended(status), known, "{status}");
    }
}

/// One step of a random conversation.
#[derive(Debug, Clone)]
enum Step {
    Say,
    Reply,
    KillCurrent,
    ReviveAll,
    Tick,
    HoldConnects,
    CompleteConnects,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => Just(Step::Say),
        2 => Just(Step::Reply),
        1 => Just(Step::KillCurrent),
        1 => Just(Step::ReviveAll),
        1 => Just(Step::Tick),
        1 => Just(Step::HoldConnects),
        1 => Just(Step::CompleteConnects),
    ]
}

proptest! {
    /// Whatever origins die and come back, every caller message reaches an origin exactly once
    /// and in order (replayed setups aside), unless the call ended because none could be
    /// reached — and then what arrived is a prefix of what was said.
    #[test]
    fn caller_messages_reach_the_origins_once_and_in_order(steps in proptest::collection::vec(step(), 1..80)) {
        let regions = ["us-east-1", "us-west-2", "eu-west-2"];
        let mut w = World::new(&regions);
        w.connect_caller();
        w.caller_says(&setup());
        let mut said = vec![setup()];
        for (n, step) in steps.into_iter().enumerate() {
            match step {
                Step::Say => {
                    let text = prompt(&format!("m{n}"));
                    said.push(text.clone());
                    w.caller_says(&text);
                }
                Step::Reply => {
                    if w.open().is_some() {
                        w.origin_says(&piece("ok"));
                    }
                }
                Step::KillCurrent => {
                    if let Some((_, region)) = w.open() {
                        w.kill(&region);
                    }
                }
                Step::ReviveAll => regions.iter().for_each(|r| w.revive(r)),
                Step::Tick => w.advance(1_000),
                Step::HoldConnects => w.auto_connect = false,
                Step::CompleteConnects => {
                    w.auto_connect = true;
                    w.complete_connects();
                }
            }
            if !w.relay.session().is_active() {
                break;
            }
        }
        // Whatever is still held goes out once attempts are answered again.
        w.auto_connect = true;
        w.complete_connects();
        // Setup is replayed to each new connection; it was said once.
        let mut arrived: Vec<String> = Vec::new();
        for text in &w.delivered {
            if *text == setup() && arrived.contains(text) {
                continue;
            }
            arrived.push(text.clone());
        }
        if w.relay.session().is_active() {
            prop_assert_eq!(&arrived, &said);
        } else {
            prop_assert_eq!(w.relay.session().end_reason, Some(EndReason::OriginUnavailable));
            prop_assert!(said.starts_with(&arrived), "arrived {:?} said {:?}", arrived, said);
        }
    }
}

#[test]
fn a_connection_given_up_on_that_opens_late_is_closed_and_the_live_one_kept() {
    let mut w = World::new(&["us-east-1"]);
    w.auto_connect = false;
    w.connect_caller();
    w.caller_leaves();
    w.connect_caller();
    assert_eq!(w.pending.len(), 2, "the first attempt is still under way");
    // The second attempt opens first, then the first one.
    w.pending.swap(0, 1);
    w.auto_connect = true;
    w.complete_connects();
    let (late, _) = w
        .log
        .iter()
        .find_map(|a| match a {
            Action::Connect { link, target } => Some((*link, target.clone())),
            _ => None,
        })
        .expect("the first attempt");
    assert!(
        w.log
            .iter()
            .any(|a| matches!(a, Action::CloseOrigin { link, .. } if *link == late)),
        "the late one is closed"
    );
    assert_eq!(w.sockets.len(), 1, "only the live one is open");
    w.caller_says(&setup());
    assert_eq!(w.origins["us-east-1"].received, vec![setup()]);
    assert_eq!(w.origins["us-east-1"].connections, 2);
}

/// The call's first exchange, then `second` said to us-east-1 (received, not yet answered).
fn a_call_with_a_turn_in_flight() -> World {
    let mut w = World::new(&["us-east-1", "us-west-2"]);
    w.connect_caller();
    w.caller_says(&setup());
    w.caller_says(&prompt("first"));
    w.origin_says(&piece("Hi."));
    w.origin_says(&turn_end());
    w.caller_says(&prompt("second"));
    w
}

#[test]
fn a_turn_an_origin_never_answered_before_its_restart_is_said_to_the_next_origin_once() {
    let mut w = a_call_with_a_turn_in_flight();
    w.restart("us-east-1");
    assert_eq!(w.origin("us-west-2").received, [setup(), prompt("second")]);
    // Answered there, nothing more goes anywhere twice.
    w.origin_says(&piece("Sure."));
    w.origin_says(&turn_end());
    w.caller_says(&prompt("third"));
    assert_eq!(
        w.origin("us-west-2").received,
        [setup(), prompt("second"), prompt("third")]
    );
    assert_eq!(
        w.delivered
            .iter()
            .filter(|m| **m == prompt("second"))
            .count(),
        2,
        "once to the origin that restarted, once to the next"
    );
}

#[test]
fn after_a_crash_or_an_answer_nothing_is_said_twice() {
    let mut crashed = a_call_with_a_turn_in_flight();
    crashed.kill("us-east-1");
    assert_eq!(
        crashed.origin("us-west-2").received,
        [setup()],
        "a crashed origin may have read it: not said again"
    );

    let mut answered = a_call_with_a_turn_in_flight();
    answered.origin_says(&piece("Sure."));
    answered.restart("us-east-1");
    assert_eq!(
        answered.origin("us-west-2").received,
        [setup()],
        "the origin spoke after it: it was read"
    );
}
