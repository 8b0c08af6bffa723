//! geo-router's internal API as JSON: what voice-router sends and what it gets back.

use serde::{Deserialize, Deserializer, Serialize};

use super::config::GeoConfig;
use super::distance::Coordinates;
use super::health::{HealthState, HealthTable, ProbeRecord, ReportOutcome};

/// `POST`: a [`RouteRequest`] in, a [`RouteDecision`] out.
pub const ROUTE_PATH: &str = "/v1/route";
/// `POST`: a [`ReportRequest`] in, a [`ReportResponse`] out.
pub const REPORT_PATH: &str = "/v1/report";
/// `GET`: the [`RegionsView`] an operator looks at.
pub const REGIONS_PATH: &str = "/v1/regions";

/// Largest request body accepted: a `request.cf` copy and a pin fit many times over.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Longest `client` accepted in a report; it is hashed, so only abuse sends more.
pub const MAX_CLIENT_LEN: usize = 256;

/// How long voice-router may reuse geo-router's decision for the same [`RouteRequest`] (same
/// caller location and pin) within one isolate: far below one probe interval (the Cron Trigger
/// runs every minute), so a region marked down still loses its traffic within one; an isolate
/// that reports a failure forgets its decisions at once (issue 15).
pub const DECISION_REUSE_MS: u64 = 5_000;

/// `POST /v1/route`: where should this caller's request go?
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteRequest {
    /// The caller's `request.cf` fields as voice-router saw them. Absent: geo-router reads the
    /// `request.cf` of the request it received (useful for direct calls and tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<CallerLocation>,
    /// The region a live call is pinned to: kept while it is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

/// Where a caller is, as Cloudflare's `request.cf` tells it. Accepts `cf`'s own spelling
/// (`regionCode`, coordinates as strings) so voice-router can copy the fields as they are.
/// Unknown fields are ignored; unusable coordinates count as absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallerLocation {
    /// ISO 3166-1 alpha-2, e.g. `US`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// ISO 3166-2 subdivision without the country, e.g. `CA` (`US-CA` is accepted too).
    #[serde(default, alias = "regionCode", skip_serializing_if = "Option::is_none")]
    pub region_code: Option<String>,
    /// Continent code, e.g. `NA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continent: Option<String>,
    /// Decimal degrees.
    #[serde(
        default,
        deserialize_with = "lenient_degrees",
        skip_serializing_if = "Option::is_none"
    )]
    pub latitude: Option<f64>,
    /// Decimal degrees.
    #[serde(
        default,
        deserialize_with = "lenient_degrees",
        skip_serializing_if = "Option::is_none"
    )]
    pub longitude: Option<f64>,
    /// The Cloudflare data centre that received the call (IATA code); carried for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colo: Option<String>,
}

impl CallerLocation {
    /// The caller's position when both coordinates are present and on Earth.
    pub fn coordinates(&self) -> Option<Coordinates> {
        Coordinates::new(self.latitude?, self.longitude?)
    }

    /// Reads a `request.cf` object serialised as JSON.
    pub fn from_cf_json(text: &str) -> Result<Self, WireError> {
        serde_json::from_str(text).map_err(|error| WireError::InvalidJson(error.to_string()))
    }
}

/// A number, a numeric string (`request.cf` sends `"37.78"`), or null; anything else is absent.
fn lenient_degrees<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Degrees {
        Number(f64),
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Option::<Degrees>::deserialize(deserializer)? {
        Some(Degrees::Number(value)) => Some(value),
        Some(Degrees::Text(text)) => text.trim().parse().ok(),
        Some(Degrees::Other(_)) | None => None,
    })
}

/// Which rule chose the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The call's pinned region, healthy.
    Pinned,
    /// The caller's ISO 3166-2 region code is in the region-code map.
    RegionCode,
    /// The caller's country is in the country map.
    Country,
    /// The nearest region by great-circle distance from the caller's coordinates.
    Nearest,
    /// The caller has no coordinates; its continent is in the continent map.
    Continent,
    /// The region the rules preferred is unhealthy; this is the next one by the same rules.
    Failover,
    /// No rule placed the caller.
    Default,
}

/// `POST /v1/route`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteDecision {
    /// AWS region, e.g. `us-west-2`.
    pub region: String,
    /// Where to send the request: the region's origin base URL, no trailing slash.
    pub origin_url: String,
    /// Where that origin calls Bedrock.
    pub bedrock_region: String,
    /// The rule that chose the region.
    pub reason: Reason,
    /// False only when every region is unhealthy and this is the least bad of them.
    pub healthy: bool,
    /// The other enabled regions by preference: healthy ones first, for reconnecting mid-call.
    pub fallbacks: Vec<Fallback>,
}

/// One alternative region in a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    /// AWS region.
    pub region: String,
    /// Its origin base URL.
    pub origin_url: String,
    /// Its Bedrock region.
    pub bedrock_region: String,
    /// Whether it may take traffic now.
    pub healthy: bool,
}

