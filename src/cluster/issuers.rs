//! Resolving an `issuerRef` to a ready issuer, from the watched stores, for
//! the reconcilers and the token service alike; which issuer serves a URL.

use std::time::Duration;

use k8s_openapi::{api::core::v1::Namespace, jiff::Timestamp};
use kube::{
    ResourceExt,
    core::{PartialObjectMeta, Selector, SelectorExt},
    runtime::reflector::{ObjectRef, Store},
};

use super::keyrings::key_secret_location;
use crate::api::{
    ClusterTokenIssuer, Issuer, IssuerKind, IssuerRef, IssuerSettings, TokenIssuer, ready_condition,
};

/// Why an issuer cannot be used: the Ready reason and message its user
/// should see, and when to look again (`None`: at the next change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    pub reason: &'static str,
    pub message: String,
    pub retry: Option<Duration>,
}

impl Unresolved {
    fn new(reason: &'static str, message: String, retry: Option<Duration>) -> Self {
        Self {
            reason,
            message,
            retry,
        }
    }
}

pub use crate::api::reason::{INVALID_SPEC, ISSUER_NOT_READY};

/// The path part of an issuer URL, without a trailing `/`: what the token
/// service serves an issuer at, and so what must be unique in the cluster.
pub fn served_path(issuer_url: &str) -> Option<&str> {
    let rest = issuer_url
        .strip_prefix("https://")
        .or_else(|| issuer_url.strip_prefix("http://"))?;
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    Some(path.trim_end_matches('/'))
}

/// An issuer claiming the path of its URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlClaimant {
    pub kind: IssuerKind,
    /// `None` for a ClusterTokenIssuer.
    pub namespace: Option<String>,
    pub name: String,
    pub created: Option<Timestamp>,
}

impl UrlClaimant {
    pub fn of<I: Issuer>(issuer: &I) -> Self {
        Self {
            kind: I::KIND,
            namespace: issuer.namespace(),
            name: issuer.name_any(),
            created: issuer.creation_timestamp().map(|t| t.0),
        }
    }

    /// `ClusterTokenIssuer default` or `TokenIssuer team-a/own`, for messages.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{} {namespace}/{}", self.kind.as_str(), self.name),
            None => format!("{} {}", self.kind.as_str(), self.name),
        }
    }
}

/// Which of the issuers claiming one path serves it: a ClusterTokenIssuer
/// before any TokenIssuer (so a tenant cannot squat a cluster-wide issuer's
/// URL, not even one created after theirs, e.g. across a reinstall), then
/// the oldest, then by namespace and name, so every replica agrees.
pub fn url_owner(claimants: impl IntoIterator<Item = UrlClaimant>) -> Option<UrlClaimant> {
    claimants.into_iter().min_by(|a, b| {
        let rank = |c: &UrlClaimant| {
            (
                c.kind != IssuerKind::ClusterTokenIssuer,
                c.created.unwrap_or(Timestamp::MAX),
                c.namespace.clone(),
                c.name.clone(),
            )
        };
        rank(a).cmp(&rank(b))
    })
}

/// An issuer ready to sign.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedIssuer {
    pub kind: IssuerKind,
    pub name: String,
    pub settings: IssuerSettings,
    pub active_key_id: String,
    /// (namespace, name) of the Secret holding its keys.
    pub key_secret: (String, String),
}

/// The watched issuers and namespaces resolution looks at.
#[derive(Clone)]
pub struct IssuerStores {
    pub token_issuers: Store<TokenIssuer>,
    pub cluster_issuers: Store<ClusterTokenIssuer>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
}

impl IssuerStores {
    /// Whether `namespace` is being deleted: nothing can be created in it
    /// any more, and what it holds is about to go.
    pub fn namespace_terminating(&self, namespace: &str) -> bool {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .is_some_and(|ns| ns.metadata.deletion_timestamp.is_some())
    }

    /// Every watched issuer whose URL has the path of `issuer_url`.
    pub fn claimants_of(&self, issuer_url: &str) -> Vec<UrlClaimant> {
        let Some(path) = served_path(issuer_url) else {
            return Vec::new();
        };
        let claims = |url: &str| served_path(url) == Some(path);
        let cluster = self
            .cluster_issuers
            .state()
            .into_iter()
            .filter(|i| claims(&i.settings().issuer_url))
            .map(|i| UrlClaimant::of(i.as_ref()));
        let namespaced = self
            .token_issuers
            .state()
            .into_iter()
            .filter(|i| claims(&i.settings().issuer_url))
            .map(|i| UrlClaimant::of(i.as_ref()));
        cluster.chain(namespaced).collect()
    }

    /// The issuer that serves the path of `issuer_url`, among all watched.
    pub fn url_owner_of(&self, issuer_url: &str) -> Option<UrlClaimant> {
        url_owner(self.claimants_of(issuer_url))
    }

    /// `Err` with the issuer that serves `issuer`'s URL when that is another.
    /// `issuer` itself counts as it is, even before the stores show it.
    pub fn check_url<I: Issuer>(&self, issuer: &I) -> Result<(), UrlClaimant> {
        let own = UrlClaimant::of(issuer);
        let same = |c: &UrlClaimant| {
            c.kind == own.kind && c.namespace == own.namespace && c.name == own.name
        };
        let others = self
            .claimants_of(&issuer.settings().issuer_url)
            .into_iter()
            .filter(|c| !same(c));
        match url_owner(others.chain([own.clone()])) {
            Some(owner) if !same(&owner) => Err(owner),
            _ => Ok(()),
        }
    }

