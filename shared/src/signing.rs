//! Edge → origin request signing: the edge (voice-router) signs every request it forwards and
//! the origin accepts nothing else (`/health` excepted).
//!
//! The signature is HMAC-SHA256, keyed with a secret both sides hold, over the canonical string
//!
//! ```text
//! AYBIZA-EDGE-HMAC-SHA256\n<METHOD>\n<path+query as sent>\n<timestamp>\n<nonce>\n<body hash>\n<principal header>
//! ```
//!
//! where the body hash is the lowercase hex SHA-256 of the body, or [`STREAM_BODY`] for a
//! WebSocket upgrade (its "body" is the socket that follows). Every other request, Server-Sent
//! Events ones included, hashes its body (an empty body for `GET`), so a signature can never be
//! replayed with another body. The timestamp (`X-Edge-Timestamp`, Unix seconds) must be within
//! [`MAX_SKEW_SECS`] of the verifier's clock in either direction. The nonce (`X-Edge-Nonce`,
//! fresh per request, see [`check_nonce`]) makes each signature single-use: the origin remembers
//! every nonce it accepted for as long as its timestamp could still pass (the [`replay`] rule),
//! so an exact copy of a captured request is refused. The header value is `v2=<lowercase hex>`;
//! the version lets the scheme change without ambiguity (`v1` signed no nonce and is refused:
//! the edge and the origin ship the nonce together).

pub mod replay;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// First line of the canonical string: names the scheme so no other HMAC use can collide.
pub const SCHEME: &str = "AYBIZA-EDGE-HMAC-SHA256";
/// Prefix of the `X-Edge-Signature` value (`v2`: the nonce is signed).
pub const VERSION_PREFIX: &str = "v2=";
/// Prefix of a signature by an edge from before the nonce: no nonce line, replayable, so
/// accepted only by [`verify_legacy`], which an origin uses only while told to (one deploy).
pub const LEGACY_VERSION_PREFIX: &str = "v1=";
/// Body hash used for WebSocket upgrades, whose body is a stream that cannot be hashed.
pub const STREAM_BODY: &str = "STREAMING-BODY";
/// Largest accepted distance between the signer's and the verifier's clocks.
pub const MAX_SKEW_SECS: u64 = 60;
/// Shortest nonce accepted: 16 characters of the alphabet below carry ≥ 64 bits when random.
pub const NONCE_MIN_LEN: usize = 16;
/// Longest nonce accepted (a UUID, the edge's choice, is 36).
pub const NONCE_MAX_LEN: usize = 64;
/// Shortest secret accepted: 32 bytes, the HMAC-SHA256 block of entropy it deserves.
pub const MIN_SECRET_LEN: usize = 32;
/// The secret holding the key, by the same name on both sides (voice-router and the origin),
/// read by [`crate::config::Reader::secret`]'s one rule.
pub const EDGE_SIGNING_SECRET: &str = "EDGE_SIGNING_SECRET";

/// What a signature covers about a request's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyHash {
    /// The SHA-256 of the body, lowercase hex.
    Sha256(String),
    /// A WebSocket upgrade: the fixed [`STREAM_BODY`] marker.
    Stream,
}

impl BodyHash {
    /// Hashes a complete body (use `b""` for a request without one).
    pub fn of(body: &[u8]) -> Self {
        Self::Sha256(hex(&Sha256::digest(body)))
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Sha256(hex) => hex,
            Self::Stream => STREAM_BODY,
        }
    }
}

/// The parts of a request a signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest<'a> {
    /// HTTP method, any case (it is upper-cased).
    pub method: &'a str,
    /// Path and query exactly as sent on the wire, e.g. `/v1/usage?from=2026-01-01`.
    pub path_and_query: &'a str,
    /// Unix seconds, the value of `X-Edge-Timestamp`.
    pub timestamp: u64,
    /// The value of `X-Edge-Nonce`: fresh per request, never reused.
    pub nonce: &'a str,
    /// The body's hash or the stream marker.
    pub body: BodyHash,
    /// The `X-Edge-Principal` header value as sent (empty when absent).
    pub principal: &'a str,
}

