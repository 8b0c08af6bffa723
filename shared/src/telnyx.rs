//! Telnyx webhook signatures, as Telnyx documents them on every TeXML callback
//! (<https://developers.telnyx.com/api-reference/callbacks/texml-call-initiated>, "Headers") and
//! verifies them in its own SDKs (`team-telnyx/telnyx-node`, `src/lib/webhooks.ts`): the
//! `telnyx-signature-ed25519` header is base64 of an Ed25519 signature, made with the account's
//! key pair, over `"{telnyx-timestamp}|{raw body}"`; the timestamp is Unix seconds and a request
//! more than [`TOLERANCE_S`] away from now is refused (a replayed callback). The public key is
//! the account's, from the Mission Control portal: base64 of 32 bytes.
//!
//! Unlike Twilio's scheme the URL is not signed, so a query parameter of a Telnyx callback is
//! not authenticated: voice-router binds such a callback to its call by the signed `CallSid`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::principal::{AuthMethod, Principal};
use crate::signature::{ED25519_KEY_LEN, ED25519_LEN, Ed25519Verifier, SignatureError};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "telnyx-signature-ed25519";
/// The timestamp header (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "telnyx-timestamp";
/// Largest distance, in seconds, between the timestamp and now (Telnyx's SDKs: 5 minutes).
pub const TOLERANCE_S: u64 = 300;

/// A Telnyx account whose requests are accepted, and the tenant it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelnyxAccount {
    /// The account id (`AccountSid` in TeXML callbacks).
    pub account_sid: String,
    /// The account's webhook public key.
    pub public_key: [u8; ED25519_KEY_LEN],
    /// The tenant calls of this account belong to.
    pub tenant_id: String,
    /// The tenant's plan.
    pub plan: String,
    /// Scopes granted to requests signed by this account.
    pub scopes: Vec<String>,
}

impl TelnyxAccount {
    /// The principal of a request this account signed.
    pub fn principal(&self) -> Principal {
        Principal {
            tenant_id: self.tenant_id.clone(),
            subject: self.account_sid.clone(),
            scopes: self.scopes.clone(),
            plan: self.plan.clone(),
            method: AuthMethod::TelnyxSignature,
        }
    }
}

/// A public key as the portal shows it: standard base64 of 32 bytes.
pub fn parse_public_key(text: &str) -> Option<[u8; ED25519_KEY_LEN]> {
    STANDARD.decode(text.trim()).ok()?.try_into().ok()
}

/// What a signed request consists of, as the edge received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedRequest<'a> {
    /// The raw body (empty when there is none).
    pub body: &'a str,
    /// `telnyx-signature-ed25519`.
    pub signature: &'a str,
    /// `telnyx-timestamp`, if sent.
    pub timestamp: Option<&'a str>,
}

/// Why a Telnyx signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelnyxError {
    /// The signature is not base64 of 64 bytes.
    #[error("the signature is not base64 of an Ed25519 signature")]
    MalformedSignature,
    /// The timestamp header is missing or not Unix seconds.
    #[error("telnyx-timestamp is missing or not Unix seconds")]
    MalformedTimestamp,
    /// The timestamp is more than [`TOLERANCE_S`] from now.
    #[error("the request is older or newer than {TOLERANCE_S} seconds")]
    Stale,
    /// The request names an account that is not configured.
    #[error("the account is not configured")]
    UnknownAccount,
    /// No configured account's key made this signature.
    #[error("the signature does not match")]
    BadSignature,
    /// The signature could not be checked (the crypto backend failed).
    #[error("the signature could not be checked")]
    Unverifiable,
}

impl TelnyxError {
    /// Stable snake_case code for the error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            TelnyxError::MalformedSignature => "telnyx_signature_malformed",
            TelnyxError::MalformedTimestamp => "telnyx_timestamp_malformed",
            TelnyxError::Stale => "telnyx_timestamp_stale",
            TelnyxError::UnknownAccount => "telnyx_unknown_account",
            TelnyxError::BadSignature => "telnyx_bad_signature",
            TelnyxError::Unverifiable => "verifier_unavailable",
        }
    }
}

/// The bytes Telnyx signs: `"{timestamp}|{body}"`.
pub fn signed_message(timestamp: &str, body: &str) -> Vec<u8> {
    format!("{timestamp}|{body}").into_bytes()
}

