//! JSON Web Tokens (RFC 7519) in JWS compact serialization (RFC 7515): decoding, the choice of
//! key, the signature, the registered claims, and the principal a token stands for.
//!
//! Verification is split so the Worker can fetch keys between the steps: [`decode`] (structure
//! only, no key), then [`verify_decoded`] (algorithm policy, key choice, signature through a
//! [`Verifier`], claims, principal). [`verify_jwt`] is both in one call.
//!
//! Header parameters that point at keys (`jku`, `jwk`, `x5u`, `x5c`) are ignored: keys come only
//! from configuration and the configured JWKS URL, never from the token.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::jwks::{Jwk, KeySet};
use crate::principal::{AuthMethod, Principal};
use crate::signature::{Algorithm, KeyFamily, SignatureError, Verifier};

/// Longest token accepted: bounds the work an unauthenticated caller can cause.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A part of a compact JWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// The protected header.
    Header,
    /// The claims.
    Payload,
    /// The signature.
    Signature,
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Segment::Header => "header",
            Segment::Payload => "payload",
            Segment::Signature => "signature",
        })
    }
}

/// Why a token was refused. Each variant has its own stable [`code`](JwtError::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("the token is {len} bytes; at most {max} accepted")]
    TooLarge {
        /// Token length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not three non-empty segments separated by dots.
    #[error("the token is not three non-empty segments separated by dots")]
    Malformed,
    /// A segment is not canonical unpadded base64url.
    #[error("the token's {0} is not base64url")]
    BadEncoding(Segment),
    /// The header is not a JSON object with a string `alg` (and a string `kid`, if any).
    #[error("the token's header is not a valid JOSE header")]
    BadHeader,
    /// `alg: none`: an unsigned token.
    #[error("unsigned tokens (alg none) are refused")]
    AlgNone,
    /// An algorithm this platform never verifies.
    #[error("algorithm {0} is not supported")]
    UnsupportedAlgorithm(String),
    /// The header lists critical extensions (`crit`), none of which is understood here.
    #[error("the token requires header extensions (crit) that are not supported")]
    CriticalHeader,
    /// The payload is not a JSON object.
    #[error("the token's claims are not a JSON object")]
    BadClaims,
    /// The algorithm is supported but not enabled by configuration.
    #[error("algorithm {0} is not enabled")]
    AlgorithmNotAllowed(&'static str),
    /// No key has the token's `kid`, even after fetching the key set again.
    #[error("no key with the token's kid")]
    UnknownKid,
    /// The token names no `kid` and several keys could verify it.
    #[error("the token has no kid and several keys match")]
    KidRequired,
    /// No key of the token's algorithm family is configured.
    #[error("no key for algorithm {0}")]
    NoKeyForAlgorithm(&'static str),
    /// An HMAC token aimed at an asymmetric key: the classic key-confusion attack.
    #[error("an HS256 token cannot be verified with a public key")]
    AlgorithmConfusion,
    /// The key exists but is not for the token's algorithm.
    #[error("the key does not allow algorithm {alg}")]
    AlgorithmNotAllowedForKey {
        /// The token's algorithm.
        alg: &'static str,
    },
    /// The signature does not match.
    #[error("the signature does not match")]
    BadSignature,
    /// The signature has the wrong length for the algorithm.
    #[error("the signature is {actual} bytes; {expected} expected")]
    SignatureLength {
        /// Expected length.
        expected: usize,
        /// Received length.
        actual: usize,
    },
    /// The selected key cannot be used (the crypto backend refused it).
    #[error("the key for this token cannot be used")]
    KeyUnusable,
    /// The crypto backend failed; not the token's fault.
    #[error("the signature could not be checked")]
    VerifierFailed,
    /// `exp` has passed (beyond the leeway).
    #[error("the token expired")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The time of the check.
        now: u64,
    },
    /// `nbf` is still ahead (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
    },
    /// `iat` lies in the future (beyond the leeway).
    #[error("the token was issued in the future")]
    IssuedInFuture {
        /// The token's `iat`.
        iat: u64,
    },
    /// A required claim is absent.
    #[error("claim {0} is missing")]
    MissingClaim(String),
    /// A claim has the wrong JSON type.
    #[error("claim {0} has the wrong type")]
    BadClaim(String),
    /// `iss` is not the configured issuer.
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    /// No `aud` value is a configured audience.
    #[error("the token is not meant for this audience")]
    WrongAudience,
}

