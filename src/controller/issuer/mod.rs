//! Reconciles TokenIssuers and ClusterTokenIssuers: each keeps its signing
//! keys in a Secret it owns, rotates them on schedule and reports them.
//! Each reconcile gathers, lets the pure [`decide::decide`] choose, and acts.

mod decide;

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use futures::Stream;
use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ObjectMeta, Preconditions},
    runtime::{Controller, controller::Action, events::EventType, reflector::ObjectRef},
};
use tracing::{debug, info, instrument};

use self::decide::{Decision, KeySecret, Observed, decide};
use super::{
    Context, Error, Result,
    conditions::Readiness,
    finalizer::{Event as FinalizerEvent, finalized},
    managed_secret::{self, OwnedSecret, controller_reference, is_controlled_by},
    pace::Pace,
    status::{self, ReadyStatus, apply_status, report_blocked, requeue_at},
};
use crate::{
    api::{
        ClusterTokenIssuer, Issuer, IssuerKeyStatus, IssuerKind, IssuerStatus, TokenIssuer, reason,
    },
    cluster::{WatchedIssuer, Watches, issuers::IssuerStores},
    token::{KEYRING_SECRET_KEY, KeyPolicy, Keyring, plan_keys},
};

pub use crate::cluster::labels::ISSUER_LABEL;
/// Label on a TokenIssuer's key Secret: the issuer's namespace.
pub const ISSUER_NAMESPACE_LABEL: &str = "tokensmith.dev/issuer-namespace";
/// Label on a TokenIssuer's key Secret: the UID of the issuer it belongs to
/// (an owner reference cannot point into another namespace).
pub const ISSUER_UID_LABEL: &str = "tokensmith.dev/issuer-uid";
/// Holds a TokenIssuer until its keys are deleted.
pub const KEYS_FINALIZER: &str = "tokensmith.dev/keys";

pub use crate::cluster::keyrings::key_secret_location;

/// Whether the key Secret `meta` belongs to `issuer` (by UID).
fn belongs_to<I: Issuer>(meta: &ObjectMeta, issuer: &I) -> bool {
    let uid = issuer.uid().unwrap_or_default();
    match I::KIND {
        IssuerKind::ClusterTokenIssuer => is_controlled_by(meta, &uid),
        IssuerKind::TokenIssuer => {
            meta.labels.as_ref().and_then(|l| l.get(ISSUER_UID_LABEL)) == Some(&uid)
        }
    }
}

/// The issuer a key Secret's labels name, as the controller of kind `I`
/// looks it up.
fn issuer_of<I: Issuer>(secret: &ObjectMeta) -> Option<ObjectRef<I>> {
    let labels = secret.labels.as_ref()?;
    let name = labels.get(ISSUER_LABEL)?;
    match (I::KIND, labels.get(ISSUER_NAMESPACE_LABEL)) {
        (IssuerKind::TokenIssuer, Some(namespace)) => Some(ObjectRef::new(name).within(namespace)),
        (IssuerKind::ClusterTokenIssuer, None) => Some(ObjectRef::new(name)),
        _ => None,
    }
}

