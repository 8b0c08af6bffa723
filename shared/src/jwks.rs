//! JSON Web Keys (RFC 7517): which keys a token may be verified with, and when a cached key set
//! must be fetched again.
//!
//! A remote set (Cloudflare Access: `https://<team>.cloudflareaccess.com/cdn-cgi/access/certs`) is
//! parsed leniently: a key this platform cannot use (an encryption key, RS512, P-384) is skipped
//! and reported, the others stay usable. Symmetric keys are only accepted from configuration: a
//! published key set holding a shared secret would hand it to everyone.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::Secret;
use crate::signature::{Algorithm, KeyFamily};

/// Smallest RSA modulus accepted (NIST SP 800-131A; RFC 7518 §3.3 requires 2048).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted: bigger keys only cost verification time.
pub const MAX_RSA_BITS: usize = 4096;
/// Shortest HMAC secret accepted for HS256 (RFC 7518 §3.2: at least the hash size).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;
/// Largest key set document read from the network.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// The public (or, for HMAC, secret) part of a key.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// A shared secret for HS256.
    Hmac(Secret),
    /// RSA modulus and public exponent, big-endian without leading zeros.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// Affine coordinates of a P-256 point.
    EcP256 {
        /// x coordinate, big-endian.
        x: [u8; 32],
        /// y coordinate, big-endian.
        y: [u8; 32],
    },
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyMaterial::Hmac(secret) => write!(f, "Hmac({secret:?})"),
            KeyMaterial::Rsa { n, .. } => write!(f, "Rsa({} bits)", bit_length(n)),
            KeyMaterial::EcP256 { .. } => write!(f, "EcP256"),
        }
    }
}

/// One usable verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    kid: Option<String>,
    alg: Option<Algorithm>,
    material: KeyMaterial,
    fingerprint: [u8; 32],
}

impl Jwk {
    /// The key id tokens name in their `kid` header.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The algorithm the key set pinned this key to (`alg` member), if any.
    pub fn declared_alg(&self) -> Option<Algorithm> {
        self.alg
    }

    /// The key material.
    pub fn material(&self) -> &KeyMaterial {
        &self.material
    }

    /// The kind of key.
    pub fn family(&self) -> KeyFamily {
        match self.material {
            KeyMaterial::Hmac(_) => KeyFamily::Hmac,
            KeyMaterial::Rsa { .. } => KeyFamily::Rsa,
            KeyMaterial::EcP256 { .. } => KeyFamily::EcP256,
        }
    }

    /// SHA-256 over the key material: a stable cache key for imported keys (never logged).
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// Whether a token signed with `alg` may be verified with this key.
    pub fn allows(&self, alg: Algorithm) -> bool {
        alg.family() == self.family() && self.alg.is_none_or(|pinned| pinned == alg)
    }

    /// An HS256 key from a configured shared secret.
    pub fn hmac(kid: Option<String>, secret: Secret) -> Result<Self, JwkError> {
        if secret.len() < MIN_HMAC_SECRET_BYTES {
            return Err(JwkError::SecretTooShort {
                len: secret.len(),
                min: MIN_HMAC_SECRET_BYTES,
            });
        }
        Ok(Self::new(
            kid,
            Some(Algorithm::Hs256),
            KeyMaterial::Hmac(secret),
        ))
    }