/// Why a request's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// No `X-Edge-Signature` header.
    #[error("the request carries no edge signature")]
    MissingSignature,
    /// No `X-Edge-Timestamp` header.
    #[error("the request carries no edge timestamp")]
    MissingTimestamp,
    /// No `X-Edge-Nonce` header (an edge older than the nonce, or a hand-made request).
    #[error("the request carries no edge nonce")]
    MissingNonce,
    /// The nonce is not 16–64 characters of `[A-Za-z0-9_-]`.
    #[error("the edge nonce is not {NONCE_MIN_LEN}-{NONCE_MAX_LEN} characters of [A-Za-z0-9_-]")]
    MalformedNonce,
    /// The timestamp is not whole Unix seconds.
    #[error("the edge timestamp is not whole Unix seconds")]
    MalformedTimestamp,
    /// The signature is not `v2=` followed by 64 hex digits.
    #[error("the edge signature is not v2=<64 hex digits>")]
    MalformedSignature,
    /// The timestamp is further than [`MAX_SKEW_SECS`] from now.
    #[error(
        "the edge timestamp is {skew_secs} s away from now (at most {MAX_SKEW_SECS} s allowed)"
    )]
    Stale {
        /// Absolute distance between the timestamp and now.
        skew_secs: u64,
    },
    /// The signature does not match the request under any accepted secret.
    #[error("the edge signature does not match the request")]
    BadSignature,
    /// A signing secret shorter than [`MIN_SECRET_LEN`].
    #[error("a signing secret must be at least {MIN_SECRET_LEN} bytes")]
    WeakSecret,
}

/// Which canonical string: today's, or the one before the nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V2,
    V1,
}

/// The canonical string a signature is computed over.
pub fn canonical_string(request: &SignedRequest<'_>) -> String {
    canonical(request, Version::V2)
}

fn canonical(request: &SignedRequest<'_>, version: Version) -> String {
    let nonce_line = match version {
        Version::V2 => format!("{}\n", request.nonce),
        Version::V1 => String::new(),
    };
    format!(
        "{SCHEME}\n{}\n{}\n{}\n{nonce_line}{}\n{}",
        request.method.to_ascii_uppercase(),
        request.path_and_query,
        request.timestamp,
        request.body.as_str(),
        request.principal
    )
}

/// Signs `request`; the result is the `X-Edge-Signature` value.
pub fn sign(secret: &[u8], request: &SignedRequest<'_>) -> Result<String, SigningError> {
    let mac = mac_of(secret, request, Version::V2)?;
    Ok(format!(
        "{VERSION_PREFIX}{}",
        hex(&mac.finalize().into_bytes())
    ))
}

/// Parses an `X-Edge-Timestamp` value and checks it is within [`MAX_SKEW_SECS`] of `now_secs`.
pub fn check_timestamp(value: Option<&str>, now_secs: u64) -> Result<u64, SigningError> {
    let text = value.ok_or(SigningError::MissingTimestamp)?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SigningError::MalformedTimestamp);
    }
    let timestamp: u64 = text.parse().map_err(|_| SigningError::MalformedTimestamp)?;
    let skew_secs = timestamp.abs_diff(now_secs);
    if skew_secs > MAX_SKEW_SECS {
        return Err(SigningError::Stale { skew_secs });
    }
    Ok(timestamp)
}

/// Checks an `X-Edge-Nonce` value is present and well-formed: 16–64 characters of
/// `[A-Za-z0-9_-]`, so it can be a cache or Redis key as is. Whether it was seen before is the
/// [`replay`] rule's question.
pub fn check_nonce(value: Option<&str>) -> Result<&str, SigningError> {
    let nonce = value.ok_or(SigningError::MissingNonce)?;
    let well_formed = (NONCE_MIN_LEN..=NONCE_MAX_LEN).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if well_formed {
        Ok(nonce)
    } else {
        Err(SigningError::MalformedNonce)
    }
}

/// Verifies `signature` (the `X-Edge-Signature` value) for `request` under any of `secrets`
/// (the current one first, then one being rotated out), with the clock at `now_secs`.
/// The comparison is constant-time.
pub fn verify(
    secrets: &[&[u8]],
    request: &SignedRequest<'_>,
    signature: Option<&str>,
    now_secs: u64,
) -> Result<(), SigningError> {
    verify_version(secrets, request, signature, now_secs, Version::V2)
}

