//! Reconciles TokenIssuers and ClusterTokenIssuers: each keeps its signing
//! keys in a Secret it owns, rotates them on schedule and reports them.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use futures::Stream;
use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, Preconditions},
    runtime::{
        Controller,
        controller::Action,
        events::EventType,
        finalizer::{Event as FinalizerEvent, finalizer},
        reflector::ObjectRef,
    },
};
use serde_json::json;
use tracing::{debug, info, instrument};

use super::{
    Context, Error, MANAGED_BY, MANAGER, Result,
    conditions::{Readiness, with_ready},
    issuer_ref::IssuerStores,
    managed_secret::{controller_reference, is_controlled_by},
};
use crate::{
    api::{
        ClusterTokenIssuer, Issuer, IssuerKeyStatus, IssuerKind, IssuerStatus, TokenIssuer, reason,
    },
    cluster::{WatchedIssuer, Watches},
    token::{KEYRING_SECRET_KEY, KeyPolicy, Keyring, MAX_PUBLISHED_KEYS, plan_keys},
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
    use futures::StreamExt;
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
    Controller::for_shared_stream(own.subscribe(), own.store())
        .watches_shared_stream(watches.key_secrets.subscribe(), |secret: Arc<Secret>| {
            issuer_of::<I>(&secret.metadata)
        })
        .watches_shared_stream(
            watches.cluster_issuers.subscribe(),
            move |changed: Arc<ClusterTokenIssuer>| {
                by_cluster_issuer(&changed.spec.settings.issuer_url)
            },
        )
        .watches_shared_stream(
            watches.token_issuers.subscribe(),
            move |changed: Arc<TokenIssuer>| by_token_issuer(&changed.spec.settings.issuer_url),
        )
        .with_config(kube::runtime::controller::Config::default().concurrency(super::CONCURRENCY))
        .graceful_shutdown_on(shutdown)
        .run(
            |issuer, ctx| async move {
                super::measured(&ctx.clone(), I::KIND.as_str(), reconcile::<I>(issuer, ctx)).await
            },
            error_policy::<I>,
            ctx,
        )
        .map(super::log_outcome)
}

fn error_policy<I: Issuer>(issuer: Arc<I>, error: &Error, _: Arc<Context>) -> Action {
    super::retry_policy(issuer.as_ref(), error, Duration::from_secs(15))
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
    let api = issuer.api(ctx.client.clone());
    let action = finalizer(&api, KEYS_FINALIZER, issuer, |event| async {
        match event {
            FinalizerEvent::Apply(issuer) => apply(issuer, &ctx).await,
            FinalizerEvent::Cleanup(issuer) => delete_keys(issuer.as_ref(), &ctx).await,
        }
    })
    .await;
    match action {
        Err(
            kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(status))
            | kube::runtime::finalizer::Error::AddFinalizer(kube::Error::Api(status)),
        ) if status.code == 404 => Ok(Action::await_change()),
        other => other.map_err(|e| Error::Finalizer(Box::new(e))),
    }
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

