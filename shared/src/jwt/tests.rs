use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::jwks::{KeySet, KeySource, parse_jwks};
use crate::signature::RustCrypto;
use crate::test_support::*;

/// RFC 7515 Appendix A.1's HMAC key (`k`).
const RFC7515_A1_K: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
/// RFC 7515 A.1: HS256 (also RFC 7519 §3.1's example JWT).
const RFC7515_A1: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
/// RFC 7515 A.2: RS256.
const RFC7515_A2: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
const RFC7515_A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
/// RFC 7515 A.3: ES256.
const RFC7515_A3: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
const RFC7515_A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const RFC7515_A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
/// RFC 7519 §6.1: an unsecured JWT.
const RFC7519_UNSECURED: &str = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.";
/// The RFC examples' `exp`.
const RFC_EXP: u64 = 1_300_819_380;

const NOW: u64 = 1_800_000_000;

fn policy() -> JwtPolicy {
    JwtPolicy {
        algorithms: Algorithm::ALL.to_vec(),
        issuer: "https://issuer.example".into(),
        audiences: vec!["aybiza-api".into(), "aybiza-relay".into()],
        leeway_s: 60,
        tenant_claim: "tenant_id".into(),
        default_tenant: None,
        default_plan: "free".into(),
    }
}

fn rfc_policy() -> JwtPolicy {
    JwtPolicy {
        issuer: "joe".into(),
        leeway_s: 0,
        ..policy()
    }
}

fn claims() -> serde_json::Value {
    json!({
        "iss": "https://issuer.example",
        "aud": "aybiza-api",
        "sub": "user-1",
        "tenant_id": "tenant-a",
        "plan": "pro",
        "scope": "calls:write calls:read",
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 300,
    })
}

fn verify(token: &str, keys: &KeySet, policy: &JwtPolicy, now: u64) -> Result<Principal, JwtError> {
    block_on(verify_jwt(token, keys, policy, now, &RustCrypto))
}

fn key_from_b64(k: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(k).expect("base64url")
}

const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hs256";

fn keys() -> KeySet {
    KeySet::from_keys(vec![
        rsa_jwk("rsa-1", rsa_key()),
        hmac_jwk(Some("hmac-1"), HMAC_SECRET),
    ])
}

// --- Published vectors -------------------------------------------------------------------

