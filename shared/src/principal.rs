//! Who a request is, once authenticated: what auth-validator answers, what voice-router signs
//! into `X-Edge-Principal`, and what scopes every origin query by tenant.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// Longest `X-Edge-Principal` value accepted; a principal is a few hundred bytes at most.
pub const MAX_HEADER_LEN: usize = 4096;

/// Why an `X-Edge-Principal` value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    /// The header is absent or empty.
    #[error("the request carries no principal")]
    Missing,
    /// Longer than [`MAX_HEADER_LEN`].
    #[error("the principal header is longer than {MAX_HEADER_LEN} bytes")]
    TooLong,
    /// Not unpadded base64url.
    #[error("the principal header is not base64url")]
    NotBase64,
    /// Base64url, but not the JSON of a principal.
    #[error("the principal header is not a principal's JSON")]
    NotPrincipal,
    /// A principal without a tenant cannot be scoped.
    #[error("the principal has an empty tenant id")]
    EmptyTenant,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The tenant every query and limit is scoped to.
    pub tenant_id: String,
    /// Who within the tenant: a user id, an API key id, a carrier account SID, a call id.
    pub subject: String,
    /// Granted scopes, e.g. `calls:write`, `agents:admin`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The tenant's plan, which selects rate-limit policies.
    pub plan: String,
    /// How the caller proved who it is.
    pub method: AuthMethod,
}

/// The kind of credential that authenticated a principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A JSON Web Token (HS256, RS256 or ES256).
    Jwt,
    /// An `ak_…` API key.
    ApiKey,
    /// A carrier webhook or WebSocket handshake signed with `X-Twilio-Signature`.
    TwilioSignature,
    /// A Telnyx webhook signed with `telnyx-signature-ed25519`.
    TelnyxSignature,
    /// A short-lived token the edge minted for one call's relay URL.
    SessionToken,
}

impl Principal {
    /// The `X-Edge-Principal` value: unpadded base64url of the principal's JSON.
    pub fn to_header(&self) -> String {
        // Serialising strings, a list of strings and a unit enum cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads an `X-Edge-Principal` value.
    pub fn from_header(value: &str) -> Result<Self, PrincipalError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(PrincipalError::Missing);
        }
        if value.len() > MAX_HEADER_LEN {
            return Err(PrincipalError::TooLong);
        }
        let json = URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| PrincipalError::NotBase64)?;
        let principal: Principal =
            serde_json::from_slice(&json).map_err(|_| PrincipalError::NotPrincipal)?;
        if principal.tenant_id.trim().is_empty() {
            return Err(PrincipalError::EmptyTenant);
        }
        Ok(principal)
    }

    /// Whether the principal holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|held| held == scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_snake_case_method() {
        let principal = Principal {
            tenant_id: "t1".into(),
            subject: "u1".into(),
            scopes: vec!["calls:write".into()],
            plan: "pro".into(),
            method: AuthMethod::ApiKey,
        };
        let json = serde_json::to_value(&principal).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"tenant_id":"t1","subject":"u1","scopes":["calls:write"],"plan":"pro","method":"api_key"})
        );
        assert!(principal.has_scope("calls:write"));
        assert!(!principal.has_scope("calls"));
    }

    fn sample() -> Principal {
        Principal {
            tenant_id: "t1".into(),
            subject: "u1".into(),
            scopes: vec!["calls:write".into()],
            plan: "pro".into(),
            method: AuthMethod::Jwt,
        }
    }

    #[test]
    fn header_round_trips_and_is_url_safe() {
        let header = sample().to_header();
        assert!(
            header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{header}"
        );
        assert_eq!(Principal::from_header(&header), Ok(sample()));
    }

    #[test]
    fn bad_headers_state_why() {
        let no_tenant = Principal {
            tenant_id: " ".into(),
            ..sample()
        }
        .to_header();
        let cases = [
            ("", PrincipalError::Missing),
            ("!!!", PrincipalError::NotBase64),
            ("eyJ4IjoxfQ", PrincipalError::NotPrincipal),
            (no_tenant.as_str(), PrincipalError::EmptyTenant),
        ];
        for (value, expected) in cases {
            assert_eq!(
                Principal::from_header(value),
                Err(expected.clone()),
                "{value}"
            );
        }
        assert_eq!(
            Principal::from_header(&"a".repeat(MAX_HEADER_LEN + 1)),
            Err(PrincipalError::TooLong)
        );
    }
}
