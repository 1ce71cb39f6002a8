//! The choice of an AccessToken's next step: a pure function of what the
//! reconciler observed (spec, recorded token, Secret, issuer, app, bound
//! object, quota, time), so every Ready reason and every transition is a row
//! in a table test, in the manner of cert-manager's policy checks. The
//! reconciler gathers the [`Observed`] value, calls [`decide`], and carries
//! out the [`Decision`]; status, event and requeue follow from it.

use k8s_openapi::jiff::Timestamp;

use super::record::{self, RecordedToken};
use crate::{
    api::{AccessTokenSpec, AccessTokenStatus, MintedClaims, TokenFormat, reason},
    cluster::issuers::{ResolvedIssuer, Unresolved},
    controller::status::{Blocked, ReadyStatus},
    token::{
        LifetimeLimits, TimingError, TimingPolicy, Validity, next_mint_allowed, plan_validity,
        renewal_time,
    },
};

/// Why a new token is minted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MintReason {
    /// The first token of this AccessToken, or the first after `revoked` was cleared.
    Initial,
    /// Renewal time reached: the old token stays valid until it expires.
    Rotation,
    /// Scopes, audiences, subject, claims, issuer, format or lifetime changed.
    SpecChanged,
    /// The Secret was deleted or its data edited by someone else.
    SecretChanged,
    /// Asked for with the `tokensmith.dev/renew` annotation: as a rotation,
    /// the old token stays valid until it expires.
    Renewal,
}

impl MintReason {
    /// Whether the token being replaced is revoked (rather than left to expire).
    pub fn revokes_previous(self) -> bool {
        matches!(self, Self::SpecChanged | Self::SecretChanged)
    }
}

/// The object `spec.boundObjectRef` names, as found.
#[derive(Clone, Debug, PartialEq)]
pub enum BoundObject {
    /// The spec names none.
    Unbound,
    Present,
    Missing {
        kind: &'static str,
        name: String,
    },
}

/// The AppRegistration `spec.appRef` names, as found.
#[derive(Clone, Debug, PartialEq)]
pub enum App {
    /// The spec names none.
    Unnamed,
    Found {
        client_id: String,
    },
    Missing {
        name: String,
    },
}

/// The token's Secret, as far as the choice depends on it.
#[derive(Clone, Debug, PartialEq)]
pub enum SecretSeen {
    Absent,
    /// Exists and is not controlled by this AccessToken: never touched.
    Foreign,
    Ours {
        /// It holds the recorded token, untouched.
        holds_record: bool,
        /// The `secretTemplate` hash it was last written with.
        template_hash: Option<String>,
    },
}

/// What the reconciler observed.
pub struct Observed<'a> {
    pub spec: &'a AccessTokenSpec,
    pub namespace: &'a str,
    pub name: &'a str,
    pub status: &'a AccessTokenStatus,
    /// The namespace is being deleted (and the AccessToken with it).
    pub namespace_terminating: bool,
    pub bound_object: BoundObject,
    pub app: App,
    pub secret: SecretSeen,
    pub issuer: Result<ResolvedIssuer, Unresolved>,
    /// Revoked tokens of the namespace that have not expired, and the quota.
    pub revoked_in_namespace: usize,
    pub revocation_quota: usize,
    /// The caches were bypassed: what was observed is the API server's word.
    pub fresh: bool,
    pub now: Timestamp,
    /// The id a token minted now gets: drawn before the choice, so that the
    /// choice (whose renewal jitter depends on it) stays a function.
    pub new_token_id: String,
    /// The `tokensmith.dev/renew` annotation's value, if any.
    pub renew_request: Option<&'a str>,
}

/// A token to mint, and everything it is minted from.
#[derive(Debug, PartialEq)]
pub struct Mint {
    pub reason: MintReason,
    pub token_id: String,
    pub validity: Validity,
    pub minted: MintedClaims,
    pub spec_hash: String,
    pub revision: i64,
    pub timing: TimingPolicy,
    pub issuer: ResolvedIssuer,
    pub format: TokenFormat,
    /// The Secret may hold this very token, written before a crash kept the
    /// status from recording it: look before minting another.
    pub may_adopt: bool,
    /// The renewal request this mint serves (every mint serves the one
    /// pending, so a request made before the first token mints no second).
    pub renew_request: Option<String>,
}

