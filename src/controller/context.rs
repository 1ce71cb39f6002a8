use std::{collections::HashMap, sync::Arc};

use futures::{StreamExt, future::BoxFuture};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client, Resource,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        events::{Recorder, Reporter},
        reflector::{self, ReflectHandle, Store},
        watcher,
    },
};
use tokio::sync::Mutex;

use super::{MANAGED_BY, revocation::RevocationStore};
use crate::{
    api::{ClusterTokenIssuer, TokenIssuer},
    token::SigningKey,
};

/// How this operator instance is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// The operator's own namespace: ClusterTokenIssuer keys and the
    /// revocation record live here.
    pub namespace: String,
    /// Names this instance in events (the pod name in a cluster).
    pub instance: Option<String>,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub recorder: Recorder,
    pub revocations: RevocationStore,
    /// Metadata of the Secrets the operator manages (never their data).
    pub managed_secrets: Store<PartialObjectMeta<Secret>>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub token_issuers: Store<TokenIssuer>,
    pub cluster_issuers: Store<ClusterTokenIssuer>,
    /// Active signing keys by the path of their issuer's key Secret, so a
    /// mint does not read and parse the Secret each time.
    pub signing_keys: Mutex<HashMap<String, SigningKey>>,
}

/// Events a subscriber of a shared store may fall behind by before the
/// watch waits for it.
const BUFFER: usize = 1024;

/// Streams that fire after the matching store in [`Context`] has been updated.
pub struct Triggers {
    pub secrets: ReflectHandle<PartialObjectMeta<Secret>>,
    pub token_issuers: ReflectHandle<TokenIssuer>,
    pub cluster_issuers: ReflectHandle<ClusterTokenIssuer>,
}

/// The label selector of every Secret the operator manages.
pub fn managed_selector() -> String {
    format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)
}

impl Context {
    /// Starts the shared watches. Returns the context, the triggers the
    /// AccessToken controller subscribes to (each fires only after the store
    /// it belongs to is updated), and a future that runs the watches.
    pub fn start(
        client: Client,
        config: Config,
    ) -> (Arc<Context>, Triggers, BoxFuture<'static, ()>) {
        let (managed_secrets, secrets_writer) = reflector::store_shared(BUFFER);
        let (token_issuers, token_issuers_writer) = reflector::store_shared(BUFFER);
        let (cluster_issuers, cluster_issuers_writer) = reflector::store_shared(BUFFER);
        let (namespaces, namespaces_writer) = reflector::store();
        let triggers = Triggers {
            secrets: secrets_writer.subscribe().expect("a shared store"),
            token_issuers: token_issuers_writer.subscribe().expect("a shared store"),
            cluster_issuers: cluster_issuers_writer.subscribe().expect("a shared store"),
        };

        let secrets = watcher(
            Api::<PartialObjectMeta<Secret>>::all(client.clone()),
            watcher::Config::default().labels(&managed_selector()),
        )
        .default_backoff()
        .reflect_shared(secrets_writer)
        .for_each(|_| async {});
        let namespace_watch = watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(namespaces_writer)
        .for_each(|_| async {});
        let token_issuer_watch = watcher(
            Api::<TokenIssuer>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect_shared(token_issuers_writer)
        .for_each(|_| async {});
        let cluster_issuer_watch = watcher(
            Api::<ClusterTokenIssuer>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect_shared(cluster_issuers_writer)
        .for_each(|_| async {});
        let watches: BoxFuture<'static, ()> = Box::pin(async move {
            futures::future::join4(
                secrets,
                namespace_watch,
                token_issuer_watch,
                cluster_issuer_watch,
            )
            .await;
        });

        let reporter = Reporter {
            controller: "tokensmith".into(),
            instance: config.instance.clone(),
        };
        let ctx = Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            revocations: RevocationStore::new(client.clone(), &config.namespace),
            client,
            config,
            managed_secrets,
            namespaces,
            token_issuers,
            cluster_issuers,
            signing_keys: Mutex::new(HashMap::new()),
        });
        (ctx, triggers, watches)
    }

    /// Waits until every shared store has been filled by its first list;
    /// reconciles start with it, so no decision is made on a partial view.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.managed_secrets.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        self.token_issuers.wait_until_ready().await?;
        self.cluster_issuers.wait_until_ready().await?;
        Ok(())
    }

    /// Publishes an event about `object`; a failure to publish is logged,
    /// never fatal.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: kube::runtime::events::EventType,
        reason: &str,
        note: String,
    ) {
        let event = kube::runtime::events::Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, reason, "could not publish an event");
        }
    }
}
