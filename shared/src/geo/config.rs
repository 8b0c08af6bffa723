//! geo-router's configuration: the regions, the seed's routing tables and the health policy.
//!
//! Parsed once from a lookup (the Worker passes its wrangler vars) through
//! [`crate::config::Reader`], every problem reported together. Each var holds JSON text or a number; only `GEO_REGIONS` is required, because origin
//! URLs differ per environment. The routing tables default to the seed (`ARCHITECTURE.md`); a seed
//! row naming a region the operator did not configure is dropped, while an operator's own row
//! naming an unconfigured region is a problem.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::{self, ConfigIssue};

use super::distance::Coordinates;
use super::health::HealthPolicy;

/// Var: JSON object of regions, `{"us-east-1": {"origin_url": "https://…", …}, …}`. Required.
pub const REGIONS: &str = "GEO_REGIONS";
/// Var: JSON object, ISO 3166-1 alpha-2 country → region. Default: the seed's country map.
pub const COUNTRY_MAP: &str = "GEO_COUNTRY_MAP";
/// Var: JSON object, ISO 3166-2 code (`US-CA`) → region. Default: the seed's region-code map.
pub const REGION_CODE_MAP: &str = "GEO_REGION_CODE_MAP";
/// Var: JSON object, continent code (`EU`) → region, used only for callers without coordinates.
pub const CONTINENT_MAP: &str = "GEO_CONTINENT_MAP";
/// Var: the region for callers no rule places. Default `us-east-1`.
pub const DEFAULT_REGION: &str = "GEO_DEFAULT_REGION";
/// Var: consecutive failed probes that take a region down (hysteresis "fall").
pub const HEALTH_FALL: &str = "GEO_HEALTH_FALL";
/// Var: consecutive good probes that bring a down region back (hysteresis "rise").
pub const HEALTH_RISE: &str = "GEO_HEALTH_RISE";
/// Var: distinct clients whose reports within the window take a region down; 0 ignores reports.
pub const REPORT_THRESHOLD: &str = "GEO_REPORT_THRESHOLD";
/// Var: how long reports count, in milliseconds.
pub const REPORT_WINDOW_MS: &str = "GEO_REPORT_WINDOW_MS";
/// Var: how long a probe of an origin's `/health` may take, in milliseconds.
pub const PROBE_TIMEOUT_MS: &str = "GEO_PROBE_TIMEOUT_MS";
/// Var: how long an isolate trusts its copy of the health table before re-reading KV; 0 reads
/// KV on every decision.
pub const HEALTH_CACHE_MS: &str = "GEO_HEALTH_CACHE_MS";

/// The seed's country map.
pub const SEED_COUNTRY_MAP: &[(&str, &str)] = &[
    ("US", "us-east-1"),
    ("CA", "us-east-1"),
    ("GB", "eu-west-2"),
    ("DE", "eu-west-2"),
    ("FR", "eu-west-2"),
];

/// The seed's finer map by ISO 3166-2 region code.
pub const SEED_REGION_CODE_MAP: &[(&str, &str)] = &[
    ("US-CA", "us-west-2"),
    ("US-WA", "us-west-2"),
    ("US-OR", "us-west-2"),
    ("US-TX", "us-east-1"),
    ("US-FL", "us-east-1"),
    ("US-NY", "us-east-1"),
    ("US-VA", "us-east-1"),
    ("CA-ON", "us-east-1"),
    ("CA-QC", "us-east-1"),
    ("GB-ENG", "eu-west-2"),
    ("IE-L", "eu-west-2"),
    ("DE-HE", "eu-central-1"),
    ("NL-NH", "eu-central-1"),
    ("FR-IDF", "eu-central-1"),
    ("SE-AB", "eu-north-1"),
    ("NO-03", "eu-north-1"),
    ("DK-84", "eu-north-1"),
    ("SG-01", "ap-southeast-1"),
    ("MY-14", "ap-southeast-1"),
    ("JP-13", "ap-northeast-1"),
    ("KR-11", "ap-northeast-1"),
    ("AU-NSW", "ap-southeast-2"),
    ("AU-VIC", "ap-southeast-2"),
    ("BR-SP", "sa-east-1"),
    ("AR-C", "sa-east-1"),
    ("CL-RM", "sa-east-1"),
];

/// Continent fallback for callers without coordinates. The seed has none; these follow its
/// regional choices (Europe → eu-west-2 as GB/FR/DE do). Antarctica falls to the default.
pub const SEED_CONTINENT_MAP: &[(&str, &str)] = &[
    ("NA", "us-east-1"),
    ("SA", "sa-east-1"),
    ("EU", "eu-west-2"),
    ("AF", "eu-west-2"),
    ("AS", "ap-southeast-1"),
    ("OC", "ap-southeast-2"),
];

