//! The `tokensmith` binary: everything is in the library; see `cli`.

/// Every allocation recorded with its call stack, for `hack/heap-profile.sh`;
/// never in a normal build.
#[cfg(feature = "heap-profile")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Written to dhat-heap.json when the process ends normally (SIGTERM).
    #[cfg(feature = "heap-profile")]
    let _profiler = dhat::Profiler::new_heap();
    tokensmith::cli::main().await
}
