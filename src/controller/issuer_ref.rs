//! Issuer resolution lives in `cluster::issuers`; the reconcilers report its
//! refusals as their Ready condition.

use std::time::Duration;

use super::conditions::Readiness;
pub use crate::cluster::issuers::*;

/// The Ready condition and retry for an issuer that cannot be used.
pub fn blocked_by(unresolved: Unresolved) -> (Readiness, Option<Duration>) {
    (
        Readiness::not_ready(unresolved.reason, unresolved.message),
        unresolved.retry,
    )
}
