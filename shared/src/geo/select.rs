//! Choosing the region for a caller: the seed's tables first, then distance, then health.
//!
//! Every enabled region is ranked by the rules, in this order of preference:
//! 1. `pinned` — the call's pinned region;
//! 2. `region-code` — the caller's ISO 3166-2 code in the region-code map;
//! 3. `country` — the caller's country in the country map;
//! 4. `nearest` — with coordinates: every region by great-circle distance (scaled by weight);
//!    without: `continent` (continent map), then `default`, then the rest by distance from
//!    the first of those.
//!
//! The first healthy region in that ranking wins; when it is not the first one, the reason is
//! `failover`. When none is healthy, the least bad one is answered with `healthy: false` rather
//! than failing closed.

use std::cmp::Ordering;

use super::config::{DEFAULT_WEIGHT, GeoConfig};
use super::distance::Coordinates;
use super::health::{HealthState, HealthTable};
use super::wire::{CallerLocation, Fallback, Reason, RouteDecision};

/// Chooses the region for `caller`, keeping a live call on `pin` while that region is healthy.
pub fn select_region(
    config: &GeoConfig,
    caller: &CallerLocation,
    pin: Option<&str>,
    health: &HealthTable,
) -> RouteDecision {
    let ranked = rank(config, caller, pin);
    let states: Vec<HealthState> = ranked
        .iter()
        .map(|&(index, _)| health.state(&config.regions[index].name))
        .collect();

    let (usable, mut unusable): (Vec<usize>, Vec<usize>) =
        (0..ranked.len()).partition(|&position| states[position].is_usable());
    unusable.sort_by(|&a, &b| least_bad_first(health, config, &ranked, &states, a, b));

    // `rank` always lists every enabled region and the config enables at least one.
    let order: Vec<usize> = usable.iter().chain(&unusable).copied().collect();
    let Some((&chosen, rest)) = order.split_first() else {
        return default_decision(config);
    };
    let (index, rule) = ranked[chosen];
    let region = &config.regions[index];
    RouteDecision {
        region: region.name.clone(),
        origin_url: region.origin_url.clone(),
        bedrock_region: region.bedrock_region.clone(),
        reason: if chosen == 0 { rule } else { Reason::Failover },
        healthy: states[chosen].is_usable(),
        fallbacks: rest
            .iter()
            .map(|&position| {
                let region = &config.regions[ranked[position].0];
                Fallback {
                    region: region.name.clone(),
                    origin_url: region.origin_url.clone(),
                    bedrock_region: region.bedrock_region.clone(),
                    healthy: states[position].is_usable(),
                }
            })
            .collect(),
    }
}

/// Every enabled region once, in order of preference, with the rule that placed it.
pub fn rank(
    config: &GeoConfig,
    caller: &CallerLocation,
    pin: Option<&str>,
) -> Vec<(usize, Reason)> {
    let mut ranked: Vec<(usize, Reason)> = Vec::with_capacity(config.regions.len());
    let push = |ranked: &mut Vec<(usize, Reason)>, index: usize, reason: Reason| {
        if config.regions[index].enabled && ranked.iter().all(|&(seen, _)| seen != index) {
            ranked.push((index, reason));
        }
    };

    if let Some(index) = pin.and_then(|pin| config.region_index(pin.trim())) {
        push(&mut ranked, index, Reason::Pinned);
    }
    let country = caller
        .country
        .as_deref()
        .map(|country| country.trim().to_ascii_uppercase());
    if let (Some(country), Some(code)) = (&country, &caller.region_code)
        && let Some(&index) = config.region_code_map.get(&region_code_key(country, code))
    {
        push(&mut ranked, index, Reason::RegionCode);
    }
    if let Some(&index) = country.and_then(|country| config.country_map.get(&country)) {
        push(&mut ranked, index, Reason::Country);
    }

    match caller.coordinates() {
        Some(point) => {
            for index in by_distance(config, &point) {
                push(&mut ranked, index, Reason::Nearest);
            }
        }
        None => {
            let continent = caller
                .continent
                .as_deref()
                .map(|continent| continent.trim().to_ascii_uppercase());
            if let Some(&index) =
                continent.and_then(|continent| config.continent_map.get(&continent))
            {
                push(&mut ranked, index, Reason::Continent);
            }
            push(&mut ranked, config.default_region, Reason::Default);
            // The rest in order of distance from where the rules placed the caller.
            let anchor = ranked
                .iter()
                .find(|&&(_, reason)| reason != Reason::Pinned)
                .map_or(config.default_region, |&(index, _)| index);
            for index in by_distance(config, &config.regions[anchor].location) {
                push(&mut ranked, index, Reason::Default);
            }
        }
    }
    ranked
}

