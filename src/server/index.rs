//! What the token service knows, built from watches: no request makes an
//! API call to answer.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::{StreamExt, future::BoxFuture};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Namespace, Secret},
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store, store::Writer},
        watcher,
    },
};

use super::lookup::KeyIndex;
use crate::{
    api::{
        AccessToken, AppRegistration, ClusterTokenIssuer, Issuer, IssuerKind, IssuerSettings,
        TokenIssuer,
    },
    controller::{
        issuer::{ISSUER_LABEL, key_secret_location},
        issuer_ref::{IssuerStores, UrlClaimant},
        revocation::{REVOCATIONS_LABEL, revocation_key, shard_name, shard_pages},
    },
    ready_gate::{ReadyGate, filled},
    token::{KEYRING_SECRET_KEY, Keyring},
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
    pub access_tokens: Store<AccessToken>,
    pub apps: Store<AppRegistration>,
    pub revocations: Store<ConfigMap>,
    pub operator_namespace: String,
    /// AccessTokens by issuer and id of their current and superseded tokens.
    token_ids: KeyIndex<AccessToken>,
    /// AccessTokens by the fingerprints of their current and superseded tokens.
    token_hashes: KeyIndex<AccessToken>,
    /// AppRegistrations by client id (UID).
    clients: KeyIndex<AppRegistration>,
    /// Parsed keyrings by key Secret, with the resourceVersion parsed.
    keyrings: Arc<Mutex<HashMap<(String, String), ParsedKeyring>>>,
}

/// A keyring and the resourceVersion of the Secret it was parsed from.
type ParsedKeyring = (Option<String>, Arc<Keyring>);

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

fn client_ids(app: &AppRegistration) -> Vec<String> {
    app.uid().into_iter().collect()
}

/// The stores and indexes of an [`Index`], with the writers that fill them.
struct Parts {
    token_issuers: (Store<TokenIssuer>, Writer<TokenIssuer>),
    cluster_issuers: (Store<ClusterTokenIssuer>, Writer<ClusterTokenIssuer>),
    namespaces: (
        Store<PartialObjectMeta<Namespace>>,
        Writer<PartialObjectMeta<Namespace>>,
    ),
    key_secrets: (Store<Secret>, Writer<Secret>),
    access_tokens: (Store<AccessToken>, Writer<AccessToken>),
    apps: (Store<AppRegistration>, Writer<AppRegistration>),
    revocations: (Store<ConfigMap>, Writer<ConfigMap>),
}

impl Parts {
    fn new() -> Self {
        Self {
            token_issuers: reflector::store(),
            cluster_issuers: reflector::store(),
            namespaces: reflector::store(),
            key_secrets: reflector::store(),
            access_tokens: reflector::store(),
            apps: reflector::store(),
            revocations: reflector::store(),
        }
    }
}

impl Index {
    fn from_stores(parts: &Parts, operator_namespace: &str) -> Self {
        Self {
            issuers: IssuerStores {
                token_issuers: parts.token_issuers.0.clone(),
                cluster_issuers: parts.cluster_issuers.0.clone(),
                namespaces: parts.namespaces.0.clone(),
            },
            key_secrets: parts.key_secrets.0.clone(),
            access_tokens: parts.access_tokens.0.clone(),
            apps: parts.apps.0.clone(),
            revocations: parts.revocations.0.clone(),
            operator_namespace: operator_namespace.to_string(),
            token_ids: KeyIndex::new(token_ids),
            token_hashes: KeyIndex::new(token_hashes),
            clients: KeyIndex::new(client_ids),
            keyrings: Arc::default(),
        }
    }

