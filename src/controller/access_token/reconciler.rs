//! One reconcile of one AccessToken: gathers what [`decide`] needs, and
//! carries out what it chose. Every choice is made in `decide`; what is left
//! here is reading and writing.

use k8s_openapi::{
    api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::OwnerReference, jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};
use secrecy::ExposeSecret;
use serde_json::json;
use tracing::{debug, info};

use super::{
    adopt,
    decide::{App, BoundObject, Decision, Mint, MintReason, Observed, decide},
    outcome::{self, TokenStatus},
    record::{self, RecordedToken},
    restart, secret,
};
use crate::{
    api::{AccessToken, AccessTokenStatus, BoundObjectKind, RENEW_ANNOTATION, TokenFormat, reason},
    controller::{
        Context, Error, MANAGER, Result,
        conditions::{Readiness, with_condition},
        managed_secret::{SecretState, delete_if_ours},
        revocation::RevokedToken,
        status::{
            Blocked, ReadyStatus, apply_status, apply_status_once, report_blocked, requeue_at,
        },
    },
    telemetry::TokenEvent,
    token::{
        DEFAULT_OPAQUE_PREFIX, LoadedKeyring, SigningKey, fingerprint, new_opaque_token,
        new_token_id, policy, sign_jwt,
    },
};

pub struct Reconciler<'a> {
    token: &'a AccessToken,
    ctx: &'a Context,
    namespace: String,
    name: String,
    uid: String,
    status: AccessTokenStatus,
    now: Timestamp,
    /// Read straight from the API server rather than from the caches.
    fresh: bool,
}

impl<'a> Reconciler<'a> {
    pub fn new(token: &'a AccessToken, ctx: &'a Context) -> Result<Self> {
        Ok(Self {
            namespace: token
                .namespace()
                .ok_or(Error::MissingObjectKey("AccessToken", "metadata.namespace"))?,
            name: token.name_any(),
            uid: token
                .uid()
                .ok_or(Error::MissingObjectKey("AccessToken", "metadata.uid"))?,
            status: token.status.clone().unwrap_or_default(),
            now: Timestamp::now(),
            fresh: false,
            token,
            ctx,
        })
    }

    /// When the Secret does not hold the recorded token, either someone
    /// changed it or a cache lags behind the operator's own last writes (the
    /// Secret and the status are written one after the other). The API
    /// server tells which: the reconcile is done again on what it says.
    pub async fn recheck(&self) -> Result<Action> {
        let api: Api<AccessToken> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let Some(token) = api.get_opt(&self.name).await? else {
            return Ok(Action::await_change());
        };
        if token.uid().as_deref() != Some(self.uid.as_str())
            || token.meta().deletion_timestamp.is_some()
        {
            return Ok(Action::await_change());
        }
        let fresh = Reconciler {
            fresh: true,
            ..Reconciler::new(&token, self.ctx)?
        };
        Box::pin(fresh.apply()).await
    }