/// What the reconciler does next.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Nothing, until something changes.
    Wait,
    /// A problem the user must fix; the existing token is left alone.
    Blocked(Blocked),
    /// Revoke every live token and remove the Secret, keeping the resource.
    Revoke {
        why: String,
    },
    /// A mint is due, but one was made moments ago: not before `until`.
    Throttled {
        until: Timestamp,
    },
    Mint(Box<Mint>),
    /// The recorded token stays; the status is kept in line, and the
    /// Secret's labels and annotations too when `rewrite_secret`.
    Keep {
        record: Box<RecordedToken>,
        timing: TimingPolicy,
        rewrite_secret: bool,
    },
    /// The token reached its end and is not renewed: the Secret goes.
    Expire,
    /// The Secret and the record disagree: look again without the caches.
    Recheck,
}

fn blocked(reason: &'static str, message: impl Into<String>, retry: Option<u64>) -> Decision {
    Decision::Blocked(Blocked::new(reason, message, retry))
}

/// The next step; see [`Decision`].
pub fn decide(observed: Observed) -> Decision {
    let Observed {
        spec,
        namespace,
        name,
        status,
        ..
    } = observed;
    if observed.namespace_terminating {
        // Minting would be refused, and the AccessToken's own deletion
        // (which revokes) follows.
        return Decision::Wait;
    }
    if let BoundObject::Missing { kind, name } = &observed.bound_object {
        return blocked(
            reason::INVALID_SPEC,
            format!("{kind} {name} (spec.boundObjectRef) not found in namespace {namespace}"),
            None,
        );
    }
    let has_token = status.token_id.is_some();
    let revoke = |why: String| {
        let done =
            status.ready_reason() == Some(reason::REVOKED) && observed.secret == SecretSeen::Absent;
        if done {
            Decision::Wait
        } else {
            Decision::Revoke { why }
        }
    };
    if spec.is_revoked() {
        return revoke("spec.revoked is true (set it to false to issue a new token)".into());
    }
    let client_id = match &observed.app {
        App::Unnamed => None,
        App::Found { client_id } => Some(client_id.clone()),
        App::Missing { name } if has_token => {
            return revoke(format!("AppRegistration {name} (spec.appRef) was deleted"));
        }
        App::Missing { name } => {
            let message = format!("AppRegistration {name} (spec.appRef) not found");
            return blocked(reason::INVALID_SPEC, message, Some(60));
        }
    };
    if observed.secret == SecretSeen::Foreign {
        let message = format!(
            "Secret {} exists and is not owned by this AccessToken; it was left untouched. Delete it, or set spec.secretName to another name",
            spec.secret_name.as_deref().unwrap_or(name)
        );
        return blocked(reason::SECRET_CONFLICT, message, Some(300));
    }
    let issuer = match observed.issuer {
        Ok(issuer) => issuer,
        Err(unresolved) => return Decision::Blocked(unresolved.into()),
    };
    if let Some(refusal) = record::policy_violation(spec, &issuer.settings, namespace, name) {
        let message = format!(
            "{refusal}: refused by {} {}",
            issuer.kind.as_str(),
            issuer.name
        );
        return blocked(reason::INVALID_SPEC, message, None);
    }
    let (timing, limits) = match timing(spec, &issuer) {
        Ok(t) => t,
        Err(message) => return blocked(reason::INVALID_SPEC, message, None),
    };
    let desired_spec_hash = record::spec_hash(spec, &issuer.settings);
    let recorded = RecordedToken::from_status(status);
    let (holds_record, template_hash) = match &observed.secret {
        SecretSeen::Ours {
            holds_record,
            template_hash,
        } => (*holds_record, template_hash.as_deref()),
        _ => (false, None),
    };
    let step = serve(Served {
        recorded,
        has_token,
        was_revoked: status.ready_reason() == Some(reason::REVOKED),
        secret_is_ours: matches!(observed.secret, SecretSeen::Ours { .. }),
        secret_holds_record: holds_record,
        fresh: observed.fresh,
        desired_spec_hash: &desired_spec_hash,
        timing: &timing,
        now: observed.now,
        renew_pending: observed
            .renew_request
            .is_some_and(|asked| Some(asked) != status.renew_request.as_deref()),
    });
    let reason = match step {
        Step::Keep(record) => {
            let rewrite_secret = template_hash != Some(record::template_hash(spec).as_str());
            return Decision::Keep {
                record,
                timing,
                rewrite_secret,
            };
        }
        Step::Expire => return Decision::Expire,
        Step::Recheck => return Decision::Recheck,
        Step::Mint(reason) => reason,
    };
    if observed.revoked_in_namespace >= observed.revocation_quota {
        let message = format!(
            "namespace {namespace} holds {} revoked tokens that have not expired, its quota is {}: no token is minted until some expire (the current one, if any, stays valid until it expires)",
            observed.revoked_in_namespace, observed.revocation_quota
        );
        return blocked(reason::REVOCATION_QUOTA_EXCEEDED, message, Some(15));
    }
    // One mint per object per interval, whatever asks for it.
    if let Some(until) = next_mint_allowed(status.issued_at.as_ref().map(|t| t.0), observed.now) {
        return Decision::Throttled { until };
    }
    let validity = match plan_validity(&timing, limits, observed.now, &observed.new_token_id) {
        Ok(validity) => validity,
        Err(TimingError::ExpiresAtPassed(at)) if !has_token => {
            let message = format!("expiresAt {at} has passed; no token was issued");
            return blocked(reason::EXPIRED, message, None);
        }
        Err(TimingError::ExpiresAtPassed(_)) => return Decision::Expire,
        Err(e) => return blocked(reason::INVALID_SPEC, e.to_string(), None),
    };
    let minted = record::minted_claims(spec, &issuer.settings, namespace, name, client_id);
    let format = spec.format();
    Decision::Mint(Box::new(Mint {
        may_adopt: reason == MintReason::Initial
            && !has_token
            && format == TokenFormat::Jwt
            && matches!(observed.secret, SecretSeen::Ours { .. }),
        reason,
        token_id: observed.new_token_id,
        validity,
        minted,
        spec_hash: desired_spec_hash,
        revision: status.revision.unwrap_or(0) + 1,
        timing,
        issuer,
        format,
        renew_request: observed
            .renew_request
            .map(str::to_string)
            .or_else(|| status.renew_request.clone()),
    }))
}

