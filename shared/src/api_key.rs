//! API keys (`ak_…`). Only the SHA-256 of a key is stored: KV maps `apikey:<hex sha-256>` to an
//! [`ApiKeyRecord`] naming the principal. A key that is not there and a key that was revoked are
//! different answers, so an operator can tell a typo from a revocation.
//!
//! Provisioning a key (no route does it; an operator or the control plane writes KV):
//! `printf %s "$KEY" | sha256sum` gives the hex digest; store the record JSON under
//! `apikey:<digest>` with `wrangler kv key put`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::principal::{AuthMethod, Principal};

/// Every API key starts with this.
pub const PREFIX: &str = "ak_";
/// Shortest secret part after the prefix (≥ 96 bits of base62 randomness).
pub const MIN_SECRET_CHARS: usize = 16;
/// Longest secret part after the prefix.
pub const MAX_SECRET_CHARS: usize = 128;
/// Prefix of the KV keys holding API key records.
pub const STORAGE_PREFIX: &str = "apikey:";

/// Why an API key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    /// Not `ak_` followed by 16 to 128 characters of `[A-Za-z0-9_-]`.
    #[error("the API key is not of the form ak_…")]
    Malformed,
    /// No record for this key.
    #[error("the API key is not known")]
    Unknown,
    /// The key was revoked.
    #[error("the API key was revoked")]
    Revoked,
    /// The key's validity ended.
    #[error("the API key expired")]
    Expired,
    /// The stored record is not a valid record for this key (operator error; logged).
    #[error("the API key's record is invalid")]
    CorruptRecord,
}

impl ApiKeyError {
    /// Stable snake_case code for the error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            ApiKeyError::Malformed => "api_key_malformed",
            ApiKeyError::Unknown => "api_key_unknown",
            ApiKeyError::Revoked => "api_key_revoked",
            ApiKeyError::Expired => "api_key_expired",
            ApiKeyError::CorruptRecord => "api_key_record_invalid",
        }
    }
}

/// A syntactically valid API key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ApiKey<'a>(&'a str);

impl std::fmt::Debug for ApiKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// Checks the shape of a presented key.
pub fn parse(raw: &str) -> Result<ApiKey<'_>, ApiKeyError> {
    let secret = raw.strip_prefix(PREFIX).ok_or(ApiKeyError::Malformed)?;
    let well_formed = (MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if well_formed {
        Ok(ApiKey(raw))
    } else {
        Err(ApiKeyError::Malformed)
    }
}

impl ApiKey<'_> {
    /// SHA-256 of the whole key, prefix included, as lowercase hex.
    pub fn digest_hex(&self) -> String {
        Sha256::digest(self.0.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The KV key its record is stored under.
    pub fn storage_key(&self) -> String {
        format!("{STORAGE_PREFIX}{}", self.digest_hex())
    }
}

/// What KV holds for a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Hex SHA-256 of the key; checked (in constant time) against the presented key's.
    pub key_sha256: String,
    /// The tenant the key belongs to.
    pub tenant_id: String,
    /// The key's own id, e.g. `key_7f3a`: the principal's subject.
    pub subject: String,
    /// Scopes granted to the key.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The tenant's plan.
    pub plan: String,
    /// Unix seconds from which the key is revoked (a future time schedules the revocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    /// Unix seconds at which the key stops being valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl ApiKeyRecord {
    /// A record for a new key.
    pub fn new(
        key: &ApiKey<'_>,
        tenant_id: &str,
        subject: &str,
        scopes: &[&str],
        plan: &str,
    ) -> Self {
        Self {
            key_sha256: key.digest_hex(),
            tenant_id: tenant_id.into(),
            subject: subject.into(),
            scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
            plan: plan.into(),
            revoked_at: None,
            expires_at: None,
        }
    }
}

