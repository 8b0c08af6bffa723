//! voice-router's configuration, parsed once from its vars and secrets with every problem
//! reported together (through [`crate::config::Reader`]).

use std::collections::BTreeSet;

use crate::auth::principal_cache::MAX_TTL_MS;
use crate::call_session::SessionLimits;
use crate::carrier::account::{AccountIssue, OutboundAccounts};
use crate::config::{ConfigError, ConfigIssue, Reader, is_http_url};
use crate::cors::CorsPolicy;
use crate::firewall::{FirewallConfig, IpNet, IpNetError};
use crate::signing::MIN_SECRET_LEN;

/// rate-limiter's settings voice-router reads too, when it sends checks straight to the objects.
mod rate_limit {
    pub use crate::rate_limit::config::{
        DEFAULT_LIMITER_TIMEOUT_MS, KEY_SECRET, LIMITER_TIMEOUT_MS, MAX_LIMITER_TIMEOUT_MS,
    };
    pub use crate::rate_limit::key::MIN_SECRET_LEN as MIN_KEY_SECRET_LEN;
}

pub use crate::signing::EDGE_SIGNING_SECRET;

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

/// Longest call time limit accepted: a day.
/// Total time a forwarded request may spend failing over to further regions, in ms
/// (`crate::failover`).
pub const ORIGIN_FAILOVER_DEADLINE_MS: &str = "ORIGIN_FAILOVER_DEADLINE_MS";
const MAX_CALL_LIMIT_SECS: u64 = 24 * 3600;
/// Var: how long an isolate remembers a verified principal, in seconds (0 = never; at most 30,
/// the default: `crate::auth::principal_cache`). The revocation delay of an API key.
pub const PRINCIPAL_CACHE_SECS: &str = "PRINCIPAL_CACHE_SECS";

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
    /// Carrier accounts outbound calls are placed through (`TWILIO_ACCOUNTS`,
    /// `TELNYX_ACCOUNTS` with their credential secrets; `crate::carrier::account`).
    pub outbound: OutboundAccounts,
    /// Total failover budget of one forwarded request, in ms (`ORIGIN_FAILOVER_DEADLINE_MS`).
    pub failover_budget_ms: u64,
    /// How long a verified principal is remembered (`PRINCIPAL_CACHE_SECS`), in ms.
    pub principal_cache_ttl_ms: u64,
    /// rate-limiter's key for naming `RateLimiter` objects (`RATE_LIMIT_KEY_SECRET`), needed
    /// when voice-router binds their namespace to send checks straight to them.
    pub rate_limit_key: Option<Vec<u8>>,
    /// Deadline of one check sent straight to a `RateLimiter` object (`LIMITER_TIMEOUT_MS`).
    pub limiter_timeout_ms: u64,
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
            .field("outbound_accounts", &self.outbound.len())
            .field("failover_budget_ms", &self.failover_budget_ms)
            .field("principal_cache_ttl_ms", &self.principal_cache_ttl_ms)
            .field(
                "rate_limit_key",
                &self.rate_limit_key.as_ref().map(|_| "<redacted>"),
            )
            .field("limiter_timeout_ms", &self.limiter_timeout_ms)
            .finish()
    }
}

/// What can be wrong with voice-router's own settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeIssue {
    /// An `API_COUNTRIES` entry that is not a country code.
    #[error("{0:?} is not an ISO 3166-1 alpha-2 code")]
    NotACountryCode(String),
    /// An `IP_ALLOW`/`IP_DENY` entry that is not a CIDR.
    #[error(transparent)]
    NotACidr(IpNetError),
    /// A `CORS_ORIGINS` entry that is not a browser origin.
    #[error("{0:?} is not scheme://host[:port] with no path")]
    NotAnOrigin(String),
    /// A carrier account entry that cannot be used.
    #[error(transparent)]
    Account(AccountIssue),
}

impl From<AccountIssue> for EdgeIssue {
    fn from(issue: AccountIssue) -> Self {
        EdgeIssue::Account(issue)
    }
}

/// Every problem in voice-router's configuration.
pub type EdgeConfigError = ConfigError<EdgeIssue>;

impl EdgeConfig {
    /// Parses from `lookup` (vars and secrets by name).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, EdgeConfigError> {
        let mut reader = Reader::new(&lookup);

        let origin_url = reader
            .required_url(ORIGIN_URL)
            .trim_end_matches('/')
            .to_owned();
        let public_base_url = reader
            .url(PUBLIC_BASE_URL)
            .map(|url| url.trim_end_matches('/').to_owned());

