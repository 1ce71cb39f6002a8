//! The operator binary (`tokensmith run`) as a child process of the test.

use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use super::{control_plane, repo_root};

/// The namespace the operator keeps ClusterTokenIssuer keys and the
/// revocation record in, during tests.
pub const OPERATOR_NAMESPACE: &str = "tokensmith-system";

/// A running operator. Dropping it kills the process; so does the end of
/// the test binary, however it ends (the child gets SIGKILL when the thread
/// that started it is gone).
pub struct Operator {
    pub pid: i32,
    pub log: PathBuf,
    /// Base URL of its token service (`https://127.0.0.1:<port>`).
    pub url: String,
    /// Base URL of its metrics and probes (`http://127.0.0.1:<port>`).
    pub metrics_url: String,
    /// Its own namespace (revocations, CA, leases).
    pub namespace: String,
    exited: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    running: bool,
}

/// The operator shared by every test of this test binary.
pub fn shared_operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| Operator::start(&[]))
}

/// The operator's log filter: the tests read its debug lines; the
/// benchmarks set `TOKENSMITH_TEST_LOG_LEVEL=info`, the chart's default.
fn log_level() -> String {
    std::env::var("TOKENSMITH_TEST_LOG_LEVEL").unwrap_or_else(|_| "info,tokensmith=debug".into())
}

impl Operator {
    /// Starts `tokensmith run` with the operator's own identity and `extra` arguments.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// Like [`Operator::start`], its token service on `port` (from
    /// [`free_port`]), for a URL that must be known before it starts.
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        Self::start_with(extra, &[], Some(port))
    }

    /// Like [`Operator::start`], with `env` set in the operator's environment.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_with(extra, env, None)
    }

    fn start_with(extra: &[&str], env: &[(&str, &str)], port: Option<u16>) -> Self {
        let cp = control_plane();
        cp.kubectl_output(&["create", "namespace", OPERATOR_NAMESPACE]);
        let beside = cp.kubeconfig.with_file_name("operator.kubeconfig");
        let kubeconfig = if beside.exists() {
            beside
        } else {
            cp.kubeconfig.clone()
        };
        Self::spawn(&kubeconfig, OPERATOR_NAMESPACE, extra, env, port)
    }

    /// Starts `tokensmith run` with the credentials of `kubeconfig`, its
    /// own namespace being `namespace`.
    pub fn start_as(kubeconfig: &std::path::Path, namespace: &str, extra: &[&str]) -> Self {
        Self::spawn(kubeconfig, namespace, extra, &[], None)
    }

    fn spawn(
        kubeconfig: &std::path::Path,
        namespace: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        port: Option<u16>,
    ) -> Self {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let log = repo_root().join("target/tmp").join(format!(
            "operator-{}-{}.log",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let log_file = std::fs::File::create(&log).expect("log file");
        let (port, metrics_port) = (port.unwrap_or_else(free_port), free_port());
        let url = format!("https://127.0.0.1:{port}");
        let metrics_url = format!("http://127.0.0.1:{metrics_port}");
        // Operators of one test binary share a lease, so one restarted in a
        // test takes over from the last; other test binaries' leftovers
        // (killed without releasing theirs) never hold it up.
        let lease = format!("tokensmith-test-{}", std::process::id());
        let mut command = Command::new(env!("CARGO_BIN_EXE_tokensmith"));
        command
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", namespace, "--log-level", &log_level()])
            .args([
                "--listen-address",
                &format!("127.0.0.1:{port}"),
                "--public-url",
                &url,
            ])
            .args([
                "--metrics-address",
                &format!("127.0.0.1:{metrics_port}"),
                "--lease-name",
                &lease,
            ])
            .args(extra)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let (pid_tx, pid_rx) = std::sync::mpsc::channel();
        let (exit_tx, exited) = std::sync::mpsc::channel();
        // The thread that spawns the child lives until the child exits, so
        // PDEATHSIG fires only when the child is killed or the test binary ends.
        std::thread::spawn(move || {
            let mut child = command.spawn().expect("the operator binary starts");
            pid_tx.send(child.id() as i32).unwrap();
            let _ = child.wait();
            let _ = exit_tx.send(());
        });
        let pid = pid_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("operator pid");
        Self {
            pid,
            log,
            url,
            metrics_url,
            namespace: namespace.to_string(),
            exited: std::sync::Mutex::new(exited),
            running: true,
        }
    }

    /// Waits until the token service answers, and returns an HTTPS client
    /// that trusts its CA (published in the ConfigMap `tokensmith-ca`).
    pub async fn http(&self) -> reqwest::Client {
        let ca = super::eventually(
            Duration::from_secs(60),
            "the token service's CA",
            || async { self.ca_pem() },
        )
        .await;
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA PEM")])
            .build()
            .expect("HTTPS client");
        let probe = format!("{}/oauth/token/info", self.url);
        super::eventually(
            Duration::from_secs(60),
            "the token service to listen",
            || async { client.get(&probe).send().await.ok().map(|_| ()) },
        )
        .await;
        client
    }

    /// The CA the token service's certificate is signed by, once published.
    pub fn ca_pem(&self) -> Option<String> {
        let output = control_plane().kubectl_output(&[
            "get",
            "configmap",
            "tokensmith-ca",
            "-n",
            &self.namespace,
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ]);
        let pem = String::from_utf8(output.stdout).ok()?;
        pem.contains("BEGIN CERTIFICATE").then_some(pem)
    }

    /// The token service's CA certificate, written to a file (for Python clients).
    pub fn ca_file(&self) -> PathBuf {
        let output = self.ca_pem().expect("the token service's CA is published");
        // Tests run in parallel: write aside and rename, so no reader ever
        // sees a half-written file.
        static WRITES: AtomicUsize = AtomicUsize::new(0);
        let dir = repo_root().join("target/tmp");
        let path = dir.join(format!("ca-{}.crt", std::process::id()));
        let aside = dir.join(format!(
            "ca-{}-{}.tmp",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&aside, output).expect("CA file");
        std::fs::rename(&aside, &path).expect("CA file in place");
        path
    }

    /// The operator's `/metrics` text; empty while it does not answer.
    pub async fn metrics(&self) -> String {
        let response = reqwest::get(format!("{}/metrics", self.metrics_url)).await;
        match response {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The value of one sample of `/metrics`, named with its labels exactly
    /// as exposed, e.g. `tokensmith_leader` or
    /// `tokensmith_reconciles_total{kind="AccessToken",result="ok"}`.
    pub async fn sample(&self, series: &str) -> Option<f64> {
        sample(&self.metrics().await, series)
    }

    /// Everything the operator has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` and waits for the process to end; an operator that is
    /// still running 30 s later is killed and the test fails.
    pub fn stop_with(&mut self, signal: i32) {
        if !std::mem::replace(&mut self.running, false) {
            return;
        }
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid, signal) };
        if self
            .exited
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(30))
            .is_err()
        {
            // SAFETY: as above.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self
                .exited
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10));
            panic!(
                "the operator did not exit within 30 s of signal {signal}; log: {}",
                self.log.display()
            );
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::mem::replace(&mut self.running, false) {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self
                .exited
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10));
        }
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The value of `series` in an OpenMetrics text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}
