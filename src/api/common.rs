//! What the kinds share: issuer references, Secret templates, conditions.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which issuer signs: a ClusterTokenIssuer, or a TokenIssuer in the same
/// namespace as the resource that names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// `ClusterTokenIssuer` (default) or `TokenIssuer`. A TokenIssuer is looked
    /// up in the namespace of the resource that refers to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<IssuerKind>,
    /// Name of the issuer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl Default for IssuerRef {
    fn default() -> Self {
        Self {
            kind: None,
            name: DEFAULT_ISSUER_NAME.to_string(),
        }
    }
}

impl IssuerRef {
    pub fn kind(&self) -> IssuerKind {
        self.kind.unwrap_or_default()
    }
}

/// The ClusterTokenIssuer used when a resource names none; the Helm chart
/// creates it.
pub const DEFAULT_ISSUER_NAME: &str = "default";

/// The two kinds of issuer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum IssuerKind {
    #[default]
    ClusterTokenIssuer,
    TokenIssuer,
}

impl IssuerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterTokenIssuer => "ClusterTokenIssuer",
            Self::TokenIssuer => "TokenIssuer",
        }
    }
}

/// A reference to an object by name in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct LocalObjectRef {
    /// Name of the object, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Labels and annotations copied onto the Secret the operator writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct SecretTemplate {
    /// Labels added to the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations added to the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Printer column and condition type shared by every kind.
pub const READY: &str = "Ready";

/// The `metav1.Condition` list of every kind's status.
pub type Conditions = Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>;

/// The list schema of scope names: each item an OAuth 2.0 scope token, no
/// repeats (`x-kubernetes-list-type: set`).
pub(crate) fn scope_list_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    scope_list(
        "^[A-Za-z0-9_.:/-]*$",
        "a scope may hold letters, digits and _ . : / - (no spaces)",
    )
}

/// Like [`scope_list_schema`], with the `*` wildcard allowed.
pub(crate) fn scope_pattern_list_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    scope_list(
        "^[A-Za-z0-9_.:/*-]*$",
        "a scope pattern may hold letters, digits, _ . : / - and the wildcard *",
    )
}

fn scope_list(regex: &str, message: &str) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 64,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 128,
            "x-kubernetes-validations": [{ "rule": format!("self.matches('{regex}')"), "message": message }],
        },
    })
}

/// The list schema of `aud` values.
/// A list of glob patterns (subjects, audiences, claim names).
pub(crate) fn pattern_list_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 64,
        "x-kubernetes-list-type": "set",
        "items": { "type": "string", "minLength": 1, "maxLength": 512 },
    })
}

pub(crate) fn audience_list_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 64,
        "x-kubernetes-list-type": "set",
        "items": { "type": "string", "minLength": 1, "maxLength": 512 },
    })
}

/// The Ready condition among `conditions`, if any.
pub fn ready_condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    conditions.iter().find(|c| c.type_ == READY)
}
