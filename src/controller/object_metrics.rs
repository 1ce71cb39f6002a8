//! Series per object, as cert-manager has per Certificate: when each
//! AccessToken's token expires and is renewed, when each app's client secret
//! and each issuer's signing key is next replaced, and whether each is
//! Ready. Computed from the shared caches at every scrape, so a series goes
//! with its object and nothing is kept between scrapes.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{ResourceExt, runtime::reflector::Store};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
};

use crate::{
    api::{
        AppRegistration, ClusterTokenIssuer, Issuer, IssuerStatus, TokenIssuer, ready_condition,
    },
    cluster::{CachedToken, Watches},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Named {
    namespace: String,
    name: String,
    issuer_kind: String,
    issuer_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WithCondition {
    namespace: String,
    name: String,
    issuer_kind: String,
    issuer_name: String,
    condition: &'static str,
}

/// The per-object series of the watched AccessTokens, apps and issuers.
pub struct ObjectMetrics {
    tokens: Store<CachedToken>,
    apps: Store<AppRegistration>,
    token_issuers: Store<TokenIssuer>,
    cluster_issuers: Store<ClusterTokenIssuer>,
}

impl fmt::Debug for ObjectMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ObjectMetrics")
    }
}

impl ObjectMetrics {
    pub fn new(watches: &Watches) -> Self {
        Self {
            tokens: watches.access_tokens.store(),
            apps: watches.apps.store(),
            token_issuers: watches.token_issuers.store(),
            cluster_issuers: watches.cluster_issuers.store(),
        }
    }
}

/// One gauge family: `rows` are (labels, value).
fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Named, i64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The Ready family: 1 for the condition status each object has, 0 for
/// the other two, as cert-manager's `certificate_ready_status`.
fn ready(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Named, Option<String>)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, status) in rows {
        let status = status.as_deref().unwrap_or("Unknown");
        for condition in ["True", "False", "Unknown"] {
            let labels = WithCondition {
                namespace: labels.namespace.clone(),
                name: labels.name.clone(),
                issuer_kind: labels.issuer_kind.clone(),
                issuer_name: labels.issuer_name.clone(),
                condition,
            };
            let value = i64::from(status == condition);
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn ready_status(conditions: &[Condition]) -> Option<String> {
    ready_condition(conditions).map(|c| c.status.clone())
}

/// When an issuer's active key retires, and whether it is Ready.
fn issuer_rows<I: Issuer>(issuers: &Store<I>) -> Vec<(Named, Option<i64>, Option<String>)> {
    issuers
        .state()
        .iter()
        .map(|issuer| {
            let labels = Named {
                namespace: issuer.namespace().unwrap_or_default(),
                name: issuer.name_any(),
                issuer_kind: I::KIND.as_str().to_string(),
                issuer_name: issuer.name_any(),
            };
            let status = issuer.issuer_status();
            let retires = status.and_then(|s: &IssuerStatus| {
                let active = s.active_key_id.as_ref()?;
                let key = s.keys.iter().find(|k| &k.kid == active)?;
                Some(key.retires_at.as_ref()?.0.as_second())
            });
            (
                labels,
                retires,
                status.and_then(|s| ready_status(&s.conditions)),
            )
        })
        .collect()
}

impl Collector for ObjectMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let tokens = self.tokens.state();
        let token_labels = |t: &CachedToken| Named {
            namespace: t.namespace().unwrap_or_default(),
            name: t.name_any(),
            issuer_kind: t.summary().issuer_kind.as_str().to_string(),
            issuer_name: t.summary().issuer_name.to_string(),
        };
        gauges(
            &mut encoder,
            "access_token_expiration_timestamp_seconds",
            "When the AccessToken's current token expires (Unix time)",
            tokens.iter().filter_map(|t| {
                let at = t.summary().expires_at?.as_second();
                Some((token_labels(t), at))
            }),
        )?;
        gauges(
            &mut encoder,
            "access_token_renewal_timestamp_seconds",
            "When the AccessToken's token is due to be replaced (Unix time); absent when it is not renewed",
            tokens.iter().filter_map(|t| {
                let at = t.summary().renewal_time?.as_second();
                Some((token_labels(t), at))
            }),
        )?;
        ready(
            &mut encoder,
            "access_token_ready_status",
            "The AccessToken's Ready condition: 1 for its status (True, False or Unknown)",
            tokens.iter().map(|t| {
                (
                    token_labels(t),
                    t.summary().ready.as_deref().map(str::to_string),
                )
            }),
        )?;

        let apps = self.apps.state();
        let app_labels = |a: &AppRegistration| {
            let issuer = a.spec.issuer_ref();
            Named {
                namespace: a.namespace().unwrap_or_default(),
                name: a.name_any(),
                issuer_kind: issuer.kind().as_str().to_string(),
                issuer_name: issuer.name,
            }
        };
        gauges(
            &mut encoder,
            "app_registration_secret_rotation_timestamp_seconds",
            "When the app's client secret is next rotated (Unix time); absent without clientSecretRotation",
            apps.iter().filter_map(|a| {
                let rotated = a.status.as_ref()?.secret_rotated_at.as_ref()?.0;
                let interval = a
                    .spec
                    .client_secret_rotation
                    .as_ref()?
                    .interval
                    .to_std()
                    .ok()?;
                let next = rotated.checked_add(interval).ok()?;
                Some((app_labels(a), next.as_second()))
            }),
        )?;
        ready(
            &mut encoder,
            "app_registration_ready_status",
            "The AppRegistration's Ready condition: 1 for its status (True, False or Unknown)",
            apps.iter().map(|a| {
                let status = a.status.as_ref().and_then(|s| ready_status(&s.conditions));
                (app_labels(a), status)
            }),
        )?;

        let issuers: Vec<_> = issuer_rows(&self.token_issuers)
            .into_iter()
            .chain(issuer_rows(&self.cluster_issuers))
            .collect();
        gauges(
            &mut encoder,
            "issuer_key_rotation_timestamp_seconds",
            "When the issuer's active signing key is replaced (Unix time)",
            issuers
                .iter()
                .filter_map(|(labels, at, _)| Some((labels.clone(), (*at)?))),
        )?;
        ready(
            &mut encoder,
            "issuer_ready_status",
            "The issuer's Ready condition: 1 for its status (True, False or Unknown)",
            issuers
                .into_iter()
                .map(|(labels, _, status)| (labels, status)),
        )
    }
}
