//! The origins a request or a call may use, in the order it tries them: the region geo-router
//! chose, then its fallbacks. Every rotation through them (a forward failing over, a call's relay
//! reconnecting elsewhere, a session pinned to the region that took its call) is written here
//! once.

use serde::{Deserialize, Serialize};

use super::wire::RouteDecision;

/// One region's origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// AWS region.
    pub region: String,
    /// Base URL of its origin (no trailing slash).
    pub origin_url: String,
}

impl Target {
    /// A target; the URL loses any trailing slash so paths join with one.
    pub fn new(region: impl Into<String>, origin_url: &str) -> Self {
        Self {
            region: region.into(),
            origin_url: origin_url.trim_end_matches('/').to_owned(),
        }
    }
}

/// The regions of a decision in preference order: the chosen one, then its fallbacks.
pub fn of_decision(decision: &RouteDecision) -> Vec<Target> {
    std::iter::once(Target::new(&decision.region, &decision.origin_url))
        .chain(
            decision
                .fallbacks
                .iter()
                .map(|fallback| Target::new(&fallback.region, &fallback.origin_url)),
        )
        .collect()
}

/// `targets` with `chosen` first and the others after it in their order (a call is pinned to
/// the region that took it; the rest are its failover order).
pub fn with_first(targets: &[Target], chosen: &Target) -> Vec<Target> {
    std::iter::once(chosen.clone())
        .chain(targets.iter().filter(|t| *t != chosen).cloned())
        .collect()
}

/// The index after `index`, wrapping: the next region to try.
pub fn next_index(index: usize, count: usize) -> usize {
    if count == 0 { 0 } else { (index + 1) % count }
}

/// `targets` starting at `start` and wrapping round, each once.
pub fn starting_at(targets: &[Target], start: usize) -> Vec<Target> {
    let count = targets.len();
    (0..count)
        .map(|step| targets[(start + step) % count].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::wire::{Fallback, Reason};

    fn target(region: &str) -> Target {
        Target::new(region, &format!("https://{region}.example/"))
    }

    #[test]
    fn a_decision_lists_the_chosen_region_then_its_fallbacks() {
        let decision = RouteDecision {
            region: "us-east-1".into(),
            origin_url: "https://us-east-1.example/".into(),
            bedrock_region: "us-east-1".into(),
            reason: Reason::Country,
            healthy: true,
            fallbacks: vec![Fallback {
                region: "us-west-2".into(),
                origin_url: "https://us-west-2.example".into(),
                bedrock_region: "us-west-2".into(),
                healthy: true,
            }],
        };
        assert_eq!(
            of_decision(&decision),
            vec![target("us-east-1"), target("us-west-2")]
        );
        assert_eq!(
            of_decision(&decision)[0].origin_url,
            "https://us-east-1.example"
        );
    }

    #[test]
    fn rotations() {
        let all = vec![target("a"), target("b"), target("c")];
        assert_eq!(
            with_first(&all, &target("b")),
            vec![target("b"), target("a"), target("c")]
        );
        assert_eq!(
            with_first(&all, &target("z")),
            vec![target("z"), target("a"), target("b"), target("c")],
            "a chosen region outside the list still comes first"
        );
        assert_eq!(
            starting_at(&all, 2),
            vec![target("c"), target("a"), target("b")]
        );
        assert_eq!(starting_at(&[], 3), Vec::<Target>::new());
        assert_eq!(
            (next_index(0, 3), next_index(2, 3), next_index(0, 0)),
            (1, 0, 0)
        );
    }
}
