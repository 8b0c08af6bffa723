//! auth-validator's configuration, parsed once from a lookup (wrangler vars and secrets) with
//! every problem reported together. Secret values never appear in a problem.
//!
//! Each credential kind is enabled by configuring it: JWTs by any key source (`JWKS_URL`,
//! `JWKS_INLINE`, `JWT_HS256_SECRET`), session tokens by `SESSION_TOKEN_SECRET`, Twilio by
//! `TWILIO_ACCOUNTS`, Telnyx by `TELNYX_ACCOUNTS` (the shape of both: `crate::carrier::account`).
//! API keys need only the KV namespace.

use crate::carrier::CarrierKind;
use crate::carrier::account::{self, AccountEntry, AccountIssue};
use crate::config;
use crate::jwks::{self, CachePolicy, Jwk, JwkError, JwksError, KeySet, KeySource};
use crate::jwt::JwtPolicy;
use crate::secret::Secret;
use crate::signature::Algorithm;
use crate::telnyx::{self, TelnyxAccount};
use crate::twilio::{self, TwilioAccount};

/// Var: the one accepted JWT `iss` (required when JWTs are enabled).
pub const JWT_ISSUER: &str = "JWT_ISSUER";
/// Var: accepted JWT `aud` values, comma-separated (required when JWTs are enabled).
pub const JWT_AUDIENCE: &str = "JWT_AUDIENCE";
/// Var: enabled algorithms, comma-separated (default `RS256,ES256,HS256`).
pub const JWT_ALGORITHMS: &str = "JWT_ALGORITHMS";
/// Var: clock skew tolerated on `exp`/`nbf`/`iat`, seconds (default 60).
pub const JWT_LEEWAY_S: &str = "JWT_LEEWAY_S";
/// Var: claim holding the tenant id (default `tenant_id`).
pub const JWT_TENANT_CLAIM: &str = "JWT_TENANT_CLAIM";
/// Var: tenant of tokens without the tenant claim (default: none, such tokens are refused).
pub const JWT_DEFAULT_TENANT: &str = "JWT_DEFAULT_TENANT";
/// Var: plan of tokens without a `plan` claim (default `free`).
pub const JWT_DEFAULT_PLAN: &str = "JWT_DEFAULT_PLAN";
/// Var: the JWKS URL, e.g. `https://<team>.cloudflareaccess.com/cdn-cgi/access/certs`.
pub const JWKS_URL: &str = "JWKS_URL";
/// Var: a JWKS document held in configuration (public keys, or `oct` keys).
pub const JWKS_INLINE: &str = "JWKS_INLINE";
/// Var: how long a fetched JWKS is fresh, seconds (default 600).
pub const JWKS_CACHE_TTL_S: &str = "JWKS_CACHE_TTL_S";
/// Var: least time between two JWKS fetches, seconds (default 30).
pub const JWKS_REFETCH_MIN_INTERVAL_S: &str = "JWKS_REFETCH_MIN_INTERVAL_S";
/// Secret: the HS256 shared secret (at least 32 bytes).
pub const JWT_HS256_SECRET: &str = "JWT_HS256_SECRET";
/// Var: the `kid` of the HS256 secret (optional).
pub const JWT_HS256_KID: &str = "JWT_HS256_KID";
/// Secret: the session token key (at least 32 bytes).
pub const SESSION_TOKEN_SECRET: &str = "SESSION_TOKEN_SECRET";
/// Secret: the previous session token key, accepted during a rotation.
pub const SESSION_TOKEN_SECRET_PREVIOUS: &str = "SESSION_TOKEN_SECRET_PREVIOUS";
/// Var: default session token lifetime, seconds (default 120).
pub const SESSION_TOKEN_TTL_S: &str = "SESSION_TOKEN_TTL_S";
/// Var: longest session token lifetime a caller may ask for, seconds (default 900).
pub const SESSION_TOKEN_MAX_TTL_S: &str = "SESSION_TOKEN_MAX_TTL_S";
/// Var: JSON object of accepted Telnyx accounts, each with its `public_key`.
pub use crate::carrier::account::TELNYX_ACCOUNTS;
/// Var: JSON object of accepted Twilio accounts:
/// `{"AC…":{"tenant_id":"t1","plan":"pro","scopes":["voice:carrier"]}}`.
pub use crate::carrier::account::TWILIO_ACCOUNTS;
/// Secret name prefix: `TWILIO_AUTH_TOKEN_<AccountSid>` holds each account's auth token.
pub use crate::carrier::account::TWILIO_AUTH_TOKEN_PREFIX;

