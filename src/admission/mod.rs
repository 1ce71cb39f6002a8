//! Admission: a mutating webhook that gives each new AccessToken the
//! operator's revocation finalizer as the API server creates it, so that
//! the operator mints without applying the finalizer first (one write and
//! one watch event fewer per token). The chart's MutatingAdmissionPolicy
//! does the same inside the API server, but refuses creates while the API
//! server starts; a webhook's `failurePolicy: Ignore` holds then, and
//! wherever the webhook is not called the operator applies the finalizer
//! itself, as it always has.
//!
//! Served on the token service's listener, whose certificate the API server
//! trusts through the `caBundle` that [`ca_bundle`] keeps set.

pub mod ca_bundle;
mod finalizer;

use axum::{Json, Router, extract::DefaultBodyLimit, routing::post};
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview},
};

/// Where the API server sends its AdmissionReviews.
pub const PATH: &str = "/admission/accesstoken-finalizer";

/// The largest AdmissionReview read: an object as large as etcd stores
/// (about 1.5 MiB) with room to spare. Larger, the API server's call fails
/// and `failurePolicy: Ignore` lets the create through.
const MAX_REVIEW_BYTES: usize = 4 << 20;

/// The webhook's route, for the token service's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(PATH, post(review))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
}

/// Answers one AdmissionReview: always allowed, with the finalizer added
/// where [`finalizer::patch`] says so.
async fn review(
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(_) => {
            return Json(
                AdmissionResponse::invalid("an AdmissionReview without a request").into_review(),
            );
        }
    };
    let response = AdmissionResponse::from(&request);
    let finalizers = request
        .object
        .as_ref()
        .map(|object| object.metadata.finalizers.as_deref().unwrap_or_default());
    let Some(patch) = finalizer::patch(&request.operation, &request.kind, finalizers) else {
        return Json(response.into_review());
    };
    match response.with_patch(patch) {
        Ok(patched) => Json(patched.into_review()),
        Err(error) => Json(AdmissionResponse::from(&request).deny(error).into_review()),
    }
}
