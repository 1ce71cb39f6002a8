//! Reconciles AppRegistrations: a stable client id, a client secret in the
//! Secret (only its hash in the status), and scheduled secret rotation with a
//! grace period during which the previous secret still authenticates.
//!
//! Deleting an AppRegistration needs no finalizer: the token service treats
//! every token whose `client_id` names no existing app as inactive, and the
//! AccessToken reconciler revokes AccessTokens whose `appRef` is gone.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::PartialObjectMeta,
    runtime::{Controller, controller::Action, events::EventType, reflector::ObjectRef},
};
use secrecy::ExposeSecret;
use serde_json::json;
use tracing::{debug, info, instrument};

use super::{
    Context, Error, MANAGED_BY, MANAGER, Result,
    conditions::{Readiness, ready_condition, with_ready},
    issuer_ref::ResolvedIssuer,
    managed_secret::{SecretState, controller_reference, data_is_intact, put},
    refresh_chains::{CHAIN_CLIENT_LABEL, prune_expired_chains},
};
use crate::{
    api::{
        AppRegistration, AppRegistrationStatus, ClusterTokenIssuer, Issuer, IssuerSettings,
        TokenIssuer,
    },
    cluster::{Watched, Watches},
    token::{fingerprint, new_opaque_token, whole_seconds},
};

/// Label naming the AppRegistration a Secret belongs to.
pub const APP_LABEL: &str = "tokensmith.dev/app-registration";
/// Prefix of client secrets, so secret scanners recognise a leaked one.
pub const CLIENT_SECRET_PREFIX: &str = "tkcs_";

/// The Secret data keys (API.md).
pub mod data {
    pub const CLIENT_ID: &str = "client-id";
    pub const CLIENT_SECRET: &str = "client-secret";
    pub const TOKEN_URL: &str = "token-url";
    pub const ISSUER: &str = "issuer";
    pub const ALL: &[&str] = &[CLIENT_ID, CLIENT_SECRET, TOKEN_URL, ISSUER];
}

/// Annotations saying what the Secret holds, for people and for telling
/// whether it still holds the recorded secret. The record itself is the
/// status: the Secret's namespace belongs to a tenant, who could otherwise
/// add a client secret of their own choosing.
mod annotation {
    pub const SECRET_HASH: &str = "tokensmith.dev/client-secret-hash";
    pub const ROTATED_AT: &str = "tokensmith.dev/secret-rotated-at";
    pub const SETTINGS_HASH: &str = "tokensmith.dev/settings-hash";
}

use crate::api::reason;

/// The client secrets of an app, as the status records them.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RecordedSecret {
    hash: String,
    rotated_at: Timestamp,
    /// The previous secret's hash and the end of its grace period.
    previous: Option<(String, Timestamp)>,
}

impl RecordedSecret {
    fn from_status(status: &AppRegistrationStatus) -> Option<Self> {
        let previous = status.previous_client_secret_hash.clone().zip(
            status
                .previous_client_secret_expires_at
                .as_ref()
                .map(|t| t.0),
        );
        Some(Self {
            hash: status.client_secret_hash.clone()?,
            rotated_at: status.secret_rotated_at.as_ref()?.0,
            previous,
        })
    }

    fn annotations(&self, settings_hash: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (annotation::SECRET_HASH.to_string(), self.hash.clone()),
            (
                annotation::ROTATED_AT.to_string(),
                self.rotated_at.to_string(),
            ),
            (
                annotation::SETTINGS_HASH.to_string(),
                settings_hash.to_string(),
            ),
        ])
    }
}

/// The value of annotation `key` on the Secret.
fn annotation_of<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The URL of the token endpoint that the operator's token service serves.
pub fn token_url(public_url: &str) -> String {
    format!("{}/oauth/token", public_url.trim_end_matches('/'))
}

