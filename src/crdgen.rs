//! The CRD manifests, generated from the Rust types in [`crate::api`].

use std::path::{Path, PathBuf};

use kube::ResourceExt;

const HEADER: &str =
    "# Generated from the Rust types by `tokensmith crdgen`; do not edit by hand.\n";

/// Folders that hold a copy of the generated CRDs, relative to the repository root.
pub const CRD_FOLDERS: &[&str] = &["crds", "charts/tokensmith/crds"];

/// Each CRD as (file name, YAML text).
pub fn render() -> Vec<(String, String)> {
    crate::api::crds()
        .into_iter()
        .map(|crd| {
            let file = format!("{}.yaml", crd.name_any());
            let yaml = serde_yaml::to_string(&crd).expect("a CRD always serializes");
            (file, format!("{HEADER}{yaml}"))
        })
        .collect()
}

/// Writes every CRD into each of `folders` under `root` that exists (the
/// chart's folder exists only once the chart does), replacing stale files.
pub fn write_all(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let rendered = render();
    let mut written = Vec::new();
    for folder in CRD_FOLDERS {
        let dir = root.join(folder);
        if *folder != "crds" && !dir.exists() {
            continue;
        }
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let generated = path.extension().is_some_and(|x| x == "yaml")
                && std::fs::read_to_string(&path).is_ok_and(|text| text.starts_with(HEADER));
            if generated {
                std::fs::remove_file(&path)?;
            }
        }
        for (file, yaml) in &rendered {
            let path = dir.join(file);
            std::fs::write(&path, yaml)?;
            written.push(path);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    /// Short names other operators people run beside this one already use
    /// (Argo CD: Application, AppProject, ApplicationSet); `kubectl get app`
    /// must keep meaning Argo CD's.
    const TAKEN: &[&str] = &["app", "apps", "appproj", "appset"];

    #[test]
    fn short_names_are_our_own() {
        let mut ours = Vec::new();
        for crd in crate::api::crds() {
            let names = crd.spec.names.short_names.unwrap_or_default();
            for name in &names {
                assert!(!TAKEN.contains(&name.as_str()), "{name} is taken");
            }
            ours.extend(names);
        }
        ours.sort();
        assert_eq!(ours, ["appreg", "atk", "ctki", "tki"]);
    }
}
