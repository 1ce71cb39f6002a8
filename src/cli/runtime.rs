//! The async runtime the binary runs on: tokio's multi-threaded one, with a
//! worker thread per core the process may use (a CPU limit counts) unless
//! `TOKIO_WORKER_THREADS` says otherwise (docs/operations.md, CPU).

use std::{ffi::OsStr, ffi::OsString, process::ExitCode};

use tokio::runtime::{Builder, Runtime};

/// The variable tokio reads for its worker count. Read here first, so that
/// a bad value stops the binary with a message instead of tokio's panic.
const WORKER_THREADS: &str = "TOKIO_WORKER_THREADS";

/// Why the runtime could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{WORKER_THREADS} must be a number of worker threads from 1 up, not {0:?}")]
    WorkerThreads(OsString),
    #[error("cannot start the async runtime: {0}")]
    Start(#[from] std::io::Error),
}

impl RuntimeError {
    /// 2 for a bad setting, as for any usage error; 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::WorkerThreads(_) => ExitCode::from(2),
            Self::Start(_) => ExitCode::FAILURE,
        }
    }
}

/// The runtime, with the worker count `TOKIO_WORKER_THREADS` asks for.
pub fn runtime() -> Result<Runtime, RuntimeError> {
    let mut builder = Builder::new_multi_thread();
    if let Some(threads) = worker_threads(std::env::var_os(WORKER_THREADS).as_deref())? {
        builder.worker_threads(threads);
    }
    Ok(builder.enable_all().build()?)
}

/// The worker count `value` (the variable's, if set) asks for; `None`
/// leaves tokio's default.
fn worker_threads(value: Option<&OsStr>) -> Result<Option<usize>, RuntimeError> {
    let Some(value) = value else {
        return Ok(None);
    };
    match value.to_str().map(|v| v.trim().parse::<usize>()) {
        Some(Ok(threads)) if threads > 0 => Ok(Some(threads)),
        _ => Err(RuntimeError::WorkerThreads(value.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_count_is_a_whole_number_from_one() {
        let cases: [(Option<&str>, Option<Option<usize>>); 8] = [
            (None, Some(None)),
            (Some("1"), Some(Some(1))),
            (Some("16"), Some(Some(16))),
            (Some(" 2\n"), Some(Some(2))),
            (Some("0"), None),
            (Some("-1"), None),
            (Some("two"), None),
            (Some(""), None),
        ];
        for (value, expected) in cases {
            let got = worker_threads(value.map(OsStr::new));
            assert_eq!(got.ok(), expected, "{value:?}");
        }
        let message = worker_threads(Some(OsStr::new("0")))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(WORKER_THREADS) && message.contains("\"0\""),
            "{message}"
        );
    }
}
