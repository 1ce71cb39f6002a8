//! The reconcilers, one per kind, and what they share.

mod access_token;
mod conditions;
mod context;
mod error;
mod issuer;
mod managed_secret;
pub mod revocation;

pub use context::{Config, Context};
pub use error::{Error, Result};

use std::future::Future;

use futures::StreamExt;
use kube::Client;
use tracing::info;

/// The field manager of every write the operator makes.
pub const MANAGER: &str = "tokensmith";
/// Holds an AccessToken until its token is revoked.
pub const FINALIZER: &str = "tokensmith.dev/revoke";
/// Marks what the operator created; watches of Secrets select on it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "tokensmith");

/// Runs every controller until `shutdown` completes.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let (ctx, triggers, watches) = Context::start(client, config);
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    info!(namespace = %ctx.config.namespace, "controllers starting");
    let token_issuers =
        issuer::controller::<crate::api::TokenIssuer>(ctx.clone(), shutdown.clone());
    let cluster_issuers =
        issuer::controller::<crate::api::ClusterTokenIssuer>(ctx.clone(), shutdown.clone());
    let access_tokens = access_token::controller(ctx.clone(), triggers, shutdown.clone());
    tokio::select! {
        _ = futures::future::join3(
            token_issuers.for_each(|_| async {}),
            cluster_issuers.for_each(|_| async {}),
            access_tokens.for_each(|_| async {}),
        ) => {}
        _ = watches => anyhow::bail!("the shared watches ended"),
    }
    info!("controllers stopped");
    Ok(())
}
