//! An AccessToken as every replica caches it: its metadata as is, what the
//! scans over all tokens read (issuer, app, expiry, renewal, readiness) as
//! plain fields, and its spec and status as compressed JSON, decoded when
//! one token is looked at (a reconcile, a token-service lookup).
//!
//! Decoded, a token took about 2.3 KiB of the cache: its Rust struct is
//! 1.2 KiB with every optional field in place, and each of its 20 or so
//! strings is an allocation of its own. Compressed with a dictionary of
//! what every token's JSON holds (field names, the usual values), its spec
//! and status take about 0.2 KiB; decoding one costs a few microseconds.

use std::{fmt, sync::LazyLock};

use super::{Undecodable, compressed::Dictionary};
use crate::api::{AccessToken, AccessTokenSpec, AccessTokenStatus, IssuerKind, ready_condition};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::ObjectMeta, jiff::Timestamp};
use serde::{Deserialize, Deserializer};

/// A cached AccessToken.
#[derive(Clone)]
pub struct CachedToken {
    metadata: ObjectMeta,
    summary: TokenSummary,
    /// The spec and status as JSON, compressed with [`DICTIONARY`].
    body: Box<[u8]>,
}

/// What reads of every token need, kept out of the compressed body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenSummary {
    pub issuer_kind: IssuerKind,
    pub issuer_name: Box<str>,
    /// `spec.appRef.name`.
    pub app: Option<Box<str>>,
    pub revoked: bool,
    /// The Ready condition's status (`True`, `False`, `Unknown`).
    pub ready: Option<Box<str>>,
    pub expires_at: Option<Timestamp>,
    pub renewal_time: Option<Timestamp>,
}

#[derive(serde::Serialize, Deserialize)]
struct Body<S, T> {
    spec: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<T>,
}

/// Two documents: one with the fields a token seldom has, then the
/// typical token, as they are encoded (fields in the order of the types).
/// Nothing compressed outlives the process, so it may change at any time
/// (its dates, say, as they grow old).
const DICTIONARY: &[u8] = br#"{"spec":{"subject":"","userless":true,"scopes":[""],"audiences":[""],"claims":{"":""},"appRef":{"name":""},"boundObjectRef":{"kind":"ServiceAccount","name":""},"format":"Opaque","prefix":"","expiresAt":"","renewBeforePercentage":10,"onExpiry":"Delete","revoked":true,"secretName":"","secretTemplate":{"labels":{"":""},"annotations":{"":""}},"rolloutRestartTargets":[{"kind":"Deployment","name":""}]},"status":{"conditions":[{"lastTransitionTime":"2026-","message":"","observedGeneration":1,"reason":"","status":"False","type":"Ready"}],"previousTokens":[{"tokenID":"","expiresAt":"2026-","tokenHash":"sha256:"}],"minted":{"issuerURL":"https://","subject":"system:accesstoken:","scopes":[""],"audiences":[""],"claims":{"":""},"clientID":""},"renewRequest":""}}{"spec":{"issuerRef":{"kind":"ClusterTokenIssuer","name":""},"lifetime":"24h","renewBefore":"1h"},"status":{"conditions":[{"lastTransitionTime":"2026-11-28T00:00:00Z","message":"token  valid until 2026-11-28T00:00:00Z","observedGeneration":1,"reason":"Issued","status":"True","type":"Ready"}],"observedGeneration":1,"tokenID":"","keyID":"","issuedAt":"2026-11-28T00:00:00Z","expiresAt":"2026-11-28T00:00:00Z","renewalTime":"2026-11-28T00:00:00Z","revision":1,"secretName":"","tokenHash":"sha256:","specHash":"sha256:","minted":{"issuerURL":"https://","subject":"system:accesstoken:"}}}"#;

static COMPRESSION: LazyLock<Dictionary> = LazyLock::new(|| Dictionary::new(DICTIONARY));

