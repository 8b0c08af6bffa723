//! The signature backend behind `shared::signature::Verifier`.
//!
//! By default RS256, ES256 and Ed25519 (Telnyx's webhook signatures) go to the runtime's
//! WebCrypto (`crypto.subtle`, native code in workerd, which implements `Ed25519`), with
//! imported keys cached per isolate; HS256 stays in pure Rust (a MAC over a few hundred bytes
//! costs less than a promise round trip). The `rust-crypto` feature swaps in
//! `shared::signature::RustCrypto` so the benchmark can compare both inside workerd.

#[cfg(feature = "rust-crypto")]
pub use shared::signature::RustCrypto as Backend;
#[cfg(not(feature = "rust-crypto"))]
pub use web_crypto::WebCrypto as Backend;

#[cfg(not(feature = "rust-crypto"))]
mod web_crypto {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use shared::jwks::{Jwk, KeyMaterial};
    use shared::signature::{
        Algorithm, ED25519_KEY_LEN, ED25519_LEN, ES256_LEN, Ed25519Verifier, SignatureError,
        Verifier, verify_hs256,
    };
    use wasm_bindgen::JsValue;
    use wasm_bindgen::prelude::wasm_bindgen;
    use worker::js_sys::{Array, Object, Promise, Reflect, Uint8Array};
    use worker::wasm_bindgen_futures::JsFuture;

    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = importKey, catch)]
        fn import_key(
            format: &str,
            key_data: &JsValue,
            algorithm: &Object,
            extractable: bool,
            usages: &Array,
        ) -> Result<Promise, JsValue>;

        #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = verify, catch)]
        fn subtle_verify(
            algorithm: &Object,
            key: &JsValue,
            signature: &Uint8Array,
            data: &Uint8Array,
        ) -> Result<Promise, JsValue>;
    }

    /// Imported keys kept per isolate; bounded so a rotating key set cannot grow it forever.
    const MAX_IMPORTED_KEYS: usize = 64;

    thread_local! {
        static IMPORTED: RefCell<HashMap<[u8; 32], JsValue>> = RefCell::new(HashMap::new());
    }

    /// `crypto.subtle` for RS256/ES256, pure Rust for HS256.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct WebCrypto;

    impl Verifier for WebCrypto {
        async fn verify(
            &self,
            alg: Algorithm,
            key: &Jwk,
            message: &[u8],
            signature: &[u8],
        ) -> Result<(), SignatureError> {
            match (alg, key.material()) {
                (Algorithm::Hs256, KeyMaterial::Hmac(secret)) => {
                    verify_hs256(secret.expose(), message, signature)
                }
                (Algorithm::Rs256, KeyMaterial::Rsa { n, .. }) => {
                    if signature.len() != n.len() {
                        return Err(SignatureError::WrongLength {
                            expected: n.len(),
                            actual: signature.len(),
                        });
                    }
                    subtle(alg, key, message, signature).await
                }
                (Algorithm::Es256, KeyMaterial::EcP256 { .. }) => {
                    if signature.len() != ES256_LEN {
                        return Err(SignatureError::WrongLength {
                            expected: ES256_LEN,
                            actual: signature.len(),
                        });
                    }
                    subtle(alg, key, message, signature).await
                }
                _ => Err(SignatureError::UnusableKey),
            }
        }
    }

    impl Ed25519Verifier for WebCrypto {
        async fn verify_ed25519(
            &self,
            public_key: &[u8; ED25519_KEY_LEN],
            message: &[u8],
            signature: &[u8; ED25519_LEN],
        ) -> Result<(), SignatureError> {
            let key = imported_ed25519(public_key).await?;
            let params = Object::new();
            set(&params, "name", ED25519).map_err(|_| SignatureError::BackendFailed)?;
            check(subtle_verify(
                &params,
                &key,
                &Uint8Array::from(&signature[..]),
                &Uint8Array::from(message),
            ))
            .await
        }
    }

    /// WebCrypto's name of the algorithm (Secure Curves in WebCrypto; workerd implements it).
    const ED25519: &str = "Ed25519";

    /// An Ed25519 public key as a `CryptoKey`, imported once per isolate (keyed by its bytes,
    /// which are public).
    async fn imported_ed25519(
        public_key: &[u8; ED25519_KEY_LEN],
    ) -> Result<JsValue, SignatureError> {
        if let Some(found) = IMPORTED.with(|cache| cache.borrow().get(public_key).cloned()) {
            return Ok(found);
        }
        let params = Object::new();
        set(&params, "name", ED25519).map_err(|_| SignatureError::BackendFailed)?;
        let usages = Array::of1(&JsValue::from_str("verify"));
        let data: JsValue = Uint8Array::from(&public_key[..]).into();
        let promise = import_key("raw", &data, &params, false, &usages)
            .map_err(|_| SignatureError::UnusableKey)?;
        let crypto_key = JsFuture::from(promise)
            .await
            .map_err(|_| SignatureError::UnusableKey)?;
        remember(*public_key, crypto_key.clone());
        Ok(crypto_key)
    }

    /// A `verify` promise's verdict.
    async fn check(promise: Result<Promise, JsValue>) -> Result<(), SignatureError> {
        let promise = promise.map_err(|_| SignatureError::BackendFailed)?;
        let verdict = JsFuture::from(promise)
            .await
            .map_err(|_| SignatureError::BackendFailed)?;
        match verdict.as_bool() {
            Some(true) => Ok(()),
            Some(false) => Err(SignatureError::Mismatch),
            None => Err(SignatureError::BackendFailed),
        }
    }

    fn remember(fingerprint: [u8; 32], crypto_key: JsValue) {
        IMPORTED.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.len() >= MAX_IMPORTED_KEYS {
                cache.clear();
            }
            cache.insert(fingerprint, crypto_key);
        });
    }

    async fn subtle(
        alg: Algorithm,
        key: &Jwk,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        let crypto_key = imported(alg, key).await?;
        let params = verify_params(alg).map_err(|_| SignatureError::BackendFailed)?;
        check(subtle_verify(
            &params,
            &crypto_key,
            &Uint8Array::from(signature),
            &Uint8Array::from(message),
        ))
        .await
    }

    /// The `CryptoKey` for a JWK, imported once per isolate.
    async fn imported(alg: Algorithm, key: &Jwk) -> Result<JsValue, SignatureError> {
        let fingerprint = *key.fingerprint();
        if let Some(found) = IMPORTED.with(|cache| cache.borrow().get(&fingerprint).cloned()) {
            return Ok(found);
        }
        let (format, data, params) =
            import_params(alg, key).map_err(|_| SignatureError::BackendFailed)?;
        let usages = Array::of1(&JsValue::from_str("verify"));
        let promise = import_key(format, &data, &params, false, &usages)
            .map_err(|_| SignatureError::UnusableKey)?;
        let crypto_key = JsFuture::from(promise)
            .await
            .map_err(|_| SignatureError::UnusableKey)?;
        remember(fingerprint, crypto_key.clone());
        Ok(crypto_key)
    }

    type Import = (&'static str, JsValue, Object);

    fn import_params(alg: Algorithm, key: &Jwk) -> Result<Import, JsValue> {
        match key.material() {
            KeyMaterial::Rsa { n, e } => {
                let jwk = Object::new();
                set(&jwk, "kty", "RSA")?;
                set(&jwk, "n", &URL_SAFE_NO_PAD.encode(n))?;
                set(&jwk, "e", &URL_SAFE_NO_PAD.encode(e))?;
                set(&jwk, "alg", alg.name())?;
                let params = Object::new();
                set(&params, "name", "RSASSA-PKCS1-v1_5")?;
                set(&params, "hash", "SHA-256")?;
                Ok(("jwk", jwk.into(), params))
            }
            KeyMaterial::EcP256 { x, y } => {
                let mut point = [0u8; 65];
                point[0] = 0x04;
                point[1..33].copy_from_slice(x);
                point[33..].copy_from_slice(y);
                let params = Object::new();
                set(&params, "name", "ECDSA")?;
                set(&params, "namedCurve", "P-256")?;
                Ok(("raw", Uint8Array::from(&point[..]).into(), params))
            }
            KeyMaterial::Hmac(_) => Err(JsValue::from_str("HMAC keys stay in Rust")),
        }
    }

    fn verify_params(alg: Algorithm) -> Result<Object, JsValue> {
        let params = Object::new();
        match alg {
            Algorithm::Es256 => {
                set(&params, "name", "ECDSA")?;
                set(&params, "hash", "SHA-256")?;
            }
            _ => set(&params, "name", "RSASSA-PKCS1-v1_5")?,
        }
        Ok(params)
    }

    fn set(object: &Object, name: &str, value: &str) -> Result<(), JsValue> {
        Reflect::set(object, &JsValue::from_str(name), &JsValue::from_str(value)).map(|_| ())
    }
}