/// `US` + `CA` → `US-CA`; a code already carrying its country is kept.
fn region_code_key(country: &str, code: &str) -> String {
    let code = code.trim().to_ascii_uppercase();
    match code.strip_prefix(country) {
        Some(rest) if rest.starts_with('-') => code,
        _ => format!("{country}-{code}"),
    }
}

/// Enabled regions by distance from `point`, each distance scaled by `100 / weight`, so a
/// heavier region pulls callers from further away. Ties: heavier first, then by name.
fn by_distance(config: &GeoConfig, point: &Coordinates) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = config
        .regions
        .iter()
        .enumerate()
        .filter(|(_, region)| region.enabled)
        .map(|(index, region)| {
            let scale = f64::from(DEFAULT_WEIGHT) / f64::from(region.weight.max(1));
            (point.distance_km(&region.location) * scale, index)
        })
        .collect();
    scored.sort_by(|(da, a), (db, b)| {
        da.total_cmp(db)
            .then_with(|| config.regions[*b].weight.cmp(&config.regions[*a].weight))
            .then_with(|| a.cmp(b))
    });
    scored.into_iter().map(|(_, index)| index).collect()
}

/// Among unhealthy regions: only-reported before probe-confirmed, then the one recovering
/// (most good probes in a row), then the fewest failures in a row, then by preference.
fn least_bad_first(
    health: &HealthTable,
    config: &GeoConfig,
    ranked: &[(usize, Reason)],
    states: &[HealthState],
    a: usize,
    b: usize,
) -> Ordering {
    let key = |position: usize| {
        let entry = health.regions.get(&config.regions[ranked[position].0].name);
        let severity = u8::from(states[position] == HealthState::Down);
        let successes = entry.map_or(0, |entry| entry.consecutive_successes);
        let failures = entry.map_or(0, |entry| entry.consecutive_failures);
        (severity, std::cmp::Reverse(successes), failures, position)
    };
    key(a).cmp(&key(b))
}