/// The seed's default region.
pub const SEED_DEFAULT_REGION: &str = "us-east-1";

/// Every region the seed's tables name (a test keeps the two in step): configure these and
/// every seed row applies. The e2e harness mirrors this list as `SEED_REGIONS` in
/// `tests/e2e/harness.mjs`, and a test here checks that it agrees.
pub const SEED_REGIONS: [&str; 9] = [
    "us-east-1",
    "us-west-2",
    "eu-west-2",
    "eu-central-1",
    "eu-north-1",
    "ap-southeast-1",
    "ap-northeast-1",
    "ap-southeast-2",
    "sa-east-1",
];

/// The continent codes Cloudflare reports in `request.cf.continent`.
pub const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// Where AWS regions are (their metro area), so a region needs no coordinates in config.
const AWS_REGION_LOCATIONS: &[(&str, f64, f64)] = &[
    ("us-east-1", 38.95, -77.45),       // Northern Virginia
    ("us-east-2", 39.96, -83.00),       // Ohio
    ("us-west-1", 37.35, -121.96),      // Northern California
    ("us-west-2", 45.84, -119.70),      // Oregon
    ("ca-central-1", 45.50, -73.57),    // Montréal
    ("sa-east-1", -23.55, -46.63),      // São Paulo
    ("eu-west-1", 53.35, -6.26),        // Dublin
    ("eu-west-2", 51.51, -0.13),        // London
    ("eu-west-3", 48.86, 2.35),         // Paris
    ("eu-central-1", 50.11, 8.68),      // Frankfurt
    ("eu-central-2", 47.37, 8.54),      // Zürich
    ("eu-south-1", 45.46, 9.19),        // Milan
    ("eu-south-2", 41.65, -0.88),       // Aragón
    ("eu-north-1", 59.33, 18.07),       // Stockholm
    ("me-south-1", 26.07, 50.56),       // Bahrain
    ("me-central-1", 24.45, 54.38),     // UAE
    ("il-central-1", 32.09, 34.78),     // Tel Aviv
    ("af-south-1", -33.92, 18.42),      // Cape Town
    ("ap-south-1", 19.08, 72.88),       // Mumbai
    ("ap-south-2", 17.39, 78.49),       // Hyderabad
    ("ap-east-1", 22.32, 114.17),       // Hong Kong
    ("ap-southeast-1", 1.35, 103.82),   // Singapore
    ("ap-southeast-2", -33.87, 151.21), // Sydney
    ("ap-southeast-3", -6.21, 106.85),  // Jakarta
    ("ap-southeast-4", -37.81, 144.96), // Melbourne
    ("ap-northeast-1", 35.68, 139.69),  // Tokyo
    ("ap-northeast-2", 37.57, 126.98),  // Seoul
    ("ap-northeast-3", 34.69, 135.50),  // Osaka
];

/// Where a known AWS region is.
pub fn aws_region_location(name: &str) -> Option<Coordinates> {
    AWS_REGION_LOCATIONS
        .iter()
        .find(|(region, _, _)| *region == name)
        .and_then(|&(_, latitude, longitude)| Coordinates::new(latitude, longitude))
}

/// The Bedrock region that serves a compute region by default: the seed's rule (US → us-east-1,
/// EU → eu-west-1), and the compute region itself elsewhere.
pub fn default_bedrock_region(region: &str) -> String {
    if region.starts_with("us-") {
        "us-east-1".to_owned()
    } else if region.starts_with("eu-") {
        "eu-west-1".to_owned()
    } else {
        region.to_owned()
    }
}

/// Neutral weight: the distance rule sees a region's true distance.
pub const DEFAULT_WEIGHT: u32 = 100;
/// Largest weight accepted.
pub const MAX_WEIGHT: u32 = 1000;

const SEED_FALL: u64 = 2;
const SEED_RISE: u64 = 3;
const SEED_REPORT_THRESHOLD: u64 = 3;
const SEED_REPORT_WINDOW_MS: u64 = 60_000;
const SEED_PROBE_TIMEOUT_MS: u64 = 2_000;
const SEED_HEALTH_CACHE_MS: u64 = 5_000;