        let api_countries = match reader.text(API_COUNTRIES).as_deref() {
            None => FirewallConfig::seed().api_countries,
            Some("*") => None,
            Some(_) => Some(each(&mut reader, API_COUNTRIES, |code| {
                if code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
                    Ok(code.to_ascii_uppercase())
                } else {
                    Err(EdgeIssue::NotACountryCode(code.to_owned()))
                }
            })),
        };
        let nets = |reader: &mut Reader<'_, EdgeIssue>, name: &str| -> Vec<IpNet> {
            each(reader, name, |item| {
                item.parse().map_err(EdgeIssue::NotACidr)
            })
        };
        let ip_allow = nets(&mut reader, IP_ALLOW);
        let ip_deny = nets(&mut reader, IP_DENY);
        let min_bot_score = reader
            .optional_number(MIN_BOT_SCORE, 1..=99)
            .and_then(|score| u8::try_from(score).ok());

        let origins: BTreeSet<String> = each(&mut reader, CORS_ORIGINS, |origin| {
            if is_http_url(origin) && origin.matches('/').count() == 2 {
                Ok(origin.to_owned())
            } else {
                Err(EdgeIssue::NotAnOrigin(origin.to_owned()))
            }
        });
        let max_age_secs = reader.number(CORS_MAX_AGE_SECS, 1..=86_400, 600);

        let defaults = SessionLimits::default();
        let idle_secs = reader.number(
            CALL_IDLE_TIMEOUT_SECS,
            1..=MAX_CALL_LIMIT_SECS,
            defaults.idle_timeout_ms / 1000,
        );
        let max_secs = reader.number(
            CALL_MAX_DURATION_SECS,
            1..=MAX_CALL_LIMIT_SECS,
            defaults.max_duration_ms / 1000,
        );

        let signing_secret = reader
            .required_secret(EDGE_SIGNING_SECRET, MIN_SECRET_LEN)
            .expose()
            .to_vec();
        let outbound = OutboundAccounts::read(&mut reader);
        let failover_budget_ms = reader.number(
            ORIGIN_FAILOVER_DEADLINE_MS,
            100..=60_000,
            crate::failover::DEFAULT_BUDGET_MS,
        );
        let principal_cache_secs = reader.number(
            PRINCIPAL_CACHE_SECS,
            0..=MAX_TTL_MS / 1000,
            MAX_TTL_MS / 1000,
        );

        let rate_limit_key = reader
            .secret(rate_limit::KEY_SECRET, rate_limit::MIN_KEY_SECRET_LEN)
            .map(|secret| secret.expose().to_vec());
        let limiter_timeout_ms = reader.number(
            rate_limit::LIMITER_TIMEOUT_MS,
            1..=rate_limit::MAX_LIMITER_TIMEOUT_MS,
            rate_limit::DEFAULT_LIMITER_TIMEOUT_MS,
        );

        reader.finish()?;
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
                idle_timeout_ms: idle_secs * 1000,
                max_duration_ms: max_secs * 1000,
                ..defaults
            },
            signing_secret,
            outbound,
            failover_budget_ms,
            principal_cache_ttl_ms: principal_cache_secs * 1000,
            rate_limit_key,
            limiter_timeout_ms,
        })
    }
}

