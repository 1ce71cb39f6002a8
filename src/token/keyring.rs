//! An issuer's signing keys as stored in its Secret, and the rules for when a
//! key becomes active, retires and leaves the JWKS.

use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use k8s_openapi::jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{KeyError, SigningKey, whole_seconds};
use crate::api::SigningAlgorithm;

/// The Secret data key holding the serialized [`Keyring`].
pub const KEYRING_SECRET_KEY: &str = "keys.json";

/// One key of an issuer. Retired keys keep only their public half.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredKey {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    pub created_at: Timestamp,
    /// When it stopped signing; `None` for the active key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<Timestamp>,
    /// When it leaves the JWKS: no token it signed lives longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_after: Option<Timestamp>,
    pub public_jwk: Jwk,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_secret"
    )]
    pub private_key_pem: Option<SecretString>,
}

fn serialize_secret<S: serde::Serializer>(
    value: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(secret) => s.serialize_some(secret.expose_secret()),
        None => s.serialize_none(),
    }
}

/// Every key an issuer has, oldest first; the last unretired one signs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Keyring {
    pub keys: Vec<StoredKey>,
}

/// How an issuer wants its keys kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KeyPolicy {
    pub algorithm: SigningAlgorithm,
    pub rotation_interval: Duration,
    /// A retired key stays published this long: no token outlives it.
    pub max_token_lifetime: Duration,
}

/// The most keys a keyring may be made to hold: it lives in one Secret.
pub const MAX_PUBLISHED_KEYS: u64 = 100;

impl KeyPolicy {
    /// How many keys can be published at once under this policy: the active
    /// one plus every key retired within the last `max_token_lifetime`.
    pub fn published_key_bound(&self) -> u64 {
        let interval = self.rotation_interval.as_secs().max(1);
        self.max_token_lifetime.as_secs().div_ceil(interval) + 1
    }
}

/// What [`plan_keys`] decided.
#[derive(Debug)]
pub struct KeyPlan {
    pub keyring: Keyring,
    /// Whether the keyring differs from the one passed in (a write is due).
    pub changed: bool,
    /// When the keyring must be looked at again.
    pub next_change: Timestamp,
}

impl Keyring {
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a keyring always serializes")
    }

    pub fn active(&self) -> Option<&StoredKey> {
        self.keys.iter().rev().find(|k| k.retired_at.is_none())
    }

    /// The key that signs new tokens, ready to sign.
    pub fn active_signing_key(&self) -> Result<Option<SigningKey>, KeyError> {
        let Some(active) = self.active() else {
            return Ok(None);
        };
        let Some(pem) = &active.private_key_pem else {
            return Err(KeyError::Unreadable {
                kid: active.kid.clone(),
                reason: "the active key has no private half".into(),
            });
        };
        SigningKey::from_pem(
            active.algorithm,
            SecretString::from(pem.expose_secret().to_string()),
            Some(&active.kid),
        )
        .map(Some)
    }

    /// Every published public key: the active one and the retired ones whose
    /// tokens may still be alive.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.keys.iter().map(|k| k.public_jwk.clone()).collect(),
        }
    }
}

/// Brings `current` in line with `policy` at `now`: drops keys no live token
/// needs, retires the active key when it is due or of another algorithm, and
/// generates a new active key when there is none.
pub fn plan_keys(current: Keyring, policy: KeyPolicy, now: Timestamp) -> Result<KeyPlan, KeyError> {
    let now = whole_seconds(now);
    let mut changed = false;
    let mut keys: Vec<StoredKey> = current.keys;

    let before = keys.len();
    keys.retain(|k| k.remove_after.is_none_or(|t| t > now));
    changed |= keys.len() != before;

    let due = |k: &StoredKey| {
        k.algorithm != policy.algorithm
            || k.created_at
                .checked_add(policy.rotation_interval)
                .is_ok_and(|t| t <= now)
    };
    // The newest unretired key stays active unless it is due; any other
    // unretired key (there should be none) retires.
    let mut has_active = false;
    for key in keys.iter_mut().rev().filter(|k| k.retired_at.is_none()) {
        if has_active || due(key) || key.private_key_pem.is_none() {
            key.retired_at = Some(now);
            key.remove_after = Some(later(now, policy.max_token_lifetime));
            key.private_key_pem = None;
            changed = true;
        } else {
            has_active = true;
        }
    }
    if !has_active {
        let key = SigningKey::generate(policy.algorithm)?;
        keys.push(StoredKey {
            kid: key.kid.clone(),
            algorithm: policy.algorithm,
            created_at: now,
            retired_at: None,
            remove_after: None,
            public_jwk: key.public_jwk().clone(),
            private_key_pem: Some(SecretString::from(
                key.private_pem().expose_secret().to_string(),
            )),
        });
        changed = true;
    }

    let keyring = Keyring { keys };
    let active = keyring.active().expect("an active key exists now");
    let next_change = keyring
        .keys
        .iter()
        .filter_map(|k| k.remove_after)
        .chain([later(active.created_at, policy.rotation_interval)])
        .min()
        .expect("at least the rotation time");
    Ok(KeyPlan {
        keyring,
        changed,
        next_change,
    })
}

