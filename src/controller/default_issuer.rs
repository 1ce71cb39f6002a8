//! The default ClusterTokenIssuer the operator keeps in place when given
//! one (`--default-issuer`, which the Helm chart sets from its
//! `defaultIssuer` values).
//!
//! The operator applies it rather than the chart rendering it: a chart that
//! installs the CRDs cannot also create an object of their kinds in the
//! same release (Helm maps every object before it applies any), and an
//! issuer the release does not own is not deleted by `helm uninstall`, so
//! the signing keys its live tokens need stay.

use std::path::Path;

use kube::{
    Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::ObjectRef,
};
use serde_json::json;
use tracing::{error, info};

use super::{Context, patch::patch_object, readable};
use crate::api::ClusterTokenIssuer;

/// The field manager of the default issuer's spec: not the reconcilers'
/// (`tokensmith`), so `managedFields` tell the seeded spec from the status.
pub const MANAGER: &str = "tokensmith-default-issuer";

/// Reads the ClusterTokenIssuer manifest at `path`.
pub fn load(path: &Path) -> anyhow::Result<ClusterTokenIssuer> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the default issuer {}: {e}", path.display()))?;
    let issuer: ClusterTokenIssuer = serde_yaml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a ClusterTokenIssuer manifest: {e}",
            path.display()
        )
    })?;
    if issuer
        .metadata
        .name
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        anyhow::bail!(
            "the default issuer in {} has no metadata.name",
            path.display()
        );
    }
    Ok(issuer)
}

/// Applies `issuer` unless the cluster holds it as it is already (a start
/// with nothing changed writes nothing). A refusal by the API server is
/// logged, not fatal: the other issuers and every token go on.
pub async fn keep(ctx: &Context, issuer: &ClusterTokenIssuer) {
    let name = issuer.name_any();
    let cached = ctx
        .issuers
        .cluster_issuers
        .get(&ObjectRef::<ClusterTokenIssuer>::new(&name));
    if cached.is_some_and(|cached| is_applied(&cached, issuer)) {
        return;
    }
    let body = json!({
        "apiVersion": ClusterTokenIssuer::api_version(&()),
        "kind": ClusterTokenIssuer::kind(&()),
        "metadata": {
            "name": name,
            "labels": issuer.labels(),
            "annotations": issuer.annotations(),
        },
        "spec": issuer.spec,
    });
    // Through the operator's one patch path, so the write is known as its
    // own when the watch brings it back.
    let params = PatchParams::apply(MANAGER).force();
    match patch_object(ctx, issuer, None, &params, &Patch::Apply(&body)).await {
        Ok(_) => info!(issuer = %name, "default ClusterTokenIssuer applied"),
        Err(e) => {
            error!(issuer = %name, error = %readable(&e), "could not apply the default ClusterTokenIssuer")
        }
    }
}

/// Whether `cached` holds the spec, labels and annotations of `desired`.
fn is_applied(cached: &ClusterTokenIssuer, desired: &ClusterTokenIssuer) -> bool {
    let holds = |have: &std::collections::BTreeMap<String, String>,
                 want: &std::collections::BTreeMap<String, String>| {
        want.iter().all(|(k, v)| have.get(k) == Some(v))
    };
    serde_json::to_value(&cached.spec).ok() == serde_json::to_value(&desired.spec).ok()
        && holds(cached.labels(), desired.labels())
        && holds(cached.annotations(), desired.annotations())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
apiVersion: tokensmith.dev/v1alpha1
kind: ClusterTokenIssuer
metadata:
  name: default
  labels:
    app.kubernetes.io/instance: ts
spec:
  issuerURL: https://tokensmith.tokensmith-system.svc/issuers/default
  algorithm: ES256
  maxLifetime: 720h
"#;

    fn write(text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "default-issuer-{}-{}.yaml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_manifest_loads_and_bad_ones_say_why() {
        let issuer = load(&write(MANIFEST)).unwrap();
        assert_eq!(issuer.name_any(), "default");
        let rows = [
            (
                "kind: ClusterTokenIssuer\nspec: {}\n",
                "not a ClusterTokenIssuer",
            ),
            (
                "metadata: {}\nspec:\n  issuerURL: https://x\n",
                "no metadata.name",
            ),
            ("[", "not a ClusterTokenIssuer"),
        ];
        for (text, says) in rows {
            let error = load(&write(text)).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
        let missing = load(Path::new("/nonexistent/issuer.yaml")).unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
    }

    #[test]
    fn only_a_different_spec_or_missing_metadata_is_applied_again() {
        let desired = load(&write(MANIFEST)).unwrap();
        let mut cached = desired.clone();
        cached.labels_mut().insert("other".into(), "kept".into());
        assert!(
            is_applied(&cached, &desired),
            "extra labels of others are fine"
        );
        let mut changed = desired.clone();
        changed.spec.settings.max_lifetime = None;
        assert!(!is_applied(&changed, &desired));
        let mut unlabelled = desired.clone();
        unlabelled.labels_mut().clear();
        assert!(!is_applied(&unlabelled, &desired));
    }
}
