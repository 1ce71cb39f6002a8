//! Patches of one object whatever its scope: kube's `Api` is typed by scope
//! (namespaced or cluster-wide), and the status kit and the finalizers work
//! on AccessTokens and ClusterTokenIssuers alike.

use kube::{
    Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::Request,
};
use serde::{Serialize, de::DeserializeOwned};

use super::Context;

/// Patches `object`, or its `subresource` (e.g. `status`), and returns what
/// the API server stored.
pub async fn patch_object<K, P>(
    ctx: &Context,
    object: &K,
    subresource: Option<&str>,
    params: &PatchParams,
    patch: &Patch<P>,
) -> kube::Result<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + std::fmt::Debug,
    P: Serialize + std::fmt::Debug,
{
    let request = Request::new(K::url_path(&(), object.namespace().as_deref()));
    let name = object.name_any();
    let request = match subresource {
        Some(subresource) => request.patch_subresource(subresource, &name, params, patch),
        None => request.patch(&name, params, patch),
    }
    .map_err(kube::Error::BuildRequest)?;
    let stored = ctx.client.request::<K>(request).await?;
    ctx.own_writes.wrote(&stored);
    Ok(stored)
}
