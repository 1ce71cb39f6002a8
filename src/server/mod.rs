//! The token service: HTTPS endpoints for verifiers and OAuth 2.0 clients,
//! answered from an in-memory index built from watches.

mod endpoints;
mod exchange;
mod index;
pub mod inspect;
pub mod limits;
mod lookup;
mod mint;
mod oauth;
mod refresh;
pub mod tls;
mod verified;
mod wellknown;

pub use index::Index;
pub use limits::ConnectionLimits;
pub use verified::REMEMBERED_BYTES;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{get, post},
};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use kube::Client;
use tracing::info;

use crate::{
    admission,
    cluster::{Watches, revocations::RevocationStore},
    telemetry::{Metrics, ReadyProbe},
};

/// The largest request body accepted; OAuth requests are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// How the token service is set up.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// A `kubernetes.io/tls` Secret (`[namespace/]name`) to serve with;
    /// otherwise a certificate is generated (see [`tls`]).
    pub tls_secret: Option<String>,
    /// The finalizer webhook's configuration, whose `caBundle` is kept set
    /// (see [`crate::admission`]).
    pub finalizer_webhook: Option<String>,
    /// Names the generated certificate is valid for.
    pub dns_names: Vec<String>,
    pub namespace: String,
    pub public_url: String,
    /// Token exchange also accepts API-audience service-account tokens.
    pub exchange_accepts_api_audience: bool,
    pub limits: ConnectionLimits,
}

/// What every request handler shares, behind one `Arc`: axum clones the
/// state for every request.
pub struct AppState {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub index: Index,
    pub revocations: RevocationStore,
    pub public_url: String,
    pub exchange_accepts_api_audience: bool,
}

/// The routes of the token service; a request must be answered within
/// `request_timeout`.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route("/oauth/token", post(endpoints::token))
        .route("/oauth/introspect", post(endpoints::introspect))
        .route("/oauth/revoke", post(endpoints::revoke))
        .route("/oauth/token/info", get(endpoints::token_info))
        .route("/oauth/userinfo", get(endpoints::userinfo))
        .merge(admission::router())
        .fallback(wellknown::serve)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(move |request, next| {
            limits::request_timeout(request_timeout, request, next)
        }))
        .layer(axum::middleware::from_fn(move |request, next| {
            measured(metrics.clone(), request, next)
        }))
        .with_state(Arc::new(state))
}

/// Answers `request` and counts it in the metrics by endpoint.
async fn measured(
    metrics: Arc<Metrics>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let endpoint = endpoint_of(request.uri().path());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics.http_request(endpoint, response.status().as_u16(), started.elapsed());
    response
}

/// The endpoint a path names, from a fixed set: a metric label must not
/// take whatever a client sends.
fn endpoint_of(path: &str) -> &'static str {
    match path {
        "/oauth/token" => "token",
        "/oauth/introspect" => "introspection",
        "/oauth/revoke" => "revocation",
        "/oauth/token/info" => "token_info",
        "/oauth/userinfo" => "userinfo",
        admission::PATH => "admission",
        p if p.ends_with("/.well-known/jwks.json") => "jwks",
        p if p.contains("/.well-known/") => "discovery",
        _ => "other",
    }
}

