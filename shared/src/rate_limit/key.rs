//! Which Durable Object instance decides for a key.
//!
//! The instance name is `hex(HMAC-SHA256(secret, policy ":" key))`. The policy name is the
//! namespace (`ip:`, `principal:`, `tenant-calls:`) and holds no `:`, so two different
//! (policy, key) pairs never share an input, and SHA-256 makes sharing a name infeasible: a
//! hostile key cannot collide with another. The secret makes the names unguessable, so neither
//! the names nor the logs that carry them reveal raw keys (an IPv4 address space is small enough
//! to hash exhaustively without one), and nobody can enumerate or target other keys' limiters.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::policy::PolicyName;
use crate::signing::hex;

/// Longest key accepted (bytes).
pub const MAX_KEY_LEN: usize = 512;
/// Shortest secret accepted (bytes).
pub const MIN_SECRET_LEN: usize = 16;
/// Log lines name an object by this many hex digits of its name: enough to find it, and the
/// name is a keyed hash, so it reveals nothing about the key.
pub const LOGGED_NAME_LEN: usize = 12;

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is empty.
    #[error("the key is empty")]
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`].
    #[error("the key is {len} bytes, more than {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
}

/// Checks a key before it is hashed.
pub fn check_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        Err(KeyError::Empty)
    } else if key.len() > MAX_KEY_LEN {
        Err(KeyError::TooLong {
            len: key.len(),
            max: MAX_KEY_LEN,
        })
    } else {
        Ok(())
    }
}

/// Names Durable Object instances from keys, with the secret's HMAC state prepared once.
#[derive(Clone)]
pub struct KeyHasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

impl KeyHasher {
    /// A hasher keyed with `secret` (HMAC accepts any length; the config enforces a minimum).
    pub fn new(secret: &[u8]) -> Self {
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .expect("HMAC accepts keys of any length");
        Self { mac }
    }

    /// The instance name for `key` under `policy`: 64 lowercase hex digits.
    pub fn object_name(&self, policy: &PolicyName, key: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(policy.as_str().as_bytes());
        mac.update(b":");
        mac.update(key.as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> PolicyName {
        PolicyName::parse(text).expect("valid")
    }

    #[test]
    fn rfc_4231_test_case_2() {
        // The published vector for the primitive the names are built on.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").expect("any length");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_name_is_the_hmac_of_namespace_and_key() {
        let hasher = KeyHasher::new(b"Jefe");
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").expect("any length");
        mac.update(b"ip:203.0.113.7");
        assert_eq!(
            hasher.object_name(&name("ip"), "203.0.113.7"),
            hex(&mac.finalize().into_bytes())
        );
    }

    #[test]
    fn namespaces_and_secrets_separate_names() {
        let hasher = KeyHasher::new(b"0123456789abcdef");
        let ip = hasher.object_name(&name("ip"), "t1");
        let principal = hasher.object_name(&name("principal"), "t1");
        let calls = hasher.object_name(&name("tenant-calls"), "t1");
        assert_ne!(ip, principal);
        assert_ne!(principal, calls);
        // A key that spells another namespace stays in its own.
        assert_ne!(
            hasher.object_name(&name("ip"), "principal:t1"),
            hasher.object_name(&name("principal"), "t1")
        );
        let other = KeyHasher::new(b"fedcba9876543210");
        assert_ne!(other.object_name(&name("ip"), "t1"), ip);
        assert_eq!(ip.len(), 64);
        assert!(
            ip.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(hasher.object_name(&name("ip"), "t1"), ip, "stable");
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(check_key(""), Err(KeyError::Empty));
        assert_eq!(check_key(&"k".repeat(MAX_KEY_LEN)), Ok(()));
        assert_eq!(
            check_key(&"k".repeat(MAX_KEY_LEN + 1)),
            Err(KeyError::TooLong {
                len: MAX_KEY_LEN + 1,
                max: MAX_KEY_LEN
            })
        );
    }
}
