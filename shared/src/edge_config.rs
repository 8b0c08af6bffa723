//! voice-router's configuration, parsed once from its vars and secrets with every problem
//! reported together.

use std::collections::BTreeSet;

use crate::call_session::SessionLimits;
use crate::cors::CorsPolicy;
use crate::firewall::{FirewallConfig, IpNet};

/// Var: fallback origin base URL when geo-router cannot answer.
pub const ORIGIN_URL: &str = "ORIGIN_URL";
/// Var: the public base URL the carrier and clients use (`https://voice.example.com`); when
/// unset, the request's own URL is used.
pub const PUBLIC_BASE_URL: &str = "PUBLIC_BASE_URL";
/// Var: comma-separated ISO countries allowed on the API, or `*` for all.
pub const API_COUNTRIES: &str = "API_COUNTRIES";
/// Var: comma-separated CIDRs that skip the country and bot stages.
pub const IP_ALLOW: &str = "IP_ALLOW";
/// Var: comma-separated CIDRs refused outright.
pub const IP_DENY: &str = "IP_DENY";
/// Var: refuse requests whose bot score is below this (1–99).
pub const MIN_BOT_SCORE: &str = "MIN_BOT_SCORE";
/// Var: comma-separated browser origins allowed to call the API.
pub const CORS_ORIGINS: &str = "CORS_ORIGINS";
/// Var: seconds a browser may cache a preflight.
pub const CORS_MAX_AGE_SECS: &str = "CORS_MAX_AGE_SECS";
/// Var: seconds without activity before a call is ended.
pub const CALL_IDLE_TIMEOUT_SECS: &str = "CALL_IDLE_TIMEOUT_SECS";
/// Var: longest a call may last, in seconds.
pub const CALL_MAX_DURATION_SECS: &str = "CALL_MAX_DURATION_SECS";
/// Secret: HMAC key shared with the origin for `X-Edge-Signature`.
pub const EDGE_SIGNING_SECRET: &str = "EDGE_SIGNING_SECRET";

/// Shortest signing secret accepted: 32 bytes, the HMAC-SHA256 block-size guidance.
pub const MIN_SECRET_LEN: usize = 32;

/// Everything voice-router reads from its environment.
#[derive(Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// Fallback origin, used when geo-router cannot answer.
    pub origin_url: String,
    /// Public base URL, without a trailing slash.
    pub public_base_url: Option<String>,
    /// The firewall stage.
    pub firewall: FirewallConfig,
    /// Browser origins.
    pub cors: CorsPolicy,
    /// Call time limits.
    pub session_limits: SessionLimits,
    /// Edge ↔ origin signing key.
    pub signing_secret: Vec<u8>,
}

impl std::fmt::Debug for EdgeConfig {
    // By hand, so the secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeConfig")
            .field("origin_url", &self.origin_url)
            .field("public_base_url", &self.public_base_url)
            .field("firewall", &self.firewall)
            .field("cors", &self.cors)
            .field("session_limits", &self.session_limits)
            .field("signing_secret", &"<redacted>")
            .finish()
    }
}

/// Every problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("voice-router configuration: {}", problems.join("; "))]
pub struct EdgeConfigError {
    /// One sentence per problem, naming the variable.
    pub problems: Vec<String>,
}

impl EdgeConfig {
    /// Parses from `lookup` (vars and secrets by name).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, EdgeConfigError> {
        let mut problems = Vec::new();
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let origin_url = match get(ORIGIN_URL) {
            Some(url) if is_http_url(&url) => url.trim_end_matches('/').to_owned(),
            Some(url) => {
                problems.push(format!("{ORIGIN_URL}={url:?} must be an http(s) URL"));
                String::new()
            }
            None => {
                problems.push(format!("{ORIGIN_URL} is required"));
                String::new()
            }
        };
        let public_base_url = match get(PUBLIC_BASE_URL) {
            Some(url) if is_http_url(&url) => Some(url.trim_end_matches('/').to_owned()),
            Some(url) => {
                problems.push(format!("{PUBLIC_BASE_URL}={url:?} must be an http(s) URL"));
                None
            }
            None => None,
        };

