//! The reconcilers, one per kind, and what they share.

pub mod access_token;
pub mod app_registration;
mod conditions;
mod context;
mod error;
pub mod issuer;
pub mod issuer_ref;
mod managed_secret;
pub mod refresh_chains;
pub mod revocation;

pub use context::{Config, Context};
pub use error::{Error, Result};

use std::{
    future::Future,
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{Client, runtime::controller::Action};
use tracing::{info, warn};

/// The field manager of every write the operator makes.
pub const MANAGER: &str = "tokensmith";
/// Holds an AccessToken until its token is revoked.
pub const FINALIZER: &str = "tokensmith.dev/revoke";
/// Marks what the operator created; watches of Secrets select on it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "tokensmith");

/// How long running reconciles may take to finish once shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Reconciles of one kind running at once: bounds the load on the API server
/// when thousands of tokens need work together.
pub const CONCURRENCY: u16 = 32;

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

/// Runs every controller until `shutdown` completes.
pub async fn run(
    client: Client,
    config: Config,
    metrics: std::sync::Arc<crate::telemetry::Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let (ctx, triggers, watches) = Context::start(client, config, metrics);
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    info!(namespace = %ctx.config.namespace, "controllers starting");
    let token_issuers =
        issuer::controller::<crate::api::TokenIssuer>(ctx.clone(), shutdown.clone());
    let cluster_issuers =
        issuer::controller::<crate::api::ClusterTokenIssuer>(ctx.clone(), shutdown.clone());
    let access_tokens = access_token::controller(ctx.clone(), triggers, shutdown.clone());
    let apps = app_registration::controller(ctx.clone(), shutdown.clone());
    // Reconciles are idempotent, so one cut short by the grace period is
    // simply done again by the next instance.
    let grace_expired = async {
        shutdown.clone().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        _ = futures::future::join4(
            token_issuers.for_each(|_| async {}),
            cluster_issuers.for_each(|_| async {}),
            access_tokens.for_each(|_| async {}),
            apps.for_each(|_| async {}),
        ) => {}
        _ = watches => anyhow::bail!("the shared watches ended"),
        _ = grace_expired => warn!("reconciles still running after {SHUTDOWN_GRACE:?}; stopping anyway"),
    }
    info!("controllers stopped");
    Ok(())
}
