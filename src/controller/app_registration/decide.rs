//! The choice of an AppRegistration's next step, and the status that
//! follows from it: pure functions of what the reconciler observed, each
//! Ready reason and transition a row in a table test.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::record::{self, RecordedSecret};
use crate::{
    api::{AppRegistrationSpec, AppRegistrationStatus, IssuerSettings, reason},
    cluster::issuers::{ResolvedIssuer, Unresolved},
    controller::{
        conditions::Readiness,
        status::{Blocked, ReadyStatus},
    },
};

/// The app's Secret, as far as the choice depends on it.
#[derive(Clone, Debug, PartialEq)]
pub enum SecretSeen {
    Absent,
    /// Exists and is not controlled by this AppRegistration: never touched.
    Foreign,
    Ours {
        /// Its data is the operator's and its hash annotation names this one.
        holds_hash: Option<String>,
        /// The hash of the settings its other keys were written from.
        settings_hash: Option<String>,
    },
}

/// What the reconciler observed.
pub struct Observed<'a> {
    pub spec: &'a AppRegistrationSpec,
    pub namespace: &'a str,
    pub secret_name: &'a str,
    pub status: Option<&'a AppRegistrationStatus>,
    pub namespace_terminating: bool,
    pub issuer: Result<ResolvedIssuer, Unresolved>,
    pub secret: SecretSeen,
    /// Where clients reach the token service (written to the Secret).
    pub public_url: &'a str,
    /// The caches were bypassed: what was observed is the API server's word.
    pub fresh: bool,
    pub now: Timestamp,
}

/// Why a new client secret is issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueReason {
    /// The app's first.
    Registered,
    /// The Secret was deleted or edited: the old secret stops working.
    Replaced,
    /// Scheduled rotation: the old secret works for the grace period.
    Rotated,
}

impl IssueReason {
    /// The event reason and note of an issue for client `client_id` in
    /// Secret `secret`.
    pub fn event(self, client_id: &str, secret: &str) -> (&'static str, String) {
        match self {
            Self::Registered => (
                "Registered",
                format!("Client {client_id} registered; its secret is in Secret {secret}"),
            ),
            Self::Replaced => (
                "SecretReplaced",
                format!(
                    "Secret {secret} was deleted or edited: a new client secret was issued and the old one no longer works"
                ),
            ),
            Self::Rotated => (
                "SecretRotated",
                "The client secret was rotated; the previous one works until its grace period ends"
                    .into(),
            ),
        }
    }
}

/// What the reconciler does next.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Wait,
    Blocked(Blocked),
    /// The Secret and the record disagree: look again without the caches.
    Recheck,
    /// Issue a new client secret; the replaced one stays valid until the
    /// given time (a scheduled rotation) or not at all.
    Issue {
        why: IssueReason,
        grace: Option<(String, Timestamp)>,
        issuer: ResolvedIssuer,
        rotation: Option<(Duration, Duration)>,
    },
    /// The recorded secret stays; the Secret's other keys are rewritten
    /// when they were written from other settings.
    Keep {
        record: RecordedSecret,
        rewrite_secret: bool,
        issuer: ResolvedIssuer,
        rotation: Option<(Duration, Duration)>,
    },
}

fn blocked(reason: &'static str, message: impl Into<String>, retry: Option<u64>) -> Decision {
    Decision::Blocked(Blocked::new(reason, message, retry))
}

