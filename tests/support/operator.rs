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
    exited: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    running: bool,
}

/// The operator shared by every test of this test binary.
pub fn shared_operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| Operator::start(&[]))
}

impl Operator {
    /// Starts `tokensmith run` with the operator's own identity and `extra` arguments.
    pub fn start(extra: &[&str]) -> Self {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let cp = control_plane();
        cp.kubectl_output(&["create", "namespace", OPERATOR_NAMESPACE]);
        let beside = cp.kubeconfig.with_file_name("operator.kubeconfig");
        let kubeconfig = if beside.exists() {
            beside
        } else {
            cp.kubeconfig.clone()
        };
        let log = repo_root().join("target/tmp").join(format!(
            "operator-{}-{}.log",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tokensmith"));
        command
            .arg("run")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "--namespace",
                OPERATOR_NAMESPACE,
                "--log-level",
                "info,tokensmith=debug",
            ])
            .args(extra)
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
            exited: std::sync::Mutex::new(exited),
            running: true,
        }
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
