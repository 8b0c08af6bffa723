//! Helpers for this crate's tests: signing tokens with generated keys, running the (always
//! ready) pure verifier's futures, encoding.

use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::SigningKey;
use rsa::RsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::Value;

use crate::jwks::Jwk;
use crate::secret::Secret;
use crate::signature::hs256;

/// Runs a future that is ready at once (the pure-Rust verifier's are).
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the pure verifier never waits"),
    }
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", b64(header.to_string()), b64(claims.to_string()))
}

pub fn sign_hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = signing_input(header, claims);
    let tag = hs256(secret, input.as_bytes());
    format!("{input}.{}", b64(tag))
}

pub fn sign_rs256(header: &Value, claims: &Value, key: &RsaPrivateKey) -> String {
    use rsa::pkcs1v15::SigningKey as RsaSigningKey;
    use rsa::signature::{SignatureEncoding, Signer};
    let input = signing_input(header, claims);
    let signer = RsaSigningKey::<sha2::Sha256>::new(key.clone());
    let signature = signer.sign(input.as_bytes());
    format!("{input}.{}", b64(signature.to_bytes()))
}

pub fn sign_es256(header: &Value, claims: &Value, key: &SigningKey) -> String {
    use p256::ecdsa::Signature;
    use p256::ecdsa::signature::Signer;
    let input = signing_input(header, claims);
    let signature: Signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(signature.to_bytes()))
}

/// One 2048-bit key per test binary: generating RSA keys is slow.
pub fn rsa_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA key generation")
    })
}

/// A second RSA key, for "signed by someone else".
pub fn other_rsa_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA key generation")
    })
}

pub fn rsa_jwk(kid: &str, key: &RsaPrivateKey) -> Jwk {
    Jwk::rsa(
        Some(kid.into()),
        &key.n().to_bytes_be(),
        &key.e().to_bytes_be(),
    )
    .expect("valid RSA key")
}

pub fn ec_key() -> SigningKey {
    SigningKey::random(&mut rand::rngs::OsRng)
}

pub fn ec_jwk(kid: &str, key: &SigningKey) -> Jwk {
    let point = key.verifying_key().to_encoded_point(false);
    let sec1 = point.as_bytes();
    let x: [u8; 32] = sec1[1..33].try_into().expect("32 bytes");
    let y: [u8; 32] = sec1[33..65].try_into().expect("32 bytes");
    Jwk::ec_p256(Some(kid.into()), x, y)
}

pub fn hmac_jwk(kid: Option<&str>, secret: &[u8]) -> Jwk {
    Jwk::hmac(kid.map(str::to_owned), Secret::new(secret)).expect("long enough secret")
}

/// An active API call of tenant `t` with agent `a`, started at `started_at_ms`.
pub fn call(id: &str, started_at_ms: u64) -> crate::call::Call {
    crate::call::Call {
        id: id.into(),
        tenant_id: "t".into(),
        agent_id: "a".into(),
        source: crate::call::CallSource::Api,
        carrier_call_sid: None,
        from: None,
        to: None,
        region: "us-east-1".into(),
        status: crate::call::CallStatus::Active,
        turn_count: 0,
        started_at_ms,
        ended_at_ms: None,
        end_reason: None,
        caller: crate::call::CallerDetails::default(),
        direction: crate::call::CallDirection::Inbound,
        carrier: None,
        answered_by: None,
        voicemail_message: None,
        voicemail_left_at_ms: None,
        metadata: None,
    }
}