/// The next step; see [`Decision`].
pub fn decide(observed: Observed) -> Decision {
    let Observed {
        spec,
        namespace,
        now,
        ..
    } = observed;
    if observed.namespace_terminating {
        // Its Secret could not be written, and the app itself goes next.
        return Decision::Wait;
    }
    let issuer = match observed.issuer {
        Ok(issuer) => issuer,
        Err(unresolved) => return Decision::Blocked(unresolved.into()),
    };
    let allowed = issuer.settings.allowed_audiences.as_deref();
    if let Some(audience) = IssuerSettings::first_unmatched(allowed, &spec.audiences, namespace) {
        let message = format!(
            "audience {audience:?} is not allowed by {} {} (allowedAudiences: {})",
            issuer.kind.as_str(),
            issuer.name,
            allowed.unwrap_or_default().join(", ")
        );
        return blocked(reason::INVALID_SPEC, message, None);
    }
    let rotation = match spec.client_secret_rotation.as_ref().map(|r| {
        Ok::<_, crate::api::DurationError>((r.interval.to_std()?, r.grace_period.to_std()?))
    }) {
        None => None,
        Some(Ok(rotation)) => Some(rotation),
        Some(Err(e)) => return blocked(reason::INVALID_SPEC, e.to_string(), None),
    };
    let (holds_hash, settings_hash) = match &observed.secret {
        SecretSeen::Foreign => {
            let message = format!(
                "Secret {} exists and is not owned by this AppRegistration; it was left untouched. Delete it, or set spec.secretName to another name",
                observed.secret_name
            );
            return blocked(reason::SECRET_CONFLICT, message, Some(300));
        }
        SecretSeen::Absent => (None, None),
        SecretSeen::Ours {
            holds_hash,
            settings_hash,
        } => (holds_hash.as_deref(), settings_hash.as_deref()),
    };
    let recorded = observed.status.and_then(RecordedSecret::from_status);
    // The Secret still holds the recorded secret, untouched by anyone else.
    let held = recorded
        .clone()
        .filter(|r| holds_hash == Some(r.hash.as_str()));
    if held.is_none()
        && !observed.fresh
        && (observed.secret != SecretSeen::Absent || recorded.is_some())
    {
        // Someone changed or deleted the Secret, or a cache lags behind our
        // own last writes (Secret, then status): the API server tells which,
        // before a secret that still works is replaced.
        return Decision::Recheck;
    }
    let rotation_due = |r: &RecordedSecret| {
        rotation
            .is_some_and(|(interval, _)| r.rotated_at.checked_add(interval).is_ok_and(|t| t <= now))
    };
    match held {
        Some(record) if !rotation_due(&record) => {
            let desired = record::settings_hash(spec, &issuer, observed.public_url);
            let rewrite_secret = settings_hash != Some(desired.as_str());
            Decision::Keep {
                record,
                rewrite_secret,
                issuer,
                rotation,
            }
        }
        // A scheduled rotation keeps the old secret working for the grace
        // period (and no longer); a deleted or edited Secret gets no grace.
        Some(old) => Decision::Issue {
            why: IssueReason::Rotated,
            grace: rotation.map(|(_, grace)| (old.hash, now.checked_add(grace).unwrap_or(now))),
            issuer,
            rotation,
        },
        None => Decision::Issue {
            why: if recorded.is_none() {
                IssueReason::Registered
            } else {
                IssueReason::Replaced
            },
            grace: None,
            issuer,
            rotation,
        },
    }
}