/// Checks a request's signature at `now_s` against the configured accounts (the one the body's
/// `AccountSid` names, else each in turn); returns the account that signed it.
pub async fn verify<'a, V: Ed25519Verifier>(
    accounts: &'a [TelnyxAccount],
    request: &SignedRequest<'_>,
    now_s: u64,
    verifier: &V,
) -> Result<&'a TelnyxAccount, TelnyxError> {
    let signature: [u8; ED25519_LEN] = STANDARD
        .decode(request.signature.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(TelnyxError::MalformedSignature)?;
    let timestamp = request
        .timestamp
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(TelnyxError::MalformedTimestamp)?;
    let sent_s: u64 = timestamp
        .parse()
        .map_err(|_| TelnyxError::MalformedTimestamp)?;
    if sent_s.abs_diff(now_s) > TOLERANCE_S {
        return Err(TelnyxError::Stale);
    }
    let candidates: Vec<&TelnyxAccount> = match account_sid(request.body) {
        Some(sid) => vec![
            accounts
                .iter()
                .find(|account| account.account_sid == sid)
                .ok_or(TelnyxError::UnknownAccount)?,
        ],
        None => accounts.iter().collect(),
    };
    let message = signed_message(timestamp, request.body);
    for account in candidates {
        match verifier
            .verify_ed25519(&account.public_key, &message, &signature)
            .await
        {
            Ok(()) => return Ok(account),
            Err(SignatureError::BackendFailed) => return Err(TelnyxError::Unverifiable),
            Err(_) => {}
        }
    }
    Err(TelnyxError::BadSignature)
}

