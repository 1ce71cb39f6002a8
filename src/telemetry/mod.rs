//! Logging, metrics and probes (and the allocator they report on). Logs
//! are text for people or JSON for log pipelines; spans carry the
//! resource's namespace and name, so every line says what it is about.

pub mod allocator;
pub mod endpoint;
mod json;
pub mod metrics;
mod process;

pub use endpoint::ReadyProbe;
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
    let directive = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.is_empty() => directive,
        _ => level.to_string(),
    };
    let filter = EnvFilter::try_new(with_quiet_client(&directive))?;
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
                    .fmt_fields(fmt::format::JsonFields::new())
                    .event_format(json::JsonLines),
            )
            .try_init()?,
    }
    Ok(())
}

/// The kube client logs every failed request (an error per retry of every
/// watch while the API server is down) and, when a response does not
/// decode, the whole response body (a LIST can be megabytes). The operator
/// logs the errors it gets itself, once per outage, so those are off unless
/// the directive names the kube client.
const QUIET_CLIENT: &str = "kube_client::client=error,kube_client::client::builder=off";

fn with_quiet_client(directive: &str) -> String {
    if directive.contains("kube_client") {
        directive.to_string()
    } else {
        format!("{directive},{QUIET_CLIENT}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kube_client_is_quiet_unless_asked_for() {
        assert_eq!(
            with_quiet_client("info"),
            "info,kube_client::client=error,kube_client::client::builder=off"
        );
        assert_eq!(with_quiet_client("kube_client=debug"), "kube_client=debug");
    }
}