/// Everything geo-router decides with, checked and indexed. Only [`GeoConfig::from_lookup`]
/// builds one, so every index below points at a region.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoConfig {
    /// Every configured region, sorted by name; maps below hold indices into it.
    pub(crate) regions: Vec<Region>,
    /// Country (`US`) → region index.
    pub(crate) country_map: BTreeMap<String, usize>,
    /// Region code (`US-CA`) → region index.
    pub(crate) region_code_map: BTreeMap<String, usize>,
    /// Continent (`EU`) → region index.
    pub(crate) continent_map: BTreeMap<String, usize>,
    /// Index of the region for callers no rule places.
    pub(crate) default_region: usize,
    /// Hysteresis and report bounds.
    pub health: HealthPolicy,
    /// Deadline of one probe, in milliseconds.
    pub probe_timeout_ms: u64,
    /// How long an isolate trusts its cached health table, in milliseconds.
    pub health_cache_ms: u64,
}

/// One AWS region that can serve calls.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// AWS region name, e.g. `us-east-1`.
    pub name: String,
    /// Base URL of the region's origin (ALB), without a trailing slash.
    pub origin_url: String,
    /// Where the region's origin calls Bedrock.
    pub bedrock_region: String,
    /// Pull in the distance rule: distances are scaled by `100 / weight`.
    pub weight: u32,
    /// A disabled region takes no traffic and is skipped by every rule.
    pub enabled: bool,
    /// Where the region is.
    pub location: Coordinates,
}

impl GeoConfig {
    /// Every configured region, sorted by name.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The region for callers no rule places.
    pub fn default_region(&self) -> &Region {
        &self.regions[self.default_region]
    }

    /// The index of the region called `name` in [`GeoConfig::regions`].
    pub fn region_index(&self, name: &str) -> Option<usize> {
        self.regions.iter().position(|region| region.name == name)
    }
}

/// What can be wrong with geo-router's own settings; the problem names the var.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeoIssue {
    /// `GEO_REGIONS` is an empty object.
    #[error("configures no region")]
    NoRegions,
    /// Every configured region is disabled.
    #[error("enables no region; at least one must take traffic")]
    NoEnabledRegion,
    /// A region key is not a region name.
    #[error("{name:?} is not a region name (lowercase letters, digits, dashes: us-east-1)")]
    BadRegionName {
        /// The key.
        name: String,
    },
    /// A region's entry has the wrong fields or types.
    #[error("region {region}: {detail}")]
    BadRegionEntry {
        /// The region.
        region: String,
        /// The parser's complaint.
        detail: String,
    },
    /// An origin URL is not an absolute http(s) URL.
    #[error(
        "region {region}: origin_url {url:?} is not an http(s) URL without credentials, query or fragment"
    )]
    BadOriginUrl {
        /// The region.
        region: String,
        /// The URL as given.
        url: String,
    },
    /// A Bedrock region is not a region name.
    #[error("region {region}: bedrock_region {value:?} is not a region name")]
    BadBedrockRegion {
        /// The region.
        region: String,
        /// The value as given.
        value: String,
    },
    /// A weight is out of range.
    #[error("region {region}: weight {weight} is not from 1 to {MAX_WEIGHT}")]
    BadWeight {
        /// The region.
        region: String,
        /// The weight as given.
        weight: u64,
    },
    /// Coordinates are out of range, or only one of the pair is given.
    #[error(
        "region {region}: latitude {latitude:?} and longitude {longitude:?} are not a point on Earth"
    )]
    BadCoordinates {
        /// The region.
        region: String,
        /// Latitude as given.
        latitude: Option<f64>,
        /// Longitude as given.
        longitude: Option<f64>,
    },
    /// A region that is not a known AWS region came without coordinates.
    #[error("region {region} is not a known AWS region, so it needs latitude and longitude")]
    NoCoordinates {
        /// The region.
        region: String,
    },
    /// A routing table key has the wrong form.
    #[error("{key:?} is not {expected}")]
    BadKey {
        /// The key as given.
        key: String,
        /// What a key must look like.
        expected: &'static str,
    },
    /// A routing table row names a region `GEO_REGIONS` does not configure.
    #[error("{key} maps to {region}, which {REGIONS} does not configure")]
    UnknownRegion {
        /// The row's key.
        key: String,
        /// The region named.
        region: String,
    },
    /// The default region is not configured.
    #[error("{region:?} is not configured in {REGIONS}")]
    UnknownDefaultRegion {
        /// The region named (or the seed's, when the var is absent).
        region: String,
    },
    /// The report threshold would let one client take a region down.
    #[error("1 would let one client take a region down; use 0 (off) or 2 and up")]
    SingleReportThreshold,
}

/// One thing wrong with the configuration.
pub type ConfigProblem = config::ConfigProblem<GeoIssue>;
/// Every problem found in the configuration, in the order the vars are read.
pub type ConfigError = config::ConfigError<GeoIssue>;

