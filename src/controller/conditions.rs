//! `metav1.Condition` bookkeeping: a condition's `lastTransitionTime` moves
//! only when its status does.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use crate::api::READY;

/// The Ready condition a reconcile wants to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Readiness {
    pub fn ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ready: true,
            reason,
            message: message.into(),
        }
    }

    pub fn not_ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            reason,
            message: message.into(),
        }
    }
}

/// The conditions to write: `previous` with its Ready condition replaced by
/// `readiness`, keeping the transition time when the status is unchanged.
pub fn with_ready(
    previous: &[Condition],
    readiness: &Readiness,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    with_condition(previous, READY, readiness, generation, now)
}

/// The conditions to write: `previous` with its condition `type_` replaced
/// by `state`, keeping the transition time when the status is unchanged.
pub fn with_condition(
    previous: &[Condition],
    type_: &str,
    state: &Readiness,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let status = if state.ready { "True" } else { "False" };
    let old = previous.iter().find(|c| c.type_ == type_);
    let last_transition_time = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(crate::token::whole_seconds(now)),
    };
    let condition = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: state.reason.to_string(),
        message: state.message.clone(),
        observed_generation: generation,
        last_transition_time,
    };
    previous
        .iter()
        .filter(|c| c.type_ != type_)
        .cloned()
        .chain([condition])
        .collect()
}

pub use crate::api::ready_condition;

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn keeps_transition_time_while_status_holds() {
        let first = with_ready(
            &[],
            &Readiness::ready("Issued", "a"),
            Some(1),
            at("2026-01-01T00:00:00Z"),
        );
        let second = with_ready(
            &first,
            &Readiness::ready("Rotated", "b"),
            Some(1),
            at("2026-01-02T00:00:00Z"),
        );
        assert_eq!(
            second[0].last_transition_time,
            Time(at("2026-01-01T00:00:00Z"))
        );
        assert_eq!(second[0].reason, "Rotated");
        let third = with_ready(
            &second,
            &Readiness::not_ready("Revoked", "c"),
            Some(2),
            at("2026-01-03T00:00:00Z"),
        );
        assert_eq!(
            third[0].last_transition_time,
            Time(at("2026-01-03T00:00:00Z"))
        );
        assert_eq!(third[0].status, "False");
        assert_eq!(third.len(), 1);
    }
}
