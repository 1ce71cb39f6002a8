//! The status kit every reconciler shares: one way to build a status with a
//! Ready condition and `observedGeneration`, one way to write it (server-side
//! apply as the operator, only when it differs), and one way to report a
//! problem the user must fix (a Warning event on transitions only).

use std::{fmt::Debug, time::Duration};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};
use kube::{
    Resource,
    api::{Patch, PatchParams},
    core::object::HasStatus,
    runtime::{controller::Action, events::EventType},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use tracing::warn;

use super::{
    Context, MANAGER, Result,
    conditions::{Readiness, ready_condition, with_ready},
    patch::patch_object,
};
use crate::{
    api::{AccessTokenStatus, AppRegistrationStatus, IssuerStatus, reason::ISSUER_NOT_READY},
    cluster::issuers::Unresolved,
};

/// A status with a Ready condition and `observedGeneration`.
pub trait ReadyStatus: Clone + Default + PartialEq + Serialize {
    fn conditions(&self) -> &[Condition];
    fn set_conditions(&mut self, conditions: Vec<Condition>, generation: Option<i64>);

    /// This status with its Ready condition set to `readiness` for
    /// `generation` (the transition time moves only with the status).
    fn with_readiness(
        &self,
        readiness: &Readiness,
        generation: Option<i64>,
        now: Timestamp,
    ) -> Self {
        let mut status = self.clone();
        let conditions = with_ready(self.conditions(), readiness, generation, now);
        status.set_conditions(conditions, generation);
        status
    }

    /// Whether reporting `readiness` changes the Ready reason or message.
    fn is_transition_to(&self, readiness: &Readiness) -> bool {
        ready_condition(self.conditions())
            .is_none_or(|c| c.reason != readiness.reason || c.message != readiness.message)
    }

    /// The reason of the Ready condition, if there is one.
    fn ready_reason(&self) -> Option<&str> {
        ready_condition(self.conditions()).map(|c| c.reason.as_str())
    }
}

macro_rules! ready_status {
    ($($status:ty),*) => {$(
        impl ReadyStatus for $status {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn set_conditions(&mut self, conditions: Vec<Condition>, generation: Option<i64>) {
                self.conditions = conditions;
                self.observed_generation = generation;
            }
        }
    )*};
}
ready_status!(AccessTokenStatus, AppRegistrationStatus, IssuerStatus);

/// A kind whose status the operator writes.
pub trait WithStatus:
    Resource<DynamicType = ()> + HasStatus<Status = Self::Ready> + DeserializeOwned + Clone + Debug
{
    type Ready: ReadyStatus;
}

impl<K> WithStatus for K
where
    K: Resource<DynamicType = ()> + HasStatus + DeserializeOwned + Clone + Debug,
    K::Status: ReadyStatus,
{
    type Ready = K::Status;
}

/// The status of `object`, or an empty one.
pub fn current<K: WithStatus>(object: &K) -> K::Ready {
    object.status().cloned().unwrap_or_default()
}

/// Writes `desired` as the status of `object` unless it is already that,
/// so an unchanged object costs no write.
pub async fn apply_status<K: WithStatus>(
    ctx: &Context,
    object: &K,
    desired: &K::Ready,
) -> Result<()> {
    write_status(ctx, object, desired, None).await.map(drop)
}

/// As [`apply_status`], for a transition that must happen once (an expiry
/// counted, an event published): written only if `object` is still at the
/// resource version it was read at. `Ok(false)` when it has changed since,
/// so the caller looks again at a fresh copy instead of repeating the
/// transition on a stale one.
pub async fn apply_status_once<K: WithStatus>(
    ctx: &Context,
    object: &K,
    desired: &K::Ready,
) -> Result<bool> {
    let read_at = object.meta().resource_version.as_deref();
    write_status(ctx, object, desired, read_at).await
}

/// The one status write: server-side apply under the operator's manager,
/// none when the status is `desired` already; with `precondition`, only at
/// that resource version (`Ok(false)` on a conflict).
async fn write_status<K: WithStatus>(
    ctx: &Context,
    object: &K,
    desired: &K::Ready,
    precondition: Option<&str>,
) -> Result<bool> {
    if object.status() == Some(desired) {
        return Ok(true);
    }
    let mut body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    if let Some(version) = precondition {
        body["metadata"] = json!({ "resourceVersion": version });
    }
    let params = PatchParams::apply(MANAGER).force();
    match patch_object(ctx, object, Some("status"), &params, &Patch::Apply(&body)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 && precondition.is_some() => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// A problem the user must fix, as the Ready condition says it, and when to
/// look again (else on a change).
#[derive(Clone, Debug, PartialEq)]
pub struct Blocked {
    pub readiness: Readiness,
    pub retry: Option<Duration>,
}

impl Blocked {
    pub fn new(
        reason: &'static str,
        message: impl Into<String>,
        retry_seconds: Option<u64>,
    ) -> Self {
        Self {
            readiness: Readiness::not_ready(reason, message),
            retry: retry_seconds.map(Duration::from_secs),
        }
    }
}

/// An issuer that cannot be used blocks what names it.
impl From<Unresolved> for Blocked {
    fn from(unresolved: Unresolved) -> Self {
        Self {
            readiness: Readiness::not_ready(unresolved.reason, unresolved.message),
            retry: unresolved.retry,
        }
    }
}

/// Reports a problem the user must fix (the rest of the status, and the
/// token or secret it records, is left alone); a Warning event when the
/// reason or message is new.
pub async fn report_blocked<K: WithStatus>(
    ctx: &Context,
    object: &K,
    Blocked { readiness, retry }: Blocked,
    now: Timestamp,
) -> Result<Action> {
    let current = current(object);
    let desired = current.with_readiness(&readiness, object.meta().generation, now);
    apply_status(ctx, object, &desired).await?;
    if current.is_transition_to(&readiness) {
        // An issuer not ready yet is what applying an issuer and its tokens
        // together looks like for a moment: said, not warned about.
        let type_ = if readiness.reason == ISSUER_NOT_READY {
            EventType::Normal
        } else {
            warn!(reason = readiness.reason, message = %readiness.message, "not ready");
            EventType::Warning
        };
        ctx.publish(object, type_, readiness.reason, readiness.message)
            .await;
    }
    Ok(retry.map_or_else(Action::await_change, Action::requeue))
}

/// Requeues at `at` (at least a second from `now`), or waits for a change.
pub fn requeue_at(at: Option<Timestamp>, now: Timestamp) -> Action {
    match at {
        Some(at) => Action::requeue(Duration::from_secs(
            (at.as_second() - now.as_second()).max(1) as u64,
        )),
        None => Action::await_change(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_status_records_generation_and_transitions() {
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let blocked = Readiness::not_ready("InvalidSpec", "bad");
        let status = AppRegistrationStatus::default().with_readiness(&blocked, Some(3), now);
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.ready_reason(), Some("InvalidSpec"));
        assert!(!status.is_transition_to(&blocked));
        assert!(status.is_transition_to(&Readiness::not_ready("InvalidSpec", "worse")));
        assert!(status.is_transition_to(&Readiness::ready("Registered", "bad")));
    }

    #[test]
    fn requeue_is_never_sooner_than_a_second() {
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            requeue_at(Some(now), now),
            Action::requeue(Duration::from_secs(1))
        );
        let later = now.checked_add(Duration::from_secs(90)).unwrap();
        assert_eq!(
            requeue_at(Some(later), now),
            Action::requeue(Duration::from_secs(90))
        );
        assert_eq!(requeue_at(None, now), Action::await_change());
    }
}
