//! The reconcilers, one per kind, and what they share.

pub mod access_token;
pub mod app_registration;
mod conditions;
mod context;
pub mod default_issuer;
mod error;
mod events;
mod finalizer;
pub mod issuer;
mod managed_secret;
pub mod object_metrics;
mod own_writes;
mod pace;
mod patch;
pub mod refresh_chains;
pub mod revocation;
mod status;
mod sweeper;
mod undecodable;

pub use context::{Config, Context};
pub use error::{Error, Result, readable};
use pace::Pace;

use std::{
    future::Future,
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{
    Client, Resource,
    runtime::{
        Controller,
        controller::{self, Action},
        reflector::ObjectRef,
        watcher,
    },
};
use tracing::{debug, info, warn};

pub use crate::cluster::labels::{FINALIZER, MANAGED_BY, MANAGER};

/// How long running reconciles may take to finish once shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Reconciles of one kind running at once: bounds the load on the API server
/// when thousands of tokens need work together.
pub const CONCURRENCY: u16 = 32;
/// How soon a reconcile that found the caches behind the operator's own
/// last write looks again: the write's echo comes within milliseconds.
pub const ECHO_WAIT: Duration = Duration::from_millis(200);

/// Runs `controller` the way every controller here runs: at most
/// [`CONCURRENCY`] reconciles at once, stopping on `shutdown`, each reconcile
/// counted in the metrics as `kind` and told to `pace`, a failed one retried
/// after `backoff` (see [`retry_policy`]), and the outcomes logged.
fn run_controller<K, F>(
    controller: Controller<K>,
    pace: Pace<K>,
    ctx: std::sync::Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    kind: &'static str,
    reconcile: fn(std::sync::Arc<K>, std::sync::Arc<Context>) -> F,
    backoff: Duration,
) -> impl futures::Stream<Item = ()>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    F: Future<Output = Result<Action>> + Send + 'static,
{
    controller
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(shutdown)
        .run(
            move |object, ctx| async move { measured(&ctx.clone(), kind, reconcile(object, ctx)).await },
            move |object, error, _| retry_policy(object.as_ref(), error, backoff),
            ctx,
        )
        .map(move |outcome| {
            if let Some((namespace, name)) = reconciled(&outcome)
                && let Some(done) = pace.ended(namespace, name)
            {
                info!(
                    kind,
                    given = done.given,
                    seconds = done.took.as_secs_f64(),
                    "looked at every object of the kind (at start, or after a relist)"
                );
            }
            log_outcome(outcome)
        })
}

/// Runs a reconcile of `kind` and counts it in the metrics.
async fn measured(
    ctx: &Context,
    kind: &'static str,
    reconcile: impl Future<Output = Result<Action>>,
) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile.await;
    ctx.metrics
        .reconciled(kind, result.is_ok(), started.elapsed());
    result
}

/// What to do after a failed reconcile of `object`: retry after `backoff`,
/// unless the write was refused because the namespace is being deleted, in
/// which case the object's own deletion is the next thing to handle.
fn retry_policy<K: Resource<DynamicType = ()>>(
    object: &K,
    error: &Error,
    backoff: Duration,
) -> Action {
    let kind = K::kind(&());
    let (namespace, name) = (
        object.meta().namespace.as_deref(),
        object.meta().name.as_deref(),
    );
    if error.is_namespace_terminating() {
        debug!(%kind, namespace, name, %error, "namespace is being deleted; waiting for the deletion");
        return Action::await_change();
    }
    warn!(%kind, namespace, name, %error, "will retry");
    Action::requeue(backoff)
}

/// The namespace and name of the object a controller's reconcile (or its
/// attempt) was about.
fn reconciled<K: Resource<DynamicType = ()>>(
    outcome: &Result<(ObjectRef<K>, Action), controller::Error<Error, watcher::Error>>,
) -> Option<(Option<&str>, &str)> {
    match outcome {
        Ok((object, _)) => Some((object.namespace.as_deref(), &object.name)),
        Err(
            controller::Error::ReconcilerFailed(_, object)
            | controller::Error::ObjectNotFound(object),
        ) => Some((object.namespace.as_deref(), &object.name)),
        Err(_) => None,
    }
}

/// Logs what a controller's stream reports. Failed reconciles are logged by
/// [`retry_policy`] with their object; an object deleted before its turn
/// came is routine.
fn log_outcome<K: Resource<DynamicType = ()>>(
    outcome: Result<(ObjectRef<K>, Action), controller::Error<Error, watcher::Error>>,
) {
    match outcome {
        Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
        Err(controller::Error::ObjectNotFound(object)) => {
            debug!(%object, "deleted before its reconcile ran");
        }
        Err(error) => warn!(kind = %K::kind(&()), %error, "controller failed"),
    }
}

/// Runs every controller until `shutdown` completes, over the process's
/// shared `watches` and a watch of the managed Secrets' metadata that only
/// the leader keeps.
pub async fn run(
    client: Client,
    config: Config,
    metrics: std::sync::Arc<crate::telemetry::Metrics>,
    watches: crate::cluster::Watches,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let (managed_secrets, pending) =
        crate::cluster::watches::managed_secrets(&client, access_token::leave_out_of_cache);
    let mut managed_watch = std::pin::pin!(pending.run());
    let ctx = Context::new(client, config, metrics, &watches, &managed_secrets);
    // Decisions are only made on a full view: once here, not per reconcile.
    tokio::select! {
        listed = async { watches.listed().await && managed_secrets.listed().await } => {
            if !listed {
                anyhow::bail!("the watches stopped before their first list");
            }
        }
        _ = &mut managed_watch => anyhow::bail!("the watch of managed Secrets ended"),
        _ = shutdown.clone() => return Ok(()),
    }
    if let Some(issuer) = &ctx.config.default_issuer {
        default_issuer::keep(&ctx, issuer).await;
    }
    info!(namespace = %ctx.config.namespace, "controllers starting");
    let token_issuers =
        issuer::controller::<crate::api::TokenIssuer>(ctx.clone(), &watches, shutdown.clone());
    let cluster_issuers = issuer::controller::<crate::api::ClusterTokenIssuer>(
        ctx.clone(),
        &watches,
        shutdown.clone(),
    );
    let access_tokens =
        access_token::controller(ctx.clone(), &watches, &managed_secrets, shutdown.clone());
    let apps =
        app_registration::controller(ctx.clone(), &watches, &managed_secrets, shutdown.clone());
    let sweeper = futures::future::join(
        sweeper::run(ctx.clone(), shutdown.clone()),
        undecodable::run(ctx.clone(), watches.clone(), shutdown.clone()),
    );
    // Reconciles are idempotent, so one cut short by the grace period is
    // simply done again by the next instance.
    let grace_expired = async {
        shutdown.clone().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        _ = futures::future::join5(
            token_issuers.for_each(|_| async {}),
            cluster_issuers.for_each(|_| async {}),
            access_tokens.for_each(|_| async {}),
            apps.for_each(|_| async {}),
            sweeper,
        ) => {}
        _ = managed_watch => anyhow::bail!("the watch of managed Secrets ended"),
        _ = grace_expired => warn!("reconciles still running after {SHUTDOWN_GRACE:?}; stopping anyway"),
    }
    info!("controllers stopped");
    Ok(())
}