fn later(t: Timestamp, by: Duration) -> Timestamp {
    t.checked_add(by).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn policy(algorithm: SigningAlgorithm) -> KeyPolicy {
        KeyPolicy {
            algorithm,
            rotation_interval: 30 * DAY,
            max_token_lifetime: 365 * DAY,
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn bounds_the_number_of_published_keys() {
        assert_eq!(policy(SigningAlgorithm::ES256).published_key_bound(), 14);
        let hasty = KeyPolicy {
            rotation_interval: Duration::from_secs(60),
            ..policy(SigningAlgorithm::ES256)
        };
        assert!(hasty.published_key_bound() > MAX_PUBLISHED_KEYS);
    }

    #[test]
    fn first_plan_generates_an_active_key() {
        let plan = plan_keys(
            Keyring::default(),
            policy(SigningAlgorithm::ES256),
            at("2026-01-01T00:00:00Z"),
        )
        .unwrap();
        assert!(plan.changed);
        assert_eq!(plan.keyring.keys.len(), 1);
        assert!(plan.keyring.active_signing_key().unwrap().is_some());
        assert_eq!(plan.next_change, at("2026-01-31T00:00:00Z"));
    }

    #[test]
    fn unchanged_before_rotation_is_due() {
        let p = policy(SigningAlgorithm::ES256);
        let first = plan_keys(Keyring::default(), p, at("2026-01-01T00:00:00Z")).unwrap();
        let again = plan_keys(first.keyring.clone(), p, at("2026-01-20T00:00:00Z")).unwrap();
        assert!(!again.changed);
        assert_eq!(
            again.keyring.active().unwrap().kid,
            first.keyring.active().unwrap().kid
        );
    }

    #[test]
    fn rotation_keeps_the_retired_public_key_until_its_tokens_expire() {
        let p = policy(SigningAlgorithm::ES256);
        let first = plan_keys(Keyring::default(), p, at("2026-01-01T00:00:00Z")).unwrap();
        let old_kid = first.keyring.active().unwrap().kid.clone();
        let rotated = plan_keys(first.keyring, p, at("2026-01-31T00:00:00Z")).unwrap();
        assert!(rotated.changed);
        assert_eq!(rotated.keyring.keys.len(), 2);
        let retired = &rotated.keyring.keys[0];
        assert_eq!(retired.kid, old_kid);
        assert!(
            retired.private_key_pem.is_none(),
            "a retired key keeps no private half"
        );
        assert_eq!(retired.remove_after, Some(at("2027-01-31T00:00:00Z")));
        assert_ne!(rotated.keyring.active().unwrap().kid, old_kid);
        assert_eq!(rotated.keyring.jwks().keys.len(), 2);

        let pruned = plan_keys(rotated.keyring, p, at("2027-01-31T00:00:00Z")).unwrap();
        assert!(pruned.changed);
        assert!(pruned.keyring.keys.iter().all(|k| k.kid != old_kid));
    }

    #[test]
    fn changing_the_algorithm_rotates_at_once() {
        let first = plan_keys(
            Keyring::default(),
            policy(SigningAlgorithm::ES256),
            at("2026-01-01T00:00:00Z"),
        )
        .unwrap();
        let switched = plan_keys(
            first.keyring,
            policy(SigningAlgorithm::EdDSA),
            at("2026-01-02T00:00:00Z"),
        )
        .unwrap();
        assert!(switched.changed);
        assert_eq!(
            switched.keyring.active().unwrap().algorithm,
            SigningAlgorithm::EdDSA
        );
    }

    #[test]
    fn survives_a_round_trip_through_json() {
        let plan = plan_keys(
            Keyring::default(),
            policy(SigningAlgorithm::RS256),
            at("2026-01-01T00:00:00Z"),
        )
        .unwrap();
        let back = Keyring::from_json(&plan.keyring.to_json()).unwrap();
        let key = back.active_signing_key().unwrap().unwrap();
        assert_eq!(key.kid, plan.keyring.active().unwrap().kid);
        let again = plan_keys(
            back,
            policy(SigningAlgorithm::RS256),
            at("2026-01-02T00:00:00Z"),
        )
        .unwrap();
        assert!(!again.changed);
    }

    #[test]
    fn debug_hides_private_keys() {
        let plan = plan_keys(
            Keyring::default(),
            policy(SigningAlgorithm::EdDSA),
            at("2026-01-01T00:00:00Z"),
        )
        .unwrap();
        assert!(!format!("{:?}", plan.keyring).contains("PRIVATE KEY"));
    }
}
