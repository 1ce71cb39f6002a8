//! What the operator keeps and watches in the cluster, shared by the
//! reconcilers and the token service: one watch per kind, decoded so that
//! one bad object never stops the others.

pub mod cached_secret;
pub mod cached_token;
pub mod compressed;
pub mod data_ownership;
pub mod decoded;
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
