//! The `tokensmith` binary: everything is in the library; see `cli`.

/// Every allocation recorded with its call stack, for heap profiles (README:
/// Commands); never in a normal build.
#[cfg(feature = "heap-profile")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn main() -> std::process::ExitCode {
    // Before the runtime's threads exist, or they would have arenas already.
    tokensmith::telemetry::allocator::configure();
    match tokensmith::cli::runtime::runtime() {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

async fn run() -> std::process::ExitCode {
    // Written to dhat-heap.json on SIGUSR1, so a profile shows a running
    // operator's steady state rather than what is left while it stops; or
    // when the process ends normally (SIGTERM) if no SIGUSR1 came.
    #[cfg(feature = "heap-profile")]
    {
        let profiler = dhat::Profiler::builder().trim_backtraces(None).build();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            // Without the signal, the profiler lives until the runtime
            // drops this task at exit, and writes then.
            match signal(SignalKind::user_defined1()) {
                Ok(mut usr1) => usr1.recv().await,
                Err(_) => std::future::pending().await,
            };
            drop(profiler);
        });
    }
    tokensmith::cli::main().await
}
