//! GCRA, the generic cell rate algorithm: a token bucket kept as one timestamp.
//!
//! The state is the theoretical arrival time (TAT) of the next unit. Taking `cost` units moves it
//! `cost` emission intervals later; a request fits when the moved TAT is at most a burst's worth
//! of intervals ahead of now. No refill timer, no float: integer nanoseconds, the interval
//! rounded up, so the limiter never admits faster than its rate.

use serde::{Deserialize, Serialize};

use super::decision::Verdict;
use super::policy::GcraParams;

const NS_PER_MS: u128 = 1_000_000;

/// Why GCRA could not decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GcraError {
    /// A cost above the burst could never be admitted.
    #[error("cost {cost} exceeds the burst of {burst}")]
    CostExceedsBurst {
        /// The request's cost.
        cost: u64,
        /// The policy's burst.
        burst: u64,
    },
}

/// One key's GCRA state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gcra {
    /// Theoretical arrival time of the next unit, nanoseconds since the Unix epoch.
    pub tat_ns: u64,
}

impl Gcra {
    /// Takes `cost` units at `now_ms` if they fit; a refusal changes nothing. A cost of 0 only
    /// reads the state.
    pub fn try_take(
        &mut self,
        params: &GcraParams,
        now_ms: u64,
        cost: u64,
    ) -> Result<Verdict, GcraError> {
        if cost > params.burst {
            return Err(GcraError::CostExceedsBurst {
                cost,
                burst: params.burst,
            });
        }
        let interval = u128::from(params.emission_interval_ns());
        let tolerance = interval * u128::from(params.burst);
        let now = u128::from(now_ms) * NS_PER_MS;
        let tat = u128::from(self.tat_ns).max(now);
        let new_tat = tat + interval * u128::from(cost);
        let allow_at = new_tat.saturating_sub(tolerance);

        if cost > 0 && now < allow_at {
            return Ok(Verdict {
                allowed: false,
                limit: params.burst,
                remaining: remaining(tolerance, tat - now, interval),
                reset_after_ms: ceil_ms(tat - now),
                retry_after_ms: ceil_ms(allow_at - now),
            });
        }
        self.tat_ns = u64::try_from(new_tat).unwrap_or(u64::MAX);
        Ok(Verdict {
            allowed: true,
            limit: params.burst,
            remaining: remaining(tolerance, new_tat - now, interval),
            reset_after_ms: ceil_ms(new_tat - now),
            retry_after_ms: 0,
        })
    }

    /// Whether the bucket is full at `now_ms`, i.e. the state is as good as never used.
    pub fn is_idle(&self, now_ms: u64) -> bool {
        u128::from(self.tat_ns) <= u128::from(now_ms) * NS_PER_MS
    }

    /// When the bucket is full again, in milliseconds since the epoch.
    pub fn idle_at_ms(&self) -> u64 {
        u64::try_from(u128::from(self.tat_ns).div_ceil(NS_PER_MS)).unwrap_or(u64::MAX)
    }
}

/// Whole units left when the TAT is `ahead` of now.
fn remaining(tolerance: u128, ahead: u128, interval: u128) -> u64 {
    u64::try_from(tolerance.saturating_sub(ahead) / interval.max(1)).unwrap_or(u64::MAX)
}

