//! Reconciles AccessTokens: mints a token into the Secret, keeps the status in
//! line with it, rotates or expires it on time, and revokes it on deletion.
//!
//! Every reconcile first works out the state (Secret metadata, issuer, time)
//! and then writes only what differs, so an unchanged AccessToken costs no
//! write at all, after a restart too.

mod adopt;
mod decide;
mod plan;
mod restart;
mod secret;

pub use plan::{data as secret_keys, default_subject, secret_name};

use std::{future::Future, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{OwnerReference, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::PartialObjectMeta,
    runtime::{
        Controller,
        controller::Action,
        events::EventType,
        finalizer::{Event as FinalizerEvent, finalizer},
        reflector::{ObjectRef, Store},
    },
};
use secrecy::ExposeSecret;
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use self::{
    decide::{MintReason, Next, Observed, decide},
    plan::RecordedToken,
    secret::TokenSecret,
};
use super::{
    Context, Error, FINALIZER, MANAGER, Result,
    conditions::{Readiness, ready_condition, with_condition, with_ready},
    issuer_ref::{ResolvedIssuer, blocked_by},
    managed_secret::{SecretState, delete_if_ours},
    revocation::RevokedToken,
};
use crate::{
    api::{
        AccessToken, AccessTokenStatus, AppRegistration, BoundObjectKind, ClusterTokenIssuer,
        IssuerKind, PreviousToken, TokenFormat, TokenIssuer,
    },
    cluster::{Watched, Watches},
    telemetry::TokenEvent,
    token::{
        DEFAULT_OPAQUE_PREFIX, LifetimeLimits, SigningKey, TimingError, TimingPolicy, fingerprint,
        new_opaque_token, new_token_id, next_mint_allowed, plan_validity, renewal_time, sign_jwt,
    },
};

use crate::api::reason;

/// The AccessToken controller: triggered by its own kind, the Secrets it
/// owns, the issuers and the apps its tokens name.
pub fn controller(
    ctx: Arc<Context>,
    watches: &Watches,
    managed_secrets: &Watched<PartialObjectMeta<Secret>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = ()> {
    let tokens = watches.access_tokens.store();
    let (for_token_issuers, for_cluster_issuers, for_apps) =
        (tokens.clone(), tokens.clone(), tokens.clone());
    Controller::for_shared_stream(watches.access_tokens.subscribe(), tokens)
        .owns_shared_stream(managed_secrets.subscribe())
        .watches_shared_stream(
            watches.token_issuers.subscribe(),
            move |issuer: Arc<TokenIssuer>| {
                tokens_using(
                    &for_token_issuers,
                    IssuerKind::TokenIssuer,
                    issuer.namespace(),
                    &issuer.name_any(),
                )
            },
        )
        .watches_shared_stream(
            watches.apps.subscribe(),
            move |app: Arc<AppRegistration>| {
                let namespace = app.namespace();
                for_apps
                    .state()
                    .iter()
                    .filter(|t| {
                        t.namespace() == namespace
                            && t.spec
                                .app_ref
                                .as_ref()
                                .is_some_and(|a| a.name == app.name_any())
                    })
                    .map(|t| ObjectRef::from_obj(t.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .watches_shared_stream(
            watches.cluster_issuers.subscribe(),
            move |issuer: Arc<ClusterTokenIssuer>| {
                tokens_using(
                    &for_cluster_issuers,
                    IssuerKind::ClusterTokenIssuer,
                    None,
                    &issuer.name_any(),
                )
            },
        )
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(crate::controller::CONCURRENCY),
        )
        .graceful_shutdown_on(shutdown)
        .run(
            |token, ctx| async move {
                super::measured(&ctx.clone(), "AccessToken", reconcile(token, ctx)).await
            },
            error_policy,
            ctx,
        )
        .map(super::log_outcome)
}

fn tokens_using(
    tokens: &Store<AccessToken>,
    kind: IssuerKind,
    namespace: Option<String>,
    name: &str,
) -> Vec<ObjectRef<AccessToken>> {
    tokens
        .state()
        .iter()
        .filter(|t| {
            let r = t.spec.issuer_ref();
            r.kind() == kind
                && r.name == name
                && (namespace.is_none() || t.namespace() == namespace)
        })
        .map(|t| ObjectRef::from_obj(t.as_ref()))
        .collect()
}

fn error_policy(token: Arc<AccessToken>, error: &Error, _: Arc<Context>) -> Action {
    super::retry_policy(token.as_ref(), error, Duration::from_secs(10))
}

#[instrument(skip_all, fields(namespace = token.namespace(), name = %token.name_any()))]
async fn reconcile(token: Arc<AccessToken>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = token
        .namespace()
        .ok_or(Error::MissingObjectKey("AccessToken", "metadata.namespace"))?;
    let api: Api<AccessToken> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = finalizer(&api, FINALIZER, token, |event| async {
        match event {
            FinalizerEvent::Apply(token) => {
                let reconciler = Reconciler::new(&token, &ctx)?;
                match reconciler.apply().await {
                    Err(Error::SecretRefused { secret, reason }) => {
                        reconciler.secret_refused(&secret, &reason).await
                    }
                    // Asked again without the caches, it reports the conflict.
                    Err(Error::SecretTaken { .. }) => reconciler.recheck().await,
                    other => other,
                }
            }
            FinalizerEvent::Cleanup(token) => Reconciler::new(&token, &ctx)?.cleanup().await,
        }
    })
    .await;
    let action = match action {
        // Deleted between the cleanup and the finalizer's removal (or before
        // it could be added): nothing is left to do.
        Err(
            kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(status))
            | kube::runtime::finalizer::Error::AddFinalizer(kube::Error::Api(status)),
        ) if status.code == 404 => Action::await_change(),
        other => other.map_err(|e| Error::Finalizer(Box::new(e)))?,
    };
    debug!(?action, "reconciled");
    Ok(action)
}

/// How many tokens replaced by rotation stay valid beside the current one;
/// older ones are revoked, so no object holds an unbounded number of live
/// tokens.
pub const MAX_PREVIOUS_TOKENS: usize = 10;

struct Reconciler<'a> {
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
    fn new(token: &'a AccessToken, ctx: &'a Context) -> Result<Self> {
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
    async fn recheck(&self) -> Result<Action> {
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

    async fn apply(&self) -> Result<Action> {
        if self.ctx.issuers.namespace_terminating(&self.namespace) {
            // Minting would be refused, and the AccessToken's own deletion
            // (which revokes) follows.
            debug!("namespace is being deleted; waiting for the AccessToken's deletion");
            return Ok(Action::await_change());
        }
        let secret_name = plan::secret_name(self.token);
        let secret = if self.fresh {
            SecretState::fetch(self.ctx, &self.namespace, &secret_name, &self.uid).await?
        } else {
            SecretState::observe(self.ctx, &self.namespace, &secret_name, &self.uid).await?
        };
        let recorded = RecordedToken::from_status(&self.status);

        if let Some(problem) = self.ensure_bound_owner().await? {
            return self.blocked(problem, None).await;
        }
        if self.token.spec.is_revoked() {
            let why = "spec.revoked is true (set it to false to issue a new token)";
            return self.revoke(&secret, why).await;
        }
        if let Some(app) = &self.token.spec.app_ref
            && self.app_client_id(&app.name).is_none()
        {
            if self.status.token_id.is_some() {
                let why = format!("AppRegistration {} (spec.appRef) was deleted", app.name);
                return self.revoke(&secret, &why).await;
            }
            let message = format!("AppRegistration {} (spec.appRef) not found", app.name);
            return self
                .blocked(
                    Readiness::not_ready(reason::INVALID_SPEC, message),
                    Some(Duration::from_secs(60)),
                )
                .await;
        }
        if let SecretState::Foreign = secret {
            let message = format!(
                "Secret {secret_name} exists and is not owned by this AccessToken; it was left untouched. Delete it, or set spec.secretName to another name"
            );
            return self
                .blocked(
                    Readiness::not_ready(reason::SECRET_CONFLICT, message),
                    Some(Duration::from_secs(300)),
                )
                .await;
        }
        let issuer = match self.resolve_issuer() {
            Ok(issuer) => issuer,
            Err((readiness, retry)) => return self.blocked(readiness, retry).await,
        };
        if let Some(violation) = plan::policy_violation(
            &self.token.spec,
            &issuer.settings,
            &self.namespace,
            &self.name,
        ) {
            let message = format!(
                "{violation}: refused by {} {}",
                issuer.kind.as_str(),
                issuer.name
            );
            return self
                .blocked(Readiness::not_ready(reason::INVALID_SPEC, message), None)
                .await;
        }
        let (timing, limits) = match self.timing(&issuer) {
            Ok(t) => t,
            Err(message) => {
                return self
                    .blocked(Readiness::not_ready(reason::INVALID_SPEC, message), None)
                    .await;
            }
        };

        let desired_hash = plan::spec_hash(&self.token.spec, &issuer.settings);
        let secret_holds_record = recorded.as_ref().is_some_and(|r| secret.holds(r));
        let next = decide(Observed {
            recorded,
            has_token: self.status.token_id.is_some(),
            was_revoked: self.ready_reason() == Some(reason::REVOKED),
            secret_is_ours: matches!(secret, SecretState::Ours(_)),
            secret_holds_record,
            fresh: self.fresh,
            desired_spec_hash: &desired_hash,
            timing: &timing,
            now: self.now,
        });

        match next {
            Next::Mint(reason) => {
                let recorded = self.ctx.revocation_counts.in_namespace(&self.namespace);
                if recorded >= self.ctx.config.revocation_quota {
                    let message = format!(
                        "namespace {} holds {recorded} revoked tokens that have not expired, its quota is {}: no token is minted until some expire (the current one, if any, stays valid until it expires)",
                        self.namespace, self.ctx.config.revocation_quota
                    );
                    return self
                        .blocked(
                            Readiness::not_ready(reason::REVOCATION_QUOTA_EXCEEDED, message),
                            Some(Duration::from_secs(15)),
                        )
                        .await;
                }
                let last_issued = self.status.issued_at.as_ref().map(|t| t.0);
                if let Some(at) = next_mint_allowed(last_issued, self.now) {
                    // One mint per object per interval, whatever asks for it.
                    debug!(?reason, %at, "a token was minted moments ago; the next waits");
                    let wait = (at.as_second() - self.now.as_second()).max(1) as u64;
                    return Ok(Action::requeue(Duration::from_secs(wait)));
                }
                self.mint(reason, &issuer, &timing, limits, desired_hash, &secret)
                    .await
            }
            Next::Keep(record) => self.keep(&secret, *record, &timing).await,
            Next::Expire => self.expire(&secret).await,
            Next::Recheck => self.recheck().await,
        }
    }

    fn ready_reason(&self) -> Option<&str> {
        ready_condition(&self.status.conditions).map(|c| c.reason.as_str())
    }

    fn timing(&self, issuer: &ResolvedIssuer) -> Result<(TimingPolicy, LifetimeLimits), String> {
        let timing = plan::timing_policy(&self.token.spec)?;
        let limits = LifetimeLimits {
            default: issuer
                .settings
                .default_lifetime()
                .map_err(|e| e.to_string())?,
            max: issuer.settings.max_lifetime().map_err(|e| e.to_string())?,
        };
        if let Some(lifetime) = timing.lifetime
            && lifetime > limits.max
        {
            return Err(TimingError::TooLong {
                asked: self
                    .token
                    .spec
                    .lifetime
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
                max: issuer
                    .settings
                    .max_lifetime
                    .as_ref()
                    .map_or("8760h".into(), |d| d.to_string()),
            }
            .to_string());
        }
        Ok((timing, limits))
    }

    fn resolve_issuer(&self) -> Result<ResolvedIssuer, (Readiness, Option<Duration>)> {
        self.ctx
            .issuers
            .resolve(
                &self.token.spec.issuer_ref(),
                &self.namespace,
                &self.ctx.config.namespace,
            )
            .map_err(blocked_by)
    }

    /// Mints a new token into the Secret and records it.
    async fn mint(
        &self,
        why: MintReason,
        issuer: &ResolvedIssuer,
        timing: &TimingPolicy,
        limits: LifetimeLimits,
        spec_hash: String,
        secret: &SecretState,
    ) -> Result<Action> {
        let token_id = new_token_id();
        let validity = match plan_validity(timing, limits, self.now, &token_id) {
            Ok(v) => v,
            Err(TimingError::ExpiresAtPassed(at)) if self.status.token_id.is_none() => {
                let message = format!("expiresAt {at} has passed; no token was issued");
                return self
                    .blocked(Readiness::not_ready(reason::EXPIRED, message), None)
                    .await;
            }
            Err(TimingError::ExpiresAtPassed(_)) => return self.expire(secret).await,
            Err(e) => {
                return self
                    .blocked(
                        Readiness::not_ready(reason::INVALID_SPEC, e.to_string()),
                        None,
                    )
                    .await;
            }
        };
        let client_id = match &self.token.spec.app_ref {
            None => None,
            Some(app) => match self.app_client_id(&app.name) {
                Some(id) => Some(id),
                None => {
                    let message = format!("AppRegistration {} (spec.appRef) not found", app.name);
                    return self
                        .blocked(
                            Readiness::not_ready(reason::INVALID_SPEC, message),
                            Some(Duration::from_secs(60)),
                        )
                        .await;
                }
            },
        };
        let minted = plan::minted_claims(
            &self.token.spec,
            &issuer.settings,
            &self.namespace,
            &self.name,
            client_id,
        );
        let revision = self.status.revision.unwrap_or(0) + 1;
        if why == MintReason::Initial
            && self.status.token_id.is_none()
            && let Some(record) = self
                .unrecorded_token(issuer, &minted, &validity, &spec_hash, revision, secret)
                .await
        {
            info!(token_id = %record.token_id, "the Secret holds a token minted for this spec but not recorded (a crash between the two writes): recorded instead of minting another");
            return self.recorded(why, record, timing).await;
        }
        let (value, key_id) = match self.token.spec.format() {
            TokenFormat::Jwt => {
                let key = self.signing_key(issuer).await?;
                let claims =
                    plan::claims(&minted, &token_id, validity.issued_at, validity.expires_at);
                (sign_jwt(&claims, &key), Some(key.kid.clone()))
            }
            TokenFormat::Opaque => {
                let prefix = self
                    .token
                    .spec
                    .prefix
                    .as_deref()
                    .unwrap_or(DEFAULT_OPAQUE_PREFIX);
                (new_opaque_token(prefix), None)
            }
        };
        let record = RecordedToken {
            token_id: token_id.clone(),
            issued_at: validity.issued_at,
            expires_at: validity.expires_at,
            key_id,
            token_hash: fingerprint(value.expose_secret()),
            revision,
            spec_hash,
            minted,
        };

        // The tokens this one replaces: revoked at once when they no longer
        // match the spec or were tampered with, else left to expire.
        let replaced = self.live_tokens();
        if why.revokes_previous() {
            self.ctx.revocations.revoke(&replaced, self.now).await?;
        }
        secret::write(self.ctx, self.token, &record, Some(&value), secret).await?;
        self.recorded(why, record, timing).await
    }

    /// Records a token now in the Secret: the status, superseded tokens,
    /// the event and the metrics of the mint.
    async fn recorded(
        &self,
        why: MintReason,
        record: RecordedToken,
        timing: &TimingPolicy,
    ) -> Result<Action> {
        let (token_id, revision) = (record.token_id.clone(), record.revision);

        // Superseded by rotation, they keep the claims of the current record
        // (a rotation never changes what is minted). At most
        // MAX_PREVIOUS_TOKENS stay valid, the latest to expire; older ones
        // are revoked.
        let mut previous: Vec<PreviousToken> = if why != MintReason::Rotation {
            Vec::new()
        } else {
            let current = self
                .status
                .token_id
                .as_ref()
                .zip(self.status.expires_at.as_ref());
            self.status
                .previous_tokens
                .iter()
                .cloned()
                .chain(current.map(|(id, expires_at)| PreviousToken {
                    token_id: id.clone(),
                    expires_at: expires_at.clone(),
                    token_hash: self.status.token_hash.clone(),
                }))
                .filter(|p| p.expires_at.0 > self.now && p.token_id != token_id)
                .collect()
        };
        previous.sort_by_key(|p| std::cmp::Reverse(p.expires_at.0));
        let dropped: Vec<RevokedToken> = previous
            .split_off(previous.len().min(MAX_PREVIOUS_TOKENS))
            .into_iter()
            .map(|p| RevokedToken {
                issuer_url: record.minted.issuer_url.clone(),
                token_id: p.token_id,
                expires_at: p.expires_at.0,
                namespace: Some(self.namespace.clone()),
            })
            .collect();
        self.ctx.revocations.revoke(&dropped, self.now).await?;

        let (reason, event_reason, note) = match why {
            MintReason::Initial => (
                reason::ISSUED,
                reason::ISSUED,
                format!(
                    "Issued token {token_id} (revision {revision}), valid until {}",
                    record.expires_at
                ),
            ),
            MintReason::Rotation => (
                reason::ROTATED,
                "Rotated",
                format!(
                    "Rotated to token {token_id} (revision {revision}), valid until {}; the previous token stays valid until it expires",
                    record.expires_at
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
                    "Secret {} was deleted or edited: issued token {token_id} (revision {revision}) and revoked the previous token",
                    plan::secret_name(self.token)
                ),
            ),
        };
        let message = format!("token {token_id} valid until {}", record.expires_at);
        let mut status =
            self.status_from(&record, timing, previous, Readiness::ready(reason, message));
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
        self.write_status(status).await?;
        info!(token_id = %token_id, revision, ?why, "token minted");
        self.ctx
            .metrics
            .token_event(if why == MintReason::Rotation {
                TokenEvent::Rotated
            } else {
                TokenEvent::Issued
            });
        self.ctx
            .publish(self.token, EventType::Normal, event_reason, note)
            .await;
        Ok(self.requeue_for(&record, timing))
    }

    /// Nothing to mint: keeps the Secret's labels and the status in line.
    async fn keep(
        &self,
        secret: &SecretState,
        record: RecordedToken,
        timing: &TimingPolicy,
    ) -> Result<Action> {
        if secret.template_hash() != Some(plan::template_hash(&self.token.spec).as_str()) {
            secret::write(self.ctx, self.token, &record, None, secret).await?;
        }
        let readiness = match ready_condition(&self.status.conditions) {
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
        };
        let status = self.status_from(
            &record,
            timing,
            self.status.previous_tokens.clone(),
            readiness,
        );
        self.write_status(status).await?;
        Ok(self.requeue_for(&record, timing))
    }

    /// The token reached its end and is not renewed: the Secret goes.
    async fn expire(&self, secret: &SecretState) -> Result<Action> {
        delete_if_ours(self.ctx, &self.namespace, secret).await?;
        let mut status = self.status.clone();
        status.renewal_time = None;
        status.secret_name = None;
        let message = format!(
            "token {} expired at {}; the Secret was deleted",
            status.token_id.as_deref().unwrap_or("-"),
            status
                .expires_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default()
        );
        let readiness = Readiness::not_ready(reason::EXPIRED, message);
        let transition = self.ready_reason() != Some(reason::EXPIRED);
        status.conditions = with_ready(
            &status.conditions,
            &readiness,
            self.token.meta().generation,
            self.now,
        );
        status.observed_generation = self.token.meta().generation;
        self.write_status(status).await?;
        if transition {
            self.ctx.metrics.token_event(TokenEvent::Expired);
            self.ctx
                .publish(self.token, EventType::Normal, "Expired", readiness.message)
                .await;
        }
        Ok(Action::await_change())
    }

    /// `spec.revoked: true`: revoke every live token and remove the Secret,
    /// keeping the resource as a record.
    async fn revoke(&self, secret: &SecretState, why: &str) -> Result<Action> {
        let already =
            self.ready_reason() == Some(reason::REVOKED) && matches!(secret, SecretState::Absent);
        if already {
            return Ok(Action::await_change());
        }
        let live = self.live_tokens();
        self.ctx.revocations.revoke(&live, self.now).await?;
        delete_if_ours(self.ctx, &self.namespace, secret).await?;
        let mut status = self.status.clone();
        status.renewal_time = None;
        status.secret_name = None;
        status.previous_tokens.clear();
        let message = format!(
            "{why}: revoked {} token(s) and removed the Secret",
            live.len()
        );
        let readiness = Readiness::not_ready(reason::REVOKED, message.clone());
        status.conditions = with_ready(
            &status.conditions,
            &readiness,
            self.token.meta().generation,
            self.now,
        );
        status.observed_generation = self.token.meta().generation;
        self.write_status(status).await?;
        info!(revoked = live.len(), "token revoked");
        self.ctx.metrics.token_event(TokenEvent::Revoked);
        self.ctx
            .publish(self.token, EventType::Normal, reason::REVOKED, message)
            .await;
        Ok(Action::await_change())
    }

    /// The finalizer: revokes every live token and removes the Secret before
    /// the AccessToken may go. Copes with an AccessToken that never got a token.
    async fn cleanup(&self) -> Result<Action> {
        let secret_name = plan::secret_name(self.token);
        let secret =
            SecretState::observe(self.ctx, &self.namespace, &secret_name, &self.uid).await?;
        let live = self.live_tokens();
        self.ctx.revocations.revoke(&live, self.now).await?;
        delete_if_ours(self.ctx, &self.namespace, &secret).await?;
        // Said once: a retry finds the Secret gone, and so does the deletion
        // of an AccessToken that was revoked (and said so) before.
        if !live.is_empty() && matches!(secret, SecretState::Ours(_)) {
            info!(revoked = live.len(), "AccessToken deleted: tokens revoked");
            self.ctx.metrics.token_event(TokenEvent::Revoked);
            self.ctx
                .publish(
                    self.token,
                    EventType::Normal,
                    reason::REVOKED,
                    format!(
                        "AccessToken deleted: revoked {} token(s) and removed the Secret",
                        live.len()
                    ),
                )
                .await;
        }
        Ok(Action::await_change())
    }

    /// Every recorded token of this AccessToken that has not expired: the
    /// current one and those superseded by rotation. Only the status is
    /// read: a token id anywhere else may be someone else's.
    fn live_tokens(&self) -> Vec<RevokedToken> {
        let Some(minted) = &self.status.minted else {
            // Without a record no token of this AccessToken is active.
            return Vec::new();
        };
        let current = self
            .status
            .token_id
            .as_ref()
            .zip(self.status.expires_at.as_ref());
        let previous = self
            .status
            .previous_tokens
            .iter()
            .map(|p| (&p.token_id, &p.expires_at));
        let mut tokens: Vec<RevokedToken> = Vec::new();
        for (token_id, expires_at) in current.into_iter().chain(previous) {
            if expires_at.0 > self.now && !tokens.iter().any(|t| &t.token_id == token_id) {
                tokens.push(RevokedToken {
                    issuer_url: minted.issuer_url.clone(),
                    token_id: token_id.clone(),
                    expires_at: expires_at.0,
                    namespace: Some(self.namespace.clone()),
                });
            }
        }
        tokens
    }

    fn status_from(
        &self,
        record: &RecordedToken,
        timing: &TimingPolicy,
        previous_tokens: Vec<PreviousToken>,
        readiness: Readiness,
    ) -> AccessTokenStatus {
        let generation = self.token.meta().generation;
        AccessTokenStatus {
            conditions: with_ready(&self.status.conditions, &readiness, generation, self.now),
            observed_generation: generation,
            token_id: Some(record.token_id.clone()),
            key_id: record.key_id.clone(),
            issued_at: Some(Time(record.issued_at)),
            expires_at: Some(Time(record.expires_at)),
            renewal_time: renewal_time(
                record.issued_at,
                record.expires_at,
                timing,
                &record.token_id,
            )
            .ok()
            .flatten()
            .map(Time),
            revision: Some(record.revision),
            secret_name: Some(plan::secret_name(self.token)),
            token_hash: Some(record.token_hash.clone()),
            previous_tokens,
            spec_hash: Some(record.spec_hash.clone()),
            minted: Some(record.minted.clone()),
        }
    }

    fn requeue_for(&self, record: &RecordedToken, timing: &TimingPolicy) -> Action {
        let next = renewal_time(
            record.issued_at,
            record.expires_at,
            timing,
            &record.token_id,
        )
        .ok()
        .flatten()
        .unwrap_or(record.expires_at);
        let wait = (next.as_second() - self.now.as_second()).max(1) as u64;
        Action::requeue(Duration::from_secs(wait))
    }

    /// The API server will not store the Secret as the spec asks: say so and
    /// wait for a change rather than retry the same write.
    async fn secret_refused(&self, secret: &str, why: &str) -> Result<Action> {
        let message = format!(
            "Secret {secret} cannot be written as the spec asks ({why}); fix secretTemplate"
        );
        self.blocked(Readiness::not_ready(reason::INVALID_SPEC, message), None)
            .await
    }

    /// Reports a problem the user must fix; the existing token is left alone.
    async fn blocked(&self, readiness: Readiness, retry: Option<Duration>) -> Result<Action> {
        let transition = self.ready_reason() != Some(readiness.reason)
            || ready_condition(&self.status.conditions)
                .is_some_and(|c| c.message != readiness.message);
        let mut status = self.status.clone();
        let generation = self.token.meta().generation;
        status.conditions = with_ready(&status.conditions, &readiness, generation, self.now);
        status.observed_generation = generation;
        self.write_status(status).await?;
        if transition {
            warn!(reason = readiness.reason, message = %readiness.message, "not ready");
            self.ctx
                .publish(
                    self.token,
                    EventType::Warning,
                    readiness.reason,
                    readiness.message,
                )
                .await;
        }
        Ok(retry.map_or_else(Action::await_change, Action::requeue))
    }

    async fn write_status(&self, desired: AccessTokenStatus) -> Result<()> {
        if self.token.status.as_ref() == Some(&desired) {
            return Ok(());
        }
        let api: Api<AccessToken> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let body = json!({
            "apiVersion": AccessToken::api_version(&()),
            "kind": AccessToken::kind(&()),
            "status": desired,
        });
        api.patch_status(
            &self.name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
        Ok(())
    }

    /// The active signing key of `issuer`, from the watched key Secret. Only
    /// when the watch has not yet shown the key the issuer's status names
    /// (the issuer wrote both a moment ago) is the Secret read directly.
    async fn signing_key(&self, issuer: &ResolvedIssuer) -> Result<SigningKey> {
        let (namespace, name) = &issuer.key_secret;
        let unreadable = |reason: String| Error::KeyringUnreadable {
            issuer: issuer.name.clone(),
            secret: format!("{namespace}/{name}"),
            reason,
        };
        let active = |keyring: &crate::token::Keyring| -> Result<Option<SigningKey>> {
            Ok(keyring
                .active_signing_key()?
                .filter(|key| key.kid == issuer.active_key_id))
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
        active(&keyring)?.ok_or_else(|| {
            // The issuer's status is ahead of or behind its Secret: retry shortly.
            unreadable(format!("it has no active key {}", issuer.active_key_id))
        })
    }

    /// The token an owned Secret holds without a record, if it is exactly
    /// what would be minted now (see `adopt`). Read from the API server:
    /// Secret data is never cached, and this only happens after a crash.
    async fn unrecorded_token(
        &self,
        issuer: &ResolvedIssuer,
        minted: &crate::api::MintedClaims,
        validity: &crate::token::Validity,
        spec_hash: &str,
        revision: i64,
        secret: &SecretState,
    ) -> Option<RecordedToken> {
        if !matches!(secret, SecretState::Ours(_)) || self.token.spec.format() != TokenFormat::Jwt {
            return None;
        }
        let stored = Api::<Secret>::namespaced(self.ctx.client.clone(), &self.namespace)
            .get_opt(&plan::secret_name(self.token))
            .await
            .ok()??;
        let bytes = stored.data.as_ref()?.get(plan::data::TOKEN)?;
        let token = std::str::from_utf8(&bytes.0).ok()?;
        let keyring = self.ctx.keyrings.get(&issuer.key_secret).ok()?;
        let expected = adopt::Expected {
            minted,
            longest_lifetime_seconds: validity.expires_at.as_second()
                - validity.issued_at.as_second(),
            spec_hash,
            revision,
        };
        adopt::adoptable(token, &keyring, &expected, self.now)
    }

    /// The OAuth client id of the AppRegistration `name` (its UID), if it exists.
    fn app_client_id(&self, name: &str) -> Option<String> {
        let app = self
            .ctx
            .apps
            .get(&ObjectRef::new(name).within(&self.namespace))?;
        app.status
            .as_ref()
            .and_then(|s| s.client_id.clone())
            .or_else(|| app.uid())
    }

    /// Makes the AccessToken a dependent of its `boundObjectRef`, so the
    /// garbage collector deletes it (and the finalizer revokes it) when the
    /// object goes. Returns a problem to report when the object is missing.
    async fn ensure_bound_owner(&self) -> Result<Option<Readiness>> {
        let desired = match &self.token.spec.bound_object_ref {
            None => None,
            Some(bound) => {
                let kind = match bound.kind {
                    BoundObjectKind::ServiceAccount => "ServiceAccount",
                    BoundObjectKind::Secret => "Secret",
                    BoundObjectKind::ConfigMap => "ConfigMap",
                };
                let existing = self
                    .token
                    .owner_references()
                    .iter()
                    .find(|r| r.api_version == "v1" && r.kind == kind && r.name == bound.name)
                    .cloned();
                match existing {
                    Some(reference) => Some(reference),
                    None => {
                        match secret::core_object_uid(self.ctx, &self.namespace, kind, &bound.name)
                            .await?
                        {
                            Some(uid) => Some(OwnerReference {
                                api_version: "v1".into(),
                                kind: kind.into(),
                                name: bound.name.clone(),
                                uid,
                                ..OwnerReference::default()
                            }),
                            None => {
                                let message = format!(
                                    "{kind} {} (spec.boundObjectRef) not found in namespace {}",
                                    bound.name, self.namespace
                                );
                                return Ok(Some(Readiness::not_ready(
                                    reason::INVALID_SPEC,
                                    message,
                                )));
                            }
                        }
                    }
                }
            }
        };
        let bound_kinds = ["ServiceAccount", "Secret", "ConfigMap"];
        let current: Vec<&OwnerReference> = self
            .token
            .owner_references()
            .iter()
            .filter(|r| r.api_version == "v1" && bound_kinds.contains(&r.kind.as_str()))
            .collect();
        let in_line = match &desired {
            Some(d) => current.len() == 1 && current[0].uid == d.uid,
            None => current.is_empty(),
        };
        if in_line {
            return Ok(None);
        }
        let api: Api<AccessToken> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let body = json!({
            "apiVersion": AccessToken::api_version(&()),
            "kind": AccessToken::kind(&()),
            "metadata": { "name": self.name, "ownerReferences": desired.into_iter().collect::<Vec<_>>() },
        });
        api.patch(
            &self.name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
        Ok(None)
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
