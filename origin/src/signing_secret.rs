//! Each tenant's secret for `X-Aybiza-Signature` (`shared::outbound_signature`): created on
//! first need (the first tool call, or the tenant reading it), rotated on request with a grace
//! during which the previous secret signs too, and never logged.
//!
//! [`signer`] is what anything in the origin that calls a tenant uses (tool calls now, the
//! webhooks' outbox next): it answers from an in-process cache of [`CACHE_TTL_MS`] and reads the
//! store after that, so a rotation made through another replica is signed with here within that
//! time (receivers keep accepting the previous secret during the grace, so nothing is lost).
//!
//! Secrets are stored as they are used (an HMAC key must be readable to sign); the database's
//! own encryption at rest and access control protect them, like the agents' configuration.

use std::collections::HashMap;
use std::sync::Mutex;

use shared::outbound_signature;

use crate::AppState;
use crate::store::{SigningSecret, StoreError};

/// How long a tenant's secrets are signed with before they are read again.
pub const CACHE_TTL_MS: u64 = 10_000;

/// Signs bodies with a tenant's secrets: the current one, and the previous one while its grace
/// lasts. `Debug` shows no secret.
#[derive(Clone)]
pub struct Signer {
    keys: Vec<String>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} keys)", self.keys.len())
    }
}

impl Signer {
    /// The keys in force at `now_ms`.
    fn of(secret: &SigningSecret, now_ms: u64) -> Self {
        let mut keys = vec![secret.secret.clone()];
        if let (Some(previous), Some(until)) = (&secret.previous, secret.previous_expires_at_ms)
            && now_ms < until
        {
            keys.push(previous.clone());
        }
        Self { keys }
    }

    /// The `X-Aybiza-Signature` value of `body` at `now_secs`.
    pub fn sign(&self, body: &[u8], now_secs: u64) -> String {
        let keys: Vec<&[u8]> = self.keys.iter().map(String::as_bytes).collect();
        outbound_signature::sign(&keys, now_secs, body)
    }
}

/// Tenants' signers, read recently.
#[derive(Default)]
pub struct SecretCache {
    entries: Mutex<HashMap<String, (Signer, u64)>>,
}

impl SecretCache {
    fn get(&self, tenant: &str, now_ms: u64) -> Option<Signer> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(tenant)
            .filter(|(_, at)| now_ms.saturating_sub(*at) < CACHE_TTL_MS)
            .map(|(signer, _)| signer.clone())
    }

    fn put(&self, tenant: &str, signer: Signer, now_ms: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(tenant.to_owned(), (signer, now_ms));
    }

    /// Forgets a tenant's signer (after a rotation here).
    pub fn forget(&self, tenant: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(tenant);
    }
}

/// The signer for `tenant`'s requests, creating its secret when it has none.
pub async fn signer(state: &AppState, tenant: &str) -> Result<Signer, StoreError> {
    let now = state.now_ms();
    if let Some(signer) = state.secrets.get(tenant, now) {
        return Ok(signer);
    }
    let secret = match crate::routes::stored(state, state.store.signing_secret(tenant).await)? {
        Some(secret) => secret,
        None => {
            let (secret, created) = crate::routes::stored(
                state,
                state
                    .store
                    .create_signing_secret(tenant, &new_secret(), now)
                    .await,
            )?;
            if created {
                tracing::info!(tenant, "signing secret created on first need");
            }
            secret
        }
    };
    let signer = Signer::of(&secret, now);
    state.secrets.put(tenant, signer.clone(), now);
    Ok(signer)
}

/// A new secret from the system's CSPRNG (ring, through rustls).
pub fn new_secret() -> String {
    let mut random = [0_u8; outbound_signature::SECRET_BYTES];
    let provider = rustls::crypto::ring::default_provider();
    if provider.secure_random.fill(&mut random).is_err() {
        // ring's generator reads the OS; it does not fail on the systems the origin runs on.
        // Should it, a UUID pair is still 244 random bits.
        random[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        random[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    outbound_signature::secret_from(&random)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(previous_until: Option<u64>) -> SigningSecret {
        SigningSecret {
            secret: "whsec_new".into(),
            previous: previous_until.map(|_| "whsec_old".into()),
            previous_expires_at_ms: previous_until,
            created_at_ms: 1,
            rotated_at_ms: previous_until.map(|_| 2),
        }
    }

    #[test]
    fn the_previous_secret_signs_until_its_grace_ends() {
        let body = b"{}";
        let both = Signer::of(&stored(Some(10_000)), 9_999).sign(body, 5);
        assert_eq!(both.matches("v1=").count(), 2, "{both}");
        assert_eq!(
            outbound_signature::verify(&both, body, &[b"whsec_old"], 5, 300),
            Ok(5)
        );
        let after = Signer::of(&stored(Some(10_000)), 10_000).sign(body, 5);
        assert_eq!(after.matches("v1=").count(), 1, "{after}");
        assert!(outbound_signature::verify(&after, body, &[b"whsec_old"], 5, 300).is_err());
        assert_eq!(
            outbound_signature::verify(&after, body, &[b"whsec_new"], 5, 300),
            Ok(5)
        );
        assert_eq!(
            format!("{:?}", Signer::of(&stored(None), 0)),
            "Signer(1 keys)"
        );
    }

    #[test]
    fn new_secrets_are_well_formed_and_differ() {
        let (a, b) = (new_secret(), new_secret());
        assert!(outbound_signature::is_secret(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn the_cache_expires_and_forgets() {
        let cache = SecretCache::default();
        cache.put("t", Signer::of(&stored(None), 0), 100);
        assert!(cache.get("t", 100 + CACHE_TTL_MS - 1).is_some());
        assert!(cache.get("t", 100 + CACHE_TTL_MS).is_none());
        cache.forget("t");
        assert!(cache.get("t", 101).is_none());
    }
}
