//! The CRD manifests, generated from the Rust types in [`crate::api`].

use std::path::{Path, PathBuf};

use kube::ResourceExt;

const HEADER: &str =
    "# Generated from the Rust types by `tokensmith crdgen`; do not edit by hand.\n";

/// Where the generated CRDs go, relative to the repository root, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrdFolder {
    /// Plain manifests for `kubectl apply`.
    Plain(&'static str),
    /// Templates of the Helm chart: rendered when `crds.enabled`, kept on
    /// uninstall when `crds.keep`, labelled as the release's objects (so a
    /// `helm upgrade` upgrades them, which the chart's `crds/` folder never
    /// does).
    Chart(&'static str),
}

impl CrdFolder {
    pub fn path(self) -> &'static str {
        match self {
            CrdFolder::Plain(path) | CrdFolder::Chart(path) => path,
        }
    }
}

/// Folders that hold a copy of the generated CRDs.
pub const CRD_FOLDERS: &[CrdFolder] = &[
    CrdFolder::Plain("crds"),
    CrdFolder::Chart("charts/tokensmith/templates/crds"),
];

/// Each CRD as (file name, YAML text) for `folder`.
pub fn render(folder: CrdFolder) -> Vec<(String, String)> {
    crate::api::crds()
        .into_iter()
        .map(|crd| {
            let file = format!("{}.yaml", crd.name_any());
            let yaml = serde_yaml::to_string(&crd).expect("a CRD always serializes");
            let text = match folder {
                CrdFolder::Plain(_) => format!("{HEADER}{yaml}"),
                CrdFolder::Chart(_) => chart_template(&yaml),
            };
            (file, text)
        })
        .collect()
}

/// `yaml` (one CRD) as a template of the chart.
fn chart_template(yaml: &str) -> String {
    // Helm would take it for a template action.
    assert!(!yaml.contains("{{"), "a CRD's text holds `{{{{`");
    let name_line = yaml
        .lines()
        .find(|l| l.starts_with("  name: "))
        .expect("a CRD has a name");
    let metadata = format!(
        "metadata:\n{name_line}\n  labels:\n    {{{{- include \"tokensmith.labels\" . | nindent 4 }}}}\n  {{{{- if .Values.crds.keep }}}}\n  annotations:\n    helm.sh/resource-policy: keep\n  {{{{- end }}}}\n"
    );
    let body = yaml.replacen(&format!("metadata:\n{name_line}\n"), &metadata, 1);
    assert_ne!(body, yaml, "the CRD's metadata is its name alone");
    format!("{HEADER}{{{{- if .Values.crds.enabled }}}}\n{body}{{{{- end }}}}\n")
}

/// Writes every CRD into each of [`CRD_FOLDERS`] under `root` whose parent
/// exists (the chart's exists only once the chart does), replacing stale
/// files.
pub fn write_all(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for folder in CRD_FOLDERS {
        let dir = root.join(folder.path());
        if !dir.parent().is_some_and(Path::exists) {
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
        for (file, yaml) in render(*folder) {
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
