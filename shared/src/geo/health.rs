//! Origin health with hysteresis, as the Cron Trigger and voice-router's reports see it.
//!
//! A region goes down after `fall` consecutive failed probes and comes back after `rise`
//! consecutive good ones (Cloudflare Load Balancing's `consecutive_down`/`consecutive_up`), so one
//! blip moves no traffic. voice-router's reports of failed origin requests can take a region down
//! before the next probe, but only when `report_threshold` *distinct* clients report within the
//! window, and only until the next probe: a good probe brings a reported-down region straight
//! back, so reports alone hold a region down for at most one probe interval.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::config::GeoConfig;

/// Hysteresis and the bounds on reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failed probes that take a region down.
    pub fall: u32,
    /// Consecutive good probes that bring a down region back.
    pub rise: u32,
    /// Distinct clients whose reports within the window take a region down; 0 ignores reports.
    pub report_threshold: u32,
    /// How long a report counts, in milliseconds.
    pub report_window_ms: u64,
}

/// What geo-router believes about one region's origin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Never probed: taken to be up, so a fresh deploy routes before the first cron run.
    #[default]
    Unknown,
    /// Probes pass.
    Up,
    /// Enough distinct clients reported failures; skipped until the next good probe.
    ReportedDown,
    /// `fall` consecutive probes failed; skipped until `rise` consecutive probes pass.
    Down,
}

impl HealthState {
    /// Whether the region may take traffic.
    pub fn is_usable(self) -> bool {
        matches!(self, HealthState::Unknown | HealthState::Up)
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthState::Unknown => "unknown",
            HealthState::Up => "up",
            HealthState::ReportedDown => "reported_down",
            HealthState::Down => "down",
        })
    }
}

/// One probe of a region's origin `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// When the probe finished, Unix milliseconds.
    pub at_ms: u64,
    /// Whether the origin answered healthy in time.
    pub ok: bool,
    /// Round trip, or the time until the probe gave up.
    pub latency_ms: u64,
    /// HTTP status, when the origin answered at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why the probe failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Reports counted in the current window: who reported, hashed (no caller data is stored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reports {
    /// When the window opened, Unix milliseconds.
    pub window_started_ms: u64,
    /// Distinct reporting clients, as FNV-1a hashes; never longer than the threshold.
    pub clients: Vec<String>,
}

impl Reports {
    /// No report counts.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Reports that still count at `now_ms`.
    pub fn in_window(&self, now_ms: u64, policy: &HealthPolicy) -> usize {
        if now_ms.saturating_sub(self.window_started_ms) < policy.report_window_ms {
            self.clients.len()
        } else {
            0
        }
    }
}

/// One region's health and the evidence for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionHealth {
    /// Current belief.
    #[serde(default)]
    pub state: HealthState,
    /// Failed probes in a row.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Good probes in a row.
    #[serde(default)]
    pub consecutive_successes: u32,
    /// When `state` last changed, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// The latest probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<ProbeRecord>,
    /// Reports in the current window.
    #[serde(default, skip_serializing_if = "Reports::is_empty")]
    pub reports: Reports,
}

/// What a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportOutcome {
    /// Counted; the region stays up until more distinct clients report.
    Counted,
    /// This client already reported in this window; one client counts once.
    Duplicate,
    /// This report reached the threshold: the region is skipped until the next good probe.
    MarkedDown,
    /// The region is already down; nothing changes.
    AlreadyDown,
    /// Reports are switched off (`GEO_REPORT_THRESHOLD=0`).
    Ignored,
}

impl ReportOutcome {
    /// Whether the health table changed and must be stored.
    pub fn changed_table(self) -> bool {
        matches!(self, ReportOutcome::Counted | ReportOutcome::MarkedDown)
    }
}

/// A change of a region's state, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The region.
    pub region: String,
    /// State before.
    pub from: HealthState,
    /// State after.
    pub to: HealthState,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.region, self.from, self.to)
    }
}

/// Facts that stop a health update.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    /// A report or probe names a region that is not configured.
    #[error("region {0:?} is not configured")]
    UnknownRegion(String),
    /// The stored table is not JSON of the table's shape.
    #[error("the stored health table is unreadable: {0}")]
    CorruptTable(String),
}

