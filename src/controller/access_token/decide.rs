//! The choice of what an AccessToken that can be served needs next: a pure
//! function of what the reconciler observed, so every transition is a row
//! in a table test.

use k8s_openapi::jiff::Timestamp;

use super::plan::RecordedToken;
use crate::token::{TimingPolicy, renewal_time};

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
}

impl MintReason {
    /// Whether the token being replaced is revoked (rather than left to expire).
    pub fn revokes_previous(self) -> bool {
        matches!(self, Self::SpecChanged | Self::SecretChanged)
    }
}

/// What an AccessToken that can be served needs next.
#[derive(Debug, PartialEq)]
pub enum Next {
    Mint(MintReason),
    /// The recorded token stays; keep the Secret's metadata and the status in line.
    Keep(Box<RecordedToken>),
    /// The token reached its end and is not renewed.
    Expire,
    /// The Secret and the record disagree: look again without the caches.
    Recheck,
}

/// What the reconciler observed, as far as the choice depends on it.
pub struct Observed<'a> {
    /// The token the status records, when the record is complete.
    pub recorded: Option<RecordedToken>,
    /// The status names a current token (complete record or not).
    pub has_token: bool,
    /// The last Ready reason was `Revoked` (`revoked` was just cleared).
    pub was_revoked: bool,
    /// The Secret is the operator's (controlled by this AccessToken).
    pub secret_is_ours: bool,
    /// The Secret holds the recorded token, untouched.
    pub secret_holds_record: bool,
    /// The caches were bypassed: what was observed is the API server's word.
    pub fresh: bool,
    /// The hash of the spec and issuer settings a mint now would record.
    pub desired_spec_hash: &'a str,
    pub timing: &'a TimingPolicy,
    pub now: Timestamp,
}

/// The next step; see [`Next`].
pub fn decide(observed: Observed) -> Next {
    let Observed {
        recorded,
        has_token,
        was_revoked,
        secret_is_ours,
        secret_holds_record,
        fresh,
        desired_spec_hash,
        timing,
        now,
    } = observed;
    // An owned Secret that does not hold the recorded token was changed by
    // someone, or one of the caches lags behind the operator's own writes.
    if secret_is_ours && !secret_holds_record && !fresh {
        return Next::Recheck;
    }
    if was_revoked || !has_token {
        return Next::Mint(MintReason::Initial);
    }
    // A status without a complete record (written before the record
    // existed) is treated as a token minted from another spec.
    let Some(record) = recorded else {
        return Next::Mint(MintReason::SpecChanged);
    };
    if record.spec_hash != desired_spec_hash {
        return Next::Mint(MintReason::SpecChanged);
    }
    let never_renewed = !timing.renew || timing.expires_at.is_some();
    if record.expires_at <= now && never_renewed {
        return Next::Expire;
    }
    if !secret_holds_record {
        return Next::Mint(MintReason::SecretChanged);
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
        Next::Mint(MintReason::Rotation)
    } else {
        Next::Keep(Box::new(record))
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

    fn name(next: &Next) -> String {
        match next {
            Next::Mint(reason) => format!("Mint({reason:?})"),
            Next::Keep(_) => "Keep".into(),
            Next::Expire => "Expire".into(),
            Next::Recheck => "Recheck".into(),
        }
    }

    #[test]
    fn every_transition() {
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
            let next = decide(Observed {
                recorded: row.recorded,
                has_token: row.has_token,
                was_revoked: row.was_revoked,
                secret_is_ours: row.secret_is_ours,
                secret_holds_record: row.secret_holds_record,
                fresh: row.fresh,
                desired_spec_hash: row.spec_hash,
                timing: &row.timing,
                now: at(row.now),
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
}