    /// An RS256 key from its modulus and exponent (big-endian), checked like a JWK would be.
    pub fn rsa(kid: Option<String>, n: &[u8], e: &[u8]) -> Result<Self, JwkError> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let bits = bit_length(n);
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(JwkError::RsaModulusSize { bits });
        }
        // Exponents are small odd numbers (65537 in practice); WebCrypto refuses others.
        let odd = e.last().is_some_and(|last| last & 1 == 1);
        if e.is_empty() || e.len() > 4 || !odd || e == [1] {
            return Err(JwkError::RsaExponent);
        }
        let material = KeyMaterial::Rsa {
            n: n.to_vec(),
            e: e.to_vec(),
        };
        Ok(Self::new(kid, None, material))
    }

    /// An ES256 key from its affine coordinates.
    pub fn ec_p256(kid: Option<String>, x: [u8; 32], y: [u8; 32]) -> Self {
        Self::new(kid, None, KeyMaterial::EcP256 { x, y })
    }

    fn new(kid: Option<String>, alg: Option<Algorithm>, material: KeyMaterial) -> Self {
        let mut hash = Sha256::new();
        match &material {
            KeyMaterial::Hmac(secret) => {
                hash.update(b"oct:");
                hash.update(secret.expose());
            }
            KeyMaterial::Rsa { n, e } => {
                hash.update(b"RSA:");
                hash.update((n.len() as u64).to_be_bytes());
                hash.update(n);
                hash.update(e);
            }
            KeyMaterial::EcP256 { x, y } => {
                hash.update(b"P-256:");
                hash.update(x);
                hash.update(y);
            }
        }
        Self {
            kid,
            alg,
            material,
            fingerprint: hash.finalize().into(),
        }
    }

    fn with_alg(mut self, alg: Option<Algorithm>) -> Result<Self, JwkError> {
        if let Some(alg) = alg
            && alg.family() != self.family()
        {
            return Err(JwkError::AlgorithmDoesNotFitKey { alg: alg.name() });
        }
        self.alg = alg.or(self.alg);
        Ok(self)
    }
}

/// Where a key set came from; decides whether symmetric keys are acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// Fetched from a JWKS URL: public keys only.
    Remote,
    /// From the Worker's own configuration (`JWKS_INLINE`): symmetric keys allowed.
    Configured,
}

/// Why one key of a set was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// A member has the wrong JSON type.
    #[error("a member has the wrong JSON type")]
    Malformed,
    /// A member the key type requires is absent.
    #[error("member `{0}` is missing")]
    MissingMember(&'static str),
    /// A member is not canonical unpadded base64url.
    #[error("member `{0}` is not base64url")]
    BadEncoding(&'static str),
    /// `kty` is not RSA, EC or oct.
    #[error("key type `{0}` is not supported")]
    UnsupportedKeyType(String),
    /// `crv` is not P-256.
    #[error("curve `{0}` is not supported")]
    UnsupportedCurve(String),
    /// `use` or `key_ops` say the key is not for verifying signatures.
    #[error("the key is not for verifying signatures")]
    NotForSignatures,
    /// `alg` names an algorithm this platform does not verify.
    #[error("algorithm `{0}` is not supported")]
    UnsupportedAlgorithm(String),
    /// `alg` names an algorithm of another key family.
    #[error("algorithm {alg} does not fit the key type")]
    AlgorithmDoesNotFitKey {
        /// The pinned algorithm.
        alg: &'static str,
    },
    /// The RSA modulus is too small or too large.
    #[error("the RSA modulus has {bits} bits; 2048 to 4096 accepted")]
    RsaModulusSize {
        /// Modulus size.
        bits: usize,
    },
    /// The RSA public exponent is not a small odd number above 1.
    #[error("the RSA public exponent is not acceptable")]
    RsaExponent,
    /// An EC coordinate is not 32 bytes.
    #[error("a P-256 coordinate is not 32 bytes")]
    CoordinateLength,
    /// A shared secret arrived in a published key set.
    #[error("symmetric keys are only accepted from configuration")]
    SymmetricKeyFromRemote,
    /// An HMAC secret is shorter than the hash output.
    #[error("the secret is {len} bytes; at least {min} required")]
    SecretTooShort {
        /// Secret length.
        len: usize,
        /// Minimum.
        min: usize,
    },
}

/// Why a key set document was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The document is not JSON.
    #[error("the key set is not JSON")]
    NotJson,
    /// The document has no `keys` array.
    #[error("the key set has no `keys` array")]
    NoKeysArray,
    /// The document is larger than [`MAX_JWKS_BYTES`].
    #[error("the key set is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// No key of the set is usable.
    #[error("no usable key in the set ({skipped} skipped)")]
    NoUsableKey {
        /// Keys skipped as unusable.
        skipped: usize,
    },
}

/// A set of usable keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

/// A key that was skipped, and why (for the log; carries no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// The skipped key's id, if it had one.
    pub kid: Option<String>,
    /// Why it was skipped.
    pub reason: JwkError,
}