impl JwtError {
    /// Stable snake_case code for the error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            JwtError::TooLarge { .. } => "token_too_large",
            JwtError::Malformed => "token_malformed",
            JwtError::BadEncoding(_) => "token_bad_encoding",
            JwtError::BadHeader => "token_bad_header",
            JwtError::AlgNone => "token_alg_none",
            JwtError::UnsupportedAlgorithm(_) => "token_alg_unsupported",
            JwtError::CriticalHeader => "token_crit_unsupported",
            JwtError::BadClaims => "token_bad_claims",
            JwtError::AlgorithmNotAllowed(_) => "token_alg_not_allowed",
            JwtError::UnknownKid => "token_unknown_kid",
            JwtError::KidRequired => "token_kid_required",
            JwtError::NoKeyForAlgorithm(_) => "token_no_key",
            JwtError::AlgorithmConfusion => "token_alg_confusion",
            JwtError::AlgorithmNotAllowedForKey { .. } => "token_alg_key_mismatch",
            JwtError::BadSignature => "token_bad_signature",
            JwtError::SignatureLength { .. } => "token_bad_signature_length",
            JwtError::KeyUnusable => "token_key_unusable",
            JwtError::VerifierFailed => "verifier_unavailable",
            JwtError::Expired { .. } => "token_expired",
            JwtError::NotYetValid { .. } => "token_not_yet_valid",
            JwtError::IssuedInFuture { .. } => "token_issued_in_future",
            JwtError::MissingClaim(_) => "token_missing_claim",
            JwtError::BadClaim(_) => "token_bad_claim",
            JwtError::WrongIssuer => "token_wrong_issuer",
            JwtError::WrongAudience => "token_wrong_audience",
        }
    }

    /// Whether fetching the key set again could change the outcome (a rotated-in key).
    pub fn may_need_fresh_keys(&self) -> bool {
        matches!(self, JwtError::UnknownKid | JwtError::NoKeyForAlgorithm(_))
    }
}

/// The protected header, reduced to what verification uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The signing algorithm.
    pub alg: Algorithm,
    /// The key id, if the token names one.
    pub kid: Option<String>,
}

/// A structurally valid token whose signature is not checked yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Token<'a> {
    header: Header,
    signing_input: &'a str,
    signature: Vec<u8>,
    claims: Map<String, Value>,
}

impl Token<'_> {
    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The claims (unverified until [`verify_decoded`] succeeds).
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }
}

/// Splits and decodes a compact JWS, refusing anything not worth a key lookup.
pub fn decode(token: &str) -> Result<Token<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge {
            len: token.len(),
            max: MAX_TOKEN_BYTES,
        });
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    if header_b64.is_empty() {
        return Err(JwtError::Malformed);
    }
    let header = parse_header(&base64url(header_b64, Segment::Header)?)?;
    // Checked after the header so that `alg: none` (empty signature) gets its own answer.
    if payload_b64.is_empty() || signature_b64.is_empty() {
        return Err(JwtError::Malformed);
    }
    let claims =
        serde_json::from_slice::<Map<String, Value>>(&base64url(payload_b64, Segment::Payload)?)
            .map_err(|_| JwtError::BadClaims)?;
    let signature = base64url(signature_b64, Segment::Signature)?;
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    Ok(Token {
        header,
        signing_input,
        signature,
        claims,
    })
}

fn base64url(segment: &str, which: Segment) -> Result<Vec<u8>, JwtError> {
    // The engine refuses padding and non-canonical trailing bits, so one token has one encoding.
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::BadEncoding(which))
}

