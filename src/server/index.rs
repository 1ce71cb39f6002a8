//! What the token service knows, built from watches: no request makes an
//! API call to answer.

use std::sync::Arc;

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
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};

use crate::{
    api::{AccessToken, AppRegistration, ClusterTokenIssuer, Issuer, IssuerSettings, TokenIssuer},
    controller::{
        issuer::{ISSUER_LABEL, key_secret_location},
        issuer_ref::IssuerStores,
        revocation::{REVOCATIONS_LABEL, shard_name},
    },
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
}

impl Index {
    /// Starts the watches; the returned future runs them (it never ends).
    pub fn start(client: &Client, operator_namespace: &str) -> (Self, BoxFuture<'static, ()>) {
        let (token_issuers, w1) = reflector::store();
        let (cluster_issuers, w2) = reflector::store();
        let (namespaces, w3) = reflector::store();
        let (key_secrets, w4) = reflector::store();
        let (access_tokens, w5) = reflector::store();
        let (apps, w6) = reflector::store();
        let (revocations, w7) = reflector::store();
        let all = watcher::Config::default;
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
            // Only the issuers' key Secrets, selected by label: their private
            // keys sign the tokens of the token endpoint.
            watcher(
                Api::<Secret>::all(client.clone()),
                all().labels(ISSUER_LABEL),
            )
            .default_backoff()
            .reflect(w4)
            .map(|_| ())
            .boxed(),
            watcher(Api::<AccessToken>::all(client.clone()), all())
                .default_backoff()
                .reflect(w5)
                .map(|_| ())
                .boxed(),
            watcher(Api::<AppRegistration>::all(client.clone()), all())
                .default_backoff()
                .reflect(w6)
                .map(|_| ())
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
        let index = Self {
            issuers: IssuerStores {
                token_issuers,
                cluster_issuers,
                namespaces,
            },
            key_secrets,
            access_tokens,
            apps,
            revocations,
            operator_namespace: operator_namespace.to_string(),
        };
        (index, Box::pin(watches))
    }

    /// Whether every watch has listed once.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.issuers.token_issuers.wait_until_ready().await?;
        self.issuers.cluster_issuers.wait_until_ready().await?;
        self.issuers.namespaces.wait_until_ready().await?;
        self.key_secrets.wait_until_ready().await?;
        self.access_tokens.wait_until_ready().await?;
        self.apps.wait_until_ready().await?;
        self.revocations.wait_until_ready().await?;
        Ok(())
    }

    fn views(&self) -> Vec<IssuerView> {
        fn view<I: Issuer>(issuer: &I, operator_namespace: &str) -> IssuerView {
            IssuerView {
                settings: issuer.settings().clone(),
                key_secret: key_secret_location(issuer, operator_namespace),
            }
        }
        let cluster = self.issuers.cluster_issuers.state();
        let namespaced = self.issuers.token_issuers.state();
        cluster
            .iter()
            .map(|i| view(i.as_ref(), &self.operator_namespace))
            .chain(
                namespaced
                    .iter()
                    .map(|i| view(i.as_ref(), &self.operator_namespace)),
            )
            .collect()
    }

    /// The issuer whose `issuerURL` has this path (and host, when several do).
    pub fn issuer_by_path(&self, host: Option<&str>, path: &str) -> Option<IssuerView> {
        let normalized = |p: &str| p.trim_end_matches('/').to_string();
        let wanted = normalized(path);
        let mut matches: Vec<IssuerView> = self
            .views()
            .into_iter()
            .filter(|v| url_path(&v.settings.issuer_url).is_some_and(|p| normalized(p) == wanted))
            .collect();
        if matches.len() > 1
            && let Some(host) = host
        {
            matches.retain(|v| url_host(&v.settings.issuer_url) == Some(host));
        }
        (matches.len() == 1).then(|| matches.remove(0))
    }

    /// The issuer whose `issuerURL` is exactly `iss`.
    pub fn issuer_by_url(&self, iss: &str) -> Option<IssuerView> {
        let mut matches: Vec<IssuerView> = self
            .views()
            .into_iter()
            .filter(|v| v.settings.issuer_url == iss)
            .collect();
        (matches.len() == 1).then(|| matches.remove(0))
    }

    /// The keys of an issuer, from its key Secret.
    pub fn keyring(&self, issuer: &IssuerView) -> Option<Keyring> {
        let (namespace, name) = &issuer.key_secret;
        let secret = self
            .key_secrets
            .get(&ObjectRef::new(name).within(namespace))?;
        let bytes = secret.data.as_ref()?.get(KEYRING_SECRET_KEY)?;
        Keyring::from_json(&bytes.0).ok()
    }

    /// The AppRegistration whose client id is `client_id`.
    pub fn app(&self, client_id: &str) -> Option<Arc<AppRegistration>> {
        self.apps
            .state()
            .into_iter()
            .find(|a| a.uid().as_deref() == Some(client_id))
    }

    /// The AccessToken a token id belongs to (current or superseded token).
    pub fn access_token_by_id(&self, token_id: &str) -> Option<Arc<AccessToken>> {
        self.access_tokens.state().into_iter().find(|t| {
            t.status.as_ref().is_some_and(|s| {
                s.token_id.as_deref() == Some(token_id)
                    || s.previous_tokens.iter().any(|p| p.token_id == token_id)
            })
        })
    }

    /// The AccessToken holding the opaque token with this fingerprint, and its id.
    pub fn access_token_by_hash(&self, hash: &str) -> Option<(Arc<AccessToken>, String)> {
        self.access_tokens.state().into_iter().find_map(|t| {
            let status = t.status.as_ref()?;
            let id = if status.token_hash.as_deref() == Some(hash) {
                status.token_id.clone()
            } else {
                status
                    .previous_tokens
                    .iter()
                    .find(|p| p.token_hash.as_deref() == Some(hash))
                    .map(|p| p.token_id.clone())
            }?;
            Some((t.clone(), id))
        })
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

    /// Whether the revocation record holds `token_id`.
    pub fn is_revoked(&self, token_id: &str) -> bool {
        self.revocations
            .get(&ObjectRef::new(&shard_name(token_id)).within(&self.operator_namespace))
            .and_then(|cm| cm.data.as_ref().map(|d| d.contains_key(token_id)))
            .unwrap_or(false)
    }
}

fn url_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    Some(rest.find('/').map_or("", |i| &rest[i..]))
}

fn url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    Some(rest.split('/').next().unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_issuer_urls() {
        assert_eq!(
            url_path("https://tokens.example/issuers/default"),
            Some("/issuers/default")
        );
        assert_eq!(url_path("https://tokens.example"), Some(""));
        assert_eq!(
            url_host("https://tokens.example:8443/x"),
            Some("tokens.example:8443")
        );
    }
}