fn ceil_ms(ns: u128) -> u64 {
    u64::try_from(ns.div_ceil(NS_PER_MS)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// 1 unit per second, bursts of 3.
    const PARAMS: GcraParams = GcraParams {
        rate: 1,
        period_ms: 1_000,
        burst: 3,
    };
    const T0: u64 = 1_700_000_000_000;

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
    fn a_full_bucket_admits_exactly_its_burst_then_refuses() {
        let mut gcra = Gcra::default();
        let steps = [
            (T0, 1, verdict(true, 2, 1_000, 0)),
            (T0, 1, verdict(true, 1, 2_000, 0)),
            (T0, 1, verdict(true, 0, 3_000, 0)),
            // Exactly at the limit: the next unit is one interval away.
            (T0, 1, verdict(false, 0, 3_000, 1_000)),
            (T0 + 999, 1, verdict(false, 0, 2_001, 1)),
            (T0 + 1_000, 1, verdict(true, 0, 3_000, 0)),
            (T0 + 1_000, 1, verdict(false, 0, 3_000, 1_000)),
            (T0 + 2_500, 1, verdict(true, 0, 2_500, 0)),
        ];
        for (i, (now, cost, expected)) in steps.into_iter().enumerate() {
            assert_eq!(gcra.try_take(&PARAMS, now, cost), Ok(expected), "step {i}");
        }
    }

    #[test]
    fn a_refusal_changes_nothing() {
        let mut gcra = Gcra::default();
        gcra.try_take(&PARAMS, T0, 3).expect("fits");
        let before = gcra;
        for _ in 0..10 {
            assert!(!gcra.try_take(&PARAMS, T0, 1).expect("decides").allowed);
        }
        assert_eq!(gcra, before);
    }

    #[test]
    fn costs_above_one_take_several_units_and_wait_for_all_of_them() {
        let mut gcra = Gcra::default();
        assert_eq!(
            gcra.try_take(&PARAMS, T0, 2),
            Ok(verdict(true, 1, 2_000, 0))
        );
        assert_eq!(
            gcra.try_take(&PARAMS, T0, 2),
            Ok(verdict(false, 1, 2_000, 1_000))
        );
        assert_eq!(
            gcra.try_take(&PARAMS, T0 + 1_000, 2),
            Ok(verdict(true, 0, 3_000, 0))
        );
    }

    #[test]
    fn a_huge_cost_is_an_error_and_the_whole_burst_fits_a_full_bucket() {
        let mut gcra = Gcra::default();
        assert_eq!(
            gcra.try_take(&PARAMS, T0, 4),
            Err(GcraError::CostExceedsBurst { cost: 4, burst: 3 })
        );
        assert_eq!(
            gcra.try_take(&PARAMS, T0, u64::MAX),
            Err(GcraError::CostExceedsBurst {
                cost: u64::MAX,
                burst: 3
            })
        );
        assert_eq!(
            gcra.try_take(&PARAMS, T0, 3),
            Ok(verdict(true, 0, 3_000, 0))
        );
    }

    #[test]
    fn after_a_long_idle_the_bucket_is_full_not_overfull() {
        let mut gcra = Gcra::default();
        gcra.try_take(&PARAMS, T0, 3).expect("fits");
        assert!(!gcra.is_idle(T0 + 2_999));
        assert!(gcra.is_idle(T0 + 3_000));
        assert_eq!(gcra.idle_at_ms(), T0 + 3_000);
        let later = T0 + 365 * 24 * 3_600 * 1_000;
        for expected_remaining in [2, 1, 0] {
            let v = gcra.try_take(&PARAMS, later, 1).expect("decides");
            assert!(v.allowed);
            assert_eq!(v.remaining, expected_remaining);
        }
        assert!(!gcra.try_take(&PARAMS, later, 1).expect("decides").allowed);
    }

    #[test]
    fn a_clock_going_backwards_admits_nothing_extra() {
        let mut gcra = Gcra::default();
        gcra.try_take(&PARAMS, T0 + 10_000, 3).expect("fits");
        // Earlier than the last admission: the bucket looks emptier, never fuller.
        let v = gcra.try_take(&PARAMS, T0, 1).expect("decides");
        assert!(!v.allowed);
        assert_eq!(v.retry_after_ms, 11_000);
        assert_eq!(v.remaining, 0);
    }

    #[test]
    fn cost_zero_reads_without_taking() {
        let mut gcra = Gcra::default();
        gcra.try_take(&PARAMS, T0, 2).expect("fits");
        let before = gcra;
        assert_eq!(
            gcra.try_take(&PARAMS, T0, 0),
            Ok(verdict(true, 1, 2_000, 0))
        );
        assert_eq!(gcra, before);
    }

    #[test]
    fn an_uneven_rate_never_runs_fast() {
        // 7 per second: 1000/7 ms is not whole; 8 units within one second would be a bug.
        let params = GcraParams {
            rate: 7,
            period_ms: 1_000,
            burst: 1,
        };
        let mut gcra = Gcra::default();
        let admitted = (0..1_000)
            .filter(|ms| gcra.try_take(&params, T0 + ms, 1).expect("decides").allowed)
            .count();
        assert_eq!(admitted, 7);
    }

    proptest! {
        /// Over any interval [a, b] between two admissions, the units admitted are at most the
        /// burst plus what the rate allows in b - a.
        #[test]
        fn never_admits_more_than_burst_plus_rate(
            rate in 1u64..50,
            period_ms in 1u64..5_000,
            burst in 1u64..20,
            schedule in prop::collection::vec((0u64..400, 0u64..5), 1..200),
        ) {
            let params = GcraParams { rate, period_ms, burst };
            let mut gcra = Gcra::default();
            let mut now = T0;
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for (step, cost) in schedule {
                now += step;
                let cost = cost.min(burst);
                let v = gcra.try_take(&params, now, cost).expect("cost within burst");
                prop_assert!(v.remaining <= burst);
                if v.allowed {
                    prop_assert_eq!(v.retry_after_ms, 0);
                    admitted.push((now, cost));
                } else {
                    prop_assert!(v.retry_after_ms >= 1);
                }
            }
            for i in 0..admitted.len() {
                let mut units = 0u128;
                for j in i..admitted.len() {
                    units += u128::from(admitted[j].1);
                    let elapsed = u128::from(admitted[j].0 - admitted[i].0);
                    // units <= burst + elapsed * rate / period, kept in integers.
                    prop_assert!(
                        units * u128::from(period_ms)
                            <= u128::from(burst) * u128::from(period_ms) + elapsed * u128::from(rate),
                        "{} units in {} ms", units, elapsed
                    );
                }
            }
        }

        /// Waiting the advertised retry time is enough (the hint is not a lie).
        #[test]
        fn retry_after_is_sufficient(
            rate in 1u64..50,
            period_ms in 1u64..5_000,
            burst in 1u64..20,
            costs in prop::collection::vec(1u64..5, 1..50),
        ) {
            let params = GcraParams { rate, period_ms, burst };
            let mut gcra = Gcra::default();
            let mut now = T0;
            for cost in costs {
                let cost = cost.min(burst);
                let v = gcra.try_take(&params, now, cost).expect("cost within burst");
                if !v.allowed {
                    now += v.retry_after_ms;
                    prop_assert!(gcra.try_take(&params, now, cost).expect("decides").allowed);
                }
            }
        }
    }
}