        let api_countries = match get(API_COUNTRIES).as_deref() {
            None => FirewallConfig::seed().api_countries,
            Some("*") => None,
            Some(list) => {
                let mut countries = BTreeSet::new();
                for code in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                    if code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
                        countries.insert(code.to_ascii_uppercase());
                    } else {
                        problems.push(format!(
                            "{API_COUNTRIES}: {code:?} is not an ISO 3166-1 alpha-2 code"
                        ));
                    }
                }
                Some(countries)
            }
        };
        let ip_allow = parse_nets(IP_ALLOW, get(IP_ALLOW), &mut problems);
        let ip_deny = parse_nets(IP_DENY, get(IP_DENY), &mut problems);
        let min_bot_score = get(MIN_BOT_SCORE).and_then(|text| match text.parse::<u8>() {
            Ok(score) if (1..=99).contains(&score) => Some(score),
            _ => {
                problems.push(format!(
                    "{MIN_BOT_SCORE}={text:?} must be a whole number from 1 to 99"
                ));
                None
            }
        });

        let mut origins = BTreeSet::new();
        for origin in get(CORS_ORIGINS)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            if is_http_url(origin) && origin.matches('/').count() == 2 {
                origins.insert(origin.to_owned());
            } else {
                problems.push(format!(
                    "{CORS_ORIGINS}: {origin:?} must be scheme://host[:port] with no path"
                ));
            }
        }
        let max_age_secs = seconds(
            CORS_MAX_AGE_SECS,
            get(CORS_MAX_AGE_SECS),
            600,
            86_400,
            &mut problems,
        );

        let defaults = SessionLimits::default();
        let idle = seconds(
            CALL_IDLE_TIMEOUT_SECS,
            get(CALL_IDLE_TIMEOUT_SECS),
            defaults.idle_timeout_ms / 1000,
            24 * 3600,
            &mut problems,
        );
        let max = seconds(
            CALL_MAX_DURATION_SECS,
            get(CALL_MAX_DURATION_SECS),
            defaults.max_duration_ms / 1000,
            24 * 3600,
            &mut problems,
        );

        let signing_secret = match lookup(EDGE_SIGNING_SECRET) {
            Some(secret) if secret.len() >= MIN_SECRET_LEN => secret.into_bytes(),
            Some(_) => {
                problems.push(format!(
                    "{EDGE_SIGNING_SECRET} must be at least {MIN_SECRET_LEN} bytes"
                ));
                Vec::new()
            }
            None => {
                problems.push(format!(
                    "{EDGE_SIGNING_SECRET} is required (wrangler secret put {EDGE_SIGNING_SECRET})"
                ));
                Vec::new()
            }
        };

        if !problems.is_empty() {
            return Err(EdgeConfigError { problems });
        }
        Ok(Self {
            origin_url,
            public_base_url,
            firewall: FirewallConfig {
                api_countries,
                ip_allow,
                ip_deny,
                min_bot_score,
            },
            cors: CorsPolicy {
                origins,
                max_age_secs: u32::try_from(max_age_secs).unwrap_or(u32::MAX),
            },
            session_limits: SessionLimits {
                idle_timeout_ms: idle * 1000,
                max_duration_ms: max * 1000,
                ..defaults
            },
            signing_secret,
        })
    }
}

fn is_http_url(text: &str) -> bool {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"));
    rest.is_some_and(|host| {
        !host.is_empty() && !host.starts_with('/') && !host.contains(char::is_whitespace)
    })
}

fn parse_nets(name: &str, value: Option<String>, problems: &mut Vec<String>) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for item in value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        match item.parse() {
            Ok(net) => nets.push(net),
            Err(error) => problems.push(format!("{name}: {error}")),
        }
    }
    nets
}

