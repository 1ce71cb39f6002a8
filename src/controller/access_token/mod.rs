//! Reconciles AccessTokens: mints a token into the Secret, keeps the status in
//! line with it, rotates or expires it on time, and revokes it on deletion.
//!
//! Each reconcile gathers what it needs to know (the `Reconciler`), lets the
//! pure [`decide::decide`] choose the next step, and carries it out; what it
//! writes follows from [`outcome`], and only what differs is written, so an
//! unchanged AccessToken costs no write at all, after a restart too.

mod adopt;
mod decide;
mod horizon;
mod outcome;
mod reconciler;
mod record;
mod restart;
mod secret;

pub use record::{data as secret_keys, default_subject, leave_out_of_cache, secret_name};

use std::{future::Future, sync::Arc, time::Duration};

use futures::Stream;
use kube::{
    ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use tracing::{debug, instrument};

use self::reconciler::Reconciler;
use super::{
    Context, Error, FINALIZER, Result,
    finalizer::{Event as FinalizerEvent, finalized},
    managed_secret::owners_of,
    pace::Pace,
};
use crate::{
    api::{AppRegistration, ClusterTokenIssuer, IssuerKind, TokenIssuer},
    cluster::{CachedSecret, CachedToken, Watched, Watches},
};

/// How many tokens replaced by rotation stay valid beside the current one;
/// older ones are revoked, so no object holds an unbounded number of live
/// tokens.
pub const MAX_PREVIOUS_TOKENS: usize = 10;

/// The AccessToken controller: triggered by its own kind, the Secrets it
/// owns, the issuers and the apps its tokens name.
pub fn controller(
    ctx: Arc<Context>,
    watches: &Watches,
    managed_secrets: &Watched<CachedSecret>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = ()> {
    let tokens = watches.access_tokens.store();
    let (for_token_issuers, for_cluster_issuers, for_apps) =
        (tokens.clone(), tokens.clone(), tokens.clone());
    // The echoes of its own writes (finalizer, Secret, status) trigger
    // nothing: the reconcile that wrote them decided on what they hold.
    let own = &ctx.own_writes;
    // Every token at start and after a relist, paced; then their changes.
    let pace = Pace::new(tokens.clone());
    let triggers = futures::stream::select(
        own.without_echoes(pace.changes(watches.access_tokens.subscribe())),
        pace.passes(),
    );
    let controller = Controller::for_shared_stream(triggers, tokens)
        // The Secrets it owns (kube's `owns` reads owners from the metadata,
        // which the Secret cache keeps compressed apart).
        .watches_shared_stream(
            own.without_echoes(pace.changes(managed_secrets.subscribe())),
            |secret| owners_of::<CachedToken>(&secret),
        )
        .watches_shared_stream(
            pace.changes(watches.token_issuers.subscribe()),
            move |issuer: Arc<TokenIssuer>| {
                tokens_using(
                    &for_token_issuers,
                    IssuerKind::TokenIssuer,
                    issuer.namespace(),
                    &issuer.name_any(),
                )
            },
        )
        .watches_shared_stream(
            pace.changes(watches.cluster_issuers.subscribe()),
            move |issuer: Arc<ClusterTokenIssuer>| {
                tokens_using(
                    &for_cluster_issuers,
                    IssuerKind::ClusterTokenIssuer,
                    None,
                    &issuer.name_any(),
                )
            },
        )
        .watches_shared_stream(
            pace.changes(watches.apps.subscribe()),
            move |app: Arc<AppRegistration>| tokens_of_app(&for_apps, &app),
        )
        .reconcile_on(horizon::sweep(watches.access_tokens.store()));
    super::run_controller(
        controller,
        pace,
        ctx,
        shutdown,
        "AccessToken",
        reconcile,
        Duration::from_secs(10),
    )
}

fn tokens_using(
    tokens: &Store<CachedToken>,
    kind: IssuerKind,
    namespace: Option<String>,
    name: &str,
) -> Vec<ObjectRef<CachedToken>> {
    tokens
        .state()
        .iter()
        .filter(|t| {
            let summary = t.summary();
            summary.issuer_kind == kind
                && *summary.issuer_name == *name
                && (namespace.is_none() || t.namespace() == namespace)
        })
        .map(|t| ObjectRef::from_obj(t.as_ref()))
        .collect()
}

fn tokens_of_app(
    tokens: &Store<CachedToken>,
    app: &AppRegistration,
) -> Vec<ObjectRef<CachedToken>> {
    let namespace = app.namespace();
    let name = app.name_any();
    tokens
        .state()
        .iter()
        .filter(|t| t.namespace() == namespace && t.summary().app.as_deref() == Some(&name))
        .map(|t| ObjectRef::from_obj(t.as_ref()))
        .collect()
}

#[instrument(skip_all, fields(kind = "AccessToken", namespace = cached.namespace(), name = %cached.name_any()))]
async fn reconcile(cached: Arc<CachedToken>, ctx: Arc<Context>) -> Result<Action> {
    let token = Arc::new(cached.token());
    if ctx.behind_own_writes(token.as_ref(), &secret_name(&token)) {
        debug!(
            "the caches have not caught up with this object's last write yet; looking again shortly"
        );
        return Ok(Action::requeue(super::ECHO_WAIT));
    }
    let action = finalized(&ctx, token, FINALIZER, |event| async {
        match event {
            FinalizerEvent::Apply(token) => {
                let reconciler = Reconciler::new(&token, &ctx)?;
                match reconciler.apply().await {
                    Err(Error::SecretRefused { secret, reason }) => {
                        reconciler.secret_refused(&secret, &reason).await
                    }
                    // Asked again without the caches, it reports the conflict.
                    Err(Error::SecretTaken { .. }) => reconciler.recheck().await,
                    other => other,
                }
            }
            FinalizerEvent::Cleanup(token) => Reconciler::new(&token, &ctx)?.cleanup().await,
        }
    })
    .await?;
    debug!(?action, "reconciled");
    Ok(action)
}
