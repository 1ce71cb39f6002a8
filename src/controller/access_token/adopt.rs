//! After a crash between writing a token's Secret and recording it in the
//! status, the Secret holds a token nothing records. Minting another would
//! be a second mint for one AccessToken, and a workload that already read
//! the first would hold a useless token. So a JWT found there is recorded
//! as it is, but only when it is exactly what would be minted now: signed
//! by the issuer's key, with this AccessToken's claims, issued a moment ago
//! and no longer-lived than allowed. Nothing about it is taken from the
//! Secret's annotations. Opaque tokens cannot be checked this way and are
//! minted again.

use k8s_openapi::jiff::Timestamp;

use super::record::RecordedToken;
use crate::token::policy;
use crate::{
    api::MintedClaims,
    token::{Keyring, fingerprint, verify_jwt},
};

/// How long after its issue an unrecorded token may be adopted: a crash is
/// recovered from well within this; an older unrecorded token is not ours
/// to trust and is replaced.
pub const ADOPTION_WINDOW_SECONDS: i64 = 300;

/// What is known of the token a mint would make now.
pub struct Expected<'a> {
    pub minted: &'a MintedClaims,
    /// The longest lifetime a token minted now may have.
    pub longest_lifetime_seconds: i64,
    pub spec_hash: &'a str,
    pub revision: i64,
}

/// The record of `token` if it can be adopted (see the module).
pub fn adoptable(
    token: &str,
    keyring: &Keyring,
    expected: &Expected,
    now: Timestamp,
) -> Option<RecordedToken> {
    let claims = verify_jwt(token, &keyring.jwks(), &expected.minted.issuer_url, None, 0).ok()?;
    let issued_at = Timestamp::from_second(claims.iat).ok()?;
    let expires_at = Timestamp::from_second(claims.exp).ok()?;
    let age = now.as_second() - claims.iat;
    let lifetime = claims.exp - claims.iat;
    let fresh = (0..=ADOPTION_WINDOW_SECONDS).contains(&age);
    let allowed = 0 < lifetime && lifetime <= expected.longest_lifetime_seconds;
    let as_minted = policy::claims(expected.minted, &claims.jti, issued_at, expires_at) == claims;
    if !(fresh && allowed && as_minted) {
        return None;
    }
    let key_id = jsonwebtoken::decode_header(token).ok()?.kid;
    Some(RecordedToken {
        token_id: claims.jti,
        issued_at,
        expires_at,
        key_id,
        token_hash: fingerprint(token),
        revision: expected.revision,
        spec_hash: expected.spec_hash.to_string(),
        minted: expected.minted.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::ExposeSecret;

    use super::*;
    use crate::{
        api::SigningAlgorithm,
        token::{KeyPolicy, plan_keys, sign_jwt},
    };

    fn keyring(now: Timestamp) -> Keyring {
        let policy = KeyPolicy {
            algorithm: SigningAlgorithm::ES256,
            rotation_interval: Duration::from_secs(30 * 24 * 3600),
            max_token_lifetime: Duration::from_secs(24 * 3600),
        };
        plan_keys(Keyring::default(), policy, now).unwrap().keyring
    }

    fn minted() -> MintedClaims {
        MintedClaims {
            issuer_url: "https://tokens.example/team-a".into(),
            subject: Some("system:accesstoken:team-a:ci".into()),
            scopes: vec!["read".into()],
            audiences: vec!["api".into()],
            ..MintedClaims::default()
        }
    }

    /// A token signed by `keyring`'s active key for `minted`.
    fn token(keyring: &Keyring, minted: &MintedClaims, issued: Timestamp, lifetime: i64) -> String {
        let key = keyring.active_signing_key().unwrap().unwrap();
        let expires = Timestamp::from_second(issued.as_second() + lifetime).unwrap();
        let claims = policy::claims(minted, "jti-1", issued, expires);
        sign_jwt(&claims, &key).expose_secret().to_string()
    }

    #[test]
    fn adopts_only_the_token_that_would_be_minted_now() {
        // Real time: the signature check also checks nbf against the clock.
        let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
        let ago = |seconds: i64| Timestamp::from_second(now.as_second() - seconds).unwrap();
        let ring = keyring(now);
        let other_ring = keyring(now);
        let expected_claims = minted();
        let expected = Expected {
            minted: &expected_claims,
            longest_lifetime_seconds: 3600,
            spec_hash: "h",
            revision: 1,
        };
        let a_minute_ago = ago(60);
        let wider = MintedClaims {
            scopes: vec!["read".into(), "admin".into()],
            ..minted()
        };
        let cases: Vec<(&str, String, bool)> = vec![
            (
                "just minted for this spec",
                token(&ring, &minted(), a_minute_ago, 3600),
                true,
            ),
            (
                "other claims",
                token(&ring, &wider, a_minute_ago, 3600),
                false,
            ),
            (
                "longer-lived than allowed",
                token(&ring, &minted(), a_minute_ago, 7200),
                false,
            ),
            (
                "older than the window",
                token(&ring, &minted(), ago(600), 3600),
                false,
            ),
            (
                "issued in the future",
                token(&ring, &minted(), ago(-300), 3600),
                false,
            ),
            (
                "signed by another key",
                token(&other_ring, &minted(), a_minute_ago, 3600),
                false,
            ),
            (
                "an opaque token",
                "tks_abcdefghijklmnopqrstuvwxyz".into(),
                false,
            ),
        ];
        for (case, value, adopt) in cases {
            let record = adoptable(&value, &ring, &expected, now);
            assert_eq!(record.is_some(), adopt, "{case}");
            if let Some(record) = record {
                assert_eq!(record.token_id, "jti-1");
                assert_eq!(record.token_hash, fingerprint(&value));
                assert_eq!(record.expires_at, ago(60 - 3600));
            }
        }
    }
}
