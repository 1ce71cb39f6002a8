//! The chart's finalizer policy (a MutatingAdmissionPolicy that gives every
//! new AccessToken the revocation finalizer), rendered by helm from the
//! chart and applied as an installed chart would have it.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{ControlPlane, render_chart, repo_root};

/// What the chart asks before it renders the policy.
pub const ADMISSION_POLICIES: &str = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy";

/// The policy and its binding in the cluster; deleted on drop.
pub struct FinalizerPolicy {
    cp: &'static ControlPlane,
    name: String,
    /// An AccessToken to create by dry run, to tell whether the API server
    /// applies the policy.
    probe: PathBuf,
}

/// Where a [`FinalizerPolicy`] applies.
pub enum Bound<'a> {
    /// Every namespace, as the chart binds it.
    Everywhere,
    /// This namespace only: tests that share a control plane must not give
    /// the finalizer to each other's tokens.
    To(&'a str),
}

/// Whether `cp` serves MutatingAdmissionPolicies (Kubernetes 1.36 and
/// later; the suite may run on an older one).
pub fn served(cp: &ControlPlane) -> bool {
    cp.kubectl_output(&["get", "--raw", "/apis/admissionregistration.k8s.io/v1"])
        .stdout
        .windows(br#""mutatingadmissionpolicies""#.len())
        .any(|w| w == br#""mutatingadmissionpolicies""#)
}

impl FinalizerPolicy {
    /// Renders the chart's policy for the release `release`, applies it
    /// `bound` as asked, and waits until the API server applies it to an
    /// AccessToken created (dry run) in `probe_namespace`. `None` where the
    /// API server does not serve such policies.
    pub fn apply(
        cp: &'static ControlPlane,
        release: &str,
        bound: Bound,
        probe_namespace: &str,
    ) -> Option<Self> {
        if !served(cp) {
            return None;
        }
        let rendered = render_chart(
            release,
            &["finalizerPolicy.enabled=true"],
            &[ADMISSION_POLICIES],
        );
        let mut documents: Vec<Value> = serde_yaml::Deserializer::from_str(&rendered)
            .map(|doc| Value::deserialize(doc).unwrap())
            .filter(|doc| {
                doc["kind"]
                    .as_str()
                    .is_some_and(|kind| kind.starts_with("MutatingAdmissionPolicy"))
            })
            .collect();
        let name = documents
            .iter()
            .find(|d| d["kind"] == "MutatingAdmissionPolicy")
            .and_then(|d| d["metadata"]["name"].as_str())
            .expect("the chart renders the policy")
            .to_string();
        if let Bound::To(namespace) = bound {
            for binding in documents
                .iter_mut()
                .filter(|d| d["kind"] == "MutatingAdmissionPolicyBinding")
            {
                binding["spec"]["matchResources"] = json!({ "namespaceSelector": {
                    "matchLabels": { "kubernetes.io/metadata.name": namespace },
                }});
            }
        }
        let file = repo_root().join("target/tmp").join(format!("{name}.json"));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let list = json!({ "apiVersion": "v1", "kind": "List", "items": documents });
        std::fs::write(&file, list.to_string()).unwrap();
        cp.kubectl(&["apply", "-f", file.to_str().unwrap()]);
        let probe = repo_root()
            .join("target/tmp")
            .join(format!("{name}-probe.json"));
        let token = json!({
            "apiVersion": "tokensmith.dev/v1alpha1", "kind": "AccessToken",
            "metadata": { "name": "finalizer-policy-probe", "namespace": probe_namespace },
            "spec": { "issuerRef": { "kind": "TokenIssuer", "name": "probe" }, "lifetime": "1h" },
        });
        std::fs::write(&probe, token.to_string()).unwrap();
        let policy = Self { cp, name, probe };
        policy.wait_until(true);
        Some(policy)
    }

    /// Deletes the policy and its binding, and waits until the API server
    /// no longer applies it.
    pub fn remove(self) {
        self.delete();
        self.wait_until(false);
    }

    /// Policies reach the API server's admission through an informer: a
    /// moment after they are created or deleted.
    fn wait_until(&self, applied: bool) {
        let started = std::time::Instant::now();
        loop {
            // Until the API server has read the CRD's schema, a create the
            // policy applies to is refused (503); that is not applied yet.
            let created = self.cp.kubectl_output(&[
                "create",
                "--dry-run=server",
                "-o",
                "jsonpath={.metadata.finalizers}",
                "-f",
                self.probe.to_str().unwrap(),
            ]);
            let given = String::from_utf8_lossy(&created.stdout)
                .contains(tokensmith::controller::FINALIZER);
            if created.status.success() && given == applied {
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "the finalizer policy {} still {} after 60 s",
                self.name,
                if applied { "not applied" } else { "applied" }
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    fn delete(&self) {
        for kind in ["mutatingadmissionpolicybinding", "mutatingadmissionpolicy"] {
            self.cp
                .kubectl_output(&["delete", kind, &self.name, "--ignore-not-found"]);
        }
    }
}

impl Drop for FinalizerPolicy {
    fn drop(&mut self) {
        self.delete();
    }
}
