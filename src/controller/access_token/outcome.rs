//! What a carried-out decision leaves behind: the status to record, the
//! event to publish and when to look again. Pure, so the reconciler only
//! writes what these say.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::runtime::controller::Action;

use super::{
    MAX_PREVIOUS_TOKENS, decide::MintReason, horizon::look_again_at, record::RecordedToken,
};
use crate::{
    api::{AccessTokenStatus, PreviousToken, reason},
    controller::{
        conditions::{Readiness, ready_condition},
        status::ReadyStatus,
    },
    token::{TimingPolicy, renewal_time},
};

/// The tokens of `status` that have not expired at `now`, each once: the
/// current one and those superseded by rotation, as (token id, expiry).
/// Only the status is read: a token id anywhere else may be someone else's.
pub fn live_tokens(status: &AccessTokenStatus, now: Timestamp) -> Vec<(String, Timestamp)> {
    if status.minted.is_none() {
        // Without a record no token of this AccessToken is active.
        return Vec::new();
    }
    let current = status.token_id.as_ref().zip(status.expires_at.as_ref());
    let previous = status
        .previous_tokens
        .iter()
        .map(|p| (&p.token_id, &p.expires_at));
    let mut live: Vec<(String, Timestamp)> = Vec::new();
    for (token_id, expires_at) in current.into_iter().chain(previous) {
        if expires_at.0 > now && !live.iter().any(|(id, _)| id == token_id) {
            live.push((token_id.clone(), expires_at.0));
        }
    }
    live
}

/// After a mint of `new_token_id` for `why`: the tokens that stay valid
/// beside it, and those to revoke because more than
/// [`MAX_PREVIOUS_TOKENS`] would. Only a rotation keeps the replaced token;
/// the latest to expire are kept.
pub fn superseded(
    status: &AccessTokenStatus,
    why: MintReason,
    new_token_id: &str,
    now: Timestamp,
) -> (Vec<PreviousToken>, Vec<PreviousToken>) {
    if !matches!(why, MintReason::Rotation | MintReason::Renewal) {
        return (Vec::new(), Vec::new());
    }
    let current = status.token_id.as_ref().zip(status.expires_at.as_ref());
    let mut previous: Vec<PreviousToken> = status
        .previous_tokens
        .iter()
        .cloned()
        .chain(current.map(|(id, expires_at)| PreviousToken {
            token_id: id.clone(),
            expires_at: expires_at.clone(),
            token_hash: status.token_hash.clone(),
        }))
        .filter(|p| p.expires_at.0 > now && p.token_id != new_token_id)
        .collect();
    previous.sort_by_key(|p| std::cmp::Reverse(p.expires_at.0));
    let dropped = previous.split_off(previous.len().min(MAX_PREVIOUS_TOKENS));
    (previous, dropped)
}

/// The Ready condition, the event reason and the event note of a mint.
pub fn minted(
    why: MintReason,
    record: &RecordedToken,
    secret_name: &str,
) -> (Readiness, &'static str, String) {
    let (token_id, revision, until) = (&record.token_id, record.revision, record.expires_at);
    let (ready_reason, event_reason, note) = match why {
        MintReason::Initial => (
            reason::ISSUED,
            reason::ISSUED,
            format!("Issued token {token_id} (revision {revision}), valid until {until}"),
        ),
        MintReason::Rotation => (
            reason::ROTATED,
            "Rotated",
            format!(
                "Rotated to token {token_id} (revision {revision}), valid until {until}; the previous token stays valid until it expires"
            ),
        ),
        MintReason::Renewal => (
            reason::ROTATED,
            "Renewed",
            format!(
                "Renewed on request to token {token_id} (revision {revision}), valid until {until}; the previous token stays valid until it expires"
            ),
        ),
        MintReason::SpecChanged => (
            reason::ISSUED,
            "Reissued",
            format!(
                "The spec changed: issued token {token_id} (revision {revision}) and revoked the previous token"
            ),
        ),
        MintReason::SecretChanged => (
            reason::ISSUED,
            "Reissued",
            format!(
                "Secret {secret_name} was deleted or edited: issued token {token_id} (revision {revision}) and revoked the previous token"
            ),
        ),
    };
    let message = format!("token {token_id} valid until {until}");
    (Readiness::ready(ready_reason, message), event_reason, note)
}

/// The Ready condition of a kept token: what it said, when it said the
/// token is ready.
pub fn kept(status: &AccessTokenStatus, record: &RecordedToken) -> Readiness {
    match ready_condition(&status.conditions) {
        Some(c) if c.status == "True" => Readiness::ready(
            if c.reason == reason::ROTATED {
                reason::ROTATED
            } else {
                reason::ISSUED
            },
            c.message.clone(),
        ),
        _ => Readiness::ready(
            reason::ISSUED,
            format!(
                "token {} valid until {}",
                record.token_id, record.expires_at
            ),
        ),
    }
}

/// The status recording `record` as the current token.
pub struct TokenStatus<'a> {
    pub current: &'a AccessTokenStatus,
    pub record: &'a RecordedToken,
    pub timing: &'a TimingPolicy,
    pub previous_tokens: Vec<PreviousToken>,
    pub readiness: Readiness,
    pub secret_name: String,
    pub generation: Option<i64>,
    pub now: Timestamp,
    /// The renewal request served so far.
    pub renew_request: Option<String>,
}