/// The spec's timing and the issuer's lifetime limits; `Err` in words for
/// the condition when the spec asks for what the issuer does not allow.
fn timing(
    spec: &AccessTokenSpec,
    issuer: &ResolvedIssuer,
) -> Result<(TimingPolicy, LifetimeLimits), String> {
    let timing = record::timing_policy(spec)?;
    let settings = &issuer.settings;
    let limits = LifetimeLimits {
        default: settings.default_lifetime().map_err(|e| e.to_string())?,
        max: settings.max_lifetime().map_err(|e| e.to_string())?,
    };
    if let Some(lifetime) = timing.lifetime
        && lifetime > limits.max
    {
        return Err(TimingError::TooLong {
            asked: spec
                .lifetime
                .as_ref()
                .map(|d| d.to_string())
                .unwrap_or_default(),
            max: settings
                .max_lifetime
                .as_ref()
                .map_or("8760h".into(), |d| d.to_string()),
        }
        .to_string());
    }
    Ok((timing, limits))
}

/// What a token that can be served needs next.
#[derive(Debug, PartialEq)]
enum Step {
    Mint(MintReason),
    Keep(Box<RecordedToken>),
    Expire,
    Recheck,
}

/// What the choice between keeping, rotating, reissuing and expiring
/// depends on.
struct Served<'a> {
    /// The token the status records, when the record is complete.
    recorded: Option<RecordedToken>,
    /// The status names a current token (complete record or not).
    has_token: bool,
    /// The last Ready reason was `Revoked` (`revoked` was just cleared).
    was_revoked: bool,
    secret_is_ours: bool,
    secret_holds_record: bool,
    fresh: bool,
    /// The hash of the spec and issuer settings a mint now would record.
    desired_spec_hash: &'a str,
    timing: &'a TimingPolicy,
    now: Timestamp,
    /// The renew annotation holds a value not served yet.
    renew_pending: bool,
}

