//! The choice of an issuer's next step: a pure function of what the
//! reconciler observed, each Ready reason a row in a table test. Planning
//! the keys themselves (which draws new keys) is `token::plan_keys`.

use crate::{
    api::{IssuerSettings, reason},
    controller::status::Blocked,
    token::{KeyPolicy, Keyring, MAX_PUBLISHED_KEYS},
};

/// The key Secret, as found.
#[derive(Debug)]
pub enum KeySecret {
    Absent,
    /// Exists and does not belong to this issuer: never touched.
    Foreign,
    /// The issuer's own, with its keyring or why it cannot be read.
    Ours(Result<Keyring, String>),
}

/// What the reconciler observed.
pub struct Observed<'a> {
    pub settings: &'a IssuerSettings,
    /// Who already serves this issuer's URL, when another issuer does.
    pub url_taken_by: Option<String>,
    /// A namespace the issuer or its keys live in that is being deleted.
    pub terminating_namespace: Option<&'a str>,
    /// `namespace/name` of the key Secret.
    pub key_secret: &'a str,
    pub secret: KeySecret,
}

/// What the reconciler does next.
#[derive(Debug)]
pub enum Decision {
    Wait,
    /// Reported as the Ready condition; the keys reported so far stay.
    Blocked(Blocked),
    /// Keep the keys in line with `policy`, from `current`.
    Keys {
        current: Keyring,
        policy: KeyPolicy,
    },
}

fn blocked(reason: &'static str, message: impl Into<String>, retry: Option<u64>) -> Decision {
    Decision::Blocked(Blocked::new(reason, message, retry))
}

/// The next step; see [`Decision`].
pub fn decide(observed: Observed) -> Decision {
    let Observed {
        settings,
        key_secret,
        ..
    } = observed;
    if let Some(owner) = observed.url_taken_by {
        // Serving two issuers at one URL would let the younger, or a
        // tenant's, take over the verification of the other's tokens.
        let message = format!(
            "issuerURL {} is already served for {owner}; this issuer is not served and signs nothing. Choose another issuerURL",
            settings.issuer_url
        );
        return blocked(reason::ISSUER_URL_CONFLICT, message, Some(60));
    }
    if observed.terminating_namespace.is_some() {
        // Nothing can be written there; the issuer (or the operator's
        // namespace) is on its way out.
        return Decision::Wait;
    }
    let current = match observed.secret {
        KeySecret::Foreign => {
            let message = format!(
                "Secret {key_secret} exists and is not owned by this issuer; it was left untouched. Delete or rename it so the issuer can keep its keys there."
            );
            return blocked(reason::KEY_SECRET_CONFLICT, message, Some(300));
        }
        KeySecret::Absent => None,
        KeySecret::Ours(keyring) => Some(keyring),
    };
    let policy = match key_policy(settings) {
        Ok(policy) => policy,
        Err(message) => return blocked(reason::INVALID_SPEC, message, None),
    };
    match current {
        None => Decision::Keys {
            current: Keyring::default(),
            policy,
        },
        Some(Ok(current)) => Decision::Keys { current, policy },
        // Replacing it would orphan every token its keys signed.
        Some(Err(error)) => {
            let message = format!(
                "the keys in Secret {key_secret} are unreadable ({error}); restore the Secret, or delete it to start over with new keys (tokens signed so far stop verifying)"
            );
            blocked(reason::KEY_ERROR, message, Some(300))
        }
    }
}

/// The key policy of `settings`; `Err` in words for the condition.
fn key_policy(settings: &IssuerSettings) -> Result<KeyPolicy, String> {
    let invalid = |e: crate::api::DurationError| e.to_string();
    let policy = KeyPolicy {
        algorithm: settings.algorithm(),
        rotation_interval: settings.key_rotation_interval().map_err(invalid)?,
        max_token_lifetime: settings.max_lifetime().map_err(invalid)?,
    };
    if policy.published_key_bound() > MAX_PUBLISHED_KEYS {
        return Err(format!(
            "keyRotation.interval is too short for maxLifetime: retired keys stay published for maxLifetime, so up to {} keys would be kept and at most {MAX_PUBLISHED_KEYS} are supported; lengthen keyRotation.interval or shorten maxLifetime",
            policy.published_key_bound()
        ));
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: serde_json::Value) -> IssuerSettings {
        let mut json = serde_json::json!({ "issuerURL": "https://tokens.example/a" });
        for (k, v) in extra.as_object().unwrap() {
            json[k] = v.clone();
        }
        serde_json::from_value(json).unwrap()
    }

    fn summary(decision: &Decision) -> String {
        match decision {
            Decision::Wait => "Wait".into(),
            Decision::Blocked(b) => format!("Blocked({})", b.readiness.reason),
            Decision::Keys { current, .. } => format!("Keys({})", current.keys.len()),
        }
    }

    /// (case, settings, URL taken by, terminating namespace, secret, expected)
    type Row<'a> = (
        &'a str,
        &'a IssuerSettings,
        Option<&'a str>,
        Option<&'a str>,
        KeySecret,
        &'a str,
    );

    #[test]
    fn every_ready_reason_and_step() {
        let plain = settings(serde_json::json!({}));
        let too_many_keys = settings(serde_json::json!({
            "keyRotation": { "interval": "1h" }, "maxLifetime": "8760h",
        }));
        let rows: Vec<Row> = vec![
            (
                "a new issuer",
                &plain,
                None,
                None,
                KeySecret::Absent,
                "Keys(0)",
            ),
            (
                "an issuer with keys",
                &plain,
                None,
                None,
                KeySecret::Ours(Ok(Keyring::default())),
                "Keys(0)",
            ),
            (
                "URL served for another issuer",
                &plain,
                Some("TokenIssuer team-b/x"),
                None,
                KeySecret::Absent,
                "Blocked(IssuerURLConflict)",
            ),
            (
                "namespace being deleted",
                &plain,
                None,
                Some("team-a"),
                KeySecret::Absent,
                "Wait",
            ),
            (
                "someone else's Secret",
                &plain,
                None,
                None,
                KeySecret::Foreign,
                "Blocked(KeySecretConflict)",
            ),
            (
                "more keys than can be published",
                &too_many_keys,
                None,
                None,
                KeySecret::Absent,
                "Blocked(InvalidSpec)",
            ),
            (
                "unreadable keys",
                &plain,
                None,
                None,
                KeySecret::Ours(Err("bad json".into())),
                "Blocked(KeyError)",
            ),
        ];
        for (case, settings, taken, terminating, secret, expected) in rows {
            let decision = decide(Observed {
                settings,
                url_taken_by: taken.map(str::to_string),
                terminating_namespace: terminating,
                key_secret: "ops/a-keys",
                secret,
            });
            assert_eq!(summary(&decision), expected, "{case}");
        }
    }
}