impl CachedToken {
    /// Caches `token`. Undecodable when what it encodes to does not decode
    /// again: a value the API server accepts and the types read but cannot
    /// write back as read (a time before year 1, say). Such a token is left
    /// out of the cache and reported, instead of failing every later read.
    pub fn new(token: AccessToken) -> Result<Self, Box<Undecodable>> {
        let AccessToken {
            metadata,
            spec,
            status,
        } = token;
        let encoded = serde_json::to_vec(&Body { spec, status });
        let mut cached = Self {
            metadata,
            summary: TokenSummary::default(),
            body: Box::default(),
        };
        let decoded = encoded.map_err(|e| e.to_string()).and_then(|json| {
            cached.body = COMPRESSION.compress(&json);
            cached.decode().map_err(|e| e.to_string())
        });
        match decoded {
            Ok(token) => {
                cached.summary = TokenSummary::of(&token);
                Ok(cached)
            }
            Err(error) => Err(Box::new(Undecodable {
                meta: cached.metadata,
                reason: format!("spec or status does not read back as written: {error}"),
            })),
        }
    }

    fn decode(&self) -> serde_json::Result<AccessToken> {
        let json = COMPRESSION.decompress(&self.body);
        let Body { spec, status } =
            serde_json::from_slice::<Body<AccessTokenSpec, AccessTokenStatus>>(&json)?;
        Ok(AccessToken {
            metadata: self.metadata.clone(),
            spec,
            status,
        })
    }

    /// The token in full.
    pub fn token(&self) -> AccessToken {
        self.decode()
            .expect("every cached token was decoded once when it was cached")
    }

    pub fn summary(&self) -> &TokenSummary {
        &self.summary
    }
}

impl TokenSummary {
    fn of(token: &AccessToken) -> Self {
        let issuer = token.spec.issuer_ref();
        let status = token.status.as_ref();
        Self {
            issuer_kind: issuer.kind(),
            issuer_name: issuer.name.into_boxed_str(),
            app: token
                .spec
                .app_ref
                .as_ref()
                .map(|a| a.name.clone().into_boxed_str()),
            revoked: token.spec.is_revoked(),
            ready: status
                .and_then(|s| ready_condition(&s.conditions))
                .map(|c| c.status.clone().into_boxed_str()),
            expires_at: status.and_then(|s| s.expires_at.as_ref()).map(|t| t.0),
            renewal_time: status.and_then(|s| s.renewal_time.as_ref()).map(|t| t.0),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.as_deref() == Some("True")
    }
}

/// Decoded as an AccessToken, then cached (kube's controller asks that
/// what it reconciles can be decoded).
impl<'de> Deserialize<'de> for CachedToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let token = AccessToken::deserialize(deserializer)?;
        Self::new(token).map_err(|undecodable| serde::de::Error::custom(undecodable.reason))
    }
}

/// Its identity and summary: the compressed bytes say nothing to a reader.
impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("metadata", &self.metadata)
            .field("summary", &self.summary)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

super::resource_as!(CachedToken, AccessToken);

#[cfg(test)]
mod tests {
    use kube::Resource;
    use serde_json::json;

    use super::*;

