//! Shared by every integration test: a real control plane, the project's CRDs
//! installed on it, and a namespace of its own for each test.
//!
//! The control plane is the one named by `TOKENSMITH_TEST_KUBECONFIG` when that
//! is set (the README's test command starts one for all test binaries, and any
//! cluster may be named). Otherwise each test binary starts its own with
//! `hack/control-plane.sh`, which stops it again as soon as the test binary
//! exits, however it exits.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod finalizer_policy;
pub mod finalizer_webhook;
pub mod fixture;
pub mod oauth;
pub mod operator;
pub mod resources;
pub mod schemas;
pub mod tail;
pub mod tenant;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

pub const KUBECONFIG_ENV: &str = "TOKENSMITH_TEST_KUBECONFIG";

/// Where the control plane is and how to reach it.
pub struct ControlPlane {
    pub kubeconfig: PathBuf,
    /// Folder of the cached `kubectl`, `helm`, ... binaries.
    pub bin_dir: PathBuf,
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn control_plane_script() -> PathBuf {
    repo_root().join("hack/control-plane.sh")
}

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// The control plane of this test binary, started on first use.
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| {
        let kubeconfig = match std::env::var_os(KUBECONFIG_ENV) {
            Some(path) => PathBuf::from(path),
            None => start_own_control_plane(None),
        };
        ControlPlane::with_crds(kubeconfig)
    })
}

/// A control plane of this test binary's own even when the suite shares
/// one, for tests that stop parts of it; everything in this module then
/// uses it. It runs only the controller-manager's namespace and
/// service-account controllers, so the only other watches are theirs.
pub fn private_control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| {
        ControlPlane::with_crds(start_own_control_plane(Some("namespace,serviceaccount")))
    })
}

/// A control plane of this test binary's own without the CRDs, for tests
/// of what installs them (the Helm chart).
pub fn bare_control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| ControlPlane {
        kubeconfig: start_own_control_plane(None),
        bin_dir: PathBuf::from(run_script(&["bin-dir"]).trim()),
    })
}

impl ControlPlane {
    fn with_crds(kubeconfig: PathBuf) -> Self {
        let bin_dir = PathBuf::from(run_script(&["bin-dir"]).trim());
        let control_plane = ControlPlane {
            kubeconfig,
            bin_dir,
        };
        control_plane.install_crds();
        control_plane
    }

    /// The samples of the API server's own metric `name` (from its
    /// `/metrics`), each with its labels.
    pub fn api_server_metric(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let text = self.kubectl(&["get", "--raw", "/metrics"]);
        let prefix = format!("{name}{{");
        text.lines()
            .filter_map(|line| line.strip_prefix(&prefix)?.rsplit_once("} "))
            .map(|(labels, value)| {
                let labels = labels
                    .split(',')
                    .filter_map(|pair| {
                        let (key, value) = pair.split_once('=')?;
                        Some((key.to_string(), value.trim_matches('"').to_string()))
                    })
                    .collect();
                (labels, value.trim().parse().unwrap_or(0.0))
            })
            .collect()
    }

    /// Stops kube-apiserver alone (etcd keeps its state).
    pub fn stop_api_server(&self) {
        run_script(&["stop-apiserver", self.dir()]);
    }

    /// Starts kube-apiserver again on the same port and etcd; returns once
    /// it is ready.
    pub fn start_api_server(&self) {
        run_script(&["start-apiserver", self.dir()]);
    }

    /// Stops etcd alone (its data stays).
    pub fn stop_etcd(&self) {
        run_script(&["stop-etcd", self.dir()]);
    }

    /// Starts etcd again on its data; returns once it answers.
    pub fn start_etcd(&self) {
        run_script(&["start-etcd", self.dir()]);
    }

    fn dir(&self) -> &str {
        self.kubeconfig
            .parent()
            .and_then(Path::to_str)
            .expect("a control plane directory")
    }
}

/// Starts a control plane that stops when this test binary exits;
/// `controllers` narrows the controller-manager's controllers.
fn start_own_control_plane(controllers: Option<&str>) -> PathBuf {
    let dir = repo_root()
        .join("target/tmp")
        .join(format!("control-plane-{}", std::process::id()));
    let pid = std::process::id().to_string();
    let mut command = Command::new(control_plane_script());
    command.args(["start", dir.to_str().expect("utf-8 path"), &pid]);
    if let Some(controllers) = controllers {
        command.env("TOKENSMITH_CP_CONTROLLERS", controllers);
    }
    let output = command.output().expect("hack/control-plane.sh runs");
    assert!(
        output.status.success(),
        "hack/control-plane.sh start failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir.join("kubeconfig")
}

fn run_script(args: &[&str]) -> String {
    let output = Command::new(control_plane_script())
        .args(args)
        .output()
        .expect("hack/control-plane.sh runs");
    assert!(
        output.status.success(),
        "hack/control-plane.sh {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

impl ControlPlane {
    /// Runs `kubectl` against this control plane and returns its stdout; panics
    /// with its stderr when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let output = self.kubectl_output(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }

    pub fn kubectl_output(&self, args: &[&str]) -> std::process::Output {
        Command::new(self.bin_dir.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// Server-side applies every CRD in `crds/` and waits until each is served.
    fn install_crds(&self) {
        let crds = repo_root().join("crds");
        let has_crds = std::fs::read_dir(&crds)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "yaml"))
            })
            .unwrap_or(false);
        if !has_crds {
            return;
        }
        let dir = crds.to_str().expect("utf-8 path");
        self.kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=tokensmith-tests",
            "-f",
            dir,
        ]);
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            dir,
        ]);
    }

    /// A client for this control plane. Make one per test: a client belongs to
    /// the Tokio runtime it was made on, and every test has its own runtime.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("readable kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("valid kubeconfig");
        Client::try_from(config).expect("client from kubeconfig")
    }
}

