//! JSON schemas for kubeconform, made offline: Kubernetes kinds from the test
//! API server's own OpenAPI v3 documents, the project's kinds from the Rust
//! types' CRDs. Written the way kubeconform names them
//! (`<kind>-<group prefix>-<version>.json`) and made strict (no properties
//! beyond the schema's), as `kubeconform -strict` expects of its schemas.

use std::{collections::BTreeMap, path::Path};

use serde_json::{Value, json};

use super::control_plane;

/// Writes a schema for every (apiVersion, kind) into `dir`.
pub fn write_schemas(dir: &Path, kinds: &[(String, String)]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut documents: BTreeMap<String, Value> = BTreeMap::new();
    let crds = tokensmith::api::crds();
    for (api_version, kind) in kinds {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let schema = if group == "tokensmith.dev" {
            let crd = crds
                .iter()
                .find(|c| c.spec.names.kind == *kind)
                .expect("a CRD of ours");
            let served = crd
                .spec
                .versions
                .iter()
                .find(|v| v.name == version)
                .expect("served version");
            let mut schema =
                serde_json::to_value(&served.schema.as_ref().unwrap().open_api_v3_schema).unwrap();
            // What the API server adds to every custom resource's schema.
            let properties = schema["properties"]
                .as_object_mut()
                .expect("a structural schema");
            properties.insert("apiVersion".into(), json!({ "type": "string" }));
            properties.insert("kind".into(), json!({ "type": "string" }));
            properties.insert("metadata".into(), json!({ "type": "object" }));
            strict(&mut schema);
            schema
        } else {
            let path = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            let document = documents.entry(path.clone()).or_insert_with(|| {
                let text =
                    control_plane().kubectl(&["get", "--raw", &format!("/openapi/v3/{path}")]);
                serde_json::from_str(&text).expect("an OpenAPI v3 document")
            });
            let schemas = &document["components"]["schemas"];
            let name = schemas
                .as_object()
                .unwrap()
                .iter()
                .find(|(_, s)| {
                    s["x-kubernetes-group-version-kind"]
                        .as_array()
                        .is_some_and(|gvks| {
                            gvks.iter().any(|g| {
                                g["group"] == group
                                    && g["version"] == version
                                    && g["kind"] == **kind
                            })
                        })
                })
                .map(|(name, _)| name.clone())
                .unwrap_or_else(|| panic!("the API server has no schema for {api_version} {kind}"));
            let mut components = schemas.clone();
            strict(&mut components);
            json!({ "$ref": format!("#/components/schemas/{name}"), "components": { "schemas": components } })
        };
        let prefix = group.split('.').next().unwrap_or_default();
        let suffix = if group.is_empty() {
            version.to_string()
        } else {
            format!("{prefix}-{version}")
        };
        let file = dir.join(format!("{}-{suffix}.json", kind.to_lowercase()));
        std::fs::write(file, serde_json::to_vec(&schema).unwrap()).unwrap();
    }
}

/// Closes every object schema to unknown properties, and spells
/// int-or-string the way JSON Schema understands it.
fn strict(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let int_or_string = map.get("format").is_some_and(|f| f == "int-or-string")
                || map
                    .get("x-kubernetes-int-or-string")
                    .is_some_and(|f| f == true);
            if int_or_string {
                map.remove("type");
                map.remove("format");
                map.insert(
                    "anyOf".into(),
                    json!([{ "type": "string" }, { "type": "integer" }]),
                );
            }
            let open = map.contains_key("additionalProperties")
                || map
                    .get("x-kubernetes-preserve-unknown-fields")
                    .is_some_and(|f| f == true);
            if map.contains_key("properties") && !open {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(strict);
        }
        Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}
