//! A sliding window: at most `limit` units in any window of `window_ms`, for "N per minute".
//!
//! Admitted units are kept as entries per `precision_ms` bucket, each counting until its
//! bucket's last millisecond plus the window. Every unit admitted within the last window is
//! therefore counted, so the limiter never over-admits; at a precision of 1 ms it is an exact
//! sliding log, and otherwise it refuses at most one bucket early. At most one entry per bucket
//! and one unit per entry bound the state.

use serde::{Deserialize, Serialize};

use super::decision::Verdict;
use super::policy::WindowParams;

/// Why the sliding window could not decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// A cost above the window's quota could never be admitted.
    #[error("cost {cost} exceeds the window's limit of {limit}")]
    CostExceedsLimit {
        /// The request's cost.
        cost: u64,
        /// The policy's quota.
        limit: u64,
    },
}

/// Units admitted in one bucket, as `[counted_until_ms, units]` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entry(
    /// The entry counts while now is before this instant.
    pub u64,
    /// Units admitted in the bucket.
    pub u64,
);

/// One key's sliding-window state: the entries still counted, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlidingWindow {
    /// Admitted units per bucket.
    pub entries: Vec<Entry>,
}

impl SlidingWindow {
    /// Takes `cost` units at `now_ms` if they fit; a refusal changes nothing but forgetting
    /// entries that no longer count. A cost of 0 only reads the state.
    pub fn try_take(
        &mut self,
        params: &WindowParams,
        now_ms: u64,
        cost: u64,
    ) -> Result<Verdict, WindowError> {
        if cost > params.limit {
            return Err(WindowError::CostExceedsLimit {
                cost,
                limit: params.limit,
            });
        }
        self.forget(now_ms);
        let used = self.used();
        if cost > 0 && used.saturating_add(cost) > params.limit {
            let excess = used + cost - params.limit;
            return Ok(Verdict {
                allowed: false,
                limit: params.limit,
                remaining: params.limit.saturating_sub(used),
                reset_after_ms: self.reset_after(now_ms),
                retry_after_ms: self.freed_after(excess, now_ms),
            });
        }
        if cost > 0 {
            let precision = params.precision_ms.max(1);
            let bucket_last = (now_ms - now_ms % precision).saturating_add(precision - 1);
            let until = bucket_last.saturating_add(params.window_ms);
            match self.entries.last_mut() {
                Some(Entry(last_until, units)) if *last_until == until => *units += cost,
                _ => self.entries.push(Entry(until, cost)),
            }
        }
        Ok(Verdict {
            allowed: true,
            limit: params.limit,
            remaining: params.limit.saturating_sub(used + cost),
            reset_after_ms: self.reset_after(now_ms),
            retry_after_ms: 0,
        })
    }

    /// Whether nothing is counted any more at `now_ms`.
    pub fn is_idle(&self, now_ms: u64) -> bool {
        self.entries.iter().all(|Entry(until, _)| *until <= now_ms)
    }

    /// When the last entry stops counting.
    pub fn idle_at_ms(&self) -> u64 {
        self.entries
            .iter()
            .map(|Entry(until, _)| *until)
            .max()
            .unwrap_or(0)
    }

    fn forget(&mut self, now_ms: u64) {
        self.entries.retain(|Entry(until, _)| *until > now_ms);
    }

    fn used(&self) -> u64 {
        self.entries
            .iter()
            .fold(0u64, |sum, Entry(_, units)| sum.saturating_add(*units))
    }

    fn reset_after(&self, now_ms: u64) -> u64 {
        self.idle_at_ms().saturating_sub(now_ms)
    }