    /// The issuer `issuer_ref` names for a resource in `namespace`, or the
    /// condition to report and when to look again.
    pub fn resolve(
        &self,
        issuer_ref: &IssuerRef,
        namespace: &str,
        operator_namespace: &str,
    ) -> Result<ResolvedIssuer, Unresolved> {
        let not_found = |kind: &str| {
            let message = format!(
                "{kind} {} not found; create it, or set spec.issuerRef to an existing issuer",
                issuer_ref.name
            );
            Unresolved::new(ISSUER_NOT_READY, message, Some(Duration::from_secs(60)))
        };
        match issuer_ref.kind() {
            IssuerKind::ClusterTokenIssuer => {
                let issuer = self
                    .cluster_issuers
                    .get(&ObjectRef::new(&issuer_ref.name))
                    .ok_or_else(|| not_found("ClusterTokenIssuer"))?;
                if let Some(selector) = issuer.namespace_selector() {
                    let labels = self
                        .namespaces
                        .get(&ObjectRef::new(namespace))
                        .and_then(|ns| ns.metadata.labels.clone())
                        .unwrap_or_default();
                    let admitted =
                        Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(&labels));
                    if !admitted {
                        let message = format!(
                            "namespace {namespace} is not selected by the namespaceSelector of ClusterTokenIssuer {}",
                            issuer_ref.name
                        );
                        return Err(Unresolved::new(INVALID_SPEC, message, None));
                    }
                }
                self.serving(issuer.as_ref())?;
                ready(issuer.as_ref(), operator_namespace)
            }
            IssuerKind::TokenIssuer => {
                let issuer = self
                    .token_issuers
                    .get(&ObjectRef::new(&issuer_ref.name).within(namespace))
                    .ok_or_else(|| not_found("TokenIssuer"))?;
                self.serving(issuer.as_ref())?;
                ready(issuer.as_ref(), operator_namespace)
            }
        }
    }
}

impl IssuerStores {
    /// Refuses an issuer that lost its URL to another.
    fn serving<I: Issuer>(&self, issuer: &I) -> Result<(), Unresolved> {
        self.check_url(issuer).map_err(|owner| {
            let message = format!(
                "{} {} is not served: its issuerURL belongs to {}",
                I::KIND.as_str(),
                issuer.name_any(),
                owner.describe()
            );
            Unresolved::new(ISSUER_NOT_READY, message, Some(Duration::from_secs(60)))
        })
    }
}

fn ready<I: Issuer>(issuer: &I, operator_namespace: &str) -> Result<ResolvedIssuer, Unresolved> {
    let status = issuer.issuer_status();
    let ready = status
        .and_then(|s| ready_condition(&s.conditions))
        .filter(|c| c.status == "True");
    let active_key_id = status.and_then(|s| s.active_key_id.clone());
    match (ready, active_key_id) {
        (Some(_), Some(active_key_id)) => Ok(ResolvedIssuer {
            kind: I::KIND,
            name: issuer.name_any(),
            settings: issuer.settings().clone(),
            active_key_id,
            key_secret: key_secret_location(issuer, operator_namespace),
        }),
        _ => {
            let why = status
                .and_then(|s| ready_condition(&s.conditions))
                .map(|c| format!(": {}", c.message))
                .unwrap_or_default();
            let message = format!(
                "{} {} is not ready{why}",
                I::KIND.as_str(),
                issuer.name_any()
            );
            Err(Unresolved::new(
                ISSUER_NOT_READY,
                message,
                Some(Duration::from_secs(30)),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimant(kind: IssuerKind, name: &str, created: &str) -> UrlClaimant {
        UrlClaimant {
            kind,
            namespace: (kind == IssuerKind::TokenIssuer).then(|| "team".to_string()),
            name: name.into(),
            created: Some(created.parse().unwrap()),
        }
    }

    #[test]
    fn the_path_is_what_must_be_unique() {
        assert_eq!(
            served_path("https://a.example/issuers/x/"),
            Some("/issuers/x")
        );
        assert_eq!(
            served_path("https://b.example:8443/issuers/x"),
            Some("/issuers/x")
        );
        assert_eq!(served_path("https://a.example"), Some(""));
        assert_eq!(served_path("ftp://a.example/x"), None);
    }

    #[test]
    fn url_owner_prefers_cluster_issuers_then_the_oldest() {
        use IssuerKind::{ClusterTokenIssuer as Cluster, TokenIssuer as Namespaced};
        let cases = [
            // (claimants, winner)
            (
                vec![
                    claimant(Namespaced, "old", "2020-01-01T00:00:00Z"),
                    claimant(Cluster, "young", "2026-01-01T00:00:00Z"),
                ],
                "young",
            ),
            (
                vec![
                    claimant(Namespaced, "b", "2026-01-02T00:00:00Z"),
                    claimant(Namespaced, "a", "2026-01-01T00:00:00Z"),
                ],
                "a",
            ),
            (
                vec![
                    claimant(Cluster, "b", "2026-01-01T00:00:00Z"),
                    claimant(Cluster, "a", "2026-01-01T00:00:00Z"),
                ],
                "a",
            ),
            (
                vec![claimant(Namespaced, "only", "2026-01-01T00:00:00Z")],
                "only",
            ),
        ];
        for (claimants, winner) in cases {
            assert_eq!(
                url_owner(claimants.clone()).unwrap().name,
                winner,
                "{claimants:?}"
            );
        }
        assert_eq!(url_owner(Vec::new()), None);
    }
}