type Reader<'a> = config::Reader<'a, GeoIssue>;

/// One region's entry in `GEO_REGIONS`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionEntry {
    origin_url: String,
    #[serde(default)]
    bedrock_region: Option<String>,
    #[serde(default)]
    weight: Option<u64>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
}

impl GeoConfig {
    /// Parses the configuration from `lookup` (a var name → its text, `None` when unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(&lookup);

        let regions = match reader.json(REGIONS) {
            Some(entries) => parse_regions(entries, &mut reader),
            None => {
                if !reader.is_set(REGIONS) {
                    reader.problem(REGIONS, ConfigIssue::Missing);
                }
                Vec::new()
            }
        };
        let names: Vec<&str> = regions.iter().map(|region| region.name.as_str()).collect();

        let tables = [
            (COUNTRY_MAP, SEED_COUNTRY_MAP, KeyKind::Country),
            (REGION_CODE_MAP, SEED_REGION_CODE_MAP, KeyKind::RegionCode),
            (CONTINENT_MAP, SEED_CONTINENT_MAP, KeyKind::Continent),
        ];
        let [country_map, region_code_map, continent_map] =
            tables.map(|(var, seed, kind)| parse_table(&mut reader, var, seed, kind, &names));

        let default_name = reader
            .text(DEFAULT_REGION)
            .unwrap_or_else(|| SEED_DEFAULT_REGION.to_owned());
        let default_region = names.iter().position(|name| *name == default_name);
        let unknown_default = ConfigIssue::Invalid(GeoIssue::UnknownDefaultRegion {
            region: default_name,
        });
        // Without regions that problem is already reported; naming the default too is noise.
        if default_region.is_none() && !regions.is_empty() {
            reader.problem(DEFAULT_REGION, unknown_default.clone());
        }

        let fall = reader.number(HEALTH_FALL, 1..=100, SEED_FALL);
        let rise = reader.number(HEALTH_RISE, 1..=100, SEED_RISE);
        let report_threshold = reader.number(REPORT_THRESHOLD, 0..=1000, SEED_REPORT_THRESHOLD);
        let report_window_ms =
            reader.number(REPORT_WINDOW_MS, 1_000..=3_600_000, SEED_REPORT_WINDOW_MS);
        let probe_timeout_ms = reader.number(PROBE_TIMEOUT_MS, 100..=30_000, SEED_PROBE_TIMEOUT_MS);
        let health_cache_ms = reader.number(HEALTH_CACHE_MS, 0..=60_000, SEED_HEALTH_CACHE_MS);
        if report_threshold == 1 {
            reader.problem(
                REPORT_THRESHOLD,
                ConfigIssue::Invalid(GeoIssue::SingleReportThreshold),
            );
        }

        reader.finish()?;
        // Every index must point at a region; with none configured a problem is reported above.
        let Some(default_region) = default_region else {
            return Err(ConfigError {
                problems: vec![ConfigProblem {
                    name: DEFAULT_REGION.to_owned(),
                    value: None,
                    issue: unknown_default,
                }],
            });
        };
        Ok(Self {
            regions,
            country_map,
            region_code_map,
            continent_map,
            default_region,
            health: HealthPolicy {
                fall: saturate(fall),
                rise: saturate(rise),
                report_threshold: saturate(report_threshold),
                report_window_ms,
            },
            probe_timeout_ms,
            health_cache_ms,
        })
    }
}

fn saturate(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn parse_regions(
    entries: BTreeMap<String, serde_json::Value>,
    reader: &mut Reader<'_>,
) -> Vec<Region> {
    let mut problem = |issue: GeoIssue| reader.problem(REGIONS, ConfigIssue::Invalid(issue));
    if entries.is_empty() {
        problem(GeoIssue::NoRegions);
        return Vec::new();
    }
    let mut regions = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        if !is_region_name(&name) {
            problem(GeoIssue::BadRegionName { name });
            continue;
        }
        match serde_json::from_value::<RegionEntry>(value) {
            Ok(entry) => match check_region(name, entry) {
                Ok(region) => regions.push(region),
                Err(issues) => issues.into_iter().for_each(&mut problem),
            },
            Err(error) => problem(GeoIssue::BadRegionEntry {
                region: name,
                detail: error.to_string(),
            }),
        }
    }
    if !regions.is_empty() && !regions.iter().any(|region| region.enabled) {
        problem(GeoIssue::NoEnabledRegion);
    }
    regions
}

