use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use kube::{Client, Config, config::KubeConfigOptions};
use tokensmith::telemetry::{self, LogFormat};

/// tokensmith: API access tokens declared as Kubernetes resources.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: reconcile issuers and AccessTokens.
    Run(Box<RunArgs>),
    /// Print the CRDs as YAML, or write them into `crds/` (and the chart's
    /// `crds/` when it exists) with --write.
    Crdgen {
        /// Write the files under this repository root instead of printing.
        #[arg(long, value_name = "REPO_ROOT")]
        write: Option<PathBuf>,
    },
}

#[derive(Args)]
struct RunArgs {
    /// The operator's namespace: ClusterTokenIssuer keys and the revocation
    /// record live here.
    #[arg(long, env = "POD_NAMESPACE", default_value = "tokensmith-system")]
    namespace: String,
    /// Names this instance in events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Base URL clients reach the token service at; AppRegistration Secrets
    /// get `<URL>/oauth/token` as `token-url`. Default:
    /// `https://tokensmith.<namespace>.svc`.
    #[arg(long, env = "TOKENSMITH_PUBLIC_URL")]
    public_url: Option<String>,
    /// Where the token service listens (HTTPS).
    #[arg(
        long,
        env = "TOKENSMITH_LISTEN_ADDRESS",
        default_value = "0.0.0.0:8443"
    )]
    listen_address: std::net::SocketAddr,
    /// A `kubernetes.io/tls` Secret (`[namespace/]name`, e.g. from
    /// cert-manager) to serve with. Without it, a CA and certificate are
    /// generated once and the CA is published in the ConfigMap `tokensmith-ca`.
    #[arg(long, env = "TOKENSMITH_TLS_SECRET")]
    tls_secret: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (plain HTTP).
    #[arg(
        long,
        env = "TOKENSMITH_METRICS_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    metrics_address: std::net::SocketAddr,
    /// Compete for a Lease so that only one replica reconciles; the token
    /// service runs on every replica either way.
    #[arg(long, env = "TOKENSMITH_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// The Lease (in --namespace) replicas compete for.
    #[arg(long, default_value = tokensmith::leader::LEASE_NAME, overrides_with = "lease_name")]
    lease_name: String,
    /// A kubeconfig to use instead of the in-cluster config or $KUBECONFIG.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    #[arg(long, value_enum, env = "TOKENSMITH_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `tokensmith=debug,kube=info` (RUST_LOG wins).
    #[arg(long, env = "TOKENSMITH_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(*args).await,
        Command::Crdgen { write: None } => {
            for (_, yaml) in tokensmith::crdgen::render() {
                print!("---\n{yaml}");
            }
            Ok(())
        }
        Command::Crdgen { write: Some(root) } => tokensmith::crdgen::write_all(&root)
            .map(|paths| paths.iter().for_each(|p| println!("wrote {}", p.display())))
            .map_err(|e| anyhow::anyhow!("could not write the CRDs under {}: {e}", root.display())),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, &args.log_level)?;
    let client = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
            let config =
                Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
            Client::try_from(config)?
        }
        None => Client::try_default().await?,
    };
    let public_url = args
        .public_url
        .unwrap_or_else(|| format!("https://tokensmith.{}.svc", args.namespace));
    let server = tokensmith::server::ServerConfig {
        listen: args.listen_address,
        tls_secret: args.tls_secret,
        dns_names: vec![
            "tokensmith".into(),
            format!("tokensmith.{}", args.namespace),
            format!("tokensmith.{}.svc", args.namespace),
            format!("tokensmith.{}.svc.cluster.local", args.namespace),
            "localhost".into(),
            "127.0.0.1".into(),
        ]
        .into_iter()
        .chain(public_host(&public_url))
        .collect(),
        namespace: args.namespace.clone(),
        public_url: public_url.clone(),
    };
    let identity = args
        .instance
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let config = tokensmith::controller::Config {
        namespace: args.namespace,
        instance: args.instance,
        public_url,
    };
    let metrics = tokensmith::telemetry::Metrics::shared();
    let readiness = tokensmith::telemetry::Readiness::default();
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown_signal()));
    let election = tokensmith::leader::Election {
        enabled: args.leader_elect,
        lease_name: args.lease_name,
        identity,
    };
    tokio::try_join!(
        tokensmith::leader::run_controllers_when_leading(
            client.clone(),
            config,
            metrics.clone(),
            election,
            shutdown.clone()
        ),
        tokensmith::server::run(
            client,
            server,
            metrics.clone(),
            readiness.clone(),
            shutdown.clone()
        ),
        tokensmith::telemetry::endpoint::serve(args.metrics_address, metrics, readiness, shutdown),
    )?;
    Ok(())
}

/// The host part of a URL, so the generated certificate is valid for the
/// name clients use.
fn public_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// The host's name, to tell replicas apart when no --instance is given.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tokensmith".into())
}

/// Completes on SIGTERM (what Kubernetes sends) or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}
