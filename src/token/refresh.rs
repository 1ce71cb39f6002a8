//! Rotating refresh tokens (OAuth 2.0 Security BCP §4.14): every use spends
//! the presented token and returns a new one; presenting a spent token again
//! means it leaked, so the whole chain is revoked.
//!
//! A refresh token reads `tkrt_<chain id>_<opaque part>`: the chain id says
//! where its record is, the opaque part (256 random bits and a checksum, as
//! in Opaque access tokens) is the secret, known to the record only by hash.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{fingerprint, new_opaque_token, random_bytes, same_fingerprint};

/// What every refresh token starts with.
pub const REFRESH_TOKEN_PREFIX: &str = "tkrt_";
const CHAIN_ID_CHARS: usize = 20;
const CHAIN_ID_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A new chain id: 100 random bits in lowercase base32, usable in object names.
pub fn new_chain_id() -> String {
    random_bytes::<CHAIN_ID_CHARS>()
        .iter()
        .map(|b| CHAIN_ID_ALPHABET[(b % 32) as usize] as char)
        .collect()
}

/// A new refresh token of chain `chain_id`.
pub fn new_refresh_token(chain_id: &str) -> SecretString {
    let secret = new_opaque_token("");
    SecretString::from(format!(
        "{REFRESH_TOKEN_PREFIX}{chain_id}_{}",
        secret.expose_secret()
    ))
}

/// The chain id a presented refresh token names, if it has the shape of one.
pub fn chain_id_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(REFRESH_TOKEN_PREFIX)?;
    let (chain, secret) = rest.split_once('_')?;
    let chain_ok =
        chain.len() == CHAIN_ID_CHARS && chain.bytes().all(|b| CHAIN_ID_ALPHABET.contains(&b));
    (chain_ok && super::is_well_formed_opaque_token(secret, "")).then_some(chain)
}

/// A token known by its hash, until when it is valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HashedToken {
    pub hash: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// An access token issued through a chain, remembered so that revoking the
/// chain revokes it too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedAccessToken {
    /// The `iss` of the token.
    #[serde(default)]
    pub issuer_url: String,
    pub token_id: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The durable record of one chain. Holds hashes only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshChain {
    pub client_id: String,
    pub subject: String,
    /// The UID of the identity the chain acts for, when it has one (a
    /// service account): a new object of the same name is someone else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_uid: Option<String>,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    /// The one refresh token that may be used next.
    pub current: HashedToken,
    /// When the whole chain ends, whatever its rotations (Unix seconds).
    /// A chain recorded without it has ended.
    #[serde(default)]
    pub ends_at: i64,
    /// Spent refresh tokens that have not expired yet: presenting one is reuse.
    #[serde(default)]
    pub spent: Vec<HashedToken>,
    /// Access tokens issued through the chain that have not expired yet.
    #[serde(default)]
    pub access_tokens: Vec<IssuedAccessToken>,
}

/// What presenting a refresh token to a chain means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presented {
    /// The current token, still valid: rotate.
    Current,
    /// A spent token: revoke the chain.
    Reused,
    /// The current token, but expired.
    Expired,
    /// Not a token of this chain.
    Unknown,
}

impl RefreshChain {
    /// Starts a chain whose first refresh token is `token`, valid until
    /// `expires_at`; the chain itself ends at `ends_at`, which no refresh
    /// token outlives.
    pub fn start(
        client_id: String,
        subject: String,
        scopes: Vec<String>,
        audiences: Vec<String>,
        token: &SecretString,
        expires_at: i64,
        ends_at: i64,
    ) -> Self {
        Self {
            client_id,
            subject,
            subject_uid: None,
            scopes,
            audiences,
            current: HashedToken {
                hash: fingerprint(token.expose_secret()),
                expires_at: expires_at.min(ends_at),
            },
            ends_at,
            spent: Vec::new(),
            access_tokens: Vec::new(),
        }
    }

    /// Judges a presented token. Hashes are compared in constant time.
    pub fn judge(&self, token: &str, now: i64) -> Presented {
        let hash = fingerprint(token);
        let same = |known: &HashedToken| same_fingerprint(&known.hash, &hash);
        if same(&self.current) {
            if self.current.expires_at > now {
                Presented::Current
            } else {
                Presented::Expired
            }
        } else if self.spent.iter().any(same) {
            Presented::Reused
        } else {
            Presented::Unknown
        }
    }