impl RegionHealth {
    /// Applies one probe; returns the old and new state when it changed.
    pub fn observe_probe(
        &mut self,
        probe: ProbeRecord,
        policy: &HealthPolicy,
    ) -> Option<(HealthState, HealthState)> {
        let before = self.state;
        let now_ms = probe.at_ms;
        if probe.ok {
            self.consecutive_failures = 0;
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            self.state = match self.state {
                HealthState::Down if self.consecutive_successes < policy.rise => HealthState::Down,
                // Reports are unverified: a good probe overrules them at once.
                _ => HealthState::Up,
            };
        } else {
            self.consecutive_successes = 0;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if self.consecutive_failures >= policy.fall {
                self.state = HealthState::Down;
            }
        }
        self.last_probe = Some(probe);
        self.changed(before, now_ms)
    }

    /// Counts a failed origin request that `client` saw; `client` is hashed before storing.
    pub fn observe_report(
        &mut self,
        client: &str,
        now_ms: u64,
        policy: &HealthPolicy,
    ) -> ReportOutcome {
        if policy.report_threshold == 0 {
            return ReportOutcome::Ignored;
        }
        if !self.state.is_usable() {
            return ReportOutcome::AlreadyDown;
        }
        if self.reports.in_window(now_ms, policy) == 0 {
            self.reports = Reports {
                window_started_ms: now_ms,
                clients: Vec::new(),
            };
        }
        let hashed = client_hash(client);
        if self.reports.clients.contains(&hashed) {
            return ReportOutcome::Duplicate;
        }
        self.reports.clients.push(hashed);
        if self.reports.clients.len() < policy.report_threshold as usize {
            return ReportOutcome::Counted;
        }
        let before = self.state;
        self.state = HealthState::ReportedDown;
        self.reports = Reports::default();
        self.changed(before, now_ms);
        ReportOutcome::MarkedDown
    }

    fn changed(&mut self, before: HealthState, now_ms: u64) -> Option<(HealthState, HealthState)> {
        (before != self.state).then(|| {
            self.since_ms = Some(now_ms);
            (before, self.state)
        })
    }
}

/// Every region's health: what the Cron Trigger writes to KV and every decision reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthTable {
    /// When the table was last written (probe or report), Unix milliseconds: orders copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_ms: Option<u64>,
    /// When the Cron Trigger last probed, Unix milliseconds; `None` before its first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probed_at_ms: Option<u64>,
    /// By region name; a region missing here is `unknown`.
    #[serde(default)]
    pub regions: BTreeMap<String, RegionHealth>,
}

impl HealthTable {
    /// Reads a stored table.
    pub fn from_json(text: &str) -> Result<Self, HealthError> {
        serde_json::from_str(text).map_err(|error| HealthError::CorruptTable(error.to_string()))
    }

