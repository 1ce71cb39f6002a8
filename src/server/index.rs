//! What the token service knows, built from watches: no request makes an
//! API call to answer.

use std::sync::Arc;

use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    jiff::Timestamp,
};
use kube::{
    Resource, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use super::{
    lookup::KeyIndex,
    verified::{REMEMBERED_BYTES, VerifiedTokens},
};
use crate::{
    api::{
        AccessToken, AppRegistration, ClusterTokenIssuer, Issuer, IssuerKind, IssuerSettings,
        TokenIssuer,
    },
    cluster::{
        CachedToken, Keyrings, PendingWatches, Watched, Watches,
        issuers::{IssuerStores, UrlClaimant, served_path, url_owner},
        keyrings::key_secret_location,
        revocations::{revocation_key, shard_name, shard_pages},
    },
    token::LoadedKeyring,
};

/// An issuer as the token service needs it.
#[derive(Clone, Debug)]
pub struct IssuerView {
    pub settings: IssuerSettings,
    /// (namespace, name) of its key Secret.
    pub key_secret: (String, String),
}

/// The watched state the endpoints answer from.
#[derive(Clone)]
pub struct Index {
    pub issuers: IssuerStores,
    pub key_secrets: Store<Secret>,
    pub access_tokens: Store<CachedToken>,
    pub apps: Store<AppRegistration>,
    pub revocations: Store<ConfigMap>,
    pub operator_namespace: String,
    /// AccessTokens by issuer and id of their current and superseded
    /// tokens, and by their fingerprints: one index, so that each token is
    /// referred to once (an issuer URL key and a `sha256:` key never meet).
    tokens: KeyIndex<CachedToken>,
    /// AppRegistrations by client id (UID).
    clients: KeyIndex<AppRegistration>,
    /// TokenIssuers and ClusterTokenIssuers by the path of their URL, which
    /// several may claim (one of them serves it).
    token_issuer_paths: KeyIndex<TokenIssuer>,
    cluster_issuer_paths: KeyIndex<ClusterTokenIssuer>,
    /// Parsed keyrings of the key Secrets.
    keyrings: Keyrings,
    /// Tokens whose signature was checked already.
    pub(super) verified: VerifiedTokens,
}

/// The index key of token `token_id` of the issuer `issuer_url`.
fn token_key(issuer_url: &str, token_id: &str) -> String {
    format!("{issuer_url} {token_id}")
}

/// The recorded tokens of an AccessToken, keyed by issuer and id; none
/// without a record of what they were minted with.
fn token_ids(token: &AccessToken) -> Vec<String> {
    let Some(status) = &token.status else {
        return Vec::new();
    };
    let Some(minted) = &status.minted else {
        return Vec::new();
    };
    status
        .token_id
        .iter()
        .chain(status.previous_tokens.iter().map(|p| &p.token_id))
        .map(|id| token_key(&minted.issuer_url, id))
        .collect()
}

fn token_hashes(token: &AccessToken) -> Vec<String> {
    token
        .status
        .iter()
        .flat_map(|s| {
            s.token_hash.iter().cloned().chain(
                s.previous_tokens
                    .iter()
                    .filter_map(|p| p.token_hash.clone()),
            )
        })
        .collect()
}

fn token_keys(cached: &CachedToken) -> Vec<String> {
    let token = cached.token();
    let mut keys = token_ids(&token);
    keys.extend(token_hashes(&token));
    keys
}

fn client_ids(app: &AppRegistration) -> Vec<String> {
    app.uid().into_iter().collect()
}

/// The issuers of one kind whose URL has `path`, found through `paths`
/// and checked against the store (the index may hold a hash collision).
fn claimants_at<I: Issuer + Resource<DynamicType = ()> + Clone>(
    path: &str,
    paths: &KeyIndex<I>,
    store: &Store<I>,
) -> impl Iterator<Item = UrlClaimant> {
    paths
        .claimants(path)
        .into_iter()
        .filter_map(move |claimant| store.get(&claimant))
        .filter(move |issuer| served_path(&issuer.settings().issuer_url) == Some(path))
        .map(|issuer| UrlClaimant::of(issuer.as_ref()))
}

fn issuer_path<I: Issuer>(issuer: &I) -> Vec<String> {
    served_path(&issuer.settings().issuer_url)
        .map(String::from)
        .into_iter()
        .collect()
}

impl Index {
    /// The index over the process's shared watches; its lookups follow
    /// them through hooks, so they must be added before the watches run.
    pub fn new(watches: &Watches, pending: &mut PendingWatches, operator_namespace: &str) -> Self {
        let index = Self::over(watches, operator_namespace);
        let (tokens, clients) = (index.tokens.clone(), index.clients.clone());
        let (token_issuers, cluster_issuers) = (
            index.token_issuer_paths.clone(),
            index.cluster_issuer_paths.clone(),
        );
        pending
            .token_issuers
            .hook(move |event| token_issuers.apply(event));
        pending
            .cluster_issuers
            .hook(move |event| cluster_issuers.apply(event));
        pending.access_tokens.hook(move |event| tokens.apply(event));
        pending.apps.hook(move |event| clients.apply(event));
        index
    }

    fn over(watches: &Watches, operator_namespace: &str) -> Self {
        Self {
            issuers: IssuerStores {
                token_issuers: watches.token_issuers.store(),
                cluster_issuers: watches.cluster_issuers.store(),
                namespaces: watches.namespaces.store(),
            },
            key_secrets: watches.key_secrets.store(),
            access_tokens: watches.access_tokens.store(),
            apps: watches.apps.store(),
            revocations: watches.revocations.store(),
            operator_namespace: operator_namespace.to_string(),
            tokens: KeyIndex::new(token_keys),
            clients: KeyIndex::new(client_ids),
            token_issuer_paths: KeyIndex::shared(issuer_path),
            cluster_issuer_paths: KeyIndex::shared(issuer_path),
            keyrings: watches.keyrings.clone(),
            verified: VerifiedTokens::new(REMEMBERED_BYTES),
        }
    }

    /// An index of fixed objects, without watches: for benchmarks and tests.
    pub fn from_objects(
        operator_namespace: &str,
        token_issuers: Vec<TokenIssuer>,
        key_secrets: Vec<Secret>,
        access_tokens: Vec<AccessToken>,
        apps: Vec<AppRegistration>,
    ) -> Self {
        let (tokens, clients) = (KeyIndex::new(token_keys), KeyIndex::new(client_ids));
        let (token_keys, app_ids) = (tokens.clone(), clients.clone());
        let token_issuer_paths = KeyIndex::shared(issuer_path);
        let issuer_paths = token_issuer_paths.clone();
        let key_secrets = Watched::fixed(key_secrets, vec![]).store();
        Self {
            issuers: IssuerStores {
                token_issuers: Watched::fixed(
                    token_issuers,
                    vec![Box::new(move |event| issuer_paths.apply(event))],
                )
                .store(),
                cluster_issuers: Watched::fixed(vec![], vec![]).store(),
                namespaces: Watched::fixed(vec![], vec![]).store(),
            },
            key_secrets: key_secrets.clone(),
            access_tokens: Watched::fixed(
                access_tokens
                    .into_iter()
                    .map(|t| CachedToken::new(t).expect("a token that reads back"))
                    .collect(),
                vec![Box::new(move |event| token_keys.apply(event))],
            )
            .store(),
            apps: Watched::fixed(apps, vec![Box::new(move |event| app_ids.apply(event))]).store(),
            revocations: Watched::fixed(vec![], vec![]).store(),
            operator_namespace: operator_namespace.to_string(),
            tokens,
            clients,
            token_issuer_paths,
            cluster_issuer_paths: KeyIndex::shared(issuer_path),
            keyrings: Keyrings::new(key_secrets),
            verified: VerifiedTokens::new(REMEMBERED_BYTES),
        }
    }

    /// The view of the issuer `claimant` names, if it is watched.
    fn view_of(&self, claimant: &UrlClaimant) -> Option<IssuerView> {
        fn view<I: Issuer>(issuer: Arc<I>, operator_namespace: &str) -> IssuerView {
            IssuerView {
                settings: issuer.settings().clone(),
                key_secret: key_secret_location(issuer.as_ref(), operator_namespace),
            }
        }
        let namespace = &self.operator_namespace;
        match (claimant.kind, &claimant.namespace) {
            (IssuerKind::ClusterTokenIssuer, _) => self
                .issuers
                .cluster_issuers
                .get(&ObjectRef::new(&claimant.name))
                .map(|i| view(i, namespace)),
            (IssuerKind::TokenIssuer, Some(within)) => self
                .issuers
                .token_issuers
                .get(&ObjectRef::new(&claimant.name).within(within))
                .map(|i| view(i, namespace)),
            (IssuerKind::TokenIssuer, None) => None,
        }
    }

    /// The issuer that serves the path of `issuer_url`, as
    /// [`IssuerStores::url_owner_of`] finds it, but through the path
    /// indexes: a request costs the same with one issuer or thousands.
    fn url_owner_of(&self, issuer_url: &str) -> Option<UrlClaimant> {
        let path = served_path(issuer_url)?;
        let cluster = claimants_at(
            path,
            &self.cluster_issuer_paths,
            &self.issuers.cluster_issuers,
        );
        let namespaced = claimants_at(path, &self.token_issuer_paths, &self.issuers.token_issuers);
        url_owner(cluster.chain(namespaced))
    }

    /// The issuer served at this path (the one that owns its URL's path).
    pub fn issuer_by_path(&self, path: &str) -> Option<IssuerView> {
        let url = format!("https://host{path}");
        self.view_of(&self.url_owner_of(&url)?)
    }

    /// The issuer whose `issuerURL` is exactly `iss`, if it is served.
    pub fn issuer_by_url(&self, iss: &str) -> Option<IssuerView> {
        let issuer = self.view_of(&self.url_owner_of(iss)?)?;
        (issuer.settings.issuer_url == iss).then_some(issuer)
    }

    /// The keys of an issuer, from its key Secret; parsed once per version
    /// of the Secret.
    pub fn keyring(&self, issuer: &IssuerView) -> Option<Arc<LoadedKeyring>> {
        self.keyrings.get(&issuer.key_secret).ok()
    }

    /// The issuer URL of the issuer `app` names, when it resolves.
    pub fn issuer_url_of(&self, app: &AppRegistration) -> Option<String> {
        let namespace = app.namespace()?;
        self.issuers
            .resolve(&app.spec.issuer_ref(), &namespace, &self.operator_namespace)
            .ok()
            .map(|issuer| issuer.settings.issuer_url)
    }

    /// The AppRegistration whose client id is `client_id`.
    pub fn app(&self, client_id: &str) -> Option<Arc<AppRegistration>> {
        let app = self.apps.get(&self.clients.get(client_id)?)?;
        (app.uid().as_deref() == Some(client_id)).then_some(app)
    }

    /// The AccessToken whose record holds token `token_id` of the issuer
    /// `issuer_url` (current or superseded token).
    pub fn access_token_by_id(&self, issuer_url: &str, token_id: &str) -> Option<Arc<AccessToken>> {
        let key = token_key(issuer_url, token_id);
        let token = self.access_tokens.get(&self.tokens.get(&key)?)?.token();
        token_ids(&token).contains(&key).then(|| Arc::new(token))
    }

    /// The AccessToken holding the opaque token with this fingerprint, and its id.
    pub fn access_token_by_hash(&self, hash: &str) -> Option<(Arc<AccessToken>, String)> {
        let token = self.access_tokens.get(&self.tokens.get(hash)?)?.token();
        let status = token.status.as_ref()?;
        let id = if status.token_hash.as_deref() == Some(hash) {
            status.token_id.clone()
        } else {
            status
                .previous_tokens
                .iter()
                .find(|p| p.token_hash.as_deref() == Some(hash))
                .map(|p| p.token_id.clone())
        }?;
        Some((Arc::new(token), id))
    }

    /// When the soonest-expiring token of a Ready AccessToken expires.
    pub fn soonest_expiry(&self, now: Timestamp) -> Option<Timestamp> {
        self.access_tokens
            .state()
            .iter()
            .map(|t| t.summary())
            .filter(|t| !t.revoked && t.is_ready())
            .filter_map(|t| t.expires_at.filter(|e| *e > now))
            .min()
    }

    /// Whether the revocation record holds token `token_id` of the issuer
    /// `issuer_url`.
    pub fn is_revoked(&self, issuer_url: &str, token_id: &str) -> bool {
        let key = revocation_key(issuer_url, token_id);
        let shard = shard_name(&key);
        shard_pages(&shard)
            .map_while(|page| {
                self.revocations
                    .get(&ObjectRef::new(&page).within(&self.operator_namespace))
            })
            .any(|cm| cm.data.as_ref().is_some_and(|d| d.contains_key(&key)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn token_issuer(namespace: &str, name: &str, url: &str, created: &str) -> TokenIssuer {
        serde_json::from_value(json!({
            "apiVersion": "tokensmith.dev/v1alpha1", "kind": "TokenIssuer",
            "metadata": {
                "name": name, "namespace": namespace, "uid": format!("{namespace}-{name}"),
                "creationTimestamp": created,
            },
            "spec": { "issuerURL": url },
        }))
        .unwrap()
    }

    /// The namespace of the key Secret's issuer, by the Secret's name.
    fn served_by(index: &Index, url: &str) -> Option<String> {
        let view = index.issuer_by_url(url)?;
        let expected = |ns: &str, name: &str| {
            key_secret_location(&token_issuer(ns, name, url, "2026-01-01T00:00:00Z"), "ops")
        };
        ["team-a", "team-b"]
            .into_iter()
            .find(|ns| view.key_secret == expected(ns, "issuer"))
            .map(String::from)
    }

    #[test]
    fn the_oldest_issuer_at_a_path_serves_it_whatever_the_host() {
        let index = Index::from_objects(
            "ops",
            vec![
                token_issuer(
                    "team-b",
                    "issuer",
                    "https://b.example/shared/",
                    "2026-01-02T00:00:00Z",
                ),
                token_issuer(
                    "team-a",
                    "issuer",
                    "https://a.example/shared",
                    "2026-01-01T00:00:00Z",
                ),
                token_issuer(
                    "team-b",
                    "own",
                    "https://b.example/own",
                    "2026-01-03T00:00:00Z",
                ),
            ],
            vec![],
            vec![],
            vec![],
        );
        assert_eq!(
            served_by(&index, "https://a.example/shared").as_deref(),
            Some("team-a")
        );
        assert!(
            index.issuer_by_url("https://b.example/shared/").is_none(),
            "the younger claimant's own URL is not served: the path is another's"
        );
        assert!(index.issuer_by_url("https://b.example/own").is_some());
        assert!(index.issuer_by_url("https://b.example/nobody").is_none());
        assert!(index.issuer_by_path("/shared").is_some());
    }
}