/// A parsed key set and the keys left out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedJwks {
    /// The usable keys.
    pub keys: KeySet,
    /// The unusable ones.
    pub skipped: Vec<SkippedKey>,
}

impl KeySet {
    /// A set of the given keys.
    pub fn from_keys(keys: Vec<Jwk>) -> Self {
        Self { keys }
    }

    /// The keys, in document order.
    pub fn iter(&self) -> impl Iterator<Item = &Jwk> {
        self.keys.iter()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// This set followed by `other`'s keys (configured keys first, then fetched ones).
    pub fn merged(&self, other: &KeySet) -> KeySet {
        let mut keys = self.keys.clone();
        keys.extend(other.keys.iter().cloned());
        KeySet { keys }
    }
}

/// Parses a JWKS document (`{"keys":[...]}`).
pub fn parse_jwks(document: &str, source: KeySource) -> Result<ParsedJwks, JwksError> {
    if document.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    let value: serde_json::Value =
        serde_json::from_str(document).map_err(|_| JwksError::NotJson)?;
    let entries = value
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or(JwksError::NoKeysArray)?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for entry in entries {
        match RawJwk::deserialize(entry) {
            Ok(raw) => {
                let kid = raw.kid.clone();
                match raw.into_jwk(source) {
                    Ok(jwk) => keys.push(jwk),
                    Err(reason) => skipped.push(SkippedKey { kid, reason }),
                }
            }
            Err(_) => skipped.push(SkippedKey {
                kid: entry
                    .get("kid")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned),
                reason: JwkError::Malformed,
            }),
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey {
            skipped: skipped.len(),
        });
    }
    Ok(ParsedJwks {
        keys: KeySet { keys },
        skipped,
    })
}

/// A JWK as it appears on the wire; members this platform does not use are ignored.
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    k: Option<String>,
}

impl RawJwk {
    fn into_jwk(self, source: KeySource) -> Result<Jwk, JwkError> {
        if self.use_.as_deref().is_some_and(|use_| use_ != "sig") {
            return Err(JwkError::NotForSignatures);
        }
        if let Some(ops) = &self.key_ops
            && !ops.iter().any(|op| op == "verify")
        {
            return Err(JwkError::NotForSignatures);
        }
        let alg = match self.alg.as_deref() {
            None => None,
            Some(name) => Some(
                Algorithm::from_name(name)
                    .ok_or_else(|| JwkError::UnsupportedAlgorithm(name.to_owned()))?,
            ),
        };
        let kty = self.kty.as_deref().ok_or(JwkError::MissingMember("kty"))?;
        let jwk = match kty {
            "RSA" => {
                let n = decode_member("n", self.n.as_deref())?;
                let e = decode_member("e", self.e.as_deref())?;
                Jwk::rsa(self.kid, &n, &e)?
            }
            "EC" => {
                let crv = self.crv.as_deref().ok_or(JwkError::MissingMember("crv"))?;
                if crv != "P-256" {
                    return Err(JwkError::UnsupportedCurve(crv.to_owned()));
                }
                let x = coordinate("x", self.x.as_deref())?;
                let y = coordinate("y", self.y.as_deref())?;
                Jwk::ec_p256(self.kid, x, y)
            }
            "oct" => {
                if source == KeySource::Remote {
                    return Err(JwkError::SymmetricKeyFromRemote);
                }
                let k = decode_member("k", self.k.as_deref())?;
                Jwk::hmac(self.kid, Secret::new(k))?
            }
            other => return Err(JwkError::UnsupportedKeyType(other.to_owned())),
        };
        jwk.with_alg(alg)
    }
}

fn decode_member(name: &'static str, value: Option<&str>) -> Result<Vec<u8>, JwkError> {
    let value = value.ok_or(JwkError::MissingMember(name))?;
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| JwkError::BadEncoding(name))
}

