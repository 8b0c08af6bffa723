//! CPU cost of one route decision (`shared::geo::select_region`), natively, for
//! `tests/bench/geo.bench.mjs`. Prints one JSON line: nanoseconds per decision over a mix of
//! callers (every rule, one region down so some decisions fail over), and as the baseline the
//! JSON work every request does anyway (parse a `RouteRequest`, serialise the `RouteDecision`).
//! Run: `cargo run --release --example geo_select -p shared`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use shared::geo::config::SEED_REGIONS;
use shared::geo::health::RegionHealth;
use shared::geo::{
    CallerLocation, GeoConfig, HealthState, HealthTable, RouteDecision, RouteRequest, select_region,
};

/// Request bodies as voice-router sends them: region code, country, nearest, continent,
/// default, pinned, and a region-code caller whose region is down (failover).
const BODIES: [&str; 7] = [
    r#"{"caller":{"country":"US","region_code":"TX","continent":"NA","latitude":"30.27","longitude":"-97.74","colo":"DFW"}}"#,
    r#"{"caller":{"country":"GB","region_code":"SCT","continent":"EU","latitude":"55.95","longitude":"-3.19","colo":"EDI"}}"#,
    r#"{"caller":{"country":"IN","region_code":"MH","continent":"AS","latitude":"19.08","longitude":"72.88","colo":"BOM"}}"#,
    r#"{"caller":{"country":"KE","continent":"AF","colo":"NBO"}}"#,
    r#"{"caller":{}}"#,
    r#"{"caller":{"country":"US","region_code":"NY","latitude":"40.71","longitude":"-74.0"},"pin":"eu-north-1"}"#,
    r#"{"caller":{"country":"US","region_code":"CA","continent":"NA","latitude":"37.77","longitude":"-122.42","colo":"SJC"}}"#,
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let regions: Vec<String> = SEED_REGIONS
        .iter()
        .map(|name| format!(r#""{name}":{{"origin_url":"https://origin-{name}.example.com"}}"#))
        .collect();
    let vars = BTreeMap::from([("GEO_REGIONS", format!("{{{}}}", regions.join(",")))]);
    let config = GeoConfig::from_lookup(|key| vars.get(key).cloned())?;

    let mut health = HealthTable::default();
    for name in SEED_REGIONS {
        let state = if name == "us-west-2" {
            HealthState::Down
        } else {
            HealthState::Up
        };
        health.regions.insert(
            name.to_owned(),
            RegionHealth {
                state,
                ..RegionHealth::default()
            },
        );
    }

    let requests: Vec<RouteRequest> = BODIES
        .iter()
        .map(|body| RouteRequest::from_json(body))
        .collect::<Result<_, _>>()?;
    let callers: Vec<(CallerLocation, Option<String>)> = requests
        .iter()
        .map(|request| {
            (
                request.caller.clone().unwrap_or_default(),
                request.pin.clone(),
            )
        })
        .collect();

    let decide = |i: usize| {
        let (caller, pin) = &callers[i % callers.len()];
        black_box(select_region(
            black_box(&config),
            black_box(caller),
            pin.as_deref(),
            black_box(&health),
        ))
    };
    let decisions: Vec<RouteDecision> = (0..callers.len()).map(decide).collect();
    let json = |i: usize| {
        let request = RouteRequest::from_json(black_box(BODIES[i % BODIES.len()]));
        black_box(serde_json::to_string(black_box(&decisions[i % decisions.len()])).ok());
        black_box(request.ok());
    };

    let decision_ns = nanos_per_call(decide);
    let json_ns = nanos_per_call(json);
    let reasons: Vec<String> = decisions
        .iter()
        .map(|d| {
            format!(
                "{}:{}",
                d.region,
                serde_json::to_string(&d.reason).unwrap_or_default()
            )
        })
        .collect();
    writeln!(
        std::io::stdout().lock(),
        r#"{{"decision_ns":{decision_ns:.1},"json_ns":{json_ns:.1},"callers":{},"mix":{:?}}}"#,
        callers.len(),
        reasons.join(" ")
    )?;
    Ok(())
}

/// Median of several timed runs, each long enough (~100 ms) to swamp the clock's resolution.
fn nanos_per_call<T>(mut f: impl FnMut(usize) -> T) -> f64 {
    let mut batch = 1_000usize;
    loop {
        let started = Instant::now();
        for i in 0..batch {
            black_box(f(i));
        }
        if started.elapsed() >= Duration::from_millis(100) {
            break;
        }
        batch *= 2;
    }
    let mut runs: Vec<f64> = (0..7)
        .map(|_| {
            let started = Instant::now();
            for i in 0..batch {
                black_box(f(i));
            }
            started.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}
