//! Where the token service keeps refresh-token chains (one Secret per chain
//! in the app's namespace, owned by the AppRegistration), and the pruning of
//! chains nobody can use any more, which the AppRegistration reconciler does.

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{Api, ResourceExt};
use tracing::info;

use super::{Context, Result};

/// Label on chain Secrets: the client id (AppRegistration uid) they belong to.
pub const CHAIN_CLIENT_LABEL: &str = "tokensmith.dev/refresh-chain-of";
/// Annotation on chain Secrets: when the chain's current refresh token expires.
pub const CHAIN_EXPIRES_ANNOTATION: &str = "tokensmith.dev/expires-at";
/// The type of chain Secrets.
pub const CHAIN_SECRET_TYPE: &str = "tokensmith.dev/refresh-chain";

pub fn chain_secret_name(chain_id: &str) -> String {
    format!("tokensmith-refresh-{chain_id}")
}

/// Deletes the expired chains of client `client_id` in `namespace`; returns
/// when the next live one expires. Chain Secrets carry the managed-by label,
/// so their metadata is already in the shared store: no API read.
pub async fn prune_expired_chains(
    ctx: &Context,
    namespace: &str,
    client_id: &str,
    now: Timestamp,
) -> Result<Option<Timestamp>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let chains = ctx.managed_secrets.state().into_iter().filter(|s| {
        s.namespace().as_deref() == Some(namespace)
            && s.labels().get(CHAIN_CLIENT_LABEL).map(String::as_str) == Some(client_id)
    });
    let mut next = None;
    for chain in chains {
        let expires_at = chain
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CHAIN_EXPIRES_ANNOTATION))
            .and_then(|t| t.parse::<Timestamp>().ok());
        match expires_at {
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
