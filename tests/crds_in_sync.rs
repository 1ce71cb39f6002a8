//! The checked-in CRD YAML must be exactly what the Rust types generate.

use std::path::Path;

#[test]
fn checked_in_crds_match_the_rust_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for folder in tokensmith::crdgen::CRD_FOLDERS {
        let rendered = tokensmith::crdgen::render(*folder);
        assert_eq!(rendered.len(), 4, "one CRD per kind");
        let folder = folder.path();
        let dir = root.join(folder);
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{} is readable: {e}", dir.display()))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".yaml"))
            .collect();
        on_disk.sort();
        let mut expected: Vec<String> = rendered.iter().map(|(f, _)| f.clone()).collect();
        expected.sort();
        assert_eq!(
            on_disk, expected,
            "{folder}/ holds exactly the generated CRDs; run `make crds`"
        );
        for (file, yaml) in &rendered {
            let checked_in = std::fs::read_to_string(dir.join(file)).expect("readable CRD");
            assert!(
                checked_in == *yaml,
                "{folder}/{file} differs from the Rust types: run `make crds` and commit the result"
            );
        }
    }
}

/// `kubectl explain` is only useful when every field says what it is.
#[test]
fn every_field_has_a_description() {
    fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, field) in properties {
                let field_path = format!("{path}.{name}");
                if field.get("description").is_none() {
                    missing.push(field_path.clone());
                }
                walk(field, &field_path, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
    }
    let mut missing = Vec::new();
    for crd in tokensmith::api::crds() {
        let crd = serde_json::to_value(&crd).unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
        walk(
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            &kind,
            &mut missing,
        );
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:#?}"
    );
}