/// Checks one region's entry: the region, or every problem it has.
fn check_region(name: String, entry: RegionEntry) -> Result<Region, Vec<GeoIssue>> {
    let mut issues = Vec::new();

    let origin_url = entry.origin_url.trim().trim_end_matches('/').to_owned();
    if !is_origin_url(&origin_url) {
        issues.push(GeoIssue::BadOriginUrl {
            region: name.clone(),
            url: entry.origin_url,
        });
    }

    let bedrock_region = match entry.bedrock_region {
        Some(value) if is_region_name(value.trim()) => value.trim().to_owned(),
        Some(value) => {
            issues.push(GeoIssue::BadBedrockRegion {
                region: name.clone(),
                value,
            });
            String::new()
        }
        None => default_bedrock_region(&name),
    };

    let weight = match entry.weight {
        None => DEFAULT_WEIGHT,
        Some(weight) => match u32::try_from(weight) {
            Ok(weight) if (1..=MAX_WEIGHT).contains(&weight) => weight,
            _ => {
                issues.push(GeoIssue::BadWeight {
                    region: name.clone(),
                    weight,
                });
                DEFAULT_WEIGHT
            }
        },
    };

    let location = match (entry.latitude, entry.longitude) {
        (None, None) => aws_region_location(&name).or_else(|| {
            issues.push(GeoIssue::NoCoordinates {
                region: name.clone(),
            });
            None
        }),
        (Some(latitude), Some(longitude)) if Coordinates::new(latitude, longitude).is_some() => {
            Coordinates::new(latitude, longitude)
        }
        (latitude, longitude) => {
            issues.push(GeoIssue::BadCoordinates {
                region: name.clone(),
                latitude,
                longitude,
            });
            None
        }
    };

    match location {
        Some(location) if issues.is_empty() => Ok(Region {
            name,
            origin_url,
            bedrock_region,
            weight,
            enabled: entry.enabled.unwrap_or(true),
            location,
        }),
        _ => Err(issues),
    }
}

#[derive(Debug, Clone, Copy)]
enum KeyKind {
    Country,
    RegionCode,
    Continent,
}

impl KeyKind {
    fn expected(self) -> &'static str {
        match self {
            KeyKind::Country => "an ISO 3166-1 alpha-2 country code like US",
            KeyKind::RegionCode => "an ISO 3166-2 region code like US-CA",
            KeyKind::Continent => "a continent code (AF, AN, AS, EU, NA, OC, SA)",
        }
    }

    fn accepts(self, key: &str) -> bool {
        match self {
            KeyKind::Country => is_country_code(key),
            KeyKind::RegionCode => key
                .split_once('-')
                .is_some_and(|(country, sub)| is_country_code(country) && is_subdivision(sub)),
            KeyKind::Continent => CONTINENTS.contains(&key),
        }
    }
}

/// One routing table: the operator's var when set, else the seed restricted to configured regions.
fn parse_table(
    reader: &mut Reader<'_>,
    var: &'static str,
    seed: &[(&str, &str)],
    kind: KeyKind,
    regions: &[&str],
) -> BTreeMap<String, usize> {
    let index = |region: &str| regions.iter().position(|name| *name == region);
    if !reader.is_set(var) {
        return seed
            .iter()
            .filter_map(|(key, region)| Some(((*key).to_owned(), index(region)?)))
            .collect();
    }
    let Some(rows) = reader.json::<BTreeMap<String, String>>(var) else {
        return BTreeMap::new();
    };
    let mut table = BTreeMap::new();
    for (key, region) in rows {
        let normalised = key.trim().to_ascii_uppercase();
        if !kind.accepts(&normalised) {
            reader.problem(
                var,
                ConfigIssue::Invalid(GeoIssue::BadKey {
                    key,
                    expected: kind.expected(),
                }),
            );
            continue;
        }
        match index(region.trim()) {
            Some(position) => {
                table.insert(normalised, position);
            }
            // Without any valid region every row would fail; the regions' problem says it all.
            None if regions.is_empty() => {}
            None => reader.problem(
                var,
                ConfigIssue::Invalid(GeoIssue::UnknownRegion {
                    key: normalised,
                    region,
                }),
            ),
        }
    }
    table
}

/// `us-east-1`: lowercase alphanumeric words joined by single dashes, at most 32 bytes.
pub fn is_region_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.split('-').all(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

fn is_country_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())
}