    /// Starts the watches; the returned future runs them (it never ends).
    pub fn start(client: &Client, operator_namespace: &str) -> (Self, BoxFuture<'static, ()>) {
        let parts = Parts::new();
        let index = Self::from_stores(&parts, operator_namespace);
        let Parts {
            token_issuers: (_, w1),
            cluster_issuers: (_, w2),
            namespaces: (_, w3),
            key_secrets: (_, w4),
            access_tokens: (_, w5),
            apps: (_, w6),
            revocations: (_, w7),
        } = parts;
        let all = watcher::Config::default;
        let (ids, hashes, clients) = (
            index.token_ids.clone(),
            index.token_hashes.clone(),
            index.clients.clone(),
        );
        let watches = futures::stream::select_all([
            watcher(Api::<TokenIssuer>::all(client.clone()), all())
                .default_backoff()
                .reflect(w1)
                .map(|_| ())
                .boxed(),
            watcher(Api::<ClusterTokenIssuer>::all(client.clone()), all())
                .default_backoff()
                .reflect(w2)
                .map(|_| ())
                .boxed(),
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                all(),
            )
            .default_backoff()
            .reflect(w3)
            .map(|_| ())
            .boxed(),
            // Only the issuers' key Secrets, all in the operator's namespace
            // and selected by label: their private keys sign the tokens of
            // the token endpoint. No tenant's Secret is ever cached.
            watcher(
                Api::<Secret>::namespaced(client.clone(), operator_namespace),
                all().labels(ISSUER_LABEL),
            )
            .default_backoff()
            .reflect(w4)
            .map(|_| ())
            .boxed(),
            watcher(Api::<AccessToken>::all(client.clone()), all())
                .default_backoff()
                .reflect(w5)
                .map(move |event| {
                    if let Ok(event) = &event {
                        ids.apply(event);
                        hashes.apply(event);
                    }
                })
                .boxed(),
            watcher(Api::<AppRegistration>::all(client.clone()), all())
                .default_backoff()
                .reflect(w6)
                .map(move |event| {
                    if let Ok(event) = &event {
                        clients.apply(event);
                    }
                })
                .boxed(),
            watcher(
                Api::<ConfigMap>::namespaced(client.clone(), operator_namespace),
                all().labels(REVOCATIONS_LABEL),
            )
            .default_backoff()
            .reflect(w7)
            .map(|_| ())
            .boxed(),
        ])
        .for_each(|_| async {});
        (index, Box::pin(watches))
    }

    /// An index of fixed objects, without watches: for benchmarks and tests.
    pub fn from_objects(
        operator_namespace: &str,
        token_issuers: Vec<TokenIssuer>,
        key_secrets: Vec<Secret>,
        access_tokens: Vec<AccessToken>,
        apps: Vec<AppRegistration>,
    ) -> Self {
        fn fill<K>(writer: &mut Writer<K>, objects: Vec<K>, also: impl Fn(&watcher::Event<K>))
        where
            K: kube::Resource<DynamicType = ()> + Clone,
        {
            for event in std::iter::once(watcher::Event::Init)
                .chain(objects.into_iter().map(watcher::Event::InitApply))
                .chain(std::iter::once(watcher::Event::InitDone))
            {
                writer.apply_watcher_event(&event);
                also(&event);
            }
        }
        let mut parts = Parts::new();
        let index = Self::from_stores(&parts, operator_namespace);
        fill(&mut parts.token_issuers.1, token_issuers, |_| {});
        fill(&mut parts.cluster_issuers.1, vec![], |_| {});
        fill(&mut parts.namespaces.1, vec![], |_| {});
        fill(&mut parts.key_secrets.1, key_secrets, |_| {});
        fill(&mut parts.access_tokens.1, access_tokens, |e| {
            index.token_ids.apply(e);
            index.token_hashes.apply(e);
        });
        fill(&mut parts.apps.1, apps, |e| index.clients.apply(e));
        fill(&mut parts.revocations.1, vec![], |_| {});
        // The stores keep their contents once their writers are gone.
        index
    }

    /// Waits until every watch has listed once; `false` means the watches
    /// stopped first.
    pub async fn wait_until_ready(&self) -> bool {
        ReadyGate::new(vec![
            filled(&self.issuers.token_issuers),
            filled(&self.issuers.cluster_issuers),
            filled(&self.issuers.namespaces),
            filled(&self.key_secrets),
            filled(&self.access_tokens),
            filled(&self.apps),
            filled(&self.revocations),
        ])
        .wait()
        .await
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

    /// The issuer served at this path (the one that owns its URL's path).
    pub fn issuer_by_path(&self, path: &str) -> Option<IssuerView> {
        let url = format!("https://host{path}");
        self.view_of(&self.issuers.url_owner_of(&url)?)
    }

    /// The issuer whose `issuerURL` is exactly `iss`, if it is served.
    pub fn issuer_by_url(&self, iss: &str) -> Option<IssuerView> {
        let issuer = self.view_of(&self.issuers.url_owner_of(iss)?)?;
        (issuer.settings.issuer_url == iss).then_some(issuer)
    }

    /// The keys of an issuer, from its key Secret; parsed once per version
    /// of the Secret.
    pub fn keyring(&self, issuer: &IssuerView) -> Option<Arc<Keyring>> {
        let (namespace, name) = &issuer.key_secret;
        let secret = self
            .key_secrets
            .get(&ObjectRef::new(name).within(namespace))?;
        let version = secret.resource_version();
        let mut cache = self
            .keyrings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((cached_version, keyring)) = cache.get(&issuer.key_secret)
            && *cached_version == version
        {
            return Some(keyring.clone());
        }
        let bytes = secret.data.as_ref()?.get(KEYRING_SECRET_KEY)?;
        let keyring = Arc::new(Keyring::from_json(&bytes.0).ok()?);
        cache.insert(issuer.key_secret.clone(), (version, keyring.clone()));
        Some(keyring)
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
        let token = self.access_tokens.get(&self.token_ids.get(&key)?)?;
        token_ids(&token).contains(&key).then_some(token)
    }

    /// The AccessToken holding the opaque token with this fingerprint, and its id.
    pub fn access_token_by_hash(&self, hash: &str) -> Option<(Arc<AccessToken>, String)> {
        let token = self.access_tokens.get(&self.token_hashes.get(hash)?)?;
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
        Some((token, id))
    }

    /// When the soonest-expiring token of a Ready AccessToken expires.
    pub fn soonest_expiry(&self, now: Timestamp) -> Option<Timestamp> {
        self.access_tokens
            .state()
            .iter()
            .filter(|t| !t.spec.is_revoked())
            .filter_map(|t| {
                let status = t.status.as_ref()?;
                let ready = status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                status
                    .expires_at
                    .as_ref()
                    .map(|e| e.0)
                    .filter(|e| ready && *e > now)
            })
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