/// Keeps the keys of an issuer in place and its status in line.
async fn apply<I: Issuer>(issuer: Arc<I>, ctx: &Context) -> Result<Action> {
    let now = Timestamp::now();
    if let Err(owner) = ctx.issuers.check_url(issuer.as_ref()) {
        // Serving two issuers at one URL would let the younger, or a
        // tenant's, take over the verification of the other's tokens.
        let message = format!(
            "issuerURL {} is already served for {}; this issuer is not served and signs nothing. Choose another issuerURL",
            issuer.settings().issuer_url,
            owner.describe()
        );
        update_status(
            issuer.as_ref(),
            ctx,
            None,
            Readiness::not_ready(reason::ISSUER_URL_CONFLICT, message),
            now,
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    let uid = issuer
        .uid()
        .ok_or(Error::MissingObjectKey("issuer", "metadata.uid"))?;
    let (secret_namespace, secret_name) =
        key_secret_location(issuer.as_ref(), &ctx.config.namespace);
    let issuer_namespace = issuer.namespace();
    let terminating = [Some(&secret_namespace), issuer_namespace.as_ref()]
        .into_iter()
        .flatten()
        .find(|ns| ctx.issuers.namespace_terminating(ns));
    if let Some(namespace) = terminating {
        // Nothing can be written there; the issuer (or the operator's
        // namespace) is on its way out.
        debug!(%namespace, "namespace is being deleted; nothing to do");
        return Ok(Action::await_change());
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &secret_namespace);
    let existing = secrets.get_opt(&secret_name).await?;
    // A TokenIssuer's Secret left by an earlier issuer of the same name is
    // the operator's own (no tenant writes there): replaced with new keys,
    // so a new issuer never inherits an old one's signing keys.
    let existing = existing.filter(|s| {
        I::KIND == IssuerKind::ClusterTokenIssuer || belongs_to(&s.metadata, issuer.as_ref())
    });

    if let Some(secret) = &existing
        && !belongs_to(&secret.metadata, issuer.as_ref())
    {
        let message = format!(
            "Secret {secret_namespace}/{secret_name} exists and is not owned by this issuer; it was left untouched. Delete or rename it so the issuer can keep its keys there."
        );
        update_status(
            issuer.as_ref(),
            ctx,
            None,
            Readiness::not_ready(reason::KEY_SECRET_CONFLICT, message),
            now,
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }

    let policy = match key_policy(issuer.settings()) {
        Ok(policy) => policy,
        Err(message) => {
            update_status(
                issuer.as_ref(),
                ctx,
                None,
                Readiness::not_ready(reason::INVALID_SPEC, message),
                now,
            )
            .await?;
            return Ok(Action::await_change());
        }
    };

    let current = match existing
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(KEYRING_SECRET_KEY))
    {
        None => Keyring::default(),
        Some(bytes) => match Keyring::from_json(&bytes.0) {
            Ok(keyring) => keyring,
            Err(error) => {
                // Replacing it would orphan every token its keys signed.
                let message = format!(
                    "the keys in Secret {secret_namespace}/{secret_name} are unreadable ({error}); restore the Secret, or delete it to start over with new keys (tokens signed so far stop verifying)"
                );
                update_status(
                    issuer.as_ref(),
                    ctx,
                    None,
                    Readiness::not_ready(reason::KEY_ERROR, message),
                    now,
                )
                .await?;
                return Ok(Action::requeue(Duration::from_secs(300)));
            }
        },
    };
    let previous_active = current.active().map(|k| k.kid.clone());
    let plan = plan_keys(current, policy, now)?;

    if plan.changed {
        let mut labels = BTreeMap::from([
            (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
            (ISSUER_LABEL.to_string(), issuer.name_any()),
        ]);
        let owner_references = match I::KIND {
            IssuerKind::ClusterTokenIssuer => Some(vec![
                controller_reference(issuer.as_ref())
                    .ok_or(Error::MissingObjectKey("issuer", "metadata"))?,
            ]),
            IssuerKind::TokenIssuer => {
                labels.insert(
                    ISSUER_NAMESPACE_LABEL.to_string(),
                    issuer.namespace().unwrap_or_default(),
                );
                labels.insert(ISSUER_UID_LABEL.to_string(), uid.clone());
                None
            }
        };
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(secret_name.clone()),
                namespace: Some(secret_namespace.clone()),
                owner_references,
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                KEYRING_SECRET_KEY.to_string(),
                ByteString(plan.keyring.to_json()),
            )])),
            ..Secret::default()
        };
        let mut body = serde_json::to_value(&secret).expect("a Secret serializes");
        body["apiVersion"] = json!("v1");
        body["kind"] = json!("Secret");
        secrets
            .patch(
                &secret_name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
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
    let message = format!("{} signing key(s) published", keys.len());
    update_status(
        issuer.as_ref(),
        ctx,
        Some((plan.keyring.active().map(|k| k.kid.clone()), keys)),
        Readiness::ready(reason::KEYS_READY, message),
        now,
    )
    .await?;

    let wait = (plan.next_change.as_second() - now.as_second()).max(1) as u64;
    Ok(Action::requeue(Duration::from_secs(wait)))
}

fn key_policy(settings: &crate::api::IssuerSettings) -> Result<KeyPolicy, String> {
    let invalid = |e: crate::api::DurationError| e.to_string();
    let policy = KeyPolicy {
        algorithm: settings.algorithm(),
        rotation_interval: settings.key_rotation_interval().map_err(invalid)?,
        max_token_lifetime: settings.max_lifetime().map_err(invalid)?,
    };
    if policy.published_key_bound() > MAX_PUBLISHED_KEYS {
        return Err(format!(
            "keyRotation.interval is too short for maxLifetime: retired keys stay published for maxLifetime, so up to {} keys would be kept and at most {MAX_PUBLISHED_KEYS} are supported; lengthen keyRotation.interval or shorten maxLifetime",
            policy.published_key_bound()
        ));
    }
    Ok(policy)
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

/// Writes the status when it differs from what is there. `keys` is `None`
/// when the keys could not be looked at: the reported keys are kept.
async fn update_status<I: Issuer>(
    issuer: &I,
    ctx: &Context,
    keys: Option<(Option<String>, Vec<IssuerKeyStatus>)>,
    readiness: Readiness,
    now: Timestamp,
) -> Result<()> {
    let current = issuer.issuer_status().cloned().unwrap_or_default();
    let generation = issuer.meta().generation;
    let (active_key_id, keys) =
        keys.unwrap_or((current.active_key_id.clone(), current.keys.clone()));
    let desired = IssuerStatus {
        conditions: with_ready(&current.conditions, &readiness, generation, now),
        observed_generation: generation,
        active_key_id,
        keys,
    };
    if desired == current {
        return Ok(());
    }
    if readiness.ready
        != super::conditions::ready_condition(&current.conditions)
            .is_some_and(|c| c.status == "True")
        && !readiness.ready
    {
        ctx.publish(
            issuer,
            EventType::Warning,
            readiness.reason,
            readiness.message.clone(),
        )
        .await;
    }
    let api = issuer.api(ctx.client.clone());
    let body = json!({
        "apiVersion": I::api_version(&()),
        "kind": I::kind(&()),
        "status": desired,
    });
    api.patch_status(
        &issuer.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}