    /// Until enough entries stop counting to free `excess` units.
    fn freed_after(&self, excess: u64, now_ms: u64) -> u64 {
        let mut entries = self.entries.clone();
        entries.sort_unstable();
        let mut freed = 0u64;
        for Entry(until, units) in entries {
            freed = freed.saturating_add(units);
            if freed >= excess {
                return until.saturating_sub(now_ms).max(1);
            }
        }
        // Unreachable with a cost within the limit: freeing every entry frees `used`.
        1
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn exact(limit: u64, window_ms: u64) -> WindowParams {
        WindowParams {
            limit,
            window_ms,
            precision_ms: 1,
        }
    }

    fn verdict(allowed: bool, remaining: u64, reset: u64, retry: u64) -> Verdict {
        Verdict {
            allowed,
            limit: 3,
            remaining,
            reset_after_ms: reset,
            retry_after_ms: retry,
        }
    }

    #[test]
    fn admits_exactly_the_limit_per_window_and_slides() {
        let params = exact(3, 1_000);
        let mut window = SlidingWindow::default();
        let steps = [
            (T0, 1, verdict(true, 2, 1_000, 0)),
            (T0 + 100, 1, verdict(true, 1, 1_000, 0)),
            (T0 + 200, 1, verdict(true, 0, 1_000, 0)),
            // Exactly at the limit: the unit from T0 frees a slot at T0 + 1000.
            (T0 + 300, 1, verdict(false, 0, 900, 700)),
            (T0 + 999, 1, verdict(false, 0, 201, 1)),
            (T0 + 1_000, 1, verdict(true, 0, 1_000, 0)),
            (T0 + 1_050, 1, verdict(false, 0, 950, 50)),
            (T0 + 1_100, 1, verdict(true, 0, 1_000, 0)),
        ];
        for (i, (now, cost, expected)) in steps.into_iter().enumerate() {
            assert_eq!(
                window.try_take(&params, now, cost),
                Ok(expected),
                "step {i}"
            );
        }
    }

    #[test]
    fn a_cost_waits_until_enough_units_expire() {
        let params = exact(3, 1_000);
        let mut window = SlidingWindow::default();
        window.try_take(&params, T0, 1).expect("fits");
        window.try_take(&params, T0 + 500, 2).expect("fits");
        // Needs 2 units freed: only when the T0 + 500 entry expires.
        let v = window.try_take(&params, T0 + 600, 2).expect("decides");
        assert!(!v.allowed);
        assert_eq!(v.retry_after_ms, 900);
        assert!(
            window
                .try_take(&params, T0 + 1_500, 2)
                .expect("decides")
                .allowed
        );
    }

    #[test]
    fn a_huge_cost_is_an_error() {
        let mut window = SlidingWindow::default();
        assert_eq!(
            window.try_take(&exact(3, 1_000), T0, u64::MAX),
            Err(WindowError::CostExceedsLimit {
                cost: u64::MAX,
                limit: 3
            })
        );
        assert_eq!(
            window.try_take(&exact(3, 1_000), T0, 3).map(|v| v.allowed),
            Ok(true)
        );
    }

    #[test]
    fn coarse_buckets_refuse_at_most_one_bucket_early() {
        let params = WindowParams {
            limit: 2,
            window_ms: 1_000,
            precision_ms: 100,
        };
        let mut window = SlidingWindow::default();
        window.try_take(&params, T0 + 10, 1).expect("fits");
        window.try_take(&params, T0 + 50, 1).expect("fits");
        assert_eq!(
            window.entries,
            vec![Entry(T0 + 99 + 1_000, 2)],
            "one entry per bucket"
        );
        // Exact would free at T0 + 1010; the bucket frees at T0 + 1099.
        assert!(
            !window
                .try_take(&params, T0 + 1_050, 1)
                .expect("decides")
                .allowed
        );
        assert!(
            window
                .try_take(&params, T0 + 1_099, 1)
                .expect("decides")
                .allowed
        );
    }

    #[test]
    fn long_idle_forgets_everything() {
        let params = exact(3, 1_000);
        let mut window = SlidingWindow::default();
        window.try_take(&params, T0, 3).expect("fits");
        assert!(!window.is_idle(T0 + 999));
        assert!(window.is_idle(T0 + 1_000));
        let v = window
            .try_take(&params, T0 + 86_400_000, 1)
            .expect("decides");
        assert_eq!(v, verdict(true, 2, 1_000, 0));
        assert_eq!(window.entries.len(), 1);
    }

    #[test]
    fn a_clock_going_backwards_admits_nothing_extra() {
        let params = exact(3, 1_000);
        let mut window = SlidingWindow::default();
        window.try_take(&params, T0 + 5_000, 3).expect("fits");
        let v = window.try_take(&params, T0, 1).expect("decides");
        assert!(!v.allowed);
        assert_eq!(v.retry_after_ms, 6_000);
    }

    #[test]
    fn cost_zero_reads_without_taking() {
        let params = exact(3, 1_000);
        let mut window = SlidingWindow::default();
        window.try_take(&params, T0, 2).expect("fits");
        let before = window.clone();
        assert_eq!(
            window.try_take(&params, T0 + 10, 0),
            Ok(verdict(true, 1, 990, 0))
        );
        assert_eq!(window, before);
    }

    /// Units admitted at times in `(from, to]`.
    fn admitted_in(admitted: &[(u64, u64)], from: i128, to: u64) -> u64 {
        admitted
            .iter()
            .filter(|(at, _)| i128::from(*at) > from && *at <= to)
            .map(|(_, cost)| cost)
            .sum()
    }

    proptest! {
        /// At every admission, the units admitted in the window ending there fit the limit; a
        /// refusal happens only when the window, widened by one bucket, is full.
        #[test]
        fn never_over_admits_and_refuses_only_when_full(
            limit in 1u64..20,
            window_ms in 1u64..3_000,
            precision_ms in 1u64..500,
            schedule in prop::collection::vec((0u64..300, 0u64..6), 1..200),
        ) {
            let precision_ms = precision_ms.min(window_ms);
            let params = WindowParams { limit, window_ms, precision_ms };
            let mut window = SlidingWindow::default();
            let mut now = T0;
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for (step, cost) in schedule {
                now += step;
                let cost = cost.min(limit);
                let v = window.try_take(&params, now, cost).expect("cost within limit");
                let w = i128::from(window_ms);
                if v.allowed {
                    admitted.push((now, cost));
                    prop_assert!(admitted_in(&admitted, i128::from(now) - w, now) <= limit);
                } else {
                    prop_assert!(v.retry_after_ms >= 1);
                    let widened = i128::from(now) - w - i128::from(precision_ms) + 1;
                    prop_assert!(admitted_in(&admitted, widened, now) + cost > limit);
                }
                let buckets = window_ms.div_ceil(precision_ms) + 1;
                prop_assert!(window.entries.len() as u64 <= limit.min(buckets));
            }
        }

        /// At 1 ms precision the window is an exact sliding log: admitted if and only if the
        /// units of the last window plus the cost fit.
        #[test]
        fn one_millisecond_precision_is_exact(
            limit in 1u64..20,
            window_ms in 1u64..3_000,
            schedule in prop::collection::vec((0u64..300, 1u64..6), 1..200),
        ) {
            let params = exact(limit, window_ms);
            let mut window = SlidingWindow::default();
            let mut now = T0;
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for (step, cost) in schedule {
                now += step;
                let cost = cost.min(limit);
                let in_window = admitted_in(&admitted, i128::from(now) - i128::from(window_ms), now);
                let v = window.try_take(&params, now, cost).expect("cost within limit");
                prop_assert_eq!(v.allowed, in_window + cost <= limit);
                prop_assert_eq!(v.remaining, limit - if v.allowed { in_window + cost } else { in_window });
                if v.allowed {
                    admitted.push((now, cost));
                }
            }
        }
    }
}
