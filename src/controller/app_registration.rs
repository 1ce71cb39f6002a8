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
    runtime::{Controller, controller::Action, events::EventType, reflector::ObjectRef, watcher},
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
    api::{AppRegistration, AppRegistrationStatus},
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

/// Annotations recording what the Secret holds, so the status can always be
/// derived from the Secret's metadata.
mod annotation {
    pub const SECRET_HASH: &str = "tokensmith.dev/client-secret-hash";
    pub const ROTATED_AT: &str = "tokensmith.dev/secret-rotated-at";
    pub const PREVIOUS_HASH: &str = "tokensmith.dev/previous-client-secret-hash";
    pub const PREVIOUS_EXPIRES_AT: &str = "tokensmith.dev/previous-client-secret-expires-at";
    pub const SETTINGS_HASH: &str = "tokensmith.dev/settings-hash";
}

mod reason {
    pub const REGISTERED: &str = "Registered";
    pub const SECRET_ROTATED: &str = "SecretRotated";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
}

/// What the app's Secret holds, read from its annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RecordedSecret {
    hash: String,
    rotated_at: Timestamp,
    previous: Option<(String, Timestamp)>,
    settings_hash: Option<String>,
}

impl RecordedSecret {
    fn from_meta(meta: &ObjectMeta) -> Option<Self> {
        let a = meta.annotations.as_ref()?;
        let previous = match (
            a.get(annotation::PREVIOUS_HASH),
            a.get(annotation::PREVIOUS_EXPIRES_AT),
        ) {
            (Some(hash), Some(at)) => Some((hash.clone(), at.parse().ok()?)),
            _ => None,
        };
        Some(Self {
            hash: a.get(annotation::SECRET_HASH)?.clone(),
            rotated_at: a.get(annotation::ROTATED_AT)?.parse().ok()?,
            previous,
            settings_hash: a.get(annotation::SETTINGS_HASH).cloned(),
        })
    }

    fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([
            (annotation::SECRET_HASH.to_string(), self.hash.clone()),
            (
                annotation::ROTATED_AT.to_string(),
                self.rotated_at.to_string(),
            ),
        ]);
        if let Some((hash, until)) = &self.previous {
            a.insert(annotation::PREVIOUS_HASH.to_string(), hash.clone());
            a.insert(
                annotation::PREVIOUS_EXPIRES_AT.to_string(),
                until.to_string(),
            );
        }
        if let Some(hash) = &self.settings_hash {
            a.insert(annotation::SETTINGS_HASH.to_string(), hash.clone());
        }
        a
    }
}

/// The URL of the token endpoint that the operator's token service serves.
pub fn token_url(public_url: &str) -> String {
    format!("{}/oauth/token", public_url.trim_end_matches('/'))
}

pub fn controller(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = ()> {
    let secrets = Api::<PartialObjectMeta<Secret>>::all(ctx.client.clone());
    Controller::new(
        Api::<AppRegistration>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .owns(
        secrets.clone(),
        watcher::Config::default().labels(APP_LABEL),
    )
    // A new refresh chain is a new thing to prune once it expires.
    .watches(
        secrets,
        watcher::Config::default().labels(CHAIN_CLIENT_LABEL),
        |chain| {
            let namespace = chain.metadata.namespace.clone();
            chain
                .metadata
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .filter(|o| o.kind == AppRegistration::kind(&()))
                .map(move |o| {
                    ObjectRef::new(&o.name).within(namespace.as_deref().unwrap_or_default())
                })
        },
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

fn error_policy(app: Arc<AppRegistration>, error: &Error, _: Arc<Context>) -> Action {
    super::retry_policy(app.as_ref(), error, Duration::from_secs(10))
}

#[instrument(skip_all, fields(namespace = app.namespace(), name = %app.name_any()))]
async fn reconcile(app: Arc<AppRegistration>, ctx: Arc<Context>) -> Result<Action> {
    ctx.wait_until_ready().await?;
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

    let issuer =
        match ctx
            .issuers
            .resolve(&app.spec.issuer_ref(), &namespace, &ctx.config.namespace)
        {
            Ok(issuer) => issuer,
            Err((readiness, retry)) => return blocked(&app, &ctx, readiness, retry, now).await,
        };
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

    let state = SecretState::observe(&ctx, &namespace, &secret_name, &uid).await?;
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
    let recorded = meta
        .filter(|m| data_is_intact(m, data::ALL))
        .and_then(RecordedSecret::from_meta);
    let settings_hash = settings_hash(&app, &issuer, &ctx.config.public_url);

    let rotation_due = |r: &RecordedSecret| {
        rotation
            .is_some_and(|(interval, _)| r.rotated_at.checked_add(interval).is_ok_and(|t| t <= now))
    };
    let record = match recorded {
        Some(r) if !rotation_due(&r) => {
            if r.settings_hash.as_deref() != Some(settings_hash.as_str()) {
                let updated = RecordedSecret {
                    settings_hash: Some(settings_hash.clone()),
                    ..r.clone()
                };
                write_secret(&ctx, &app, &secret_name, &updated, None, &issuer, &state).await?;
                updated
            } else {
                r
            }
        }
        previous => {
            // A scheduled rotation keeps the old secret working for the grace
            // period; a deleted or edited Secret gets no grace.
            let grace = match (&previous, rotation) {
                (Some(old), Some((_, grace))) => Some((
                    old.hash.clone(),
                    old.rotated_at.max(now).checked_add(grace).unwrap_or(now),
                )),
                _ => None,
            };
            let secret = new_opaque_token(CLIENT_SECRET_PREFIX);
            let record = RecordedSecret {
                hash: fingerprint(secret.expose_secret()),
                rotated_at: now,
                previous: grace,
                settings_hash: Some(settings_hash.clone()),
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
            let (event, note) = match &previous {
                None if app.status.as_ref().and_then(|s| s.client_secret_hash.as_ref()).is_none() => {
                    ("Registered", format!("Client {uid} registered; its secret is in Secret {secret_name}"))
                }
                None => (
                    "SecretReplaced",
                    format!("Secret {secret_name} was deleted or edited: a new client secret was issued and the old one no longer works"),
                ),
                Some(_) => (
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
    // Derived from the Secret's record, not from the previous condition: a
    // reconcile that runs on a not-yet-updated cache must not undo the reason
    // the rotating reconcile wrote.
    let readiness = if record.previous.is_some() {
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
    let next_chain_expiry = prune_expired_chains(&ctx, &namespace, &uid, now).await?;

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
    annotations.extend(record.annotations());
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