/// Everything auth-validator needs to decide, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// JWT verification, when any key source is configured.
    pub jwt: Option<JwtConfig>,
    /// Session tokens, when a key is configured.
    pub session_tokens: Option<SessionTokenConfig>,
    /// Accepted Twilio accounts (none: Twilio signatures are not enabled).
    pub twilio_accounts: Vec<TwilioAccount>,
    /// Accepted Telnyx accounts (none: Telnyx signatures are not enabled).
    pub telnyx_accounts: Vec<TelnyxAccount>,
}

/// JWT verification settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// Claims and algorithm policy.
    pub policy: JwtPolicy,
    /// Keys from configuration (`JWKS_INLINE`, `JWT_HS256_SECRET`).
    pub static_keys: KeySet,
    /// The JWKS URL, if keys are fetched.
    pub jwks_url: Option<String>,
    /// Freshness and fetch throttling of the fetched set.
    pub cache: CachePolicy,
}

/// Session token settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTokenConfig {
    /// Current key first, then the previous one (if rotating).
    pub keys: Vec<Secret>,
    /// Lifetime when the caller names none.
    pub default_ttl_s: u64,
    /// Longest lifetime granted.
    pub max_ttl_s: u64,
}

impl SessionTokenConfig {
    /// The lifetime granted for a request: the default when absent, within `1..=max`.
    pub fn ttl_s(&self, requested: Option<u64>) -> u64 {
        requested
            .unwrap_or(self.default_ttl_s)
            .clamp(1, self.max_ttl_s)
    }

    /// The key new tokens are signed with.
    pub fn signing_key(&self) -> Option<&Secret> {
        self.keys.first()
    }
}

/// What can be wrong with auth-validator's own settings. Never carries a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthIssue {
    /// Names an algorithm that is not HS256, RS256 or ES256.
    #[error("unknown algorithm `{0}` (HS256, RS256, ES256 are supported)")]
    UnknownAlgorithm(String),
    /// A key set document that cannot be used.
    #[error("{0}")]
    InvalidKeySet(JwksError),
    /// One key of a configured set cannot be used.
    #[error("key {kid:?} is unusable: {reason}")]
    InvalidKey {
        /// The key's id.
        kid: Option<String>,
        /// Why.
        reason: JwkError,
    },
    /// A carrier account entry that cannot be used.
    #[error(transparent)]
    Account(AccountIssue),
}

impl From<AccountIssue> for AuthIssue {
    fn from(issue: AccountIssue) -> Self {
        AuthIssue::Account(issue)
    }
}

/// One thing wrong with one setting.
pub type ConfigProblem = config::ConfigProblem<AuthIssue>;
/// What is wrong with a setting.
pub type ConfigIssue = config::ConfigIssue<AuthIssue>;
/// Every problem found in the configuration.
pub type ConfigError = config::ConfigError<AuthIssue>;

type Reader<'a> = config::Reader<'a, AuthIssue>;

impl AuthConfig {
    /// Parses the configuration; `lookup` returns a var's or secret's value by name.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(&lookup);
        let jwt = jwt_config(&mut reader);
        let session_tokens = session_config(&mut reader);
        let twilio_accounts = twilio_accounts(&mut reader);
        let telnyx_accounts = telnyx_accounts(&mut reader);
        reader.finish()?;
        Ok(AuthConfig {
            jwt,
            session_tokens,
            twilio_accounts,
            telnyx_accounts,
        })
    }
}