    /// Gathers, decides, acts.
    pub async fn apply(&self) -> Result<Action> {
        let secret_name = record::secret_name(self.token);
        let secret = if self.fresh {
            SecretState::fetch(self.ctx, &self.namespace, &secret_name, &self.uid).await?
        } else {
            SecretState::observe(self.ctx, &self.namespace, &secret_name, &self.uid).await?
        };
        let (bound_object, owners) = self.bound_object().await?;
        let recorded = RecordedToken::from_status(&self.status);
        let decision = decide(Observed {
            spec: &self.token.spec,
            namespace: &self.namespace,
            name: &self.name,
            status: &self.status,
            namespace_terminating: self.ctx.issuers.namespace_terminating(&self.namespace),
            bound_object,
            app: self.app(),
            secret: secret::seen(&secret, recorded.as_ref()),
            issuer: self.ctx.issuers.resolve(
                &self.token.spec.issuer_ref(),
                &self.namespace,
                &self.ctx.config.namespace,
            ),
            revoked_in_namespace: self.ctx.revocation_counts.in_namespace(&self.namespace),
            revocation_quota: self.ctx.config.revocation_quota,
            fresh: self.fresh,
            now: self.now,
            new_token_id: new_token_id(),
            renew_request: self
                .token
                .annotations()
                .get(RENEW_ANNOTATION)
                .map(String::as_str),
        });
        if decision != Decision::Wait
            && let Some(owners) = owners
        {
            self.set_owners(owners).await?;
        }
        match decision {
            Decision::Wait => {
                debug!("nothing to do until something changes");
                Ok(Action::await_change())
            }
            Decision::Blocked(blocked) => {
                report_blocked(self.ctx, self.token, blocked, self.now).await
            }
            Decision::Revoke { why } => self.revoke(&secret, &why).await,
            Decision::Throttled { until } => {
                debug!(%until, "a token was minted moments ago; the next waits");
                Ok(requeue_at(Some(until), self.now))
            }
            Decision::Mint(mint) => self.mint(*mint, &secret).await,
            Decision::Keep {
                record,
                timing,
                rewrite_secret,
            } => {
                if rewrite_secret {
                    secret::write(self.ctx, self.token, &record, None, &secret).await?;
                }
                let status = TokenStatus {
                    current: &self.status,
                    record: &record,
                    timing: &timing,
                    previous_tokens: self.status.previous_tokens.clone(),
                    readiness: outcome::kept(&self.status, &record),
                    secret_name,
                    generation: self.token.meta().generation,
                    now: self.now,
                    renew_request: self.status.renew_request.clone(),
                };
                apply_status(self.ctx, self.token, &status.build()).await?;
                Ok(outcome::requeue_for(&record, &timing, self.now))
            }
            Decision::Expire => self.expire(&secret).await,
            Decision::Recheck => self.recheck().await,
        }
    }

    /// Mints a new token into the Secret and records it, or records the one
    /// a crash left in the Secret unrecorded.
    async fn mint(&self, mint: Mint, secret: &SecretState) -> Result<Action> {
        if mint.may_adopt
            && let Some(record) = self.unrecorded_token(&mint).await
        {
            info!(token_id = %record.token_id, "the Secret holds a token minted for this spec but not recorded (a crash between the two writes): recorded instead of minting another");
            return self
                .recorded(mint.reason, record, &mint.timing, mint.renew_request)
                .await;
        }
        let (value, key_id) = match mint.format {
            TokenFormat::Jwt => {
                let key = self.signing_key(&mint).await?;
                let claims = policy::claims(
                    &mint.minted,
                    &mint.token_id,
                    mint.validity.issued_at,
                    mint.validity.expires_at,
                );
                (sign_jwt(&claims, &key), Some(key.kid.clone()))
            }
            TokenFormat::Opaque => {
                let prefix = self.token.spec.prefix.as_deref();
                (
                    new_opaque_token(prefix.unwrap_or(DEFAULT_OPAQUE_PREFIX)),
                    None,
                )
            }
        };
        let record = RecordedToken {
            token_id: mint.token_id,
            issued_at: mint.validity.issued_at,
            expires_at: mint.validity.expires_at,
            key_id,
            token_hash: fingerprint(value.expose_secret()),
            revision: mint.revision,
            spec_hash: mint.spec_hash,
            minted: mint.minted,
        };
        // The tokens this one replaces: revoked at once when they no longer
        // match the spec or were tampered with, else left to expire.
        let revoked = if mint.reason.revokes_previous() {
            let live = self.revocable(outcome::live_tokens(&self.status, self.now));
            self.ctx.revocations.revoke(&live, self.now).await?;
            !live.is_empty()
        } else {
            false
        };
        secret::write(self.ctx, self.token, &record, Some(&value), secret).await?;
        if revoked {
            // A deleted or edited Secret, or a changed spec, revokes as surely
            // as `revoked: true` does.
            self.ctx.metrics.token_event(TokenEvent::Revoked);
        }
        self.recorded(mint.reason, record, &mint.timing, mint.renew_request)
            .await
    }

