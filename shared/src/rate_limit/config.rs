//! rate-limiter's configuration: parsed once from a lookup through [`crate::config::Reader`],
//! every problem reported together.

use std::fmt;

use super::key::MIN_SECRET_LEN;
use crate::config::Reader;

/// Secret: keys the HMAC that names Durable Object instances (see [`super::key`]).
pub const KEY_SECRET: &str = "RATE_LIMIT_KEY_SECRET";
/// Var: how long an isolate reuses a KV policy document, in ms (0: read KV every time).
pub const POLICY_CACHE_TTL_MS: &str = "POLICY_CACHE_TTL_MS";
/// Var: how long to wait for a `RateLimiter` object before deciding degraded, in ms.
pub const LIMITER_TIMEOUT_MS: &str = "LIMITER_TIMEOUT_MS";

/// A policy change reaches every isolate within a minute.
pub const DEFAULT_POLICY_CACHE_TTL_MS: u64 = 60_000;
const MAX_POLICY_CACHE_TTL_MS: u64 = 3_600_000;
/// An object normally answers in milliseconds; a second means it is in trouble, and the caller
/// (a phone call being set up) should not wait longer for a rate limit.
pub const DEFAULT_LIMITER_TIMEOUT_MS: u64 = 1_000;
/// The longest `LIMITER_TIMEOUT_MS` accepted.
pub const MAX_LIMITER_TIMEOUT_MS: u64 = 30_000;

/// Everything rate-limiter reads from its vars and secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// The HMAC key for instance names.
    pub key_secret: Vec<u8>,
    /// Isolate cache lifetime of KV policy documents.
    pub policy_cache_ttl_ms: u64,
    /// Deadline of one call to a `RateLimiter` object.
    pub limiter_timeout_ms: u64,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("key_secret", &"<redacted>")
            .field("policy_cache_ttl_ms", &self.policy_cache_ttl_ms)
            .field("limiter_timeout_ms", &self.limiter_timeout_ms)
            .finish()
    }
}

/// Every problem found in the configuration, so an operator fixes them in one go.
pub type ConfigError = crate::config::ConfigError;

impl Config {
    /// Parses the configuration from `lookup` (a Worker passes its vars and secrets).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(&lookup);
        let key_secret = reader
            .required_secret(KEY_SECRET, MIN_SECRET_LEN)
            .expose()
            .to_vec();
        let policy_cache_ttl_ms = reader.number(
            POLICY_CACHE_TTL_MS,
            0..=MAX_POLICY_CACHE_TTL_MS,
            DEFAULT_POLICY_CACHE_TTL_MS,
        );
        let limiter_timeout_ms = reader.number(
            LIMITER_TIMEOUT_MS,
            1..=MAX_LIMITER_TIMEOUT_MS,
            DEFAULT_LIMITER_TIMEOUT_MS,
        );
        reader.finish()?;
        Ok(Self {
            key_secret,
            policy_cache_ttl_ms,
            limiter_timeout_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|key| map.get(key).cloned())
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn only_the_secret_is_required() {
        let config = parse(&[(KEY_SECRET, SECRET)]).expect("valid");
        assert_eq!(config.key_secret, SECRET.as_bytes());
        assert_eq!(config.policy_cache_ttl_ms, DEFAULT_POLICY_CACHE_TTL_MS);
        assert_eq!(config.limiter_timeout_ms, DEFAULT_LIMITER_TIMEOUT_MS);
        assert!(
            !format!("{config:?}").contains(SECRET),
            "the secret is not logged"
        );
    }

    #[test]
    fn values_are_read() {
        let config = parse(&[
            (KEY_SECRET, SECRET),
            (POLICY_CACHE_TTL_MS, "0"),
            (LIMITER_TIMEOUT_MS, " 250 "),
        ])
        .expect("valid");
        assert_eq!(config.policy_cache_ttl_ms, 0);
        assert_eq!(config.limiter_timeout_ms, 250);
    }

    #[test]
    fn every_problem_is_reported_together() {
        let error = parse(&[(POLICY_CACHE_TTL_MS, "a minute"), (LIMITER_TIMEOUT_MS, "0")])
            .expect_err("three problems");
        assert_eq!(error.problems.len(), 3, "{error}");
        let text = error.to_string();
        for name in [KEY_SECRET, POLICY_CACHE_TTL_MS, LIMITER_TIMEOUT_MS] {
            assert!(text.contains(name), "{name} missing from: {text}");
        }
        assert!(
            text.contains("RATE_LIMIT_KEY_SECRET is not set"),
            "the log says what to fix: {text}"
        );
        let short = parse(&[(KEY_SECRET, "short")]).expect_err("too short");
        assert_eq!(short.problems[0].name, KEY_SECRET);
        assert_eq!(
            short.problems[0].issue,
            crate::config::ConfigIssue::TooShort { min: 16 },
            "{short}"
        );
    }
}
