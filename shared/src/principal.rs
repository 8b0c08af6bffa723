//! Who a request is, once authenticated: what auth-validator answers, what voice-router signs
//! into `X-Edge-Principal`, and what scopes every origin query by tenant.

use serde::{Deserialize, Serialize};

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
    /// A short-lived token the edge minted for one call's relay URL.
    SessionToken,
}

impl Principal {
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
}
