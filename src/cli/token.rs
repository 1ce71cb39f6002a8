//! `tokensmith token show|verify|renew|list`: what a person needs to look
//! at a token without copying it around. The token itself is printed only on
//! request. The namespace is `-n`, else the kubeconfig context's, as kubectl
//! has it.

use std::{io::Read, path::PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::Api;
use serde_json::{Value, json};

use super::{Failure, KubeArgs};
use crate::{
    api::AccessToken,
    controller::access_token::{secret_keys, secret_name},
    token::verify_jwt,
};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Show an AccessToken's current token: decoded header and claims,
    /// expiry and status, read from its Secret. The token itself only with
    /// --reveal.
    Show(ShowArgs),
    /// Check a JWT against its issuer's JWKS, fetched over HTTPS as any
    /// verifier would: signature, allowed algorithm, iss, exp, nbf (and aud
    /// with --audience). Exits 1 when the token is not valid.
    Verify(VerifyArgs),
    /// Ask for a new token now, as at renewal time: the current one stays
    /// valid until it expires (listed in previousTokens), unlike deleting the
    /// Secret, which revokes it. Sets the tokensmith.dev/renew annotation.
    Renew(RenewArgs),
    /// List AccessTokens: Ready or not, why, and when each expires and renews.
    List(ListArgs),
}

/// The namespace flags of kubectl: `-n`, else the context's.
#[derive(Args)]
pub struct NamespaceArg {
    /// The namespace (default: the kubeconfig context's, else `default`).
    #[arg(short, long)]
    namespace: Option<String>,
}

impl NamespaceArg {
    fn resolve(&self, client: &kube::Client) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string())
    }
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    namespace: NamespaceArg,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    kube: KubeArgs,
}