fn coordinate(name: &'static str, value: Option<&str>) -> Result<[u8; 32], JwkError> {
    decode_member(name, value)?
        .try_into()
        .map_err(|_| JwkError::CoordinateLength)
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn bit_length(big_endian: &[u8]) -> usize {
    let digits = strip_leading_zeros(big_endian);
    match digits.first() {
        None => 0,
        Some(first) => digits.len() * 8 - first.leading_zeros() as usize,
    }
}

/// How long a fetched key set is trusted, and how often it may be fetched again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// A fetched set is fresh for this long; after that it is fetched again on use.
    pub ttl_ms: u64,
    /// Fetches (on expiry or on an unknown `kid`) are at least this far apart, so a flood of
    /// tokens with invented key ids cannot turn into a flood of requests to the key server.
    pub min_refetch_interval_ms: u64,
}

/// What is known about the cached copy of a key set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheState {
    /// When the cached copy was fetched, if there is one.
    pub fetched_at_ms: Option<u64>,
    /// When a fetch was last started, successful or not.
    pub last_attempt_ms: Option<u64>,
}

/// What to do about the key set before verifying a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// The cached copy is fresh and holds the token's key.
    UseCached,
    /// Fetch the set now (then look the key up again).
    Fetch,
    /// A fetch would be too soon after the last one: use what is cached, however stale.
    Throttled {
        /// When the next fetch becomes allowed.
        retry_in_ms: u64,
    },
}

impl CacheState {
    /// Whether the cached copy is younger than the policy's TTL.
    pub fn is_fresh(&self, now_ms: u64, policy: &CachePolicy) -> bool {
        self.fetched_at_ms
            .is_some_and(|at| now_ms.saturating_sub(at) < policy.ttl_ms)
    }

    /// Decides whether to fetch: only when the copy is stale or lacks the token's key, and never
    /// sooner than `min_refetch_interval_ms` after the previous attempt.
    pub fn refresh(&self, key_found: bool, now_ms: u64, policy: &CachePolicy) -> Refresh {
        if key_found && self.is_fresh(now_ms, policy) {
            return Refresh::UseCached;
        }
        match self.last_attempt_ms {
            Some(at) if now_ms.saturating_sub(at) < policy.min_refetch_interval_ms => {
                Refresh::Throttled {
                    retry_in_ms: policy.min_refetch_interval_ms - now_ms.saturating_sub(at),
                }
            }
            _ => Refresh::Fetch,
        }
    }

    /// The newer of two views of the same cache (this isolate's memory and KV).
    pub fn merge(self, other: CacheState) -> CacheState {
        CacheState {
            fetched_at_ms: self.fetched_at_ms.max(other.fetched_at_ms),
            last_attempt_ms: self
                .last_attempt_ms
                .max(other.last_attempt_ms)
                .max(other.fetched_at_ms),
        }
    }
}

/// A fetched key set as it is kept in KV between isolates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredJwks {
    /// When it was fetched.
    pub fetched_at_ms: u64,
    /// The document exactly as the key server sent it (parsed again on load).
    pub jwks: String,
}

