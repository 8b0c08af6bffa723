//! ECS task scale-in protection for an origin task holding live calls: while a relay socket is
//! open the task asks ECS not to stop it for a scale-in or a deployment, renewing before the
//! protection lapses; once none is (or the task drains) it gives the protection back. Sans-I/O:
//! the caller tells ECS (the agent's `PUT $ECS_AGENT_URI/task-protection/v1/state` with
//! `ProtectionEnabled` and `ExpiresInMinutes`, 1 to 2,880 minutes — "Amazon ECS task scale-in
//! protection endpoint", Amazon ECS Developer Guide) and reports what ECS acknowledged.

/// Default protection asked for at a time (`TASK_PROTECTION_MINUTES`): longer than the edge's
/// longest call (an hour), renewed at half time while calls are live.
pub const DEFAULT_MINUTES: u32 = 70;
/// The longest protection ECS grants at a time.
pub const MAX_MINUTES: u32 = 2_880;

/// What to tell ECS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Protect the task for `minutes` (again, when renewing).
    Protect {
        /// `ExpiresInMinutes`.
        minutes: u32,
    },
    /// Make the task eligible for termination again.
    Release,
}

/// The protection as ECS last acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Protection {
    /// Until when the task is protected (Unix ms); `None` when it is not.
    protected_until_ms: Option<u64>,
}

impl Protection {
    /// What to tell ECS at `now_ms` with `live_calls` relay sockets open, asking for `minutes` at
    /// a time; `None` when ECS already knows.
    pub fn next(
        &self,
        live_calls: u64,
        draining: bool,
        minutes: u32,
        now_ms: u64,
    ) -> Option<Change> {
        let protected = self.protected_until_ms.filter(|until| *until > now_ms);
        if live_calls > 0 && !draining {
            let span_ms = u64::from(minutes) * 60_000;
            let renew = protected.is_none_or(|until| until - now_ms < span_ms / 2);
            return renew.then_some(Change::Protect { minutes });
        }
        protected.map(|_| Change::Release)
    }

    /// ECS acknowledged `change` at `now_ms`.
    pub fn applied(&mut self, change: Change, now_ms: u64) {
        self.protected_until_ms = match change {
            Change::Protect { minutes } => Some(now_ms + u64::from(minutes) * 60_000),
            Change::Release => None,
        };
    }

    /// Whether the task is protected at `now_ms`, as far as ECS said.
    pub fn is_protected(&self, now_ms: u64) -> bool {
        self.protected_until_ms.is_some_and(|until| until > now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    #[test]
    fn live_calls_protect_the_task_renewed_at_half_time_and_released_when_none_is_left() {
        let mut protection = Protection::default();
        assert_eq!(protection.next(0, false, 70, 0), None, "nothing to protect");
        let protect = Change::Protect { minutes: 70 };
        assert_eq!(protection.next(1, false, 70, 0), Some(protect));
        protection.applied(protect, 0);
        assert!(protection.is_protected(69 * MINUTE));
        assert_eq!(protection.next(3, false, 70, 30 * MINUTE), None);
        assert_eq!(
            protection.next(3, false, 70, 36 * MINUTE),
            Some(protect),
            "renewed"
        );
        protection.applied(protect, 36 * MINUTE);
        assert_eq!(
            protection.next(0, false, 70, 40 * MINUTE),
            Some(Change::Release)
        );
        protection.applied(Change::Release, 40 * MINUTE);
        assert!(!protection.is_protected(40 * MINUTE));
        assert_eq!(protection.next(0, false, 70, 41 * MINUTE), None);
    }

    #[test]
    fn a_draining_task_gives_its_protection_back_and_a_lapsed_one_is_asked_again() {
        let mut protection = Protection::default();
        let protect = Change::Protect { minutes: 10 };
        protection.applied(protect, 0);
        assert_eq!(protection.next(2, true, 10, MINUTE), Some(Change::Release));
        // Never acknowledged while it lapsed (ECS was away): asked again, not released.
        assert_eq!(protection.next(0, false, 10, 11 * MINUTE), None);
        assert_eq!(protection.next(1, false, 10, 11 * MINUTE), Some(protect));
    }
}
