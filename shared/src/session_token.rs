//! Short-lived session tokens the edge mints for one call's relay WebSocket URL
//! (`wss://…/voice/relay/{call_id}?session_token=st_…`), so a URL handed to a client cannot be
//! used after it expires or for another call.
//!
//! Format: `st_` + base64url(JSON payload) + `.` + base64url(HMAC-SHA256(key,
//! "aybiza-session-token-v1." + base64url payload)). The MAC is checked (constant time, against
//! the current key and, during a rotation, the previous one) before the payload is parsed.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::principal::{AuthMethod, Principal};
use crate::secret::Secret;
use crate::signature::{hs256, verify_hs256};

/// Every session token starts with this.
pub const PREFIX: &str = "st_";
/// Longest token accepted (and minted).
pub const MAX_TOKEN_BYTES: usize = 2048;
/// Longest call id a token can be bound to.
pub const MAX_CALL_ID_LEN: usize = 128;
/// Domain separation: a MAC made for anything else never verifies as a session token.
const MAC_CONTEXT: &[u8] = b"aybiza-session-token-v1.";
const VERSION: u8 = 1;

/// Why a session token was refused or could not be minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionTokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("the session token is too long")]
    TooLarge,
    /// Not `st_<payload>.<mac>` in base64url.
    #[error("the session token is malformed")]
    Malformed,
    /// The MAC does not match any current key.
    #[error("the session token's signature does not match")]
    BadSignature,
    /// Signed by us but not a payload this version understands.
    #[error("the session token's payload is invalid")]
    BadPayload,
    /// Minted by a newer or older format.
    #[error("the session token's version is not supported")]
    UnsupportedVersion,
    /// Past its expiry.
    #[error("the session token expired")]
    Expired,
    /// Presented on a request that is not bound to a call.
    #[error("session tokens are only valid on a call's own routes")]
    NotCallBound,
    /// Minted for another call.
    #[error("the session token belongs to another call")]
    WrongCall,
    /// A call id that is empty, too long or not `[A-Za-z0-9._:-]`.
    #[error("the call id is not valid")]
    InvalidCallId,
}

impl SessionTokenError {
    /// Stable snake_case code for the error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            SessionTokenError::TooLarge => "session_token_too_large",
            SessionTokenError::Malformed => "session_token_malformed",
            SessionTokenError::BadSignature => "session_token_bad_signature",
            SessionTokenError::BadPayload => "session_token_bad_payload",
            SessionTokenError::UnsupportedVersion => "session_token_unsupported_version",
            SessionTokenError::Expired => "session_token_expired",
            SessionTokenError::NotCallBound => "session_token_not_call_bound",
            SessionTokenError::WrongCall => "session_token_wrong_call",
            SessionTokenError::InvalidCallId => "invalid_call_id",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    v: u8,
    /// Call id the token is bound to.
    cid: String,
    tid: String,
    sub: String,
    pln: String,
    #[serde(default)]
    scp: Vec<String>,
    iat: u64,
    exp: u64,
}

/// A freshly minted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedToken {
    /// The token, `st_…`.
    pub token: String,
    /// Unix seconds at which it stops being accepted.
    pub expires_at: u64,
}

/// Mints a token binding `principal` (with `scopes`) to `call_id` for `ttl_s` seconds.
pub fn mint(
    principal: &Principal,
    call_id: &str,
    scopes: &[String],
    now_s: u64,
    ttl_s: u64,
    key: &Secret,
) -> Result<MintedToken, SessionTokenError> {
    if !is_valid_call_id(call_id) {
        return Err(SessionTokenError::InvalidCallId);
    }
    let expires_at = now_s.saturating_add(ttl_s);
    let payload = Payload {
        v: VERSION,
        cid: call_id.to_owned(),
        tid: principal.tenant_id.clone(),
        sub: principal.subject.clone(),
        pln: principal.plan.clone(),
        scp: scopes.to_vec(),
        iat: now_s,
        exp: expires_at,
    };
    // Serialising a struct of strings and integers cannot fail.
    let json = serde_json::to_vec(&payload).map_err(|_| SessionTokenError::BadPayload)?;
    let payload_b64 = URL_SAFE_NO_PAD.encode(json);
    let mac = hs256(key.expose(), &mac_input(&payload_b64));
    let token = format!("{PREFIX}{payload_b64}.{}", URL_SAFE_NO_PAD.encode(mac));
    if token.len() > MAX_TOKEN_BYTES {
        return Err(SessionTokenError::TooLarge);
    }
    Ok(MintedToken { token, expires_at })
}

