//! When a token is issued, expires and is renewed.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// Renewal starts at most this long before the computed renewal point, spread
/// by token id, so that tokens created together do not all rotate together.
const MAX_JITTER: Duration = Duration::from_secs(15 * 60);
/// Default `renewBeforePercentage`.
pub const DEFAULT_RENEW_BEFORE_PERCENTAGE: u32 = 20;
/// No object is minted for more often than this, whatever the cause: a
/// spec that asks for constant renewal, a Secret edited in a loop.
pub const MIN_MINT_INTERVAL: Duration = Duration::from_secs(10);

/// The shortest time between a token's issue and its renewal: 10 % of its
/// lifetime, and never less than [`MIN_MINT_INTERVAL`].
pub fn renewal_floor(lifetime: Duration) -> Duration {
    (lifetime / 10).max(MIN_MINT_INTERVAL)
}

/// When the next token of an object may be minted, given when its last one
/// was (`None`: now).
pub fn next_mint_allowed(last_issued: Option<Timestamp>, now: Timestamp) -> Option<Timestamp> {
    let earliest = last_issued?.checked_add(MIN_MINT_INTERVAL).ok()?;
    (earliest > now).then_some(earliest)
}

/// The timing settings of one token, read from its spec.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimingPolicy {
    pub lifetime: Option<Duration>,
    pub expires_at: Option<Timestamp>,
    pub renew_before: Option<Duration>,
    pub renew_before_percentage: Option<u32>,
    /// `false` for onExpiry Delete, and whenever expiresAt is fixed.
    pub renew: bool,
}

/// The issuer's limits on lifetimes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LifetimeLimits {
    pub default: Duration,
    pub max: Duration,
}

/// When a freshly minted token is valid and when to replace it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// `None` when the token is never renewed.
    pub renewal_time: Option<Timestamp>,
}

/// Why no token can be issued with this timing.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TimingError {
    #[error("expiresAt {0} has passed")]
    ExpiresAtPassed(Timestamp),
    #[error("the lifetime of {asked} exceeds the issuer's maxLifetime of {max}")]
    TooLong { asked: String, max: String },
    #[error("renewBefore {renew_before} is not shorter than the lifetime {lifetime}")]
    RenewBeforeTooLong {
        renew_before: String,
        lifetime: String,
    },
}

/// Seconds are the precision of Kubernetes times: anything finer would not
/// survive a round trip through the status and would look like a change.
pub fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).expect("a valid timestamp stays valid")
}

fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (h, 0, 0) if h > 0 => format!("{h}h"),
        (0, m, 0) if m > 0 => format!("{m}m"),
        (0, 0, s) => format!("{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// Plans a token minted at `now`. `jitter_seed` (the token id) spreads
/// renewals deterministically: the same token always gets the same time.
pub fn plan_validity(
    policy: &TimingPolicy,
    limits: LifetimeLimits,
    now: Timestamp,
    jitter_seed: &str,
) -> Result<Validity, TimingError> {
    let issued_at = whole_seconds(now);
    let lifetime = match policy.expires_at {
        Some(end) => {
            let end = whole_seconds(end);
            if end <= issued_at {
                return Err(TimingError::ExpiresAtPassed(end));
            }
            let secs = (end.as_second() - issued_at.as_second()) as u64;
            Duration::from_secs(secs)
        }
        None => policy.lifetime.unwrap_or(limits.default),
    };
    if lifetime > limits.max {
        return Err(TimingError::TooLong {
            asked: human(lifetime),
            max: human(limits.max),
        });
    }
    let lifetime = Duration::from_secs(lifetime.as_secs().max(1));
    let expires_at = issued_at
        .checked_add(lifetime)
        .map_err(|_| TimingError::TooLong {
            asked: human(lifetime),
            max: human(limits.max),
        })?;
    let renewal_time = renewal_time(issued_at, expires_at, policy, jitter_seed)?;
    Ok(Validity {
        issued_at,
        expires_at,
        renewal_time,
    })
}

/// When a token valid from `issued_at` to `expires_at` is to be replaced
/// under `policy`; `None` when it never is. A pure function of its inputs, so
/// it can be recomputed at any time (after `renewBefore` changes, say)
/// without minting.
pub fn renewal_time(
    issued_at: Timestamp,
    expires_at: Timestamp,
    policy: &TimingPolicy,
    jitter_seed: &str,
) -> Result<Option<Timestamp>, TimingError> {
    if !policy.renew || policy.expires_at.is_some() {
        return Ok(None);
    }
    let lifetime =
        Duration::from_secs((expires_at.as_second() - issued_at.as_second()).max(1) as u64);
    let renew_before = policy.renew_before.unwrap_or_else(|| {
        let pct = policy
            .renew_before_percentage
            .unwrap_or(DEFAULT_RENEW_BEFORE_PERCENTAGE);
        lifetime * pct / 100
    });
    if renew_before >= lifetime {
        return Err(TimingError::RenewBeforeTooLong {
            renew_before: human(renew_before),
            lifetime: human(lifetime),
        });
    }
    let jitter = jitter(jitter_seed, (renew_before / 10).min(MAX_JITTER));
    let renew_at = expires_at
        .checked_sub(renew_before + jitter)
        .unwrap_or(issued_at);
    let earliest = issued_at
        .checked_add(renewal_floor(lifetime))
        .unwrap_or(expires_at)
        .min(expires_at);
    Ok(Some(whole_seconds(renew_at.max(earliest))))
}

/// A duration in `[0, max)` derived from `seed` (FNV-1a), stable across
/// restarts and machines.
fn jitter(seed: &str, max: Duration) -> Duration {
    let max_ms = max.as_millis() as u64;
    if max_ms == 0 {
        return Duration::ZERO;
    }
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    Duration::from_millis(hash % max_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LifetimeLimits = LifetimeLimits {
        default: Duration::from_secs(24 * 3600),
        max: Duration::from_secs(8760 * 3600),
    };

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn rotate(lifetime: Option<u64>) -> TimingPolicy {
        TimingPolicy {
            lifetime: lifetime.map(Duration::from_secs),
            renew: true,
            ..TimingPolicy::default()
        }
    }

    #[test]
    fn renewal_never_comes_sooner_than_the_floor() {
        let issued = at("2026-01-01T00:00:00Z");
        // (lifetime s, renewBefore s, earliest renewal after issue in s)
        let cases = [
            (10, 9, 10),         // the loop of issue 10: renewal at expiry, not at issue
            (60, 59, 10),        // 10 s floor
            (1_000, 999, 100),   // 10 % of the lifetime
            (3_600, 600, 2_940), // far from the floor: renewBefore (minus jitter) rules
        ];
        for (lifetime, renew_before, earliest) in cases {
            let policy = TimingPolicy {
                lifetime: Some(Duration::from_secs(lifetime)),
                renew_before: Some(Duration::from_secs(renew_before)),
                renew: true,
                ..TimingPolicy::default()
            };
            let expires = issued.checked_add(Duration::from_secs(lifetime)).unwrap();
            let renew_at = renewal_time(issued, expires, &policy, "seed")
                .unwrap()
                .unwrap();
            let after = renew_at.as_second() - issued.as_second();
            assert!(
                after >= earliest.min(lifetime as i64),
                "lifetime {lifetime}s, renewBefore {renew_before}s: renewal {after}s after issue"
            );
            assert!(after <= lifetime as i64);
        }
    }

    #[test]
    fn one_mint_per_object_per_interval() {
        let now = at("2026-01-01T00:00:30Z");
        assert_eq!(next_mint_allowed(None, now), None);
        assert_eq!(
            next_mint_allowed(Some(at("2026-01-01T00:00:00Z")), now),
            None
        );
        assert_eq!(
            next_mint_allowed(Some(at("2026-01-01T00:00:25Z")), now),
            Some(at("2026-01-01T00:00:35Z"))
        );
    }

    #[test]
    fn default_lifetime_and_renewal_at_eighty_percent_minus_jitter() {
        let now = at("2026-01-01T00:00:00Z");
        let v = plan_validity(&rotate(None), LIMITS, now, "jti-1").unwrap();
        assert_eq!(v.expires_at, at("2026-01-02T00:00:00Z"));
        let renewal = v.renewal_time.unwrap();
        let nominal = at("2026-01-01T19:12:00Z"); // 80 % of 24 h
        assert!(renewal <= nominal, "{renewal}");
        assert!(
            renewal > nominal.checked_sub(MAX_JITTER).unwrap(),
            "{renewal}"
        );
    }

    #[test]
    fn jitter_is_stable_per_token_and_spreads_tokens() {
        let now = at("2026-01-01T00:00:00Z");
        let a = plan_validity(&rotate(None), LIMITS, now, "token-a").unwrap();
        let again = plan_validity(&rotate(None), LIMITS, now, "token-a").unwrap();
        assert_eq!(a, again);
        let distinct: std::collections::BTreeSet<_> = (0..1000)
            .map(|i| {
                plan_validity(&rotate(None), LIMITS, now, &format!("t{i}"))
                    .unwrap()
                    .renewal_time
                    .unwrap()
            })
            .collect();
        assert!(
            distinct.len() > 500,
            "only {} distinct seconds",
            distinct.len()
        );
    }

    #[test]
    fn short_lifetime_renews_before_expiry() {
        let now = at("2026-01-01T00:00:00Z");
        let v = plan_validity(&rotate(Some(20)), LIMITS, now, "x").unwrap();
        assert_eq!(v.expires_at, at("2026-01-01T00:00:20Z"));
        let renewal = v.renewal_time.unwrap();
        assert!(renewal >= at("2026-01-01T00:00:15Z") && renewal <= at("2026-01-01T00:00:16Z"));
    }

    #[test]
    fn renew_before_overrides_percentage() {
        let policy = TimingPolicy {
            lifetime: Some(Duration::from_secs(3600)),
            renew_before: Some(Duration::from_secs(600)),
            renew: true,
            ..TimingPolicy::default()
        };
        let v = plan_validity(&policy, LIMITS, at("2026-01-01T00:00:00Z"), "x").unwrap();
        let renewal = v.renewal_time.unwrap();
        assert!(renewal <= at("2026-01-01T00:50:00Z") && renewal >= at("2026-01-01T00:49:00Z"));
    }

    #[test]
    fn delete_policy_never_renews() {
        let policy = TimingPolicy {
            lifetime: Some(Duration::from_secs(60)),
            renew: false,
            ..TimingPolicy::default()
        };
        let v = plan_validity(&policy, LIMITS, at("2026-01-01T00:00:00Z"), "x").unwrap();
        assert_eq!(v.renewal_time, None);
    }

    #[test]
    fn fixed_expiry_is_kept_and_never_renewed() {
        let policy = TimingPolicy {
            expires_at: Some(at("2026-03-01T00:00:00Z")),
            renew: true,
            ..TimingPolicy::default()
        };
        let v = plan_validity(&policy, LIMITS, at("2026-01-01T00:00:00.700Z"), "x").unwrap();
        assert_eq!(v.issued_at, at("2026-01-01T00:00:00Z"));
        assert_eq!(v.expires_at, at("2026-03-01T00:00:00Z"));
        assert_eq!(v.renewal_time, None);
    }

    #[test]
    fn refuses_past_expiry_and_lifetimes_over_the_issuer_max() {
        let now = at("2026-01-01T00:00:00Z");
        let past = TimingPolicy {
            expires_at: Some(at("2025-12-31T00:00:00Z")),
            ..TimingPolicy::default()
        };
        assert!(matches!(
            plan_validity(&past, LIMITS, now, "x"),
            Err(TimingError::ExpiresAtPassed(_))
        ));
        let too_long = rotate(Some(9000 * 3600));
        let err = plan_validity(&too_long, LIMITS, now, "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the lifetime of 9000h exceeds the issuer's maxLifetime of 8760h"
        );
    }

    #[test]
    fn refuses_renew_before_not_shorter_than_the_default_lifetime() {
        let policy = TimingPolicy {
            renew_before: Some(Duration::from_secs(48 * 3600)),
            renew: true,
            ..TimingPolicy::default()
        };
        let err = plan_validity(&policy, LIMITS, at("2026-01-01T00:00:00Z"), "x").unwrap_err();
        assert!(
            matches!(err, TimingError::RenewBeforeTooLong { .. }),
            "{err}"
        );
    }
}