    /// Records a token now in the Secret: the status, superseded tokens,
    /// the event and the metrics of the mint.
    async fn recorded(
        &self,
        why: MintReason,
        record: RecordedToken,
        timing: &crate::token::TimingPolicy,
        renew_request: Option<String>,
    ) -> Result<Action> {
        let (previous, dropped) =
            outcome::superseded(&self.status, why, &record.token_id, self.now);
        let dropped = self.revocable(
            dropped
                .into_iter()
                .map(|p| (p.token_id, p.expires_at.0))
                .collect(),
        );
        self.ctx.revocations.revoke(&dropped, self.now).await?;
        let secret_name = record::secret_name(self.token);
        let (readiness, event_reason, note) = outcome::minted(why, &record, &secret_name);
        let mut status = TokenStatus {
            current: &self.status,
            record: &record,
            timing,
            previous_tokens: previous,
            readiness,
            secret_name,
            generation: self.token.meta().generation,
            now: self.now,
            renew_request,
        }
        .build();
        // Workloads that read the token at start-up get the new one. Mints
        // are rate-limited, and so, through them, are restarts.
        if why != MintReason::Initial && !self.token.spec.rollout_restart_targets.is_empty() {
            let restarted = self.restart_workloads().await;
            status.conditions = with_condition(
                &status.conditions,
                restart::CONDITION,
                &restarted,
                self.token.meta().generation,
                self.now,
            );
        }
        apply_status(self.ctx, self.token, &status).await?;
        info!(token_id = %record.token_id, revision = record.revision, ?why, "token minted");
        self.ctx.metrics.token_event(
            if matches!(why, MintReason::Rotation | MintReason::Renewal) {
                TokenEvent::Rotated
            } else {
                TokenEvent::Issued
            },
        );
        self.ctx
            .publish(self.token, EventType::Normal, event_reason, note)
            .await;
        Ok(outcome::requeue_for(&record, timing, self.now))
    }

    /// The token reached its end and is not renewed: the Secret goes.
    async fn expire(&self, secret: &SecretState) -> Result<Action> {
        delete_if_ours(self.ctx, &self.namespace, secret).await?;
        let message = format!(
            "token {} expired at {}; the Secret was deleted",
            self.status.token_id.as_deref().unwrap_or("-"),
            self.status
                .expires_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default()
        );
        let readiness = Readiness::not_ready(reason::EXPIRED, message);
        let generation = self.token.meta().generation;
        let status = outcome::without_secret(&self.status, &readiness, generation, self.now, true);
        // Counted once: a reconcile working from a copy older than the
        // expiry's own status write (a Secret's deletion can trigger one
        // before that write is back in the cache) finds a changed object.
        if !apply_status_once(self.ctx, self.token, &status).await? {
            return Ok(Action::requeue(crate::controller::ECHO_WAIT));
        }
        if self.status.ready_reason() != Some(reason::EXPIRED) {
            self.ctx.metrics.token_event(TokenEvent::Expired);
            self.ctx
                .publish(self.token, EventType::Normal, "Expired", readiness.message)
                .await;
        }
        Ok(Action::await_change())
    }

    /// Revokes every live token and removes the Secret, keeping the
    /// resource as a record.
    async fn revoke(&self, secret: &SecretState, why: &str) -> Result<Action> {
        let live = self.revocable(outcome::live_tokens(&self.status, self.now));
        self.ctx.revocations.revoke(&live, self.now).await?;
        delete_if_ours(self.ctx, &self.namespace, secret).await?;
        let message = format!(
            "{why}: revoked {} token(s) and removed the Secret",
            live.len()
        );
        let readiness = Readiness::not_ready(reason::REVOKED, message.clone());
        let generation = self.token.meta().generation;
        let status = outcome::without_secret(&self.status, &readiness, generation, self.now, false);
        apply_status(self.ctx, self.token, &status).await?;
        info!(revoked = live.len(), "token revoked");
        self.ctx.metrics.token_event(TokenEvent::Revoked);
        self.ctx
            .publish(self.token, EventType::Normal, reason::REVOKED, message)
            .await;
        Ok(Action::await_change())
    }

