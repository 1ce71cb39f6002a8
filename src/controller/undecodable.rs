//! Objects the watches could not decode (see `cluster::decoded`). They are
//! not in any cache, so no reconciler sees them; the leader still owes their
//! owners two things: a Ready=False condition saying why, and, once they are
//! deleted, the release of the operator's finalizer (their tokens are
//! already inactive: nothing records them any more).

use std::{collections::HashSet, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams},
    core::ApiResource,
};
use serde_json::json;
use tracing::{info, warn};

use super::{
    Context, FINALIZER,
    conditions::{Readiness, with_ready},
    issuer::KEYS_FINALIZER,
};
use crate::{
    api::reason::INVALID_SPEC,
    cluster::{Undecodable, Watched, Watches},
};

/// How often the sets of undecodable objects are looked at (in memory).
const INTERVAL: Duration = Duration::from_secs(2);

/// Attends to undecodable objects until `shutdown` completes.
pub async fn run(
    ctx: std::sync::Arc<Context>,
    watches: Watches,
    shutdown: impl Future<Output = ()>,
) {
    let attending = async {
        // (uid, generation) already given a condition: a status write does
        // not change the generation, so each version is reported once.
        let mut reported = HashSet::new();
        let mut ticks = tokio::time::interval(INTERVAL);
        loop {
            ticks.tick().await;
            attend(&ctx, &watches.access_tokens, Some(FINALIZER), &mut reported).await;
            attend(&ctx, &watches.apps, None, &mut reported).await;
            attend(
                &ctx,
                &watches.token_issuers,
                Some(KEYS_FINALIZER),
                &mut reported,
            )
            .await;
            attend(&ctx, &watches.cluster_issuers, None, &mut reported).await;
        }
    };
    tokio::select! {
        _ = attending => {}
        _ = shutdown => {}
    }
}

async fn attend<K>(
    ctx: &Context,
    watched: &Watched<K>,
    finalizer: Option<&str>,
    reported: &mut HashSet<(String, i64)>,
) where
    K: crate::cluster::watch::Object + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for object in watched.undecodable() {
        let meta = &object.meta;
        // Untyped: the object does not fit its Rust type, and answers to
        // these writes carry it whole.
        let resource = ApiResource::erase::<K>(&());
        let api: Api<DynamicObject> = match &meta.namespace {
            Some(namespace) => Api::namespaced_with(ctx.client.clone(), namespace, &resource),
            None => Api::all_with(ctx.client.clone(), &resource),
        };
        let name = meta.name.clone().unwrap_or_default();
        let result = if meta.deletion_timestamp.is_some() {
            match release(&api, &object, finalizer).await {
                Ok(true) => {
                    info!(kind = %K::kind(&()), namespace = meta.namespace.as_deref(), %name, "released the finalizer of an undecodable object being deleted");
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(error) => Err(error),
            }
        } else {
            let key = (
                meta.uid.clone().unwrap_or_default(),
                meta.generation.unwrap_or(0),
            );
            if reported.contains(&key) {
                continue;
            }
            let result = report(&api, &object).await;
            if result.is_ok() {
                reported.insert(key);
            }
            result
        };
        if let Err(error) = result {
            warn!(kind = %K::kind(&()), namespace = meta.namespace.as_deref(), %name, %error, "could not attend to an undecodable object");
        }
    }
}

/// Writes a Ready=False condition naming what cannot be read.
async fn report(api: &Api<DynamicObject>, object: &Undecodable) -> kube::Result<()> {
    let readiness = Readiness::not_ready(
        INVALID_SPEC,
        format!(
            "the operator cannot read this object ({}); it is ignored until that is fixed",
            object.reason
        ),
    );
    let conditions = with_ready(&[], &readiness, object.meta.generation, Timestamp::now());
    let name = object.meta.name.as_deref().unwrap_or_default();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": {
            "conditions": conditions,
            "observedGeneration": object.meta.generation,
        }})),
    )
    .await?;
    Ok(())
}

/// Removes the operator's finalizer from an undecodable object being
/// deleted; whether there was one to remove.
async fn release(
    api: &Api<DynamicObject>,
    object: &Undecodable,
    finalizer: Option<&str>,
) -> kube::Result<bool> {
    let Some(finalizer) = finalizer else {
        return Ok(false);
    };
    let finalizers = object.meta.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == finalizer) {
        return Ok(false);
    }
    let kept: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
    let name = object.meta.name.as_deref().unwrap_or_default();
    // The test makes the write fail if someone changed the list meanwhile.
    let patch = json!([
        { "op": "test", "path": "/metadata/finalizers", "value": finalizers },
        { "op": "replace", "path": "/metadata/finalizers", "value": kept },
    ]);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Json::<()>(serde_json::from_value(patch).expect("a JSON patch")),
    )
    .await?;
    Ok(true)
}
