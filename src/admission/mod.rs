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

/// The largest AdmissionReview read: far more than an AccessToken needs,
/// and small enough that whoever reaches the token service (it is public)
/// cannot make it hold much: 1 024 connections × 256 KiB. A larger review
/// (a token with huge annotations) fails, `failurePolicy: Ignore` lets the
/// create through, and the operator writes the finalizer itself.
const MAX_REVIEW_BYTES: usize = 256 << 10;

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
    // A patch that cannot be written lets the create through without it,
    // as any failure of this webhook does: the operator adds the finalizer.
    let answer = response
        .with_patch(patch)
        .unwrap_or_else(|_| AdmissionResponse::from(&request));
    Json(answer.into_review())
}

#[cfg(test)]
mod tests {
    use axum::{
        body::Body,
        http::{Request, StatusCode},
    };
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;

    /// An AdmissionReview of an AccessToken create whose object carries
    /// `padding` bytes in an annotation.
    fn review_of_a_new_token(padding: usize) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": { "group": "tokensmith.dev", "version": "v1alpha1", "kind": "AccessToken" },
                "resource": { "group": "tokensmith.dev", "version": "v1alpha1", "resource": "accesstokens" },
                "operation": "CREATE",
                "userInfo": { "username": "tenant" },
                "object": {
                    "apiVersion": "tokensmith.dev/v1alpha1", "kind": "AccessToken",
                    "metadata": { "name": "t", "namespace": "team", "annotations": { "pad": "x".repeat(padding) } },
                    "spec": {},
                },
            },
        })
    }

    /// The token service is public: a review larger than an AccessToken
    /// needs is refused before it is held (the API server then creates the
    /// token without the webhook).
    #[tokio::test]
    async fn refuses_a_review_too_large_to_hold() {
        let request = Request::post(PATH)
            .header("content-type", "application/json")
            .body(Body::from(review_of_a_new_token(300 << 10).to_string()))
            .unwrap();
        let response = router::<()>().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// As the token service mounts it: under a router whose other routes
    /// take 16 KiB at most, an AdmissionReview of a 200 KiB object is still
    /// answered, with the patch.
    #[tokio::test]
    async fn answers_a_large_review_with_the_finalizer() {
        let service = Router::new()
            .merge(router())
            .layer(DefaultBodyLimit::max(16 * 1024));
        let request = Request::post(PATH)
            .header("content-type", "application/json")
            .body(Body::from(review_of_a_new_token(200 << 10).to_string()))
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            answer["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        assert_eq!(answer["response"]["allowed"], true);
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        // kube writes the patch's bytes as numbers, which the API server's
        // decoder takes as well as base64.
        let bytes: Vec<u8> = serde_json::from_value(answer["response"]["patch"].clone()).unwrap();
        let patch: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            patch,
            json!([{ "op": "add", "path": "/metadata/finalizers", "value": ["tokensmith.dev/revoke"] }])
        );
    }
}
