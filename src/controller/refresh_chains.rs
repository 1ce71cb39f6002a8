//! Where the token service keeps refresh-token chains (one Secret per chain
//! in the operator's namespace, where no tenant can write: a chain says whose
//! identity its tokens carry), and the pruning of chains nobody can use any
//! more, which the AppRegistration reconciler does. A chain names its app by
//! client id (label); an owner reference cannot cross namespaces.

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

/// Annotations on chain Secrets: the namespace and name of the app, so that
/// the sweeper can ask the API server whether it still exists.
pub const CHAIN_APP_NAMESPACE_ANNOTATION: &str = "tokensmith.dev/app-namespace";
pub const CHAIN_APP_NAME_ANNOTATION: &str = "tokensmith.dev/app-name";

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
            && s.labels().get(CHAIN_CLIENT_LABEL).map(String::as_str) == Some(client_id)
    });
    let mut next = None;
    for chain in chains {
        match expiry_of(&chain.metadata) {
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

/// When the chain's current refresh token expires.
pub fn expiry_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<Timestamp> {
    meta.annotations
        .as_ref()?
        .get(CHAIN_EXPIRES_ANNOTATION)?
        .parse()
        .ok()
}