    fn token(spec: serde_json::Value, status: serde_json::Value) -> AccessToken {
        serde_json::from_value(json!({
            "apiVersion": "tokensmith.dev/v1alpha1",
            "kind": "AccessToken",
            "metadata": { "name": "a", "namespace": "n", "uid": "u-1", "resourceVersion": "7" },
            "spec": spec,
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_cached_token_decodes_to_what_was_cached() {
        let cases = [
            token(json!({}), json!(null)),
            token(
                json!({
                    "issuerRef": { "kind": "TokenIssuer", "name": "signer" },
                    "lifetime": "1h", "renewBefore": "20m", "scopes": ["read"],
                    "claims": { "team": "payments" }, "appRef": { "name": "billing" },
                }),
                json!({
                    "conditions": [{
                        "type": "Ready", "status": "True", "reason": "Issued",
                        "message": "token x valid until 2026-11-28T10:48:26Z",
                        "lastTransitionTime": "2026-11-28T09:48:26Z", "observedGeneration": 1,
                    }],
                    "tokenID": "y0K8Kl7Zs7dl1cIJVQ1oPg",
                    "tokenHash": "sha256:034d53fd240a6e0197b2e80cc010b0b9819c989e9b8a915a54184bb9dcdbb4e9",
                    "expiresAt": "2026-11-28T10:48:26Z",
                    "renewalTime": "2026-11-28T10:26:34Z",
                    "minted": { "issuerURL": "https://issuer", "subject": "s" },
                    "previousTokens": [{ "tokenID": "old", "expiresAt": "2026-11-28T09:48:26Z" }],
                }),
            ),
        ];
        for original in cases {
            let cached = CachedToken::new(original.clone()).unwrap();
            let decoded = cached.token();
            assert_eq!(decoded.metadata, original.metadata);
            assert_eq!(decoded.spec, original.spec);
            assert_eq!(decoded.status, original.status);
            assert_eq!(cached.meta(), &original.metadata);
        }
    }

    #[test]
    fn the_summary_holds_what_scans_read() {
        let cached = CachedToken::new(token(
            json!({
                "issuerRef": { "kind": "TokenIssuer", "name": "signer" },
                "appRef": { "name": "billing" }, "revoked": true,
            }),
            json!({
                "conditions": [{
                    "type": "Ready", "status": "False", "reason": "Revoked", "message": "",
                    "lastTransitionTime": "2026-11-28T09:48:26Z",
                }],
                "expiresAt": "2026-11-28T10:48:26Z",
            }),
        ))
        .unwrap();
        let summary = cached.summary();
        assert_eq!(
            summary,
            &TokenSummary {
                issuer_kind: IssuerKind::TokenIssuer,
                issuer_name: "signer".into(),
                app: Some("billing".into()),
                revoked: true,
                ready: Some("False".into()),
                expires_at: Some("2026-11-28T10:48:26Z".parse().unwrap()),
                renewal_time: None,
            }
        );
        assert!(!summary.is_ready());
        let bare = CachedToken::new(token(json!({}), json!(null))).unwrap();
        assert_eq!(bare.summary().issuer_kind, IssuerKind::ClusterTokenIssuer);
        assert_eq!(bare.summary().ready, None);
    }

    #[test]
    fn a_typical_token_is_small_once_compressed() {
        let cached = CachedToken::new(token(
            json!({ "issuerRef": { "kind": "TokenIssuer", "name": "signer" }, "lifetime": "1h" }),
            json!({
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "Issued",
                    "message": "token y0K8Kl7Zs7dl1cIJVQ1oPg valid until 2026-11-28T10:48:26Z",
                    "lastTransitionTime": "2026-11-28T09:48:26Z", "observedGeneration": 1,
                }],
                "tokenID": "y0K8Kl7Zs7dl1cIJVQ1oPg",
                "keyID": "YRJpVV6YC2cwnQ7gQCW5iVjXy0ahHqE_EUMfiOu6nDA",
                "tokenHash": "sha256:034d53fd240a6e0197b2e80cc010b0b9819c989e9b8a915a54184bb9dcdbb4e9",
                "specHash": "sha256:366eec52aa60a9467c2fdaf097122597a32f8450ee592ad43ab9d5d9342a407f",
                "issuedAt": "2026-11-28T09:48:26Z",
                "expiresAt": "2026-11-28T10:48:26Z",
                "renewalTime": "2026-11-28T10:26:34Z",
                "revision": 1,
                "secretName": "bench-0001",
                "minted": {
                    "issuerURL": "https://127.0.0.1:18443/issuers/scale/signer",
                    "subject": "system:accesstoken:scale:bench-0001",
                },
            }),
        ))
        .unwrap();
        assert!(cached.body.len() < 300, "{} bytes", cached.body.len());
    }

    /// The API server takes any RFC 3339 time; one before year 1 is read,
    /// but written back in a form that does not read again.
    #[test]
    fn a_token_that_does_not_read_back_is_undecodable() {
        let original = token(
            json!({}),
            json!({ "expiresAt": "0000-01-01T00:00:00+01:00" }),
        );
        let undecodable = CachedToken::new(original.clone()).unwrap_err();
        assert_eq!(undecodable.meta, original.metadata);
        assert!(
            undecodable.reason.contains("does not read back"),
            "{}",
            undecodable.reason
        );
    }
}