/// `POST /v1/report`: an origin request in `region` failed for `client`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRequest {
    /// The region whose origin failed.
    pub region: String,
    /// Who saw it fail: the tenant id, or the caller's IP when there is none. Reports from one
    /// client count once per window; it is hashed before storing.
    pub client: String,
}

impl ReportRequest {
    /// Reads and checks a report body.
    pub fn from_json(body: &str) -> Result<Self, WireError> {
        check_size(body)?;
        let report: Self = serde_json::from_str(body)
            .map_err(|error| WireError::InvalidJson(error.to_string()))?;
        if report.region.trim().is_empty() {
            return Err(WireError::MissingField("region"));
        }
        if report.client.trim().is_empty() {
            return Err(WireError::MissingField("client"));
        }
        if report.client.len() > MAX_CLIENT_LEN {
            return Err(WireError::TooLong {
                field: "client",
                max: MAX_CLIENT_LEN,
            });
        }
        Ok(report)
    }
}

/// `POST /v1/report`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportResponse {
    /// The region reported.
    pub region: String,
    /// What the report did.
    pub outcome: ReportOutcome,
    /// The region's state afterwards.
    pub state: HealthState,
    /// Distinct clients counted in the current window.
    pub reports_in_window: u32,
    /// Distinct clients needed to take the region down (0: reports are off).
    pub threshold: u32,
}

/// `GET /v1/regions`: the table an operator looks at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionsView {
    /// Region for callers no rule places.
    pub default_region: String,
    /// When the Cron Trigger last probed, Unix milliseconds; absent before its first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probed_at_ms: Option<u64>,
    /// The health policy in force.
    pub policy: PolicyView,
    /// Every configured region, by name.
    pub regions: Vec<RegionView>,
}

/// The health policy as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    /// Failed probes in a row that take a region down.
    pub fall: u32,
    /// Good probes in a row that bring it back.
    pub rise: u32,
    /// Distinct reporting clients that take a region down until the next probe.
    pub report_threshold: u32,
    /// How long reports count.
    pub report_window_ms: u64,
    /// Deadline of one probe.
    pub probe_timeout_ms: u64,
    /// How long an isolate trusts its cached copy of the table.
    pub health_cache_ms: u64,
}

/// One region with its health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionView {
    /// AWS region.
    pub region: String,
    /// Origin base URL.
    pub origin_url: String,
    /// Bedrock region.
    pub bedrock_region: String,
    /// Pull in the distance rule (100 is neutral).
    pub weight: u32,
    /// Whether the region takes traffic at all.
    pub enabled: bool,
    /// Where the region is.
    pub latitude: f64,
    /// Where the region is.
    pub longitude: f64,
    /// What geo-router believes about its origin.
    pub state: HealthState,
    /// Enabled and in a usable state.
    pub healthy: bool,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
    /// Good probes in a row.
    pub consecutive_successes: u32,
    /// When the state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// The latest probe: when, how long, what it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<ProbeRecord>,
    /// Distinct clients that reported failures in the current window.
    pub reports_in_window: u32,
}

impl RegionsView {
    /// The operator's view of `config` and `table` at `now_ms`.
    pub fn build(config: &GeoConfig, table: &HealthTable, now_ms: u64) -> Self {
        let regions = config
            .regions
            .iter()
            .map(|region| {
                let health = table.regions.get(&region.name).cloned().unwrap_or_default();
                RegionView {
                    region: region.name.clone(),
                    origin_url: region.origin_url.clone(),
                    bedrock_region: region.bedrock_region.clone(),
                    weight: region.weight,
                    enabled: region.enabled,
                    latitude: region.location.latitude,
                    longitude: region.location.longitude,
                    state: health.state,
                    healthy: region.enabled && health.state.is_usable(),
                    consecutive_failures: health.consecutive_failures,
                    consecutive_successes: health.consecutive_successes,
                    since_ms: health.since_ms,
                    reports_in_window: count(health.reports.in_window(now_ms, &config.health)),
                    last_probe: health.last_probe,
                }
            })
            .collect();
        Self {
            default_region: config.default_region().name.clone(),
            probed_at_ms: table.probed_at_ms,
            policy: PolicyView {
                fall: config.health.fall,
                rise: config.health.rise,
                report_threshold: config.health.report_threshold,
                report_window_ms: config.health.report_window_ms,
                probe_timeout_ms: config.probe_timeout_ms,
                health_cache_ms: config.health_cache_ms,
            },
            regions,
        }
    }
}

/// Builds the answer to a report once the table has counted it.
pub fn report_response(
    config: &GeoConfig,
    table: &HealthTable,
    region: &str,
    outcome: ReportOutcome,
    now_ms: u64,
) -> ReportResponse {
    let health = table.regions.get(region);
    ReportResponse {
        region: region.to_owned(),
        outcome,
        state: table.state(region),
        reports_in_window: health
            .map(|health| count(health.reports.in_window(now_ms, &config.health)))
            .unwrap_or(0),
        threshold: config.health.report_threshold,
    }
}

