//! Failover of one forwarded request across regions within a total deadline: the first region
//! gets the whole head timeout (an origin that is slow but alive is not refused), every further
//! attempt only starts while the request's failover budget lasts and gets no more than what is
//! left of it. So a refusal that every region gives at once (a database outage answered `503`)
//! reaches the client within the budget, not after one timeout per region. Sans-I/O: the clock is
//! an argument.

use crate::public_route::ForwardFailure;

/// Default total budget of a request's failover, in milliseconds (`ORIGIN_FAILOVER_DEADLINE_MS`).
pub const DEFAULT_BUDGET_MS: u64 = 1_500;
/// An attempt with less time than this left is not started: it could not get an answer.
pub const MIN_ATTEMPT_MS: u64 = 50;

/// The limits of one request's failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverPolicy {
    /// Total time from the first attempt after which no further region is tried.
    pub budget_ms: u64,
    /// Longest wait for an origin's response head (any attempt).
    pub head_timeout_ms: u64,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send to the next region, waiting at most `timeout_ms` for its response head.
    Send {
        /// Head timeout of this attempt.
        timeout_ms: u64,
    },
    /// Try no further region; the client gets the last origin's answer, if there was one.
    Stop(StopReason),
}

/// Why no further region is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Every region was tried.
    NoRegionLeft,
    /// The request may not be sent twice after this failure (a non-idempotent write).
    NotRetryable,
    /// The request's failover budget is spent.
    DeadlineSpent,
}

/// One request's failover, started at `started_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failover {
    policy: FailoverPolicy,
    started_ms: u64,
}

impl Failover {
    /// A failover whose first attempt starts at `started_ms`.
    pub fn start(policy: FailoverPolicy, started_ms: u64) -> Self {
        Self { policy, started_ms }
    }

    /// The first attempt: the whole head timeout.
    pub fn first(&self) -> Step {
        Step::Send {
            timeout_ms: self.policy.head_timeout_ms,
        }
    }

    /// Milliseconds of the budget left at `now_ms`.
    pub fn left_ms(&self, now_ms: u64) -> u64 {
        let spent = now_ms.saturating_sub(self.started_ms);
        self.policy.budget_ms.saturating_sub(spent)
    }

    /// After an attempt failed with `failure` at `now_ms`: whether, and how long, to try the
    /// next region. `may_retry` is the route's rule (`crate::public_route::may_retry_elsewhere`);
    /// `regions_left` counts the regions not tried yet.
    pub fn after_failure(
        &self,
        failure: ForwardFailure,
        may_retry: impl Fn(ForwardFailure) -> bool,
        regions_left: usize,
        now_ms: u64,
    ) -> Step {
        if regions_left == 0 {
            return Step::Stop(StopReason::NoRegionLeft);
        }
        if !may_retry(failure) {
            return Step::Stop(StopReason::NotRetryable);
        }
        let left = self.left_ms(now_ms);
        if left < MIN_ATTEMPT_MS {
            return Step::Stop(StopReason::DeadlineSpent);
        }
        Step::Send {
            timeout_ms: left.min(self.policy.head_timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: FailoverPolicy = FailoverPolicy {
        budget_ms: 1_500,
        head_timeout_ms: 10_000,
    };

    fn any(_: ForwardFailure) -> bool {
        true
    }

    #[test]
    fn the_first_attempt_has_the_whole_head_timeout() {
        let failover = Failover::start(POLICY, 1_000);
        assert_eq!(failover.first(), Step::Send { timeout_ms: 10_000 });
    }

    #[test]
    fn a_retry_gets_only_what_is_left_of_the_budget() {
        let failover = Failover::start(POLICY, 1_000);
        let cases = [
            // (now, regions left, step)
            (1_010, 2, Step::Send { timeout_ms: 1_490 }),
            (1_400, 1, Step::Send { timeout_ms: 1_100 }),
            (2_440, 1, Step::Send { timeout_ms: 60 }),
            (2_460, 1, Step::Stop(StopReason::DeadlineSpent)),
            (2_500, 3, Step::Stop(StopReason::DeadlineSpent)),
            (9_000, 3, Step::Stop(StopReason::DeadlineSpent)),
            (1_010, 0, Step::Stop(StopReason::NoRegionLeft)),
        ];
        for (now, left, step) in cases {
            assert_eq!(
                failover.after_failure(ForwardFailure::Unavailable(503), any, left, now),
                step,
                "at {now} with {left} regions left"
            );
        }
    }

    #[test]
    fn a_request_that_may_not_run_twice_stops_at_once() {
        let failover = Failover::start(POLICY, 0);
        let never = |_: ForwardFailure| false;
        assert_eq!(
            failover.after_failure(ForwardFailure::Connect, never, 2, 10),
            Step::Stop(StopReason::NotRetryable)
        );
    }

    #[test]
    fn a_budget_longer_than_the_head_timeout_still_bounds_each_attempt() {
        let failover = Failover::start(
            FailoverPolicy {
                budget_ms: 60_000,
                head_timeout_ms: 5_000,
            },
            0,
        );
        assert_eq!(
            failover.after_failure(ForwardFailure::Connect, any, 1, 100),
            Step::Send { timeout_ms: 5_000 }
        );
    }

    #[test]
    fn a_clock_going_backwards_spends_nothing() {
        let failover = Failover::start(POLICY, 5_000);
        assert_eq!(failover.left_ms(4_000), 1_500);
    }
}