/// The `AccountSid` a form or JSON body names.
fn account_sid(body: &str) -> Option<String> {
    if body.trim_start().starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        return ["AccountSid", "account_sid"]
            .iter()
            .find_map(|name| value.get(name)?.as_str().map(str::to_owned));
    }
    form_urlencoded::parse(body.as_bytes())
        .find(|(name, _)| name == "AccountSid")
        .map(|(_, sid)| sid.into_owned())
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;

    use super::*;
    use crate::signature::RustCrypto;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        crate::test_support::block_on(future)
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// RFC 8032 §7.1, TEST 1 and TEST 2: the verifier is Ed25519 itself.
    #[test]
    fn rfc8032_vectors_verify() {
        let vectors = [
            (
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
        ];
        for (key, message, signature) in vectors {
            let key: [u8; 32] = hex(key).try_into().expect("32 bytes");
            let signature: [u8; 64] = hex(signature).try_into().expect("64 bytes");
            let message = hex(message);
            assert_eq!(
                block_on(RustCrypto.verify_ed25519(&key, &message, &signature)),
                Ok(())
            );
            let mut tampered = signature;
            tampered[0] ^= 1;
            assert_eq!(
                block_on(RustCrypto.verify_ed25519(&key, &message, &tampered)),
                Err(SignatureError::Mismatch)
            );
        }
    }

    const NOW: u64 = 1_705_314_626;
    const SID: &str = "f5586561-8ff0-4291-a51b-c7dfe4139ff9";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn account(sid: &str, seed: u8) -> TelnyxAccount {
        TelnyxAccount {
            account_sid: sid.into(),
            public_key: key(seed).verifying_key().to_bytes(),
            tenant_id: format!("tenant-of-{sid}"),
            plan: "pro".into(),
            scopes: vec!["voice:carrier".into()],
        }
    }

    fn sign(seed: u8, timestamp: &str, body: &str) -> String {
        STANDARD.encode(key(seed).sign(&signed_message(timestamp, body)).to_bytes())
    }

    /// A TeXML callback body as Telnyx documents it, form-encoded.
    fn body() -> String {
        format!(
            "AccountSid={SID}&CallSid=v3%3A9X2vxPDFY2RHSJ1EdMS0RHRksMTg7ldNxdjWbVr9zBjbGjGsSe-aiQ&CallStatus=completed"
        )
    }

    #[test]
    fn a_signed_callback_verifies_and_names_its_account() {
        let accounts = [account("other", 9), account(SID, 7)];
        let body = body();
        let timestamp = NOW.to_string();
        let signature = sign(7, &timestamp, &body);
        let request = SignedRequest {
            body: &body,
            signature: &signature,
            timestamp: Some(&timestamp),
        };
        let verified = block_on(verify(&accounts, &request, NOW + 10, &RustCrypto)).expect("ok");
        assert_eq!(verified.account_sid, SID);
        assert_eq!(verified.principal().method, AuthMethod::TelnyxSignature);
        // Without an AccountSid every configured key is tried.
        let bare = "CallSid=v3%3Aabc&CallStatus=ringing";
        let signature = sign(9, &timestamp, bare);
        let request = SignedRequest {
            body: bare,
            signature: &signature,
            timestamp: Some(&timestamp),
        };
        let found = block_on(verify(&accounts, &request, NOW, &RustCrypto)).expect("ok");
        assert_eq!(found.account_sid, "other");
    }

    #[test]
    fn refusals_state_why() {
        let accounts = [account(SID, 7)];
        let body = body();
        let timestamp = NOW.to_string();
        let good = sign(7, &timestamp, &body);
        let other_key = sign(8, &timestamp, &body);
        let unknown_body = body.replace(SID, "0000");
        let unknown = sign(7, &timestamp, &unknown_body);
        let request =
            |body: &'static str, signature: &'static str, ts: Option<&'static str>| SignedRequest {
                body,
                signature,
                timestamp: ts,
            };
        let leak = |text: String| -> &'static str { Box::leak(text.into_boxed_str()) };
        let (body, ts) = (leak(body), leak(timestamp));
        let cases = [
            (
                request(body, "not base64!", Some(ts)),
                NOW,
                TelnyxError::MalformedSignature,
            ),
            (
                request(body, "c2hvcnQ=", Some(ts)),
                NOW,
                TelnyxError::MalformedSignature,
            ),
            (
                request(body, leak(good.clone()), None),
                NOW,
                TelnyxError::MalformedTimestamp,
            ),
            (
                request(body, leak(good.clone()), Some("-5")),
                NOW,
                TelnyxError::MalformedTimestamp,
            ),
            (
                request(body, leak(good.clone()), Some(ts)),
                NOW + TOLERANCE_S + 1,
                TelnyxError::Stale,
            ),
            (
                request(body, leak(good.clone()), Some(ts)),
                NOW - TOLERANCE_S - 1,
                TelnyxError::Stale,
            ),
            (
                request(body, leak(other_key), Some(ts)),
                NOW,
                TelnyxError::BadSignature,
            ),
            (
                request(leak(unknown_body), leak(unknown), Some(ts)),
                NOW,
                TelnyxError::UnknownAccount,
            ),
            // The signature covers the timestamp: another one in the header does not verify.
            (
                request(body, leak(good), Some(leak((NOW + 1).to_string()))),
                NOW,
                TelnyxError::BadSignature,
            ),
        ];
        for (request, now, expected) in cases {
            assert_eq!(
                block_on(verify(&accounts, &request, now, &RustCrypto)),
                Err(expected.clone()),
                "{request:?}"
            );
        }
    }

    #[test]
    fn public_keys_are_base64_of_32_bytes() {
        let key = account(SID, 7).public_key;
        assert_eq!(
            parse_public_key(&format!(" {} ", STANDARD.encode(key))),
            Some(key)
        );
        assert_eq!(parse_public_key("c2hvcnQ="), None);
        assert_eq!(parse_public_key("!!"), None);
    }

    #[test]
    fn codes_are_distinct() {
        let mut codes: Vec<&str> = [
            TelnyxError::MalformedSignature,
            TelnyxError::MalformedTimestamp,
            TelnyxError::Stale,
            TelnyxError::UnknownAccount,
            TelnyxError::BadSignature,
            TelnyxError::Unverifiable,
        ]
        .iter()
        .map(TelnyxError::code)
        .collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 6);
    }

    proptest! {
        /// Any byte of the body changed (its `AccountSid` kept) is refused.
        #[test]
        fn a_changed_body_is_refused(index in any::<usize>(), bit in 0u8..7) {
            let accounts = [account(SID, 7)];
            let original = body();
            let timestamp = NOW.to_string();
            let signature = sign(7, &timestamp, &original);
            let mut bytes = original.clone().into_bytes();
            // After `AccountSid=<sid>&`, so the account named stays the same.
            let start = "AccountSid=".len() + SID.len() + 1;
            let at = start + index % (bytes.len() - start);
            bytes[at] ^= 1 << bit;
            let changed = String::from_utf8(bytes).expect("ASCII");
            prop_assume!(changed != original);
            let request = SignedRequest { body: &changed, signature: &signature, timestamp: Some(&timestamp) };
            prop_assert_eq!(block_on(verify(&accounts, &request, NOW, &RustCrypto)), Err(TelnyxError::BadSignature));
        }
    }
}
