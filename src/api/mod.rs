//! The resource types users write YAML against (`tokensmith.dev/v1alpha1`).
//! Nothing but types, their schema and the defaults they imply lives here.

// Several `printcolumn(type_ = ..)` in one `#[kube]` attribute are distinct
// columns, not duplicates; clippy cannot tell.
#![allow(clippy::duplicated_attributes)]

mod access_token;
mod app_registration;
mod common;
mod duration;
mod fixed_time;
mod issuer;
pub mod reason;

pub use access_token::*;
pub use app_registration::*;
pub use common::*;
pub use duration::*;
pub use fixed_time::*;
pub use issuer::*;

/// The API group of every kind here.
pub const GROUP: &str = "tokensmith.dev";

/// Every CRD of the project, in the order `crdgen` writes them.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        ClusterTokenIssuer::crd(),
        TokenIssuer::crd(),
        AccessToken::crd(),
        AppRegistration::crd(),
    ]
}
