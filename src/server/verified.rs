//! Tokens whose signature this replica has already checked. A resource
//! server introspects the same token on every call it serves, and checking
//! an ES256 signature is most of what introspection costs; what a token
//! says cannot change, so a token seen again under the same keys is not
//! checked again. Expiry, revocation and the token's record are still
//! judged on every request, after this.

use std::sync::Arc;

use aws_lc_rs::digest;

use crate::token::{AccessTokenClaims, LoadedKeyring};

/// How much the remembered tokens may weigh, the least used forgotten
/// first: about 4 000 tokens of a typical size. A token weighs its length
/// (its claims take about as much) plus [`ENTRY_BYTES`], so large tokens
/// cannot make the memory grow past this.
pub const REMEMBERED_BYTES: u64 = 4 << 20;

/// What remembering a token costs beside its claims' text: the key, the
/// entry and the claims' allocations.
const ENTRY_BYTES: u64 = 256;

/// What a token's signature check found, under which keyring.
#[derive(Clone)]
struct Verified {
    keyring_generation: u64,
    claims: Arc<AccessTokenClaims>,
    weight: u64,
}

/// Weighs an entry by the token's size.
#[derive(Clone)]
struct ByTokenSize;

impl quick_cache::Weighter<[u8; 32], Verified> for ByTokenSize {
    fn weight(&self, _: &[u8; 32], verified: &Verified) -> u64 {
        verified.weight
    }
}

/// Verified tokens by the SHA-256 of their text: the cache never holds a
/// token, only what it says.
#[derive(Clone)]
pub struct VerifiedTokens {
    cache: Arc<quick_cache::sync::Cache<[u8; 32], Verified, ByTokenSize>>,
}

impl VerifiedTokens {
    /// Remembers tokens up to `bytes` (see [`REMEMBERED_BYTES`]).
    pub fn new(bytes: u64) -> Self {
        let typical_tokens = (bytes / 1024).max(1) as usize;
        Self {
            cache: Arc::new(quick_cache::sync::Cache::with_weighter(
                typical_tokens,
                bytes,
                ByTokenSize,
            )),
        }
    }

    /// The claims of `token`, checked by `verify` unless this exact token
    /// was checked before against this very `keyring` (a key added or
    /// removed since makes another keyring). Refusals are not remembered.
    pub fn claims(
        &self,
        token: &str,
        keyring: &LoadedKeyring,
        verify: impl FnOnce() -> Option<AccessTokenClaims>,
    ) -> Option<AccessTokenClaims> {
        let key: [u8; 32] = digest::digest(&digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .expect("a SHA-256 digest is 32 bytes");
        if let Some(known) = self.cache.get(&key)
            && known.keyring_generation == keyring.generation()
        {
            return Some(known.claims.as_ref().clone());
        }
        let claims = verify()?;
        self.cache.insert(
            key,
            Verified {
                keyring_generation: keyring.generation(),
                claims: Arc::new(claims.clone()),
                weight: token.len() as u64 + ENTRY_BYTES,
            },
        );
        Some(claims)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::token::Keyring;

    fn claims(jti: &str) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://tokens.example/issuers/a".into(),
            sub: "sub".into(),
            aud: vec![],
            exp: 2,
            iat: 1,
            nbf: 1,
            jti: jti.into(),
            scope: String::new(),
            client_id: None,
            extra: Default::default(),
        }
    }

    /// A token asked about, under which keys, and whether it verifies.
    type Ask<'a> = (&'a str, &'a LoadedKeyring, bool);

    /// What is asked, how many checks that makes, and the answers' `jti`.
    type Case<'a> = (&'a str, Vec<Ask<'a>>, usize, Vec<Option<String>>);

    /// Asks `verified` for each token in turn, verifying each as `valid`
    /// says: how many checks were made, and the `jti` each answer carried.
    fn ask(verified: &VerifiedTokens, asks: &[Ask]) -> (usize, Vec<Option<String>>) {
        let checks = Cell::new(0);
        let answers = asks
            .iter()
            .map(|(token, keyring, valid)| {
                verified
                    .claims(token, keyring, || {
                        checks.set(checks.get() + 1);
                        valid.then(|| claims(token))
                    })
                    .map(|c| c.jti)
            })
            .collect();
        (checks.get(), answers)
    }

    #[test]
    fn a_token_is_checked_again_only_under_other_keys_or_after_a_refusal() {
        let (keys, other_keys) = (
            LoadedKeyring::new(Keyring::default()),
            LoadedKeyring::new(Keyring::default()),
        );
        let some = |s: &str| Some(s.to_string());
        let cases: [Case; 4] = [
            (
                "the same token twice: checked once",
                vec![("a", &keys, true), ("a", &keys, true)],
                1,
                vec![some("a"), some("a")],
            ),
            (
                "two tokens: each checked",
                vec![("a", &keys, true), ("b", &keys, true), ("a", &keys, true)],
                2,
                vec![some("a"), some("b"), some("a")],
            ),
            (
                "the keys changed: checked again, and refused now",
                vec![("a", &keys, true), ("a", &other_keys, false)],
                2,
                vec![some("a"), None],
            ),
            (
                "a refusal is not remembered",
                vec![("a", &keys, false), ("a", &keys, true), ("a", &keys, true)],
                2,
                vec![None, some("a"), some("a")],
            ),
        ];
        for (case, asks, checks, answers) in cases {
            let verified = VerifiedTokens::new(1 << 20);
            assert_eq!(ask(&verified, &asks), (checks, answers), "{case}");
        }
    }

    #[test]
    fn remembers_tokens_up_to_a_weight_whatever_their_size() {
        let keys = LoadedKeyring::new(Keyring::default());
        for size in [10, 1_000, 10_000] {
            let bytes = 64 * 1024;
            let verified = VerifiedTokens::new(bytes);
            let tokens: Vec<String> = (0..1_000).map(|i| format!("{i:0size$}")).collect();
            let asks: Vec<_> = tokens.iter().map(|t| (t.as_str(), &keys, true)).collect();
            assert_eq!(ask(&verified, &asks).0, 1_000, "{size}-byte tokens");
            assert!(
                verified.cache.weight() <= bytes,
                "{size}-byte tokens: {} bytes remembered",
                verified.cache.weight()
            );
            assert!(
                !verified.cache.is_empty(),
                "{size}-byte tokens: none remembered"
            );
        }
    }
}