/// Decides on a key given what KV returned for its storage key (`None`: nothing stored).
pub fn accept(
    key: &ApiKey<'_>,
    stored: Option<&str>,
    now_s: u64,
) -> Result<Principal, ApiKeyError> {
    let stored = stored.ok_or(ApiKeyError::Unknown)?;
    let record: ApiKeyRecord =
        serde_json::from_str(stored).map_err(|_| ApiKeyError::CorruptRecord)?;
    // The lookup was by hash; comparing again guards against a record filed under the wrong
    // key, and does so in constant time.
    let matches: bool = record
        .key_sha256
        .to_ascii_lowercase()
        .as_bytes()
        .ct_eq(key.digest_hex().as_bytes())
        .into();
    if !matches {
        return Err(ApiKeyError::CorruptRecord);
    }
    if record.revoked_at.is_some_and(|at| now_s >= at) {
        return Err(ApiKeyError::Revoked);
    }
    if record.expires_at.is_some_and(|at| now_s >= at) {
        return Err(ApiKeyError::Expired);
    }
    if record.tenant_id.is_empty() || record.subject.is_empty() {
        return Err(ApiKeyError::CorruptRecord);
    }
    Ok(Principal {
        tenant_id: record.tenant_id,
        subject: record.subject,
        scopes: record.scopes,
        plan: record.plan,
        method: AuthMethod::ApiKey,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ak_live_4fJ9xQ2mR7tL1vB8nC3d";

    fn record(change: impl FnOnce(&mut ApiKeyRecord)) -> String {
        let key = parse(KEY).expect("well formed");
        let mut record = ApiKeyRecord::new(&key, "tenant-a", "key_1", &["calls:write"], "pro");
        change(&mut record);
        serde_json::to_string(&record).expect("serialises")
    }

    #[test]
    fn digest_is_sha256_of_the_whole_key() {
        // printf %s ak_live_4fJ9xQ2mR7tL1vB8nC3d | sha256sum
        let expected = "40bb75c84efd8aa7548905a5eb92d0766aae03a6d03c9775a24ae8136f00195b";
        let key = parse(KEY).expect("well formed");
        assert_eq!(key.digest_hex(), expected);
        assert_eq!(key.storage_key(), format!("apikey:{expected}"));
        assert_eq!(format!("{key:?}"), "ApiKey([redacted])");
    }

    #[test]
    fn shape_is_checked_before_any_lookup() {
        for bad in [
            "",
            "ak_",
            "ak_short",
            "sk_live_4fJ9xQ2mR7tL1vB8nC3d",
            "ak_live 4fJ9xQ2mR7tL1vB8nC3d",
            "ak_live_4fJ9xQ2mR7tL1vB8nC3d!",
        ] {
            assert_eq!(parse(bad), Err(ApiKeyError::Malformed), "{bad}");
        }
        assert_eq!(
            parse(&format!("ak_{}", "a".repeat(MAX_SECRET_CHARS + 1))),
            Err(ApiKeyError::Malformed)
        );
        assert!(parse(&format!("ak_{}", "a".repeat(MAX_SECRET_CHARS))).is_ok());
    }

    #[test]
    fn a_stored_key_maps_to_its_principal() {
        let key = parse(KEY).expect("well formed");
        let principal = accept(&key, Some(&record(|_| {})), 1_000).expect("valid");
        assert_eq!(
            principal,
            Principal {
                tenant_id: "tenant-a".into(),
                subject: "key_1".into(),
                scopes: vec!["calls:write".into()],
                plan: "pro".into(),
                method: AuthMethod::ApiKey,
            }
        );
    }

    #[test]
    fn miss_revocation_expiry_and_corruption_are_distinct() {
        let key = parse(KEY).expect("well formed");
        let cases: Vec<(Option<String>, ApiKeyError)> = vec![
            (None, ApiKeyError::Unknown),
            (
                Some(record(|r| r.revoked_at = Some(1_000))),
                ApiKeyError::Revoked,
            ),
            (
                Some(record(|r| r.expires_at = Some(999))),
                ApiKeyError::Expired,
            ),
            (Some("{not json".into()), ApiKeyError::CorruptRecord),
            (
                Some(record(|r| r.key_sha256 = "00".repeat(32))),
                ApiKeyError::CorruptRecord,
            ),
            (
                Some(record(|r| r.tenant_id.clear())),
                ApiKeyError::CorruptRecord,
            ),
        ];
        for (stored, expected) in cases {
            assert_eq!(
                accept(&key, stored.as_deref(), 1_000),
                Err(expected),
                "{stored:?}"
            );
        }
        // Revocation scheduled for later: still valid now.
        assert!(accept(&key, Some(&record(|r| r.revoked_at = Some(2_000))), 1_000).is_ok());
        // The digest may be stored in capitals.
        let upper = record(|r| r.key_sha256 = r.key_sha256.to_ascii_uppercase());
        assert!(accept(&key, Some(&upper), 1_000).is_ok());
    }
}