/// Verifies a token for a request bound to `call_id`; `keys` are the current key first, then
/// any previous one still accepted.
pub fn verify(
    token: &str,
    keys: &[Secret],
    call_id: Option<&str>,
    now_s: u64,
) -> Result<Principal, SessionTokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(SessionTokenError::TooLarge);
    }
    let body = token
        .strip_prefix(PREFIX)
        .ok_or(SessionTokenError::Malformed)?;
    let (payload_b64, mac_b64) = body.split_once('.').ok_or(SessionTokenError::Malformed)?;
    if payload_b64.is_empty() {
        return Err(SessionTokenError::Malformed);
    }
    let mac = URL_SAFE_NO_PAD
        .decode(mac_b64)
        .map_err(|_| SessionTokenError::Malformed)?;
    let input = mac_input(payload_b64);
    if !keys
        .iter()
        .any(|key| verify_hs256(key.expose(), &input, &mac).is_ok())
    {
        return Err(SessionTokenError::BadSignature);
    }
    let json = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| SessionTokenError::Malformed)?;
    let payload: Payload =
        serde_json::from_slice(&json).map_err(|_| SessionTokenError::BadPayload)?;
    if payload.v != VERSION {
        return Err(SessionTokenError::UnsupportedVersion);
    }
    if now_s >= payload.exp {
        return Err(SessionTokenError::Expired);
    }
    match call_id {
        None => return Err(SessionTokenError::NotCallBound),
        Some(call_id) if call_id != payload.cid => return Err(SessionTokenError::WrongCall),
        Some(_) => {}
    }
    Ok(Principal {
        tenant_id: payload.tid,
        subject: payload.sub,
        scopes: payload.scp,
        plan: payload.pln,
        method: AuthMethod::SessionToken,
    })
}

