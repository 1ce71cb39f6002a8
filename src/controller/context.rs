//! What every reconcile shares: the client, the configuration, the event
//! recorder and the caches of the process's shared watches.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Client, Resource, ResourceExt,
    runtime::{
        events::Reporter,
        reflector::{ObjectRef, Store},
    },
};

use super::{
    events::Events,
    own_writes::OwnWrites,
    revocation::{RevocationCounts, RevocationStore},
};
use crate::{
    api::AppRegistration,
    cluster::{CachedSecret, Keyrings, Watched, Watches, issuers::IssuerStores},
    telemetry::Metrics,
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
    /// A ClusterTokenIssuer to keep in place (`--default-issuer`).
    pub default_issuer: Option<crate::api::ClusterTokenIssuer>,
}

/// What every reconcile shares. The caches are those of the process's
/// shared watches, filled before any reconciler starts.
pub struct Context {
    pub client: Client,
    pub config: Config,
    /// Publishes events as the operator.
    events: Events,
    pub revocations: RevocationStore,
    /// Metadata of the Secrets the operator manages (never their data).
    pub managed_secrets: Store<CachedSecret>,
    pub issuers: IssuerStores,
    pub apps: Store<AppRegistration>,
    /// Live revocation entries per namespace, for the quota.
    pub revocation_counts: RevocationCounts,
    /// The issuers' keyrings, from the watched key Secrets.
    pub keyrings: Keyrings,
    pub metrics: Arc<Metrics>,
    /// What the operator wrote moments ago, so its echo triggers nothing.
    pub own_writes: Arc<OwnWrites>,
}

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        metrics: Arc<Metrics>,
        watches: &Watches,
        managed_secrets: &Watched<CachedSecret>,
    ) -> Arc<Context> {
        let reporter = Reporter {
            controller: "tokensmith".into(),
            instance: config.instance.clone(),
        };
        Arc::new(Context {
            events: Events::start(client.clone(), reporter),
            revocations: RevocationStore::new(
                client.clone(),
                &config.namespace,
                watches.revocations.store(),
            ),
            client,
            config,
            managed_secrets: managed_secrets.store(),
            apps: watches.apps.store(),
            revocation_counts: watches.revocation_counts.clone(),
            issuers: IssuerStores {
                token_issuers: watches.token_issuers.store(),
                cluster_issuers: watches.cluster_issuers.store(),
                namespaces: watches.namespaces.store(),
            },
            keyrings: watches.keyrings.clone(),
            metrics,
            own_writes: OwnWrites::new(),
        })
    }

    /// Whether the caches still hold `object`, or its Secret `secret_name`,
    /// as they were before the operator's last write to it: deciding on that
    /// would undo or repeat what that write did. The two come by different
    /// watches, so an object whose status records a Secret can be seen
    /// before the Secret's creation comes back.
    pub fn behind_own_writes<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        secret_name: &str,
    ) -> bool {
        let namespace = object.namespace();
        let secret = self
            .managed_secrets
            .get(&ObjectRef::new(secret_name).within(namespace.as_deref().unwrap_or_default()));
        self.own_writes.awaiting::<K>(
            namespace.as_deref(),
            &object.name_any(),
            Some(object.meta()),
        ) || self.own_writes.awaiting::<Secret>(
            namespace.as_deref(),
            secret_name,
            secret.as_ref().map(|s| s.meta()),
        )
    }

    /// Publishes an event about `object`, off the reconcile's path (see
    /// [`Events`]); a failure to publish is logged, never fatal.
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
        self.events.publish(event, object.object_ref(&()));
    }
}
