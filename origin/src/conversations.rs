//! The API's conversations kept between their turns: after a call's SSE turn, its agent id and
//! its history stay in process, so the call's next turn reads nothing from the database (the
//! relay keeps the same state per connection; an SSE turn keeps it per call).
//!
//! Invalidated on write. Every change to a call that a turn depends on is published as a
//! `CallEvent` (`crate::fanout`, through Redis to every replica): a turn appended (its `seq`),
//! a reply corrected, the call ended. A kept conversation is dropped by any such event it did not
//! cause. While a turn runs ([`Ticket`]), the events about its call are noted; after it, the
//! conversation is kept again only if the turn's own writes landed at the `seq`s right after the
//! history it read (the store numbers turns atomically, so nobody wrote in between) and every
//! event noted meanwhile was its own. Events are read from the fan-out's broadcast before each
//! use, so an event published before a turn starts is always seen by it.
//!
//! Nothing is kept while events from other replicas cannot reach this one (Redis configured
//! but away); events missed by a lagging listener drop everything. At most [`CAPACITY`] calls,
//! each for at most [`TTL`] since its last turn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shared::call_event::{CallEvent, CallEventKind};
use shared::turn::Turn;
use tokio::sync::broadcast::{self, error::TryRecvError};

/// How long a conversation is kept after its last turn.
pub const TTL: Duration = Duration::from_secs(60);
/// Most conversations kept.
pub const CAPACITY: usize = 10_000;

/// What a turn needs to know about its call, as of its last stored turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// The agent answering.
    pub agent_id: String,
    /// The stored turns, by `seq`.
    pub history: Vec<Turn>,
}

impl Conversation {
    fn last_seq(&self) -> u32 {
        self.history.last().map_or(0, |turn| turn.seq)
    }
}

type Key = (String, String);

enum Slot {
    /// Kept, with the `seq`s of its last turn whose events may still arrive (through Redis,
    /// after the turn ended).
    Kept {
        conversation: Conversation,
        at: Instant,
        expected: Vec<u32>,
    },
    /// A turn is running on the call: the turn events heard meanwhile (`seq`s), and whether
    /// anything else (the call ended, events lost) makes its view stale.
    Running {
        ticket: u64,
        heard: Vec<u32>,
        stale: bool,
    },
}

struct Inner {
    slots: HashMap<Key, Slot>,
    events: broadcast::Receiver<Arc<CallEvent>>,
    next_ticket: u64,
}

/// The kept conversations of this replica.
pub struct Conversations {
    inner: Mutex<Inner>,
}

/// A turn running on a call; dropping it without [`Ticket::keep`] forgets the conversation.
pub struct Ticket {
    conversations: Arc<Conversations>,
    key: Key,
    id: u64,
}

/// What [`Conversations::begin`] found.
pub struct Begun {
    /// The conversation kept from the call's last turn, if any.
    pub kept: Option<Conversation>,
    /// The right to keep the conversation after this turn (absent while another turn runs on
    /// the same call, or when nothing may be kept now).
    pub ticket: Option<Ticket>,
}

impl Conversations {
    /// Kept conversations, invalidated by the events `events` receives (`Fanout::subscribe`).
    pub fn new(events: broadcast::Receiver<Arc<CallEvent>>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                slots: HashMap::new(),
                events,
                next_ticket: 1,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A plain map: a panic elsewhere cannot leave it half-updated in a harmful way.
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.catch_up();
        inner
    }

    /// Starts a turn on `tenant`'s call `call_id`. `usable`: whether events from every replica
    /// reach this one now (when not, everything kept is dropped and nothing is kept).
    pub fn begin(self: &Arc<Self>, tenant: &str, call_id: &str, usable: bool) -> Begun {
        let mut inner = self.lock();
        if !usable {
            inner.slots.clear();
            return Begun {
                kept: None,
                ticket: None,
            };
        }
        let key = (tenant.to_owned(), call_id.to_owned());
        if matches!(inner.slots.get(&key), Some(Slot::Running { .. })) {
            return Begun {
                kept: None,
                ticket: None,
            };
        }
        if inner.slots.len() >= CAPACITY && !inner.slots.contains_key(&key) {
            inner.evict_oldest();
        }
        let id = inner.next_ticket;
        inner.next_ticket += 1;
        let running = Slot::Running {
            ticket: id,
            heard: Vec::new(),
            stale: false,
        };
        let kept = match inner.slots.insert(key.clone(), running) {
            Some(Slot::Kept {
                conversation, at, ..
            }) if at.elapsed() < TTL => Some(conversation),
            _ => None,
        };
        Begun {
            kept,
            ticket: Some(Ticket {
                conversations: Arc::clone(self),
                key,
                id,
            }),
        }
    }