/// The AppRegistration controller: triggered by its own kind, the Secrets
/// it owns, its refresh chains and the issuers its apps name.
pub fn controller(
    ctx: Arc<Context>,
    watches: &Watches,
    managed_secrets: &Watched<PartialObjectMeta<Secret>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = ()> {
    let apps = watches.apps.store();
    let operator_namespace = ctx.config.namespace.clone();
    let for_chains = apps.clone();
    Controller::for_shared_stream(watches.apps.subscribe(), apps.clone())
        .owns_shared_stream(managed_secrets.subscribe())
        // A new refresh chain is a new thing to prune once it expires: its app
        // (named by client id) looks at it.
        .watches_shared_stream(
            managed_secrets.subscribe(),
            move |chain: Arc<PartialObjectMeta<Secret>>| {
                if chain.namespace().as_deref() != Some(operator_namespace.as_str()) {
                    return Vec::new();
                }
                let Some(client_id) = chain.labels().get(CHAIN_CLIENT_LABEL).cloned() else {
                    return Vec::new();
                };
                for_chains
                    .state()
                    .iter()
                    .filter(|a| a.uid().as_ref() == Some(&client_id))
                    .map(|a| ObjectRef::from_obj(a.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        // An app waiting for its issuer (created with it, say) goes on as soon
        // as the issuer is ready, not at its next retry.
        .watches_shared_stream(
            watches.cluster_issuers.subscribe(),
            apps_of::<ClusterTokenIssuer>(apps.clone()),
        )
        .watches_shared_stream(
            watches.token_issuers.subscribe(),
            apps_of::<TokenIssuer>(apps),
        )
        .with_config(kube::runtime::controller::Config::default().concurrency(super::CONCURRENCY))
        .graceful_shutdown_on(shutdown)
        .run(
            |app, ctx| async move {
                super::measured(&ctx.clone(), "AppRegistration", reconcile(app, ctx)).await
            },
            error_policy,
            ctx,
        )
        .map(super::log_outcome)
}

/// Maps a changed issuer to the apps that name it.
fn apps_of<I: Issuer>(
    apps: kube::runtime::reflector::Store<AppRegistration>,
) -> impl Fn(Arc<I>) -> Vec<ObjectRef<AppRegistration>> + Send + Sync + 'static {
    move |issuer: Arc<I>| {
        let (name, namespace) = (issuer.name_any(), issuer.namespace());
        apps.state()
            .iter()
            .filter(|a| {
                let r = a.spec.issuer_ref();
                r.kind() == I::KIND
                    && r.name == name
                    && (namespace.is_none() || a.namespace() == namespace)
            })
            .map(|a| ObjectRef::from_obj(a.as_ref()))
            .collect()
    }
}

fn error_policy(app: Arc<AppRegistration>, error: &Error, _: Arc<Context>) -> Action {
    super::retry_policy(app.as_ref(), error, Duration::from_secs(10))
}

#[instrument(skip_all, fields(namespace = app.namespace(), name = %app.name_any()))]
async fn reconcile(app: Arc<AppRegistration>, ctx: Arc<Context>) -> Result<Action> {
    match reconcile_app(app.clone(), ctx.clone(), false).await {
        // The API server will not store the Secret as the spec asks: say so
        // and wait for a change rather than retry the same write.
        Err(Error::SecretRefused { secret, reason }) => {
            let message = format!(
                "Secret {secret} cannot be written as the spec asks ({reason}); fix secretTemplate"
            );
            let readiness = Readiness::not_ready(reason::INVALID_SPEC, message);
            blocked(&app, &ctx, readiness, None, whole_seconds(Timestamp::now())).await
        }
        // Asked again without the caches, it reports the conflict.
        Err(Error::SecretTaken { .. }) => reconcile_app(app, ctx, true).await,
        other => other,
    }
}

/// Reconciles `app`; `fresh` when it (and its Secret) are read straight from
/// the API server rather than from the caches.
async fn reconcile_app(
    app: Arc<AppRegistration>,
    ctx: Arc<Context>,
    fresh: bool,
) -> Result<Action> {
    let now = whole_seconds(Timestamp::now());
    let namespace = app.namespace().ok_or(Error::MissingObjectKey(
        "AppRegistration",
        "metadata.namespace",
    ))?;
    if ctx.issuers.namespace_terminating(&namespace) {
        // Its Secret could not be written, and the app itself goes next.
        debug!("namespace is being deleted; nothing to do");
        return Ok(Action::await_change());
    }
    let uid = app
        .uid()
        .ok_or(Error::MissingObjectKey("AppRegistration", "metadata.uid"))?;
    let secret_name = app
        .spec
        .secret_name
        .clone()
        .unwrap_or_else(|| app.name_any());

    let issuer = match ctx
        .issuers
        .resolve(&app.spec.issuer_ref(), &namespace, &ctx.config.namespace)
        .map_err(super::issuer_ref::blocked_by)
    {
        Ok(issuer) => issuer,
        Err((readiness, retry)) => return blocked(&app, &ctx, readiness, retry, now).await,
    };
    let allowed_audiences = issuer.settings.allowed_audiences.as_deref();
    if let Some(audience) =
        IssuerSettings::first_unmatched(allowed_audiences, &app.spec.audiences, &namespace)
    {
        let message = format!(
            "audience {audience:?} is not allowed by {} {} (allowedAudiences: {})",
            issuer.kind.as_str(),
            issuer.name,
            allowed_audiences.unwrap_or_default().join(", ")
        );
        let readiness = Readiness::not_ready(reason::INVALID_SPEC, message);
        return blocked(&app, &ctx, readiness, None, now).await;
    }
    let rotation = match app.spec.client_secret_rotation.as_ref().map(|r| {
        Ok::<_, crate::api::DurationError>((r.interval.to_std()?, r.grace_period.to_std()?))
    }) {
        None => None,
        Some(Ok(rotation)) => Some(rotation),
        Some(Err(e)) => {
            let readiness = Readiness::not_ready(reason::INVALID_SPEC, e.to_string());
            return blocked(&app, &ctx, readiness, None, now).await;
        }
    };

    let state = if fresh {
        SecretState::fetch(&ctx, &namespace, &secret_name, &uid).await?
    } else {
        SecretState::observe(&ctx, &namespace, &secret_name, &uid).await?
    };
    let meta = match &state {
        SecretState::Foreign => {
            let message = format!(
                "Secret {secret_name} exists and is not owned by this AppRegistration; it was left untouched. Delete it, or set spec.secretName to another name"
            );
            let readiness = Readiness::not_ready(reason::SECRET_CONFLICT, message);
            return blocked(&app, &ctx, readiness, Some(Duration::from_secs(300)), now).await;
        }
        SecretState::Ours(meta) => Some(meta.as_ref()),
        SecretState::Absent => None,
    };
    let recorded = app.status.as_ref().and_then(RecordedSecret::from_status);
    let settings_hash = settings_hash(&app, &issuer, &ctx.config.public_url);
    // The Secret still holds the recorded secret, untouched by anyone else.
    let held = recorded.clone().filter(|r| {
        meta.is_some_and(|m| {
            data_is_intact(m, data::ALL)
                && annotation_of(m, annotation::SECRET_HASH) == Some(r.hash.as_str())
        })
    });

    if meta.is_some() && held.is_none() && !fresh {
        // Someone changed the Secret, or a cache lags behind our own last
        // writes (Secret, then status): the API server tells which.
        let api: Api<AppRegistration> = Api::namespaced(ctx.client.clone(), &namespace);
        return match api.get_opt(&app.name_any()).await? {
            Some(current) if current.uid() == app.uid() => {
                Box::pin(reconcile_app(Arc::new(current), ctx.clone(), true)).await
            }
            _ => Ok(Action::await_change()),
        };
    }
    let rotation_due = |r: &RecordedSecret| {
        rotation
            .is_some_and(|(interval, _)| r.rotated_at.checked_add(interval).is_ok_and(|t| t <= now))
    };
    let record = match held {
        Some(r) if !rotation_due(&r) => {
            if meta.and_then(|m| annotation_of(m, annotation::SETTINGS_HASH))
                != Some(settings_hash.as_str())
            {
                write_secret(&ctx, &app, &secret_name, &r, None, &issuer, &state).await?;
            }
            r
        }
        held => {
            // A scheduled rotation keeps the old secret working for the grace
            // period (and no longer); a deleted or edited Secret gets no grace.
            let grace = match (&held, rotation) {
                (Some(old), Some((_, grace))) => {
                    Some((old.hash.clone(), now.checked_add(grace).unwrap_or(now)))
                }
                _ => None,
            };
            let secret = new_opaque_token(CLIENT_SECRET_PREFIX);
            let record = RecordedSecret {
                hash: fingerprint(secret.expose_secret()),
                rotated_at: now,
                previous: grace,
            };
            write_secret(
                &ctx,
                &app,
                &secret_name,
                &record,
                Some(secret.expose_secret()),
                &issuer,
                &state,
            )
            .await?;
            let (event, note) = match (&held, &recorded) {
                (None, None) => (
                    "Registered",
                    format!("Client {uid} registered; its secret is in Secret {secret_name}"),
                ),
                (None, Some(_)) => (
                    "SecretReplaced",
                    format!("Secret {secret_name} was deleted or edited: a new client secret was issued and the old one no longer works"),
                ),
                (Some(_), _) => (
                    "SecretRotated",
                    "The client secret was rotated; the previous one works until its grace period ends".to_string(),
                ),
            };
            info!(client_id = %uid, event, "client secret issued");
            ctx.publish(app.as_ref(), EventType::Normal, event, note)
                .await;
            record
        }
    };

    let live_previous = record.previous.clone().filter(|(_, until)| *until > now);
    // A rotated secret stays "rotated" after its grace period ends, until
    // the secret is replaced.
    let was_rotated = recorded.as_ref() == Some(&record)
        && ready_condition(&app.status.clone().unwrap_or_default().conditions)
            .is_some_and(|c| c.reason == reason::SECRET_ROTATED);
    let readiness = if record.previous.is_some() || was_rotated {
        Readiness::ready(
            reason::SECRET_ROTATED,
            format!("the client secret was rotated at {}", record.rotated_at),
        )
    } else {
        Readiness::ready(reason::REGISTERED, format!("client {uid} registered"))
    };
    let current = app.status.clone().unwrap_or_default();
    let generation = app.meta().generation;
    let desired = AppRegistrationStatus {
        conditions: with_ready(&current.conditions, &readiness, generation, now),
        observed_generation: generation,
        client_id: Some(uid.clone()),
        client_secret_hash: Some(record.hash.clone()),
        secret_rotated_at: Some(Time(record.rotated_at)),
        previous_client_secret_hash: live_previous.as_ref().map(|(h, _)| h.clone()),
        previous_client_secret_expires_at: live_previous.as_ref().map(|(_, t)| Time(*t)),
    };
    write_status(&app, &ctx, &current, desired).await?;
    let next_chain_expiry = prune_expired_chains(&ctx, &uid, now).await?;

    let next = [
        rotation.and_then(|(interval, _)| record.rotated_at.checked_add(interval).ok()),
        live_previous.map(|(_, until)| until),
        next_chain_expiry,
    ]
    .into_iter()
    .flatten()
    .min();
    Ok(match next {
        Some(at) => Action::requeue(Duration::from_secs(
            (at.as_second() - now.as_second()).max(1) as u64,
        )),
        None => Action::await_change(),
    })
}

/// Hash of what the Secret's non-secret keys and metadata are made from.
fn settings_hash(app: &AppRegistration, issuer: &ResolvedIssuer, public_url: &str) -> String {
    fingerprint(
        &json!({
            "issuer": issuer.settings.issuer_url,
            "tokenURL": token_url(public_url),
            "template": app.spec.secret_template,
        })
        .to_string(),
    )
}

async fn write_secret(
    ctx: &Context,
    app: &AppRegistration,
    name: &str,
    record: &RecordedSecret,
    client_secret: Option<&str>,
    issuer: &ResolvedIssuer,
    state: &SecretState,
) -> Result<()> {
    let namespace = app.namespace().unwrap_or_default();
    let secret_value = match client_secret {
        Some(value) => ByteString(value.as_bytes().to_vec()),
        None => Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
            .get(name)
            .await?
            .data
            .and_then(|mut d| d.remove(data::CLIENT_SECRET))
            .unwrap_or_default(),
    };
    let text = |s: &str| ByteString(s.as_bytes().to_vec());
    let template = app.spec.secret_template.clone().unwrap_or_default();
    let mut labels = template.labels.unwrap_or_default();
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    labels.insert(APP_LABEL.into(), app.name_any());
    let mut annotations = template.annotations.unwrap_or_default();
    annotations.extend(record.annotations(&settings_hash(app, issuer, &ctx.config.public_url)));
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![
                controller_reference(app)
                    .ok_or(Error::MissingObjectKey("AppRegistration", "metadata"))?,
            ]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (data::CLIENT_ID.into(), text(&app.uid().unwrap_or_default())),
            (data::CLIENT_SECRET.into(), secret_value),
            (
                data::TOKEN_URL.into(),
                text(&token_url(&ctx.config.public_url)),
            ),
            (data::ISSUER.into(), text(&issuer.settings.issuer_url)),
        ])),
        ..Secret::default()
    };
    put(ctx, secret, state).await
}