/// Serves until `shutdown` completes, answering from `index` over the
/// process's shared `watches`; `readiness` is set while it serves.
pub async fn run(
    client: Client,
    config: ServerConfig,
    metrics: Arc<Metrics>,
    readiness: ReadyProbe,
    watches: Watches,
    index: Index,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cert = serving_cert(&client, &config).await?;
    trust_webhook(&client, &config, &cert).await;
    let rustls = RustlsConfig::from_pem(cert.cert_pem.clone(), cert.key_pem.clone()).await?;
    tokio::spawn(keep_serving_cert_fresh(
        client.clone(),
        config.clone(),
        rustls.clone(),
        cert,
    ));
    // Stopping must not wait for a first list that may never come.
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    tokio::select! {
        listed = watches.listed() => {
            if !listed {
                anyhow::bail!("the watches stopped before their first list");
            }
        }
        _ = shutdown.clone() => return Ok(()),
    }
    let soonest = index.clone();
    metrics.soonest_expiry_from(move || {
        let now = k8s_openapi::jiff::Timestamp::now();
        soonest
            .soonest_expiry(now)
            .map(|at| (at.as_millisecond() - now.as_millisecond()) as f64 / 1000.0)
    });
    let state = AppState {
        client: client.clone(),
        metrics,
        revocations: RevocationStore::new(
            client.clone(),
            &config.namespace,
            index.revocations.clone(),
        ),
        index,
        public_url: config.public_url.clone(),
        exchange_accepts_api_audience: config.exchange_accepts_api_audience,
    };
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let announcer = handle.clone();
    tokio::spawn(async move {
        if let Some(address) = announcer.listening().await {
            info!(%address, "token service listening");
            readiness.set(true);
        }
    });
    let limits = config.limits;
    let acceptor = RustlsAcceptor::new(rustls)
        .handshake_timeout(limits.handshake_timeout)
        .acceptor(limits::LimitedAcceptor::new(&limits));
    let mut server = axum_server::bind(config.listen)
        .acceptor(acceptor)
        .first_request_timeout(limits.first_request_timeout)
        .handle(handle);
    server
        .http_builder()
        .http1()
        .header_read_timeout(limits.header_read_timeout);
    let served = server.serve(router(state, limits.request_timeout).into_make_service());
    served.await?;
    Ok(())
}

/// The certificate to serve: the named Secret's, or the generated one.
async fn serving_cert(client: &Client, config: &ServerConfig) -> anyhow::Result<tls::ServingCert> {
    match &config.tls_secret {
        Some(reference) => tls::from_secret(client, &config.namespace, reference).await,
        None => tls::generated(client, &config.namespace, config.dns_names.clone()).await,
    }
}

/// Sets the finalizer webhook's `caBundle` to the CA of `cert`, if there is
/// a webhook and the CA is known (a named Secret without `ca.crt` gives none).
async fn trust_webhook(client: &Client, config: &ServerConfig, cert: &tls::ServingCert) {
    let Some(webhook) = &config.finalizer_webhook else {
        return;
    };
    match &cert.ca_pem {
        Some(ca) => admission::ca_bundle::inject(client, webhook, ca).await,
        None => tracing::warn!(
            configuration = %webhook,
            "the TLS Secret has no ca.crt: set the finalizer webhook's caBundle yourself (cert-manager's cainjector does)"
        ),
    }
}

/// Looks at the serving certificate every [`tls::RECHECK_EVERY`] and
/// serves a new one as soon as there is one: the generated certificate
/// renewed or re-made (by this replica or another), or the named Secret
/// rotated by cert-manager. Connections already open keep theirs.
async fn keep_serving_cert_fresh(
    client: Client,
    config: ServerConfig,
    rustls: RustlsConfig,
    mut serving: tls::ServingCert,
) {
    loop {
        tokio::time::sleep(tls::RECHECK_EVERY).await;
        let fresh = match serving_cert(&client, &config).await {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::warn!(error = %error, "could not look at the serving certificate; serving the one loaded");
                continue;
            }
        };
        // Also mends a caBundle that a Helm upgrade emptied.
        trust_webhook(&client, &config, &fresh).await;
        if fresh == serving {
            continue;
        }
        match rustls
            .reload_from_pem(fresh.cert_pem.clone(), fresh.key_pem.clone())
            .await
        {
            Ok(()) => {
                info!("serving a new certificate");
                serving = fresh;
            }
            Err(error) => {
                tracing::warn!(%error, "the new serving certificate does not load; serving the one loaded")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint_of;

    #[test]
    fn request_metrics_name_a_fixed_set_of_endpoints() {
        let cases = [
            ("/oauth/token", "token"),
            ("/oauth/introspect", "introspection"),
            ("/oauth/revoke", "revocation"),
            ("/oauth/token/info", "token_info"),
            ("/oauth/userinfo", "userinfo"),
            ("/admission/accesstoken-finalizer", "admission"),
            ("/issuers/team-a/signer/.well-known/jwks.json", "jwks"),
            ("/.well-known/openid-configuration", "discovery"),
            ("/anything/a/client/made/up", "other"),
        ];
        for (path, endpoint) in cases {
            assert_eq!(endpoint_of(path), endpoint, "{path}");
        }
    }
}
