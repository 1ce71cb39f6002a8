//! Logging, metrics and probes. Logs are text for people or JSON for log
//! pipelines; spans carry the resource's namespace and name, so every line
//! says what it is about.

pub mod endpoint;
pub mod metrics;

pub use endpoint::Readiness;
pub use metrics::{Metrics, TokenEvent};

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// The log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. `level` is an `EnvFilter` directive such
/// as `info` or `tokensmith=debug,kube=info`; `RUST_LOG` overrides it.
pub fn init(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.is_empty() => EnvFilter::try_new(directive)?,
        _ => EnvFilter::try_new(level)?,
    };
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        // Colours only for a person at a terminal: escape codes in a file or
        // a log pipeline are noise.
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
            )
            .try_init()?,
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()?,
    }
    Ok(())
}
