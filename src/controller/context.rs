use std::{collections::HashMap, sync::Arc};

use futures::{FutureExt, StreamExt, future::BoxFuture, stream::BoxStream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::{
    Api, Client, Resource,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        events::{Recorder, Reporter},
        reflector::{self, Store},
        watcher,
    },
};
use tokio::sync::Mutex;

use super::{
    Error, MANAGED_BY,
    error::is_namespace_terminating,
    issuer_ref::IssuerStores,
    revocation::{REVOCATIONS_LABEL, RevocationCounts, RevocationStore},
};
use crate::{
    api::{AppRegistration, ClusterTokenIssuer, TokenIssuer},
    ready_gate::{ReadyGate, filled},
    telemetry::Metrics,
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
    /// Base URL clients reach the token service at (written to
    /// AppRegistration Secrets as `token-url`).
    pub public_url: String,
    /// Revocation entries one namespace may hold before its AccessTokens
    /// stop minting (revoking is never refused).
    pub revocation_quota: usize,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub recorder: Recorder,
    pub revocations: RevocationStore,
    /// Metadata of the Secrets the operator manages (never their data).
    pub managed_secrets: Store<PartialObjectMeta<Secret>>,
    pub issuers: IssuerStores,
    pub apps: Store<AppRegistration>,
    /// Live revocation entries per namespace, for the quota.
    pub revocation_counts: RevocationCounts,
    /// Active signing keys by the path of their issuer's key Secret, so a
    /// mint does not read and parse the Secret each time.
    pub signing_keys: Mutex<HashMap<String, SigningKey>>,
    pub metrics: Arc<Metrics>,
    /// Opens once every store above has listed; every reconcile waits on it.
    ready: ReadyGate,
}

/// Watch events, each passed on after the matching store in [`Context`] applied it.
pub type Trigger<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// The watches the AccessToken controller is triggered by; they feed the
/// stores in [`Context`] as it polls them.
pub struct Triggers {
    pub secrets: Trigger<PartialObjectMeta<Secret>>,
    pub token_issuers: Trigger<TokenIssuer>,
    pub cluster_issuers: Trigger<ClusterTokenIssuer>,
    pub apps: Trigger<AppRegistration>,
}

/// The label selector of every Secret the operator manages.
pub fn managed_selector() -> String {
    format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)
}

impl Context {
    /// Sets up the shared watches. Returns the context, the triggers the
    /// AccessToken controller runs (which fill the stores they belong to),
    /// and a future that runs the namespace watch.
    pub fn start(
        client: Client,
        config: Config,
        metrics: Arc<Metrics>,
    ) -> (Arc<Context>, Triggers, BoxFuture<'static, ()>) {
        // A trigger stream passes each event on only after its store applied
        // it, so a reconcile never sees an older view than the event that
        // caused it. Deletions are passed on too.
        let (managed_secrets, secrets_writer) = reflector::store();
        let (token_issuers, token_issuers_writer) = reflector::store();
        let (cluster_issuers, cluster_issuers_writer) = reflector::store();
        let (namespaces, namespaces_writer) = reflector::store();
        let (apps, apps_writer) = reflector::store();
        let triggers = Triggers {
            apps: watcher(
                Api::<AppRegistration>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff()
            .reflect(apps_writer)
            .touched_objects()
            .boxed(),
            secrets: watcher(
                Api::<PartialObjectMeta<Secret>>::all(client.clone()),
                watcher::Config::default().labels(&managed_selector()),
            )
            .default_backoff()
            .reflect(secrets_writer)
            .touched_objects()
            .boxed(),
            token_issuers: watcher(
                Api::<TokenIssuer>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff()
            .reflect(token_issuers_writer)
            .touched_objects()
            .boxed(),
            cluster_issuers: watcher(
                Api::<ClusterTokenIssuer>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff()
            .reflect(cluster_issuers_writer)
            .touched_objects()
            .boxed(),
        };
        let (revocation_record, revocations_writer) = reflector::store();
        let revocation_counts = RevocationCounts::default();
        let counts = revocation_counts.clone();
        let watches: BoxFuture<'static, ()> = Box::pin(
            futures::future::join(
                watcher(
                    Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                    watcher::Config::default(),
                )
                .default_backoff()
                .reflect(namespaces_writer)
                .for_each(|_| async {}),
                watcher(
                    Api::<ConfigMap>::namespaced(client.clone(), &config.namespace),
                    watcher::Config::default().labels(REVOCATIONS_LABEL),
                )
                .default_backoff()
                .reflect(revocations_writer)
                .for_each(move |event| {
                    if let Ok(event) = &event {
                        counts.apply(event);
                    }
                    async {}
                }),
            )
            .map(|_| ()),
        );

        let reporter = Reporter {
            controller: "tokensmith".into(),
            instance: config.instance.clone(),
        };
        let ready = ReadyGate::new(vec![
            filled(&managed_secrets),
            filled(&namespaces),
            filled(&token_issuers),
            filled(&cluster_issuers),
            filled(&apps),
            filled(&revocation_record),
        ]);
        let ctx = Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            revocations: RevocationStore::new(client.clone(), &config.namespace),
            client,
            config,
            managed_secrets,
            apps,
            revocation_counts,
            issuers: IssuerStores {
                token_issuers,
                cluster_issuers,
                namespaces,
            },
            signing_keys: Mutex::new(HashMap::new()),
            metrics,
            ready,
        });
        (ctx, triggers, watches)
    }

    /// Waits until every shared store has been filled by its first list;
    /// reconciles start with it, so no decision is made on a partial view.
    pub async fn wait_until_ready(&self) -> Result<(), Error> {
        if self.ready.wait().await {
            Ok(())
        } else {
            Err(Error::WatchesStopped)
        }
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
        match self.recorder.publish(&event, &object.object_ref(&())).await {
            Ok(()) => {}
            // Events cannot be created in a namespace being deleted, and
            // nobody would read them there.
            Err(error) if is_namespace_terminating(&error) => {
                tracing::debug!(reason, "namespace is being deleted; event not published");
            }
            Err(error) => tracing::warn!(%error, reason, "could not publish an event"),
        }
    }
}
