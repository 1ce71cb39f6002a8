//! The layers depend on each other in one direction only: `api` on nothing,
//! `token` on `api`, `cluster` on both, the token service (`server`) and the
//! reconcilers (`controller`) on those, never on each other. Read from the
//! `use crate::...` items of each file, so a new import across the line
//! fails here.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// Each layer and the crate modules it may use.
const LAYERS: &[(&str, &[&str])] = &[
    ("api", &[]),
    ("token", &["api"]),
    ("telemetry", &[]),
    ("cluster", &["api", "token"]),
    ("server", &["api", "token", "cluster", "telemetry"]),
    ("controller", &["api", "token", "cluster", "telemetry"]),
];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The top-level crate modules a file names in `use crate::...` items.
fn crate_modules_used(source: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut rest = source;
    while let Some(start) = rest.find("crate::") {
        rest = &rest[start + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::b, c, d::{e}}`: the first segment of each item at
            // the top level of the group.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[i..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        let name: String = group[i..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        used.insert(name);
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            used.insert(name);
        }
    }
    used
}

#[test]
fn layers_use_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer_names: BTreeSet<&str> = LAYERS.iter().map(|(name, _)| *name).collect();
    let mut crossings = Vec::new();
    for (layer, allowed) in LAYERS {
        for file in rust_files(&src.join(layer)) {
            let source = std::fs::read_to_string(&file).unwrap();
            if source.contains("super::super::") {
                crossings.push(format!("{} reaches up with super::super::", file.display()));
            }
            for module in crate_modules_used(&source) {
                let is_layer = layer_names.contains(module.as_str());
                if is_layer && module != *layer && !allowed.contains(&module.as_str()) {
                    crossings.push(format!("{} uses crate::{module}", file.display()));
                }
            }
        }
    }
    assert!(
        crossings.is_empty(),
        "imports across layers:\n{}",
        crossings.join("\n")
    );
}

#[test]
fn the_import_reader_sees_grouped_and_plain_imports() {
    let source = "use crate::{\n    api::X,\n    cluster::{a, b},\n    token,\n};\nuse crate::server::Index;";
    let used = crate_modules_used(source);
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        ["api", "cluster", "server", "token"]
    );
}
