//! Which AccessToken the webhook gives the finalizer, and how.

use kube::core::{GroupVersionKind, admission::Operation};
use serde_json::json;

use crate::cluster::labels::FINALIZER;

/// The JSON patch that adds the operator's finalizer to an AccessToken
/// being created with `finalizers`; `None` when there is nothing to add: the
/// finalizer is there already, or the request is not the create of an
/// AccessToken (the webhook configuration asks for nothing else, but what
/// the API server sends is not assumed). Other finalizers stay.
pub fn patch(
    operation: &Operation,
    kind: &GroupVersionKind,
    finalizers: Option<&[String]>,
) -> Option<json_patch::Patch> {
    let creating_a_token = matches!(operation, Operation::Create)
        && kind.group == "tokensmith.dev"
        && kind.kind == "AccessToken";
    let finalizers = finalizers.filter(|_| creating_a_token)?;
    if finalizers.iter().any(|f| f == FINALIZER) {
        return None;
    }
    let operation = if finalizers.is_empty() {
        json!({ "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] })
    } else {
        json!({ "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER })
    };
    Some(serde_json::from_value(json!([operation])).expect("a JSON patch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the case is, the request, and the patch expected.
    type Case<'a> = (
        &'a str,
        Operation,
        &'a GroupVersionKind,
        Option<&'a [String]>,
        Option<serde_json::Value>,
    );

    fn kind(group: &str, kind: &str) -> GroupVersionKind {
        GroupVersionKind::gvk(group, "v1alpha1", kind)
    }

    #[test]
    fn a_new_access_token_gets_the_finalizer_and_keeps_its_others() {
        let token = kind("tokensmith.dev", "AccessToken");
        let other = vec!["example.com/hold".to_string()];
        let ours = vec![FINALIZER.to_string()];
        let both = vec!["example.com/hold".to_string(), FINALIZER.to_string()];
        let cases: [Case; 7] = [
            (
                "no finalizers",
                Operation::Create,
                &token,
                Some(&[]),
                Some(
                    json!([{ "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] }]),
                ),
            ),
            (
                "another's finalizer",
                Operation::Create,
                &token,
                Some(&other),
                Some(
                    json!([{ "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER }]),
                ),
            ),
            ("ours already", Operation::Create, &token, Some(&ours), None),
            (
                "ours among others",
                Operation::Create,
                &token,
                Some(&both),
                None,
            ),
            ("an update", Operation::Update, &token, Some(&[]), None),
            ("no object", Operation::Create, &token, None, None),
            (
                "another kind",
                Operation::Create,
                &kind("tokensmith.dev", "AppRegistration"),
                Some(&[]),
                None,
            ),
        ];
        for (case, operation, kind, finalizers, expected) in cases {
            let patch =
                patch(&operation, kind, finalizers).map(|p| serde_json::to_value(p).unwrap());
            assert_eq!(patch, expected, "{case}");
        }
    }
}
