//! Checking a JWS signature: the algorithms the platform accepts, the [`Verifier`] seam, HMAC
//! (always pure Rust: small and fast) and, with the `rust-crypto` feature, [`RustCrypto`] for
//! RS256/ES256. auth-validator plugs the runtime's WebCrypto into the same seam. Telnyx's
//! Ed25519 webhook signatures have a seam of their own, [`Ed25519Verifier`].

use std::future::Future;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::jwks::Jwk;

/// A JWS `alg` this platform verifies. Everything else is refused before a key is touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// HMAC SHA-256 with a shared secret.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256, signature as `r || s` (64 bytes).
    Es256,
}

/// The kind of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    /// A shared secret (`kty: oct`).
    Hmac,
    /// An RSA public key (`kty: RSA`).
    Rsa,
    /// A P-256 public key (`kty: EC`, `crv: P-256`).
    EcP256,
}

impl Algorithm {
    /// Every supported algorithm, in the default allow-list order.
    pub const ALL: [Algorithm; 3] = [Algorithm::Rs256, Algorithm::Es256, Algorithm::Hs256];

    /// Parses a JWS `alg` name (exact, case-sensitive, as RFC 7515 requires).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "HS256" => Some(Self::Hs256),
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            _ => None,
        }
    }

    /// The JWS `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }

    /// The key family this algorithm verifies with.
    pub fn family(self) -> KeyFamily {
        match self {
            Self::Hs256 => KeyFamily::Hmac,
            Self::Rs256 => KeyFamily::Rsa,
            Self::Es256 => KeyFamily::EcP256,
        }
    }
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature is well-formed but was not made by this key over this message.
    #[error("the signature does not match")]
    Mismatch,
    /// The signature has the wrong length for the algorithm and key.
    #[error("the signature is {actual} bytes; {expected} expected")]
    WrongLength {
        /// Bytes the algorithm produces with this key.
        expected: usize,
        /// Bytes received.
        actual: usize,
    },
    /// The key cannot verify this algorithm (wrong family, or rejected by the crypto backend).
    #[error("the key cannot be used for this algorithm")]
    UnusableKey,
    /// The crypto backend failed for a reason that is not the token's fault.
    #[error("the signature could not be checked")]
    BackendFailed,
}

/// Checks signatures. Implemented by [`RustCrypto`] (native, tests) and by auth-validator's
/// WebCrypto verifier; the JWT rules in [`crate::jwt`] are written against this seam only.
pub trait Verifier {
    /// `Ok` when `signature` is `key`'s `alg` signature of `message`.
    fn verify(
        &self,
        alg: Algorithm,
        key: &Jwk,
        message: &[u8],
        signature: &[u8],
    ) -> impl Future<Output = Result<(), SignatureError>>;
}

/// Checks Ed25519 signatures (RFC 8032), the scheme Telnyx signs its webhooks with. Implemented
/// by [`RustCrypto`] (native, tests) and by auth-validator's WebCrypto verifier (workerd's
/// `crypto.subtle` has `Ed25519`), so the Worker's wasm carries no curve arithmetic.
pub trait Ed25519Verifier {
    /// `Ok` when `signature` is `public_key`'s signature of `message`.
    fn verify_ed25519(
        &self,
        public_key: &[u8; ED25519_KEY_LEN],
        message: &[u8],
        signature: &[u8; ED25519_LEN],
    ) -> impl Future<Output = Result<(), SignatureError>>;
}

/// Length of an Ed25519 public key.
pub const ED25519_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const ED25519_LEN: usize = 64;

/// Length of an HS256 MAC.
pub const HS256_LEN: usize = 32;
/// Length of an ES256 signature (`r || s`).
pub const ES256_LEN: usize = 64;

/// Verifies an HMAC-SHA256 tag in constant time.
pub fn verify_hs256(secret: &[u8], message: &[u8], tag: &[u8]) -> Result<(), SignatureError> {
    if tag.len() != HS256_LEN {
        return Err(SignatureError::WrongLength {
            expected: HS256_LEN,
            actual: tag.len(),
        });
    }
    let mut mac = hmac_sha256(secret);
    mac.update(message);
    // `verify_slice` compares in constant time.
    mac.verify_slice(tag).map_err(|_| SignatureError::Mismatch)
}