/// KV key of a JWKS URL's cached copy.
pub fn storage_key(jwks_url: &str) -> String {
    let digest = Sha256::digest(jwks_url.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("jwks:v1:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 7515 Appendix A.2's RSA public key.
    const RFC7515_A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";

    fn jwks(keys: &str) -> String {
        format!(r#"{{"keys":[{keys}]}}"#)
    }

    #[test]
    fn parses_rsa_and_ec_keys_of_a_cloudflare_access_style_set() {
        let document = jwks(&format!(
            r#"{{"kid":"a","kty":"RSA","alg":"RS256","use":"sig","e":"AQAB","n":"{RFC7515_A2_N}"}},
               {{"kid":"b","kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}}"#
        ));
        let parsed = parse_jwks(&document, KeySource::Remote).expect("parses");
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        let keys: Vec<_> = parsed.keys.iter().collect();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].kid(), Some("a"));
        assert_eq!(keys[0].family(), KeyFamily::Rsa);
        assert_eq!(keys[0].declared_alg(), Some(Algorithm::Rs256));
        assert!(keys[0].allows(Algorithm::Rs256));
        assert!(!keys[0].allows(Algorithm::Hs256));
        assert_eq!(keys[1].family(), KeyFamily::EcP256);
        assert!(keys[1].allows(Algorithm::Es256));
        assert!(!keys[1].allows(Algorithm::Rs256));
        assert_ne!(keys[0].fingerprint(), keys[1].fingerprint());
    }

    #[test]
    fn unusable_keys_are_skipped_with_their_reason() {
        let cases: Vec<(String, JwkError)> = vec![
            (
                format!(r#"{{"kid":"enc","kty":"RSA","use":"enc","e":"AQAB","n":"{RFC7515_A2_N}"}}"#),
                JwkError::NotForSignatures,
            ),
            (
                format!(r#"{{"kid":"ops","kty":"RSA","key_ops":["encrypt"],"e":"AQAB","n":"{RFC7515_A2_N}"}}"#),
                JwkError::NotForSignatures,
            ),
            (
                format!(r#"{{"kid":"ps","kty":"RSA","alg":"PS256","e":"AQAB","n":"{RFC7515_A2_N}"}}"#),
                JwkError::UnsupportedAlgorithm("PS256".into()),
            ),
            (
                format!(r#"{{"kid":"mix","kty":"RSA","alg":"ES256","e":"AQAB","n":"{RFC7515_A2_N}"}}"#),
                JwkError::AlgorithmDoesNotFitKey { alg: "ES256" },
            ),
            (
                r#"{"kid":"small","kty":"RSA","e":"AQAB","n":"AQAB"}"#.into(),
                JwkError::RsaModulusSize { bits: 17 },
            ),
            (
                format!(r#"{{"kid":"even","kty":"RSA","e":"AQAA","n":"{RFC7515_A2_N}"}}"#),
                JwkError::RsaExponent,
            ),
            (
                r#"{"kid":"p384","kty":"EC","crv":"P-384","x":"AA","y":"AA"}"#.into(),
                JwkError::UnsupportedCurve("P-384".into()),
            ),
            (
                r#"{"kid":"short","kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}"#.into(),
                JwkError::CoordinateLength,
            ),
            (
                r#"{"kid":"pad","kty":"RSA","e":"AQAB=","n":"AA"}"#.into(),
                JwkError::BadEncoding("e"),
            ),
            (
                r#"{"kid":"okp","kty":"OKP","crv":"Ed25519","x":"AA"}"#.into(),
                JwkError::UnsupportedKeyType("OKP".into()),
            ),
            (
                r#"{"kid":"nokty"}"#.into(),
                JwkError::MissingMember("kty"),
            ),
            (
                r#"{"kid":"secret","kty":"oct","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}"#.into(),
                JwkError::SymmetricKeyFromRemote,
            ),
            (r#"{"kid":7,"kty":"RSA"}"#.into(), JwkError::Malformed),
        ];
        for (key, reason) in cases {
            let document = jwks(&format!(
                r#"{key}, {{"kid":"good","kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}}"#
            ));
            let parsed = parse_jwks(&document, KeySource::Remote).expect("the good key remains");
            assert_eq!(parsed.keys.len(), 1, "{key}");
            assert_eq!(parsed.skipped.len(), 1, "{key}");
            assert_eq!(parsed.skipped[0].reason, reason, "{key}");
        }
    }

    #[test]
    fn symmetric_keys_are_accepted_from_configuration_only_when_long_enough() {
        let long =
            r#"{"kid":"h","kty":"oct","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}"#;
        let parsed = parse_jwks(&jwks(long), KeySource::Configured).expect("parses");
        assert!(parsed.keys.iter().all(|k| k.allows(Algorithm::Hs256)));
        let short = r#"{"kid":"h","kty":"oct","k":"c2hvcnQ"}"#;
        assert_eq!(
            parse_jwks(&jwks(short), KeySource::Configured),
            Err(JwksError::NoUsableKey { skipped: 1 })
        );
    }

    #[test]
    fn whole_document_failures() {
        assert_eq!(
            parse_jwks("nope", KeySource::Remote),
            Err(JwksError::NotJson)
        );
        assert_eq!(
            parse_jwks("{}", KeySource::Remote),
            Err(JwksError::NoKeysArray)
        );
        assert_eq!(
            parse_jwks(r#"{"keys":[]}"#, KeySource::Remote),
            Err(JwksError::NoUsableKey { skipped: 0 })
        );
        let huge = format!(r#"{{"keys":[],"pad":"{}"}}"#, "a".repeat(MAX_JWKS_BYTES));
        assert_eq!(
            parse_jwks(&huge, KeySource::Remote),
            Err(JwksError::TooLarge)
        );
    }

    #[test]
    fn debug_output_carries_no_key_material() {
        let key = Jwk::hmac(None, Secret::new(vec![b'z'; 40])).expect("long enough");
        let shown = format!("{key:?}");
        assert!(!shown.contains("zzzz"), "{shown}");
    }

    const POLICY: CachePolicy = CachePolicy {
        ttl_ms: 600_000,
        min_refetch_interval_ms: 30_000,
    };

    #[test]
    fn refresh_decisions() {
        let never = CacheState::default();
        assert_eq!(never.refresh(false, 1_000, &POLICY), Refresh::Fetch);

        let fetched = CacheState {
            fetched_at_ms: Some(1_000),
            last_attempt_ms: Some(1_000),
        };
        // Fresh and the key is there: no network.
        assert_eq!(fetched.refresh(true, 2_000, &POLICY), Refresh::UseCached);
        // Unknown kid right after a fetch: throttled.
        assert_eq!(
            fetched.refresh(false, 11_000, &POLICY),
            Refresh::Throttled {
                retry_in_ms: 20_000
            }
        );
        // Unknown kid once the interval passed: fetch again (key rotation).
        assert_eq!(fetched.refresh(false, 31_000, &POLICY), Refresh::Fetch);
        // Stale: fetch even though the key is known.
        assert_eq!(fetched.refresh(true, 601_000, &POLICY), Refresh::Fetch);
        // A clock that went backwards counts as "just now", never as a reason to fetch.
        assert!(matches!(
            fetched.refresh(false, 500, &POLICY),
            Refresh::Throttled { .. }
        ));
    }

    #[test]
    fn merge_keeps_the_newest_copy_and_attempt() {
        let memory = CacheState {
            fetched_at_ms: Some(10),
            last_attempt_ms: Some(50),
        };
        let kv = CacheState {
            fetched_at_ms: Some(40),
            last_attempt_ms: None,
        };
        assert_eq!(
            memory.merge(kv),
            CacheState {
                fetched_at_ms: Some(40),
                last_attempt_ms: Some(50)
            }
        );
        assert_eq!(
            CacheState::default().merge(kv).last_attempt_ms,
            Some(40),
            "another isolate's fetch counts as an attempt"
        );
    }

    #[test]
    fn storage_key_is_stable_and_hides_the_url() {
        let key = storage_key("https://team.cloudflareaccess.com/cdn-cgi/access/certs");
        assert!(key.starts_with("jwks:v1:"));
        assert_eq!(key.len(), "jwks:v1:".len() + 32);
        assert!(!key.contains("team"));
        assert_eq!(
            key,
            storage_key("https://team.cloudflareaccess.com/cdn-cgi/access/certs")
        );
    }

    proptest! {
        /// Whatever the sequence of requests, two fetches are never closer than the minimum
        /// interval: an attacker inventing key ids cannot make the Worker hammer the key server.
        #[test]
        fn fetches_are_never_closer_than_the_minimum_interval(
            steps in proptest::collection::vec((0u64..20_000, any::<bool>(), any::<bool>()), 1..200)
        ) {
            let mut state = CacheState::default();
            let mut now = 1_000_000u64;
            let mut last_fetch: Option<u64> = None;
            for (advance, key_found, fetch_succeeds) in steps {
                now += advance;
                if state.refresh(key_found, now, &POLICY) == Refresh::Fetch {
                    if let Some(previous) = last_fetch {
                        prop_assert!(now - previous >= POLICY.min_refetch_interval_ms);
                    }
                    last_fetch = Some(now);
                    state.last_attempt_ms = Some(now);
                    if fetch_succeeds {
                        state.fetched_at_ms = Some(now);
                    }
                }
            }
        }

        /// A fresh copy holding the key never causes a fetch.
        #[test]
        fn fresh_known_keys_never_fetch(fetched in 0u64..1_000_000, age in 0u64..600_000) {
            let state = CacheState { fetched_at_ms: Some(fetched), last_attempt_ms: Some(fetched) };
            prop_assert_eq!(state.refresh(true, fetched + age, &POLICY), Refresh::UseCached);
        }
    }
}