    /// The table as stored.
    pub fn to_json(&self) -> String {
        // A struct of maps, strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Whether this copy is at least as recent as `other`: KV may hand an isolate an older copy
    /// than the one it already holds, and that must not roll its view back.
    pub fn supersedes(&self, other: &HealthTable) -> bool {
        self.updated_at_ms >= other.updated_at_ms
    }

    /// One region's state; `unknown` when never probed.
    pub fn state(&self, region: &str) -> HealthState {
        self.regions
            .get(region)
            .map(|health| health.state)
            .unwrap_or_default()
    }

    /// Applies one cron run's probes, forgets regions no longer configured, and returns the
    /// state changes. Probes of unconfigured regions are ignored.
    pub fn record_probes(
        &mut self,
        config: &GeoConfig,
        probes: impl IntoIterator<Item = (String, ProbeRecord)>,
        now_ms: u64,
    ) -> Vec<Transition> {
        self.regions
            .retain(|name, _| config.region_index(name).is_some());
        let mut transitions = Vec::new();
        for (region, probe) in probes {
            if config.region_index(&region).is_none() {
                continue;
            }
            let health = self.regions.entry(region.clone()).or_default();
            if let Some((from, to)) = health.observe_probe(probe, &config.health) {
                transitions.push(Transition { region, from, to });
            }
        }
        self.probed_at_ms = Some(now_ms);
        transitions
    }

    /// Counts voice-router's report of a failed origin request in `region`.
    pub fn record_report(
        &mut self,
        config: &GeoConfig,
        region: &str,
        client: &str,
        now_ms: u64,
    ) -> Result<ReportOutcome, HealthError> {
        if config.region_index(region).is_none() {
            return Err(HealthError::UnknownRegion(region.to_owned()));
        }
        Ok(self
            .regions
            .entry(region.to_owned())
            .or_default()
            .observe_report(client, now_ms, &config.health))
    }
}

/// FNV-1a (64-bit) of a client key, in hex: enough to tell clients apart within one window,
/// and it keeps caller identifiers out of KV.
fn client_hash(client: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in client.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// How an isolate may use its cached copy of the health table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Younger than the cache time: use it.
    Fresh,
    /// Older, but within KV's own propagation delay: use it and refresh in the background.
    Stale,
    /// Too old (or caching is off): read KV before deciding.
    Expired,
}

/// KV propagates a write to other locations within about this long anyway, so a cached copy
/// younger than this is no staler than KV itself would be.
pub const MAX_STALE_MS: u64 = 60_000;

/// Whether a table loaded at `loaded_at_ms` may still serve a decision at `now_ms`.
pub fn cache_use(loaded_at_ms: u64, now_ms: u64, cache_ms: u64) -> CacheUse {
    let age = now_ms.saturating_sub(loaded_at_ms);
    if cache_ms == 0 {
        CacheUse::Expired
    } else if age < cache_ms {
        CacheUse::Fresh
    } else if age < MAX_STALE_MS.max(cache_ms) {
        CacheUse::Stale
    } else {
        CacheUse::Expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: HealthPolicy = HealthPolicy {
        fall: 2,
        rise: 3,
        report_threshold: 3,
        report_window_ms: 60_000,
    };

    fn probe(at_ms: u64, ok: bool) -> ProbeRecord {
        ProbeRecord {
            at_ms,
            ok,
            latency_ms: 5,
            status: ok.then_some(200),
            error: (!ok).then(|| "connection refused".to_owned()),
        }
    }

    use HealthState::{Down, ReportedDown, Unknown, Up};

    /// Feeds probes one minute apart from a fixed clock; returns the state after each.
    fn states_after(start: RegionHealth, outcomes: &[bool]) -> Vec<HealthState> {
        let mut health = start;
        outcomes
            .iter()
            .enumerate()
            .map(|(minute, &ok)| {
                health.observe_probe(probe(60_000 * (minute as u64 + 1), ok), &POLICY);
                health.state
            })
            .collect()
    }

    #[test]
    fn hysteresis_transitions_with_a_fixed_clock() {
        let cases: &[(&str, &[bool], &[HealthState])] = &[
            ("first good probe", &[true], &[Up]),
            (
                "one blip does not flap",
                &[true, false, true],
                &[Up, Up, Up],
            ),
            (
                "two failures in a row take it down",
                &[true, false, false],
                &[Up, Up, Down],
            ),
            (
                "unknown counts failures like up",
                &[false, false],
                &[Unknown, Down],
            ),
            (
                "down needs three good probes in a row",
                &[false, false, true, true, true],
                &[Unknown, Down, Down, Down, Up],
            ),
            (
                "a failure while recovering restarts the count",
                &[false, false, true, true, false, true, true, true],
                &[Unknown, Down, Down, Down, Down, Down, Down, Up],
            ),
            (
                "alternating never recovers",
                &[false, false, true, false, true, false],
                &[Unknown, Down, Down, Down, Down, Down],
            ),
        ];
        for (name, outcomes, expected) in cases {
            assert_eq!(
                &states_after(RegionHealth::default(), outcomes),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn transitions_are_reported_with_their_time() {
        let mut health = RegionHealth::default();
        assert_eq!(
            health.observe_probe(probe(1_000, true), &POLICY),
            Some((Unknown, Up))
        );
        assert_eq!(health.since_ms, Some(1_000));
        assert_eq!(health.observe_probe(probe(2_000, false), &POLICY), None);
        assert_eq!(
            health.observe_probe(probe(3_000, false), &POLICY),
            Some((Up, Down))
        );
        assert_eq!(health.since_ms, Some(3_000));
        assert_eq!(health.consecutive_failures, 2);
        assert_eq!(health.last_probe, Some(probe(3_000, false)));
    }

    #[test]
    fn one_client_cannot_take_a_region_down() {
        let mut health = RegionHealth::default();
        for second in 0..50 {
            let outcome = health.observe_report("tenant-a", second * 1_000, &POLICY);
            let expected = if second == 0 {
                ReportOutcome::Counted
            } else {
                ReportOutcome::Duplicate
            };
            assert_eq!(outcome, expected);
        }
        assert_eq!(health.state, Unknown);
        assert_eq!(health.reports.clients.len(), 1);
    }

    #[test]
    fn distinct_clients_within_the_window_take_it_down_until_a_good_probe() {
        let mut health = RegionHealth::default();
        health.observe_probe(probe(0, true), &POLICY);
        assert_eq!(
            health.observe_report("a", 1_000, &POLICY),
            ReportOutcome::Counted
        );
        assert_eq!(
            health.observe_report("b", 2_000, &POLICY),
            ReportOutcome::Counted
        );
        assert_eq!(health.state, Up);
        assert_eq!(
            health.observe_report("c", 3_000, &POLICY),
            ReportOutcome::MarkedDown
        );
        assert_eq!((health.state, health.since_ms), (ReportedDown, Some(3_000)));
        assert!(!health.state.is_usable());
        assert_eq!(
            health.observe_report("d", 4_000, &POLICY),
            ReportOutcome::AlreadyDown
        );
        // The next good probe overrules the reports at once.
        assert_eq!(
            health.observe_probe(probe(60_000, true), &POLICY),
            Some((ReportedDown, Up))
        );
    }

    #[test]
    fn reported_down_then_failing_probes_confirm_it() {
        let mut health = RegionHealth::default();
        for client in ["a", "b", "c"] {
            health.observe_report(client, 0, &POLICY);
        }
        assert_eq!(health.state, ReportedDown);
        assert_eq!(health.observe_probe(probe(60_000, false), &POLICY), None);
        assert_eq!(health.state, ReportedDown);
        assert_eq!(
            health.observe_probe(probe(120_000, false), &POLICY),
            Some((ReportedDown, Down))
        );
        // Confirmed down: one good probe is no longer enough.
        health.observe_probe(probe(180_000, true), &POLICY);
        assert_eq!(health.state, Down);
    }

    #[test]
    fn reports_expire_with_their_window() {
        let mut health = RegionHealth::default();
        assert_eq!(
            health.observe_report("a", 0, &POLICY),
            ReportOutcome::Counted
        );
        assert_eq!(
            health.observe_report("b", 59_999, &POLICY),
            ReportOutcome::Counted
        );
        assert_eq!(health.reports.in_window(59_999, &POLICY), 2);
        assert_eq!(health.reports.in_window(60_000, &POLICY), 0);
        // A new window: "c" is the first of it, "a" counts again.
        assert_eq!(
            health.observe_report("c", 60_000, &POLICY),
            ReportOutcome::Counted
        );
        assert_eq!(
            health.observe_report("a", 61_000, &POLICY),
            ReportOutcome::Counted
        );
        assert_eq!(health.state, Unknown);
        assert_eq!(health.reports.window_started_ms, 60_000);
    }

    #[test]
    fn reports_switched_off_change_nothing() {
        let policy = HealthPolicy {
            report_threshold: 0,
            ..POLICY
        };
        let mut health = RegionHealth::default();
        for client in ["a", "b", "c", "d"] {
            assert_eq!(
                health.observe_report(client, 0, &policy),
                ReportOutcome::Ignored
            );
        }
        assert_eq!(health, RegionHealth::default());
    }

    #[test]
    fn clients_are_stored_hashed() {
        let mut health = RegionHealth::default();
        health.observe_report("203.0.113.9", 0, &POLICY);
        let stored = serde_json::to_string(&health).expect("serialises");
        assert!(!stored.contains("203.0.113.9"), "{stored}");
        // FNV-1a 64 published vectors: "" and "a".
        assert_eq!(client_hash(""), "cbf29ce484222325");
        assert_eq!(client_hash("a"), "af63dc4c8601ec8c");
    }

    #[test]
    fn table_round_trips_and_tolerates_missing_fields() {
        let mut table = HealthTable::default();
        table
            .regions
            .insert("us-east-1".into(), RegionHealth::default());
        table
            .regions
            .get_mut("us-east-1")
            .map(|h| h.observe_probe(probe(5, true), &POLICY));
        let back = HealthTable::from_json(&table.to_json()).expect("round trip");
        assert_eq!(back, table);
        let sparse = HealthTable::from_json(r#"{"regions":{"eu-west-2":{"state":"down"}}}"#)
            .expect("sparse");
        assert_eq!(sparse.state("eu-west-2"), Down);
        assert_eq!(sparse.state("nowhere-1"), Unknown);
        for corrupt in [
            "garbage",
            r#"{"regions":{"eu-west-2":{"state":"sideways"}}}"#,
            r#"{"regions":[]}"#,
        ] {
            assert!(
                matches!(
                    HealthTable::from_json(corrupt),
                    Err(HealthError::CorruptTable(_))
                ),
                "{corrupt}"
            );
        }
    }

    #[test]
    fn newer_copies_supersede_older_ones() {
        let at = |ms: Option<u64>| HealthTable {
            updated_at_ms: ms,
            ..HealthTable::default()
        };
        assert!(at(Some(2)).supersedes(&at(Some(1))));
        assert!(at(Some(2)).supersedes(&at(Some(2))));
        assert!(!at(Some(1)).supersedes(&at(Some(2))));
        assert!(
            at(Some(1)).supersedes(&at(None)),
            "anything beats a table never written"
        );
        assert!(!at(None).supersedes(&at(Some(1))));
    }

    #[test]
    fn cache_use_by_age() {
        assert_eq!(cache_use(1_000, 1_000, 5_000), CacheUse::Fresh);
        assert_eq!(cache_use(1_000, 5_999, 5_000), CacheUse::Fresh);
        assert_eq!(cache_use(1_000, 6_000, 5_000), CacheUse::Stale);
        assert_eq!(cache_use(1_000, 60_999, 5_000), CacheUse::Stale);
        assert_eq!(cache_use(1_000, 61_000, 5_000), CacheUse::Expired);
        assert_eq!(
            cache_use(1_000, 1_000, 0),
            CacheUse::Expired,
            "0 turns caching off"
        );
        assert_eq!(
            cache_use(9_000, 1_000, 5_000),
            CacheUse::Fresh,
            "clock went backwards"
        );
    }

    proptest! {
        /// Whatever the sequence, a region is never down before `fall` failures in a row, and a
        /// probe-confirmed down region never comes back before `rise` successes in a row.
        #[test]
        fn hysteresis_holds_for_any_probe_sequence(
            outcomes in proptest::collection::vec(any::<bool>(), 0..64),
            fall in 1u32..5,
            rise in 1u32..5,
        ) {
            let policy = HealthPolicy { fall, rise, ..POLICY };
            let mut health = RegionHealth::default();
            let (mut failures, mut successes) = (0u32, 0u32);
            for (i, ok) in outcomes.into_iter().enumerate() {
                let before = health.state;
                health.observe_probe(probe(i as u64, ok), &policy);
                if ok { successes += 1; failures = 0 } else { failures += 1; successes = 0 }
                if health.state == Down && before != Down {
                    prop_assert!(failures >= fall);
                }
                if before == Down && health.state != Down {
                    prop_assert!(successes >= rise);
                }
                prop_assert_eq!(health.consecutive_failures, failures);
                prop_assert_eq!(health.consecutive_successes, successes);
            }
        }

        /// However many reports one client sends, it counts once per window.
        #[test]
        fn a_single_client_never_marks_down(times in proptest::collection::vec(0u64..600_000, 1..100)) {
            let mut sorted = times;
            sorted.sort_unstable();
            let mut health = RegionHealth::default();
            for now in sorted {
                let outcome = health.observe_report("same-client", now, &POLICY);
                prop_assert!(matches!(outcome, ReportOutcome::Counted | ReportOutcome::Duplicate));
            }
            prop_assert!(health.state.is_usable());
        }
    }
}