fn parse_header(bytes: &[u8]) -> Result<Header, JwtError> {
    let header: Map<String, Value> =
        serde_json::from_slice(bytes).map_err(|_| JwtError::BadHeader)?;
    let alg = match header.get("alg") {
        Some(Value::String(name)) if name.eq_ignore_ascii_case("none") => {
            return Err(JwtError::AlgNone);
        }
        Some(Value::String(name)) => Algorithm::from_name(name)
            .ok_or_else(|| JwtError::UnsupportedAlgorithm(printable(name)))?,
        _ => return Err(JwtError::BadHeader),
    };
    // RFC 7515 §4.1.11: a recipient that does not understand a critical extension must refuse.
    if header.contains_key("crit") {
        return Err(JwtError::CriticalHeader);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(JwtError::BadHeader),
    };
    Ok(Header { alg, kid })
}

/// Echoing an attacker's text into an error (and a `WWW-Authenticate` header) is kept short and
/// harmless.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(16)
        .collect()
}

/// What a token must satisfy beyond its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtPolicy {
    /// Algorithms enabled by configuration.
    pub algorithms: Vec<Algorithm>,
    /// The one accepted `iss`.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    pub audiences: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_s: u64,
    /// The claim holding the tenant id.
    pub tenant_claim: String,
    /// Tenant of tokens without the tenant claim (e.g. a single-tenant Cloudflare Access app).
    pub default_tenant: Option<String>,
    /// Plan of tokens without a `plan` claim.
    pub default_plan: String,
}

/// Chooses the key for a token: by `kid` when it names one, else the only key of its family.
pub fn select_key<'k>(keys: &'k KeySet, header: &Header) -> Result<&'k Jwk, JwtError> {
    let alg = header.alg;
    match &header.kid {
        Some(kid) => {
            let mut named = keys.iter().filter(|key| key.kid() == Some(kid.as_str()));
            let first = named.next().ok_or(JwtError::UnknownKid)?;
            if let Some(key) = std::iter::once(first)
                .chain(named)
                .find(|key| key.allows(alg))
            {
                return Ok(key);
            }
            if alg.family() == KeyFamily::Hmac && first.family() != KeyFamily::Hmac {
                Err(JwtError::AlgorithmConfusion)
            } else {
                Err(JwtError::AlgorithmNotAllowedForKey { alg: alg.name() })
            }
        }
        None => {
            let mut candidates = keys.iter().filter(|key| key.allows(alg));
            match (candidates.next(), candidates.next()) {
                (Some(key), None) => Ok(key),
                (Some(_), Some(_)) => Err(JwtError::KidRequired),
                (None, _) => {
                    let only_public_keys =
                        !keys.is_empty() && keys.iter().all(|key| key.family() != KeyFamily::Hmac);
                    if alg.family() == KeyFamily::Hmac && only_public_keys {
                        Err(JwtError::AlgorithmConfusion)
                    } else {
                        Err(JwtError::NoKeyForAlgorithm(alg.name()))
                    }
                }
            }
        }
    }
}

/// Checks a decoded token against the policy and the keys; on success, who it stands for.
pub async fn verify_decoded<V: Verifier>(
    token: &Token<'_>,
    keys: &KeySet,
    policy: &JwtPolicy,
    now_s: u64,
    verifier: &V,
) -> Result<Principal, JwtError> {
    let alg = token.header.alg;
    if !policy.algorithms.contains(&alg) {
        return Err(JwtError::AlgorithmNotAllowed(alg.name()));
    }
    let key = select_key(keys, &token.header)?;
    verifier
        .verify(alg, key, token.signing_input.as_bytes(), &token.signature)
        .await
        .map_err(|error| match error {
            SignatureError::Mismatch => JwtError::BadSignature,
            SignatureError::WrongLength { expected, actual } => {
                JwtError::SignatureLength { expected, actual }
            }
            SignatureError::UnusableKey => JwtError::KeyUnusable,
            SignatureError::BackendFailed => JwtError::VerifierFailed,
        })?;
    validate_claims(&token.claims, policy, now_s)?;
    principal_from_claims(&token.claims, policy)
}

/// [`decode`] then [`verify_decoded`].
pub async fn verify_jwt<V: Verifier>(
    token: &str,
    keys: &KeySet,
    policy: &JwtPolicy,
    now_s: u64,
    verifier: &V,
) -> Result<Principal, JwtError> {
    let token = decode(token)?;
    verify_decoded(&token, keys, policy, now_s, verifier).await
}