/// The RFC tokens carry no `aud` and no `sub`: reaching `MissingClaim("aud")` proves the
/// signature and `exp`/`iss` passed, which is all a published vector can show.
#[test]
fn rfc7515_a1_hs256_verifies() {
    let keys = KeySet::from_keys(vec![hmac_jwk(None, &key_from_b64(RFC7515_A1_K))]);
    let token = decode(RFC7515_A1).expect("decodes");
    assert_eq!(
        token.header(),
        &Header {
            alg: Algorithm::Hs256,
            kid: None
        }
    );
    assert_eq!(token.claims()["iss"], "joe");
    assert_eq!(token.claims()["http://example.com/is_root"], true);
    assert_eq!(
        verify(RFC7515_A1, &keys, &rfc_policy(), RFC_EXP - 1),
        Err(JwtError::MissingClaim("aud".into()))
    );
    assert_eq!(
        verify(RFC7515_A1, &keys, &rfc_policy(), RFC_EXP),
        Err(JwtError::Expired {
            exp: RFC_EXP,
            now: RFC_EXP
        })
    );
    let wrong = KeySet::from_keys(vec![hmac_jwk(None, HMAC_SECRET)]);
    assert_eq!(
        verify(RFC7515_A1, &wrong, &rfc_policy(), RFC_EXP - 1),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn rfc7515_a2_rs256_verifies() {
    let key = Jwk::rsa(None, &key_from_b64(RFC7515_A2_N), &key_from_b64("AQAB")).expect("RFC key");
    let keys = KeySet::from_keys(vec![key]);
    assert_eq!(
        verify(RFC7515_A2, &keys, &rfc_policy(), RFC_EXP - 1),
        Err(JwtError::MissingClaim("aud".into()))
    );
    let other = KeySet::from_keys(vec![rsa_jwk("x", rsa_key())]);
    assert_eq!(
        verify(RFC7515_A2, &other, &rfc_policy(), RFC_EXP - 1),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn rfc7515_a3_es256_verifies() {
    let x: [u8; 32] = key_from_b64(RFC7515_A3_X).try_into().expect("32 bytes");
    let y: [u8; 32] = key_from_b64(RFC7515_A3_Y).try_into().expect("32 bytes");
    let keys = KeySet::from_keys(vec![Jwk::ec_p256(None, x, y)]);
    assert_eq!(
        verify(RFC7515_A3, &keys, &rfc_policy(), RFC_EXP - 1),
        Err(JwtError::MissingClaim("aud".into()))
    );
    let other = KeySet::from_keys(vec![ec_jwk("x", &ec_key())]);
    assert_eq!(
        verify(RFC7515_A3, &other, &rfc_policy(), RFC_EXP - 1),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn rfc7515_keys_parse_from_their_jwk_form() {
    let document = format!(
        r#"{{"keys":[{{"kty":"RSA","kid":"2010-12-29","n":"{RFC7515_A2_N}","e":"AQAB"}},
                     {{"kty":"EC","kid":"e9bc097a-ce51-4036-9562-d2ade882db0d","crv":"P-256","x":"{RFC7515_A3_X}","y":"{RFC7515_A3_Y}"}},
                     {{"kty":"oct","k":"{RFC7515_A1_K}"}}]}}"#
    );
    let keys = parse_jwks(&document, KeySource::Configured)
        .expect("parses")
        .keys;
    for token in [RFC7515_A1, RFC7515_A2, RFC7515_A3] {
        assert_eq!(
            verify(token, &keys, &rfc_policy(), RFC_EXP - 1),
            Err(JwtError::MissingClaim("aud".into())),
            "{token}"
        );
    }
}

#[test]
fn rfc7519_unsecured_jwt_is_refused() {
    assert_eq!(decode(RFC7519_UNSECURED), Err(JwtError::AlgNone));
    for alg in ["None", "NONE", "nOnE"] {
        let token = format!("{}.{}.", b64(format!(r#"{{"alg":"{alg}"}}"#)), b64("{}"));
        assert_eq!(decode(&token), Err(JwtError::AlgNone), "{alg}");
    }
    // A forged signature on alg none changes nothing.
    let token = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"none"}"#),
        b64(claims().to_string()),
        b64("sig")
    );
    assert_eq!(decode(&token), Err(JwtError::AlgNone));
}

// --- Generated keys ----------------------------------------------------------------------

#[test]
fn tokens_signed_with_generated_keys_verify_and_map_to_a_principal() {
    let ec = ec_key();
    let keys = keys().merged(&KeySet::from_keys(vec![ec_jwk("ec-1", &ec)]));
    let tokens = [
        sign_rs256(
            &json!({"alg":"RS256","kid":"rsa-1","typ":"JWT"}),
            &claims(),
            rsa_key(),
        ),
        sign_es256(&json!({"alg":"ES256","kid":"ec-1"}), &claims(), &ec),
        sign_hs256(
            &json!({"alg":"HS256","kid":"hmac-1"}),
            &claims(),
            HMAC_SECRET,
        ),
    ];
    for token in tokens {
        let principal = verify(&token, &keys, &policy(), NOW).expect("valid token");
        assert_eq!(
            principal,
            Principal {
                tenant_id: "tenant-a".into(),
                subject: "user-1".into(),
                scopes: vec!["calls:write".into(), "calls:read".into()],
                plan: "pro".into(),
                method: AuthMethod::Jwt,
            }
        );
    }
}

#[test]
fn a_key_is_found_without_kid_when_it_is_the_only_one_of_its_family() {
    let keys = keys();
    let token = sign_hs256(&json!({"alg":"HS256"}), &claims(), HMAC_SECRET);
    assert!(verify(&token, &keys, &policy(), NOW).is_ok());
    let token = sign_rs256(&json!({"alg":"RS256"}), &claims(), rsa_key());
    assert!(verify(&token, &keys, &policy(), NOW).is_ok());
}

// --- Every rejection, each with its own error ---------------------------------------------

fn hs(header: serde_json::Value, claims: serde_json::Value) -> String {
    sign_hs256(&header, &claims, HMAC_SECRET)
}

fn with_claims(change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
    let mut claims = claims();
    change(claims.as_object_mut().expect("object"));
    hs(json!({"alg":"HS256","kid":"hmac-1"}), claims)
}

#[test]
fn structural_rejections() {
    let good = hs(json!({"alg":"HS256","kid":"hmac-1"}), claims());
    let (header, rest) = good.split_once('.').expect("dots");
    let (payload, signature) = rest.split_once('.').expect("dots");
    let cases: Vec<(String, JwtError)> = vec![
        (
            "a".repeat(MAX_TOKEN_BYTES + 1),
            JwtError::TooLarge {
                len: MAX_TOKEN_BYTES + 1,
                max: MAX_TOKEN_BYTES,
            },
        ),
        (format!("{header}.{payload}"), JwtError::Malformed),
        (format!("{good}.extra"), JwtError::Malformed),
        (format!(".{payload}.{signature}"), JwtError::Malformed),
        (format!("{header}..{signature}"), JwtError::Malformed),
        (format!("{header}.{payload}."), JwtError::Malformed),
        (String::new(), JwtError::Malformed),
        (
            format!("!!.{payload}.{signature}"),
            JwtError::BadEncoding(Segment::Header),
        ),
        (
            format!("{header}=.{payload}.{signature}"),
            JwtError::BadEncoding(Segment::Header),
        ),
        (
            format!("{header}.{payload}+.{signature}"),
            JwtError::BadEncoding(Segment::Payload),
        ),
        (
            format!("{header}.{payload}.{signature}/"),
            JwtError::BadEncoding(Segment::Signature),
        ),
        (
            format!("{}.{payload}.{signature}", b64("not json")),
            JwtError::BadHeader,
        ),
        (
            format!("{}.{payload}.{signature}", b64("[1]")),
            JwtError::BadHeader,
        ),
        (
            format!("{}.{payload}.{signature}", b64(r#"{"typ":"JWT"}"#)),
            JwtError::BadHeader,
        ),
        (
            format!("{}.{payload}.{signature}", b64(r#"{"alg":256}"#)),
            JwtError::BadHeader,
        ),
        (
            format!(
                "{}.{payload}.{signature}",
                b64(r#"{"alg":"HS256","kid":7}"#)
            ),
            JwtError::BadHeader,
        ),
        (
            format!("{}.{payload}.{signature}", b64(r#"{"alg":"HS512"}"#)),
            JwtError::UnsupportedAlgorithm("HS512".into()),
        ),
        (
            format!("{}.{payload}.{signature}", b64(r#"{"alg":"PS256\"<x>"}"#)),
            JwtError::UnsupportedAlgorithm("PS256x".into()),
        ),
        (
            format!(
                "{}.{payload}.{signature}",
                b64(r#"{"alg":"HS256","crit":["exp"],"exp":1}"#)
            ),
            JwtError::CriticalHeader,
        ),
        (
            format!("{header}.{}.{signature}", b64("[1,2]")),
            JwtError::BadClaims,
        ),
        (
            format!("{header}.{}.{signature}", b64("not json")),
            JwtError::BadClaims,
        ),
    ];
    for (token, expected) in cases {
        assert_eq!(
            verify(&token, &keys(), &policy(), NOW),
            Err(expected),
            "{token}"
        );
    }
}

#[test]
fn key_choice_rejections() {
    let ec = ec_key();
    let keys = keys().merged(&KeySet::from_keys(vec![ec_jwk("ec-1", &ec)]));
    let two_rsa = KeySet::from_keys(vec![rsa_jwk("a", rsa_key()), rsa_jwk("b", other_rsa_key())]);
    let only_rsa = KeySet::from_keys(vec![rsa_jwk("rsa-1", rsa_key())]);
    let public_key_der = {
        use rsa::pkcs8::EncodePublicKey;
        rsa_key()
            .to_public_key()
            .to_public_key_der()
            .expect("der")
            .into_vec()
    };
    let rs_only = JwtPolicy {
        algorithms: vec![Algorithm::Rs256],
        ..policy()
    };
    let cases: Vec<(String, KeySet, JwtPolicy, JwtError)> = vec![
        (
            hs(json!({"alg":"HS256","kid":"hmac-1"}), claims()),
            keys.clone(),
            rs_only,
            JwtError::AlgorithmNotAllowed("HS256"),
        ),
        (
            sign_rs256(
                &json!({"alg":"RS256","kid":"rotated-away"}),
                &claims(),
                rsa_key(),
            ),
            keys.clone(),
            policy(),
            JwtError::UnknownKid,
        ),
        (
            sign_rs256(&json!({"alg":"RS256"}), &claims(), rsa_key()),
            two_rsa,
            policy(),
            JwtError::KidRequired,
        ),
        (
            sign_es256(&json!({"alg":"ES256"}), &claims(), &ec),
            only_rsa.clone(),
            policy(),
            JwtError::NoKeyForAlgorithm("ES256"),
        ),
        // The classic confusion: an HS256 token "signed" with the RSA public key as HMAC secret.
        (
            sign_hs256(
                &json!({"alg":"HS256","kid":"rsa-1"}),
                &claims(),
                &public_key_der,
            ),
            keys.clone(),
            policy(),
            JwtError::AlgorithmConfusion,
        ),
        (
            sign_hs256(&json!({"alg":"HS256"}), &claims(), &public_key_der),
            only_rsa,
            policy(),
            JwtError::AlgorithmConfusion,
        ),
        (
            sign_rs256(&json!({"alg":"RS256","kid":"ec-1"}), &claims(), rsa_key()),
            keys.clone(),
            policy(),
            JwtError::AlgorithmNotAllowedForKey { alg: "RS256" },
        ),
        (
            sign_es256(&json!({"alg":"ES256","kid":"hmac-1"}), &claims(), &ec),
            keys.clone(),
            policy(),
            JwtError::AlgorithmNotAllowedForKey { alg: "ES256" },
        ),
        (
            sign_rs256(
                &json!({"alg":"RS256","kid":"rsa-1"}),
                &claims(),
                other_rsa_key(),
            ),
            keys.clone(),
            policy(),
            JwtError::BadSignature,
        ),
        (
            sign_es256(&json!({"alg":"ES256","kid":"ec-1"}), &claims(), &ec_key()),
            keys.clone(),
            policy(),
            JwtError::BadSignature,
        ),
        (
            sign_hs256(
                &json!({"alg":"HS256","kid":"hmac-1"}),
                &claims(),
                b"another-secret-another-secret-xx",
            ),
            keys.clone(),
            policy(),
            JwtError::BadSignature,
        ),
    ];
    for (token, keys, policy, expected) in cases {
        assert_eq!(
            verify(&token, &keys, &policy, NOW),
            Err(expected),
            "{token}"
        );
    }
}

#[test]
fn signature_length_is_checked_per_algorithm() {
    let ec = ec_key();
    let keys = KeySet::from_keys(vec![ec_jwk("ec-1", &ec), rsa_jwk("rsa-1", rsa_key())]);
    let es = sign_es256(&json!({"alg":"ES256","kid":"ec-1"}), &claims(), &ec);
    let (input, signature) = es.rsplit_once('.').expect("dots");
    let short = format!(
        "{input}.{}",
        b64(&URL_SAFE_NO_PAD.decode(signature).expect("b64")[..63])
    );
    assert_eq!(
        verify(&short, &keys, &policy(), NOW),
        Err(JwtError::SignatureLength {
            expected: 64,
            actual: 63
        })
    );
    // A DER-encoded ECDSA signature (what some libraries emit) is not a JWS signature.
    let der = format!("{input}.{}", b64([0x30u8; 70]));
    assert_eq!(
        verify(&der, &keys, &policy(), NOW),
        Err(JwtError::SignatureLength {
            expected: 64,
            actual: 70
        })
    );
    let rs = sign_rs256(&json!({"alg":"RS256","kid":"rsa-1"}), &claims(), rsa_key());
    let (input, _) = rs.rsplit_once('.').expect("dots");
    let short = format!("{input}.{}", b64([1u8; 255]));
    assert_eq!(
        verify(&short, &keys, &policy(), NOW),
        Err(JwtError::SignatureLength {
            expected: 256,
            actual: 255
        })
    );
}

#[test]
fn time_claims_with_leeway() {
    let leeway = policy().leeway_s;
    let cases: Vec<(String, Result<(), JwtError>)> = vec![
        (
            with_claims(|c| {
                c.insert("exp".into(), json!(NOW - leeway + 1));
            }),
            Ok(()),
        ),
        (
            with_claims(|c| {
                c.insert("exp".into(), json!(NOW - leeway));
            }),
            Err(JwtError::Expired {
                exp: NOW - leeway,
                now: NOW,
            }),
        ),
        (
            with_claims(|c| {
                c.insert("exp".into(), json!((NOW + 100) as f64 + 0.5));
            }),
            Ok(()),
        ),
        (
            with_claims(|c| {
                c.insert("nbf".into(), json!(NOW + leeway));
            }),
            Ok(()),
        ),
        (
            with_claims(|c| {
                c.insert("nbf".into(), json!(NOW + leeway + 1));
            }),
            Err(JwtError::NotYetValid {
                nbf: NOW + leeway + 1,
            }),
        ),
        (
            with_claims(|c| {
                c.insert("iat".into(), json!(NOW + leeway));
            }),
            Ok(()),
        ),
        (
            with_claims(|c| {
                c.insert("iat".into(), json!(NOW + leeway + 1));
            }),
            Err(JwtError::IssuedInFuture {
                iat: NOW + leeway + 1,
            }),
        ),
        (
            with_claims(|c| {
                c.remove("exp");
            }),
            Err(JwtError::MissingClaim("exp".into())),
        ),
        (
            with_claims(|c| {
                c.insert("exp".into(), json!("tomorrow"));
            }),
            Err(JwtError::BadClaim("exp".into())),
        ),
        (
            with_claims(|c| {
                c.insert("exp".into(), json!(-5));
            }),
            Err(JwtError::BadClaim("exp".into())),
        ),
        (
            with_claims(|c| {
                c.insert("nbf".into(), json!(null));
            }),
            Err(JwtError::BadClaim("nbf".into())),
        ),
    ];
    for (token, expected) in cases {
        assert_eq!(
            verify(&token, &keys(), &policy(), NOW).map(|_| ()),
            expected,
            "{token}"
        );
    }
}

#[test]
fn issuer_audience_subject_and_tenant() {
    let cases: Vec<(String, Result<(), JwtError>)> = vec![
        (
            with_claims(|c| {
                c.remove("iss");
            }),
            Err(JwtError::MissingClaim("iss".into())),
        ),
        (
            with_claims(|c| {
                c.insert("iss".into(), json!("https://evil.example"));
            }),
            Err(JwtError::WrongIssuer),
        ),
        (
            with_claims(|c| {
                c.insert("iss".into(), json!(["https://issuer.example"]));
            }),
            Err(JwtError::BadClaim("iss".into())),
        ),
        (
            with_claims(|c| {
                c.remove("aud");
            }),
            Err(JwtError::MissingClaim("aud".into())),
        ),
        (
            with_claims(|c| {
                c.insert("aud".into(), json!("someone-else"));
            }),
            Err(JwtError::WrongAudience),
        ),
        (
            with_claims(|c| {
                c.insert("aud".into(), json!(["someone-else", "aybiza-relay"]));
            }),
            Ok(()),
        ),
        (
            with_claims(|c| {
                c.insert("aud".into(), json!(["someone-else"]));
            }),
            Err(JwtError::WrongAudience),
        ),
        (
            with_claims(|c| {
                c.insert("aud".into(), json!([1]));
            }),
            Err(JwtError::BadClaim("aud".into())),
        ),
        (
            with_claims(|c| {
                c.insert("aud".into(), json!(7));
            }),
            Err(JwtError::BadClaim("aud".into())),
        ),
        (
            with_claims(|c| {
                c.remove("sub");
            }),
            Err(JwtError::MissingClaim("sub".into())),
        ),
        (
            with_claims(|c| {
                c.insert("sub".into(), json!(""));
            }),
            Err(JwtError::MissingClaim("sub".into())),
        ),
        (
            with_claims(|c| {
                c.insert("sub".into(), json!(42));
            }),
            Err(JwtError::BadClaim("sub".into())),
        ),
        (
            with_claims(|c| {
                c.remove("tenant_id");
            }),
            Err(JwtError::MissingClaim("tenant_id".into())),
        ),
        (
            with_claims(|c| {
                c.insert("scope".into(), json!(3));
            }),
            Err(JwtError::BadClaim("scope".into())),
        ),
        (
            with_claims(|c| {
                c.insert("scp".into(), json!(["a", 1]));
            }),
            Err(JwtError::BadClaim("scp".into())),
        ),
    ];
    for (token, expected) in cases {
        assert_eq!(
            verify(&token, &keys(), &policy(), NOW).map(|_| ()),
            expected,
            "{token}"
        );
    }
}

#[test]
fn scopes_merge_from_every_claim_without_duplicates() {
    let token = with_claims(|c| {
        c.insert("scope".into(), json!("a  b"));
        c.insert("scp".into(), json!(["c", "a"]));
        c.insert("scopes".into(), json!("d"));
    });
    let principal = verify(&token, &keys(), &policy(), NOW).expect("valid");
    assert_eq!(principal.scopes, ["a", "b", "c", "d"]);
}

#[test]
fn cloudflare_access_service_tokens_use_common_name_and_the_default_tenant() {
    let policy = JwtPolicy {
        default_tenant: Some("tenant-access".into()),
        ..policy()
    };
    let token = with_claims(|c| {
        c.insert("sub".into(), json!(""));
        c.insert("common_name".into(), json!("8f3c.access"));
        c.remove("tenant_id");
        c.remove("plan");
        c.remove("scope");
    });
    let principal = verify(&token, &keys(), &policy, NOW).expect("valid");
    assert_eq!(principal.subject, "8f3c.access");
    assert_eq!(principal.tenant_id, "tenant-access");
    assert_eq!(principal.plan, "free");
    assert!(principal.scopes.is_empty());
}

#[test]
fn every_error_has_its_own_code() {
    let all = [
        JwtError::TooLarge { len: 0, max: 0 },
        JwtError::Malformed,
        JwtError::BadEncoding(Segment::Header),
        JwtError::BadHeader,
        JwtError::AlgNone,
        JwtError::UnsupportedAlgorithm(String::new()),
        JwtError::CriticalHeader,
        JwtError::BadClaims,
        JwtError::AlgorithmNotAllowed("HS256"),
        JwtError::UnknownKid,
        JwtError::KidRequired,
        JwtError::NoKeyForAlgorithm("ES256"),
        JwtError::AlgorithmConfusion,
        JwtError::AlgorithmNotAllowedForKey { alg: "RS256" },
        JwtError::BadSignature,
        JwtError::SignatureLength {
            expected: 0,
            actual: 0,
        },
        JwtError::KeyUnusable,
        JwtError::VerifierFailed,
        JwtError::Expired { exp: 0, now: 0 },
        JwtError::NotYetValid { nbf: 0 },
        JwtError::IssuedInFuture { iat: 0 },
        JwtError::MissingClaim(String::new()),
        JwtError::BadClaim(String::new()),
        JwtError::WrongIssuer,
        JwtError::WrongAudience,
    ];
    let mut codes: Vec<&str> = all.iter().map(JwtError::code).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), all.len());
    for code in codes {
        assert!(
            code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{code}"
        );
    }
}

// --- Properties --------------------------------------------------------------------------

/// Flips one bit (of the low seven, so the token stays ASCII) and verifies.
fn flipped(token: &str, index: usize, bit: u8) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let index = index % bytes.len();
    bytes[index] ^= 1 << bit;
    String::from_utf8(bytes).expect("ASCII stays UTF-8")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bit_flip_in_an_hs256_token_is_rejected(index in any::<usize>(), bit in 0u8..7) {
        let token = hs(json!({"alg":"HS256","kid":"hmac-1"}), claims());
        prop_assert!(verify(&token, &keys(), &policy(), NOW).is_ok());
        prop_assert!(verify(&flipped(&token, index, bit), &keys(), &policy(), NOW).is_err());
    }

    #[test]
    fn any_bit_flip_in_an_rs256_token_is_rejected(index in any::<usize>(), bit in 0u8..7) {
        let token = sign_rs256(&json!({"alg":"RS256","kid":"rsa-1"}), &claims(), rsa_key());
        prop_assert!(verify(&flipped(&token, index, bit), &keys(), &policy(), NOW).is_err());
    }

    #[test]
    fn any_bit_flip_in_an_es256_token_is_rejected(index in any::<usize>(), bit in 0u8..7) {
        let ec = ec_key();
        let keys = KeySet::from_keys(vec![ec_jwk("ec-1", &ec)]);
        let token = sign_es256(&json!({"alg":"ES256","kid":"ec-1"}), &claims(), &ec);
        prop_assert!(verify(&token, &keys, &policy(), NOW).is_ok());
        prop_assert!(verify(&flipped(&token, index, bit), &keys, &policy(), NOW).is_err());
    }

    /// Arbitrary input never panics and never verifies.
    #[test]
    fn garbage_never_verifies(token in "[A-Za-z0-9_.=-]{0,300}") {
        prop_assert!(verify(&token, &keys(), &policy(), NOW).is_err());
    }
}
