//! What the operator keeps and watches in the cluster, shared by the
//! reconcilers and the token service: one watch per kind, decoded so that
//! one bad object never stops the others.

pub mod cached_secret;
pub mod cached_token;
pub mod compressed;
pub mod data_ownership;
pub mod decoded;
pub mod finalizer_hold;
pub mod issuers;
pub mod keyrings;
pub mod labels;
pub mod refresh_chains;
pub mod revocation_counts;
pub mod revocations;
pub mod watch;
pub mod watches;

pub use cached_secret::CachedSecret;
pub use cached_token::{CachedToken, TokenSummary};
pub use decoded::{Decoded, Undecodable};
pub use keyrings::{KeyringError, Keyrings};
pub use watch::Watched;
pub use watches::{PendingWatches, Watches};

use crate::api::{ClusterTokenIssuer, TokenIssuer};

/// `impl Resource` for a cached record of `$kind` that keeps its metadata
/// in a field `metadata`: the kind, group, version and plural are `$kind`'s,
/// so caches, echo records and API paths treat the record as the object.
macro_rules! resource_as {
    ($record:ty, $kind:ty) => {
        impl kube::Resource for $record {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
                <$kind as kube::Resource>::kind(dt)
            }

            fn group(dt: &()) -> std::borrow::Cow<'_, str> {
                <$kind as kube::Resource>::group(dt)
            }

            fn version(dt: &()) -> std::borrow::Cow<'_, str> {
                <$kind as kube::Resource>::version(dt)
            }

            fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
                <$kind as kube::Resource>::plural(dt)
            }

            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }

            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
pub(crate) use resource_as;

/// The shared watch of an issuer kind, for code generic over the kind.
pub trait WatchedIssuer: watch::Object {
    fn watched(watches: &Watches) -> &Watched<Self>;
}

impl WatchedIssuer for TokenIssuer {
    fn watched(watches: &Watches) -> &Watched<Self> {
        &watches.token_issuers
    }
}

impl WatchedIssuer for ClusterTokenIssuer {
    fn watched(watches: &Watches) -> &Watched<Self> {
        &watches.cluster_issuers
    }
}