/// The registered claims: `exp` (required), `nbf`, `iat`, `iss`, `aud`.
pub fn validate_claims(
    claims: &Map<String, Value>,
    policy: &JwtPolicy,
    now_s: u64,
) -> Result<(), JwtError> {
    let leeway = policy.leeway_s;
    let exp = numeric_date(claims, "exp")?.ok_or_else(|| JwtError::MissingClaim("exp".into()))?;
    if now_s >= exp.saturating_add(leeway) {
        return Err(JwtError::Expired { exp, now: now_s });
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && now_s.saturating_add(leeway) < nbf
    {
        return Err(JwtError::NotYetValid { nbf });
    }
    if let Some(iat) = numeric_date(claims, "iat")?
        && iat > now_s.saturating_add(leeway)
    {
        return Err(JwtError::IssuedInFuture { iat });
    }
    match claims.get("iss") {
        None => return Err(JwtError::MissingClaim("iss".into())),
        Some(Value::String(iss)) if *iss == policy.issuer => {}
        Some(Value::String(_)) => return Err(JwtError::WrongIssuer),
        Some(_) => return Err(JwtError::BadClaim("iss".into())),
    }
    let accepted = |aud: &str| policy.audiences.iter().any(|allowed| allowed == aud);
    let audience_ok = match claims.get("aud") {
        None => return Err(JwtError::MissingClaim("aud".into())),
        Some(Value::String(aud)) => accepted(aud),
        Some(Value::Array(values)) => {
            let mut any = false;
            for value in values {
                match value {
                    Value::String(aud) => any |= accepted(aud),
                    _ => return Err(JwtError::BadClaim("aud".into())),
                }
            }
            any
        }
        Some(_) => return Err(JwtError::BadClaim("aud".into())),
    };
    if !audience_ok {
        return Err(JwtError::WrongAudience);
    }
    Ok(())
}

/// The principal of a verified token: tenant from the configured claim (or the default), subject
/// from `sub` (or Cloudflare Access service tokens' `common_name`), scopes from `scope`
/// (space-separated, RFC 8693), `scp` or `scopes`, plan from `plan` (or the default).
pub fn principal_from_claims(
    claims: &Map<String, Value>,
    policy: &JwtPolicy,
) -> Result<Principal, JwtError> {
    let subject = non_empty_string(claims, "sub")?
        .or(non_empty_string(claims, "common_name")?)
        .ok_or_else(|| JwtError::MissingClaim("sub".into()))?;
    let tenant_id = match non_empty_string(claims, &policy.tenant_claim)? {
        Some(tenant) => tenant,
        None => policy
            .default_tenant
            .clone()
            .ok_or_else(|| JwtError::MissingClaim(policy.tenant_claim.clone()))?,
    };
    let plan = non_empty_string(claims, "plan")?.unwrap_or_else(|| policy.default_plan.clone());
    let mut scopes: Vec<String> = Vec::new();
    for name in ["scope", "scp", "scopes"] {
        let found: Vec<&str> = match claims.get(name) {
            None => Vec::new(),
            Some(Value::String(list)) => list.split_ascii_whitespace().collect(),
            Some(Value::Array(values)) => values
                .iter()
                .map(|value| {
                    value
                        .as_str()
                        .ok_or_else(|| JwtError::BadClaim(name.into()))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(JwtError::BadClaim(name.into())),
        };
        for scope in found {
            if !scope.is_empty() && !scopes.iter().any(|held| held == scope) {
                scopes.push(scope.to_owned());
            }
        }
    }
    Ok(Principal {
        tenant_id,
        subject,
        scopes,
        plan,
        method: AuthMethod::Jwt,
    })
}

fn non_empty_string(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(JwtError::BadClaim(name.into())),
    }
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, possibly fractional; floored.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(number)) => {
            if let Some(seconds) = number.as_u64() {
                return Ok(Some(seconds));
            }
            match number.as_f64() {
                // `as` saturates: a date beyond u64 is "never".
                Some(seconds) if seconds.is_finite() && seconds >= 0.0 => {
                    Ok(Some(seconds.floor() as u64))
                }
                _ => Err(JwtError::BadClaim(name.into())),
            }
        }
        Some(_) => Err(JwtError::BadClaim(name.into())),
    }
}

#[cfg(test)]
mod tests;
