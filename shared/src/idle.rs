//! Never silence, on the caller's side: a caller who says nothing is asked "Are you still
//! there?" a few times, then told goodbye, then the relay session is ended — rather than the
//! line going quiet until the edge's idle alarm hangs up.
//!
//! Events in, actions out, the clock passed in (like `rate_limit::object`): the session calls
//! `on_*` as things happen, sleeps until [`IdleTimer::poll_timeout`], then asks
//! [`IdleTimer::on_timeout`] what to do.
//!
//! Silence is counted from when the agent's words have *finished playing*, which the origin
//! does not see: it estimates the playback from the text ([`speech_ms`], about 15 characters
//! a second, i.e. 150 words a minute) and counts from there. While a reply is being generated
//! the count is paused; anything the caller does (speech, even partial; a key; an
//! interruption) starts it over, and with it the number of reprompts.

/// Characters of text spoken per second, for [`speech_ms`].
pub const SPEECH_CHARS_PER_SECOND: u64 = 15;

/// Roughly how long `text` takes to speak.
pub fn speech_ms(text: &str) -> u64 {
    let chars = u64::try_from(text.chars().count()).unwrap_or(u64::MAX);
    chars.saturating_mul(1_000) / SPEECH_CHARS_PER_SECOND
}

/// The agent's idle settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdlePolicy {
    /// Silence after the agent finished speaking before it reprompts (or says goodbye).
    pub after_ms: u64,
    /// Reprompts before the goodbye.
    pub reprompts: u8,
}

/// What the session does when the timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleAction {
    /// Say the reprompt (the `n`-th, from 1), then report it with [`IdleTimer::on_spoke`].
    Reprompt(u8),
    /// Say goodbye, then report it with [`IdleTimer::on_spoke`].
    Goodbye,
    /// The goodbye has played: end the relay session.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Listening,
    SayingGoodbye,
    Ended,
}

/// The idle state of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleTimer {
    policy: Option<IdlePolicy>,
    deadline_ms: Option<u64>,
    reprompted: u8,
    phase: Phase,
}

impl IdleTimer {
    /// A timer; `None` never fires.
    pub fn new(policy: Option<IdlePolicy>) -> Self {
        Self {
            policy,
            deadline_ms: None,
            reprompted: 0,
            phase: Phase::Listening,
        }
    }

    /// The caller did something: the count starts over, from now.
    pub fn on_caller(&mut self, now_ms: u64) {
        if self.phase == Phase::Listening {
            self.reprompted = 0;
            self.deadline_ms = self.policy.map(|p| now_ms.saturating_add(p.after_ms));
        }
    }

    /// The agent is busy (a reply is being generated): no count until it has spoken.
    pub fn on_busy(&mut self) {
        if self.phase == Phase::Listening {
            self.deadline_ms = None;
        }
    }

    /// The agent finished sending `text` (a reply, a greeting, a reprompt, the goodbye).
    pub fn on_spoke(&mut self, now_ms: u64, text: &str) {
        let Some(policy) = self.policy else { return };
        let played = now_ms.saturating_add(speech_ms(text));
        self.deadline_ms = match self.phase {
            Phase::Listening => Some(played.saturating_add(policy.after_ms)),
            Phase::SayingGoodbye => Some(played),
            Phase::Ended => None,
        };
    }