/// Verifies a `v1=` signature (an edge from before the nonce; `request.nonce` is ignored). It
/// can be replayed within the skew, so an origin accepts it only while configured to, for the
/// deploy that brings the nonce to both sides.
pub fn verify_legacy(
    secrets: &[&[u8]],
    request: &SignedRequest<'_>,
    signature: Option<&str>,
    now_secs: u64,
) -> Result<(), SigningError> {
    verify_version(secrets, request, signature, now_secs, Version::V1)
}

fn verify_version(
    secrets: &[&[u8]],
    request: &SignedRequest<'_>,
    signature: Option<&str>,
    now_secs: u64,
    version: Version,
) -> Result<(), SigningError> {
    let signature = signature.ok_or(SigningError::MissingSignature)?;
    let prefix = match version {
        Version::V2 => VERSION_PREFIX,
        Version::V1 => LEGACY_VERSION_PREFIX,
    };
    let tag = parse_signature(signature, prefix)?;
    let skew_secs = request.timestamp.abs_diff(now_secs);
    if skew_secs > MAX_SKEW_SECS {
        return Err(SigningError::Stale { skew_secs });
    }
    let mut matched = false;
    for secret in secrets {
        // Every secret is tried, so timing does not tell which one matched.
        matched |= mac_of(secret, request, version)?.verify_slice(&tag).is_ok();
    }
    if matched {
        Ok(())
    } else {
        Err(SigningError::BadSignature)
    }
}

fn mac_of(
    secret: &[u8],
    request: &SignedRequest<'_>,
    version: Version,
) -> Result<Hmac<Sha256>, SigningError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(SigningError::WeakSecret);
    }
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|_| SigningError::WeakSecret)?;
    mac.update(canonical(request, version).as_bytes());
    Ok(mac)
}

fn parse_signature(value: &str, prefix: &str) -> Result<[u8; 32], SigningError> {
    let hex_text = value
        .trim()
        .strip_prefix(prefix)
        .ok_or(SigningError::MalformedSignature)?;
    if hex_text.len() != 64 {
        return Err(SigningError::MalformedSignature);
    }
    let mut tag = [0_u8; 32];
    for (byte, pair) in tag.iter_mut().zip(hex_text.as_bytes().chunks_exact(2)) {
        let high = hex_value(pair[0]).ok_or(SigningError::MalformedSignature)?;
        let low = hex_value(pair[1]).ok_or(SigningError::MalformedSignature)?;
        *byte = (high << 4) | low;
    }
    Ok(tag)
}