/// HMAC-SHA256 of `message` (used to sign session tokens and in tests).
pub fn hs256(secret: &[u8], message: &[u8]) -> [u8; HS256_LEN] {
    let mut mac = hmac_sha256(secret);
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn hmac_sha256(secret: &[u8]) -> Hmac<Sha256> {
    // Proven invariant: HMAC takes keys of any length (long ones are hashed first).
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length")
}

/// Pure-Rust RSA and ECDSA verification (`rsa`, `p256`), plus HMAC.
#[cfg(feature = "rust-crypto")]
#[derive(Debug, Clone, Copy, Default)]
pub struct RustCrypto;

#[cfg(feature = "rust-crypto")]
impl RustCrypto {
    /// The synchronous check behind [`Verifier::verify`].
    pub fn verify_now(
        &self,
        alg: Algorithm,
        key: &Jwk,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        use crate::jwks::KeyMaterial;
        match (alg, key.material()) {
            (Algorithm::Hs256, KeyMaterial::Hmac(secret)) => {
                verify_hs256(secret.expose(), message, signature)
            }
            (Algorithm::Rs256, KeyMaterial::Rsa { n, e }) => verify_rs256(n, e, message, signature),
            (Algorithm::Es256, KeyMaterial::EcP256 { x, y }) => {
                verify_es256(x, y, message, signature)
            }
            _ => Err(SignatureError::UnusableKey),
        }
    }
}

#[cfg(feature = "rust-crypto")]
impl Verifier for RustCrypto {
    fn verify(
        &self,
        alg: Algorithm,
        key: &Jwk,
        message: &[u8],
        signature: &[u8],
    ) -> impl Future<Output = Result<(), SignatureError>> {
        std::future::ready(self.verify_now(alg, key, message, signature))
    }
}

#[cfg(feature = "rust-crypto")]
impl Ed25519Verifier for RustCrypto {
    fn verify_ed25519(
        &self,
        public_key: &[u8; ED25519_KEY_LEN],
        message: &[u8],
        signature: &[u8; ED25519_LEN],
    ) -> impl Future<Output = Result<(), SignatureError>> {
        use ed25519_dalek::{Signature, VerifyingKey};
        let verdict = VerifyingKey::from_bytes(public_key)
            .map_err(|_| SignatureError::UnusableKey)
            .and_then(|key| {
                // `verify_strict` refuses the malleable and small-order forms RFC 8032 permits.
                key.verify_strict(message, &Signature::from_bytes(signature))
                    .map_err(|_| SignatureError::Mismatch)
            });
        std::future::ready(verdict)
    }
}

#[cfg(feature = "rust-crypto")]
fn verify_rs256(
    n: &[u8],
    e: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    use rsa::traits::PublicKeyParts;
    use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
    use sha2::Digest;

    let key = RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
        .map_err(|_| SignatureError::UnusableKey)?;
    if signature.len() != key.size() {
        return Err(SignatureError::WrongLength {
            expected: key.size(),
            actual: signature.len(),
        });
    }
    let digest = Sha256::digest(message);
    key.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, signature)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(feature = "rust-crypto")]
fn verify_es256(
    x: &[u8; 32],
    y: &[u8; 32],
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    use p256::ecdsa::signature::Verifier as _;
    use p256::ecdsa::{Signature, VerifyingKey};

    if signature.len() != ES256_LEN {
        return Err(SignatureError::WrongLength {
            expected: ES256_LEN,
            actual: signature.len(),
        });
    }
    // SEC1 uncompressed point: 0x04 || x || y; parsing checks that it lies on the curve.
    let mut sec1 = [0u8; 65];
    sec1[0] = 0x04;
    sec1[1..33].copy_from_slice(x);
    sec1[33..].copy_from_slice(y);
    let key = VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| SignatureError::UnusableKey)?;
    // `from_slice` refuses r or s of zero or not below the group order.
    let signature = Signature::from_slice(signature).map_err(|_| SignatureError::Mismatch)?;
    key.verify(message, &signature)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip_and_are_case_sensitive() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
        }
        assert_eq!(Algorithm::from_name("hs256"), None);
        assert_eq!(Algorithm::from_name("none"), None);
        assert_eq!(Algorithm::from_name("RS384"), None);
    }

    #[test]
    fn hs256_matches_rfc4231_test_case_2() {
        // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
        let tag = hs256(b"Jefe", b"what do ya want for nothing?");
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
        assert_eq!(
            verify_hs256(b"Jefe", b"what do ya want for nothing?", &tag),
            Ok(())
        );
    }

    #[test]
    fn hs256_rejects_wrong_tags_and_lengths() {
        let mut tag = hs256(b"k", b"m");
        tag[31] ^= 1;
        assert_eq!(
            verify_hs256(b"k", b"m", &tag),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_hs256(b"k", b"m", &tag[..31]),
            Err(SignatureError::WrongLength {
                expected: 32,
                actual: 31
            })
        );
    }
}