/// Each item of the list `name` through `parse`; a refused item is a problem of its own.
fn each<T, C: FromIterator<T>>(
    reader: &mut Reader<'_, EdgeIssue>,
    name: &str,
    parse: impl Fn(&str) -> Result<T, EdgeIssue>,
) -> C {
    let items = reader.list(name).unwrap_or_default();
    let mut parsed = Vec::with_capacity(items.len());
    for item in items {
        match parse(&item) {
            Ok(value) => parsed.push(value),
            Err(issue) => reader.problem(name, ConfigIssue::Invalid(issue)),
        }
    }
    parsed.into_iter().collect()
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
        assert_eq!(
            config.failover_budget_ms,
            crate::failover::DEFAULT_BUDGET_MS
        );
    }

    #[test]
    fn the_failover_deadline_is_read_within_its_range() {
        let with = |value: &str| {
            parse(&[
                (ORIGIN_URL, "http://o"),
                (EDGE_SIGNING_SECRET, SECRET),
                (ORIGIN_FAILOVER_DEADLINE_MS, value),
            ])
        };
        assert_eq!(with("800").expect("valid").failover_budget_ms, 800);
        for bad in ["0", "99", "60001", "soon"] {
            let error = with(bad).expect_err(bad);
            assert!(
                error.to_string().contains(ORIGIN_FAILOVER_DEADLINE_MS),
                "{bad}: {error}"
            );
        }
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
            (PRINCIPAL_CACHE_SECS, "5"),
            (EDGE_SIGNING_SECRET, SECRET),
        ])
        .expect("valid");
        assert_eq!(config.principal_cache_ttl_ms, 5_000);
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
        assert_eq!(
            config.principal_cache_ttl_ms, 30_000,
            "the default is the longest"
        );
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
            (EDGE_SIGNING_SECRET, "hunter2"),
            (PRINCIPAL_CACHE_SECS, "31"),
        ])
        .expect_err("many problems");
        assert_eq!(error.problems.len(), 8, "{error}");
        let names: Vec<&str> = error.problems.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                ORIGIN_URL,
                API_COUNTRIES,
                IP_DENY,
                MIN_BOT_SCORE,
                CORS_ORIGINS,
                CALL_IDLE_TIMEOUT_SECS,
                EDGE_SIGNING_SECRET,
                PRINCIPAL_CACHE_SECS
            ]
        );
        assert_eq!(
            error.problems[6].issue,
            ConfigIssue::TooShort {
                min: MIN_SECRET_LEN
            }
        );
        assert!(
            !format!("{error}").contains("hunter2"),
            "the secret's value is never echoed"
        );
    }

    #[test]
    fn missing_required_values_are_named() {
        let error = parse(&[]).expect_err("missing");
        let missing: Vec<(&str, &ConfigIssue<EdgeIssue>)> = error
            .problems
            .iter()
            .map(|p| (p.name.as_str(), &p.issue))
            .collect();
        assert_eq!(
            missing,
            [
                (ORIGIN_URL, &ConfigIssue::Missing),
                (EDGE_SIGNING_SECRET, &ConfigIssue::Missing)
            ]
        );
    }

    #[test]
    fn the_secret_is_read_without_its_surrounding_whitespace() {
        let stored = format!("{SECRET}\n");
        let config =
            parse(&[(ORIGIN_URL, "http://o"), (EDGE_SIGNING_SECRET, &stored)]).expect("valid");
        assert_eq!(config.signing_secret, SECRET.as_bytes());
    }

    #[test]
    fn outbound_accounts_are_read_with_their_credentials_never_shown() {
        let sid = "AC0123456789abcdef0123456789abcdef";
        let accounts = format!(r#"{{"{sid}":{{"tenant_id":"t1"}}}}"#);
        let token = format!("TWILIO_AUTH_TOKEN_{sid}");
        let config = parse(&[
            (ORIGIN_URL, "http://o"),
            (EDGE_SIGNING_SECRET, SECRET),
            ("TWILIO_ACCOUNTS", &accounts),
            (&token, "the-auth-token"),
        ])
        .expect("valid");
        assert_eq!(config.outbound.len(), 1);
        assert!(config.outbound.for_call("t1", "+14155550100").is_some());
        assert!(!format!("{config:?}").contains("the-auth-token"));
        let broken = parse(&[
            (ORIGIN_URL, "http://o"),
            (EDGE_SIGNING_SECRET, SECRET),
            ("TWILIO_ACCOUNTS", r#"{"ACx":{"tenant_id":"t1"}}"#),
        ])
        .expect_err("bad sid");
        assert_eq!(broken.problems[0].name, "TWILIO_ACCOUNTS");
    }

    #[test]
    fn the_rate_limit_key_is_optional_but_never_short_and_never_shown() {
        let base = [(ORIGIN_URL, "http://o"), (EDGE_SIGNING_SECRET, SECRET)];
        let config = parse(&base).expect("valid without it");
        assert_eq!(config.rate_limit_key, None);
        assert_eq!(
            config.limiter_timeout_ms,
            rate_limit::DEFAULT_LIMITER_TIMEOUT_MS
        );
        let key = "rate-limit-key-of-the-deployment-0001";
        let config = parse(&[
            base[0],
            base[1],
            (rate_limit::KEY_SECRET, key),
            (rate_limit::LIMITER_TIMEOUT_MS, "300"),
        ])
        .expect("valid with it");
        assert_eq!(config.rate_limit_key.as_deref(), Some(key.as_bytes()));
        assert_eq!(config.limiter_timeout_ms, 300);
        assert!(!format!("{config:?}").contains(key));
        let short =
            parse(&[base[0], base[1], (rate_limit::KEY_SECRET, "short")]).expect_err("too short");
        assert_eq!(short.problems[0].name, rate_limit::KEY_SECRET);
        assert!(!short.to_string().contains("short\""), "{short}");
        for bad in ["0", "30001", "soon"] {
            let error =
                parse(&[base[0], base[1], (rate_limit::LIMITER_TIMEOUT_MS, bad)]).expect_err(bad);
            assert_eq!(error.problems[0].name, rate_limit::LIMITER_TIMEOUT_MS);
        }
    }

    #[test]
    fn debug_output_redacts_the_secret() {
        let config =
            parse(&[(ORIGIN_URL, "http://o"), (EDGE_SIGNING_SECRET, SECRET)]).expect("valid");
        assert!(!format!("{config:?}").contains(SECRET));
    }
}