fn jwt_config(reader: &mut Reader<'_>) -> Option<JwtConfig> {
    let hs256_secret = reader.secret(JWT_HS256_SECRET, jwks::MIN_HMAC_SECRET_BYTES);
    if ![JWKS_URL, JWKS_INLINE, JWT_HS256_SECRET]
        .iter()
        .any(|name| reader.is_set(name))
    {
        return None;
    }
    const NEEDED_BY: &str = "JWT verification";
    let jwks_url = reader.https_url(JWKS_URL);
    let inline = reader.text(JWKS_INLINE);

    let mut static_keys: Vec<Jwk> = Vec::new();
    if let Some(document) = &inline {
        match jwks::parse_jwks(document, KeySource::Configured) {
            Ok(parsed) => {
                for skipped in parsed.skipped {
                    reader.problem(
                        JWKS_INLINE,
                        ConfigIssue::Invalid(AuthIssue::InvalidKey {
                            kid: skipped.kid,
                            reason: skipped.reason,
                        }),
                    );
                }
                static_keys.extend(parsed.keys.iter().cloned());
            }
            Err(error) => reader.problem(
                JWKS_INLINE,
                ConfigIssue::Invalid(AuthIssue::InvalidKeySet(error)),
            ),
        }
    }
    if let Some(secret) = hs256_secret {
        match Jwk::hmac(reader.text(JWT_HS256_KID), secret) {
            Ok(key) => static_keys.push(key),
            Err(_) => reader.problem(
                JWT_HS256_SECRET,
                ConfigIssue::TooShort {
                    min: jwks::MIN_HMAC_SECRET_BYTES,
                },
            ),
        }
    }

    let issuer = reader.required_for(JWT_ISSUER, NEEDED_BY);
    let audiences = reader.list(JWT_AUDIENCE).unwrap_or_else(|| {
        reader.problem(JWT_AUDIENCE, ConfigIssue::NeededBy(NEEDED_BY));
        Vec::new()
    });
    let algorithms = match reader.list(JWT_ALGORITHMS) {
        None => Algorithm::ALL.to_vec(),
        Some(names) => {
            let mut algorithms = Vec::new();
            for name in names {
                match Algorithm::from_name(&name) {
                    Some(alg) => algorithms.push(alg),
                    None => reader.problem(
                        JWT_ALGORITHMS,
                        ConfigIssue::Invalid(AuthIssue::UnknownAlgorithm(name)),
                    ),
                }
            }
            algorithms
        }
    };
    let leeway_s = reader.number(JWT_LEEWAY_S, 0..=600, 60);
    let ttl = reader.seconds(JWKS_CACHE_TTL_S, 60..=86_400, 600);
    let min_refetch = reader.seconds(JWKS_REFETCH_MIN_INTERVAL_S, 0..=3_600, 30);
    let policy = JwtPolicy {
        algorithms,
        issuer,
        audiences,
        leeway_s,
        tenant_claim: reader
            .text(JWT_TENANT_CLAIM)
            .unwrap_or_else(|| "tenant_id".into()),
        default_tenant: reader.text(JWT_DEFAULT_TENANT),
        default_plan: reader
            .text(JWT_DEFAULT_PLAN)
            .unwrap_or_else(|| "free".into()),
    };
    Some(JwtConfig {
        policy,
        static_keys: KeySet::from_keys(static_keys),
        jwks_url,
        cache: CachePolicy {
            ttl_ms: millis_of(ttl),
            min_refetch_interval_ms: millis_of(min_refetch),
        },
    })
}

