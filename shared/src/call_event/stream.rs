//! A call's events as a Server-Sent Events stream: `GET /v1/calls/{id}/events` at the origin
//! ([`crate::origin_path::CALL_EVENTS`]), `GET /api/v1/calls/{id}/events` through the edge. Each
//! event carries an [`EventId`], its place in the call. A subscriber first gets the call's
//! history rebuilt from what is stored — [`replay`]: the events a subscriber present from the
//! start would have seen — then the live events, each at most once ([`Resume`]); the stream ends
//! after `call_ended`. A client that reconnects with `Last-Event-ID`
//! ([`crate::headers::LAST_EVENT_ID`], as a browser's `EventSource` sends by itself) gets only
//! what came after that event.
//!
//! The tenant-wide stream (`GET /v1/events`, [`crate::origin_path::EVENTS`]; `GET /api/v1/events`
//! through the edge) carries every call's live events, without ids or history: it tells a list
//! that something changed.

use std::collections::BTreeMap;
use std::fmt;

use super::{CallEvent, CallEventKind};
use crate::call::{Call, CallStatus};
use crate::turn::{Turn, TurnRole};

/// An event's place in its call, sent as the SSE `id`: `0` (the call started), `{seq}` (the
/// caller's turn `seq` started, or the reply `seq` finished), `{seq}.i` (reply `seq` was
/// interrupted), `end`. Ordered as they happen in a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventId {
    /// `call_started`.
    Start,
    /// An event about turn `seq`.
    Turn {
        /// The turn.
        seq: u32,
        /// `turn_interrupted` (after the same reply's `turn_finished`).
        interrupted: bool,
    },
    /// `call_ended`.
    End,
}

impl EventId {
    /// The id of `event`; `None` for a turn event without a turn (none is published) and for an
    /// `answered_by` (live only: the call keeps what detection found, so history needs no id).
    pub fn of(event: &CallEvent) -> Option<Self> {
        match event.kind {
            CallEventKind::CallStarted => Some(Self::Start),
            CallEventKind::CallEnded => Some(Self::End),
            CallEventKind::TurnStarted | CallEventKind::TurnFinished => {
                event.seq.map(|seq| Self::Turn {
                    seq,
                    interrupted: false,
                })
            }
            CallEventKind::TurnInterrupted => event.seq.map(|seq| Self::Turn {
                seq,
                interrupted: true,
            }),
            CallEventKind::AnsweredBy => None,
        }
    }

    /// Reads an id this stream gave (a `Last-Event-ID`); `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let number = |digits: &str| -> Option<u32> {
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok())
                .flatten()
        };
        match text {
            "0" => Some(Self::Start),
            "end" => Some(Self::End),
            _ => {
                let (digits, interrupted) = match text.strip_suffix(".i") {
                    Some(digits) => (digits, true),
                    None => (text, false),
                };
                let seq = number(digits).filter(|seq| *seq > 0)?;
                Some(Self::Turn { seq, interrupted })
            }
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start => f.write_str("0"),
            Self::Turn {
                seq,
                interrupted: false,
            } => write!(f, "{seq}"),
            Self::Turn {
                seq,
                interrupted: true,
            } => write!(f, "{seq}.i"),
            Self::End => f.write_str("end"),
        }
    }
}

/// The events a subscriber present from the call's start would have seen, rebuilt from the
/// stored call and its turns (by `seq`): `call_started`; `turn_started` for each caller
/// utterance; `turn_finished` (or `turn_interrupted`) for each reply a model gave or its
/// fallback utterance stood in for; `call_ended` once it ended. Greetings and key presses are
/// not published live, so they are not replayed either; a call's transfer data is not stored,
/// so a replayed `call_ended` carries only its reason.
pub fn replay(call: &Call, turns: &[Turn]) -> Vec<CallEvent> {
    let event = |kind, at_ms| CallEvent::new(kind, &call.tenant_id, &call.id, at_ms);
    let mut events = vec![event(CallEventKind::CallStarted, call.started_at_ms)];
    for turn in turns {
        let kind = match turn.role {
            TurnRole::User => CallEventKind::TurnStarted,
            TurnRole::Assistant if turn.model.is_some() || turn.failure_reason.is_some() => {
                if turn.interrupted {
                    CallEventKind::TurnInterrupted
                } else {
                    CallEventKind::TurnFinished
                }
            }
            TurnRole::Assistant | TurnRole::Dtmf => continue,
        };
        let mut replayed = event(kind, turn.created_at_ms);
        replayed.seq = Some(turn.seq);
        if turn.role == TurnRole::Assistant {
            replayed.model.clone_from(&turn.model);
            replayed.ttft_ms = turn.ttft_ms;
        }
        events.push(replayed);
    }
    if call.status == CallStatus::Ended {
        let mut ended = event(
            CallEventKind::CallEnded,
            call.ended_at_ms.unwrap_or(call.started_at_ms),
        );
        ended.reason.clone_from(&call.end_reason);
        events.push(ended);
    }
    events
}

/// Which events one stream sends: none the client had (up to its `Last-Event-ID`), and each
/// place once — a live event that the replayed history already covered is dropped, whichever
/// arrived first. (An interruption recorded for an earlier reply after a later turn began, and
/// after the client's last event, is in the transcript but not resent to that client.)
#[derive(Debug, Clone, Default)]
pub struct Resume {
    after: Option<EventId>,
    started: bool,
    ended: bool,
    /// Per turn: whether its interruption was sent (else only its start or finish).
    turns: BTreeMap<u32, bool>,
}

impl Resume {
    /// A stream for a client whose last event was `after` (`None`: a new subscriber).
    pub fn after(after: Option<EventId>) -> Self {
        Self {
            after,
            ..Self::default()
        }
    }

