//! Reconciles AppRegistrations: a stable client id, a client secret in the
//! Secret (only its hash in the status), and scheduled secret rotation with a
//! grace period during which the previous secret still authenticates.
//!
//! Each reconcile gathers, lets the pure [`decide::decide`] choose, and acts.
//! Deleting an AppRegistration needs no finalizer: the token service treats
//! every token whose `client_id` names no existing app as inactive, and the
//! AccessToken reconciler revokes AccessTokens whose `appRef` is gone.

mod decide;
mod record;

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use k8s_openapi::{ByteString, api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        events::EventType,
        reflector::{ObjectRef, Store},
    },
};
use secrecy::{ExposeSecret, SecretString};
use tracing::{debug, info, instrument};

use self::{
    decide::{Decision, Observed, decide},
    record::{RecordedSecret, data, settings_hash, token_url},
};
use super::{
    Context, Error, Result,
    managed_secret::{OwnedSecret, SecretState, owners_of, put},
    pace::Pace,
    refresh_chains::{CHAIN_CLIENT_LABEL, prune_expired_chains},
    status::{Blocked, apply_status, report_blocked, requeue_at},
};
use crate::{
    api::{AppRegistration, ClusterTokenIssuer, Issuer, TokenIssuer, reason},
    cluster::{CachedSecret, Watched, Watches, issuers::ResolvedIssuer},
    token::{fingerprint, new_opaque_token, whole_seconds},
};

/// Label naming the AppRegistration a Secret belongs to.
pub const APP_LABEL: &str = "tokensmith.dev/app-registration";
/// Prefix of client secrets, so secret scanners recognise a leaked one.
pub const CLIENT_SECRET_PREFIX: &str = "tkcs_";