    /// The finalizer: revokes every live token and removes the Secret before
    /// the AccessToken may go. Copes with an AccessToken that never got a token.
    pub async fn cleanup(&self) -> Result<Action> {
        let secret_name = record::secret_name(self.token);
        let secret =
            SecretState::observe(self.ctx, &self.namespace, &secret_name, &self.uid).await?;
        let live = self.revocable(outcome::live_tokens(&self.status, self.now));
        self.ctx.revocations.revoke(&live, self.now).await?;
        delete_if_ours(self.ctx, &self.namespace, &secret).await?;
        // Said once: a retry finds the Secret gone, and so does the deletion
        // of an AccessToken that was revoked (and said so) before.
        if !live.is_empty() && matches!(secret, SecretState::Ours(_)) {
            info!(revoked = live.len(), "AccessToken deleted: tokens revoked");
            self.ctx.metrics.token_event(TokenEvent::Revoked);
            let note = format!(
                "AccessToken deleted: revoked {} token(s) and removed the Secret",
                live.len()
            );
            self.ctx
                .publish(self.token, EventType::Normal, reason::REVOKED, note)
                .await;
        }
        Ok(Action::await_change())
    }

    /// The revocation entries of `tokens` (id, expiry) of this AccessToken.
    fn revocable(&self, tokens: Vec<(String, Timestamp)>) -> Vec<RevokedToken> {
        let Some(minted) = &self.status.minted else {
            return Vec::new();
        };
        tokens
            .into_iter()
            .map(|(token_id, expires_at)| RevokedToken {
                issuer_url: minted.issuer_url.clone(),
                token_id,
                expires_at,
                namespace: Some(self.namespace.clone()),
            })
            .collect()
    }

    /// The API server will not store the Secret as the spec asks: say so and
    /// wait for a change rather than retry the same write.
    pub async fn secret_refused(&self, secret: &str, why: &str) -> Result<Action> {
        let message = format!(
            "Secret {secret} cannot be written as the spec asks ({why}); fix secretTemplate"
        );
        let blocked = Blocked::new(reason::INVALID_SPEC, message, None);
        report_blocked(self.ctx, self.token, blocked, self.now).await
    }

    /// The active signing key of the mint's issuer, from the watched key
    /// Secret. Only when the watch has not yet shown the key the issuer's
    /// status names (the issuer wrote both a moment ago) is the Secret read
    /// directly.
    async fn signing_key(&self, mint: &Mint) -> Result<SigningKey> {
        let issuer = &mint.issuer;
        let (namespace, name) = &issuer.key_secret;
        let unreadable = |reason: String| Error::KeyringUnreadable {
            issuer: issuer.name.clone(),
            secret: format!("{namespace}/{name}"),
            reason,
        };
        let active = |keyring: &LoadedKeyring| -> Result<Option<SigningKey>> {
            Ok(keyring
                .signing_key()
                .map_err(|e| Error::Key(e.clone()))?
                .filter(|key| key.kid == issuer.active_key_id)
                .cloned())
        };
        if let Ok(keyring) = self.ctx.keyrings.get(&issuer.key_secret)
            && let Some(key) = active(&keyring)?
        {
            return Ok(key);
        }
        let secret = Api::<Secret>::namespaced(self.ctx.client.clone(), namespace)
            .get(name)
            .await?;
        let keyring =
            crate::cluster::keyrings::parse(&secret).map_err(|e| unreadable(e.to_string()))?;
        active(&LoadedKeyring::new(keyring))?.ok_or_else(|| {
            // The issuer's status is ahead of or behind its Secret: retry shortly.
            unreadable(format!("it has no active key {}", issuer.active_key_id))
        })
    }

    /// The token an owned Secret holds without a record, if it is exactly
    /// what `mint` would make now (see `adopt`). Read from the API server:
    /// Secret data is never cached, and this only happens after a crash.
    async fn unrecorded_token(&self, mint: &Mint) -> Option<RecordedToken> {
        let stored = Api::<Secret>::namespaced(self.ctx.client.clone(), &self.namespace)
            .get_opt(&record::secret_name(self.token))
            .await
            .ok()??;
        let bytes = stored.data.as_ref()?.get(record::data::TOKEN)?;
        let token = std::str::from_utf8(&bytes.0).ok()?;
        let keyring = self.ctx.keyrings.get(&mint.issuer.key_secret).ok()?;
        let expected = adopt::Expected {
            minted: &mint.minted,
            longest_lifetime_seconds: mint.validity.expires_at.as_second()
                - mint.validity.issued_at.as_second(),
            spec_hash: &mint.spec_hash,
            revision: mint.revision,
        };
        adopt::adoptable(token, &keyring, &expected, self.now)
    }