/// A namespace that exists for one test and is deleted when it is dropped,
/// a panicking test included.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// Creates a namespace named `PREFIX-<random>`.
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{}", random_suffix());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("tokensmith.dev/test".to_string(), "true".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("namespace created");
        Self { name }
    }

    /// Deletes the namespace and waits until it is gone, everything in it
    /// included (a token's revocation, its Secret's collection): for a
    /// measurement that must not share the machine with that work.
    pub async fn delete_and_wait(mut self, client: &Client, timeout: Duration) {
        let name = std::mem::take(&mut self.name);
        let namespaces = Api::<Namespace>::all(client.clone());
        namespaces
            .delete(&name, &Default::default())
            .await
            .expect("namespace deleted");
        eventually(timeout, &format!("namespace {name} gone"), || {
            let namespaces = namespaces.clone();
            let name = name.clone();
            async move { matches!(namespaces.get_opt(&name).await, Ok(None)).then_some(()) }
        })
        .await;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return; // deleted already
        }
        // Synchronous on purpose: Drop cannot await, and this also runs while
        // a failed test unwinds.
        let _ = control_plane().kubectl_output(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

fn random_suffix() -> String {
    use std::hash::{BuildHasher, RandomState};
    let n = RandomState::new().hash_one(std::time::SystemTime::now());
    format!("{:08x}", n as u32)
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `tests/python/<script>` with the project's Python clients (installed
/// by `hack/install-tools.sh` on first use) and parses what it prints.
pub fn python(script: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let cache = std::env::var_os("TOKENSMITH_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("tokensmith")))
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/tokensmith")
        });
    let interpreter = cache.join("python/bin/python");
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let status = Command::new(repo_root().join("hack/install-tools.sh"))
            .status()
            .expect("hack/install-tools.sh runs");
        assert!(status.success(), "hack/install-tools.sh failed");
    });
    let output = Command::new(interpreter)
        .arg(repo_root().join("tests/python").join(script))
        .args(args)
        .output()
        .expect("python runs");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("{script} printed no JSON: {e}"))
}

/// The default issuer manifest the chart hands the operator, as a file.
pub fn chart_default_issuer(release_ns: &str, fullname: &str) -> PathBuf {
    let text = control_plane().kubectl(&[
        "get",
        "configmap",
        &format!("{fullname}-default-issuer"),
        "-n",
        release_ns,
        "-o",
        "jsonpath={.data.default-issuer\\.yaml}",
    ]);
    assert!(text.contains("kind: ClusterTokenIssuer"), "{text}");
    let path = repo_root()
        .join("target/tmp")
        .join(format!("default-issuer-{release_ns}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs one of the cached tools (`helm`, `kubeconform`, ...) against this
/// test binary's control plane, helm's caches kept under target/tmp.
pub fn tool(name: &str, args: &[&str]) -> std::process::Output {
    let helm_home = |dir: &str| repo_root().join("target/tmp/helm").join(dir);
    Command::new(control_plane().bin_dir.join(name))
        .args(args)
        .env("KUBECONFIG", &control_plane().kubeconfig)
        .env("HELM_CACHE_HOME", helm_home("cache"))
        .env("HELM_CONFIG_HOME", helm_home("config"))
        .env("HELM_DATA_HOME", helm_home("data"))
        .output()
        .unwrap_or_else(|e| panic!("{name} runs: {e}"))
}

/// The Kubernetes version the suite runs on: the one the project pins
/// (hack/versions.env), or the one `TOKENSMITH_KUBERNETES_VERSION` asks for
/// (as hack/control-plane.sh reads it).
pub fn kubernetes_version() -> String {
    if let Ok(version) = std::env::var("TOKENSMITH_KUBERNETES_VERSION") {
        return version;
    }
    let pins = std::fs::read_to_string(repo_root().join("hack/versions.env")).unwrap();
    pins.lines()
        .find_map(|l| l.strip_prefix("KUBERNETES_VERSION="))
        .expect("KUBERNETES_VERSION is pinned")
        .trim()
        .trim_matches('"')
        .to_string()
}

/// The chart's templates rendered by `helm template` as the release
/// `release` in tokensmith-system, with `values` set, for a cluster of the
/// suite's Kubernetes version that serves (beyond helm's defaults)
/// `api_versions`.
pub fn render_chart(release: &str, values: &[&str], api_versions: &[&str]) -> String {
    let chart = repo_root().join("charts/tokensmith");
    let version = kubernetes_version();
    let mut args = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        "tokensmith-system",
        "--kube-version",
        &version,
    ];
    for api_version in api_versions {
        args.extend(["--api-versions", api_version]);
    }
    for value in values {
        args.extend(["--set", value]);
    }
    let output = tool("helm", &args);
    assert!(
        output.status.success(),
        "helm template {values:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}
