#[tokio::main]
async fn main() -> std::process::ExitCode {
    tokensmith::cli::main().await
}