/// Unreachable with a checked config (it enables at least one region); answers the default.
fn default_decision(config: &GeoConfig) -> RouteDecision {
    let region = &config.regions[config.default_region];
    RouteDecision {
        region: region.name.clone(),
        origin_url: region.origin_url.clone(),
        bedrock_region: region.bedrock_region.clone(),
        reason: Reason::Default,
        healthy: false,
        fallbacks: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::geo::config::{self, SEED_COUNTRY_MAP, SEED_REGION_CODE_MAP, SEED_REGIONS};
    use crate::geo::health::RegionHealth;
    use proptest::prelude::*;

    fn config_with(extra: &[(&str, &str)], regions: &str) -> GeoConfig {
        let mut vars: BTreeMap<&str, String> = BTreeMap::new();
        vars.insert(config::REGIONS, regions.to_owned());
        for (key, value) in extra {
            vars.insert(key, (*value).to_owned());
        }
        GeoConfig::from_lookup(|key| vars.get(key).cloned()).expect("valid test config")
    }

    fn seed_config() -> GeoConfig {
        let entries: Vec<String> = SEED_REGIONS
            .iter()
            .map(|name| format!(r#""{name}":{{"origin_url":"https://{name}.origin.test"}}"#))
            .collect();
        config_with(&[], &format!("{{{}}}", entries.join(",")))
    }

    fn caller(country: &str, region_code: Option<&str>, at: Option<(f64, f64)>) -> CallerLocation {
        CallerLocation {
            country: Some(country.to_owned()),
            region_code: region_code.map(str::to_owned),
            continent: None,
            latitude: at.map(|(lat, _)| lat),
            longitude: at.map(|(_, lon)| lon),
            colo: None,
        }
    }

    fn table(states: &[(&str, HealthState)]) -> HealthTable {
        let mut table = HealthTable::default();
        for &(region, state) in states {
            table.regions.insert(
                region.to_owned(),
                RegionHealth {
                    state,
                    ..RegionHealth::default()
                },
            );
        }
        table
    }

    fn names(decision: &RouteDecision) -> Vec<&str> {
        decision
            .fallbacks
            .iter()
            .map(|f| f.region.as_str())
            .collect()
    }

    /// Somewhere in the middle of the Pacific: far from every seed region, so a distance rule
    /// cannot agree with the table by accident.
    const NOWHERE: (f64, f64) = (-48.9, -123.4);

    #[test]
    fn every_seed_region_code_row() {
        let config = seed_config();
        for &(key, expected) in SEED_REGION_CODE_MAP {
            let (country, code) = key.split_once('-').expect("CC-SUB");
            for code in [code.to_owned(), key.to_owned(), code.to_ascii_lowercase()] {
                let decision = select_region(
                    &config,
                    &caller(country, Some(&code), Some(NOWHERE)),
                    None,
                    &HealthTable::default(),
                );
                assert_eq!(
                    (decision.region.as_str(), decision.reason),
                    (expected, Reason::RegionCode),
                    "{key} as {code}"
                );
                assert!(decision.healthy);
            }
        }
    }

    #[test]
    fn every_seed_country_row() {
        let config = seed_config();
        for &(country, expected) in SEED_COUNTRY_MAP {
            // A region code the finer map does not list falls through to the country.
            for code in [None, Some("ZZZ")] {
                let decision = select_region(
                    &config,
                    &caller(country, code, Some(NOWHERE)),
                    None,
                    &HealthTable::default(),
                );
                assert_eq!(
                    (decision.region.as_str(), decision.reason),
                    (expected, Reason::Country),
                    "{country} {code:?}"
                );
            }
        }
    }

    #[test]
    fn unlisted_countries_go_to_the_nearest_region() {
        let config = seed_config();
        let cases = [
            ("IN", (19.08, 72.88), "ap-southeast-1"),   // Mumbai
            ("MX", (19.43, -99.13), "us-east-1"),       // Mexico City: Virginia beats Oregon
            ("CO", (4.71, -74.07), "us-east-1"),        // Bogotá: Virginia beats São Paulo
            ("PE", (-12.05, -77.04), "sa-east-1"),      // Lima
            ("CZ", (50.08, 14.44), "eu-central-1"),     // Prague
            ("PL", (52.23, 21.01), "eu-north-1"),       // Warsaw: Stockholm 808 km, Frankfurt 893
            ("FI", (60.17, 24.94), "eu-north-1"),       // Helsinki
            ("ES", (40.42, -3.70), "eu-west-2"),        // Madrid: London beats Frankfurt
            ("NZ", (-36.85, 174.76), "ap-southeast-2"), // Auckland
            ("TW", (25.03, 121.57), "ap-northeast-1"),  // Taipei
            ("ID", (-6.21, 106.85), "ap-southeast-1"),  // Jakarta
            ("ZA", (-26.20, 28.05), "sa-east-1"),       // Johannesburg: great circle, not cables
        ];
        for (country, at, expected) in cases {
            let decision = select_region(
                &config,
                &caller(country, None, Some(at)),
                None,
                &HealthTable::default(),
            );
            assert_eq!(
                (decision.region.as_str(), decision.reason),
                (expected, Reason::Nearest),
                "{country}"
            );
        }
    }

    #[test]
    fn without_coordinates_the_continent_then_the_default_decide() {
        let config = seed_config();
        let without = |country: &str, continent: Option<&str>| CallerLocation {
            continent: continent.map(str::to_owned),
            ..caller(country, None, None)
        };
        let cases = [
            (
                without("IN", Some("AS")),
                "ap-southeast-1",
                Reason::Continent,
            ),
            (
                without("NZ", Some("oc")),
                "ap-southeast-2",
                Reason::Continent,
            ),
            (without("ES", Some("EU")), "eu-west-2", Reason::Continent),
            (without("PE", Some("SA")), "sa-east-1", Reason::Continent),
            (without("KE", Some("AF")), "eu-west-2", Reason::Continent),
            (without("AQ", Some("AN")), "us-east-1", Reason::Default),
            (without("XX", None), "us-east-1", Reason::Default),
            (CallerLocation::default(), "us-east-1", Reason::Default),
        ];
        for (who, expected, reason) in cases {
            let decision = select_region(&config, &who, None, &HealthTable::default());
            assert_eq!(
                (decision.region.as_str(), decision.reason),
                (expected, reason),
                "{who:?}"
            );
        }
    }

    #[test]
    fn a_pin_holds_while_healthy_and_fails_over_by_the_same_rules() {
        let config = seed_config();
        let californian = caller("US", Some("CA"), Some((37.77, -122.42)));
        let decision = select_region(
            &config,
            &californian,
            Some("eu-north-1"),
            &HealthTable::default(),
        );
        assert_eq!(
            (decision.region.as_str(), decision.reason),
            ("eu-north-1", Reason::Pinned)
        );
        assert_eq!(&names(&decision)[..2], ["us-west-2", "us-east-1"]);

        let down = table(&[("eu-north-1", HealthState::Down)]);
        let decision = select_region(&config, &californian, Some("eu-north-1"), &down);
        assert_eq!(
            (decision.region.as_str(), decision.reason),
            ("us-west-2", Reason::Failover)
        );

        // A pin to a region that no longer exists is ignored: the rules decide.
        let decision = select_region(
            &config,
            &californian,
            Some("mars-1"),
            &HealthTable::default(),
        );
        assert_eq!(
            (decision.region.as_str(), decision.reason),
            ("us-west-2", Reason::RegionCode)
        );
    }

    #[test]
    fn failover_order_follows_the_rules_then_distance() {
        let config = seed_config();
        let californian = caller("US", Some("CA"), Some((37.77, -122.42)));
        let healthy = select_region(&config, &californian, None, &HealthTable::default());
        assert_eq!(healthy.region, "us-west-2");
        assert_eq!(
            names(&healthy),
            [
                "us-east-1",      // country
                "ap-northeast-1", // then by distance from San Francisco
                "eu-west-2",
                "eu-north-1",
                "eu-central-1",
                "sa-east-1",
                "ap-southeast-2",
                "ap-southeast-1",
            ]
        );

        let cases: &[(&[&str], &str)] = &[
            (&["us-west-2"], "us-east-1"),
            (&["us-west-2", "us-east-1"], "ap-northeast-1"),
            (&["us-west-2", "us-east-1", "ap-northeast-1"], "eu-west-2"),
        ];
        for (down, expected) in cases {
            let states: Vec<(&str, HealthState)> =
                down.iter().map(|r| (*r, HealthState::Down)).collect();
            let decision = select_region(&config, &californian, None, &table(&states));
            assert_eq!(
                (decision.region.as_str(), decision.reason),
                (*expected, Reason::Failover),
                "{down:?}"
            );
            assert!(decision.healthy);
            // Unhealthy regions trail the healthy ones in the fallbacks.
            let tail: Vec<&str> = names(&decision)
                .into_iter()
                .rev()
                .take(down.len())
                .collect();
            let mut tail_sorted = tail.clone();
            tail_sorted.sort_unstable();
            let mut down_sorted = down.to_vec();
            down_sorted.sort_unstable();
            assert_eq!(tail_sorted, down_sorted);
            assert!(
                decision
                    .fallbacks
                    .iter()
                    .rev()
                    .take(down.len())
                    .all(|f| !f.healthy)
            );
        }
    }

    #[test]
    fn reported_down_is_skipped_like_down_and_unknown_is_used() {
        let config = seed_config();
        let londoner = caller("GB", Some("ENG"), None);
        let reported = table(&[("eu-west-2", HealthState::ReportedDown)]);
        let decision = select_region(&config, &londoner, None, &reported);
        assert_eq!(decision.reason, Reason::Failover);
        assert_ne!(decision.region, "eu-west-2");
        let unknown = table(&[("eu-west-2", HealthState::Unknown)]);
        assert_eq!(
            select_region(&config, &londoner, None, &unknown).region,
            "eu-west-2"
        );
    }

    #[test]
    fn when_every_region_is_down_the_least_bad_is_answered_and_flagged() {
        let config = seed_config();
        let mut all_down = table(&SEED_REGIONS.map(|r| (r, HealthState::Down)));
        let texan = caller("US", Some("TX"), Some((30.27, -97.74)));
        let decision = select_region(&config, &texan, None, &all_down);
        assert!(!decision.healthy);
        assert_eq!(
            (decision.region.as_str(), decision.reason),
            ("us-east-1", Reason::RegionCode)
        );
        assert_eq!(decision.fallbacks.len(), SEED_REGIONS.len() - 1);

        // One region recovering (two good probes so far) is less bad than the rest.
        let recovering = all_down.regions.get_mut("eu-central-1").expect("present");
        recovering.consecutive_successes = 2;
        let decision = select_region(&config, &texan, None, &all_down);
        assert_eq!(
            (decision.region.as_str(), decision.reason, decision.healthy),
            ("eu-central-1", Reason::Failover, false)
        );

        // Only-reported is less bad than probe-confirmed.
        all_down.regions.insert(
            "ap-southeast-2".into(),
            RegionHealth {
                state: HealthState::ReportedDown,
                ..RegionHealth::default()
            },
        );
        assert_eq!(
            select_region(&config, &texan, None, &all_down).region,
            "ap-southeast-2"
        );
    }

    #[test]
    fn disabled_regions_are_never_chosen_and_their_rows_fall_through() {
        let config = config_with(
            &[],
            r#"{"us-east-1":{"origin_url":"https://e.test"},"us-west-2":{"origin_url":"https://w.test","enabled":false},
                "eu-west-2":{"origin_url":"https://l.test"}}"#,
        );
        let californian = caller("US", Some("CA"), Some((37.77, -122.42)));
        let decision = select_region(
            &config,
            &californian,
            Some("us-west-2"),
            &HealthTable::default(),
        );
        assert_eq!(
            (decision.region.as_str(), decision.reason),
            ("us-east-1", Reason::Country)
        );
        assert_eq!(names(&decision), ["eu-west-2"]);
    }

    #[test]
    fn weight_scales_the_pull_of_a_region() {
        // Madrid is nearer London (1264 km) than Frankfurt (1420 km); weight 150 on Frankfurt
        // makes its effective distance 947 km.
        let regions = r#"{"us-east-1":{"origin_url":"https://e.test"},"eu-west-2":{"origin_url":"https://l.test"},
                          "eu-central-1":{"origin_url":"https://f.test","weight":150}}"#;
        let madrid = caller("ES", None, Some((40.42, -3.70)));
        let weighted = config_with(&[], regions);
        assert_eq!(
            select_region(&weighted, &madrid, None, &HealthTable::default()).region,
            "eu-central-1"
        );
        let neutral = config_with(&[], &regions.replace(r#","weight":150"#, ""));
        assert_eq!(
            select_region(&neutral, &madrid, None, &HealthTable::default()).region,
            "eu-west-2"
        );
    }

    #[test]
    fn decision_carries_the_region_s_urls() {
        let config = seed_config();
        let decision = select_region(
            &config,
            &caller("JP", Some("13"), None),
            None,
            &HealthTable::default(),
        );
        assert_eq!(decision.region, "ap-northeast-1");
        assert_eq!(decision.origin_url, "https://ap-northeast-1.origin.test");
        assert_eq!(decision.bedrock_region, "ap-northeast-1");
        let fallback = &decision.fallbacks[0];
        assert_eq!(
            fallback.origin_url,
            format!("https://{}.origin.test", fallback.region)
        );
    }

    fn any_state() -> impl Strategy<Value = HealthState> {
        prop_oneof![
            Just(HealthState::Unknown),
            Just(HealthState::Up),
            Just(HealthState::ReportedDown),
            Just(HealthState::Down),
        ]
    }

    proptest! {
        /// Whoever calls and whatever is down: the answer is an enabled region, every enabled
        /// region appears exactly once, a healthy region wins whenever one exists, and
        /// `failover` is said exactly when the rules' first choice was skipped.
        #[test]
        fn decisions_are_total_and_consistent(
            lat in proptest::option::of(-90.0f64..=90.0),
            lon in -180.0f64..=180.0,
            country in proptest::sample::select(vec!["US", "CA", "GB", "DE", "FR", "JP", "BR", "IN", "ZZ"]),
            code in proptest::option::of(proptest::sample::select(vec!["CA", "TX", "ENG", "HE", "13", "SP", "Q"])),
            pin in proptest::option::of(proptest::sample::select(SEED_REGIONS.to_vec())),
            states in proptest::collection::vec(any_state(), SEED_REGIONS.len()),
        ) {
            let config = seed_config();
            let who = CallerLocation {
                latitude: lat,
                longitude: lat.map(|_| lon),
                ..caller(country, code, None)
            };
            let health = table(&SEED_REGIONS.iter().copied().zip(states.iter().copied()).collect::<Vec<_>>());
            let decision = select_region(&config, &who, pin, &health);

            let mut all: Vec<&str> = names(&decision);
            all.push(&decision.region);
            all.sort_unstable();
            let mut expected = SEED_REGIONS.to_vec();
            expected.sort_unstable();
            prop_assert_eq!(all, expected);

            let any_healthy = states.iter().any(|s| s.is_usable());
            prop_assert_eq!(decision.healthy, any_healthy);
            let first = rank(&config, &who, pin)[0].0;
            let first_usable = health.state(&config.regions[first].name).is_usable();
            if any_healthy {
                prop_assert_eq!(decision.reason == Reason::Failover, !first_usable);
            }
        }
    }
}
