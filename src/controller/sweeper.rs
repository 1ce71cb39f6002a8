//! What the operator keeps in its own namespace for objects in other
//! namespaces cannot be owned by them (owner references do not cross
//! namespaces), so nothing deletes it with them: the sweeper does, every
//! [`SWEEP_INTERVAL`]. It deletes refresh chains whose app is gone or whose
//! refresh token has expired, and the keys of TokenIssuers whose finalizer
//! was removed by hand. Candidates come from the watched metadata; an app or
//! issuer that looks gone is asked of the API server before anything is
//! deleted, so a cache that lags never costs a live chain or key.

use std::{future::Future, time::Duration};

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{Api, ResourceExt, api::ObjectMeta};
use tracing::{info, warn};

use super::{
    Context, Result,
    issuer::{ISSUER_LABEL, ISSUER_NAMESPACE_LABEL, ISSUER_UID_LABEL, delete_secret},
    refresh_chains::{
        CHAIN_APP_NAME_ANNOTATION, CHAIN_APP_NAMESPACE_ANNOTATION, CHAIN_CLIENT_LABEL, expiry_of,
    },
};
use crate::api::{AppRegistration, TokenIssuer};

/// How often the sweeper looks.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(15);

/// Sweeps until `shutdown` completes.
pub async fn run(ctx: std::sync::Arc<Context>, shutdown: impl Future<Output = ()>) {
    let sweeping = async {
        let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            ticks.tick().await;
            if let Err(error) = sweep(&ctx).await {
                warn!(%error, "sweep failed; will try again");
            }
        }
    };
    tokio::select! {
        _ = sweeping => {}
        _ = shutdown => {}
    }
}

/// One pass over the operator's namespace.
pub async fn sweep(ctx: &Context) -> Result<()> {
    let namespace = &ctx.config.namespace;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let now = Timestamp::now();
    for secret in ctx.managed_secrets.state() {
        if secret.namespace().as_ref() != Some(namespace) {
            continue;
        }
        let meta = &secret.to_meta();
        let orphan = match Kept::of(meta) {
            Some(Kept::Chain { client_id, app }) => {
                expiry_of(meta).is_none_or(|at| at <= now)
                    || !app_exists(ctx, app, client_id).await?
            }
            Some(Kept::Keys { issuer, uid }) => !issuer_exists(ctx, issuer, uid).await?,
            None => false,
        };
        if orphan {
            delete_secret(&secrets, meta).await?;
            info!(secret = %secret.name_any(), "swept: what it was kept for is gone");
        }
    }
    Ok(())
}

/// What a Secret in the operator's namespace is kept for.
enum Kept<'a> {
    /// A refresh chain of the app (namespace, name) with this client id.
    Chain {
        client_id: &'a str,
        app: Option<(&'a str, &'a str)>,
    },
    /// The keys of the TokenIssuer (namespace, name) with this UID.
    Keys {
        issuer: (&'a str, &'a str),
        uid: &'a str,
    },
}

impl<'a> Kept<'a> {
    fn of(meta: &'a ObjectMeta) -> Option<Self> {
        let labels = meta.labels.as_ref()?;
        if let Some(client_id) = labels.get(CHAIN_CLIENT_LABEL) {
            let annotations = meta.annotations.as_ref();
            let app = annotations.and_then(|a| {
                Some((
                    a.get(CHAIN_APP_NAMESPACE_ANNOTATION)?.as_str(),
                    a.get(CHAIN_APP_NAME_ANNOTATION)?.as_str(),
                ))
            });
            return Some(Self::Chain { client_id, app });
        }
        Some(Self::Keys {
            issuer: (
                labels.get(ISSUER_NAMESPACE_LABEL)?,
                labels.get(ISSUER_LABEL)?,
            ),
            uid: labels.get(ISSUER_UID_LABEL)?,
        })
    }
}

/// Whether the app of a chain still exists, by the watch or, when that
/// does not show it, by the API server.
async fn app_exists(ctx: &Context, app: Option<(&str, &str)>, client_id: &str) -> Result<bool> {
    if ctx
        .apps
        .state()
        .iter()
        .any(|a| a.uid().as_deref() == Some(client_id))
    {
        return Ok(true);
    }
    let Some((namespace, name)) = app else {
        // A chain that does not say where its app is cannot be checked: it
        // is left to expire.
        return Ok(true);
    };
    let found = Api::<AppRegistration>::namespaced(ctx.client.clone(), namespace)
        .get_metadata_opt(name)
        .await?;
    Ok(found.is_some_and(|a| a.metadata.uid.as_deref() == Some(client_id)))
}

/// Whether the TokenIssuer a key Secret belongs to still exists (same UID).
async fn issuer_exists(ctx: &Context, (namespace, name): (&str, &str), uid: &str) -> Result<bool> {
    let cached = ctx
        .issuers
        .token_issuers
        .get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace));
    if cached.is_some_and(|i| i.uid().as_deref() == Some(uid)) {
        return Ok(true);
    }
    let found = Api::<TokenIssuer>::namespaced(ctx.client.clone(), namespace)
        .get_metadata_opt(name)
        .await?;
    Ok(found.is_some_and(|i| i.metadata.uid.as_deref() == Some(uid)))
}
