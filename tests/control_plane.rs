//! Proves the test control plane is a real one: garbage collection of
//! dependents, namespace finalization, and CEL validation of a CRD.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use support::{TestNamespace, control_plane, eventually};

#[tokio::test]
async fn garbage_collector_deletes_dependents_of_a_deleted_owner() {
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "gc").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);

    let owner = config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        )
        .await
        .expect("owner created");
    let owner_reference = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: owner.name_any(),
        uid: owner.uid().expect("server sets a uid"),
        ..Default::default()
    };
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("dependent".into()),
                    owner_references: Some(vec![owner_reference]),
                    ..ObjectMeta::default()
                },
                string_data: Some([("key".to_string(), "value".to_string())].into()),
                ..Secret::default()
            },
        )
        .await
        .expect("dependent created");

    config_maps
        .delete("owner", &DeleteParams::default())
        .await
        .expect("owner deleted");

    eventually(
        Duration::from_secs(30),
        "the garbage collector to delete the dependent Secret",
        || async {
            let found = secrets.get_opt("dependent").await.expect("get secret");
            found.is_none().then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn namespace_controller_finalizes_a_deleted_namespace() {
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "finalize").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("content".into()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        )
        .await
        .expect("config map created");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&ns.name, &DeleteParams::default())
        .await
        .expect("namespace deleted");

    eventually(
        Duration::from_secs(30),
        "the namespace controller to empty and remove the namespace",
        || async {
            let found = namespaces.get_opt(&ns.name).await.expect("get namespace");
            found.is_none().then_some(())
        },
    )
    .await;
}

const CEL_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: ranges.smoke.tokensmith.dev
spec:
  group: smoke.tokensmith.dev
  scope: Namespaced
  names: {plural: ranges, singular: range, kind: Range, listKind: RangeList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [min, max]
              x-kubernetes-validations:
                - rule: self.min <= self.max
                  message: min must not be greater than max
              properties:
                min: {type: integer}
                max: {type: integer}
"#;

#[tokio::test]
async fn api_server_enforces_cel_rules_of_a_crd() {
    let client = control_plane().client().await;
    let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_yaml::from_str(CEL_CRD).expect("valid CRD yaml");
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(client.clone());
    crds.patch(
        "ranges.smoke.tokensmith.dev",
        &PatchParams::apply("tokensmith-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("CRD applied");
    eventually(
        Duration::from_secs(30),
        "the CRD to be established",
        || async {
            let crd = crds.get("ranges.smoke.tokensmith.dev").await.ok()?;
            let established = crd
                .status?
                .conditions?
                .into_iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        },
    )
    .await;

    let ns = TestNamespace::create(&client, "cel").await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("smoke.tokensmith.dev", "v1", "Range"),
        "ranges",
    );
    let ranges: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &resource);
    let range = |name: &str, min: i64, max: i64| {
        let mut object = DynamicObject::new(name, &resource);
        object.data = serde_json::json!({ "spec": { "min": min, "max": max } });
        object
    };

    // A freshly established CRD can take a moment to be served everywhere.
    eventually(
        Duration::from_secs(30),
        "a valid object to be accepted",
        || async {
            ranges
                .create(&PostParams::default(), &range("valid", 1, 2))
                .await
                .ok()
        },
    )
    .await;

    let rejection = ranges
        .create(&PostParams::default(), &range("invalid", 3, 2))
        .await
        .expect_err("the CEL rule rejects min > max");
    match rejection {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "unexpected status: {status:?}");
            assert!(
                status.message.contains("min must not be greater than max"),
                "the rejection carries the rule's message, got: {}",
                status.message
            );
        }
        other => panic!("expected an API rejection, got {other}"),
    }
}
