//! The `tokensmith` binary: everything is in the library; see `cli`.

/// Every allocation recorded with its call stack, for heap profiles
/// (`docs/testing.md`); never in a normal build.
#[cfg(feature = "heap-profile")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Written to dhat-heap.json on SIGUSR1, so a profile shows a running
    // operator's steady state rather than what is left while it stops; or
    // when the process ends normally (SIGTERM) if no SIGUSR1 came.
    #[cfg(feature = "heap-profile")]
    {
        let profiler = dhat::Profiler::builder().trim_backtraces(None).build();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            if let Ok(mut usr1) = signal(SignalKind::user_defined1()) {
                usr1.recv().await;
                drop(profiler);
            } else {
                std::mem::forget(profiler);
            }
        });
    }
    tokensmith::cli::main().await
}
