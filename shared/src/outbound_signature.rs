//! `X-Aybiza-Signature`: how a tenant's server knows a request came from this platform — the
//! origin's tool calls now, its webhooks next — and was not replayed later.
//!
//! The value is `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, each `v1` the lowercase hex
//! HMAC-SHA256 of `"{t}.{body}"` (the timestamp, a full stop, the raw body bytes) keyed with a
//! signing secret of the tenant's. While a rotated secret's grace lasts, the request carries
//! one `v1` per secret, so a receiver holding either accepts it. A receiver:
//! 1. splits the value on `,` into `key=value` pairs (unknown keys are ignored, so the scheme
//!    can gain versions);
//! 2. refuses a `t` farther than its tolerance from its own clock, in either direction;
//! 3. accepts when any `v1` equals its own HMAC, compared in constant time.
//!
//! Secrets are `whsec_` followed by 43 base64url characters (32 random bytes); the key is the
//! whole string's UTF-8 bytes, so receivers use it as it is shown. The scheme follows the
//! shape Stripe made familiar (`t=…,v1=…` over `"{t}.{payload}"`), so tenants' existing
//! verification code fits.

use base64::Engine;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::signing::{hex, hex_value};

/// The header carrying the signature (lowercase, as HTTP/2 sends it).
pub const HEADER: &str = "x-aybiza-signature";
/// Prefix of every signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes behind a secret.
pub const SECRET_BYTES: usize = 32;
/// Tolerance the documentation recommends to receivers: five minutes.
pub const RECOMMENDED_TOLERANCE_SECS: u64 = 300;

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `t=`, two of them, or one that is not whole Unix seconds.
    #[error("the signature has no single t=<unix seconds>")]
    Malformed,
    /// No `v1=` value at all.
    #[error("the signature has no v1 value")]
    NoSignature,
    /// The timestamp is farther from now than the tolerance.
    #[error("the signature's timestamp is {skew_secs} s away from now")]
    OutsideTolerance {
        /// Distance between `t` and the verifier's clock.
        skew_secs: u64,
    },
    /// No `v1` matches any secret.
    #[error("no v1 signature matches")]
    Mismatch,
}

/// The hex HMAC-SHA256 of `"{timestamp}.{body}"` under `secret`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    hex(&mac(secret, timestamp, body).finalize().into_bytes())
}

/// The header value for `body` at `timestamp`: one `v1` per secret, in the order given (the
/// current secret first, then one still in its grace after a rotation).
pub fn sign(secrets: &[&[u8]], timestamp: u64, body: &[u8]) -> String {
    let mut value = format!("t={timestamp}");
    for secret in secrets {
        value.push_str(",v1=");
        value.push_str(&signature(secret, timestamp, body));
    }
    value
}

