//! The `tokensmith` binary: everything is in the library; see `cli`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tokensmith::cli::main().await
}