    /// Spends the current token for `next`, valid until `expires_at` (but
    /// never past the chain's end), and forgets whatever has expired by `now`.
    pub fn rotate(&mut self, next: &SecretString, expires_at: i64, now: i64) {
        let spent = std::mem::replace(
            &mut self.current,
            HashedToken {
                hash: fingerprint(next.expose_secret()),
                expires_at: expires_at.min(self.ends_at),
            },
        );
        self.spent.push(spent);
        self.prune(now);
    }

    /// Remembers an access token issued through the chain.
    pub fn issued(&mut self, issuer_url: String, token_id: String, expires_at: i64) {
        self.access_tokens.push(IssuedAccessToken {
            issuer_url,
            token_id,
            expires_at,
        });
    }

    /// Drops spent tokens and access tokens that have expired: once expired
    /// they are refused anyway, so the record stays as small as the number of
    /// uses within one lifetime.
    pub fn prune(&mut self, now: i64) {
        self.spent.retain(|t| t.expires_at > now);
        self.access_tokens.retain(|t| t.expires_at > now);
    }

    /// When nothing of the chain can be used any more.
    pub fn expires_at(&self) -> i64 {
        self.current.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(token: &SecretString) -> RefreshChain {
        RefreshChain::start(
            "client".into(),
            "system:serviceaccount:ns:sa".into(),
            vec!["read".into()],
            vec![],
            token,
            1_000,
            10_000,
        )
    }

    #[test]
    fn refresh_tokens_name_their_chain() {
        let id = new_chain_id();
        assert_eq!(id.len(), CHAIN_ID_CHARS);
        let token = new_refresh_token(&id);
        assert_eq!(chain_id_of(token.expose_secret()), Some(id.as_str()));
        assert_ne!(new_chain_id(), id);
    }

    #[test]
    fn malformed_refresh_tokens_name_no_chain() {
        let token = new_refresh_token(&new_chain_id());
        let token = token.expose_secret();
        assert_eq!(chain_id_of(""), None);
        assert_eq!(chain_id_of("tkrt_"), None);
        assert_eq!(chain_id_of(&token.replace("tkrt_", "tks_")), None);
        // A changed character breaks the checksum.
        let mut tampered = token.to_string();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'a' { 'b' } else { 'a' });
        assert_eq!(chain_id_of(&tampered), None);
        assert_eq!(chain_id_of(&token.to_uppercase()), None);
    }

    #[test]
    fn rotation_spends_the_presented_token() {
        let id = new_chain_id();
        let first = new_refresh_token(&id);
        let mut chain = chain(&first);
        assert_eq!(chain.judge(first.expose_secret(), 10), Presented::Current);
        let second = new_refresh_token(&id);
        chain.rotate(&second, 2_000, 10);
        assert_eq!(chain.judge(second.expose_secret(), 20), Presented::Current);
        assert_eq!(chain.judge(first.expose_secret(), 20), Presented::Reused);
        let stranger = new_refresh_token(&id);
        assert_eq!(
            chain.judge(stranger.expose_secret(), 20),
            Presented::Unknown
        );
        assert_eq!(
            chain.judge(second.expose_secret(), 2_000),
            Presented::Expired
        );
    }

    #[test]
    fn no_rotation_outlives_the_chain() {
        let id = new_chain_id();
        let first = new_refresh_token(&id);
        let mut chain = chain(&first);
        let mut now = 10;
        let mut current = first;
        // Each use asks for a fresh hour; the chain still ends at 10 000.
        while now < 20_000 {
            let next = new_refresh_token(&id);
            if chain.judge(current.expose_secret(), now) != Presented::Current {
                break;
            }
            chain.rotate(&next, now + 3_600, now);
            current = next;
            now += 900;
        }
        assert!(chain.current.expires_at <= 10_000);
        assert!(now <= 10_900, "the chain ended at its end, not at {now}");
        assert_eq!(
            chain.judge(current.expose_secret(), 10_000),
            Presented::Expired
        );
    }

    #[test]
    fn pruning_forgets_only_what_expired() {
        let id = new_chain_id();
        let first = new_refresh_token(&id);
        let mut chain = chain(&first);
        chain.issued("iss".into(), "a".into(), 500);
        chain.issued("iss".into(), "b".into(), 1_500);
        chain.rotate(&new_refresh_token(&id), 2_000, 600);
        assert_eq!(chain.spent.len(), 1, "the spent token is valid until 1000");
        assert_eq!(chain.access_tokens.len(), 1);
        assert_eq!(chain.access_tokens[0].token_id, "b");
        chain.prune(1_000);
        assert!(chain.spent.is_empty());
    }
}