async fn blocked(
    app: &AppRegistration,
    ctx: &Context,
    readiness: Readiness,
    retry: Option<Duration>,
    now: Timestamp,
) -> Result<Action> {
    let current = app.status.clone().unwrap_or_default();
    let previous = ready_condition(&current.conditions).cloned();
    let generation = app.meta().generation;
    let desired = AppRegistrationStatus {
        conditions: with_ready(&current.conditions, &readiness, generation, now),
        observed_generation: generation,
        ..current.clone()
    };
    write_status(app, ctx, &current, desired).await?;
    if previous.is_none_or(|c| c.reason != readiness.reason || c.message != readiness.message) {
        ctx.publish(app, EventType::Warning, readiness.reason, readiness.message)
            .await;
    }
    Ok(retry.map_or_else(Action::await_change, Action::requeue))
}

async fn write_status(
    app: &AppRegistration,
    ctx: &Context,
    current: &AppRegistrationStatus,
    desired: AppRegistrationStatus,
) -> Result<()> {
    if app.status.is_some() && *current == desired {
        return Ok(());
    }
    let api: Api<AppRegistration> =
        Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": AppRegistration::api_version(&()),
        "kind": AppRegistration::kind(&()),
        "status": desired,
    });
    api.patch_status(
        &app.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}
