//! Decisions as HTTP response headers, so voice-router emits exactly what is tested here.
//!
//! - `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10/11): one item
//!   per advertised decision, e.g. `"ip";q=100;w=60` and `"ip";r=42;t=60`; a concurrency limit
//!   has no window and says `qu="concurrent-requests"`.
//! - `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`: the widely used trio, for the
//!   governing decision ([`governing`]).
//! - `Retry-After` on a refusal: the longest wait of the refusing decisions, in whole seconds.
//!
//! `t` and `RateLimit-Reset` are the wait for a refused decision (so `Retry-After` never points
//! before the end of the effective window, as the draft asks) and the time to a full quota
//! otherwise. Shadow decisions are not advertised (the policy is not enforced yet), nor are
//! degraded ones (their counts are unknown); a degraded refusal still sets `Retry-After`.

use std::fmt::Write;

use super::decision::{Decision, all_allowed, governing};

/// The quota policies that apply to the request.
pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
/// The quota left under each policy.
pub const RATELIMIT: &str = "ratelimit";
/// Trio: the governing policy's quota.
pub const RATELIMIT_LIMIT: &str = "ratelimit-limit";
/// Trio: the governing policy's quota left.
pub const RATELIMIT_REMAINING: &str = "ratelimit-remaining";
/// Trio: seconds until the governing policy's quota is back (or the refusal lifts).
pub const RATELIMIT_RESET: &str = "ratelimit-reset";
/// Seconds a refused client should wait.
pub const RETRY_AFTER: &str = "retry-after";

/// The response headers for a request decided by `decisions`, names lowercase.
pub fn for_decisions(decisions: &[Decision]) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    let advertised: Vec<&Decision> = decisions.iter().filter(|d| d.is_advertised()).collect();
    if !advertised.is_empty() {
        let policies: Vec<String> = advertised.iter().map(|d| policy_item(d)).collect();
        let limits: Vec<String> = advertised
            .iter()
            .map(|d| {
                format!(
                    "{};r={};t={}",
                    sf_string(&d.policy),
                    d.remaining,
                    effective_window_s(d)
                )
            })
            .collect();
        headers.push((RATELIMIT_POLICY, policies.join(", ")));
        headers.push((RATELIMIT, limits.join(", ")));
    }
    if let Some(decision) = governing(decisions) {
        headers.push((RATELIMIT_LIMIT, decision.limit.to_string()));
        headers.push((RATELIMIT_REMAINING, decision.remaining.to_string()));
        headers.push((RATELIMIT_RESET, effective_window_s(decision).to_string()));
    }
    if !all_allowed(decisions) {
        let wait_ms = decisions
            .iter()
            .filter(|d| !d.allowed)
            .map(|d| d.retry_after_ms)
            .max()
            .unwrap_or(0);
        headers.push((RETRY_AFTER, seconds(wait_ms).max(1).to_string()));
    }
    headers
}

fn policy_item(decision: &Decision) -> String {
    let mut item = format!("{};q={}", sf_string(&decision.policy), decision.limit);
    // Writing to a String cannot fail.
    let _ = match decision.window_ms {
        Some(window_ms) => write!(item, ";w={}", seconds(window_ms).max(1)),
        None => write!(item, ";qu=\"concurrent-requests\""),
    };
    item
}

/// Seconds within which the client can use no more than what is left.
fn effective_window_s(decision: &Decision) -> u64 {
    if decision.exceeded() {
        seconds(decision.retry_after_ms)
    } else {
        seconds(decision.reset_after_ms)
    }
}

fn seconds(ms: u64) -> u64 {
    ms.div_ceil(1_000)
}

/// A structured-field string: quoted, `"` and `\` escaped, only printable ASCII kept.
fn sf_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(policy: &str, allowed: bool, remaining: u64, reset: u64, retry: u64) -> Decision {
        Decision {
            allowed,
            limit: 100,
            remaining,
            reset_after_ms: reset,
            retry_after_ms: retry,
            policy: policy.into(),
            shadow: false,
            degraded: false,
            window_ms: Some(60_000),
        }
    }

    fn names(headers: &[(&'static str, String)]) -> Vec<&'static str> {
        headers.iter().map(|(name, _)| *name).collect()
    }

    fn get<'a>(headers: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn an_allowed_request_carries_both_header_styles_and_no_retry_after() {
        let headers = for_decisions(&[decision("ip", true, 42, 59_001, 0)]);
        assert_eq!(
            headers,
            vec![
                (RATELIMIT_POLICY, r#""ip";q=100;w=60"#.to_owned()),
                (RATELIMIT, r#""ip";r=42;t=60"#.to_owned()),
                (RATELIMIT_LIMIT, "100".to_owned()),
                (RATELIMIT_REMAINING, "42".to_owned()),
                (RATELIMIT_RESET, "60".to_owned()),
            ]
        );
    }

    #[test]
    fn a_refusal_adds_retry_after_and_the_trio_describes_it() {
        let decisions = [
            decision("ip", true, 10, 30_000, 0),
            decision("principal", false, 0, 60_000, 1_500),
        ];
        let headers = for_decisions(&decisions);
        assert_eq!(
            get(&headers, RATELIMIT_POLICY),
            Some(r#""ip";q=100;w=60, "principal";q=100;w=60"#)
        );
        assert_eq!(
            get(&headers, RATELIMIT),
            Some(r#""ip";r=10;t=30, "principal";r=0;t=2"#)
        );
        assert_eq!(get(&headers, RATELIMIT_REMAINING), Some("0"));
        assert_eq!(get(&headers, RATELIMIT_RESET), Some("2"));
        assert_eq!(get(&headers, RETRY_AFTER), Some("2"), "1.5 s rounds up");
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let headers = for_decisions(&[decision("ip", false, 0, 10, 1)]);
        assert_eq!(get(&headers, RETRY_AFTER), Some("1"));
    }

    #[test]
    fn concurrency_limits_have_a_unit_instead_of_a_window() {
        let mut calls = decision("tenant-calls", true, 7, 45_000, 0);
        calls.limit = 10;
        calls.window_ms = None;
        let headers = for_decisions(&[calls]);
        assert_eq!(
            get(&headers, RATELIMIT_POLICY),
            Some(r#""tenant-calls";q=10;qu="concurrent-requests""#)
        );
    }

    #[test]
    fn shadow_and_degraded_decisions_are_not_advertised() {
        let mut shadow = decision("ip", true, 0, 60_000, 5_000);
        shadow.shadow = true;
        let mut open = decision("principal", true, 0, 0, 0);
        open.degraded = true;
        assert_eq!(for_decisions(&[shadow.clone(), open]), vec![]);

        let mut closed = decision("principal", false, 0, 0, 1_000);
        closed.degraded = true;
        let headers = for_decisions(&[shadow, closed]);
        assert_eq!(names(&headers), vec![RETRY_AFTER]);
        assert_eq!(get(&headers, RETRY_AFTER), Some("1"));
    }

    #[test]
    fn policy_names_are_quoted_safely() {
        let headers = for_decisions(&[decision("a\"b\\c\nd", true, 1, 1_000, 0)]);
        assert_eq!(
            get(&headers, RATELIMIT_POLICY),
            Some(r#""a\"b\\cd";q=100;w=60"#)
        );
    }
}