    /// The AppRegistration `spec.appRef` names, as the watch shows it.
    fn app(&self) -> App {
        let Some(app) = &self.token.spec.app_ref else {
            return App::Unnamed;
        };
        let found = self
            .ctx
            .apps
            .get(&ObjectRef::new(&app.name).within(&self.namespace));
        // The client id is the app's UID.
        match found.and_then(|a| {
            a.status
                .as_ref()
                .and_then(|s| s.client_id.clone())
                .or_else(|| a.uid())
        }) {
            Some(client_id) => App::Found { client_id },
            None => App::Missing {
                name: app.name.clone(),
            },
        }
    }

    /// The object `spec.boundObjectRef` names, and the owner references to
    /// set when they are not in line with it: the AccessToken is made a
    /// dependent of it, so the garbage collector deletes the AccessToken
    /// (and the finalizer revokes) when the object goes.
    async fn bound_object(&self) -> Result<(BoundObject, Option<Vec<OwnerReference>>)> {
        const BOUND_KINDS: [&str; 3] = ["ServiceAccount", "Secret", "ConfigMap"];
        let current: Vec<&OwnerReference> = self
            .token
            .owner_references()
            .iter()
            .filter(|r| r.api_version == "v1" && BOUND_KINDS.contains(&r.kind.as_str()))
            .collect();
        let Some(bound) = &self.token.spec.bound_object_ref else {
            let owners = (!current.is_empty()).then(Vec::new);
            return Ok((BoundObject::Unbound, owners));
        };
        let kind = match bound.kind {
            BoundObjectKind::ServiceAccount => "ServiceAccount",
            BoundObjectKind::Secret => "Secret",
            BoundObjectKind::ConfigMap => "ConfigMap",
        };
        let desired = match current
            .iter()
            .find(|r| r.kind == kind && r.name == bound.name)
        {
            Some(reference) => (*reference).clone(),
            None => {
                match secret::core_object_uid(self.ctx, &self.namespace, kind, &bound.name).await? {
                    Some(uid) => OwnerReference {
                        api_version: "v1".into(),
                        kind: kind.into(),
                        name: bound.name.clone(),
                        uid,
                        ..OwnerReference::default()
                    },
                    None => {
                        let name = bound.name.clone();
                        return Ok((BoundObject::Missing { kind, name }, None));
                    }
                }
            }
        };
        let in_line = current.len() == 1 && current[0].uid == desired.uid;
        Ok((BoundObject::Present, (!in_line).then(|| vec![desired])))
    }

    async fn set_owners(&self, owners: Vec<OwnerReference>) -> Result<()> {
        let api: Api<AccessToken> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let body = json!({
            "apiVersion": AccessToken::api_version(&()),
            "kind": AccessToken::kind(&()),
            // The operator's manager also holds the finalizer on this object:
            // an apply without it would take it away.
            "metadata": {
                "name": self.name,
                "ownerReferences": owners,
                "finalizers": [crate::controller::FINALIZER],
            },
        });
        api.patch(
            &self.name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
        Ok(())
    }

    /// Restarts the `rolloutRestartTargets` that allow it; the condition to
    /// report. What was not restarted is also said in a Warning event.
    async fn restart_workloads(&self) -> Readiness {
        let mut outcomes = Vec::new();
        for target in &self.token.spec.rollout_restart_targets {
            let outcome = restart::restart(
                &self.ctx.client,
                &self.namespace,
                &self.name,
                target,
                self.now,
            )
            .await;
            outcomes.push((target, outcome));
        }
        let (condition, warning) = restart::report(&self.name, &outcomes);
        if let Some(note) = warning {
            self.ctx
                .publish(self.token, EventType::Warning, condition.reason, note)
                .await;
        }
        condition
    }
}