fn seconds(
    name: &str,
    value: Option<String>,
    default: u64,
    max: u64,
    problems: &mut Vec<String>,
) -> u64 {
    match value {
        None => default,
        Some(text) => match text.parse::<u64>() {
            Ok(secs) if (1..=max).contains(&secs) => secs,
            _ => {
                problems.push(format!(
                    "{name}={text:?} must be whole seconds from 1 to {max}"
                ));
                default
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse(pairs: &[(&str, &str)]) -> Result<EdgeConfig, EdgeConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        EdgeConfig::from_lookup(|k| map.get(k).map(|v| (*v).to_owned()))
    }

    #[test]
    fn minimal_configuration_takes_the_seed_defaults() {
        let config = parse(&[
            (ORIGIN_URL, "http://127.0.0.1:4000/"),
            (EDGE_SIGNING_SECRET, SECRET),
        ])
        .expect("valid");
        assert_eq!(config.origin_url, "http://127.0.0.1:4000");
        assert_eq!(config.firewall, FirewallConfig::seed());
        assert!(config.cors.origins.is_empty());
        assert_eq!(config.session_limits, SessionLimits::default());
        assert_eq!(config.public_base_url, None);
    }

    #[test]
    fn every_value_is_read() {
        let config = parse(&[
            (ORIGIN_URL, "https://origin.example.com"),
            (PUBLIC_BASE_URL, "https://voice.example.com/"),
            (API_COUNTRIES, "us, gb"),
            (IP_ALLOW, "198.51.100.0/24, 2001:db8::/32"),
            (IP_DENY, "203.0.113.9"),
            (MIN_BOT_SCORE, "30"),
            (
                CORS_ORIGINS,
                "https://app.example.com,http://localhost:3000",
            ),
            (CORS_MAX_AGE_SECS, "60"),
            (CALL_IDLE_TIMEOUT_SECS, "30"),
            (CALL_MAX_DURATION_SECS, "600"),
            (EDGE_SIGNING_SECRET, SECRET),
        ])
        .expect("valid");
        assert_eq!(
            config.public_base_url.as_deref(),
            Some("https://voice.example.com")
        );
        assert_eq!(
            config.firewall.api_countries,
            Some(["GB".to_owned(), "US".to_owned()].into())
        );
        assert_eq!(config.firewall.ip_allow.len(), 2);
        assert_eq!(config.firewall.ip_deny.len(), 1);
        assert_eq!(config.firewall.min_bot_score, Some(30));
        assert_eq!(config.cors.origins.len(), 2);
        assert_eq!(config.cors.max_age_secs, 60);
        assert_eq!(config.session_limits.idle_timeout_ms, 30_000);
        assert_eq!(config.session_limits.max_duration_ms, 600_000);
    }

    #[test]
    fn star_opens_the_api_to_every_country() {
        let config = parse(&[
            (ORIGIN_URL, "http://o"),
            (API_COUNTRIES, "*"),
            (EDGE_SIGNING_SECRET, SECRET),
        ])
        .expect("valid");
        assert_eq!(config.firewall.api_countries, None);
    }

    #[test]
    fn every_problem_is_reported_together() {
        let error = parse(&[
            (ORIGIN_URL, "ftp://x"),
            (API_COUNTRIES, "USA"),
            (IP_DENY, "10.0.0.1/8"),
            (MIN_BOT_SCORE, "100"),
            (CORS_ORIGINS, "https://app.example.com/path"),
            (CALL_IDLE_TIMEOUT_SECS, "0"),
            (EDGE_SIGNING_SECRET, "short"),
        ])
        .expect_err("many problems");
        assert_eq!(error.problems.len(), 7, "{error}");
        assert!(
            !format!("{error}").contains("short"),
            "the secret's value is never echoed"
        );
    }

    #[test]
    fn missing_required_values_are_named() {
        let error = parse(&[]).expect_err("missing");
        assert_eq!(error.problems.len(), 2);
        assert!(error.problems.iter().any(|p| p.contains(ORIGIN_URL)));
        assert!(
            error
                .problems
                .iter()
                .any(|p| p.contains(EDGE_SIGNING_SECRET))
        );
    }

    #[test]
    fn debug_output_redacts_the_secret() {
        let config =
            parse(&[(ORIGIN_URL, "http://o"), (EDGE_SIGNING_SECRET, SECRET)]).expect("valid");
        assert!(!format!("{config:?}").contains(SECRET));
    }
}
