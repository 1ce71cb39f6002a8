//! A keyring made ready once for the many tokens it signs and verifies.
//! Parsing the active key's PEM costs more than the ECDSA signature it
//! makes (the key pair is checked by an elliptic-curve multiplication), so
//! it is done once per version of the keyring, not once per token.

use std::{
    ops::Deref,
    sync::atomic::{AtomicU64, Ordering},
};

use jsonwebtoken::jwk::JwkSet;

use super::{KeyError, Keyring, SigningKey};

/// Every loaded keyring has its own generation, so what was learnt from one
/// (a verified token, say) is never taken for another.
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

/// A [`Keyring`] with its active key parsed and its JWKS built.
#[derive(Debug)]
pub struct LoadedKeyring {
    keyring: Keyring,
    signing_key: Result<Option<SigningKey>, KeyError>,
    jwks: JwkSet,
    generation: u64,
}

impl LoadedKeyring {
    pub fn new(keyring: Keyring) -> Self {
        Self {
            signing_key: keyring.active_signing_key(),
            jwks: keyring.jwks(),
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            keyring,
        }
    }

    /// The key that signs new tokens, parsed when the keyring was loaded.
    pub fn signing_key(&self) -> Result<Option<&SigningKey>, &KeyError> {
        self.signing_key.as_ref().map(Option::as_ref)
    }

    /// Every published public key.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Unique to this load: a keyring loaded again (a new version of its
    /// Secret) has another.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Deref for LoadedKeyring {
    type Target = Keyring;

    fn deref(&self) -> &Keyring {
        &self.keyring
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::{
        api::SigningAlgorithm,
        token::{KeyPolicy, StoredKey, plan_keys},
    };

    fn keyring() -> Keyring {
        let policy = KeyPolicy {
            algorithm: SigningAlgorithm::ES256,
            rotation_interval: Duration::from_secs(3600),
            max_token_lifetime: Duration::from_secs(3600),
        };
        plan_keys(Keyring::default(), policy, Timestamp::now())
            .unwrap()
            .keyring
    }

    #[test]
    fn holds_the_active_key_and_the_jwks_of_its_keyring() {
        let keyring = keyring();
        let active = keyring.active().unwrap().kid.clone();
        let loaded = LoadedKeyring::new(keyring);
        assert_eq!(loaded.signing_key().unwrap().unwrap().kid, active);
        assert_eq!(loaded.jwks().keys.len(), 1);
        assert_eq!(
            loaded.jwks().keys[0].common.key_id.as_deref(),
            Some(&*active)
        );
    }

    #[test]
    fn an_unreadable_active_key_is_an_error_a_keyring_without_one_is_none() {
        let mut keyring = keyring();
        let public_only = StoredKey {
            private_key_pem: None,
            ..keyring.keys[0].clone()
        };
        assert!(
            LoadedKeyring::new(Keyring::default())
                .signing_key()
                .unwrap()
                .is_none()
        );
        keyring.keys = vec![public_only];
        assert!(LoadedKeyring::new(keyring).signing_key().is_err());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let loaded = LoadedKeyring::new(keyring());
        let shown = format!("{loaded:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
        assert!(shown.contains("kid"), "{shown}");
    }

    #[test]
    fn each_load_is_a_generation_of_its_own() {
        let keyring = keyring();
        let (first, second) = (
            LoadedKeyring::new(keyring.clone()),
            LoadedKeyring::new(keyring),
        );
        assert_ne!(first.generation(), second.generation());
    }
}
