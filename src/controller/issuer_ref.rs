//! Resolving an `issuerRef` to a ready issuer, from watched stores, for the
//! reconcilers and the token service alike.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    ResourceExt,
    core::{PartialObjectMeta, Selector, SelectorExt},
    runtime::reflector::{ObjectRef, Store},
};

use super::{
    conditions::{Readiness, ready_condition},
    issuer::key_secret_location,
};
use crate::api::{ClusterTokenIssuer, Issuer, IssuerKind, IssuerRef, IssuerSettings, TokenIssuer};

/// Condition reasons of resolution problems.
pub const ISSUER_NOT_READY: &str = "IssuerNotReady";
pub const INVALID_SPEC: &str = "InvalidSpec";

/// An issuer ready to sign.
#[derive(Clone, Debug)]
pub struct ResolvedIssuer {
    pub kind: IssuerKind,
    pub name: String,
    pub settings: IssuerSettings,
    pub active_key_id: String,
    /// (namespace, name) of the Secret holding its keys.
    pub key_secret: (String, String),
}

/// The watched issuers and namespaces resolution looks at.
#[derive(Clone)]
pub struct IssuerStores {
    pub token_issuers: Store<TokenIssuer>,
    pub cluster_issuers: Store<ClusterTokenIssuer>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
}

impl IssuerStores {
    /// Whether `namespace` is being deleted: nothing can be created in it
    /// any more, and what it holds is about to go.
    pub fn namespace_terminating(&self, namespace: &str) -> bool {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .is_some_and(|ns| ns.metadata.deletion_timestamp.is_some())
    }

    /// The issuer `issuer_ref` names for a resource in `namespace`, or the
    /// condition to report and when to look again.
    pub fn resolve(
        &self,
        issuer_ref: &IssuerRef,
        namespace: &str,
        operator_namespace: &str,
    ) -> Result<ResolvedIssuer, (Readiness, Option<Duration>)> {
        let not_found = |kind: &str| {
            let message = format!(
                "{kind} {} not found; create it, or set spec.issuerRef to an existing issuer",
                issuer_ref.name
            );
            (
                Readiness::not_ready(ISSUER_NOT_READY, message),
                Some(Duration::from_secs(60)),
            )
        };
        match issuer_ref.kind() {
            IssuerKind::ClusterTokenIssuer => {
                let issuer = self
                    .cluster_issuers
                    .get(&ObjectRef::new(&issuer_ref.name))
                    .ok_or_else(|| not_found("ClusterTokenIssuer"))?;
                if let Some(selector) = issuer.namespace_selector() {
                    let labels = self
                        .namespaces
                        .get(&ObjectRef::new(namespace))
                        .and_then(|ns| ns.metadata.labels.clone())
                        .unwrap_or_default();
                    let admitted =
                        Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(&labels));
                    if !admitted {
                        let message = format!(
                            "namespace {namespace} is not selected by the namespaceSelector of ClusterTokenIssuer {}",
                            issuer_ref.name
                        );
                        return Err((Readiness::not_ready(INVALID_SPEC, message), None));
                    }
                }
                ready(issuer.as_ref(), operator_namespace)
            }
            IssuerKind::TokenIssuer => {
                let issuer = self
                    .token_issuers
                    .get(&ObjectRef::new(&issuer_ref.name).within(namespace))
                    .ok_or_else(|| not_found("TokenIssuer"))?;
                ready(issuer.as_ref(), operator_namespace)
            }
        }
    }
}

fn ready<I: Issuer>(
    issuer: &I,
    operator_namespace: &str,
) -> Result<ResolvedIssuer, (Readiness, Option<Duration>)> {
    let status = issuer.issuer_status();
    let ready = status
        .and_then(|s| ready_condition(&s.conditions))
        .filter(|c| c.status == "True");
    let active_key_id = status.and_then(|s| s.active_key_id.clone());
    match (ready, active_key_id) {
        (Some(_), Some(active_key_id)) => Ok(ResolvedIssuer {
            kind: I::KIND,
            name: issuer.name_any(),
            settings: issuer.settings().clone(),
            active_key_id,
            key_secret: key_secret_location(issuer, operator_namespace),
        }),
        _ => {
            let why = status
                .and_then(|s| ready_condition(&s.conditions))
                .map(|c| format!(": {}", c.message))
                .unwrap_or_default();
            let message = format!(
                "{} {} is not ready{why}",
                I::KIND.as_str(),
                issuer.name_any()
            );
            Err((
                Readiness::not_ready(ISSUER_NOT_READY, message),
                Some(Duration::from_secs(30)),
            ))
        }
    }
}
