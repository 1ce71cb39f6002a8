//! Prometheus metrics (OpenMetrics text), all in one registry that the
//! controllers, the token service and leader election share.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicI64, AtomicU64},
    },
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    endpoint: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

/// A collector set after the registry is built (the watched objects exist
/// only once the process runs): encodes nothing until then.
#[derive(Debug, Default, Clone)]
struct Deferred(Arc<OnceLock<Box<dyn Collector>>>);

impl Collector for Deferred {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match self.0.get() {
            Some(collector) => collector.encode(encoder),
            None => Ok(()),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenRequestLabels {
    grant: String,
    outcome: String,
}

/// What happened to a token, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenEvent {
    Issued,
    Rotated,
    Revoked,
    Expired,
}

/// Computes the soonest expiry at scrape time, from whatever knows the tokens.
type ExpirySource = Box<dyn Fn() -> Option<f64> + Send + Sync>;

/// Every metric of the operator.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_duration: Family<KindLabels, Histogram>,
    issued: Counter,
    rotated: Counter,
    revoked: Counter,
    expired: Counter,
    soonest_expiry: Gauge<f64, AtomicU64>,
    token_requests: Family<TokenRequestLabels, Counter>,
    leader: Gauge<i64, AtomicI64>,
    heap_allocated: Gauge<i64, AtomicI64>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<EndpointLabels, Histogram>,
    objects: Deferred,
    soonest_expiry_source: OnceLock<ExpirySource>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tokensmith");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by kind and result (ok or error)",
            reconciles.clone(),
        );
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            // 1 ms to ~16 s.
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciles take, by kind",
            reconcile_duration.clone(),
        );
        let issued = Counter::default();
        registry.register(
            "tokens_issued",
            "AccessToken tokens minted for the first time",
            issued.clone(),
        );
        let rotated = Counter::default();
        registry.register(
            "tokens_rotated",
            "AccessToken tokens replaced by a new one",
            rotated.clone(),
        );
        let revoked = Counter::default();
        registry.register(
            "tokens_revoked",
            "AccessToken tokens revoked (deleted or revoked: true)",
            revoked.clone(),
        );
        let expired = Counter::default();
        registry.register(
            "tokens_expired",
            "AccessToken tokens deleted at expiry (onExpiry: Delete)",
            expired.clone(),
        );
        let soonest_expiry = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "soonest_token_expiry_seconds",
            "Seconds until the soonest-expiring live AccessToken token expires (0 when there is none)",
            soonest_expiry.clone(),
        );
        let token_requests = Family::<TokenRequestLabels, Counter>::default();
        registry.register(
            "token_requests",
            "Requests to /oauth/token by grant type and outcome (ok or the OAuth error code)",
            token_requests.clone(),
        );
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "leader",
            "1 while this instance leads (runs the reconcilers), else 0",
            leader.clone(),
        );
        let heap_allocated = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "heap_allocated_bytes",
            "Bytes the allocator has handed out and not taken back (glibc's mallinfo2); beside the resident set size it tells live data from fragmentation",
            heap_allocated.clone(),
        );
        registry.register(
            "build",
            "The operator's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests to the token service by endpoint and status class (2xx, 4xx, 5xx)",
            http_requests.clone(),
        );
        let http_duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            // 100 µs to ~1.6 s.
            Histogram::new(exponential_buckets(0.0001, 2.0, 15))
        });
        registry.register(
            "http_request_duration_seconds",
            "How long the token service takes to answer, by endpoint",
            http_duration.clone(),
        );
        let objects = Deferred::default();
        registry.register_collector(Box::new(objects.clone()));
        registry.register_collector(Box::new(super::process::ProcessMetrics));
        Self {
            registry,
            heap_allocated,
            http_requests,
            http_duration,
            objects,
            reconciles,
            reconcile_duration,
            issued,
            rotated,
            revoked,
            expired,
            soonest_expiry,
            token_requests,
            leader,
            soonest_expiry_source: OnceLock::new(),
        }
    }

    pub fn shared() -> Arc<Self> {
        Arc::new(Self::new())
    }

    /// Counts a finished reconcile of `kind`.
    pub fn reconciled(&self, kind: &'static str, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&ReconcileLabels { kind, result })
            .inc();
        self.reconcile_duration
            .get_or_create(&KindLabels { kind })
            .observe(took.as_secs_f64());
    }

    pub fn token_event(&self, event: TokenEvent) {
        match event {
            TokenEvent::Issued => self.issued.inc(),
            TokenEvent::Rotated => self.rotated.inc(),
            TokenEvent::Revoked => self.revoked.inc(),
            TokenEvent::Expired => self.expired.inc(),
        };
    }

    /// Counts a request to the token endpoint.
    pub fn token_request(&self, grant: &str, outcome: &str) {
        // Unknown grant types are client input: one label value for all of
        // them keeps the series count bounded.
        let grant = match grant {
            "client_credentials"
            | "refresh_token"
            | "urn:ietf:params:oauth:grant-type:token-exchange" => grant,
            "" => "none",
            _ => "other",
        };
        self.token_requests
            .get_or_create(&TokenRequestLabels {
                grant: grant.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts a request the token service answered at `endpoint` (one of a
    /// fixed set, so the series stay bounded).
    pub fn http_request(&self, endpoint: &'static str, status: u16, took: Duration) {
        let code = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_requests
            .get_or_create(&HttpLabels { endpoint, code })
            .inc();
        self.http_duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(took.as_secs_f64());
    }

    /// Encodes per-object series with `collector` at every scrape (the
    /// first collector set wins): series come and go with their objects.
    pub fn collect_objects_with(&self, collector: impl Collector) {
        let _ = self.objects.0.set(Box::new(collector));
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn set_soonest_expiry(&self, seconds: Option<f64>) {
        self.soonest_expiry.set(seconds.unwrap_or(0.0).max(0.0));
    }

    /// Computes the soonest expiry with `source` at every scrape (the first
    /// source set wins).
    pub fn soonest_expiry_from(&self, source: impl Fn() -> Option<f64> + Send + Sync + 'static) {
        let _ = self.soonest_expiry_source.set(Box::new(source));
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        if let Some(source) = self.soonest_expiry_source.get() {
            self.set_soonest_expiry(source());
        }
        if let Some(bytes) = super::allocator::allocated_bytes() {
            self.heap_allocated.set(bytes);
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counted_values() {
        let metrics = Metrics::new();
        metrics.reconciled("AccessToken", true, Duration::from_millis(3));
        metrics.reconciled("AccessToken", false, Duration::from_millis(3));
        metrics.token_event(TokenEvent::Issued);
        metrics.token_request("client_credentials", "ok");
        metrics.token_request("password", "unsupported_grant_type");
        metrics.set_leader(true);
        metrics.set_soonest_expiry(Some(42.5));
        let text = metrics.render();
        assert!(
            text.contains(r#"tokensmith_reconciles_total{kind="AccessToken",result="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tokensmith_reconciles_total{kind="AccessToken",result="error"} 1"#)
        );
        assert!(text.contains("tokensmith_tokens_issued_total 1"));
        assert!(text.contains("tokensmith_tokens_rotated_total 0"));
        assert!(text.contains(
            r#"tokensmith_token_requests_total{grant="other",outcome="unsupported_grant_type"} 1"#
        ));
        assert!(text.contains("tokensmith_leader 1"));
        assert!(text.contains("tokensmith_soonest_token_expiry_seconds 42.5"));
        assert!(
            text.contains(r#"tokensmith_reconcile_duration_seconds_count{kind="AccessToken"} 2"#)
        );
    }

    #[test]
    fn the_process_and_the_build_are_described() {
        let text = Metrics::new().render();
        for series in [
            "tokensmith_build_info{version=",
            "tokensmith_process_cpu_seconds_total ",
            "tokensmith_process_resident_memory_bytes ",
            "tokensmith_process_open_fds ",
            "tokensmith_process_start_time_seconds ",
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
    }
}