/// The value of one hex digit.
pub(crate) fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OTHER: &[u8] = b"fedcba9876543210fedcba9876543210";
    const NOW: u64 = 1_790_000_000;
    const NONCE: &str = "6f1c1d3e-8b9a-4c55-9e0f-1a2b3c4d5e6f";

    fn request(body: &[u8]) -> SignedRequest<'static> {
        SignedRequest {
            method: "post",
            path_and_query: "/v1/calls/c1/turns?x=1",
            timestamp: NOW,
            nonce: NONCE,
            body: BodyHash::of(body),
            principal: "eyJ0ZW5hbnRfaWQiOiJ0MSJ9",
        }
    }

    #[test]
    fn sha256_matches_the_published_vectors() {
        // FIPS 180-2 examples.
        assert_eq!(
            BodyHash::of(b""),
            BodyHash::Sha256(
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()
            )
        );
        assert_eq!(
            BodyHash::of(b"abc"),
            BodyHash::Sha256(
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()
            )
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        // Key "Jefe" is below our minimum, so check the primitive directly.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").expect("any key length");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn canonical_string_has_every_part_on_its_own_line() {
        let text = canonical_string(&request(b"{}"));
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), 7);
        assert_eq!(lines[0], SCHEME);
        assert_eq!(lines[1], "POST");
        assert_eq!(lines[2], "/v1/calls/c1/turns?x=1");
        assert_eq!(lines[3], NOW.to_string());
        assert_eq!(lines[4], NONCE);
        assert_eq!(
            lines[5],
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(lines[6], "eyJ0ZW5hbnRfaWQiOiJ0MSJ9");
    }

    #[test]
    fn a_signed_request_verifies() {
        let signed = sign(SECRET, &request(b"{}")).expect("strong secret");
        assert!(signed.starts_with("v2=") && signed.len() == 67, "{signed}");
        assert_eq!(
            verify(&[SECRET], &request(b"{}"), Some(&signed), NOW + 59),
            Ok(())
        );
    }

    #[test]
    fn rejections_state_their_reason() {
        let good = sign(SECRET, &request(b"{}")).expect("strong secret");
        let cases: Vec<(SignedRequest<'static>, Option<&str>, u64, SigningError)> = vec![
            (request(b"{}"), None, NOW, SigningError::MissingSignature),
            (
                request(b"{}"),
                Some("abc"),
                NOW,
                SigningError::MalformedSignature,
            ),
            (
                request(b"{}"),
                Some(&good[3..]),
                NOW,
                SigningError::MalformedSignature,
            ),
            (
                request(b"{\"other\":1}"),
                Some(&good),
                NOW,
                SigningError::BadSignature,
            ),
            (
                request(b"{}"),
                Some(&good),
                NOW + 61,
                SigningError::Stale { skew_secs: 61 },
            ),
            (
                request(b"{}"),
                Some(&good),
                NOW - 61,
                SigningError::Stale { skew_secs: 61 },
            ),
        ];
        for (req, signature, now, expected) in cases {
            assert_eq!(
                verify(&[SECRET], &req, signature, now),
                Err(expected.clone()),
                "{expected:?}"
            );
        }
    }

    #[test]
    fn every_signed_part_matters() {
        let base = request(b"{}");
        let signature = sign(SECRET, &base).expect("strong secret");
        let variants = [
            SignedRequest {
                method: "PUT",
                ..base.clone()
            },
            SignedRequest {
                path_and_query: "/v1/calls/c2/turns?x=1",
                ..base.clone()
            },
            SignedRequest {
                path_and_query: "/v1/calls/c1/turns?x=2",
                ..base.clone()
            },
            SignedRequest {
                timestamp: NOW + 1,
                ..base.clone()
            },
            SignedRequest {
                nonce: "7f1c1d3e-8b9a-4c55-9e0f-1a2b3c4d5e6f",
                ..base.clone()
            },
            SignedRequest {
                body: BodyHash::Stream,
                ..base.clone()
            },
            SignedRequest {
                principal: "eyJ0ZW5hbnRfaWQiOiJ0MiJ9",
                ..base.clone()
            },
        ];
        for variant in variants {
            assert_eq!(
                verify(&[SECRET], &variant, Some(&signature), NOW),
                Err(SigningError::BadSignature),
                "{variant:?}"
            );
        }
    }

    #[test]
    fn a_rotated_out_secret_still_verifies_and_a_foreign_one_does_not() {
        let by_old = sign(OTHER, &request(b"")).expect("strong");
        assert_eq!(
            verify(&[SECRET, OTHER], &request(b""), Some(&by_old), NOW),
            Ok(())
        );
        assert_eq!(
            verify(&[SECRET], &request(b""), Some(&by_old), NOW),
            Err(SigningError::BadSignature)
        );
    }

    #[test]
    fn upper_case_hex_is_accepted() {
        let signature = sign(SECRET, &request(b"")).expect("strong");
        let upper = format!("v2={}", signature[3..].to_ascii_uppercase());
        assert_eq!(verify(&[SECRET], &request(b""), Some(&upper), NOW), Ok(()));
    }

    #[test]
    fn a_v1_signature_without_the_nonce_is_refused_as_malformed() {
        let v2 = sign(SECRET, &request(b"")).expect("strong");
        let v1 = format!("v1={}", &v2[3..]);
        assert_eq!(
            verify(&[SECRET], &request(b""), Some(&v1), NOW),
            Err(SigningError::MalformedSignature)
        );
    }

    #[test]
    fn a_legacy_v1_signature_verifies_only_through_verify_legacy() {
        // v1, as the edge signed before the nonce: no nonce line.
        let base = request(b"{}");
        let text = format!(
            "{SCHEME}\nPOST\n{}\n{NOW}\n{}\n{}",
            base.path_and_query,
            base.body.as_str(),
            base.principal
        );
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET).expect("key");
        mac.update(text.as_bytes());
        let v1 = format!("v1={}", hex(&mac.finalize().into_bytes()));
        let without_nonce = SignedRequest { nonce: "", ..base };
        assert_eq!(
            verify_legacy(&[SECRET], &without_nonce, Some(&v1), NOW),
            Ok(())
        );
        assert_eq!(
            verify(&[SECRET], &without_nonce, Some(&v1), NOW),
            Err(SigningError::MalformedSignature)
        );
        let v2 = sign(SECRET, &request(b"{}")).expect("strong");
        assert_eq!(
            verify_legacy(&[SECRET], &request(b"{}"), Some(&v2), NOW),
            Err(SigningError::MalformedSignature)
        );
        assert_eq!(
            verify_legacy(&[SECRET], &without_nonce, Some(&v1), NOW + 61),
            Err(SigningError::Stale { skew_secs: 61 })
        );
    }

    #[test]
    fn nonces_are_parsed_strictly() {
        assert_eq!(check_nonce(Some(NONCE)), Ok(NONCE));
        assert_eq!(
            check_nonce(Some("a_b-C_d-E_f-0_1-")),
            Ok("a_b-C_d-E_f-0_1-")
        );
        assert_eq!(check_nonce(None), Err(SigningError::MissingNonce));
        let too_long = "a".repeat(NONCE_MAX_LEN + 1);
        for bad in [
            "",
            "short",
            "0123456789abcde",
            too_long.as_str(),
            "0123456789abcdef:",
            "0123456789abcdef ",
            "0123456789abcdef\n",
            "0123456789abcdé0",
            "6f1c1d3e/8b9a/4c55",
        ] {
            assert_eq!(
                check_nonce(Some(bad)),
                Err(SigningError::MalformedNonce),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_nonce(Some(&too_long[..NONCE_MAX_LEN])),
            Ok(&too_long[..NONCE_MAX_LEN])
        );
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert_eq!(sign(b"short", &request(b"")), Err(SigningError::WeakSecret));
    }

    #[test]
    fn timestamps_are_parsed_strictly() {
        assert_eq!(check_timestamp(Some("1790000000"), NOW), Ok(NOW));
        assert_eq!(
            check_timestamp(None, NOW),
            Err(SigningError::MissingTimestamp)
        );
        for bad in ["", "-5", "1.5", "12a", "+1790000000"] {
            assert_eq!(
                check_timestamp(Some(bad), NOW),
                Err(SigningError::MalformedTimestamp),
                "{bad}"
            );
        }
        assert_eq!(
            check_timestamp(Some("1789999939"), NOW),
            Err(SigningError::Stale { skew_secs: 61 })
        );
        assert_eq!(
            check_timestamp(Some("99999999999999999999999"), NOW),
            Err(SigningError::MalformedTimestamp)
        );
    }

    proptest! {
        #[test]
        fn sign_then_verify_round_trips(
            method in "[A-Z]{3,7}",
            path in "/[a-z0-9/?=&%-]{0,60}",
            body in proptest::collection::vec(any::<u8>(), 0..256),
            principal in "[A-Za-z0-9_-]{0,80}",
            skew in -60_i64..=60,
        ) {
            let req = SignedRequest {
                method: &method,
                path_and_query: &path,
                timestamp: NOW,
                nonce: NONCE,
                body: BodyHash::of(&body),
                principal: &principal,
            };
            let signature = sign(SECRET, &req).expect("strong");
            let now = NOW.checked_add_signed(skew).expect("in range");
            prop_assert_eq!(verify(&[SECRET], &req, Some(&signature), now), Ok(()));
        }

        #[test]
        fn a_flipped_body_byte_never_verifies(
            body in proptest::collection::vec(any::<u8>(), 1..128),
            index in any::<prop::sample::Index>(),
        ) {
            let signature = sign(SECRET, &request(&body)).expect("strong");
            let mut tampered = body.clone();
            let i = index.index(tampered.len());
            tampered[i] ^= 0x01;
            prop_assert_eq!(
                verify(&[SECRET], &request(&tampered), Some(&signature), NOW),
                Err(SigningError::BadSignature)
            );
        }
    }
}