/// The status recording `record` for client `client_id`.
pub fn status(
    current: Option<&AppRegistrationStatus>,
    record: &RecordedSecret,
    client_id: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> AppRegistrationStatus {
    let current = current.cloned().unwrap_or_default();
    let live_previous = record.previous.clone().filter(|(_, until)| *until > now);
    // A rotated secret stays "rotated" after its grace period ends, until
    // the secret is replaced.
    let was_rotated = RecordedSecret::from_status(&current).as_ref() == Some(record)
        && current.ready_reason() == Some(reason::SECRET_ROTATED);
    let readiness = if record.previous.is_some() || was_rotated {
        Readiness::ready(
            reason::SECRET_ROTATED,
            format!("the client secret was rotated at {}", record.rotated_at),
        )
    } else {
        Readiness::ready(reason::REGISTERED, format!("client {client_id} registered"))
    };
    AppRegistrationStatus {
        client_id: Some(client_id.to_string()),
        client_secret_hash: Some(record.hash.clone()),
        secret_rotated_at: Some(Time(record.rotated_at)),
        previous_client_secret_hash: live_previous.as_ref().map(|(h, _)| h.clone()),
        previous_client_secret_expires_at: live_previous.as_ref().map(|(_, t)| Time(*t)),
        ..current.with_readiness(&readiness, generation, now)
    }
}

/// When to look again: the next rotation, the end of a grace period or the
/// expiry of a refresh chain, whichever comes first.
pub fn next_look(
    record: &RecordedSecret,
    rotation: Option<(Duration, Duration)>,
    next_chain_expiry: Option<Timestamp>,
    now: Timestamp,
) -> Option<Timestamp> {
    [
        rotation.and_then(|(interval, _)| record.rotated_at.checked_add(interval).ok()),
        record
            .previous
            .as_ref()
            .map(|(_, until)| *until)
            .filter(|until| *until > now),
        next_chain_expiry,
    ]
    .into_iter()
    .flatten()
    .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::IssuerKind;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn issuer() -> ResolvedIssuer {
        ResolvedIssuer {
            kind: IssuerKind::TokenIssuer,
            name: "signer".into(),
            settings: serde_json::from_value(serde_json::json!({
                "issuerURL": "https://tokens.example/team-a",
                "allowedAudiences": ["api.example"],
            }))
            .unwrap(),
            active_key_id: "k1".into(),
            key_secret: ("ops".into(), "signer-keys".into()),
        }
    }

    fn spec(extra: serde_json::Value) -> AppRegistrationSpec {
        let mut spec =
            serde_json::json!({ "issuerRef": { "kind": "TokenIssuer", "name": "signer" } });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(spec).unwrap()
    }

    fn recorded() -> AppRegistrationStatus {
        AppRegistrationStatus {
            client_id: Some("c1".into()),
            client_secret_hash: Some("sha256:one".into()),
            secret_rotated_at: Some(Time(at("2030-01-01T00:00:00Z"))),
            ..AppRegistrationStatus::default()
        }
    }

    fn holding(hash: &str) -> SecretSeen {
        let settings = record::settings_hash(
            &spec(serde_json::json!({})),
            &issuer(),
            "https://tokens.example",
        );
        SecretSeen::Ours {
            holds_hash: Some(hash.into()),
            settings_hash: Some(settings),
        }
    }

    fn summary(decision: &Decision) -> String {
        match decision {
            Decision::Wait => "Wait".into(),
            Decision::Blocked(b) => format!("Blocked({})", b.readiness.reason),
            Decision::Recheck => "Recheck".into(),
            Decision::Issue {
                why,
                grace: Some(_),
                ..
            } => format!("Issue({why:?})+grace"),
            Decision::Issue { why, .. } => format!("Issue({why:?})"),
            Decision::Keep {
                rewrite_secret: true,
                ..
            } => "Keep+rewrite".into(),
            Decision::Keep { .. } => "Keep".into(),
        }
    }

    struct Row {
        case: &'static str,
        spec: serde_json::Value,
        status: Option<AppRegistrationStatus>,
        secret: SecretSeen,
        change: fn(&mut Observed),
        expected: &'static str,
    }

    #[test]
    fn every_ready_reason_and_step() {
        let rotating = serde_json::json!({ "clientSecretRotation": { "interval": "720h", "gracePeriod": "1h" } });
        let none = serde_json::json!({});
        let rows = vec![
            Row {
                case: "new app",
                spec: none.clone(),
                status: None,
                secret: SecretSeen::Absent,
                change: |_| {},
                expected: "Issue(Registered)",
            },
            Row {
                case: "registered and untouched",
                spec: none.clone(),
                status: Some(recorded()),
                secret: holding("sha256:one"),
                change: |_| {},
                expected: "Keep",
            },
            Row {
                case: "the public URL or template changed",
                spec: none.clone(),
                status: Some(recorded()),
                secret: SecretSeen::Ours {
                    holds_hash: Some("sha256:one".into()),
                    settings_hash: Some("old".into()),
                },
                change: |_| {},
                expected: "Keep+rewrite",
            },
            Row {
                case: "namespace being deleted",
                spec: none.clone(),
                status: None,
                secret: SecretSeen::Absent,
                change: |o| o.namespace_terminating = true,
                expected: "Wait",
            },
            Row {
                case: "issuer not ready",
                spec: none.clone(),
                status: None,
                secret: SecretSeen::Absent,
                change: |o| {
                    o.issuer = Err(Unresolved {
                        reason: reason::ISSUER_NOT_READY,
                        message: "no keys".into(),
                        retry: None,
                    })
                },
                expected: "Blocked(IssuerNotReady)",
            },
            Row {
                case: "audience outside the issuer's policy",
                spec: serde_json::json!({ "audiences": ["https://kubernetes.default.svc"] }),
                status: None,
                secret: SecretSeen::Absent,
                change: |_| {},
                expected: "Blocked(InvalidSpec)",
            },
            Row {
                case: "someone else's Secret",
                spec: none.clone(),
                status: None,
                secret: SecretSeen::Foreign,
                change: |_| {},
                expected: "Blocked(SecretConflict)",
            },
            Row {
                case: "Secret edited, through the caches",
                spec: none.clone(),
                status: Some(recorded()),
                secret: holding("sha256:other"),
                change: |_| {},
                expected: "Recheck",
            },
            Row {
                case: "Secret edited, confirmed",
                spec: none.clone(),
                status: Some(recorded()),
                secret: holding("sha256:other"),
                change: |o| o.fresh = true,
                expected: "Issue(Replaced)",
            },
            Row {
                case: "Secret deleted, through the caches",
                spec: none.clone(),
                status: Some(recorded()),
                secret: SecretSeen::Absent,
                change: |_| {},
                expected: "Recheck",
            },
            Row {
                case: "Secret deleted, confirmed",
                spec: none.clone(),
                status: Some(recorded()),
                secret: SecretSeen::Absent,
                change: |o| o.fresh = true,
                expected: "Issue(Replaced)",
            },
            Row {
                case: "rotation not yet due",
                spec: rotating.clone(),
                status: Some(recorded()),
                secret: holding("sha256:one"),
                change: |_| {},
                expected: "Keep",
            },
            Row {
                case: "rotation due",
                spec: rotating.clone(),
                status: Some(recorded()),
                secret: holding("sha256:one"),
                change: |o| o.now = at("2030-01-31T00:00:00Z"),
                expected: "Issue(Rotated)+grace",
            },
        ];
        let public_url = "https://tokens.example";
        for row in rows {
            let spec = spec(row.spec);
            let mut observed = Observed {
                spec: &spec,
                namespace: "team-a",
                secret_name: "web",
                status: row.status.as_ref(),
                namespace_terminating: false,
                issuer: Ok(issuer()),
                secret: row.secret,
                public_url,
                fresh: false,
                now: at("2030-01-02T00:00:00Z"),
            };
            (row.change)(&mut observed);
            assert_eq!(summary(&decide(observed)), row.expected, "{}", row.case);
        }
    }

    #[test]
    fn the_status_says_rotated_until_the_secret_is_replaced() {
        let now = at("2030-01-31T00:00:00Z");
        let rotated = RecordedSecret {
            hash: "sha256:two".into(),
            rotated_at: now,
            previous: Some(("sha256:one".into(), at("2030-01-31T01:00:00Z"))),
        };
        let during_grace = status(Some(&recorded()), &rotated, "c1", Some(1), now);
        assert_eq!(during_grace.ready_reason(), Some(reason::SECRET_ROTATED));
        assert_eq!(
            during_grace.previous_client_secret_hash.as_deref(),
            Some("sha256:one")
        );
        let later = at("2030-01-31T02:00:00Z");
        let after_grace = status(Some(&during_grace), &rotated, "c1", Some(1), later);
        assert_eq!(after_grace.ready_reason(), Some(reason::SECRET_ROTATED));
        assert_eq!(after_grace.previous_client_secret_hash, None);
        assert_eq!(next_look(&rotated, None, None, later), None);
        assert_eq!(
            next_look(&rotated, None, None, now),
            Some(at("2030-01-31T01:00:00Z"))
        );
        let first = RecordedSecret {
            hash: "sha256:one".into(),
            rotated_at: now,
            previous: None,
        };
        assert_eq!(
            status(None, &first, "c1", Some(1), now).ready_reason(),
            Some(reason::REGISTERED)
        );
    }
}