    /// When to call [`Self::on_timeout`] next, in Unix milliseconds.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.deadline_ms
    }

    /// What to do at `now_ms`; `None` when nothing is due.
    pub fn on_timeout(&mut self, now_ms: u64) -> Option<IdleAction> {
        let policy = self.policy?;
        if self.deadline_ms.is_none_or(|due| now_ms < due) {
            return None;
        }
        self.deadline_ms = None;
        match self.phase {
            Phase::Listening if self.reprompted < policy.reprompts => {
                self.reprompted += 1;
                Some(IdleAction::Reprompt(self.reprompted))
            }
            Phase::Listening => {
                self.phase = Phase::SayingGoodbye;
                Some(IdleAction::Goodbye)
            }
            Phase::SayingGoodbye => {
                self.phase = Phase::Ended;
                Some(IdleAction::End)
            }
            Phase::Ended => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: IdlePolicy = IdlePolicy {
        after_ms: 10_000,
        reprompts: 2,
    };

    /// Drives the timer on a virtual clock, speaking what each action says; returns the
    /// actions with the times they fired.
    fn drive(timer: &mut IdleTimer, until_ms: u64) -> Vec<(u64, IdleAction)> {
        let mut fired = Vec::new();
        while let Some(due) = timer.poll_timeout() {
            if due > until_ms {
                break;
            }
            let Some(action) = timer.on_timeout(due) else {
                break;
            };
            fired.push((due, action));
            match action {
                IdleAction::Reprompt(_) => timer.on_spoke(due, "Are you still there?"),
                IdleAction::Goodbye => timer.on_spoke(due, "Goodbye."),
                IdleAction::End => {}
            }
        }
        fired
    }

    #[test]
    fn speech_takes_about_fifteen_characters_a_second() {
        assert_eq!(speech_ms(""), 0);
        assert_eq!(speech_ms("Are you still there?"), 1_333);
        assert_eq!(speech_ms(&"é".repeat(30)), 2_000);
    }

    #[test]
    fn a_silent_caller_is_reprompted_then_told_goodbye_then_ended() {
        let mut timer = IdleTimer::new(Some(POLICY));
        timer.on_spoke(0, "Hello, how can I help?"); // 1,466 ms of speech
        assert_eq!(timer.poll_timeout(), Some(11_466));
        assert_eq!(timer.on_timeout(11_465), None, "not yet");
        let fired = drive(&mut timer, u64::MAX);
        assert_eq!(
            fired,
            vec![
                (11_466, IdleAction::Reprompt(1)),
                (22_799, IdleAction::Reprompt(2)),
                (34_132, IdleAction::Goodbye),
                (34_665, IdleAction::End),
            ]
        );
        assert_eq!(timer.poll_timeout(), None);
        timer.on_caller(40_000);
        assert_eq!(timer.poll_timeout(), None, "an ended call stays ended");
    }

    #[test]
    fn the_caller_starts_the_count_over_and_a_live_reply_pauses_it() {
        let mut timer = IdleTimer::new(Some(POLICY));
        timer.on_spoke(0, "");
        assert_eq!(
            drive(&mut timer, 10_000),
            vec![(10_000, IdleAction::Reprompt(1))]
        );
        // The caller answers: the reply is generated (no count), spoken, then silence again.
        timer.on_caller(12_000);
        timer.on_busy();
        assert_eq!(timer.poll_timeout(), None);
        timer.on_spoke(13_000, "");
        // Both reprompts are available again.
        assert_eq!(
            drive(&mut timer, 100_000)
                .into_iter()
                .map(|(_, a)| a)
                .collect::<Vec<_>>(),
            vec![
                IdleAction::Reprompt(1),
                IdleAction::Reprompt(2),
                IdleAction::Goodbye,
                IdleAction::End
            ]
        );
        // A key press alone (no reply follows) counts from the press.
        let mut timer = IdleTimer::new(Some(POLICY));
        timer.on_caller(5_000);
        assert_eq!(timer.poll_timeout(), Some(15_000));
    }

    #[test]
    fn no_reprompts_means_goodbye_first_and_no_policy_never_fires() {
        let mut timer = IdleTimer::new(Some(IdlePolicy {
            after_ms: 1_000,
            reprompts: 0,
        }));
        timer.on_spoke(0, "");
        assert_eq!(
            drive(&mut timer, u64::MAX),
            vec![(1_000, IdleAction::Goodbye), (1_533, IdleAction::End)]
        );
        let mut off = IdleTimer::new(None);
        off.on_spoke(0, "Hello");
        off.on_caller(1);
        assert_eq!(off.poll_timeout(), None);
        assert_eq!(off.on_timeout(u64::MAX), None);
    }
}