/// Whole milliseconds of a duration read from whole seconds (so it fits).
fn millis_of(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn session_config(reader: &mut Reader<'_>) -> Option<SessionTokenConfig> {
    let current = reader.secret(SESSION_TOKEN_SECRET, jwks::MIN_HMAC_SECRET_BYTES);
    let previous = reader.secret(SESSION_TOKEN_SECRET_PREVIOUS, jwks::MIN_HMAC_SECRET_BYTES);
    let default_ttl_s = reader.number(SESSION_TOKEN_TTL_S, 1..=3_600, 120);
    let max_ttl_s = reader.number(SESSION_TOKEN_MAX_TTL_S, 1..=86_400, 900);
    if default_ttl_s > max_ttl_s {
        reader.problem(
            SESSION_TOKEN_TTL_S,
            ConfigIssue::LargerThan(SESSION_TOKEN_MAX_TTL_S),
        );
    }
    let current = current?;
    Some(SessionTokenConfig {
        keys: std::iter::once(current).chain(previous).collect(),
        default_ttl_s,
        max_ttl_s,
    })
}

/// The plan and scopes of a carrier principal, from its account entry.
fn plan_and_scopes(entry: &AccountEntry) -> (String, Vec<String>) {
    let plan = entry.plan.clone().unwrap_or_else(|| "free".into());
    let scopes = entry.scopes.clone().unwrap_or_else(|| {
        twilio::DEFAULT_SCOPES
            .iter()
            .map(|scope| (*scope).to_owned())
            .collect()
    });
    (plan, scopes)
}

fn twilio_accounts(reader: &mut Reader<'_>) -> Vec<TwilioAccount> {
    let mut accounts = Vec::new();
    for (sid, entry) in account::entries(reader, CarrierKind::Twilio) {
        let token_name = CarrierKind::Twilio.credential_secret(&sid);
        let Some(auth_token) = reader.secret(&token_name, 1) else {
            reader.problem(
                &token_name,
                ConfigIssue::NeededBy("its account in TWILIO_ACCOUNTS"),
            );
            continue;
        };
        let (plan, scopes) = plan_and_scopes(&entry);
        accounts.push(TwilioAccount {
            account_sid: sid,
            auth_token,
            tenant_id: entry.tenant_id,
            plan,
            scopes,
        });
    }
    accounts
}

fn telnyx_accounts(reader: &mut Reader<'_>) -> Vec<TelnyxAccount> {
    let mut accounts = Vec::new();
    for (sid, entry) in account::entries(reader, CarrierKind::Telnyx) {
        let Some(public_key) = entry
            .public_key
            .as_deref()
            .and_then(telnyx::parse_public_key)
        else {
            reader.problem(
                TELNYX_ACCOUNTS,
                ConfigIssue::Invalid(AuthIssue::Account(AccountIssue::BadPublicKey(sid))),
            );
            continue;
        };
        let (plan, scopes) = plan_and_scopes(&entry);
        accounts.push(TelnyxAccount {
            account_sid: sid,
            public_key,
            tenant_id: entry.tenant_id,
            plan,
            scopes,
        });
    }
    accounts
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const SECRET: &str = "a-very-secret-value-of-40-characters-xx";

    fn parse(pairs: &[(&str, &str)]) -> Result<AuthConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        AuthConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn nothing_configured_means_only_api_keys() {
        let config = parse(&[]).expect("valid");
        assert_eq!(config.jwt, None);
        assert_eq!(config.session_tokens, None);
        assert!(config.twilio_accounts.is_empty());
        assert!(config.telnyx_accounts.is_empty());
    }

    #[test]
    fn telnyx_accounts_carry_their_public_key() {
        let key = "eu2zvPjhY6odxV34Z/EsRiERvTodkev4Fq0SlK90Izg=";
        let accounts = format!(
            r#"{{"f5586561-8ff0-4291-a51b-c7dfe4139ff9":{{"tenant_id":"t","plan":"pro","public_key":"{key}"}},"x-2":{{"tenant_id":"t","public_key":"c2hvcnQ="}}}}"#
        );
        let error = parse(&[(TELNYX_ACCOUNTS, &accounts)]).expect_err("one bad key");
        assert_eq!(
            error.to_string(),
            "1 configuration problem(s): TELNYX_ACCOUNTS: account x-2 has no public_key of 32 bytes in base64"
        );
        let good = accounts.replace("c2hvcnQ=", key);
        let config = parse(&[(TELNYX_ACCOUNTS, &good)]).expect("valid");
        assert_eq!(config.telnyx_accounts.len(), 2);
        let account = &config.telnyx_accounts[0];
        assert_eq!(
            (account.plan.as_str(), account.scopes.as_slice()),
            ("pro", ["voice:carrier".to_owned()].as_slice())
        );
        assert_eq!(
            account.principal().method,
            crate::principal::AuthMethod::TelnyxSignature
        );
    }

    #[test]
    fn a_full_configuration() {
        let accounts = format!(r#"{{"{SID}":{{"tenant_id":"tenant-a","plan":"pro"}}}}"#);
        let token_name = format!("TWILIO_AUTH_TOKEN_{SID}");
        let config = parse(&[
            (
                JWKS_URL,
                "https://team.cloudflareaccess.com/cdn-cgi/access/certs",
            ),
            (JWT_HS256_SECRET, SECRET),
            (JWT_HS256_KID, "hs-1"),
            (JWT_ISSUER, "https://team.cloudflareaccess.com"),
            (JWT_AUDIENCE, " aud-1 , aud-2 "),
            (JWT_ALGORITHMS, "RS256, HS256"),
            (JWT_LEEWAY_S, "30"),
            (JWKS_CACHE_TTL_S, "300"),
            (JWKS_REFETCH_MIN_INTERVAL_S, "10"),
            (SESSION_TOKEN_SECRET, SECRET),
            (SESSION_TOKEN_TTL_S, "60"),
            (TWILIO_ACCOUNTS, &accounts),
            (&token_name, "twilio-token"),
        ])
        .expect("valid");
        let jwt = config.jwt.expect("enabled");
        assert_eq!(jwt.policy.audiences, ["aud-1", "aud-2"]);
        assert_eq!(jwt.policy.algorithms, [Algorithm::Rs256, Algorithm::Hs256]);
        assert_eq!(jwt.policy.leeway_s, 30);
        assert_eq!(jwt.policy.tenant_claim, "tenant_id");
        assert_eq!(
            jwt.cache,
            CachePolicy {
                ttl_ms: 300_000,
                min_refetch_interval_ms: 10_000
            }
        );
        assert_eq!(jwt.static_keys.len(), 1);
        assert_eq!(
            jwt.static_keys.iter().next().and_then(Jwk::kid),
            Some("hs-1")
        );
        let session = config.session_tokens.expect("enabled");
        assert_eq!(session.ttl_s(None), 60);
        assert_eq!(session.ttl_s(Some(100_000)), 900);
        assert_eq!(session.ttl_s(Some(0)), 1);
        assert_eq!(config.twilio_accounts.len(), 1);
        assert_eq!(config.twilio_accounts[0].tenant_id, "tenant-a");
        assert_eq!(config.twilio_accounts[0].scopes, ["voice:carrier"]);
    }

    #[test]
    fn every_problem_is_reported_together_without_secret_values() {
        let accounts = format!(r#"{{"{SID}":{{"tenant_id":"t"}},"ACnothex":{{"tenant_id":"t"}}}}"#);
        let error = parse(&[
            (JWKS_URL, "http://keys.example.com/certs"),
            (
                JWKS_INLINE,
                r#"{"keys":[{"kty":"RSA","kid":"tiny","n":"AQAB","e":"AQAB"}]}"#,
            ),
            (JWT_HS256_SECRET, "short-secret-value"),
            (JWT_ALGORITHMS, "RS256,HS512"),
            (JWT_LEEWAY_S, "ten"),
            (JWKS_CACHE_TTL_S, "5"),
            (SESSION_TOKEN_SECRET, "also-short"),
            (SESSION_TOKEN_TTL_S, "1000"),
            (SESSION_TOKEN_MAX_TTL_S, "100"),
            (TWILIO_ACCOUNTS, &accounts),
        ])
        .expect_err("invalid");
        let names: Vec<&str> = error.problems.iter().map(|p| p.name.as_str()).collect();
        let token_name = format!("TWILIO_AUTH_TOKEN_{SID}");
        assert_eq!(
            names,
            [
                JWT_HS256_SECRET,
                JWKS_URL,
                JWKS_INLINE,
                JWT_ISSUER,
                JWT_AUDIENCE,
                JWT_ALGORITHMS,
                JWT_LEEWAY_S,
                JWKS_CACHE_TTL_S,
                SESSION_TOKEN_SECRET,
                SESSION_TOKEN_TTL_S,
                TWILIO_ACCOUNTS,
                token_name.as_str(),
            ]
        );
        let shown = error.to_string();
        assert!(shown.starts_with("12 configuration problem(s)"), "{shown}");
        assert!(
            !shown.contains("short-secret-value") && !shown.contains("also-short"),
            "{shown}"
        );
        assert!(shown.contains("unknown algorithm `HS512`"), "{shown}");
    }

    #[test]
    fn an_inline_key_set_is_a_key_source_of_its_own() {
        let inline = r#"{"keys":[
            {"kty":"EC","kid":"ec-1","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"oct","kid":"hs-1","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}"#;
        let config = parse(&[
            (JWKS_INLINE, inline),
            (JWT_ISSUER, "i"),
            (JWT_AUDIENCE, "a"),
        ])
        .expect("valid");
        let jwt = config.jwt.expect("enabled by the inline set alone");
        assert_eq!(jwt.jwks_url, None);
        let kids: Vec<_> = jwt.static_keys.iter().filter_map(Jwk::kid).collect();
        assert_eq!(kids, ["ec-1", "hs-1"]);
        assert_eq!(jwt.policy.default_plan, "free");
        assert_eq!(jwt.policy.algorithms, Algorithm::ALL);
    }

    /// The rule itself (https, or http to loopback) is `shared::config`'s, tested there.
    #[test]
    fn jwks_urls_must_be_https_except_on_loopback() {
        let jwt = |url| parse(&[(JWKS_URL, url), (JWT_ISSUER, "i"), (JWT_AUDIENCE, "a")]);
        let local = "http://127.0.0.1:8123/certs";
        let config = jwt(local).expect("loopback http is accepted");
        assert_eq!(
            config.jwt.and_then(|jwt| jwt.jwks_url).as_deref(),
            Some(local)
        );
        let error = jwt("http://keys.example.com/certs").expect_err("plain http");
        assert_eq!(
            error.problems,
            [ConfigProblem {
                name: JWKS_URL.into(),
                value: Some("http://keys.example.com/certs".into()),
                issue: ConfigIssue::InsecureUrl
            }]
        );
    }

    #[test]
    fn a_broken_twilio_accounts_var_is_one_problem() {
        let error = parse(&[(TWILIO_ACCOUNTS, "[1,2]")]).expect_err("invalid");
        assert_eq!(
            error.problems,
            [ConfigProblem {
                name: TWILIO_ACCOUNTS.into(),
                value: None,
                issue: ConfigIssue::NotJson(
                    "invalid type: sequence, expected a map at line 1 column 0".into()
                )
            }]
        );
    }
}
