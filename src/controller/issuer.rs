//! Reconciles TokenIssuers and ClusterTokenIssuers: each keeps its signing
//! keys in a Secret it owns, rotates them on schedule and reports them.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use futures::Stream;
use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams},
    core::PartialObjectMeta,
    runtime::{Controller, controller::Action, events::EventType, watcher},
};
use serde_json::json;
use tracing::{debug, info, instrument};

use super::{
    Context, Error, MANAGED_BY, MANAGER, Result,
    conditions::{Readiness, with_ready},
    managed_secret::{controller_reference, is_controlled_by},
};
use crate::{
    api::{Issuer, IssuerKeyStatus, IssuerKind, IssuerStatus},
    token::{KEYRING_SECRET_KEY, KeyPolicy, Keyring, MAX_PUBLISHED_KEYS, plan_keys},
};

/// Label naming the issuer a key Secret belongs to.
pub const ISSUER_LABEL: &str = "tokensmith.dev/issuer";

/// Where the signing keys of `issuer` live: a ClusterTokenIssuer's in the
/// operator's namespace, a TokenIssuer's beside it.
pub fn key_secret_location<I: Issuer>(issuer: &I, operator_namespace: &str) -> (String, String) {
    match I::KIND {
        IssuerKind::ClusterTokenIssuer => (
            operator_namespace.to_string(),
            format!("tokensmith-clusterissuer-{}", issuer.name_any()),
        ),
        IssuerKind::TokenIssuer => (
            issuer.namespace().unwrap_or_default(),
            format!("tokensmith-issuer-{}", issuer.name_any()),
        ),
    }
}

pub fn controller<I: Issuer>(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = ()> {
    use futures::StreamExt;
    // The key Secrets are watched by metadata only: a deleted or replaced
    // one is noticed at once, and no key material is cached by the watch.
    let key_secrets = Api::<PartialObjectMeta<Secret>>::all(ctx.client.clone());
    Controller::new(
        Api::<I>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .owns(key_secrets, watcher::Config::default().labels(ISSUER_LABEL))
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
    let now = Timestamp::now();
    let uid = issuer
        .uid()
        .ok_or(Error::MissingObjectKey("issuer", "metadata.uid"))?;
    let (secret_namespace, secret_name) =
        key_secret_location(issuer.as_ref(), &ctx.config.namespace);
    if ctx.issuers.namespace_terminating(&secret_namespace) {
        // Keys could not be written there; the issuer (or the operator's
        // namespace) is on its way out.
        debug!(namespace = %secret_namespace, "key namespace is being deleted; nothing to do");
        return Ok(Action::await_change());
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &secret_namespace);
    let existing = secrets.get_opt(&secret_name).await?;

    if let Some(secret) = &existing
        && !is_controlled_by(&secret.metadata, &uid)
    {
        let message = format!(
            "Secret {secret_namespace}/{secret_name} exists and is not owned by this issuer; it was left untouched. Delete or rename it so the issuer can keep its keys there."
        );
        update_status(
            issuer.as_ref(),
            &ctx,
            None,
            Readiness::not_ready("KeySecretConflict", message),
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
                &ctx,
                None,
                Readiness::not_ready("InvalidSpec", message),
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
                    &ctx,
                    None,
                    Readiness::not_ready("KeyError", message),
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
        let owner = controller_reference(issuer.as_ref())
            .ok_or(Error::MissingObjectKey("issuer", "metadata"))?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(secret_name.clone()),
                namespace: Some(secret_namespace.clone()),
                owner_references: Some(vec![owner]),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                    (ISSUER_LABEL.to_string(), issuer.name_any()),
                ])),
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
        &ctx,
        Some((plan.keyring.active().map(|k| k.kid.clone()), keys)),
        Readiness::ready("KeysReady", message),
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