impl TokenStatus<'_> {
    pub fn build(self) -> AccessTokenStatus {
        let record = self.record;
        let with_ready = self
            .current
            .with_readiness(&self.readiness, self.generation, self.now);
        AccessTokenStatus {
            conditions: with_ready.conditions,
            observed_generation: self.generation,
            token_id: Some(record.token_id.clone()),
            key_id: record.key_id.clone(),
            issued_at: Some(Time(record.issued_at)),
            expires_at: Some(Time(record.expires_at)),
            renewal_time: renewal_at(record, self.timing).map(Time),
            revision: Some(record.revision),
            secret_name: Some(self.secret_name),
            token_hash: Some(record.token_hash.clone()),
            previous_tokens: self.previous_tokens,
            spec_hash: Some(record.spec_hash.clone()),
            minted: Some(record.minted.clone()),
            renew_request: self.renew_request,
        }
    }
}

/// The status once the Secret is gone (expired or revoked): the record of
/// the last token stays, with `readiness`.
pub fn without_secret(
    current: &AccessTokenStatus,
    readiness: &Readiness,
    generation: Option<i64>,
    now: Timestamp,
    keep_previous: bool,
) -> AccessTokenStatus {
    let mut status = current.with_readiness(readiness, generation, now);
    status.renewal_time = None;
    status.secret_name = None;
    if !keep_previous {
        status.previous_tokens.clear();
    }
    status
}

fn renewal_at(record: &RecordedToken, timing: &TimingPolicy) -> Option<Timestamp> {
    renewal_time(
        record.issued_at,
        record.expires_at,
        timing,
        &record.token_id,
    )
    .ok()
    .flatten()
}

/// When to look at a token next: its renewal time, else its expiry (the
/// times its status records: see [`super::horizon`]).
pub fn requeue_for(record: &RecordedToken, timing: &TimingPolicy, now: Timestamp) -> Action {
    look_again_at(renewal_at(record, timing).unwrap_or(record.expires_at), now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn previous(id: &str, expires: &str) -> PreviousToken {
        PreviousToken {
            token_id: id.into(),
            expires_at: Time(at(expires)),
            token_hash: None,
        }
    }

    fn status(previous_tokens: Vec<PreviousToken>) -> AccessTokenStatus {
        AccessTokenStatus {
            token_id: Some("current".into()),
            expires_at: Some(Time(at("2030-01-03T00:00:00Z"))),
            previous_tokens,
            minted: Some(Default::default()),
            ..AccessTokenStatus::default()
        }
    }

    #[test]
    fn live_tokens_are_the_unexpired_recorded_ones_once_each() {
        let now = at("2030-01-02T00:00:00Z");
        let s = status(vec![
            previous("old", "2030-01-01T00:00:00Z"),
            previous("recent", "2030-01-02T12:00:00Z"),
            previous("current", "2030-01-03T00:00:00Z"),
        ]);
        let ids: Vec<String> = live_tokens(&s, now).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["current", "recent"]);
        let unrecorded = AccessTokenStatus { minted: None, ..s };
        assert!(live_tokens(&unrecorded, now).is_empty());
    }

    #[test]
    fn only_a_rotation_keeps_the_replaced_token_and_at_most_ten() {
        let now = at("2030-01-01T00:00:00Z");
        let many: Vec<PreviousToken> = (0..12)
            .map(|i| previous(&format!("p{i:02}"), &format!("2030-01-02T{i:02}:00:00Z")))
            .collect();
        let s = status(many);
        let (kept, dropped) = superseded(&s, MintReason::Rotation, "next", now);
        assert_eq!(kept.len(), MAX_PREVIOUS_TOKENS);
        assert_eq!(kept[0].token_id, "current", "the latest to expire first");
        let dropped: Vec<&str> = dropped.iter().map(|p| p.token_id.as_str()).collect();
        assert_eq!(dropped, ["p02", "p01", "p00"]);
        let (kept_on_request, _) = superseded(&s, MintReason::Renewal, "next", now);
        assert_eq!(
            kept_on_request.len(),
            MAX_PREVIOUS_TOKENS,
            "a renewal keeps them too"
        );
        for why in [
            MintReason::Initial,
            MintReason::SpecChanged,
            MintReason::SecretChanged,
        ] {
            assert_eq!(superseded(&s, why, "next", now), (Vec::new(), Vec::new()));
        }
    }

    #[test]
    fn a_kept_token_keeps_saying_rotated() {
        let record = RecordedToken {
            token_id: "t".into(),
            issued_at: at("2030-01-01T00:00:00Z"),
            expires_at: at("2030-01-02T00:00:00Z"),
            key_id: None,
            token_hash: "sha256:x".into(),
            revision: 2,
            spec_hash: "s".into(),
            minted: Default::default(),
        };
        let (rotated, event, _) = minted(MintReason::Rotation, &record, "ci");
        assert_eq!((rotated.reason, event), (reason::ROTATED, "Rotated"));
        let s = AccessTokenStatus::default().with_readiness(&rotated, None, record.issued_at);
        assert_eq!(kept(&s, &record), rotated);
        assert_eq!(
            kept(&AccessTokenStatus::default(), &record).reason,
            reason::ISSUED
        );
    }
}
