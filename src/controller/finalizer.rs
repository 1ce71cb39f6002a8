//! Finalizers, as kube's `finalizer` helper runs them but with three
//! differences: the finalizer is added by server-side apply under the
//! operator's field manager (so `managedFields` names who holds the object,
//! and another manager's apply cannot take it away); one already there
//! (given by the chart's admission policy as the object was created) is
//! taken hold of only where another applier could take it away
//! ([`finalizer_hold`]); and the reconcile goes on with the object the API
//! server returned rather than waiting for the watch to bring the change
//! back (one round trip less per new object).

use std::sync::Arc;

use kube::{
    Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use super::{Context, MANAGER, Result, patch::patch_object};
use crate::cluster::finalizer_hold;

/// What a reconcile is asked to do.
pub enum Event<K> {
    /// The object lives (and carries the finalizer).
    Apply(Arc<K>),
    /// The object is being deleted: clean up; the finalizer goes after.
    Cleanup(Arc<K>),
}

/// Runs `reconcile` on `object` with the finalizer `name` in place.
pub async fn finalized<K, Fut>(
    ctx: &Context,
    object: Arc<K>,
    name: &str,
    reconcile: impl FnOnce(Event<K>) -> Fut,
) -> Result<Action>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    Fut: Future<Output = Result<Action>>,
{
    let index = object.finalizers().iter().position(|f| f == name);
    let deleting = object.meta().deletion_timestamp.is_some();
    let exposed = finalizer_hold::exposed(object.meta(), name, MANAGER);
    match (index, deleting) {
        (Some(_), false) if !exposed => reconcile(Event::Apply(object)).await,
        (None, true) => Ok(Action::await_change()),
        (Some(index), true) => {
            let action = reconcile(Event::Cleanup(object.clone())).await?;
            // `test` first: the list may have changed since it was read, and
            // another controller's finalizer must never be removed.
            let path = format!("/metadata/finalizers/{index}");
            let patch = Patch::Json::<()>(
                serde_json::from_value(json!([
                    { "op": "test", "path": path, "value": name },
                    { "op": "remove", "path": path },
                ]))
                .expect("a valid JSON patch"),
            );
            match patch_object(ctx, object.as_ref(), None, &PatchParams::default(), &patch).await {
                Ok(_) => Ok(action),
                // Gone already: nothing holds it any more.
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
                Err(error) => Err(error.into()),
            }
        }
        // Missing, or there but not held by the operator while another
        // applier holds finalizers: applied under the operator's manager.
        (_, false) => {
            let body = json!({
                "apiVersion": K::api_version(&()),
                "kind": K::kind(&()),
                "metadata": { "name": object.name_any(), "finalizers": [name] },
            });
            let params = PatchParams::apply(MANAGER).force();
            match patch_object(ctx, object.as_ref(), None, &params, &Patch::Apply(&body)).await {
                Ok(updated) => reconcile(Event::Apply(Arc::new(updated))).await,
                // Deleted meanwhile: its deletion is the next thing to handle.
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
                Err(error) => Err(error.into()),
            }
        }
    }
}