fn serve(served: Served) -> Step {
    let Served {
        recorded,
        has_token,
        was_revoked,
        secret_is_ours,
        secret_holds_record,
        fresh,
        desired_spec_hash,
        timing,
        now,
        renew_pending,
    } = served;
    // An owned Secret that does not hold the recorded token was changed by
    // someone, or one of the caches lags behind the operator's own writes.
    if secret_is_ours && !secret_holds_record && !fresh {
        return Step::Recheck;
    }
    if was_revoked || !has_token {
        return Step::Mint(MintReason::Initial);
    }
    // A status without a complete record (written before the record
    // existed) is treated as a token minted from another spec.
    let Some(record) = recorded else {
        return Step::Mint(MintReason::SpecChanged);
    };
    if record.spec_hash != desired_spec_hash {
        return Step::Mint(MintReason::SpecChanged);
    }
    let never_renewed = !timing.renew || timing.expires_at.is_some();
    if record.expires_at <= now && never_renewed {
        return Step::Expire;
    }
    if !secret_holds_record {
        return Step::Mint(MintReason::SecretChanged);
    }
    if renew_pending {
        return Step::Mint(MintReason::Renewal);
    }
    let renew_at = renewal_time(
        record.issued_at,
        record.expires_at,
        timing,
        &record.token_id,
    )
    .ok()
    .flatten();
    if record.expires_at <= now || renew_at.is_some_and(|at| at <= now) {
        Step::Mint(MintReason::Rotation)
    } else {
        Step::Keep(Box::new(record))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::MintedClaims;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn record() -> RecordedToken {
        RecordedToken {
            token_id: "t1".into(),
            issued_at: at("2030-01-01T00:00:00Z"),
            expires_at: at("2030-01-02T00:00:00Z"),
            key_id: None,
            token_hash: "sha256:x".into(),
            revision: 1,
            spec_hash: "spec-1".into(),
            minted: MintedClaims::default(),
        }
    }

    fn renewed() -> TimingPolicy {
        TimingPolicy {
            lifetime: Some(Duration::from_secs(86_400)),
            expires_at: None,
            renew_before: Some(Duration::from_secs(3_600)),
            renew_before_percentage: None,
            renew: true,
        }
    }

    fn not_renewed() -> TimingPolicy {
        TimingPolicy {
            renew: false,
            ..renewed()
        }
    }

    /// One row: what differs from a healthy, recorded, untouched token in
    /// the middle of its life.
    struct Row {
        case: &'static str,
        recorded: Option<RecordedToken>,
        has_token: bool,
        was_revoked: bool,
        secret_is_ours: bool,
        secret_holds_record: bool,
        fresh: bool,
        spec_hash: &'static str,
        timing: TimingPolicy,
        now: &'static str,
        expected: &'static str,
    }

    fn healthy(case: &'static str, expected: &'static str) -> Row {
        Row {
            case,
            recorded: Some(record()),
            has_token: true,
            was_revoked: false,
            secret_is_ours: true,
            secret_holds_record: true,
            fresh: false,
            spec_hash: "spec-1",
            timing: renewed(),
            now: "2030-01-01T12:00:00Z",
            expected,
        }
    }

    fn name(next: &Step) -> String {
        match next {
            Step::Mint(reason) => format!("Mint({reason:?})"),
            Step::Keep(_) => "Keep".into(),
            Step::Expire => "Expire".into(),
            Step::Recheck => "Recheck".into(),
        }
    }

    #[test]
    fn every_step_of_a_servable_token() {
        let rows = vec![
            healthy("a healthy token mid-life is kept", "Keep"),
            Row {
                now: "2030-01-01T23:30:00Z",
                ..healthy("inside renewBefore: rotated", "Mint(Rotation)")
            },
            Row {
                now: "2030-01-02T00:00:01Z",
                ..healthy("expired but renewed: rotated", "Mint(Rotation)")
            },
            Row {
                now: "2030-01-02T00:00:00Z",
                timing: not_renewed(),
                ..healthy("expired and not renewed: expired", "Expire")
            },
            Row {
                now: "2030-01-01T23:30:00Z",
                timing: not_renewed(),
                ..healthy("not renewed: kept until it expires", "Keep")
            },
            Row {
                recorded: None,
                has_token: false,
                secret_is_ours: false,
                secret_holds_record: false,
                ..healthy("nothing minted yet", "Mint(Initial)")
            },
            Row {
                was_revoked: true,
                ..healthy("revoked cleared: a new first token", "Mint(Initial)")
            },
            Row {
                recorded: None,
                ..healthy("a status without a complete record", "Mint(SpecChanged)")
            },
            Row {
                spec_hash: "spec-2",
                ..healthy("the spec changed", "Mint(SpecChanged)")
            },
            Row {
                secret_holds_record: false,
                ..healthy("the Secret disagrees, seen through the caches", "Recheck")
            },
            Row {
                secret_holds_record: false,
                fresh: true,
                ..healthy("the Secret disagrees, confirmed", "Mint(SecretChanged)")
            },
            Row {
                secret_is_ours: false,
                secret_holds_record: false,
                ..healthy("the Secret was deleted", "Mint(SecretChanged)")
            },
            Row {
                secret_holds_record: false,
                fresh: true,
                spec_hash: "spec-2",
                ..healthy("the spec changed and the Secret too", "Mint(SpecChanged)")
            },
            Row {
                secret_holds_record: false,
                fresh: true,
                now: "2030-01-02T00:00:00Z",
                timing: not_renewed(),
                ..healthy("an expired token's Secret changed: expired", "Expire")
            },
        ];
        for row in rows {
            let next = serve(Served {
                recorded: row.recorded,
                has_token: row.has_token,
                was_revoked: row.was_revoked,
                secret_is_ours: row.secret_is_ours,
                secret_holds_record: row.secret_holds_record,
                fresh: row.fresh,
                desired_spec_hash: row.spec_hash,
                timing: &row.timing,
                now: at(row.now),
                renew_pending: false,
            });
            assert_eq!(name(&next), row.expected, "{}", row.case);
        }
    }

    #[test]
    fn only_spec_and_secret_changes_revoke_the_replaced_token() {
        use MintReason::*;
        let revoking: Vec<_> = [Initial, Rotation, SpecChanged, SecretChanged]
            .into_iter()
            .filter(|r| r.revokes_previous())
            .collect();
        assert_eq!(revoking, [SpecChanged, SecretChanged]);
    }

    mod whole {
        //! `decide` from end to end: one row per Ready reason and per step.

        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

        use crate::api::{IssuerKind, IssuerSettings};
        use crate::controller::access_token::decide::*;

        fn at(text: &str) -> Timestamp {
            text.parse().unwrap()
        }

        fn issuer() -> ResolvedIssuer {
            ResolvedIssuer {
                kind: IssuerKind::TokenIssuer,
                name: "signer".into(),
                settings: serde_json::from_value::<IssuerSettings>(serde_json::json!({
                    "issuerURL": "https://tokens.example/team-a",
                    "allowedScopes": ["read_*"],
                    "maxLifetime": "720h",
                }))
                .unwrap(),
                active_key_id: "k1".into(),
                key_secret: ("ops".into(), "signer-keys".into()),
            }
        }

        fn spec(extra: serde_json::Value) -> AccessTokenSpec {
            let mut spec = serde_json::json!({
                "issuerRef": { "kind": "TokenIssuer", "name": "signer" },
                "scopes": ["read_scenarios"],
                "lifetime": "24h",
            });
            for (k, v) in extra.as_object().unwrap() {
                spec[k] = v.clone();
            }
            serde_json::from_value(spec).unwrap()
        }

        fn ready(reason: &str) -> Vec<Condition> {
            vec![Condition {
                type_: "Ready".into(),
                status: if reason == reason::REVOKED {
                    "False"
                } else {
                    "True"
                }
                .into(),
                reason: reason.into(),
                message: String::new(),
                last_transition_time: Time(at("2030-01-01T00:00:00Z")),
                observed_generation: None,
            }]
        }

        /// The status of a token minted from `spec` at midnight for a day.
        fn recorded(spec: &AccessTokenSpec) -> AccessTokenStatus {
            let minted = record::minted_claims(spec, &issuer().settings, "team-a", "ci", None);
            AccessTokenStatus {
                conditions: ready(reason::ISSUED),
                token_id: Some("t1".into()),
                issued_at: Some(Time(at("2030-01-01T00:00:00Z"))),
                expires_at: Some(Time(at("2030-01-02T00:00:00Z"))),
                token_hash: Some("sha256:x".into()),
                revision: Some(1),
                spec_hash: Some(record::spec_hash(spec, &issuer().settings)),
                minted: Some(minted),
                ..AccessTokenStatus::default()
            }
        }

        fn ours(holds_record: bool, spec: &AccessTokenSpec) -> SecretSeen {
            SecretSeen::Ours {
                holds_record,
                template_hash: Some(record::template_hash(spec)),
            }
        }

        fn summary(decision: &Decision) -> String {
            match decision {
                Decision::Wait => "Wait".into(),
                Decision::Blocked(b) => format!("Blocked({})", b.readiness.reason),
                Decision::Revoke { .. } => "Revoke".into(),
                Decision::Throttled { .. } => "Throttled".into(),
                Decision::Mint(mint) if mint.may_adopt => format!("Mint({:?})+adopt", mint.reason),
                Decision::Mint(mint) => format!("Mint({:?})", mint.reason),
                Decision::Keep {
                    rewrite_secret: true,
                    ..
                } => "Keep+rewrite".into(),
                Decision::Keep { .. } => "Keep".into(),
                Decision::Expire => "Expire".into(),
                Decision::Recheck => "Recheck".into(),
            }
        }

        /// One row: the spec's extra fields, the status, and what differs
        /// from a healthy token in the middle of its life.
        struct Row {
            case: &'static str,
            spec: serde_json::Value,
            /// `true`: the status records a token minted from the spec.
            minted: bool,
            change: fn(&mut Observed, &AccessTokenSpec),
            expected: &'static str,
        }

        fn row(
            case: &'static str,
            spec: serde_json::Value,
            minted: bool,
            change: fn(&mut Observed, &AccessTokenSpec),
            expected: &'static str,
        ) -> Row {
            Row {
                case,
                spec,
                minted,
                change,
                expected,
            }
        }

        fn none() -> serde_json::Value {
            serde_json::json!({})
        }

        #[test]
        fn every_ready_reason_and_step() {
            let rows = vec![
                row("a healthy token mid-life", none(), true, |_, _| {}, "Keep"),
                row(
                    "secretTemplate changed",
                    none(),
                    true,
                    |o, _| {
                        o.secret = SecretSeen::Ours {
                            holds_record: true,
                            template_hash: Some("old".into()),
                        }
                    },
                    "Keep+rewrite",
                ),
                row(
                    "namespace being deleted",
                    none(),
                    true,
                    |o, _| o.namespace_terminating = true,
                    "Wait",
                ),
                row(
                    "bound object missing",
                    none(),
                    true,
                    |o, _| {
                        o.bound_object = BoundObject::Missing {
                            kind: "ServiceAccount",
                            name: "ci".into(),
                        }
                    },
                    "Blocked(InvalidSpec)",
                ),
                row(
                    "spec.revoked",
                    serde_json::json!({ "revoked": true }),
                    true,
                    |_, _| {},
                    "Revoke",
                ),
                row(
                    "spec.revoked, done already",
                    serde_json::json!({ "revoked": true }),
                    true,
                    |o, _| {
                        o.secret = SecretSeen::Absent;
                        o.status = Box::leak(Box::new(AccessTokenStatus {
                            conditions: ready(reason::REVOKED),
                            ..o.status.clone()
                        }));
                    },
                    "Wait",
                ),
                row(
                    "app missing before any token",
                    none(),
                    false,
                    |o, _| {
                        o.app = App::Missing { name: "web".into() };
                        o.secret = SecretSeen::Absent;
                    },
                    "Blocked(InvalidSpec)",
                ),
                row(
                    "app deleted after a token",
                    none(),
                    true,
                    |o, _| o.app = App::Missing { name: "web".into() },
                    "Revoke",
                ),
                row(
                    "someone else's Secret",
                    none(),
                    false,
                    |o, _| o.secret = SecretSeen::Foreign,
                    "Blocked(SecretConflict)",
                ),
                row(
                    "issuer not ready",
                    none(),
                    true,
                    |o, _| {
                        o.issuer = Err(Unresolved {
                            reason: reason::ISSUER_NOT_READY,
                            message: "no keys yet".into(),
                            retry: Some(std::time::Duration::from_secs(5)),
                        })
                    },
                    "Blocked(IssuerNotReady)",
                ),
                row(
                    "scope outside the issuer's policy",
                    serde_json::json!({ "scopes": ["admin"] }),
                    false,
                    |o, _| o.secret = SecretSeen::Absent,
                    "Blocked(InvalidSpec)",
                ),
                row(
                    "lifetime over maxLifetime",
                    serde_json::json!({ "lifetime": "8760h" }),
                    false,
                    |o, _| o.secret = SecretSeen::Absent,
                    "Blocked(InvalidSpec)",
                ),
                row(
                    "renewBefore not shorter than the lifetime",
                    serde_json::json!({ "renewBefore": "48h" }),
                    false,
                    |o, _| o.secret = SecretSeen::Absent,
                    "Blocked(InvalidSpec)",
                ),
                row(
                    "nothing minted yet",
                    none(),
                    false,
                    |o, _| o.secret = SecretSeen::Absent,
                    "Mint(Initial)",
                ),
                row(
                    "an owned Secret without a record, confirmed",
                    none(),
                    false,
                    |o, s| {
                        o.secret = ours(false, s);
                        o.fresh = true;
                    },
                    "Mint(Initial)+adopt",
                ),
                row(
                    "an owned Secret without a record, through the caches",
                    none(),
                    false,
                    |o, s| o.secret = ours(false, s),
                    "Recheck",
                ),
                row(
                    "revocation quota reached, nothing minted",
                    none(),
                    false,
                    |o, _| {
                        o.secret = SecretSeen::Absent;
                        o.revoked_in_namespace = 10;
                    },
                    "Blocked(RevocationQuotaExceeded)",
                ),
                row(
                    "revocation quota reached, a token kept",
                    none(),
                    true,
                    |o, _| o.revoked_in_namespace = 10,
                    "Keep",
                ),
                row(
                    "spec changed moments after a mint",
                    none(),
                    true,
                    |o, _| {
                        o.now = at("2030-01-01T00:00:01Z");
                        o.spec = Box::leak(Box::new(spec(
                            serde_json::json!({ "scopes": ["read_more"] }),
                        )));
                    },
                    "Throttled",
                ),
                row(
                    "spec changed",
                    none(),
                    true,
                    |o, _| {
                        o.spec = Box::leak(Box::new(spec(
                            serde_json::json!({ "scopes": ["read_more"] }),
                        )));
                    },
                    "Mint(SpecChanged)",
                ),
                row(
                    "Secret deleted",
                    none(),
                    true,
                    |o, _| o.secret = SecretSeen::Absent,
                    "Mint(SecretChanged)",
                ),
                row(
                    "Secret edited, confirmed",
                    none(),
                    true,
                    |o, s| {
                        o.secret = ours(false, s);
                        o.fresh = true;
                    },
                    "Mint(SecretChanged)",
                ),
                row(
                    "renewal time reached",
                    none(),
                    true,
                    |o, _| o.now = at("2030-01-01T23:30:00Z"),
                    "Mint(Rotation)",
                ),
                row(
                    "renewal asked for",
                    none(),
                    true,
                    |o, _| o.renew_request = Some("now"),
                    "Mint(Renewal)",
                ),
                row(
                    "renewal asked for, served already",
                    none(),
                    true,
                    |o, _| {
                        o.renew_request = Some("now");
                        o.status = Box::leak(Box::new(AccessTokenStatus {
                            renew_request: Some("now".into()),
                            ..o.status.clone()
                        }));
                    },
                    "Keep",
                ),
                row(
                    "renewal asked for moments after a mint",
                    none(),
                    true,
                    |o, _| {
                        o.renew_request = Some("now");
                        o.now = at("2030-01-01T00:00:01Z");
                    },
                    "Throttled",
                ),
                row(
                    "renewal asked for before any token",
                    none(),
                    false,
                    |o, _| {
                        o.renew_request = Some("now");
                        o.secret = SecretSeen::Absent;
                    },
                    "Mint(Initial)",
                ),
                row(
                    "expiresAt passed before any token",
                    serde_json::json!({ "expiresAt": "2029-12-31T00:00:00Z", "lifetime": null }),
                    false,
                    |o, _| o.secret = SecretSeen::Absent,
                    "Blocked(Expired)",
                ),
                row(
                    "onExpiry Delete, expired",
                    serde_json::json!({ "onExpiry": "Delete" }),
                    true,
                    |o, _| o.now = at("2030-01-02T00:00:00Z"),
                    "Expire",
                ),
            ];
            for row in rows {
                let spec = spec(row.spec.clone());
                let status = if row.minted {
                    recorded(&spec)
                } else {
                    AccessTokenStatus::default()
                };
                let mut observed = Observed {
                    spec: &spec,
                    namespace: "team-a",
                    name: "ci",
                    status: &status,
                    namespace_terminating: false,
                    bound_object: BoundObject::Unbound,
                    app: App::Unnamed,
                    secret: ours(true, &spec),
                    issuer: Ok(issuer()),
                    revoked_in_namespace: 0,
                    revocation_quota: 10,
                    fresh: false,
                    now: at("2030-01-01T12:00:00Z"),
                    new_token_id: "t2".into(),
                    renew_request: None,
                };
                (row.change)(&mut observed, &spec);
                assert_eq!(summary(&decide(observed)), row.expected, "{}", row.case);
            }
        }

        #[test]
        fn a_mint_carries_the_app_and_the_next_revision() {
            let spec = spec(none());
            let status = recorded(&spec);
            let decision = decide(Observed {
                spec: &spec,
                namespace: "team-a",
                name: "ci",
                status: &status,
                namespace_terminating: false,
                bound_object: BoundObject::Present,
                app: App::Found {
                    client_id: "client-1".into(),
                },
                secret: SecretSeen::Absent,
                issuer: Ok(issuer()),
                revoked_in_namespace: 0,
                revocation_quota: 10,
                fresh: false,
                now: at("2030-01-01T12:00:00Z"),
                new_token_id: "t2".into(),
                renew_request: None,
            });
            let Decision::Mint(mint) = decision else {
                panic!("expected a mint, got {decision:?}");
            };
            assert_eq!(mint.minted.client_id.as_deref(), Some("client-1"));
            assert_eq!((mint.revision, mint.token_id.as_str()), (2, "t2"));
            assert_eq!(mint.validity.issued_at, at("2030-01-01T12:00:00Z"));
            assert!(
                mint.reason.revokes_previous(),
                "a deleted Secret's token is revoked"
            );
        }
    }
}