    /// Whether to send `event`; records it as sent when so. An event without an id is sent.
    pub fn admit(&mut self, event: &CallEvent) -> bool {
        let Some(id) = EventId::of(event) else {
            return true;
        };
        if self.after.is_some_and(|after| id <= after) {
            return false;
        }
        match id {
            EventId::Start => !std::mem::replace(&mut self.started, true),
            EventId::End => !std::mem::replace(&mut self.ended, true),
            EventId::Turn { seq, interrupted } => match self.turns.get(&seq) {
                Some(sent_interrupted) if *sent_interrupted || !interrupted => false,
                _ => {
                    self.turns.insert(seq, interrupted);
                    true
                }
            },
        }
    }

    /// Whether the call's end was sent (the stream ends there).
    pub fn ended(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(status: CallStatus) -> Call {
        let mut call = crate::test_support::call("c1", 1_000);
        call.tenant_id = "t1".into();
        call.status = status;
        if status == CallStatus::Ended {
            call.ended_at_ms = Some(9_000);
            call.end_reason = Some("requested".into());
        }
        call
    }

    fn turn(seq: u32, role: TurnRole, model: Option<&str>, interrupted: bool) -> Turn {
        Turn {
            seq,
            role,
            text: "x".into(),
            interrupted,
            model: model.map(str::to_owned),
            input_tokens: None,
            output_tokens: None,
            ttft_ms: model.map(|_| 120),
            duration_ms: None,
            lang: None,
            stop_reason: None,
            failure_reason: None,
            tool_calls: Vec::new(),
            created_at_ms: 1_000 + u64::from(seq),
        }
    }

    fn ids(events: &[CallEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| EventId::of(e).map(|id| id.to_string()).unwrap_or_default())
            .collect()
    }

    #[test]
    fn ids_read_back_and_sort_as_a_call_goes() {
        let ids = [
            EventId::Start,
            EventId::Turn {
                seq: 1,
                interrupted: false,
            },
            EventId::Turn {
                seq: 2,
                interrupted: false,
            },
            EventId::Turn {
                seq: 2,
                interrupted: true,
            },
            EventId::Turn {
                seq: 10,
                interrupted: false,
            },
            EventId::End,
        ];
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        for id in ids {
            assert_eq!(EventId::parse(&id.to_string()), Some(id), "{id}");
        }
        for bad in ["", "-1", "00x", "1.x", ".i", "0.i", "END", "99999999999"] {
            assert_eq!(EventId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn history_is_what_a_live_subscriber_saw() {
        let turns = [
            turn(1, TurnRole::Assistant, None, false), // the greeting: not published
            turn(2, TurnRole::User, None, false),
            turn(3, TurnRole::Assistant, Some("m"), false),
            turn(4, TurnRole::Dtmf, None, false), // a key press: not published
            turn(5, TurnRole::User, None, false),
            turn(6, TurnRole::Assistant, Some("m"), true),
        ];
        let events = replay(&call(CallStatus::Ended), &turns);
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "call_started",
                "turn_started",
                "turn_finished",
                "turn_started",
                "turn_interrupted",
                "call_ended"
            ]
        );
        assert_eq!(ids(&events), ["0", "2", "3", "5", "6.i", "end"]);
        assert_eq!(events[2].model.as_deref(), Some("m"));
        assert_eq!(events[2].ttft_ms, Some(120));
        assert_eq!(events[0].at_ms, 1_000);
        assert_eq!(events[5].reason.as_deref(), Some("requested"));
        assert_eq!(events[5].at_ms, 9_000);
        assert_eq!(replay(&call(CallStatus::Active), &[]).len(), 1);
    }

    #[test]
    fn a_reply_failed_over_to_the_fallback_utterance_is_replayed() {
        let mut fallback = turn(2, TurnRole::Assistant, None, false);
        fallback.failure_reason = Some("throttled".into());
        let events = replay(&call(CallStatus::Active), &[fallback]);
        assert_eq!(ids(&events), ["0", "2"]);
    }

    #[test]
    fn each_place_is_sent_once_and_nothing_the_client_had() {
        let history = replay(
            &call(CallStatus::Active),
            &[
                turn(1, TurnRole::User, None, false),
                turn(2, TurnRole::Assistant, Some("m"), false),
            ],
        );
        let mut resume = Resume::after(None);
        assert!(history.iter().all(|e| resume.admit(e)));
        // The same events arriving live (published between subscribing and reading history).
        assert!(history.iter().all(|e| !resume.admit(e)));
        let live = |kind, seq| {
            let mut event = CallEvent::new(kind, "t1", "c1", 5);
            event.seq = seq;
            event
        };
        assert!(resume.admit(&live(CallEventKind::TurnInterrupted, Some(2))));
        assert!(!resume.admit(&live(CallEventKind::TurnFinished, Some(2))));
        assert!(resume.admit(&live(CallEventKind::TurnStarted, Some(3))));
        assert!(!resume.ended());
        assert!(resume.admit(&live(CallEventKind::CallEnded, None)));
        assert!(resume.ended());
        assert!(!resume.admit(&live(CallEventKind::CallEnded, None)));

        // A client back with `Last-Event-ID: 2` gets what came after only.
        let mut back = Resume::after(EventId::parse("2"));
        let sent: Vec<&CallEvent> = history.iter().filter(|e| back.admit(e)).collect();
        assert!(sent.is_empty());
        assert!(back.admit(&live(CallEventKind::TurnInterrupted, Some(2))));
        assert!(back.admit(&live(CallEventKind::TurnStarted, Some(3))));
    }
}