fn check_size(body: &str) -> Result<(), WireError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(WireError::BodyTooLarge(MAX_BODY_BYTES));
    }
    Ok(())
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl RouteRequest {
    /// Reads a route request; an empty body is a request with neither caller nor pin.
    pub fn from_json(body: &str) -> Result<Self, WireError> {
        check_size(body)?;
        if body.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_str(body).map_err(|error| WireError::InvalidJson(error.to_string()))
    }
}

/// Facts that make a request body unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not JSON, or not the expected shape.
    #[error("the body is not JSON of the expected shape: {0}")]
    InvalidJson(String),
    /// A required field is missing or empty.
    #[error("{0} is required")]
    MissingField(&'static str),
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// A field is longer than allowed.
    #[error("{field} is longer than {max} bytes")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The limit.
        max: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_accepts_cf_spelling_and_string_coordinates() {
        let cf = r#"{"country":"US","regionCode":"CA","continent":"NA","latitude":"37.78044",
                     "longitude":"-122.39055","colo":"SJC","asn":13335,"tlsClientAuth":{"certPresented":"0"}}"#;
        let caller = CallerLocation::from_cf_json(cf).expect("cf object");
        assert_eq!(caller.country.as_deref(), Some("US"));
        assert_eq!(caller.region_code.as_deref(), Some("CA"));
        assert_eq!(caller.colo.as_deref(), Some("SJC"));
        assert_eq!(caller.coordinates(), Coordinates::new(37.78044, -122.39055));
    }

    #[test]
    fn unusable_coordinates_count_as_absent() {
        for body in [
            r#"{"latitude":"north","longitude":"-1"}"#,
            r#"{"latitude":null,"longitude":null}"#,
            r#"{"latitude":91,"longitude":0}"#,
            r#"{"latitude":{"deg":1},"longitude":[2]}"#,
            r#"{"latitude":10}"#,
        ] {
            let caller = CallerLocation::from_cf_json(body).expect(body);
            assert_eq!(caller.coordinates(), None, "{body}");
        }
    }

    #[test]
    fn route_request_shapes() {
        assert_eq!(
            RouteRequest::from_json("").expect("empty"),
            RouteRequest::default()
        );
        assert_eq!(
            RouteRequest::from_json("{}").expect("empty object"),
            RouteRequest::default()
        );
        let request = RouteRequest::from_json(
            r#"{"caller":{"country":"JP","region_code":"13","latitude":35.6,"longitude":139.7},"pin":"us-west-2"}"#,
        )
        .expect("full");
        assert_eq!(request.pin.as_deref(), Some("us-west-2"));
        assert_eq!(
            request.caller.and_then(|c| c.region_code).as_deref(),
            Some("13")
        );
        let huge = format!(r#"{{"pin":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        assert_eq!(
            RouteRequest::from_json(&huge),
            Err(WireError::BodyTooLarge(MAX_BODY_BYTES))
        );
        for bad in [
            "{",
            "null",
            r#"{"caller":"US"}"#,
            r#"{"pin":7}"#,
            r#"{"caller":{"country":1}}"#,
        ] {
            assert!(
                matches!(RouteRequest::from_json(bad), Err(WireError::InvalidJson(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn decision_serialises_to_the_documented_shape() {
        let decision = RouteDecision {
            region: "us-west-2".into(),
            origin_url: "https://w.test".into(),
            bedrock_region: "us-east-1".into(),
            reason: Reason::RegionCode,
            healthy: true,
            fallbacks: vec![Fallback {
                region: "us-east-1".into(),
                origin_url: "https://e.test".into(),
                bedrock_region: "us-east-1".into(),
                healthy: true,
            }],
        };
        assert_eq!(
            serde_json::to_value(&decision).expect("serialises"),
            serde_json::json!({
                "region": "us-west-2", "origin_url": "https://w.test", "bedrock_region": "us-east-1",
                "reason": "region-code", "healthy": true,
                "fallbacks": [{"region": "us-east-1", "origin_url": "https://e.test", "bedrock_region": "us-east-1", "healthy": true}]
            })
        );
    }

    #[test]
    fn report_request_is_checked() {
        assert_eq!(
            ReportRequest::from_json(r#"{"region":"us-east-1","client":"t1"}"#),
            Ok(ReportRequest {
                region: "us-east-1".into(),
                client: "t1".into()
            })
        );
        assert_eq!(
            ReportRequest::from_json(r#"{"region":" ","client":"t1"}"#),
            Err(WireError::MissingField("region"))
        );
        assert_eq!(
            ReportRequest::from_json(r#"{"region":"us-east-1","client":""}"#),
            Err(WireError::MissingField("client"))
        );
        let long = format!(
            r#"{{"region":"us-east-1","client":"{}"}}"#,
            "x".repeat(MAX_CLIENT_LEN + 1)
        );
        assert_eq!(
            ReportRequest::from_json(&long),
            Err(WireError::TooLong {
                field: "client",
                max: MAX_CLIENT_LEN
            })
        );
        assert!(matches!(
            ReportRequest::from_json(r#"{"region":"us-east-1"}"#),
            Err(WireError::InvalidJson(_))
        ));
    }
}