/// The AppRegistration controller: triggered by its own kind, the Secrets
/// it owns, its refresh chains and the issuers its apps name.
pub fn controller(
    ctx: Arc<Context>,
    watches: &Watches,
    managed_secrets: &Watched<CachedSecret>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = ()> {
    let apps = watches.apps.store();
    let operator_namespace = ctx.config.namespace.clone();
    let for_chains = apps.clone();
    let own = &ctx.own_writes;
    // Every app at start and after a relist, paced; then their changes.
    let pace = Pace::new(apps.clone());
    let triggers = futures::stream::select(
        own.without_echoes(pace.changes(watches.apps.subscribe())),
        pace.passes(),
    );
    let controller = Controller::for_shared_stream(triggers, apps.clone())
        // The Secrets it owns (kube's `owns` reads owners from the
        // metadata, which the Secret cache keeps compressed apart).
        .watches_shared_stream(
            own.without_echoes(pace.changes(managed_secrets.subscribe())),
            |secret| owners_of::<AppRegistration>(&secret),
        )
        // A new refresh chain is a new thing to prune once it expires: its app
        // (named by client id) looks at it.
        .reconcile_on(pace.changes(managed_secrets.subscribe()).flat_map(
            move |chain: Arc<CachedSecret>| {
                futures::stream::iter(apps_of_chain(&for_chains, &operator_namespace, &chain))
            },
        ))
        // An app waiting for its issuer (created with it, say) goes on as soon
        // as the issuer is ready, not at its next retry.
        .watches_shared_stream(
            pace.changes(watches.cluster_issuers.subscribe()),
            apps_of::<ClusterTokenIssuer>(apps.clone()),
        )
        .watches_shared_stream(
            pace.changes(watches.token_issuers.subscribe()),
            apps_of::<TokenIssuer>(apps),
        );
    super::run_controller(
        controller,
        pace,
        ctx,
        shutdown,
        "AppRegistration",
        reconcile,
        Duration::from_secs(10),
    )
}

/// The app a refresh chain belongs to (named by client id, its UID): a new
/// chain is a new thing for it to prune once it expires.
fn apps_of_chain(
    apps: &Store<AppRegistration>,
    operator_namespace: &str,
    chain: &CachedSecret,
) -> Vec<ObjectRef<AppRegistration>> {
    if chain.namespace().as_deref() != Some(operator_namespace) {
        return Vec::new();
    }
    let Some(client_id) = chain.label(CHAIN_CLIENT_LABEL) else {
        return Vec::new();
    };
    apps.state()
        .iter()
        .filter(|a| a.uid().as_deref() == Some(client_id))
        .map(|a| ObjectRef::from_obj(a.as_ref()))
        .collect()
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

/// The Secret that holds `app`'s client credentials.
fn secret_name(app: &AppRegistration) -> String {
    app.spec
        .secret_name
        .clone()
        .unwrap_or_else(|| app.name_any())
}

#[instrument(skip_all, fields(kind = "AppRegistration", namespace = app.namespace(), name = %app.name_any()))]
async fn reconcile(app: Arc<AppRegistration>, ctx: Arc<Context>) -> Result<Action> {
    if ctx.behind_own_writes(app.as_ref(), &secret_name(&app)) {
        return Ok(Action::requeue(super::ECHO_WAIT));
    }
    match reconcile_app(app.clone(), ctx.clone(), false).await {
        // The API server will not store the Secret as the spec asks: say so
        // and wait for a change rather than retry the same write.
        Err(Error::SecretRefused { secret, reason }) => {
            let message = format!(
                "Secret {secret} cannot be written as the spec asks ({reason}); fix secretTemplate"
            );
            let blocked = Blocked::new(reason::INVALID_SPEC, message, None);
            report_blocked(&ctx, app.as_ref(), blocked, Timestamp::now()).await
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
    let uid = app
        .uid()
        .ok_or(Error::MissingObjectKey("AppRegistration", "metadata.uid"))?;
    let secret_name = secret_name(&app);
    let state = if fresh {
        SecretState::fetch(&ctx, &namespace, &secret_name, &uid).await?
    } else {
        SecretState::observe(&ctx, &namespace, &secret_name, &uid).await?
    };
    let decision = decide(Observed {
        spec: &app.spec,
        namespace: &namespace,
        secret_name: &secret_name,
        status: app.status.as_ref(),
        namespace_terminating: ctx.issuers.namespace_terminating(&namespace),
        issuer: ctx
            .issuers
            .resolve(&app.spec.issuer_ref(), &namespace, &ctx.config.namespace),
        secret: record::seen(&state),
        public_url: &ctx.config.public_url,
        fresh,
        now,
    });
    let (record, rotation) = match decision {
        Decision::Wait => {
            debug!("namespace is being deleted; nothing to do");
            return Ok(Action::await_change());
        }
        Decision::Blocked(blocked) => {
            return report_blocked(&ctx, app.as_ref(), blocked, now).await;
        }
        Decision::Recheck => {
            let api: Api<AppRegistration> = Api::namespaced(ctx.client.clone(), &namespace);
            return match api.get_opt(&app.name_any()).await? {
                Some(current) if current.uid() == app.uid() => {
                    Box::pin(reconcile_app(Arc::new(current), ctx.clone(), true)).await
                }
                _ => Ok(Action::await_change()),
            };
        }
        Decision::Keep {
            record,
            rewrite_secret,
            issuer,
            rotation,
        } => {
            if rewrite_secret {
                let writer = SecretWriter {
                    ctx: &ctx,
                    app: &app,
                    name: &secret_name,
                    issuer: &issuer,
                };
                writer.write(&record, None, &state).await?;
            }
            (record, rotation)
        }
        Decision::Issue {
            why,
            grace,
            issuer,
            rotation,
        } => {
            let secret = new_opaque_token(CLIENT_SECRET_PREFIX);
            let record = RecordedSecret {
                hash: fingerprint(secret.expose_secret()),
                rotated_at: now,
                previous: grace,
            };
            let writer = SecretWriter {
                ctx: &ctx,
                app: &app,
                name: &secret_name,
                issuer: &issuer,
            };
            writer.write(&record, Some(&secret), &state).await?;
            let (event, note) = why.event(&uid, &secret_name);
            info!(client_id = %uid, event, "client secret issued");
            ctx.publish(app.as_ref(), EventType::Normal, event, note)
                .await;
            (record, rotation)
        }
    };
    let status = decide::status(
        app.status.as_ref(),
        &record,
        &uid,
        app.meta().generation,
        now,
    );
    apply_status(&ctx, app.as_ref(), &status).await?;
    let next_chain_expiry = prune_expired_chains(&ctx, &uid, now).await?;
    Ok(requeue_at(
        decide::next_look(&record, rotation, next_chain_expiry, now),
        now,
    ))
}

/// Writes an app's Secret.
struct SecretWriter<'a> {
    ctx: &'a Context,
    app: &'a AppRegistration,
    name: &'a str,
    issuer: &'a ResolvedIssuer,
}

impl SecretWriter<'_> {
    /// Writes the Secret: `client_secret` when given, else the one it holds
    /// (read for this: Secret data is never cached).
    async fn write(
        &self,
        record: &RecordedSecret,
        client_secret: Option<&SecretString>,
        state: &SecretState,
    ) -> Result<()> {
        let (ctx, app) = (self.ctx, self.app);
        let namespace = app.namespace().unwrap_or_default();
        let secret_value = match client_secret {
            Some(value) => ByteString(value.expose_secret().as_bytes().to_vec()),
            None => Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
                .get(self.name)
                .await?
                .data
                .and_then(|mut d| d.remove(data::CLIENT_SECRET))
                .unwrap_or_default(),
        };
        let text = |s: &str| ByteString(s.as_bytes().to_vec());
        let settings = settings_hash(&app.spec, self.issuer, &ctx.config.public_url);
        let secret = OwnedSecret {
            name: self.name,
            namespace: &namespace,
            template: app.spec.secret_template.as_ref(),
            labels: BTreeMap::from([(APP_LABEL.to_string(), app.name_any())]),
            annotations: record.annotations(&settings),
            data: BTreeMap::from([
                (data::CLIENT_ID.into(), text(&app.uid().unwrap_or_default())),
                (data::CLIENT_SECRET.into(), secret_value),
                (
                    data::TOKEN_URL.into(),
                    text(&token_url(&ctx.config.public_url)),
                ),
                (data::ISSUER.into(), text(&self.issuer.settings.issuer_url)),
            ]),
        }
        .controlled_by(app)?;
        put(ctx, secret, state).await
    }
}