/// Call ids travel in URLs and logs: short, and only `[A-Za-z0-9._:-]`.
pub fn is_valid_call_id(call_id: &str) -> bool {
    !call_id.is_empty()
        && call_id.len() <= MAX_CALL_ID_LEN
        && call_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

fn mac_input(payload_b64: &str) -> Vec<u8> {
    let mut input = Vec::with_capacity(MAC_CONTEXT.len() + payload_b64.len());
    input.extend_from_slice(MAC_CONTEXT);
    input.extend_from_slice(payload_b64.as_bytes());
    input
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000;

    fn key() -> Secret {
        Secret::new("session-key-session-key-session-key!")
    }

    fn principal() -> Principal {
        Principal {
            tenant_id: "tenant-a".into(),
            subject: "key_1".into(),
            scopes: vec!["calls:write".into(), "agents:admin".into()],
            plan: "pro".into(),
            method: AuthMethod::ApiKey,
        }
    }

    fn minted(call: &str, ttl: u64) -> MintedToken {
        mint(
            &principal(),
            call,
            &["voice:relay".into()],
            NOW,
            ttl,
            &key(),
        )
        .expect("mints")
    }

    #[test]
    fn round_trip_binds_the_call_and_narrows_the_scopes() {
        let minted = minted("CA0001", 120);
        assert!(minted.token.starts_with(PREFIX));
        assert_eq!(minted.expires_at, NOW + 120);
        let principal = verify(&minted.token, &[key()], Some("CA0001"), NOW + 119).expect("valid");
        assert_eq!(
            principal,
            Principal {
                tenant_id: "tenant-a".into(),
                subject: "key_1".into(),
                scopes: vec!["voice:relay".into()],
                plan: "pro".into(),
                method: AuthMethod::SessionToken,
            }
        );
    }

    #[test]
    fn replay_after_expiry_or_for_another_call_is_refused() {
        let token = minted("CA0001", 120).token;
        assert_eq!(
            verify(&token, &[key()], Some("CA0001"), NOW + 120),
            Err(SessionTokenError::Expired)
        );
        assert_eq!(
            verify(&token, &[key()], Some("CA0002"), NOW),
            Err(SessionTokenError::WrongCall)
        );
        assert_eq!(
            verify(&token, &[key()], None, NOW),
            Err(SessionTokenError::NotCallBound)
        );
    }

    #[test]
    fn key_rotation_accepts_the_previous_key() {
        let token = minted("CA0001", 120).token;
        let new_key = Secret::new("another-session-key-another-session-key");
        assert_eq!(
            verify(&token, std::slice::from_ref(&new_key), Some("CA0001"), NOW),
            Err(SessionTokenError::BadSignature)
        );
        assert!(verify(&token, &[new_key, key()], Some("CA0001"), NOW).is_ok());
    }

    #[test]
    fn refusals() {
        let token = minted("CA0001", 120).token;
        let (payload, mac) = token.split_once('.').expect("dot");
        let forged_payload = URL_SAFE_NO_PAD.encode(
            br#"{"v":1,"cid":"CA0001","tid":"tenant-b","sub":"x","pln":"pro","scp":[],"iat":0,"exp":99999999999}"#,
        );
        let signed = |payload_json: &str| {
            let payload_b64 = URL_SAFE_NO_PAD.encode(payload_json);
            let mac = hs256(key().expose(), &mac_input(&payload_b64));
            format!("st_{payload_b64}.{}", URL_SAFE_NO_PAD.encode(mac))
        };
        let cases: Vec<(String, SessionTokenError)> = vec![
            (
                format!("st_{}", "a".repeat(MAX_TOKEN_BYTES)),
                SessionTokenError::TooLarge,
            ),
            ("st_".into(), SessionTokenError::Malformed),
            (payload.to_owned(), SessionTokenError::Malformed),
            (
                token.replacen("st_", "xx_", 1),
                SessionTokenError::Malformed,
            ),
            (format!("{payload}.!!"), SessionTokenError::Malformed),
            (
                format!("st_{forged_payload}.{mac}"),
                SessionTokenError::BadSignature,
            ),
            (
                format!("{payload}.{}", URL_SAFE_NO_PAD.encode([0u8; 32])),
                SessionTokenError::BadSignature,
            ),
            (signed("[]"), SessionTokenError::BadPayload),
            (
                signed(
                    r#"{"v":2,"cid":"CA0001","tid":"t","sub":"s","pln":"p","iat":0,"exp":99999999999}"#,
                ),
                SessionTokenError::UnsupportedVersion,
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(
                verify(&token, &[key()], Some("CA0001"), NOW),
                Err(expected),
                "{token}"
            );
        }
    }

    #[test]
    fn minting_refuses_bad_call_ids() {
        for call in ["", "CA 1", "CA/../x", &"C".repeat(MAX_CALL_ID_LEN + 1)] {
            assert_eq!(
                mint(&principal(), call, &[], NOW, 60, &key()),
                Err(SessionTokenError::InvalidCallId),
                "{call}"
            );
        }
        let too_many: Vec<String> = (0..200).map(|i| format!("scope:{i}")).collect();
        assert_eq!(
            mint(&principal(), "CA1", &too_many, NOW, 60, &key()),
            Err(SessionTokenError::TooLarge)
        );
    }

    proptest! {
        /// Any bit flipped anywhere in a session token makes it invalid.
        #[test]
        fn any_bit_flip_is_rejected(index in any::<usize>(), bit in 0u8..7) {
            let token = minted("CA0001", 120).token;
            let mut bytes = token.into_bytes();
            let index = index % bytes.len();
            bytes[index] ^= 1 << bit;
            let flipped = String::from_utf8(bytes).expect("ASCII");
            prop_assert!(verify(&flipped, &[key()], Some("CA0001"), NOW).is_err());
        }
    }
}
