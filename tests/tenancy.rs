//! A shared cluster, attacked by its tenants (README, "Security model").
//!
//! Every test sets up two tenants, each a user with nothing but the tenant
//! Role in their own namespace, acting through impersonation so that the
//! API server enforces their rights, and tries one attack from issue 9
//! against a shared ClusterTokenIssuer or against the other tenant. Each
//! asserts that the attack's effect is absent.

mod support;

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use support::{
    control_plane, eventually,
    oauth::{app, introspect, served_issuer, token_request},
    operator::{OPERATOR_NAMESPACE, Operator, shared_operator},
    resources::{apply, reason, secret_text, wait_for, wait_reason},
    tenant::Tenant,
};
use tokensmith::{
    api::{AccessToken, ClusterTokenIssuer, TokenIssuer},
    controller::revocation::revocation_key,
    token::{AccessTokenClaims, KEYRING_SECRET_KEY, Keyring, fingerprint, sign_jwt},
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The setting of every attack: the operator, an HTTPS client trusting it,
/// an admin client, two tenants and a ClusterTokenIssuer they share.
struct SharedCluster {
    operator: &'static Operator,
    http: reqwest::Client,
    admin: kube::Client,
    a: Tenant,
    b: Tenant,
    issuer: String,
    issuer_url: String,
}

impl SharedCluster {
    /// The shared issuer allows scopes `read_*` and confines subjects to the
    /// token's own namespace, as the chart's default issuer does.
    async fn new(prefix: &str) -> Self {
        Self::with_issuer(prefix, json!({})).await
    }

    async fn with_issuer(prefix: &str, extra: Value) -> Self {
        let operator = shared_operator();
        let http = operator.http().await;
        let admin = control_plane().client().await;
        let a = Tenant::create(&admin, &format!("{prefix}-a")).await;
        let b = Tenant::create(&admin, &format!("{prefix}-b")).await;
        let issuer = format!("shared-{}", a.ns.name);
        let issuer_url = format!("{}/issuers/cluster/{issuer}", operator.url);
        let mut spec = json!({
            "issuerURL": issuer_url,
            "allowedScopes": ["read_*"],
            "allowedSubjects": ["system:accesstoken:${namespace}:*", "system:serviceaccount:${namespace}:*"],
            "audiences": ["api.test"],
        });
        for (key, value) in extra.as_object().into_iter().flatten() {
            spec[key] = value.clone();
        }
        cluster_issuer(&admin, &issuer, spec).await;
        Self {
            operator,
            http,
            admin,
            a,
            b,
            issuer,
            issuer_url,
        }
    }

    fn shared_ref(&self) -> Value {
        json!({ "kind": "ClusterTokenIssuer", "name": self.issuer })
    }

    /// An AccessToken of `tenant` on the shared issuer with `spec` added,
    /// once Issued; the token the tenant reads from its Secret.
    async fn token(&self, tenant: &Tenant, name: &str, mut spec: Value) -> (AccessToken, String) {
        if spec.get("issuerRef").is_none() {
            spec["issuerRef"] = self.shared_ref();
        }
        issued_token(tenant, name, spec).await
    }

    /// A Native app of the shared issuer in `tenant`'s namespace: a verifier
    /// that may introspect the shared issuer's tokens.
    async fn verifier(&self, tenant: &Tenant, name: &str) -> (String, String) {
        let creds = app(
            &self.http,
            self.operator,
            &tenant.client,
            &tenant.ns.name,
            name,
            json!({ "issuerRef": self.shared_ref(), "scopes": ["read_x"] }),
        )
        .await;
        // Registered in the API server; wait until the token service's watch
        // has it too.
        eventually(TIMEOUT, "the token service to know the client", || async {
            let answer = self.introspect(&creds, "not-a-token").await;
            (answer["active"] == false).then_some(())
        })
        .await;
        creds
    }

    async fn introspect(&self, creds: &(String, String), token: &str) -> Value {
        introspect(&self.http, self.operator, creds, token).await
    }

    /// Introspection of a token just issued, once the token service's watch
    /// shows it (under load that can take a moment): the starting point an
    /// attack is then measured against.
    async fn issued(&self, creds: &(String, String), token: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..100 {
            last = self.introspect(creds, token).await;
            if last["active"] == true {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("a freshly issued token is not active after 10 s: {last}")
    }
}

impl Drop for SharedCluster {
    fn drop(&mut self) {
        let _ = control_plane().kubectl_output(&[
            "delete",
            "clustertokenissuer",
            &self.issuer,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

async fn cluster_issuer(admin: &kube::Client, name: &str, spec: Value) -> ClusterTokenIssuer {
    let issuers: Api<ClusterTokenIssuer> = Api::all(admin.clone());
    apply(&issuers, name, json!({ "spec": spec })).await;
    wait_for(
        &issuers,
        name,
        TIMEOUT,
        "the ClusterTokenIssuer to be Ready",
        |i| i.status.as_ref().is_some_and(|s| s.active_key_id.is_some()),
    )
    .await
}

/// Applies an AccessToken as `tenant` and waits until it is Issued; the
/// token the tenant reads from its Secret.
async fn issued_token(tenant: &Tenant, name: &str, spec: Value) -> (AccessToken, String) {
    let tokens: Api<AccessToken> = Api::namespaced(tenant.client.clone(), &tenant.ns.name);
    apply(&tokens, name, json!({ "spec": spec })).await;
    let resource = wait_reason(&tokens, name, "Issued").await;
    let secret = Api::<Secret>::namespaced(tenant.client.clone(), &tenant.ns.name)
        .get(name)
        .await
        .expect("the tenant reads its own token Secret");
    (resource, secret_text(&secret, "token"))
}

/// Merges `annotations` into the Secret `name` of `tenant`, as the tenant.
async fn annotate_secret(tenant: &Tenant, name: &str, annotations: Value) {
    Api::<Secret>::namespaced(tenant.client.clone(), &tenant.ns.name)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": annotations } })),
        )
        .await
        .expect("the tenant edits its own Secret");
}

/// Polls `check` for `period`; panics at the first time it does not hold.
async fn holds_for<F, Fut>(period: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let end = tokio::time::Instant::now() + period;
    while tokio::time::Instant::now() < end {
        if let Err(why) = check().await {
            panic!("{what} stopped holding: {why}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether the revocation record holds token `jti` of the issuer `issuer_url`.
async fn revocation_record_names(admin: &kube::Client, issuer_url: &str, jti: &str) -> bool {
    let key = revocation_key(issuer_url, jti);
    Api::<ConfigMap>::namespaced(admin.clone(), OPERATOR_NAMESPACE)
        .list(&ListParams::default().labels("tokensmith.dev/revocations"))
        .await
        .expect("revocation ConfigMaps")
        .items
        .iter()
        .flat_map(|cm| cm.data.iter().flatten())
        .any(|(k, _)| *k == key)
}

fn status_of(token: &AccessToken) -> &tokensmith::api::AccessTokenStatus {
    token.status.as_ref().expect("a status")
}

/// Issue 9, line 1: the live spec is not what a token is.
#[tokio::test]
async fn editing_the_spec_does_not_change_what_a_minted_token_introspects_as() {
    let cluster = SharedCluster::new("spec-edit").await;
    let (a, b) = (&cluster.a, &cluster.b);
    let (_, token) = cluster
        .token(
            a,
            "mine",
            json!({ "format": "Opaque", "scopes": ["read_a"] }),
        )
        .await;
    let verifier = cluster.verifier(b, "verifier").await;
    let before = cluster.issued(&verifier, &token).await;
    assert_eq!(before["active"], true, "{before}");
    assert_eq!(before["scope"], "read_a");
    let subject = format!("system:accesstoken:{}:mine", a.ns.name);
    assert_eq!(before["sub"], subject.as_str());

    let tokens: Api<AccessToken> = Api::namespaced(a.client.clone(), &a.ns.name);
    apply(
        &tokens,
        "mine",
        json!({ "spec": {
            "issuerRef": cluster.shared_ref(),
            "format": "Opaque",
            "scopes": ["admin"],
            "subject": "system:serviceaccount:kube-system:admin",
        }}),
    )
    .await;
    wait_reason(&tokens, "mine", "InvalidSpec").await;

    holds_for(
        Duration::from_secs(4),
        "the token introspecting as minted",
        || async {
            let now = cluster.introspect(&verifier, &token).await;
            if now["active"] == true && (now["scope"] != "read_a" || now["sub"] != subject.as_str())
            {
                return Err(format!("introspects as the edited spec: {now}"));
            }
            Ok(())
        },
    )
    .await;
}

/// Issue 9, line 2a: an annotation on the Secret cannot extend a token.
#[tokio::test]
async fn an_expiry_annotation_on_the_secret_does_not_extend_the_token() {
    let cluster = SharedCluster::new("extend").await;
    let (a, b) = (&cluster.a, &cluster.b);
    let (resource, token) = cluster
        .token(
            a,
            "mine",
            json!({ "format": "Opaque", "scopes": ["read_a"], "lifetime": "1h" }),
        )
        .await;
    let expires_at = status_of(&resource).expires_at.clone().unwrap().0;
    let verifier = cluster.verifier(b, "verifier").await;
    assert_eq!(
        cluster.issued(&verifier, &token).await["exp"],
        expires_at.as_second()
    );

    annotate_secret(
        a,
        "mine",
        json!({ "tokensmith.dev/expires-at": "2099-01-01T00:00:00Z" }),
    )
    .await;
    let tokens: Api<AccessToken> = Api::namespaced(a.client.clone(), &a.ns.name);
    holds_for(Duration::from_secs(5), "the recorded expiry", || async {
        let status = tokens.get("mine").await.unwrap().status.unwrap();
        if status.expires_at.as_ref().map(|t| t.0) > Some(expires_at) {
            return Err(format!("status says {:?}", status.expires_at));
        }
        let now = cluster.introspect(&verifier, &token).await;
        if now["active"] == true && now["exp"] != expires_at.as_second() {
            return Err(format!("introspection says {now}"));
        }
        Ok(())
    })
    .await;
}

/// Issue 9, line 2b: another tenant's token id in my Secret revokes nothing of theirs.
#[tokio::test]
async fn another_tenants_token_id_in_my_secret_does_not_revoke_their_token() {
    let cluster = SharedCluster::new("steal-id").await;
    let (a, b) = (&cluster.a, &cluster.b);
    let (victim, victim_token) = cluster
        .token(b, "victim", json!({ "scopes": ["read_b"] }))
        .await;
    let victim_id = status_of(&victim).token_id.clone().unwrap();
    cluster
        .token(a, "mine", json!({ "scopes": ["read_a"] }))
        .await;
    let verifier = cluster.verifier(b, "verifier").await;
    assert_eq!(
        cluster.issued(&verifier, &victim_token).await["active"],
        true
    );

    annotate_secret(a, "mine", json!({ "tokensmith.dev/token-id": victim_id })).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tokens: Api<AccessToken> = Api::namespaced(a.client.clone(), &a.ns.name);
    tokens
        .patch(
            "mine",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "revoked": true } })),
        )
        .await
        .unwrap();
    let revoked = wait_reason(&tokens, "mine", "Revoked").await;
    assert_ne!(
        status_of(&revoked).token_id.as_deref(),
        Some(victim_id.as_str())
    );

    let victims: Api<AccessToken> = Api::namespaced(b.client.clone(), &b.ns.name);
    holds_for(
        Duration::from_secs(3),
        "the victim's token being active",
        || async {
            let now = cluster.introspect(&verifier, &victim_token).await;
            if now["active"] != true {
                return Err(format!("introspection says {now}"));
            }
            let resource = victims.get("victim").await.unwrap();
            if reason(&resource).as_deref() != Some("Issued") {
                return Err(format!(
                    "the victim's resource says {:?}",
                    reason(&resource)
                ));
            }
            Ok(())
        },
    )
    .await;
    assert!(
        !revocation_record_names(&cluster.admin, &cluster.issuer_url, &victim_id).await,
        "the victim's token id was recorded as revoked"
    );
}

/// Issue 9, line 2c: a copied token hash hijacks nothing, and deleting the
/// copy revokes nothing of the victim's.
#[tokio::test]
async fn a_copied_token_hash_neither_hijacks_nor_revokes_the_victims_token() {
    let cluster = SharedCluster::new("steal-hash").await;
    let (a, b) = (&cluster.a, &cluster.b);
    let (victim, victim_token) = cluster
        .token(
            b,
            "victim",
            json!({ "format": "Opaque", "scopes": ["read_b"] }),
        )
        .await;
    let victim_hash = status_of(&victim).token_hash.clone().unwrap();
    cluster
        .token(
            a,
            "mine",
            json!({ "format": "Opaque", "scopes": ["read_a"] }),
        )
        .await;
    let verifier = cluster.verifier(b, "verifier").await;
    let victim_subject = format!("system:accesstoken:{}:victim", b.ns.name);
    let as_victim = |now: Value| {
        if now["active"] == true
            && now["sub"] == victim_subject.as_str()
            && now["scope"] == "read_b"
        {
            Ok(())
        } else {
            Err(format!("introspection says {now}"))
        }
    };
    as_victim(cluster.issued(&verifier, &victim_token).await).unwrap();

    annotate_secret(
        a,
        "mine",
        json!({ "tokensmith.dev/token-hash": victim_hash }),
    )
    .await;
    holds_for(
        Duration::from_secs(4),
        "the victim's token introspecting as the victim's",
        || async { as_victim(cluster.introspect(&verifier, &victim_token).await) },
    )
    .await;

    Api::<AccessToken>::namespaced(a.client.clone(), &a.ns.name)
        .delete("mine", &DeleteParams::default())
        .await
        .unwrap();
    holds_for(
        Duration::from_secs(4),
        "the victim's token staying active after the copy is deleted",
        || async { as_victim(cluster.introspect(&verifier, &victim_token).await) },
    )
    .await;
}

/// Claims of a token of `issuer_url` issued now to the client `client_id` as
/// itself, with id `jti`, valid for `lifetime` seconds: what the token
/// endpoint signs, and what a holder of the signing key could forge.
fn client_claims(
    issuer_url: &str,
    client_id: &str,
    jti: String,
    lifetime: i64,
) -> AccessTokenClaims {
    let now = Timestamp::now().as_second();
    AccessTokenClaims {
        iss: issuer_url.to_string(),
        sub: client_id.to_string(),
        aud: vec![],
        exp: now + lifetime,
        iat: now,
        nbf: now,
        jti,
        scope: String::new(),
        client_id: Some(client_id.to_string()),
        extra: Default::default(),
    }
}

/// The key Secret of an issuer, wherever the operator keeps it, read as admin
/// (standing in for a tenant who could read their own issuer's key).
async fn signing_keyring(admin: &kube::Client, active_kid: &str) -> Keyring {
    Api::<Secret>::all(admin.clone())
        .list(&ListParams::default().labels("tokensmith.dev/issuer"))
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|s| Keyring::from_json(&s.data.as_ref()?.get(KEYRING_SECRET_KEY)?.0).ok())
        .find(|k| k.active().is_some_and(|key| key.kid == active_kid))
        .expect("the issuer's key Secret")
}

/// Issue 9, line 3: a JWT signed with a tenant's own issuer key, naming
/// another tenant's token id, revokes nothing of theirs; and the tenant
/// cannot read their issuer's private key at all.
#[tokio::test]
async fn a_forged_jwt_cannot_revoke_another_tenants_token() {
    let cluster = SharedCluster::new("forge").await;
    let (a, b) = (&cluster.a, &cluster.b);
    let (victim, victim_token) = cluster
        .token(b, "victim", json!({ "scopes": ["read_b"] }))
        .await;
    let victim_id = status_of(&victim).token_id.clone().unwrap();
    let verifier = cluster.verifier(b, "verifier").await;

    let own_url = served_issuer(&a.client, cluster.operator, &a.ns.name, "own").await;
    let own: TokenIssuer = Api::namespaced(a.client.clone(), &a.ns.name)
        .get("own")
        .await
        .unwrap();
    let own_app = app(
        &cluster.http,
        cluster.operator,
        &a.client,
        &a.ns.name,
        "own-app",
        json!({ "issuerRef": { "kind": "TokenIssuer", "name": "own" } }),
    )
    .await;
    let active_kid = own.status.unwrap().active_key_id.unwrap();
    let keyring = signing_keyring(&cluster.admin, &active_kid).await;
    let key = keyring.active_signing_key().unwrap().unwrap();
    let forged = sign_jwt(
        &client_claims(&own_url, &own_app.0, victim_id.clone(), 600),
        &key,
    );
    let response = cluster
        .http
        .post(format!("{}/oauth/revoke", cluster.operator.url))
        .basic_auth(&own_app.0, Some(&own_app.1))
        .form(&[("token", secrecy::ExposeSecret::expose_secret(&forged))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "RFC 7009 answers 200 either way");

    holds_for(
        Duration::from_secs(3),
        "the victim's token being active",
        || async {
            let now = cluster.introspect(&verifier, &victim_token).await;
            (now["active"] == true)
                .then_some(())
                .ok_or(format!("introspection says {now}"))
        },
    )
    .await;
    assert!(!revocation_record_names(&cluster.admin, &cluster.issuer_url, &victim_id).await);

    // The private keys of the tenant's own issuer are out of the tenant's reach.
    let readable: Vec<String> = Api::<Secret>::namespaced(a.client.clone(), &a.ns.name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|s| {
            s.data
                .as_ref()
                .is_some_and(|d| d.contains_key(KEYRING_SECRET_KEY))
        })
        .map(|s| s.name_any())
        .collect();
    assert!(readable.is_empty(), "the tenant reads keys in {readable:?}");
}

async fn jwks_kids(http: &reqwest::Client, issuer_url: &str) -> Result<Vec<String>, String> {
    let response = http
        .get(format!("{issuer_url}/.well-known/jwks.json"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("JWKS answered {}", response.status()));
    }
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    Ok(body["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["kid"].as_str().map(String::from))
        .collect())
}

fn issuer_reason(issuer: &TokenIssuer) -> Option<String> {
    issuer
        .status
        .as_ref()
        .and_then(|s| support::resources::ready(&s.conditions))
        .map(|c| c.reason.clone())
}

/// Issue 9, line 4: a tenant's issuer cannot take a served URL, whatever
/// the order they were created in.
#[tokio::test]
async fn a_tenant_issuer_cannot_take_a_shared_issuers_url() {
    let cluster = SharedCluster::new("squat").await;
    let (a, b) = (&cluster.a, &cluster.b);
    let (_, victim_token) = cluster
        .token(b, "victim", json!({ "scopes": ["read_b"] }))
        .await;
    let verifier = cluster.verifier(b, "verifier").await;
    let shared: ClusterTokenIssuer = Api::all(cluster.admin.clone())
        .get(&cluster.issuer)
        .await
        .unwrap();
    let shared_kid = shared.status.unwrap().active_key_id.unwrap();

    // Younger than the ClusterTokenIssuer, same URL.
    let squatters: Api<TokenIssuer> = Api::namespaced(a.client.clone(), &a.ns.name);
    apply(
        &squatters,
        "squatter",
        json!({ "spec": { "issuerURL": cluster.issuer_url } }),
    )
    .await;
    let squatter = wait_for(
        &squatters,
        "squatter",
        TIMEOUT,
        "the squatting issuer to be refused",
        |i| issuer_reason(i).as_deref() == Some("IssuerURLConflict"),
    )
    .await;
    let status = squatter.status.unwrap();
    let message = &support::resources::ready(&status.conditions)
        .unwrap()
        .message;
    assert!(message.contains(&cluster.issuer), "{message}");

    holds_for(
        Duration::from_secs(3),
        "the shared issuer being served",
        || async {
            let kids = jwks_kids(&cluster.http, &cluster.issuer_url).await?;
            if !kids.contains(&shared_kid) {
                return Err(format!("JWKS has {kids:?}, not {shared_kid}"));
            }
            let now = cluster.introspect(&verifier, &victim_token).await;
            if now["active"] != true {
                return Err(format!("introspection says {now}"));
            }
            let (status, body) = token_request(
                &cluster.http,
                cluster.operator,
                &verifier,
                &[("grant_type", "client_credentials")],
            )
            .await;
            (status == 200)
                .then_some(())
                .ok_or(format!("the token endpoint answered {status} {body}"))
        },
    )
    .await;

    // Older than a ClusterTokenIssuer that comes later: the cluster one still wins.
    let early_url = format!(
        "{}/issuers/cluster/early-{}",
        cluster.operator.url, a.ns.name
    );
    apply(
        &squatters,
        "early",
        json!({ "spec": { "issuerURL": early_url } }),
    )
    .await;
    wait_for(
        &squatters,
        "early",
        TIMEOUT,
        "the early issuer to be Ready",
        |i| issuer_reason(i).as_deref() == Some("KeysReady"),
    )
    .await;
    let later = format!("later-{}", a.ns.name);
    cluster_issuer(&cluster.admin, &later, json!({ "issuerURL": early_url })).await;
    wait_for(
        &squatters,
        "early",
        TIMEOUT,
        "the tenant's issuer to give way to the ClusterTokenIssuer",
        |i| issuer_reason(i).as_deref() == Some("IssuerURLConflict"),
    )
    .await;
    let later_kid: ClusterTokenIssuer = Api::all(cluster.admin.clone()).get(&later).await.unwrap();
    let later_kid = later_kid.status.unwrap().active_key_id.unwrap();
    eventually(
        TIMEOUT,
        "the ClusterTokenIssuer's keys at the URL",
        || async {
            jwks_kids(&cluster.http, &early_url)
                .await
                .ok()
                .filter(|kids| kids.contains(&later_kid))
        },
    )
    .await;
    control_plane().kubectl(&["delete", "clustertokenissuer", &later, "--wait=false"]);

    // Between two TokenIssuers, the older one keeps its URL.
    let first_url = format!("{}/issuers/first-{}", cluster.operator.url, a.ns.name);
    apply(
        &squatters,
        "first",
        json!({ "spec": { "issuerURL": first_url } }),
    )
    .await;
    wait_for(
        &squatters,
        "first",
        TIMEOUT,
        "the first issuer to be Ready",
        |i| issuer_reason(i).as_deref() == Some("KeysReady"),
    )
    .await;
    let seconds: Api<TokenIssuer> = Api::namespaced(b.client.clone(), &b.ns.name);
    apply(
        &seconds,
        "second",
        json!({ "spec": { "issuerURL": first_url } }),
    )
    .await;
    wait_for(
        &seconds,
        "second",
        TIMEOUT,
        "the second issuer to be refused",
        |i| issuer_reason(i).as_deref() == Some("IssuerURLConflict"),
    )
    .await;
    let first = squatters.get("first").await.unwrap();
    assert_eq!(issuer_reason(&first).as_deref(), Some("KeysReady"));
}

/// Issue 9, line 5: a refresh chain written by hand is not a refresh chain.
#[tokio::test]
async fn a_hand_written_refresh_chain_is_refused() {
    let cluster = SharedCluster::new("chain").await;
    let a = &cluster.a;
    served_issuer(&a.client, cluster.operator, &a.ns.name, "own").await;
    let web = app(
        &cluster.http,
        cluster.operator,
        &a.client,
        &a.ns.name,
        "web",
        json!({ "issuerRef": { "kind": "TokenIssuer", "name": "own" }, "type": "Web" }),
    )
    .await;
    let chain_id = tokensmith::token::new_chain_id();
    let refresh = tokensmith::token::new_refresh_token(&chain_id);
    let refresh = secrecy::ExposeSecret::expose_secret(&refresh).to_string();
    let chain = tokensmith::token::RefreshChain::start(
        web.0.clone(),
        "system:serviceaccount:kube-system:default".into(),
        vec![],
        vec![],
        &secrecy::SecretString::from(refresh.clone()),
        Timestamp::now().as_second() + 3600,
        Timestamp::now().as_second() + 3600,
    );
    let forged = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": format!("tokensmith-refresh-{chain_id}"),
            "labels": {
                "app.kubernetes.io/managed-by": "tokensmith",
                "tokensmith.dev/refresh-chain-of": web.0,
            },
        },
        "type": "tokensmith.dev/refresh-chain",
        "stringData": { "chain.json": serde_json::to_string(&chain).unwrap() },
    });
    Api::<Secret>::namespaced(a.client.clone(), &a.ns.name)
        .create(
            &Default::default(),
            &serde_json::from_value(forged).unwrap(),
        )
        .await
        .expect("the tenant writes Secrets in its namespace");

    let (status, body) = token_request(
        &cluster.http,
        cluster.operator,
        &web,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
}

/// Issue 9, line 6: an AccessToken deleted without its finalizer leaves no
/// active token behind; nor does an Opaque token whose issuer is gone.
#[tokio::test]
async fn a_force_deleted_access_token_leaves_no_active_token() {
    let cluster = SharedCluster::new("force").await;
    let (a, b) = (&cluster.a, &cluster.b);
    let (_, jwt) = cluster
        .token(a, "jwt", json!({ "scopes": ["read_a"] }))
        .await;
    let verifier = cluster.verifier(b, "verifier").await;
    assert_eq!(cluster.issued(&verifier, &jwt).await["active"], true);

    let tokens: Api<AccessToken> = Api::namespaced(a.client.clone(), &a.ns.name);
    tokens
        .patch(
            "jwt",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
        )
        .await
        .expect("the tenant strips the finalizer");
    tokens
        .delete("jwt", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        TIMEOUT,
        "the force-deleted token to be inactive",
        || async { (cluster.introspect(&verifier, &jwt).await["active"] == false).then_some(()) },
    )
    .await;

    // An Opaque token of a TokenIssuer the tenant then deletes.
    served_issuer(&a.client, cluster.operator, &a.ns.name, "own").await;
    let own_ref = json!({ "kind": "TokenIssuer", "name": "own" });
    let (_, opaque) = issued_token(
        a,
        "opaque",
        json!({ "issuerRef": own_ref, "format": "Opaque" }),
    )
    .await;
    let local = app(
        &cluster.http,
        cluster.operator,
        &a.client,
        &a.ns.name,
        "local",
        json!({ "issuerRef": own_ref }),
    )
    .await;
    assert_eq!(cluster.issued(&local, &opaque).await["active"], true);
    Api::<TokenIssuer>::namespaced(a.client.clone(), &a.ns.name)
        .delete("own", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        TIMEOUT,
        "the Opaque token of a deleted issuer to be inactive",
        || async { (cluster.introspect(&local, &opaque).await["active"] == false).then_some(()) },
    )
    .await;
}

/// Issue 9, line 7: under the shared issuer a tenant can name neither
/// another namespace's identity, nor an audience the issuer does not allow,
/// nor an identity-bearing claim (`groups`, `email`, ...) that its
/// `allowedClaims` does not name; and another issuer's client learns nothing.
#[tokio::test]
async fn the_shared_issuer_confines_identity_audience_and_claims() {
    let cluster =
        SharedCluster::with_issuer("confine", json!({ "allowedAudiences": ["api.test"] })).await;
    let (a, b) = (&cluster.a, &cluster.b);
    let tokens: Api<AccessToken> = Api::namespaced(a.client.clone(), &a.ns.name);
    let refused = |name: &'static str, extra: Value| {
        let tokens = tokens.clone();
        let issuer_ref = cluster.shared_ref();
        async move {
            let mut spec = json!({ "issuerRef": issuer_ref });
            for (key, value) in extra.as_object().unwrap() {
                spec[key] = value.clone();
            }
            apply(&tokens, name, json!({ "spec": spec })).await;
            let token = wait_reason(&tokens, name, "InvalidSpec").await;
            assert_eq!(status_of(&token).token_id, None, "{name} was minted");
            support::resources::ready(&status_of(&token).conditions)
                .unwrap()
                .message
                .clone()
        }
    };
    let victim = format!("system:accesstoken:{}:victim", b.ns.name);
    let message = refused("other-subject", json!({ "subject": victim })).await;
    assert!(message.contains("allowedSubjects"), "{message}");
    let message = refused(
        "kube-audience",
        json!({ "audiences": ["https://kubernetes.default.svc"] }),
    )
    .await;
    assert!(message.contains("allowedAudiences"), "{message}");
    let message = refused(
        "masters",
        json!({ "claims": { "groups": "system:masters" } }),
    )
    .await;
    assert!(message.contains("groups"), "{message}");
    let message = refused("email", json!({ "claims": { "email": "ceo@example.com" } })).await;
    assert!(message.contains("allowedClaims"), "{message}");

    // What the policy allows is minted.
    let own = format!("system:serviceaccount:{}:builder", a.ns.name);
    let (_, token) = cluster
        .token(
            a,
            "allowed",
            json!({ "subject": own, "claims": { "team": "a" }, "audiences": ["api.test"] }),
        )
        .await;

    // A client of another issuer learns nothing of it.
    served_issuer(&b.client, cluster.operator, &b.ns.name, "own").await;
    let stranger = app(
        &cluster.http,
        cluster.operator,
        &b.client,
        &b.ns.name,
        "stranger",
        json!({ "issuerRef": { "kind": "TokenIssuer", "name": "own" } }),
    )
    .await;
    let answer = cluster.introspect(&stranger, &token).await;
    assert_eq!(answer, json!({ "active": false }));
    let verifier = cluster.verifier(b, "verifier").await;
    assert_eq!(
        cluster.introspect(&verifier, &token).await["sub"],
        own.as_str()
    );
}

/// Issue 9, line 8: annotations on an app's Secret cannot add a client secret.
#[tokio::test]
async fn annotations_on_the_app_secret_add_no_client_secret() {
    let cluster = SharedCluster::new("hidden").await;
    let a = &cluster.a;
    let creds = app(
        &cluster.http,
        cluster.operator,
        &a.client,
        &a.ns.name,
        "svc",
        json!({
            "issuerRef": cluster.shared_ref(),
            "scopes": ["read_a"],
            "clientSecretRotation": { "interval": "720h", "gracePeriod": "1h" },
        }),
    )
    .await;
    let chosen = "tkcs_chosen-by-the-tenant";
    annotate_secret(
        a,
        "svc",
        json!({
            "tokensmith.dev/previous-client-secret-hash": fingerprint(chosen),
            "tokensmith.dev/previous-client-secret-expires-at": "2099-01-01T00:00:00Z",
        }),
    )
    .await;
    let grant = [("grant_type", "client_credentials")];
    holds_for(
        Duration::from_secs(4),
        "the chosen secret being refused",
        || async {
            let chosen_creds = (creds.0.clone(), chosen.to_string());
            let (status, body) =
                token_request(&cluster.http, cluster.operator, &chosen_creds, &grant).await;
            (status == 401)
                .then_some(())
                .ok_or(format!("the chosen secret got {status} {body}"))
        },
    )
    .await;
    let (status, _) = token_request(&cluster.http, cluster.operator, &creds, &grant).await;
    assert_eq!(status, 200, "the real secret still works");
}

/// Issue 9, line 3 (cleanup): a TokenIssuer's keys, kept in the operator's
/// namespace, go with the issuer, also when the tenant strips its finalizer.
#[tokio::test]
async fn a_tenant_issuers_keys_go_with_it_even_without_its_finalizer() {
    let cluster = SharedCluster::new("keys-gone").await;
    let a = &cluster.a;
    let issuers: Api<TokenIssuer> = Api::namespaced(a.client.clone(), &a.ns.name);
    let key_secret = |issuer: &TokenIssuer| {
        tokensmith::controller::issuer::key_secret_location(issuer, OPERATOR_NAMESPACE).1
    };
    let operator_secrets: Api<Secret> = Api::namespaced(cluster.admin.clone(), OPERATOR_NAMESPACE);
    for (name, strip_finalizer) in [("kept", false), ("stripped", true)] {
        served_issuer(&a.client, cluster.operator, &a.ns.name, name).await;
        let issuer = issuers.get(name).await.unwrap();
        let secret = key_secret(&issuer);
        assert!(operator_secrets.get_opt(&secret).await.unwrap().is_some());
        if strip_finalizer {
            issuers
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
                )
                .await
                .expect("the tenant strips the finalizer");
        }
        issuers
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        eventually(TIMEOUT, "the issuer's keys to be deleted", || async {
            operator_secrets
                .get_opt(&secret)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
    }
}

/// Issue 10, line 1: a spec asking for constant renewal gets one mint per
/// interval, not a loop.
#[tokio::test]
async fn a_spec_asking_for_constant_renewal_does_not_loop() {
    let cluster = SharedCluster::new("loop").await;
    let a = &cluster.a;
    let (first, _) = cluster
        .token(
            a,
            "eager",
            json!({ "scopes": ["read_a"], "lifetime": "10s", "renewBefore": "9s" }),
        )
        .await;
    let started = status_of(&first).issued_at.clone().unwrap().0;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let tokens: Api<AccessToken> = Api::namespaced(a.client.clone(), &a.ns.name);
    let now = tokens.get("eager").await.unwrap();
    let status = status_of(&now);
    let elapsed = Timestamp::now().as_second() - started.as_second();
    // One mint at the start, then at most one per 10 s.
    let most = 1 + elapsed / 10;
    assert!(
        status.revision.unwrap() <= most,
        "{} mints in {elapsed} s",
        status.revision.unwrap()
    );
    assert!(status.previous_tokens.len() <= 10);
    let renewal = status.renewal_time.clone().unwrap().0;
    let issued = status.issued_at.clone().unwrap().0;
    assert!(
        renewal.as_second() - issued.as_second() >= 10,
        "renewal {renewal} comes at least 10 s after issue {issued}"
    );
}

/// Issue 10, line 3: a JWT must be typed as an access token and live no
/// longer than its issuer allows, and no OAuth parameter may come twice.
#[tokio::test]
async fn verification_refuses_untyped_overlong_tokens_and_repeated_parameters() {
    let cluster = SharedCluster::new("verify").await;
    let a = &cluster.a;
    let own_url = served_issuer(&a.client, cluster.operator, &a.ns.name, "own").await;
    let own_ref = json!({ "kind": "TokenIssuer", "name": "own" });
    let client = app(
        &cluster.http,
        cluster.operator,
        &a.client,
        &a.ns.name,
        "client",
        json!({ "issuerRef": own_ref }),
    )
    .await;
    let own: TokenIssuer = Api::namespaced(a.client.clone(), &a.ns.name)
        .get("own")
        .await
        .unwrap();
    let keyring =
        signing_keyring(&cluster.admin, &own.status.unwrap().active_key_id.unwrap()).await;
    let key = keyring.active_signing_key().unwrap().unwrap();
    let claims = |lifetime: i64| {
        client_claims(
            &own_url,
            &client.0,
            tokensmith::token::new_endpoint_token_id(),
            lifetime,
        )
    };
    let signed = |claims: &AccessTokenClaims| {
        secrecy::ExposeSecret::expose_secret(&sign_jwt(claims, &key)).to_string()
    };
    // What the token endpoint itself would sign: active.
    let proper = signed(&claims(600));
    assert_eq!(cluster.introspect(&client, &proper).await["active"], true);
    // The same claims without `typ: at+jwt`.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    let untyped = jsonwebtoken::encode(&header, &claims(600), key.encoding_key()).unwrap();
    assert_eq!(cluster.introspect(&client, &untyped).await["active"], false);
    // Valid for a century, far past the issuer's maxLifetime.
    let century = signed(&claims(100 * 365 * 86_400));
    assert_eq!(cluster.introspect(&client, &century).await["active"], false);

    // RFC 6749 §3.1: a repeated parameter is refused, whichever copy differs.
    let response = cluster
        .http
        .post(format!("{}/oauth/introspect", cluster.operator.url))
        .basic_auth(&client.0, Some(&client.1))
        .form(&[("token", "whatever"), ("token", proper.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");
    let (status, body) = token_request(
        &cluster.http,
        cluster.operator,
        &client,
        &[
            ("grant_type", "client_credentials"),
            ("grant_type", "client_credentials"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
}

/// Issue 10, line 4: an AccessToken restarts only workloads that name it.
#[tokio::test]
async fn rotation_restarts_no_workload_that_did_not_opt_in() {
    let cluster = SharedCluster::new("deputy").await;
    let a = &cluster.a;
    // Created by someone else: the tenant has no rights on Deployments.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(cluster.admin.clone(), &a.ns.name);
    apply(
        &deployments,
        "payments",
        json!({ "spec": {
            "selector": { "matchLabels": { "app": "payments" } },
            "template": {
                "metadata": { "labels": { "app": "payments" } },
                "spec": { "containers": [{ "name": "app", "image": "example.invalid/payments:1" }] },
            },
        }}),
    )
    .await;
    assert!(
        !a.kubectl(&["auth", "can-i", "patch", "deployments"])
            .status
            .success(),
        "the tenant may not restart it directly"
    );
    cluster
        .token(
            a,
            "deputy",
            json!({
                "scopes": ["read_a"],
                "lifetime": "12s",
                "rolloutRestartTargets": [{ "kind": "Deployment", "name": "payments" }],
            }),
        )
        .await;
    let tokens: Api<AccessToken> = Api::namespaced(a.client.clone(), &a.ns.name);
    let rotated = wait_for(&tokens, "deputy", TIMEOUT, "a rotation", |t| {
        t.status
            .as_ref()
            .is_some_and(|s| s.revision.unwrap_or(0) >= 2)
    })
    .await;
    let condition = status_of(&rotated)
        .conditions
        .iter()
        .find(|c| c.type_ == "RolloutRestart")
        .cloned()
        .expect("a RolloutRestart condition");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "NotAllowed")
    );
    assert!(
        condition
            .message
            .contains("tokensmith.dev/restart-allowed-by"),
        "{}",
        condition.message
    );
    let payments = deployments.get("payments").await.unwrap();
    assert_eq!(payments.metadata.generation, Some(1), "not restarted");
}

/// A token of the tenant's own service account `name`, requested by the
/// tenant (`serviceaccounts/token`), for `audience` (`None`: the API
/// server's).
async fn service_account_token(tenant: &Tenant, name: &str, audience: Option<&str>) -> String {
    support::oauth::service_account_token(&tenant.client, &tenant.ns.name, name, audience).await
}

async fn exchange(
    cluster: &SharedCluster,
    web: &(String, String),
    subject_token: &str,
) -> (u16, Value) {
    support::oauth::exchange(&cluster.http, cluster.operator, web, subject_token, &[]).await
}

/// Issue 10, line 5: token exchange takes only service-account tokens made
/// for the token service, and says who acts.
#[tokio::test]
async fn token_exchange_takes_only_tokens_made_for_the_token_service() {
    let cluster = SharedCluster::new("audience").await;
    let a = &cluster.a;
    served_issuer(&a.client, cluster.operator, &a.ns.name, "own").await;
    let web = app(
        &cluster.http,
        cluster.operator,
        &a.client,
        &a.ns.name,
        "web",
        json!({ "issuerRef": { "kind": "TokenIssuer", "name": "own" }, "type": "Web" }),
    )
    .await;
    // The token every pod mounts (audience: the API server) buys nothing.
    let api_token = service_account_token(a, "worker", None).await;
    let (status, body) = exchange(&cluster, &web, &api_token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("--audience"),
        "says how to get a proper one: {body}"
    );
    let made_for_us = service_account_token(a, "worker", Some(&cluster.operator.url)).await;
    let (status, body) = exchange(&cluster, &web, &made_for_us).await;
    assert_eq!(status, 200, "{body}");
    let claims =
        jsonwebtoken::dangerous::insecure_decode::<Value>(body["access_token"].as_str().unwrap())
            .unwrap()
            .claims;
    assert_eq!(
        claims["sub"],
        format!("system:serviceaccount:{}:worker", a.ns.name)
    );
    assert_eq!(
        claims["act"],
        json!({ "sub": web.0 }),
        "RFC 8693 section 4.1"
    );
}

/// Issue 10, line 6: a refresh chain ends at its absolute lifetime, however
/// often it is used.
#[tokio::test]
async fn a_refresh_chain_ends_at_its_absolute_lifetime() {
    let cluster = SharedCluster::new("chain-life").await;
    let a = &cluster.a;
    served_issuer(&a.client, cluster.operator, &a.ns.name, "own").await;
    let web = app(
        &cluster.http,
        cluster.operator,
        &a.client,
        &a.ns.name,
        "web",
        json!({
            "issuerRef": { "kind": "TokenIssuer", "name": "own" },
            "type": "Web",
            "accessTokenLifetime": "10s",
            "refreshTokenLifetime": "15s",
            "refreshChainLifetime": "20s",
        }),
    )
    .await;
    let subject_token = service_account_token(a, "worker", Some(&cluster.operator.url)).await;
    let started = tokio::time::Instant::now();
    let (status, body) = exchange(&cluster, &web, &subject_token).await;
    assert_eq!(status, 200, "{body}");
    let mut refresh = body["refresh_token"].as_str().unwrap().to_string();
    // Used every 5 s, each use asking for a fresh 15 s: the chain still ends.
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (status, body) = token_request(
            &cluster.http,
            cluster.operator,
            &web,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
        let elapsed = started.elapsed();
        if status != 200 {
            assert_eq!(body["error"], "invalid_grant", "{body}");
            assert!(
                elapsed >= Duration::from_secs(19),
                "ended early, after {elapsed:?}"
            );
            break;
        }
        assert!(
            elapsed < Duration::from_secs(22),
            "still refreshing after {elapsed:?}"
        );
        refresh = body["refresh_token"].as_str().unwrap().to_string();
    }
}

/// File descriptors the process `pid` holds.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Whether the peer has closed `stream` (a read gives end of file or an error).
async fn closed_by_peer(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_millis(5), stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Issue 10, line 2: idle, slow and surplus connections are closed within
/// the configured limits, and the operator's file descriptors stay bounded.
#[tokio::test]
async fn idle_slow_and_surplus_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let operator = Operator::start(&[
        "--max-connections",
        "40",
        "--tls-handshake-timeout",
        "2s",
        "--first-request-timeout",
        "2s",
        "--header-read-timeout",
        "2s",
        "--idle-timeout",
        "3s",
    ]);
    let http = operator.http().await;
    let address = operator.url.trim_start_matches("https://").to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = open_fds(operator.pid);

    // 100 connections that never start TLS: 40 are held, the rest closed at once.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = open_fds(operator.pid);
    let mut refused = 0;
    for stream in &mut idle {
        if closed_by_peer(stream).await {
            refused += 1;
        }
    }
    assert!(refused >= 60, "{refused} of 100 refused at once");
    assert!(
        held <= baseline + 45,
        "the operator holds {held} fds (baseline {baseline}) with 100 connections open"
    );
    // A request still gets through once the idle ones are gone: the held
    // connections are closed within the handshake timeout.
    let started = tokio::time::Instant::now();
    let mut closed = vec![false; idle.len()];
    while closed.iter().any(|c| !c) && started.elapsed() < Duration::from_secs(8) {
        for (stream, closed) in idle.iter_mut().zip(closed.iter_mut()) {
            if !*closed {
                *closed = closed_by_peer(stream).await;
            }
        }
    }
    let waited = started.elapsed();
    println!(
        "100 idle TCP connections: {refused} refused at once, fds {baseline} -> {held}, the rest closed after {waited:?}"
    );
    let still_open = closed.iter().filter(|c| !**c).count();
    assert_eq!(
        still_open, 0,
        "{still_open} idle connections open after {waited:?}"
    );
    assert!(waited <= Duration::from_secs(5), "closed after {waited:?}");
    drop(idle);

    // A TLS client that sends half a request and then nothing.
    let mut slow = std::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &address])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl runs");
    {
        use std::io::Write;
        let stdin = slow.stdin.as_mut().unwrap();
        stdin
            .write_all(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        stdin.flush().unwrap();
    }
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = slow.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(10) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = slow.kill();
    println!(
        "a slow-header TLS client was closed after {:?}",
        started.elapsed()
    );
    assert!(
        status.is_some(),
        "the slow client was still connected after 10 s"
    );
    assert!(
        started.elapsed() <= Duration::from_secs(6),
        "the slow client was closed after {:?}",
        started.elapsed()
    );

    // Served as before, and the descriptors are back near where they were.
    let response = http
        .get(format!("{}/oauth/token/info", operator.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let mut client = tokio::net::TcpStream::connect(&address).await.unwrap();
    client.write_all(b"\x16").await.unwrap();
    drop(client);
    eventually(
        Duration::from_secs(10),
        "the descriptors to be released",
        || async { (open_fds(operator.pid) <= baseline + 5).then_some(()) },
    )
    .await;
}

/// Issue 10, line 1 (quota): a namespace that holds its quota of revoked
/// tokens mints no more until they expire, and revoking still works.
#[tokio::test]
async fn a_namespace_over_its_revocation_quota_mints_nothing_but_still_revokes() {
    let cluster = SharedCluster::new("quota").await;
    let (a, b) = (&cluster.a, &cluster.b);
    let (before, before_token) = cluster
        .token(a, "before", json!({ "scopes": ["read_a"] }))
        .await;
    let verifier = cluster.verifier(b, "verifier").await;
    assert_eq!(
        cluster.issued(&verifier, &before_token).await["active"],
        true
    );

    // Earlier revocations of this namespace, up to the default quota (1000).
    let expiry = (Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(1)).to_string();
    let entries: std::collections::BTreeMap<String, String> = (0..1000)
        .map(|i| {
            (
                format!("0000000000000000.quota-{i}"),
                format!("{expiry} {}", a.ns.name),
            )
        })
        .collect();
    let record_name = format!("tokensmith-revocations-quota-{}", a.ns.name);
    let records: Api<ConfigMap> = Api::namespaced(cluster.admin.clone(), OPERATOR_NAMESPACE);
    apply(
        &records,
        &record_name,
        json!({
            "metadata": { "labels": { "tokensmith.dev/revocations": "true" } },
            "data": entries,
        }),
    )
    .await;

    let tokens: Api<AccessToken> = Api::namespaced(a.client.clone(), &a.ns.name);
    apply(
        &tokens,
        "after",
        json!({ "spec": { "issuerRef": cluster.shared_ref(), "scopes": ["read_a"] } }),
    )
    .await;
    let waiting = wait_reason(&tokens, "after", "RevocationQuotaExceeded").await;
    assert_eq!(status_of(&waiting).token_id, None, "nothing was minted");
    // Another namespace is not held back.
    cluster
        .token(b, "unaffected", json!({ "scopes": ["read_b"] }))
        .await;

    // Revoking is never refused.
    tokens
        .delete("before", &DeleteParams::default())
        .await
        .unwrap();
    let before_id = status_of(&before).token_id.clone().unwrap();
    eventually(TIMEOUT, "the deleted token to be revoked", || async {
        revocation_record_names(&cluster.admin, &cluster.issuer_url, &before_id)
            .await
            .then_some(())
    })
    .await;
    assert_eq!(
        cluster.introspect(&verifier, &before_token).await["active"],
        false
    );

    // Once the entries are gone, minting resumes.
    records
        .delete(&record_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        &tokens,
        "after",
        Duration::from_secs(60),
        "the token to be minted",
        |t| reason(t).as_deref() == Some("Issued"),
    )
    .await;
}

/// Issue 10, line 7: Secrets in a tenant's namespace are neither cached as
/// keys nor trusted: a tenant's "key Secret" signs nothing that verifies.
#[tokio::test]
async fn a_key_secret_in_a_tenants_namespace_is_not_read() {
    let cluster = SharedCluster::new("own-keys").await;
    let a = &cluster.a;
    let own_url = served_issuer(&a.client, cluster.operator, &a.ns.name, "own").await;
    let client = app(
        &cluster.http,
        cluster.operator,
        &a.client,
        &a.ns.name,
        "client",
        json!({ "issuerRef": { "kind": "TokenIssuer", "name": "own" } }),
    )
    .await;
    // A keyring of the tenant's making, where keys used to live, labelled
    // as the operator labels key Secrets.
    let forged = tokensmith::token::plan_keys(
        Keyring::default(),
        tokensmith::token::KeyPolicy {
            algorithm: tokensmith::api::SigningAlgorithm::ES256,
            rotation_interval: Duration::from_secs(86_400),
            max_token_lifetime: Duration::from_secs(86_400),
        },
        Timestamp::now(),
    )
    .unwrap()
    .keyring;
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "tokensmith-issuer-own",
            "labels": { "tokensmith.dev/issuer": "own", "app.kubernetes.io/managed-by": "tokensmith" },
        },
        "stringData": { KEYRING_SECRET_KEY: String::from_utf8(forged.to_json()).unwrap() },
    });
    Api::<Secret>::namespaced(a.client.clone(), &a.ns.name)
        .create(
            &Default::default(),
            &serde_json::from_value(secret).unwrap(),
        )
        .await
        .unwrap();
    let key = forged.active_signing_key().unwrap().unwrap();
    let token = sign_jwt(
        &client_claims(
            &own_url,
            &client.0,
            tokensmith::token::new_endpoint_token_id(),
            600,
        ),
        &key,
    );
    let token = secrecy::ExposeSecret::expose_secret(&token).to_string();
    holds_for(
        Duration::from_secs(3),
        "the forged key being ignored",
        || async {
            let answer = cluster.introspect(&client, &token).await;
            (answer["active"] == false)
                .then_some(())
                .ok_or(format!("introspection says {answer}"))
        },
    )
    .await;
    let kids = jwks_kids(&cluster.http, &own_url).await.unwrap();
    assert!(
        !kids.contains(&key.kid),
        "the JWKS publishes the tenant's key"
    );
}

/// Issue 10, line 1 (a full record): when the record's ConfigMap for a token
/// is full, its revocation goes to an overflow page instead of failing.
#[tokio::test]
async fn a_revocation_is_recorded_even_when_its_shard_is_full() {
    use tokensmith::controller::revocation::{revocation_key, shard_name};
    let cluster = SharedCluster::new("full").await;
    let (a, b) = (&cluster.a, &cluster.b);
    let (victim, token) = cluster
        .token(a, "doomed", json!({ "scopes": ["read_a"] }))
        .await;
    let verifier = cluster.verifier(b, "verifier").await;
    let token_id = status_of(&victim).token_id.clone().unwrap();
    let shard = shard_name(&revocation_key(&cluster.issuer_url, &token_id));

    // Fill the shard until the API server refuses one more entry (etcd's
    // request limit comes before the 1 MiB of a ConfigMap's data).
    let records: Api<ConfigMap> = Api::namespaced(cluster.admin.clone(), OPERATOR_NAMESPACE);
    let params = PatchParams::default();
    let value = "2099-01-01T00:00:00Z junk";
    let mut junk: Vec<String> = Vec::new();
    for chunk in [5000, 1000, 200, 40, 8, 1] {
        loop {
            let keys: Vec<String> = (junk.len()..junk.len() + chunk)
                .map(|i| format!("ffffffffffffffff.full-{i:08}"))
                .collect();
            let data: serde_json::Map<String, Value> =
                keys.iter().map(|k| (k.clone(), json!(value))).collect();
            let body = json!({
                "metadata": { "labels": { "tokensmith.dev/revocations": "true" } },
                "data": data,
            });
            let added = match records.patch(&shard, &params, &Patch::Merge(&body)).await {
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    let mut created = body.clone();
                    created["metadata"]["name"] = json!(shard);
                    records
                        .create(
                            &Default::default(),
                            &serde_json::from_value(created).unwrap(),
                        )
                        .await
                        .map(drop)
                }
                other => other.map(drop),
            };
            if added.is_err() {
                break;
            }
            junk.extend(keys);
        }
    }
    println!("the shard holds {} extra entries when full", junk.len());

    Api::<AccessToken>::namespaced(a.client.clone(), &a.ns.name)
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    eventually(TIMEOUT, "the revocation to be recorded", || async {
        revocation_record_names(&cluster.admin, &cluster.issuer_url, &token_id)
            .await
            .then_some(())
    })
    .await;
    // Where it went: an overflow page, or the shard itself when pruning the
    // expired entries of other tests made room. Either way it was not refused.
    let key = revocation_key(&cluster.issuer_url, &token_id);
    let mut page = None;
    for name in tokensmith::controller::revocation::shard_pages(&shard) {
        match records.get_opt(&name).await.unwrap() {
            Some(cm) if cm.data.as_ref().is_some_and(|d| d.contains_key(&key)) => {
                page = Some(name);
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    println!("recorded in {page:?}");
    // Leave the shard as it was, before anything else can fail.
    let removed: serde_json::Map<String, Value> =
        junk.iter().map(|k| (k.clone(), Value::Null)).collect();
    records
        .patch(&shard, &params, &Patch::Merge(json!({ "data": removed })))
        .await
        .unwrap();
    assert!(page.is_some(), "the entry is in one of the shard's pages");
    eventually(TIMEOUT, "the token to be inactive", || async {
        (cluster.introspect(&verifier, &token).await["active"] == false).then_some(())
    })
    .await;
}
