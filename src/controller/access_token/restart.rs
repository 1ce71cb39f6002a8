//! Restarting the workloads of `rolloutRestartTargets` after a rotation, the
//! way `kubectl rollout restart` does, but only those that allow it: a
//! tenant who may not patch a Deployment must not be able to restart it
//! through an AccessToken (the operator would be a confused deputy). The
//! workload opts in by naming the AccessToken in an annotation.

use std::fmt::Debug;

use k8s_openapi::{
    api::apps::v1::{DaemonSet, Deployment, StatefulSet},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams},
};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::{
    api::{RolloutRestartTarget, WorkloadKind},
    controller::{MANAGER, conditions::Readiness, readable},
};

/// The annotation on a workload that lets AccessTokens restart it: their
/// names, separated by commas.
pub const RESTART_ALLOWED_ANNOTATION: &str = "tokensmith.dev/restart-allowed-by";
/// The condition reporting the last rotation's restarts.
pub const CONDITION: &str = "RolloutRestart";

/// Whether the annotation value `allowed` names the AccessToken `token`.
pub fn allows(allowed: Option<&str>, token: &str) -> bool {
    allowed
        .into_iter()
        .flat_map(|v| v.split(','))
        .any(|name| name.trim() == token)
}

/// What became of one restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Restarted,
    /// The workload does not name the AccessToken in its annotation.
    NotAllowed,
    Missing,
    Failed(String),
}

/// Restarts `target` for the AccessToken `token` in `namespace`, if the
/// workload allows it. The patch carries the resourceVersion the permission
/// was read at, so a permission withdrawn meanwhile is honoured.
pub async fn restart(
    client: &Client,
    namespace: &str,
    token: &str,
    target: &RolloutRestartTarget,
    now: Timestamp,
) -> Outcome {
    match target.kind {
        WorkloadKind::Deployment => {
            restart_one::<Deployment>(client, namespace, token, &target.name, now).await
        }
        WorkloadKind::StatefulSet => {
            restart_one::<StatefulSet>(client, namespace, token, &target.name, now).await
        }
        WorkloadKind::DaemonSet => {
            restart_one::<DaemonSet>(client, namespace, token, &target.name, now).await
        }
    }
}

async fn restart_one<K>(
    client: &Client,
    namespace: &str,
    token: &str,
    name: &str,
    now: Timestamp,
) -> Outcome
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let meta = match api.get_metadata_opt(name).await {
        Ok(Some(found)) => found.metadata,
        Ok(None) => return Outcome::Missing,
        Err(error) => return Outcome::Failed(readable(&error)),
    };
    let allowed = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESTART_ALLOWED_ANNOTATION))
        .map(String::as_str);
    if !allows(allowed, token) {
        return Outcome::NotAllowed;
    }
    let patch = json!({
        "metadata": { "resourceVersion": meta.resource_version },
        "spec": { "template": { "metadata": { "annotations": {
            "tokensmith.dev/restartedAt": now.to_string()
        } } } },
    });
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    };
    match api.patch(name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => Outcome::Restarted,
        Err(kube::Error::Api(status)) if status.code == 404 => Outcome::Missing,
        Err(error) => Outcome::Failed(readable(&error)),
    }
}

/// The condition and, for anything not restarted, the warning to publish,
/// for the outcomes of one rotation's restarts.
pub fn report(
    token: &str,
    outcomes: &[(&RolloutRestartTarget, Outcome)],
) -> (Readiness, Option<String>) {
    let problems: Vec<String> = outcomes
        .iter()
        .filter_map(|(target, outcome)| {
            let what = format!("{:?} {}", target.kind, target.name);
            match outcome {
                Outcome::Restarted => None,
                Outcome::NotAllowed => Some(format!(
                    "{what} was not restarted: it does not name AccessToken {token} in its annotation {RESTART_ALLOWED_ANNOTATION}"
                )),
                Outcome::Missing => Some(format!("{what} was not found")),
                Outcome::Failed(error) => Some(format!("{what} could not be restarted: {error}")),
            }
        })
        .collect();
    if problems.is_empty() {
        let names: Vec<String> = outcomes.iter().map(|(t, _)| t.name.clone()).collect();
        let message = format!("restarted after the rotation: {}", names.join(", "));
        return (Readiness::ready("Restarted", message), None);
    }
    let reason = if outcomes.iter().any(|(_, o)| *o == Outcome::NotAllowed) {
        "NotAllowed"
    } else {
        "RestartFailed"
    };
    let message = problems.join("; ");
    (Readiness::not_ready(reason, message.clone()), Some(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_names_the_tokens_that_may_restart_it() {
        let cases = [
            (None, "ci", false),
            (Some(""), "ci", false),
            (Some("ci"), "ci", true),
            (Some("web, ci"), "ci", true),
            (Some("ci-other"), "ci", false),
            (Some("*"), "ci", false),
        ];
        for (annotation, token, allowed) in cases {
            assert_eq!(
                allows(annotation, token),
                allowed,
                "{annotation:?} / {token}"
            );
        }
    }

    #[test]
    fn the_report_says_what_was_not_restarted_and_why() {
        let target = |name: &str| RolloutRestartTarget {
            kind: WorkloadKind::Deployment,
            name: name.into(),
        };
        let (a, b) = (target("a"), target("b"));
        let (all_done, warning) = report("ci", &[(&a, Outcome::Restarted)]);
        assert!(all_done.ready && warning.is_none());
        let (refused, warning) =
            report("ci", &[(&a, Outcome::Restarted), (&b, Outcome::NotAllowed)]);
        assert_eq!((refused.ready, refused.reason), (false, "NotAllowed"));
        assert!(warning.unwrap().contains("Deployment b was not restarted"));
    }
}
