//! The revocation record lives in `cluster::revocations`; the reconcilers
//! use it through these names.

pub use crate::cluster::{
    labels::REVOCATIONS_LABEL,
    revocation_counts::{RevocationCounts, parse_entry},
    revocations::*,
};
