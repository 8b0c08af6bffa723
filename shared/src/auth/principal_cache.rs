//! What voice-router may remember of auth-validator's answers (issue 15): a verified
//! principal, keyed by the SHA-256 of its credential, for at most [`MAX_TTL_MS`] and never past
//! a JWT's `exp`. Only Bearer JWTs and API keys are remembered: session tokens are bound to one
//! call and carrier signatures to one request. A remembered principal is used only for a route
//! whose scopes it holds; anything else asks auth-validator, whose refusal is the one answered.
//!
//! The price is stated in docs/operations.md: an API key revoked (or expiring) in KV is refused
//! by an isolate that remembers it at most [`MAX_TTL_MS`] later (the configured TTL).

use sha2::{Digest, Sha256};

use super::{AuthenticateRequest, Credential, authorize, identify};
use crate::principal::Principal;
use crate::ttl_map::TtlMap;

/// The longest a principal is remembered (and the default TTL).
pub const MAX_TTL_MS: u64 = 30_000;
/// Principals remembered per isolate.
pub const CAPACITY: usize = 1024;

/// The SHA-256 of a credential, by kind: the credential itself is never kept.
pub type CredentialDigest = [u8; 32];

/// Verified principals by credential digest.
pub type PrincipalCache = TtlMap<CredentialDigest, Principal>;

/// A request's credential as a cache key, when its kind may be remembered; with the expiry a
/// verified answer for it gets (`now_ms + ttl_ms`, a JWT's `exp` at the latest, `ttl_ms`
/// capped at [`MAX_TTL_MS`]).
pub fn cache_key(
    request: &AuthenticateRequest,
    now_ms: u64,
    ttl_ms: u64,
) -> Option<(CredentialDigest, u64)> {
    let ttl_expiry = now_ms.saturating_add(ttl_ms.min(MAX_TTL_MS));
    let (kind, credential, expires_at_ms) = match identify(request).ok()?.credential {
        Credential::Jwt(token) => {
            let exp_s = crate::jwt::decode(token)
                .ok()?
                .claims()
                .get("exp")?
                .as_u64()?;
            let exp_ms = exp_s.saturating_mul(1000);
            (b"jwt".as_slice(), token, ttl_expiry.min(exp_ms))
        }
        Credential::ApiKey(key) => (b"api-key".as_slice(), key, ttl_expiry),
        _ => return None,
    };
    let mut hash = Sha256::new();
    hash.update(kind);
    hash.update([0]);
    hash.update(credential.as_bytes());
    Some((hash.finalize().into(), expires_at_ms))
}

/// The remembered principal of `key` when it holds every scope the request requires.
pub fn recall(
    cache: &PrincipalCache,
    key: &CredentialDigest,
    request: &AuthenticateRequest,
    now_ms: u64,
) -> Option<Principal> {
    let principal = cache.get(key, now_ms)?;
    authorize(&principal, &request.required_scopes)
        .is_ok()
        .then_some(principal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::CredentialHeaders;
    use crate::principal::AuthMethod;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn request(headers: CredentialHeaders, scopes: &[&str]) -> AuthenticateRequest {
        AuthenticateRequest {
            method: "GET".into(),
            url: "https://edge.example/api/v1/calls".into(),
            headers,
            body: None,
            required_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            call_id: None,
        }
    }

    fn bearer(value: &str) -> CredentialHeaders {
        CredentialHeaders {
            authorization: Some(format!("Bearer {value}")),
            ..CredentialHeaders::default()
        }
    }

    /// An (unsigned) JWT with this `exp`: the cache reads `exp` only of tokens already verified.
    fn jwt(exp: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"u1","exp":{exp}}}"#));
        format!("{header}.{claims}.c2ln")
    }

    fn principal(scopes: &[&str]) -> Principal {
        Principal {
            tenant_id: "t1".into(),
            subject: "u1".into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            plan: "pro".into(),
            method: AuthMethod::ApiKey,
        }
    }

    #[test]
    fn an_api_key_is_remembered_for_the_ttl_capped_at_thirty_seconds() {
        let key = "ak_live_AAAAAAAAAAAAAAAAAAAAAAAA";
        let by_header = CredentialHeaders {
            api_key: Some(key.into()),
            ..CredentialHeaders::default()
        };
        let (digest, expiry) =
            cache_key(&request(by_header, &[]), 1_000, 5_000).expect("remembered");
        assert_eq!(expiry, 6_000);
        // The same key as a Bearer value is the same credential.
        let (same, capped) =
            cache_key(&request(bearer(key), &[]), 1_000, 600_000).expect("remembered");
        assert_eq!((same, capped), (digest, 1_000 + MAX_TTL_MS));
        let other =
            cache_key(&request(bearer("ak_live_B"), &[]), 1_000, 5_000).expect("remembered");
        assert_ne!(other.0, digest);
    }

    #[test]
    fn a_jwt_is_remembered_until_its_exp_at_the_latest() {
        let soon = jwt(10);
        let (_, expiry) =
            cache_key(&request(bearer(&soon), &[]), 1_000, MAX_TTL_MS).expect("remembered");
        assert_eq!(expiry, 10_000);
        let later = jwt(3_600);
        let (_, expiry) =
            cache_key(&request(bearer(&later), &[]), 1_000, MAX_TTL_MS).expect("remembered");
        assert_eq!(expiry, 31_000);
        // No readable exp: never remembered.
        assert_eq!(cache_key(&request(bearer("not.a-jwt"), &[]), 0, 1), None);
    }

    #[test]
    fn session_tokens_signatures_and_ambiguous_requests_are_never_remembered() {
        assert_eq!(cache_key(&request(bearer("st_abc"), &[]), 0, 1_000), None);
        let twilio = CredentialHeaders {
            twilio_signature: Some("sig".into()),
            ..CredentialHeaders::default()
        };
        assert_eq!(cache_key(&request(twilio, &[]), 0, 1_000), None);
        let two = CredentialHeaders {
            api_key: Some("ak_live_A".into()),
            ..bearer("ak_live_B")
        };
        assert_eq!(cache_key(&request(two, &[]), 0, 1_000), None);
        assert_eq!(
            cache_key(&request(CredentialHeaders::default(), &[]), 0, 1_000),
            None
        );
    }

    #[test]
    fn a_remembered_principal_serves_only_routes_whose_scopes_it_holds() {
        let req = request(bearer("ak_live_A"), &["calls:write"]);
        let (digest, expiry) = cache_key(&req, 0, 1_000).expect("remembered");
        let mut cache = PrincipalCache::new(CAPACITY);
        cache.insert(digest, principal(&["calls:read"]), expiry, 0);
        assert_eq!(recall(&cache, &digest, &req, 0), None);
        cache.insert(digest, principal(&["calls:write"]), expiry, 0);
        assert_eq!(
            recall(&cache, &digest, &req, 999),
            Some(principal(&["calls:write"]))
        );
        assert_eq!(recall(&cache, &digest, &req, 1_000), None);
    }
}
