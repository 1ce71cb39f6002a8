//! The token service, driven by independent clients where it matters
//! (PyJWT's PyJWKClient, Authlib) and by plain HTTPS requests elsewhere.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};
use support::{
    eventually,
    oauth::Served,
    python,
    resources::{apply, secret_text, wait_for, wait_reason},
};
use tokensmith::api::AccessToken;

#[tokio::test]
async fn pyjwt_verifies_an_access_token_through_the_jwks_url() {
    let served = Served::new("jwks").await;
    let (operator, http, client, ns) = (
        served.operator,
        served.http.clone(),
        served.client.clone(),
        &served.ns,
    );
    let issuer_url = served.issuer_url.clone();
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    apply(
        &tokens,
        "ci",
        json!({ "spec": { "issuerRef": { "kind": "TokenIssuer", "name": "signer" }, "scopes": ["read"] } }),
    )
    .await;
    let status = wait_reason(&tokens, "ci", "Issued").await.status.unwrap();
    let jwt = secret_text(
        &Api::<Secret>::namespaced(client.clone(), &ns.name)
            .get("ci")
            .await
            .unwrap(),
        "token",
    );

    let discovery: Value = http
        .get(format!("{issuer_url}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], issuer_url);
    let jwks_url = discovery["jwks_uri"].as_str().unwrap().to_string();
    assert_eq!(jwks_url, format!("{issuer_url}/.well-known/jwks.json"));
    assert_eq!(
        discovery["token_endpoint"],
        format!("{}/oauth/token", operator.url)
    );

    let ca = operator.ca_file();
    let verified = python(
        "verify_jwks.py",
        &[&jwks_url, ca.to_str().unwrap(), &issuer_url, &jwt],
    )
    .unwrap_or_else(|e| panic!("PyJWT refused the token: {e}"));
    assert_eq!(verified["claims"]["jti"], status.token_id.unwrap());
    assert_eq!(
        verified["claims"]["sub"],
        format!("system:accesstoken:{}:ci", ns.name)
    );
    assert_eq!(verified["header"]["typ"], "at+jwt");

    // A token with a forged signature is refused by the same verifier.
    let mut forged = jwt.clone();
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    assert!(
        python(
            "verify_jwks.py",
            &[&jwks_url, ca.to_str().unwrap(), &issuer_url, &forged]
        )
        .is_err()
    );
}

#[tokio::test]
async fn authlib_runs_client_credentials_and_introspection_describes_the_token() {
    let served = Served::new("client-credentials").await;
    let operator = served.operator;
    let issuer_url = served.issuer_url.clone();
    let creds = served
        .app("billing", json!({ "scopes": ["read", "write"] }))
        .await;
    let ca = operator.ca_file();
    let token_url = format!("{}/oauth/token", operator.url);
    for method in ["client_secret_basic", "client_secret_post"] {
        let response = python(
            "client_credentials.py",
            &[
                &token_url,
                ca.to_str().unwrap(),
                &creds.0,
                &creds.1,
                method,
                "read",
            ],
        )
        .unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(response["token_type"], "Bearer");
        assert_eq!(
            response["expires_in"], 1800,
            "30-minute access tokens by default"
        );
        assert_eq!(response["scope"], "read");
        let access_token = response["access_token"].as_str().unwrap();

        let info = served.introspect(&creds, access_token).await;
        assert_eq!(info["active"], true, "{info}");
        assert_eq!(info["scope"], "read");
        assert_eq!(info["client_id"], creds.0);
        assert_eq!(info["sub"], creds.0, "a Native app's token acts as the app");
        assert_eq!(info["iss"], issuer_url);
        assert!(info["exp"].as_i64().unwrap() > info["iat"].as_i64().unwrap());
    }
}

#[tokio::test]
async fn bad_requests_get_rfc6749_errors_never_a_500() {
    let served = Served::new("oauth-errors").await;
    let (operator, http) = (served.operator, served.http.clone());
    let creds = served.app("narrow", json!({ "scopes": ["read"] })).await;
    let basic = Auth::Basic(&creds.0, &creds.1);
    let client_credentials: &[(&str, &str)] = &[("grant_type", "client_credentials")];
    let oversized = format!(
        "grant_type=client_credentials&scope={}",
        "a".repeat(64 * 1024)
    );
    let table = [
        Row {
            case: "a grant type the service does not offer",
            path: "/oauth/token",
            auth: basic,
            body: Body::Form(&[("grant_type", "password")]),
            status: 400,
            error: "unsupported_grant_type",
        },
        Row {
            case: "no grant type",
            path: "/oauth/token",
            auth: basic,
            body: Body::Form(&[("scope", "read")]),
            status: 400,
            error: "invalid_request",
        },
        Row {
            case: "no client authentication",
            path: "/oauth/token",
            auth: Auth::None,
            body: Body::Form(client_credentials),
            status: 401,
            error: "invalid_client",
        },
        Row {
            case: "a wrong client secret",
            path: "/oauth/token",
            auth: Auth::Basic(&creds.0, "wrong"),
            body: Body::Form(client_credentials),
            status: 401,
            error: "invalid_client",
        },
        Row {
            case: "an unknown client",
            path: "/oauth/token",
            auth: Auth::Basic("no-such-client", &creds.1),
            body: Body::Form(client_credentials),
            status: 401,
            error: "invalid_client",
        },
        Row {
            case: "a scope beyond the app's",
            path: "/oauth/token",
            auth: basic,
            body: Body::Form(&[
                ("grant_type", "client_credentials"),
                ("scope", "read admin"),
            ]),
            status: 400,
            error: "invalid_scope",
        },
        Row {
            case: "two client authentication methods",
            path: "/oauth/token",
            auth: basic,
            body: Body::Form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &creds.0),
                ("client_secret", &creds.1),
            ]),
            status: 400,
            error: "invalid_request",
        },
        Row {
            case: "a JSON body",
            path: "/oauth/token",
            auth: basic,
            body: Body::Typed("application/json", r#"{"grant_type":"client_credentials"}"#),
            status: 400,
            error: "invalid_request",
        },
        Row {
            case: "an oversized form",
            path: "/oauth/token",
            auth: basic,
            body: Body::Typed("application/x-www-form-urlencoded", &oversized),
            status: 413,
            error: "invalid_request",
        },
        // Introspection and revocation want an authenticated client too.
        Row {
            case: "introspection without client authentication",
            path: "/oauth/introspect",
            auth: Auth::None,
            body: Body::Form(&[("token", "x")]),
            status: 401,
            error: "invalid_client",
        },
        Row {
            case: "token info for a bearer that is no token",
            path: "/oauth/token/info",
            auth: Auth::Bearer("not-a-token"),
            body: Body::None,
            status: 401,
            error: "invalid_token",
        },
    ];

    for row in table {
        let case = row.case;
        let url = format!("{}{}", operator.url, row.path);
        let request = match row.body {
            Body::None => http.get(url),
            _ => http.post(url),
        };
        let request = match row.auth {
            Auth::None => request,
            Auth::Basic(id, secret) => request.basic_auth(id, Some(secret)),
            Auth::Bearer(token) => request.bearer_auth(token),
        };
        let request = match row.body {
            Body::None => request,
            Body::Form(form) => request.form(form),
            Body::Typed(content_type, body) => request
                .header("content-type", content_type)
                .body(body.to_string()),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        assert_eq!(status, row.status, "{case}: {body}");
        assert_eq!(body["error"], row.error, "{case}: {body}");
        assert!(body["error_description"].is_string(), "{case}: {body}");
    }
}

/// A row of the table of bad requests: a request, and the status and
/// RFC 6749 `error` it gets.
struct Row<'a> {
    case: &'a str,
    /// On the operator's token service.
    path: &'a str,
    auth: Auth<'a>,
    body: Body<'a>,
    status: u16,
    error: &'a str,
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    /// HTTP Basic: a client id and secret.
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

/// A request without a body is a GET, any other a POST.
enum Body<'a> {
    None,
    /// Form-encoded fields.
    Form(&'a [(&'a str, &'a str)]),
    /// A body as it is, of a content type.
    Typed(&'a str, &'a str),
}

#[tokio::test]
async fn token_info_userinfo_and_revocation_by_the_client() {
    let served = Served::new("token-info").await;
    let (operator, http) = (served.operator, served.http.clone());
    let creds = served
        .app("reporter", json!({ "scopes": ["read", "email"] }))
        .await;
    let response: Value = http
        .post(format!("{}/oauth/token", operator.url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", creds.0.as_str()),
            ("client_secret", creds.1.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = response["access_token"].as_str().unwrap().to_string();

    let info: Value = http
        .get(format!("{}/oauth/token/info", operator.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["resource_owner_id"], creds.0);
    assert_eq!(info["scope"], json!(["read", "email"]));
    assert_eq!(info["application"]["uid"], creds.0);
    let expires_in = info["expires_in"].as_i64().unwrap();
    assert!((1700..=1800).contains(&expires_in), "{expires_in}");
    assert!(info["created_at"].as_i64().unwrap() > 0);

    let userinfo: Value = http
        .get(format!("{}/oauth/userinfo", operator.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(userinfo["sub"], creds.0);

    let revoked = http
        .post(format!("{}/oauth/revoke", operator.url))
        .basic_auth(&creds.0, Some(&creds.1))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    served
        .until_inactive(&creds, &token, Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn opaque_tokens_are_active_until_revoked() {
    let served = Served::new("opaque-introspect").await;
    let (client, ns) = (served.client.clone(), &served.ns);
    let creds = served.app("checker", json!({})).await;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    let spec = json!({
        "issuerRef": { "kind": "TokenIssuer", "name": "signer" },
        "format": "Opaque",
        "scopes": ["read_reports"],
        "subject": "partner-42",
    });
    apply(&tokens, "export", json!({ "spec": spec })).await;
    wait_reason(&tokens, "export", "Issued").await;
    let opaque = secret_text(
        &Api::<Secret>::namespaced(client.clone(), &ns.name)
            .get("export")
            .await
            .unwrap(),
        "token",
    );
    // Issued in the API server; the token service knows the token once its
    // watch shows that status too, a moment later under load.
    let mut info = Value::Null;
    for _ in 0..200 {
        info = served.introspect(&creds, &opaque).await;
        if info["active"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["sub"], "partner-42");
    assert_eq!(info["scope"], "read_reports");

    let mut revoked = spec.clone();
    revoked["revoked"] = json!(true);
    apply(&tokens, "export", json!({ "spec": revoked })).await;
    served
        .until_inactive(&creds, &opaque, Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn both_client_secrets_work_during_the_grace_period_only() {
    let served = Served::new("secret-grace").await;
    let (operator, http, client, ns) = (
        served.operator,
        served.http.clone(),
        served.client.clone(),
        &served.ns,
    );
    let old = served
        .app(
            "rolling",
            json!({
                "clientSecretRotation": { "interval": "15s", "gracePeriod": "10s" },
            }),
        )
        .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let rotated = wait_for(
        &secrets,
        "rolling",
        Duration::from_secs(40),
        "a new client secret",
        |s| secret_text(s, "client-secret") != old.1,
    )
    .await;
    let new = (old.0.clone(), secret_text(&rotated, "client-secret"));
    let works = |creds: (String, String)| {
        let http = http.clone();
        let url = format!("{}/oauth/token", operator.url);
        async move {
            http.post(url)
                .basic_auth(&creds.0, Some(&creds.1))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // The token service learns of the rotation from the app's status.
    eventually(Duration::from_secs(5), "the new secret to work", || async {
        (works(new.clone()).await == 200).then_some(())
    })
    .await;
    assert_eq!(
        works(old.clone()).await,
        200,
        "the old secret works during the grace period"
    );
    eventually(
        Duration::from_secs(20),
        "the old secret to stop working",
        || async { (works(old.clone()).await == 401).then_some(()) },
    )
    .await;
    assert_eq!(works(new).await, 200);
}
