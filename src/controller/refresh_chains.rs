//! The pruning of refresh chains nobody can use any more, which the
//! AppRegistration reconciler does (the chains are `cluster::refresh_chains`).

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{Api, ResourceExt};
use tracing::info;

use super::{Context, Result};
pub use crate::cluster::refresh_chains::*;

/// Deletes the expired chains of client `client_id`; returns when the next
/// live one expires. Chain Secrets carry the managed-by label, so their
/// metadata is already in the shared store: no API read. Chains of deleted
/// apps are the sweeper's.
pub async fn prune_expired_chains(
    ctx: &Context,
    client_id: &str,
    now: Timestamp,
) -> Result<Option<Timestamp>> {
    let namespace = &ctx.config.namespace;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let chains = ctx.managed_secrets.state().into_iter().filter(|s| {
        s.namespace().as_deref() == Some(namespace.as_str())
            && s.label(CHAIN_CLIENT_LABEL) == Some(client_id)
    });
    let mut next = None;
    for chain in chains {
        match expiry_of(&chain.to_meta()) {
            Some(at) if at > now => next = next.min(Some(at)).or(Some(at)),
            _ => {
                let name = chain.name_any();
                match secrets.delete(&name, &Default::default()).await {
                    Ok(_) => info!(chain = %name, "expired refresh chain deleted"),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(next)
}