/// The controller of issuer kind `I`: triggered by its own kind, its key
/// Secrets, and any issuer that may claim the same URL path.
pub fn controller<I: Issuer + WatchedIssuer>(
    ctx: Arc<Context>,
    watches: &Watches,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = ()> {
    // Any issuer's change can hand a URL to another issuer or take it away:
    // every issuer of this kind that claims the same path looks again.
    let same_path = |stores: IssuerStores| {
        move |url: &str| -> Vec<ObjectRef<I>> {
            stores
                .claimants_of(url)
                .into_iter()
                .filter(|c| c.kind == I::KIND)
                .map(|c| {
                    let reference = ObjectRef::new(&c.name);
                    match &c.namespace {
                        Some(namespace) => reference.within(namespace),
                        None => reference,
                    }
                })
                .collect()
        }
    };
    let by_cluster_issuer = same_path(ctx.issuers.clone());
    let by_token_issuer = same_path(ctx.issuers.clone());
    let own = I::watched(watches);
    // Every issuer at start and after a relist, paced; then their changes.
    let pace = Pace::new(own.store());
    let triggers = futures::stream::select(pace.changes(own.subscribe()), pace.passes());
    let controller = Controller::for_shared_stream(triggers, own.store())
        .watches_shared_stream(
            pace.changes(watches.key_secrets.subscribe()),
            |secret: Arc<Secret>| issuer_of::<I>(&secret.metadata),
        )
        .watches_shared_stream(
            pace.changes(watches.cluster_issuers.subscribe()),
            move |changed: Arc<ClusterTokenIssuer>| {
                by_cluster_issuer(&changed.spec.settings.issuer_url)
            },
        )
        .watches_shared_stream(
            pace.changes(watches.token_issuers.subscribe()),
            move |changed: Arc<TokenIssuer>| by_token_issuer(&changed.spec.settings.issuer_url),
        );
    super::run_controller(
        controller,
        pace,
        ctx,
        shutdown,
        I::KIND.as_str(),
        reconcile::<I>,
        Duration::from_secs(15),
    )
}

#[instrument(skip_all, fields(kind = I::KIND.as_str(), namespace = issuer.namespace(), name = %issuer.name_any()))]
async fn reconcile<I: Issuer>(issuer: Arc<I>, ctx: Arc<Context>) -> Result<Action> {
    if I::KIND == IssuerKind::ClusterTokenIssuer {
        // Its key Secret is owned by it: the garbage collector removes it.
        return apply(issuer, &ctx).await;
    }
    // A TokenIssuer's keys live in another namespace than the issuer, so a
    // finalizer deletes them (and the sweeper the keys of an issuer whose
    // finalizer was removed by hand).
    finalized(&ctx, issuer, KEYS_FINALIZER, |event| async {
        match event {
            FinalizerEvent::Apply(issuer) => apply(issuer, &ctx).await,
            FinalizerEvent::Cleanup(issuer) => delete_keys(issuer.as_ref(), &ctx).await,
        }
    })
    .await
}

/// Deletes the key Secret of a TokenIssuer being deleted, if it is its own.
async fn delete_keys<I: Issuer>(issuer: &I, ctx: &Context) -> Result<Action> {
    let (namespace, name) = key_secret_location(issuer, &ctx.config.namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Some(existing) = secrets.get_metadata_opt(&name).await?
        && belongs_to(&existing.metadata, issuer)
    {
        delete_secret(&secrets, &existing.metadata).await?;
        info!(secret = %name, "issuer deleted: its keys were deleted");
    }
    Ok(Action::await_change())
}

/// Deletes the Secret `meta` describes, only if it is still that very one.
pub(super) async fn delete_secret(secrets: &Api<Secret>, meta: &ObjectMeta) -> Result<()> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match secrets
        .delete(&meta.name.clone().unwrap_or_default(), &params)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Keeps the keys of an issuer in place and its status in line: gathers,
/// lets [`decide::decide`] choose, acts.
async fn apply<I: Issuer>(issuer: Arc<I>, ctx: &Context) -> Result<Action> {
    let now = Timestamp::now();
    let (secret_namespace, secret_name) =
        key_secret_location(issuer.as_ref(), &ctx.config.namespace);
    let issuer_namespace = issuer.namespace();
    let terminating = [Some(&secret_namespace), issuer_namespace.as_ref()]
        .into_iter()
        .flatten()
        .find(|ns| ctx.issuers.namespace_terminating(ns));
    let url_taken_by = ctx
        .issuers
        .check_url(issuer.as_ref())
        .err()
        .map(|owner| owner.describe());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &secret_namespace);
    let existing = if url_taken_by.is_none() && terminating.is_none() {
        secrets.get_opt(&secret_name).await?
    } else {
        None
    };
    // A TokenIssuer's Secret left by an earlier issuer of the same name is
    // the operator's own (no tenant writes there): replaced with new keys,
    // so a new issuer never inherits an old one's signing keys.
    let secret = match existing {
        None => KeySecret::Absent,
        Some(s) if belongs_to(&s.metadata, issuer.as_ref()) => KeySecret::Ours(
            match s.data.as_ref().and_then(|d| d.get(KEYRING_SECRET_KEY)) {
                None => Ok(Keyring::default()),
                Some(bytes) => Keyring::from_json(&bytes.0).map_err(|e| e.to_string()),
            },
        ),
        Some(_) if I::KIND == IssuerKind::TokenIssuer => KeySecret::Absent,
        Some(_) => KeySecret::Foreign,
    };
    let key_secret = format!("{secret_namespace}/{secret_name}");
    let decision = decide(Observed {
        settings: issuer.settings(),
        url_taken_by,
        terminating_namespace: terminating.map(String::as_str),
        key_secret: &key_secret,
        secret,
    });
    let (current, policy) = match decision {
        Decision::Wait => {
            debug!("namespace is being deleted; nothing to do");
            return Ok(Action::await_change());
        }
        Decision::Blocked(blocked) => {
            return report_blocked(ctx, issuer.as_ref(), blocked, now).await;
        }
        Decision::Keys { current, policy } => (current, policy),
    };
    let previous_active = current.active().map(|k| k.kid.clone());
    let plan = plan_keys(current, policy, now)?;
    if plan.changed {
        let secret = key_secret_of(
            issuer.as_ref(),
            &secret_namespace,
            &secret_name,
            &plan.keyring,
        )?;
        let stored = managed_secret::apply(&secrets, &secret).await?;
        ctx.own_writes.wrote(&stored);
        let active = plan.keyring.active().map(|k| k.kid.clone());
        if previous_active.is_some() && previous_active != active {
            let note = format!(
                "New signing key {} is active; the previous key stays published until every token it signed has expired",
                active.as_deref().unwrap_or_default()
            );
            info!(kid = active.as_deref(), "signing key rotated");
            ctx.publish(issuer.as_ref(), EventType::Normal, "KeyRotated", note)
                .await;
        }
    }
    let keys = key_statuses(&plan.keyring, policy);
    let readiness = Readiness::ready(
        reason::KEYS_READY,
        format!("{} signing key(s) published", keys.len()),
    );
    let status = IssuerStatus {
        active_key_id: plan.keyring.active().map(|k| k.kid.clone()),
        keys,
        ..status::current(issuer.as_ref()).with_readiness(&readiness, issuer.meta().generation, now)
    };
    apply_status(ctx, issuer.as_ref(), &status).await?;
    Ok(requeue_at(Some(plan.next_change), now))
}

/// The key Secret holding `keyring` for `issuer`: a ClusterTokenIssuer
/// controls its Secret; a TokenIssuer's lives in another namespace, so its
/// labels name it.
fn key_secret_of<I: Issuer>(
    issuer: &I,
    namespace: &str,
    name: &str,
    keyring: &Keyring,
) -> Result<Secret> {
    let uid = issuer
        .uid()
        .ok_or(Error::MissingObjectKey("issuer", "metadata.uid"))?;
    let mut labels = BTreeMap::from([(ISSUER_LABEL.to_string(), issuer.name_any())]);
    let owner_references = match I::KIND {
        IssuerKind::ClusterTokenIssuer => Some(vec![
            controller_reference(issuer).ok_or(Error::MissingObjectKey("issuer", "metadata"))?,
        ]),
        IssuerKind::TokenIssuer => {
            labels.insert(
                ISSUER_NAMESPACE_LABEL.to_string(),
                issuer.namespace().unwrap_or_default(),
            );
            labels.insert(ISSUER_UID_LABEL.to_string(), uid);
            None
        }
    };
    Ok(OwnedSecret {
        name,
        namespace,
        template: None,
        labels,
        annotations: BTreeMap::new(),
        data: BTreeMap::from([(
            KEYRING_SECRET_KEY.to_string(),
            ByteString(keyring.to_json()),
        )]),
    }
    .build(owner_references))
}

fn key_statuses(keyring: &Keyring, policy: KeyPolicy) -> Vec<IssuerKeyStatus> {
    keyring
        .keys
        .iter()
        .map(|k| IssuerKeyStatus {
            kid: k.kid.clone(),
            algorithm: k.algorithm,
            created_at: Time(k.created_at),
            retires_at: k
                .remove_after
                .or_else(|| k.created_at.checked_add(policy.rotation_interval).ok())
                .map(Time),
        })
        .collect()
}