    /// Drops what is kept of a call (it ended here); a turn running on it is not kept after.
    pub fn forget(&self, tenant: &str, call_id: &str) {
        let mut inner = self.lock();
        let key = (tenant.to_owned(), call_id.to_owned());
        match inner.slots.get_mut(&key) {
            Some(Slot::Running { stale, .. }) => *stale = true,
            Some(Slot::Kept { .. }) => {
                inner.slots.remove(&key);
            }
            None => {}
        }
    }

    /// How many conversations are kept or running (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Ticket {
    /// Keeps `conversation` (as read before the turn) with the turn's stored turns `added`
    /// (in `seq` order): only when they follow its history without a gap and nothing else
    /// happened to the call meanwhile. Otherwise the call's next turn reads the database.
    pub fn keep(self, mut conversation: Conversation, added: Vec<Turn>) {
        let mut inner = self.conversations.lock();
        let Some(Slot::Running {
            ticket,
            heard,
            stale,
        }) = inner.slots.get(&self.key)
        else {
            return;
        };
        if *ticket != self.id {
            return;
        }
        let follows = added
            .iter()
            .zip(conversation.last_seq() + 1..)
            .all(|(turn, seq)| turn.seq == seq);
        let own: Vec<u32> = added.iter().map(|turn| turn.seq).collect();
        let foreign = heard.iter().any(|seq| !own.contains(seq));
        if *stale || !follows || foreign {
            inner.slots.remove(&self.key);
            return;
        }
        let expected = own.into_iter().filter(|seq| !heard.contains(seq)).collect();
        conversation.history.extend(added);
        inner.slots.insert(
            self.key.clone(),
            Slot::Kept {
                conversation,
                at: Instant::now(),
                expected,
            },
        );
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.conversations.lock();
        if matches!(inner.slots.get(&self.key), Some(Slot::Running { ticket, .. }) if *ticket == self.id)
        {
            inner.slots.remove(&self.key);
        }
    }
}

