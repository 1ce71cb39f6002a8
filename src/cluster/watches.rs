//! Every watch the process opens, once each: started in `run`, read by the
//! token service on every replica and by the reconcilers on the leader.

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::{Api, Client, Resource, api::ObjectMeta, core::PartialObjectMeta, runtime::watcher};

use super::{
    cached_secret::CachedSecret,
    cached_token::CachedToken,
    decoded::Decoded,
    finalizer_hold,
    keyrings::Keyrings,
    labels::{FINALIZER, ISSUER_LABEL, MANAGER, REVOCATIONS_LABEL, managed_selector},
    revocation_counts::RevocationCounts,
    watch::{Pending, Watched, drop_last_applied, strip_bookkeeping},
};
use crate::api::{AccessToken, AppRegistration, ClusterTokenIssuer, TokenIssuer};

/// The watches every replica keeps.
#[derive(Clone)]
pub struct Watches {
    pub token_issuers: Watched<TokenIssuer>,
    pub cluster_issuers: Watched<ClusterTokenIssuer>,
    /// Metadata only: issuers select namespaces by label.
    pub namespaces: Watched<PartialObjectMeta<Namespace>>,
    /// The issuers' key Secrets, all in the operator's namespace and selected
    /// by label; no tenant's Secret data is ever cached.
    pub key_secrets: Watched<Secret>,
    /// Compact: see [`CachedToken`].
    pub access_tokens: Watched<CachedToken>,
    pub apps: Watched<AppRegistration>,
    /// The revocation record's ConfigMaps.
    pub revocations: Watched<ConfigMap>,
    /// Live revocation entries per namespace, from `revocations`.
    pub revocation_counts: RevocationCounts,
    /// The keyrings of `key_secrets`, parsed once per version.
    pub keyrings: Keyrings,
}

/// The watches of [`Watches`] before they run: indexes hook in here.
pub struct PendingWatches {
    pub token_issuers: Pending<TokenIssuer>,
    pub cluster_issuers: Pending<ClusterTokenIssuer>,
    pub namespaces: Pending<PartialObjectMeta<Namespace>>,
    pub key_secrets: Pending<Secret>,
    pub access_tokens: Pending<CachedToken>,
    pub apps: Pending<AppRegistration>,
    pub revocations: Pending<ConfigMap>,
}

impl Watches {
    /// Sets up the watches; they start when [`PendingWatches::run`] runs.
    pub fn new(client: &Client, operator_namespace: &str) -> (Self, PendingWatches) {
        let all = watcher::Config::default;
        let (token_issuers, mut pending_token_issuers) =
            Watched::tolerant(Api::all(client.clone()), all());
        let (cluster_issuers, mut pending_cluster_issuers) =
            Watched::tolerant(Api::all(client.clone()), all());
        let (namespaces, mut pending_namespaces) = Watched::new(Api::all(client.clone()), all());
        let (key_secrets, mut pending_key_secrets) = Watched::new(
            Api::namespaced(client.clone(), operator_namespace),
            all().labels(ISSUER_LABEL),
        );
        let (access_tokens, mut pending_access_tokens) = Watched::tolerant_converted(
            Api::<Decoded<AccessToken>>::all(client.clone()),
            all(),
            CachedToken::new,
        );
        let (apps, mut pending_apps) = Watched::tolerant(Api::all(client.clone()), all());
        let (revocations, mut pending_revocations) = Watched::new(
            Api::namespaced(client.clone(), operator_namespace),
            all().labels(REVOCATIONS_LABEL),
        );
        pending_token_issuers.project(strip_bookkeeping);
        pending_cluster_issuers.project(strip_bookkeeping);
        pending_namespaces.project(strip_bookkeeping);
        pending_key_secrets.project(strip_bookkeeping);
        pending_access_tokens.project(|token: &mut CachedToken| {
            // Kept where the finalizer could be applied away: the reconciler
            // reads them to take hold of it (rare; see finalizer_hold).
            if finalizer_hold::exposed(token.meta(), FINALIZER, MANAGER) {
                drop_last_applied(token.meta_mut());
            } else {
                strip_bookkeeping(token);
            }
        });
        pending_apps.project(strip_bookkeeping);
        pending_revocations.project(strip_bookkeeping);
        let revocation_counts = RevocationCounts::default();
        let counts = revocation_counts.clone();
        pending_revocations.hook(move |event| counts.apply(event));
        (
            Self {
                token_issuers,
                cluster_issuers,
                namespaces,
                access_tokens,
                apps,
                revocations,
                revocation_counts,
                keyrings: Keyrings::new(key_secrets.store()),
                key_secrets,
            },
            PendingWatches {
                token_issuers: pending_token_issuers,
                cluster_issuers: pending_cluster_issuers,
                namespaces: pending_namespaces,
                key_secrets: pending_key_secrets,
                access_tokens: pending_access_tokens,
                apps: pending_apps,
                revocations: pending_revocations,
            },
        )
    }

    /// Waits until every watch has listed once; `false` if one stopped first.
    pub async fn listed(&self) -> bool {
        let all = futures::future::join_all([
            Box::pin(self.token_issuers.listed()) as BoxFuture<'_, bool>,
            Box::pin(self.cluster_issuers.listed()),
            Box::pin(self.namespaces.listed()),
            Box::pin(self.key_secrets.listed()),
            Box::pin(self.access_tokens.listed()),
            Box::pin(self.apps.listed()),
            Box::pin(self.revocations.listed()),
        ]);
        all.await.into_iter().all(|listed| listed)
    }
}

impl PendingWatches {
    /// Runs every watch; this only ends if the process is stopping.
    pub fn run(self) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            futures::join!(
                self.token_issuers.run(),
                self.cluster_issuers.run(),
                self.namespaces.run(),
                self.key_secrets.run(),
                self.access_tokens.run(),
                self.apps.run(),
                self.revocations.run(),
            );
        })
    }
}

/// The metadata of every Secret the operator manages, in any namespace:
/// what the reconcilers compare with their records. Only the leader keeps
/// it, and only metadata is watched (`PartialObjectMeta`: no data).
/// Of `managedFields` only who wrote which data keys stays: that tells
/// whether someone else edited a Secret's data; `leave_out` drops more of
/// what the reconcilers never read.
pub fn managed_secrets(
    client: &Client,
    leave_out: fn(&mut ObjectMeta),
) -> (Watched<CachedSecret>, Pending<CachedSecret>) {
    Watched::converted(
        Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        watcher::Config::default().labels(&managed_selector()),
        move |secret| {
            let mut meta = secret.metadata;
            leave_out(&mut meta);
            CachedSecret::new(meta)
        },
    )
}
