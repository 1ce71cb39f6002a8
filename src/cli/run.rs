//! `tokensmith run`: the operator. Reconcilers (on the leader), the token
//! service and the metrics/probe endpoint, until SIGTERM.

use clap::Args;

use super::KubeArgs;
use crate::{
    cluster::Watches,
    controller, leader, server,
    telemetry::{self, LogFormat, Metrics, ReadyProbe},
};

#[derive(Args)]
pub struct RunArgs {
    /// The operator's namespace: ClusterTokenIssuer keys and the revocation
    /// record live here.
    #[arg(long, env = "POD_NAMESPACE", default_value = "tokensmith-system")]
    namespace: String,
    /// Names this instance in events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Base URL clients reach the token service at; AppRegistration Secrets
    /// get `<URL>/oauth/token` as `token-url`. Default:
    /// `https://<service-name>.<namespace>.svc`.
    #[arg(long, env = "TOKENSMITH_PUBLIC_URL", overrides_with = "public_url")]
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
    /// The MutatingWebhookConfiguration of the finalizer webhook (the
    /// chart's `finalizerWebhook`): the operator keeps its `caBundle` set to
    /// the CA of the certificate it serves with.
    #[arg(long, env = "TOKENSMITH_FINALIZER_WEBHOOK")]
    finalizer_webhook: Option<String>,
    /// The token service's Service in the operator's namespace: the
    /// generated certificate names it (`NAME.<namespace>.svc` and the
    /// like), as the API server calls the finalizer webhook there.
    #[arg(long, env = "TOKENSMITH_SERVICE_NAME", default_value = "tokensmith")]
    service_name: String,
    /// Token exchange: also accept service-account tokens whose audience is
    /// the Kubernetes API server (any token a pod mounts by default), not
    /// only those made for this token service's --public-url. Off by
    /// default: a leaked API token should not also buy OAuth tokens.
    #[arg(long, env = "TOKENSMITH_EXCHANGE_ACCEPTS_API_AUDIENCE", default_value_t = false, action = clap::ArgAction::Set)]
    exchange_accepts_api_audience: bool,
    /// The token service's connections open at once; more are closed on
    /// accept.
    #[arg(long, env = "TOKENSMITH_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// A TLS handshake must be done within this.
    #[arg(long, env = "TOKENSMITH_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration)]
    tls_handshake_timeout: std::time::Duration,
    /// A connection's first request must arrive within this after the handshake.
    #[arg(long, env = "TOKENSMITH_FIRST_REQUEST_TIMEOUT", default_value = "10s", value_parser = duration)]
    first_request_timeout: std::time::Duration,
    /// A request's headers must arrive within this (the wait of a kept-alive
    /// HTTP/1 connection for its next request included).
    #[arg(long, env = "TOKENSMITH_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration)]
    header_read_timeout: std::time::Duration,
    /// A request, its body included, must be answered within this.
    #[arg(long, env = "TOKENSMITH_REQUEST_TIMEOUT", default_value = "30s", value_parser = duration)]
    request_timeout: std::time::Duration,
    /// A connection that sends and receives nothing for this long is closed.
    #[arg(long, env = "TOKENSMITH_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    idle_timeout: std::time::Duration,
    /// Revocation entries one namespace may hold in the cluster-wide
    /// revocation record; beyond it, that namespace's AccessTokens wait to
    /// mint (condition RevocationQuotaExceeded) until entries expire.
    /// Revoking is never refused.
    #[arg(long, env = "TOKENSMITH_REVOCATION_QUOTA", default_value_t = 1000)]
    revocation_quota: usize,
    /// A ClusterTokenIssuer manifest (YAML) the leader applies at start
    /// whenever the cluster's differs (the Helm chart's default issuer).
    /// It is never deleted by the operator.
    #[arg(long, env = "TOKENSMITH_DEFAULT_ISSUER")]
    default_issuer: Option<std::path::PathBuf>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (plain HTTP).
    #[arg(
        long,
        env = "TOKENSMITH_METRICS_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    metrics_address: std::net::SocketAddr,
    /// Compete for a Lease so that only one replica reconciles; the token
    /// service runs on every replica either way.
    #[arg(long, env = "TOKENSMITH_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set, overrides_with = "leader_elect")]
    leader_elect: bool,
    /// The Lease (in --namespace) replicas compete for.
    #[arg(long, default_value = leader::LEASE_NAME, overrides_with = "lease_name")]
    lease_name: String,
    #[command(flatten)]
    kube: KubeArgs,
    #[arg(long, value_enum, env = "TOKENSMITH_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `tokensmith=debug,kube=info` (RUST_LOG wins).
    #[arg(long, env = "TOKENSMITH_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, &args.log_level)?;
    let client = args.kube.client().await?;
    let public_url = args
        .public_url
        .unwrap_or_else(|| format!("https://{}.{}.svc", args.service_name, args.namespace));
    let server = server::ServerConfig {
        listen: args.listen_address,
        tls_secret: args.tls_secret,
        finalizer_webhook: args.finalizer_webhook,
        dns_names: vec![
            args.service_name.clone(),
            format!("{}.{}", args.service_name, args.namespace),
            format!("{}.{}.svc", args.service_name, args.namespace),
            format!("{}.{}.svc.cluster.local", args.service_name, args.namespace),
            "localhost".into(),
            "127.0.0.1".into(),
        ]
        .into_iter()
        .chain(public_host(&public_url))
        .collect(),
        namespace: args.namespace.clone(),
        public_url: public_url.clone(),
        exchange_accepts_api_audience: args.exchange_accepts_api_audience,
        limits: server::ConnectionLimits {
            max_connections: args.max_connections,
            handshake_timeout: args.tls_handshake_timeout,
            first_request_timeout: args.first_request_timeout,
            header_read_timeout: args.header_read_timeout,
            request_timeout: args.request_timeout,
            idle_timeout: args.idle_timeout,
        },
    };
    let identity = args
        .instance
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let default_issuer = args
        .default_issuer
        .as_deref()
        .map(controller::default_issuer::load)
        .transpose()?;
    let config = controller::Config {
        namespace: args.namespace,
        instance: args.instance,
        public_url,
        revocation_quota: args.revocation_quota,
        default_issuer,
    };
    // One watch per kind for the whole process, shared by the token service
    // (every replica) and the reconcilers (the leader).
    let (watches, mut pending) = Watches::new(&client, &config.namespace);
    let index = server::Index::new(&watches, &mut pending, &config.namespace);
    let watching = tokio::spawn(pending.run());
    tokio::spawn(telemetry::allocator::release_free_memory_periodically());
    let metrics = Metrics::shared();
    metrics.collect_objects_with(controller::object_metrics::ObjectMetrics::new(&watches));
    let readiness = ReadyProbe::default();
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown_signal()));
    let election = leader::Election {
        enabled: args.leader_elect,
        lease_name: args.lease_name,
        identity,
    };
    // Each part in a task of its own: the reconcilers must never depend on
    // the token service's futures being polled, nor the other way round.
    let controllers = tokio::spawn(leader::run_controllers_when_leading(
        client.clone(),
        config,
        metrics.clone(),
        watches.clone(),
        election,
        shutdown.clone(),
    ));
    let token_service = tokio::spawn(server::run(
        client,
        server,
        metrics.clone(),
        readiness.clone(),
        watches,
        index,
        shutdown.clone(),
    ));
    let probes = tokio::spawn(telemetry::endpoint::serve(
        args.metrics_address,
        metrics,
        readiness,
        shutdown,
    ));
    let joined = |result: Result<anyhow::Result<()>, tokio::task::JoinError>| {
        result.map_err(anyhow::Error::from).and_then(|r| r)
    };
    let watches_ended = async {
        watching.await?;
        anyhow::bail!("the shared watches ended")
    };
    tokio::select! {
        result = async {
            tokio::try_join!(
                async { joined(controllers.await) },
                async { joined(token_service.await) },
                async { joined(probes.await) },
            )
        } => { result?; }
        result = watches_ended => result?,
    }
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

/// A duration flag in Go's notation (`10s`, `1m30s`), as in the CRDs.
fn duration(text: &str) -> Result<std::time::Duration, String> {
    crate::api::parse_go_duration(text).map_err(|e| e.to_string())
}