impl Inner {
    /// Applies every event published since the last look.
    fn catch_up(&mut self) {
        loop {
            match self.events.try_recv() {
                Ok(event) => self.apply(&event),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Lagged(_)) => self.lose_everything(),
                Err(TryRecvError::Closed) => {
                    self.lose_everything();
                    return;
                }
            }
        }
    }

    fn apply(&mut self, event: &CallEvent) {
        let changes_turns = match event.kind {
            CallEventKind::CallEnded => true,
            CallEventKind::TurnStarted
            | CallEventKind::TurnFinished
            | CallEventKind::TurnInterrupted => true,
            CallEventKind::CallStarted | CallEventKind::AnsweredBy => false,
        };
        if !changes_turns {
            return;
        }
        let key = (event.tenant_id.clone(), event.call_id.clone());
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        let seq = event.seq.filter(|_| event.kind != CallEventKind::CallEnded);
        match (slot, seq) {
            (Slot::Running { heard, .. }, Some(seq)) => heard.push(seq),
            (Slot::Running { stale, .. }, None) => *stale = true,
            (Slot::Kept { expected, .. }, Some(seq)) if expected.contains(&seq) => {
                expected.retain(|own| *own != seq);
            }
            (Slot::Kept { .. }, _) => {
                self.slots.remove(&key);
            }
        }
    }

    /// Events were missed: nothing kept can be trusted.
    fn lose_everything(&mut self) {
        self.slots.retain(|_, slot| match slot {
            Slot::Running { stale, .. } => {
                *stale = true;
                true
            }
            Slot::Kept { .. } => false,
        });
    }

    /// Makes room: the expired go, then the least recently used if none had.
    fn evict_oldest(&mut self) {
        let before = self.slots.len();
        self.slots.retain(|_, slot| match slot {
            Slot::Kept { at, .. } => at.elapsed() < TTL,
            Slot::Running { .. } => true,
        });
        if self.slots.len() < before {
            return;
        }
        let oldest = self
            .slots
            .iter()
            .filter_map(|(key, slot)| match slot {
                Slot::Kept { at, .. } => Some((*at, key)),
                Slot::Running { .. } => None,
            })
            .min_by_key(|(at, _)| *at)
            .map(|(_, key)| key.clone());
        if let Some(key) = oldest {
            self.slots.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::turn::TurnRole;

    fn turn(seq: u32, role: TurnRole, text: &str) -> Turn {
        crate::store::NewTurn::said(role, text, 1_000).stored(seq)
    }

    fn event(kind: CallEventKind, call: &str, seq: Option<u32>) -> Arc<CallEvent> {
        let mut event = CallEvent::new(kind, "t1", call, 1_000);
        event.seq = seq;
        Arc::new(event)
    }

    /// Kept conversations fed by `events`, and the sender that publishes to them.
    fn fed() -> (Arc<Conversations>, broadcast::Sender<Arc<CallEvent>>) {
        let (events, receiver) = broadcast::channel(16);
        (Arc::new(Conversations::new(receiver)), events)
    }

    fn conversation(history: Vec<Turn>) -> Conversation {
        Conversation {
            agent_id: "a1".into(),
            history,
        }
    }

    /// A turn on `c1` that the database numbered `user` and `user + 1`, publishing its events.
    fn own_turn(
        conversations: &Arc<Conversations>,
        events: &broadcast::Sender<Arc<CallEvent>>,
        before: Conversation,
        user: u32,
    ) {
        let ticket = conversations
            .begin("t1", "c1", true)
            .ticket
            .expect("a ticket");
        let _ = events.send(event(CallEventKind::TurnStarted, "c1", Some(user)));
        let _ = events.send(event(CallEventKind::TurnFinished, "c1", Some(user + 1)));
        ticket.keep(
            before,
            vec![
                turn(user, TurnRole::User, "hi"),
                turn(user + 1, TurnRole::Assistant, "hello"),
            ],
        );
    }

    #[test]
    fn a_turn_whose_writes_follow_its_history_is_kept_for_the_next() {
        let (conversations, events) = fed();
        let first = conversations.begin("t1", "c1", true);
        assert_eq!(first.kept, None, "nothing kept before the first turn");
        drop(first);
        own_turn(&conversations, &events, conversation(Vec::new()), 1);
        let next = conversations.begin("t1", "c1", true);
        let kept = next.kept.clone().expect("kept");
        assert_eq!(kept.agent_id, "a1");
        let seqs: Vec<u32> = kept.history.iter().map(|t| t.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
        // Another tenant's call of the same id is not this one.
        drop(next);
        assert_eq!(conversations.begin("t2", "c1", true).kept, None);
    }

    #[test]
    fn a_turn_another_writer_appended_drops_what_is_kept() {
        let (conversations, events) = fed();
        own_turn(&conversations, &events, conversation(Vec::new()), 1);
        // A relay turn on the same call (any replica): seq 3, not this conversation's.
        let _ = events.send(event(CallEventKind::TurnStarted, "c1", Some(3)));
        assert_eq!(conversations.begin("t1", "c1", true).kept, None);
    }

    #[test]
    fn an_ended_call_or_a_corrected_reply_drops_what_is_kept() {
        for late in [
            event(CallEventKind::CallEnded, "c1", None),
            event(CallEventKind::TurnInterrupted, "c1", Some(2)),
        ] {
            let (conversations, events) = fed();
            own_turn(&conversations, &events, conversation(Vec::new()), 1);
            let _ = events.send(late.clone());
            assert_eq!(conversations.begin("t1", "c1", true).kept, None, "{late:?}");
        }
        // Another call's events, or a detection result, change nothing.
        let (conversations, events) = fed();
        own_turn(&conversations, &events, conversation(Vec::new()), 1);
        let _ = events.send(event(CallEventKind::TurnStarted, "c2", Some(3)));
        let _ = events.send(event(CallEventKind::AnsweredBy, "c1", None));
        assert!(conversations.begin("t1", "c1", true).kept.is_some());
    }

    #[test]
    fn own_events_arriving_after_the_turn_are_recognised() {
        // Through Redis a turn's own events come back after it ended.
        let (conversations, events) = fed();
        let ticket = conversations
            .begin("t1", "c1", true)
            .ticket
            .expect("ticket");
        ticket.keep(
            conversation(Vec::new()),
            vec![
                turn(1, TurnRole::User, "hi"),
                turn(2, TurnRole::Assistant, "hello"),
            ],
        );
        let _ = events.send(event(CallEventKind::TurnStarted, "c1", Some(1)));
        let _ = events.send(event(CallEventKind::TurnFinished, "c1", Some(2)));
        assert!(conversations.begin("t1", "c1", true).kept.is_some());
    }

    #[test]
    fn a_turn_is_not_kept_when_something_else_happened_meanwhile() {
        // Its writes do not follow the history it read (another writer took seq 3).
        let (conversations, _events) = fed();
        let before = conversation(vec![
            turn(1, TurnRole::User, "hi"),
            turn(2, TurnRole::Assistant, "hello"),
        ]);
        let ticket = conversations.begin("t1", "c1", true).ticket.expect("t");
        ticket.keep(
            before.clone(),
            vec![
                turn(4, TurnRole::User, "again"),
                turn(5, TurnRole::Assistant, "yes"),
            ],
        );
        assert_eq!(conversations.begin("t1", "c1", true).kept, None);

        // Another writer's turn heard while it ran (landing right after its reply).
        let (conversations, events) = fed();
        let ticket = conversations.begin("t1", "c1", true).ticket.expect("t");
        let _ = events.send(event(CallEventKind::TurnStarted, "c1", Some(5)));
        ticket.keep(
            before.clone(),
            vec![
                turn(3, TurnRole::User, "again"),
                turn(4, TurnRole::Assistant, "yes"),
            ],
        );
        assert_eq!(conversations.begin("t1", "c1", true).kept, None);

        // The call ended while it ran (here, or elsewhere).
        let (conversations, _events) = fed();
        let ticket = conversations.begin("t1", "c1", true).ticket.expect("t");
        conversations.forget("t1", "c1");
        ticket.keep(before, vec![turn(3, TurnRole::User, "again")]);
        assert_eq!(conversations.begin("t1", "c1", true).kept, None);
    }

    #[test]
    fn a_failed_turn_forgets_and_a_concurrent_turn_reads_the_database() {
        let (conversations, events) = fed();
        own_turn(&conversations, &events, conversation(Vec::new()), 1);
        let first = conversations.begin("t1", "c1", true);
        assert!(first.kept.is_some());
        // A second turn on the same call while the first runs: no kept state, no ticket.
        let second = conversations.begin("t1", "c1", true);
        assert!(second.kept.is_none() && second.ticket.is_none());
        // The first fails (its ticket is dropped, not kept): forgotten.
        drop(first);
        assert_eq!(conversations.len(), 0);
        assert_eq!(conversations.begin("t1", "c1", true).kept, None);
    }

    #[test]
    fn nothing_is_kept_while_other_replicas_events_cannot_arrive_or_were_missed() {
        let (conversations, events) = fed();
        own_turn(&conversations, &events, conversation(Vec::new()), 1);
        let away = conversations.begin("t1", "c1", false);
        assert!(away.kept.is_none() && away.ticket.is_none());
        assert!(conversations.is_empty(), "dropped while Redis is away");

        // More events than the listener holds: it lagged, everything goes.
        let (conversations, events) = fed();
        own_turn(&conversations, &events, conversation(Vec::new()), 1);
        for seq in 0..40 {
            let _ = events.send(event(CallEventKind::CallStarted, "other", Some(seq)));
        }
        assert_eq!(conversations.begin("t1", "c1", true).kept, None);
    }
}