/// Checks a header value against the receiver's `secrets` (several during a rotation) at
/// `now` (Unix seconds); returns the signed timestamp.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[&[u8]],
    now: u64,
    tolerance_secs: u64,
) -> Result<u64, SignatureError> {
    let mut timestamp = None;
    let mut tags: Vec<[u8; 32]> = Vec::new();
    let mut any_v1 = false;
    for part in header.split(',') {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" => {
                let parsed = value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| SignatureError::Malformed)?;
                if timestamp.replace(parsed).is_some() {
                    return Err(SignatureError::Malformed);
                }
            }
            "v1" => {
                any_v1 = true;
                // A value that is not 64 hex digits cannot match; it is skipped, not fatal.
                if let Some(tag) = tag_of(value.trim()) {
                    tags.push(tag);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if !any_v1 {
        return Err(SignatureError::NoSignature);
    }
    let skew_secs = now.abs_diff(timestamp);
    if skew_secs > tolerance_secs {
        return Err(SignatureError::OutsideTolerance { skew_secs });
    }
    let mut matched = false;
    for secret in secrets {
        for tag in &tags {
            // Every pair is tried, so timing does not tell which matched.
            matched |= mac(secret, timestamp, body).verify_slice(tag).is_ok();
        }
    }
    if matched {
        Ok(timestamp)
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// A new secret from [`SECRET_BYTES`] random bytes (the caller's CSPRNG).
pub fn secret_from(random: &[u8; SECRET_BYTES]) -> String {
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    )
}

/// Whether `text` has the shape of a secret made by [`secret_from`].
pub fn is_secret(text: &str) -> bool {
    text.strip_prefix(SECRET_PREFIX).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// What may be shown of a secret: its prefix and last four characters.
pub fn hint(secret: &str) -> String {
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{SECRET_PREFIX}…{tail}")
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn tag_of(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut tag = [0_u8; 32];
    for (byte, pair) in tag.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test_0123456789abcdefghijklmnopqrstuv";
    const PREVIOUS: &[u8] = b"whsec_previous_abcdefghijklmnopqrstuvwxyz0123";
    const BODY: &[u8] = br#"{"tool":"lookup_order","input":{"id":"42"}}"#;
    const T: u64 = 1_700_000_000;
    // Computed independently: python3 -c 'import hmac,hashlib;
    // print(hmac.new(KEY, b"1700000000." + BODY, hashlib.sha256).hexdigest())'
    const V_SECRET: &str = "a32839e75272bbdbbfeccdb4457b3697c864a0c3ced0bb3d5cceb2665385d722";
    const V_PREVIOUS: &str = "efe79b87d4b3443a53aab9a0d2d153b78ffc7531ebaa058cd8359f2a7a7d7aa5";

    #[test]
    fn fixed_vectors() {
        let cases: [(&[u8], u64, &[u8], &str); 4] = [
            (SECRET, T, BODY, V_SECRET),
            (PREVIOUS, T, BODY, V_PREVIOUS),
            (
                SECRET,
                T,
                b"",
                "1e298f3b12bc624ee9eb24df62305da7d801216d67a6fff7b369d4e4a584a0b0",
            ),
            (
                SECRET,
                T + 300,
                "héllo".as_bytes(),
                "9553953dc3888c33cc938d23efddf500e74cd0ec330e6f20fe7121ffa5f0bb22",
            ),
        ];
        for (secret, t, body, expected) in cases {
            assert_eq!(signature(secret, t, body), expected);
        }
        assert_eq!(
            sign(&[SECRET, PREVIOUS], T, BODY),
            format!("t={T},v1={V_SECRET},v1={V_PREVIOUS}")
        );
    }

    #[test]
    fn verification_table() {
        let both = format!("t={T},v1={V_SECRET},v1={V_PREVIOUS}");
        let only_new = format!("t={T},v1={V_SECRET}");
        let only_old = format!("t={T},v1={V_PREVIOUS}");
        // (header, the receiver's secrets, its clock, what it reads)
        type Case<'a> = (String, Vec<&'a [u8]>, u64, Result<u64, SignatureError>);
        let cases: Vec<Case> = vec![
            (only_new.clone(), vec![SECRET], T, Ok(T)),
            // Rotation: a receiver still on the old secret accepts the two-value header…
            (both.clone(), vec![PREVIOUS], T + 10, Ok(T)),
            // …and one already on the new secret too, as does one holding both.
            (both.clone(), vec![SECRET], T, Ok(T)),
            (only_old.clone(), vec![SECRET, PREVIOUS], T, Ok(T)),
            // Spaces after commas, unknown keys and a garbage v1 beside a good one are fine.
            (
                format!("t={T}, v0=abc, v1=zz, v1={V_SECRET}"),
                vec![SECRET],
                T,
                Ok(T),
            ),
            (only_old, vec![SECRET], T, Err(SignatureError::Mismatch)),
            (
                format!("t={},v1={V_SECRET}", T + 1),
                vec![SECRET],
                T,
                Err(SignatureError::Mismatch),
            ),
            // The tolerance holds both ways, inclusive.
            (only_new.clone(), vec![SECRET], T + 300, Ok(T)),
            (
                only_new.clone(),
                vec![SECRET],
                T + 301,
                Err(SignatureError::OutsideTolerance { skew_secs: 301 }),
            ),
            (
                only_new.clone(),
                vec![SECRET],
                T - 301,
                Err(SignatureError::OutsideTolerance { skew_secs: 301 }),
            ),
            (
                format!("v1={V_SECRET}"),
                vec![SECRET],
                T,
                Err(SignatureError::Malformed),
            ),
            (
                format!("t=soon,v1={V_SECRET}"),
                vec![SECRET],
                T,
                Err(SignatureError::Malformed),
            ),
            (
                format!("t={T},t={T},v1={V_SECRET}"),
                vec![SECRET],
                T,
                Err(SignatureError::Malformed),
            ),
            (
                format!("t={T}"),
                vec![SECRET],
                T,
                Err(SignatureError::NoSignature),
            ),
            (
                String::new(),
                vec![SECRET],
                T,
                Err(SignatureError::Malformed),
            ),
        ];
        for (header, secrets, now, expected) in cases {
            assert_eq!(
                verify(&header, BODY, &secrets, now, RECOMMENDED_TOLERANCE_SECS),
                expected,
                "{header}"
            );
        }
    }

    #[test]
    fn a_changed_body_fails() {
        let header = sign(&[SECRET], T, BODY);
        assert_eq!(
            verify(&header, b"{}", &[SECRET], T, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn secrets_have_one_shape_and_show_only_a_hint() {
        let secret = secret_from(&[7; SECRET_BYTES]);
        assert!(is_secret(&secret), "{secret}");
        assert_eq!(secret.len(), SECRET_PREFIX.len() + 43);
        assert!(!is_secret("whsec_short"));
        assert!(!is_secret(&secret.replace("whsec_", "sk_")));
        let hint = hint(&secret);
        assert!(
            hint.starts_with("whsec_…") && hint.chars().count() == 11,
            "{hint}"
        );
        assert!(!hint.contains(&secret[6..20]));
    }
}
