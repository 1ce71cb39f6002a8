//! Where the token service keeps refresh-token chains (one Secret per chain
//! in the app's namespace, owned by the AppRegistration), and the pruning of
//! chains nobody can use any more, which the AppRegistration reconciler does.

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{Api, Client, api::ListParams, core::PartialObjectMeta};
use tracing::info;

use super::Result;

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
/// when the next live one expires. Reads metadata only.
pub async fn prune_expired_chains(
    client: &Client,
    namespace: &str,
    client_id: &str,
    now: Timestamp,
) -> Result<Option<Timestamp>> {
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let chains = api
        .list_metadata(&ListParams::default().labels(&format!("{CHAIN_CLIENT_LABEL}={client_id}")))
        .await?;
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
                let name = chain.metadata.name.unwrap_or_default();
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
