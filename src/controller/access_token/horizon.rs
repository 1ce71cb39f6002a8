//! Looks far ahead are not kept in kube's scheduler.
//!
//! kube's controller keeps every requeue as a map entry and a delay-queue
//! entry, each with the object's reference: about 0.7 KiB per object, and
//! every token waits for its renewal, so that was a tenth of what a token
//! cost. A token whose next look is more than [`HORIZON`] away waits for a
//! change instead, and a sweep every [`SWEEP_EVERY`] triggers the tokens
//! whose next look (their renewal time, else their expiry: both in their
//! status) has come within the horizon since the last sweep. Their
//! reconcile then requeues them in kube's scheduler, at most [`HORIZON`]
//! ahead. Only tokens due within the horizon hold a scheduler entry.

use std::{sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::{
    controller::Action,
    reflector::{ObjectRef, Store},
};

use crate::{cluster::CachedToken, controller::status::requeue_at};

/// How far ahead a token's next look is kept in kube's scheduler.
pub const HORIZON: Duration = Duration::from_secs(30 * 60);
/// How often the tokens coming within the horizon are looked for; shorter
/// than the horizon, so each is found before its time.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5 * 60);

/// Looks at a token again at `at`: requeued if within the horizon, else
/// left to the sweep.
pub fn look_again_at(at: Timestamp, now: Timestamp) -> Action {
    if at.duration_since(now) > horizon() {
        Action::await_change()
    } else {
        requeue_at(Some(at), now)
    }
}

/// When the reconcile of `token` will want to look at it again, as its
/// status records it: the renewal time, else the expiry (what
/// [`super::outcome::requeue_for`] returns).
fn next_look(token: &CachedToken) -> Option<Timestamp> {
    let summary = token.summary();
    summary.renewal_time.or(summary.expires_at)
}

/// The tokens whose next look is later than `after` and not later than
/// `until`: those that came within the horizon since the last sweep.
pub fn coming_due(
    tokens: &[Arc<CachedToken>],
    after: Timestamp,
    until: Timestamp,
) -> Vec<ObjectRef<CachedToken>> {
    tokens
        .iter()
        .filter(|t| next_look(t).is_some_and(|at| at > after && at <= until))
        .map(|t| ObjectRef::from_obj(t.as_ref()))
        .collect()
}

/// Every [`SWEEP_EVERY`], the tokens that came within the horizon. The
/// first sweep covers from the start on: every token is reconciled when the
/// controller starts, and those further than the horizon wait for a sweep.
pub fn sweep(tokens: Store<CachedToken>) -> impl Stream<Item = ObjectRef<CachedToken>> {
    let start = Timestamp::now() + horizon();
    let ticks = tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_EVERY, SWEEP_EVERY);
    futures::stream::unfold((ticks, start), move |(mut ticks, covered)| {
        let tokens = tokens.clone();
        async move {
            ticks.tick().await;
            let until = Timestamp::now() + horizon();
            let due = coming_due(&tokens.state(), covered, until);
            Some((futures::stream::iter(due), (ticks, until.max(covered))))
        }
    })
    .flatten()
}

fn horizon() -> SignedDuration {
    SignedDuration::try_from(HORIZON).expect("the horizon fits")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::api::{AccessToken, AccessTokenSpec, AccessTokenStatus};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn token(name: &str, renewal: Option<&str>, expiry: Option<&str>) -> Arc<CachedToken> {
        Arc::new(
            CachedToken::new(AccessToken {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some("team".into()),
                    ..ObjectMeta::default()
                },
                spec: serde_json::from_value::<AccessTokenSpec>(serde_json::json!({
                    "issuerRef": {"name": "signer"}
                }))
                .unwrap(),
                status: Some(AccessTokenStatus {
                    renewal_time: renewal.map(|t| Time(at(t))),
                    expires_at: expiry.map(|t| Time(at(t))),
                    ..AccessTokenStatus::default()
                }),
            })
            .unwrap(),
        )
    }

    #[test]
    fn only_looks_within_the_horizon_are_scheduled() {
        let now = at("2030-01-01T00:00:00Z");
        let cases = [
            (
                "2030-01-01T00:10:00Z",
                Action::requeue(Duration::from_secs(600)),
            ),
            ("2030-01-01T00:30:00Z", Action::requeue(HORIZON)),
            ("2030-01-01T00:30:01Z", Action::await_change()),
            ("2030-03-01T00:00:00Z", Action::await_change()),
            (
                "2029-12-31T00:00:00Z",
                Action::requeue(Duration::from_secs(1)),
            ),
        ];
        for (when, expected) in cases {
            assert_eq!(look_again_at(at(when), now), expected, "{when}");
        }
    }

    #[test]
    fn a_sweep_finds_the_tokens_that_came_within_the_horizon() {
        let tokens = [
            token(
                "renews-in-window",
                Some("2030-01-01T00:40:00Z"),
                Some("2030-01-02T00:00:00Z"),
            ),
            token(
                "renews-later",
                Some("2030-01-01T02:00:00Z"),
                Some("2030-01-01T00:40:00Z"),
            ),
            token("expires-in-window", None, Some("2030-01-01T00:35:00Z")),
            token("at-the-edge", None, Some("2030-01-01T00:30:00Z")),
            token("at-the-end", Some("2030-01-01T00:45:00Z"), None),
            token("never-issued", None, None),
        ];
        let names = |refs: Vec<ObjectRef<CachedToken>>| -> Vec<String> {
            refs.into_iter().map(|r| r.name).collect()
        };
        // The last sweep covered up to 00:30; this one up to 00:45.
        let due = coming_due(
            &tokens,
            at("2030-01-01T00:30:00Z"),
            at("2030-01-01T00:45:00Z"),
        );
        assert_eq!(
            names(due),
            ["renews-in-window", "expires-in-window", "at-the-end"]
        );
    }

    /// Whatever a reconcile at any time finds, the token is looked at in
    /// time: within the horizon by kube's scheduler, else by the sweep that
    /// first covers its time, at least the horizon less a sweep ahead.
    #[test]
    fn every_look_is_scheduled_or_swept_in_time() {
        let start = at("2030-01-01T00:00:00Z");
        let step = SignedDuration::try_from(SWEEP_EVERY).unwrap();
        let sweeps: Vec<Timestamp> = (1..40).map(|i| start + step * i).collect();
        for minutes in [1, 29, 30, 31, 34, 35, 36, 60, 61, 119, 180] {
            let due = start + SignedDuration::from_mins(minutes);
            let reconciled_at = start;
            if look_again_at(due, reconciled_at) != Action::await_change() {
                continue;
            }
            let mut covered = start + horizon();
            let found = sweeps.iter().find(|&&s| {
                let until = s + horizon();
                let hit = due > covered && due <= until;
                covered = until;
                hit
            });
            let found = found.unwrap_or_else(|| panic!("{minutes} min: never swept"));
            assert!(*found < due, "{minutes} min: swept after it was due");
            assert!(
                due.duration_since(*found) >= horizon() - step,
                "{minutes} min: swept too late"
            );
            assert_ne!(look_again_at(due, *found), Action::await_change());
        }
    }
}