fn is_subdivision(code: &str) -> bool {
    (1..=3).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// An absolute http(s) URL with a host and no credentials, query or fragment. Checked by hand:
/// the `url` crate would pull IDNA tables into the Worker's wasm.
fn is_origin_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or_default();
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        && rest
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'@' | b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_regions_json() -> String {
        let entries: Vec<String> = SEED_REGIONS
            .iter()
            .map(|name| format!(r#""{name}":{{"origin_url":"https://{name}.origin.test/"}}"#))
            .collect();
        format!("{{{}}}", entries.join(","))
    }

    fn parse(vars: &[(&str, &str)]) -> Result<GeoConfig, ConfigError> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        GeoConfig::from_lookup(|key| vars.get(key).cloned())
    }

    #[test]
    fn seed_defaults_apply_when_only_regions_are_given() {
        let config = parse(&[(REGIONS, &seed_regions_json())]).expect("valid");
        assert_eq!(config.regions.len(), 9);
        assert_eq!(config.country_map.len(), SEED_COUNTRY_MAP.len());
        assert_eq!(config.region_code_map.len(), SEED_REGION_CODE_MAP.len());
        assert_eq!(config.continent_map.len(), SEED_CONTINENT_MAP.len());
        assert_eq!(config.regions[config.default_region].name, "us-east-1");
        assert_eq!(
            config.health,
            HealthPolicy {
                fall: 2,
                rise: 3,
                report_threshold: 3,
                report_window_ms: 60_000
            }
        );
        assert_eq!(config.probe_timeout_ms, 2_000);
        assert_eq!(config.health_cache_ms, 5_000);

        let west = &config.regions[config.region_index("us-west-2").expect("configured")];
        assert_eq!(
            west.origin_url, "https://us-west-2.origin.test",
            "trailing slash trimmed"
        );
        assert_eq!(
            west.bedrock_region, "us-east-1",
            "seed: US compute → us-east-1"
        );
        assert_eq!(west.weight, DEFAULT_WEIGHT);
        assert!(west.enabled);
        let frankfurt = &config.regions[config.region_index("eu-central-1").expect("configured")];
        assert_eq!(
            frankfurt.bedrock_region, "eu-west-1",
            "seed: EU compute → eu-west-1"
        );
        let tokyo = &config.regions[config.region_index("ap-northeast-1").expect("configured")];
        assert_eq!(tokyo.bedrock_region, "ap-northeast-1");
    }

    #[test]
    fn seed_regions_are_exactly_the_regions_the_seed_tables_name() {
        let named: std::collections::BTreeSet<&str> = SEED_COUNTRY_MAP
            .iter()
            .chain(SEED_REGION_CODE_MAP)
            .chain(SEED_CONTINENT_MAP)
            .map(|(_, region)| *region)
            .chain([SEED_DEFAULT_REGION])
            .collect();
        let listed: std::collections::BTreeSet<&str> = SEED_REGIONS.into_iter().collect();
        assert_eq!(listed, named);
        assert_eq!(listed.len(), SEED_REGIONS.len(), "no region twice");
    }

    /// The e2e harness's JS copy (`export const SEED_REGIONS = [...]`) lists the same regions in
    /// the same order.
    #[test]
    fn the_e2e_harness_mirrors_the_seed_regions() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/e2e/harness.mjs");
        let harness = std::fs::read_to_string(path).expect("the e2e harness is in the workspace");
        let list = harness
            .split_once("export const SEED_REGIONS = [")
            .and_then(|(_, rest)| rest.split_once("];"))
            .map(|(list, _)| list)
            .expect("harness.mjs exports SEED_REGIONS");
        let mirrored: Vec<&str> = list
            .split(',')
            .map(|item| item.trim().trim_matches('"'))
            .filter(|item| !item.is_empty())
            .collect();
        assert_eq!(mirrored, SEED_REGIONS);
    }

    #[test]
    fn every_seed_row_targets_a_region_with_known_coordinates() {
        for (key, region) in SEED_COUNTRY_MAP
            .iter()
            .chain(SEED_REGION_CODE_MAP)
            .chain(SEED_CONTINENT_MAP)
        {
            assert!(aws_region_location(region).is_some(), "{key} → {region}");
        }
    }

    #[test]
    fn seed_rows_for_unconfigured_regions_are_dropped() {
        let config = parse(&[(
            REGIONS,
            r#"{"us-east-1":{"origin_url":"https://a.test"},"eu-west-2":{"origin_url":"https://b.test"}}"#,
        )])
        .expect("valid");
        let name = |index: Option<&usize>| index.map(|&index| config.regions[index].name.as_str());
        assert_eq!(
            config.region_code_map.get("US-CA"),
            None,
            "us-west-2 not configured"
        );
        assert_eq!(name(config.region_code_map.get("US-TX")), Some("us-east-1"));
        assert_eq!(
            name(config.region_code_map.get("GB-ENG")),
            Some("eu-west-2")
        );
        assert_eq!(name(config.country_map.get("US")), Some("us-east-1"));
        assert_eq!(
            config.region_code_map.len(),
            8,
            "US-TX/FL/NY/VA, CA-ON/QC, GB-ENG, IE-L"
        );
    }

    #[test]
    fn operator_tables_replace_the_seed_and_are_normalised() {
        let config = parse(&[
            (REGIONS, &seed_regions_json()),
            (COUNTRY_MAP, r#"{"jp":"ap-northeast-1"}"#),
            (REGION_CODE_MAP, r#"{"us-ny":"us-west-2"}"#),
            (CONTINENT_MAP, "{}"),
            (DEFAULT_REGION, "eu-west-2"),
            (HEALTH_FALL, "4"),
            (HEALTH_RISE, "1"),
            (REPORT_THRESHOLD, "0"),
            (HEALTH_CACHE_MS, "0"),
        ])
        .expect("valid");
        let name = |index: usize| config.regions[index].name.as_str();
        assert_eq!(config.country_map.len(), 1);
        assert_eq!(name(config.country_map["JP"]), "ap-northeast-1");
        assert_eq!(name(config.region_code_map["US-NY"]), "us-west-2");
        assert!(config.continent_map.is_empty());
        assert_eq!(name(config.default_region), "eu-west-2");
        assert_eq!((config.health.fall, config.health.rise), (4, 1));
        assert_eq!(config.health.report_threshold, 0);
        assert_eq!(config.health_cache_ms, 0);
    }

    #[test]
    fn region_fields_are_read() {
        let config = parse(&[(
            REGIONS,
            r#"{"us-east-1":{"origin_url":"http://127.0.0.1:4000","bedrock_region":"us-west-2","weight":250,"enabled":false},
                "my-dc-1":{"origin_url":"https://dc.test/base","latitude":10.5,"longitude":-20.25}}"#,
        )])
        .expect("valid");
        let east = &config.regions[config.region_index("us-east-1").expect("configured")];
        assert_eq!(east.origin_url, "http://127.0.0.1:4000");
        assert_eq!(east.bedrock_region, "us-west-2");
        assert_eq!(east.weight, 250);
        assert!(!east.enabled);
        let custom = &config.regions[config.region_index("my-dc-1").expect("configured")];
        assert_eq!(
            custom.location,
            Coordinates::new(10.5, -20.25).expect("valid")
        );
        assert_eq!(custom.origin_url, "https://dc.test/base");
    }

    #[test]
    fn malformed_config_is_rejected_with_every_problem_listed() {
        let error = parse(&[
            (
                REGIONS,
                r#"{
                    "us-east-1": {"origin_url": "ftp://x.test"},
                    "US_WEST": {"origin_url": "https://x.test"},
                    "eu-west-2": {"origin_url": "https://x.test", "bedrock_region": "EU West", "weight": 0},
                    "eu-north-1": {"origin_url": "https://x.test", "latitude": 100, "longitude": 0},
                    "mars-1": {"origin_url": "https://x.test?a=b"},
                    "ap-south-1": {"origin": "https://x.test"},
                    "sa-east-1": {"origin_url": "https://sa.test", "latitude": -23.5},
                    "us-west-2": {"origin_url": "https://ok.test", "enabled": false}
                }"#,
            ),
            (COUNTRY_MAP, r#"{"USA":"us-east-1","JP":"ap-northeast-1"}"#),
            (REGION_CODE_MAP, "not json"),
            (CONTINENT_MAP, r#"{"XX":"us-east-1"}"#),
            (DEFAULT_REGION, "us-central-9"),
            (HEALTH_FALL, "0"),
            (HEALTH_RISE, "three"),
            (REPORT_THRESHOLD, "1"),
            (PROBE_TIMEOUT_MS, "99999999"),
        ])
        .expect_err("invalid");
        let s = |text: &str| text.to_owned();
        let geo = |name: &str, issue| ConfigProblem {
            name: s(name),
            value: None,
            issue: ConfigIssue::Invalid(issue),
        };
        let refused = |name: &str, value: &str, issue| ConfigProblem {
            name: s(name),
            value: Some(s(value)),
            issue,
        };
        let expected = vec![
            geo(REGIONS, GeoIssue::BadRegionName { name: s("US_WEST") }),
            geo(
                REGIONS,
                GeoIssue::BadRegionEntry {
                    region: s("ap-south-1"),
                    detail: s(
                        "unknown field `origin`, expected one of `origin_url`, `bedrock_region`, `weight`, `enabled`, `latitude`, `longitude`",
                    ),
                },
            ),
            geo(
                REGIONS,
                GeoIssue::BadCoordinates {
                    region: s("eu-north-1"),
                    latitude: Some(100.0),
                    longitude: Some(0.0),
                },
            ),
            geo(
                REGIONS,
                GeoIssue::BadBedrockRegion {
                    region: s("eu-west-2"),
                    value: s("EU West"),
                },
            ),
            geo(
                REGIONS,
                GeoIssue::BadWeight {
                    region: s("eu-west-2"),
                    weight: 0,
                },
            ),
            geo(
                REGIONS,
                GeoIssue::BadOriginUrl {
                    region: s("mars-1"),
                    url: s("https://x.test?a=b"),
                },
            ),
            geo(
                REGIONS,
                GeoIssue::NoCoordinates {
                    region: s("mars-1"),
                },
            ),
            geo(
                REGIONS,
                GeoIssue::BadCoordinates {
                    region: s("sa-east-1"),
                    latitude: Some(-23.5),
                    longitude: None,
                },
            ),
            geo(
                REGIONS,
                GeoIssue::BadOriginUrl {
                    region: s("us-east-1"),
                    url: s("ftp://x.test"),
                },
            ),
            geo(REGIONS, GeoIssue::NoEnabledRegion),
            geo(
                COUNTRY_MAP,
                GeoIssue::UnknownRegion {
                    key: s("JP"),
                    region: s("ap-northeast-1"),
                },
            ),
            geo(
                COUNTRY_MAP,
                GeoIssue::BadKey {
                    key: s("USA"),
                    expected: KeyKind::Country.expected(),
                },
            ),
            ConfigProblem {
                name: s(REGION_CODE_MAP),
                value: None,
                issue: ConfigIssue::NotJson(s("expected ident at line 1 column 2")),
            },
            geo(
                CONTINENT_MAP,
                GeoIssue::BadKey {
                    key: s("XX"),
                    expected: KeyKind::Continent.expected(),
                },
            ),
            geo(
                DEFAULT_REGION,
                GeoIssue::UnknownDefaultRegion {
                    region: s("us-central-9"),
                },
            ),
            refused(
                HEALTH_FALL,
                "0",
                ConfigIssue::OutOfRange { min: 1, max: 100 },
            ),
            refused(HEALTH_RISE, "three", ConfigIssue::NotANumber),
            refused(
                PROBE_TIMEOUT_MS,
                "99999999",
                ConfigIssue::OutOfRange {
                    min: 100,
                    max: 30_000,
                },
            ),
            geo(REPORT_THRESHOLD, GeoIssue::SingleReportThreshold),
        ];
        assert_eq!(error.problems, expected, "{error}");
    }

    #[test]
    fn missing_regions_is_one_problem_not_a_cascade() {
        let error = parse(&[]).expect_err("GEO_REGIONS is required");
        assert_eq!(
            error.problems,
            vec![ConfigProblem {
                name: REGIONS.into(),
                value: None,
                issue: ConfigIssue::Missing
            }]
        );
        assert_eq!(
            error.to_string(),
            "1 configuration problem(s): GEO_REGIONS is not set"
        );
        let error = parse(&[(REGIONS, "{}")]).expect_err("empty");
        assert_eq!(
            error.problems,
            vec![ConfigProblem {
                name: REGIONS.into(),
                value: None,
                issue: ConfigIssue::Invalid(GeoIssue::NoRegions)
            }]
        );
    }

    #[test]
    fn default_region_must_be_configured_even_when_left_to_the_seed() {
        let error = parse(&[(REGIONS, r#"{"eu-west-2":{"origin_url":"https://x.test"}}"#)])
            .expect_err("us-east-1 missing");
        assert_eq!(
            error.problems,
            vec![ConfigProblem {
                name: DEFAULT_REGION.into(),
                value: None,
                issue: ConfigIssue::Invalid(GeoIssue::UnknownDefaultRegion {
                    region: "us-east-1".into()
                })
            }]
        );
    }

    #[test]
    fn origin_urls() {
        for good in [
            "https://a.test",
            "http://127.0.0.1:4000",
            "https://a.test/base/path",
            "http://[::1]:4000",
        ] {
            assert!(is_origin_url(good), "{good}");
        }
        for bad in [
            "",
            "a.test",
            "https://",
            "https:///x",
            "https://u:p@a.test",
            "https://a.test/#x",
            "https://a b.test",
            "file:///etc",
        ] {
            assert!(!is_origin_url(bad), "{bad}");
        }
    }
}