#[derive(Args)]
pub struct RenewArgs {
    /// The AccessToken's name.
    name: String,
    #[command(flatten)]
    namespace: NamespaceArg,
    #[command(flatten)]
    kube: KubeArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Output {
    Text,
    Json,
    Yaml,
}

/// Prints `view` as JSON or YAML; false for text, which each command
/// prints its own way.
fn printed(output: Output, view: &Value) -> Result<bool, Failure> {
    let text = match output {
        Output::Text => return Ok(false),
        Output::Json => {
            serde_json::to_string_pretty(view).map_err(|e| Failure::unavailable(e.to_string()))?
        }
        Output::Yaml => {
            serde_yaml::to_string(view).map_err(|e| Failure::unavailable(e.to_string()))?
        }
    };
    println!("{}", text.trim_end());
    Ok(true)
}

#[derive(Args)]
pub struct ShowArgs {
    /// The AccessToken's name.
    name: String,
    #[command(flatten)]
    namespace: NamespaceArg,
    /// Print the token too. It is a secret: mind terminals, logs and history.
    #[arg(long)]
    reveal: bool,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    kube: KubeArgs,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The token. Without it (or with `-`) it is read from standard input,
    /// which keeps it out of shell history.
    token: Option<String>,
    /// Take the token from this AccessToken's Secret instead.
    #[arg(long, value_name = "NAME", conflicts_with = "token")]
    access_token: Option<String>,
    /// Namespace of --access-token (default: the context's).
    #[command(flatten)]
    namespace: NamespaceArg,
    /// The JWKS to verify with. Default: `<iss>/.well-known/jwks.json` of
    /// the issuer the token names.
    #[arg(long, value_name = "URL")]
    jwks_url: Option<String>,
    /// A PEM CA certificate to trust for the JWKS URL besides the system's
    /// (e.g. `ca.crt` of the ConfigMap tokensmith-ca).
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// The `iss` to require; its JWKS is `<issuer>/.well-known/jwks.json`
    /// unless --jwks-url says otherwise. Required for a token given directly:
    /// the issuer a token names is not trusted to pick the keys it is checked
    /// with. With --access-token it defaults to the issuer the AccessToken's
    /// status records, and says so.
    #[arg(long)]
    issuer: Option<String>,
    /// An audience the token must have.
    #[arg(long)]
    audience: Option<String>,
    #[command(flatten)]
    kube: KubeArgs,
}

pub async fn run(command: TokenCommand) -> Result<(), Failure> {
    match command {
        TokenCommand::Show(args) => show(args).await,
        TokenCommand::Verify(args) => verify(args).await,
        TokenCommand::Renew(args) => renew(args).await,
        TokenCommand::List(args) => list(args).await,
    }
}

async fn list(args: ListArgs) -> Result<(), Failure> {
    let client = args.kube.client().await?;
    let (api, scope) = if args.all_namespaces {
        (
            Api::<AccessToken>::all(client),
            "every namespace".to_string(),
        )
    } else {
        let namespace = args.namespace.resolve(&client);
        let scope = format!("namespace {namespace}");
        (Api::<AccessToken>::namespaced(client, &namespace), scope)
    };
    let tokens = api
        .list(&Default::default())
        .await
        .map_err(|e| Failure::from_kube(&format!("AccessTokens in {scope}"), e))?;
    let now = Timestamp::now();
    let rows: Vec<Value> = tokens
        .items
        .iter()
        .map(|t| {
            let status = t.status.clone().unwrap_or_default();
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
            json!({
                "namespace": t.metadata.namespace,
                "name": t.metadata.name,
                "ready": ready.map(|c| c.status.clone()),
                "reason": ready.map(|c| c.reason.clone()),
                "expiresAt": status.expires_at.as_ref().map(|x| x.0.to_string()),
                "renewalTime": status.renewal_time.as_ref().map(|x| x.0.to_string()),
                "expires": status.expires_at.as_ref().map(|x| relative(x.0, now)),
                "renews": status.renewal_time.as_ref().map(|x| relative(x.0, now)),
            })
        })
        .collect();
    if printed(args.output, &json!(rows))? {
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!("No AccessTokens in {scope}.");
        return Ok(());
    }
    let cell = |row: &Value, key: &str| row[key].as_str().unwrap_or("-").to_string();
    let mut table: Vec<Vec<String>> = vec![
        ["NAMESPACE", "NAME", "READY", "REASON", "EXPIRES", "RENEWS"]
            .map(String::from)
            .to_vec(),
    ];
    for row in &rows {
        table.push(
            ["namespace", "name", "ready", "reason", "expires", "renews"]
                .map(|k| cell(row, k))
                .to_vec(),
        );
    }
    let skip = usize::from(!args.all_namespaces);
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in table {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .skip(skip)
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(())
}

async fn renew(args: RenewArgs) -> Result<(), Failure> {
    let client = args.kube.client().await?;
    let namespace = args.namespace.resolve(&client);
    let api = Api::<AccessToken>::namespaced(client, &namespace);
    let asked = Timestamp::now().to_string();
    let patch = serde_json::json!({
        "metadata": { "annotations": { crate::api::RENEW_ANNOTATION: asked } },
    });
    match api
        .patch(
            &args.name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {
            println!(
                "renewal of AccessToken {namespace}/{} asked for at {asked}; the current token stays valid until it expires",
                args.name
            );
            Ok(())
        }
        Err(error) => Err(Failure::from_kube(
            &format!("AccessToken {namespace}/{}", args.name),
            error,
        )),
    }
}

/// The AccessToken and the token in its Secret (if there is one).
async fn load(
    kube: &KubeArgs,
    namespace: &NamespaceArg,
    name: &str,
) -> Result<(AccessToken, Option<String>, String), Failure> {
    let client = kube.client().await?;
    let namespace = namespace.resolve(&client);
    let what = format!("AccessToken {namespace}/{name}");
    let access_token = Api::<AccessToken>::namespaced(client.clone(), &namespace)
        .get(name)
        .await
        .map_err(|e| Failure::from_kube(&what, e))?;
    let secret_name = secret_name(&access_token);
    let secret = Api::<Secret>::namespaced(client, &namespace)
        .get_opt(&secret_name)
        .await
        .map_err(|e| Failure::from_kube(&format!("Secret {namespace}/{secret_name}"), e))?;
    let token = secret
        .and_then(|s| s.data)
        .and_then(|d| d.get(secret_keys::TOKEN).cloned())
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    Ok((access_token, token, namespace))
}

/// "in 2h 3m" or "3m 10s ago".
fn relative(to: Timestamp, now: Timestamp) -> String {
    let seconds = to.as_second() - now.as_second();
    let magnitude = seconds.unsigned_abs();
    let text = match magnitude {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    };
    if seconds >= 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

fn decoded(token: &str) -> Option<(Value, Value)> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(token)
        .ok()?
        .claims;
    Some((serde_json::to_value(header).ok()?, claims))
}

async fn show(args: ShowArgs) -> Result<(), Failure> {
    let (access_token, token, namespace) = load(&args.kube, &args.namespace, &args.name).await?;
    let status = access_token.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let now = Timestamp::now();
    let jwt = token.as_deref().and_then(decoded);
    let view = json!({
        "accessToken": format!("{namespace}/{}", args.name),
        "ready": ready.map(|c| json!({ "status": c.status, "reason": c.reason, "message": c.message })),
        "secret": token.as_ref().map(|_| secret_name(&access_token)),
        "format": if token.is_none() { Value::Null } else if jwt.is_some() { json!("JWT") } else { json!("Opaque") },
        "tokenID": status.token_id,
        "keyID": status.key_id,
        "issuedAt": status.issued_at.as_ref().map(|t| t.0.to_string()),
        "expiresAt": status.expires_at.as_ref().map(|t| t.0.to_string()),
        "expiresIn": status.expires_at.as_ref().map(|t| t.0.as_second() - now.as_second()),
        "renewalTime": status.renewal_time.as_ref().map(|t| t.0.to_string()),
        "revision": status.revision,
        "tokenHash": status.token_hash,
        "header": jwt.as_ref().map(|(h, _)| h.clone()),
        "claims": jwt.as_ref().map(|(_, c)| c.clone()),
        "token": if args.reveal { token.clone().map(Value::String).unwrap_or(Value::Null) } else { Value::Null },
    });
    if printed(args.output, &view)? {
        return Ok(());
    }
    {
        {
            let line = |label: &str, value: String| println!("{label:<12} {value}");
            line(
                "AccessToken",
                view["accessToken"].as_str().unwrap_or_default().to_string(),
            );
            if let Some(c) = ready {
                line(
                    "Ready",
                    format!("{} ({}): {}", c.status, c.reason, c.message),
                );
            }
            let text = |v: &Value| {
                v.as_str()
                    .map(String::from)
                    .or_else(|| (!v.is_null()).then(|| v.to_string()))
            };
            for (label, key) in [
                ("Secret", "secret"),
                ("Format", "format"),
                ("Token ID", "tokenID"),
                ("Key ID", "keyID"),
                ("Issued at", "issuedAt"),
                ("Revision", "revision"),
                ("Token hash", "tokenHash"),
            ] {
                if let Some(value) = text(&view[key]) {
                    line(label, value);
                }
            }
            if let Some(expires) = status.expires_at.as_ref() {
                line(
                    "Expires at",
                    format!("{} ({})", expires.0, relative(expires.0, now)),
                );
            }
            if let Some(renews) = status.renewal_time.as_ref() {
                line(
                    "Renews at",
                    format!("{} ({})", renews.0, relative(renews.0, now)),
                );
            }
            match (&jwt, &token) {
                (Some((header, claims)), _) => {
                    line("Header", header.to_string());
                    line(
                        "Claims",
                        serde_json::to_string_pretty(claims)
                            .unwrap_or_default()
                            .replace('\n', "\n             "),
                    );
                }
                (None, Some(_)) => line(
                    "Claims",
                    "none: an Opaque token is checked by introspection".into(),
                ),
                (None, None) => line(
                    "Token",
                    "none: the Secret holds no token (see Ready)".into(),
                ),
            }
            match (&token, args.reveal) {
                (Some(token), true) => line("Token", token.clone()),
                (Some(_), false) => line("Token", "hidden (--reveal prints it)".into()),
                (None, _) => {}
            }
        }
    }
    Ok(())
}

async fn verify(args: VerifyArgs) -> Result<(), Failure> {
    // The issuer comes from the caller, or from the operator's record of
    // the AccessToken; never from the token itself.
    let (token, recorded_issuer) = match (&args.access_token, args.token.as_deref()) {
        (Some(name), _) => {
            let (resource, token, namespace) = load(&args.kube, &args.namespace, name).await?;
            let token = token.ok_or_else(|| {
                Failure::not_found(format!(
                    "AccessToken {namespace}/{name} has no token in its Secret (see its Ready condition)"
                ))
            })?;
            let recorded = resource.status.and_then(|s| s.minted).map(|m| m.issuer_url);
            (token, recorded)
        }
        (None, Some(token)) if token != "-" => (token.to_string(), None),
        (None, _) => {
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input).map_err(|e| {
                Failure::unavailable(format!("cannot read the token from standard input: {e}"))
            })?;
            (input.trim().to_string(), None)
        }
    };
    decoded(&token).ok_or_else(|| {
        Failure::invalid("not a JWT (an Opaque token is checked by introspection)")
    })?;
    let iss = match (&args.issuer, recorded_issuer) {
        (Some(issuer), _) => issuer.clone(),
        (None, Some(recorded)) => {
            eprintln!("issuer: {recorded} (as recorded in the AccessToken's status)");
            recorded
        }
        (None, None) => {
            return Err(Failure::unavailable(
                "pass --issuer: the issuer a token names is not trusted to choose the keys it is checked with",
            ));
        }
    };
    let jwks_url = args
        .jwks_url
        .clone()
        .unwrap_or_else(|| format!("{}/.well-known/jwks.json", iss.trim_end_matches('/')));
    if !jwks_url.starts_with("https://") {
        return Err(Failure::unavailable(format!(
            "refusing to fetch keys from {jwks_url}: only https protects them on the way"
        )));
    }
    let mut http = reqwest::Client::builder();
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| Failure::unavailable(format!("cannot read {}: {e}", path.display())))?;
        http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).map_err(|_| {
            Failure::unavailable(format!("{} is not a PEM certificate", path.display()))
        })?);
    }
    let fetch_failed = |e: reqwest::Error| {
        Failure::unavailable(format!(
            "could not fetch the JWKS from {jwks_url}: {}",
            super::failure::first_line(&e)
        ))
    };
    let jwks: jsonwebtoken::jwk::JwkSet = http
        .build()
        .map_err(fetch_failed)?
        .get(&jwks_url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(fetch_failed)?
        .json()
        .await
        .map_err(|_| Failure::unavailable(format!("{jwks_url} did not answer a JWKS")))?;
    match verify_jwt(&token, &jwks, &iss, args.audience.as_deref(), 0) {
        Ok(claims) => {
            let expires = Timestamp::from_second(claims.exp).unwrap_or(Timestamp::MAX);
            println!("valid: signed by a key of {jwks_url}");
            println!("  iss   {}", claims.iss);
            println!("  sub   {}", claims.sub);
            println!("  jti   {}", claims.jti);
            println!("  scope {}", claims.scope);
            println!(
                "  exp   {expires} ({})",
                relative(expires, Timestamp::now())
            );
            Ok(())
        }
        Err(error) => Err(Failure::invalid(format!("invalid: {error}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let at = |s: i64| Timestamp::from_second(1_000_000 + s).unwrap();
        assert_eq!(relative(at(90), now), "in 1m 30s");
        assert_eq!(relative(at(2 * 3600 + 180), now), "in 2h 3m");
        assert_eq!(relative(at(-5), now), "5s ago");
        assert_eq!(relative(at(3 * 86_400 + 3600), now), "in 3d 1h");
    }
}
