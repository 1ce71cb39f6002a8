//! `tokensmith token show|verify`: what a person needs to look at a token
//! without copying it around. The token itself is printed only on request.

use std::{io::Read, path::PathBuf};

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::Api;
use serde_json::{Value, json};

use super::KubeArgs;
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
}

#[derive(Args)]
pub struct RenewArgs {
    /// The AccessToken's name.
    name: String,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    kube: KubeArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Args)]
pub struct ShowArgs {
    /// The AccessToken's name.
    name: String,
    #[arg(short, long, default_value = "default")]
    namespace: String,
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
    /// Namespace of --access-token.
    #[arg(short, long, default_value = "default")]
    namespace: String,
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

pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Show(args) => show(args).await,
        TokenCommand::Verify(args) => verify(args).await,
        TokenCommand::Renew(args) => renew(args).await,
    }
}

async fn renew(args: RenewArgs) -> anyhow::Result<()> {
    let client = args.kube.client().await?;
    let api = Api::<AccessToken>::namespaced(client, &args.namespace);
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
                "renewal of AccessToken {}/{} asked for at {asked}; the current token stays valid until it expires",
                args.namespace, args.name
            );
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Err(anyhow!(
            "AccessToken {}/{} not found",
            args.namespace,
            args.name
        )),
        Err(error) => Err(error.into()),
    }
}

/// The AccessToken and the token in its Secret (if there is one).
async fn load(
    kube: &KubeArgs,
    namespace: &str,
    name: &str,
) -> anyhow::Result<(AccessToken, Option<String>)> {
    let client = kube.client().await?;
    let access_token = Api::<AccessToken>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
        .ok_or_else(|| anyhow!("AccessToken {namespace}/{name} not found"))?;
    let secret = Api::<Secret>::namespaced(client, namespace)
        .get_opt(&secret_name(&access_token))
        .await?;
    let token = secret
        .and_then(|s| s.data)
        .and_then(|d| d.get(secret_keys::TOKEN).cloned())
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    Ok((access_token, token))
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

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let (access_token, token) = load(&args.kube, &args.namespace, &args.name).await?;
    let status = access_token.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let now = Timestamp::now();
    let jwt = token.as_deref().and_then(decoded);
    let view = json!({
        "accessToken": format!("{}/{}", args.namespace, args.name),
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
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        Output::Text => {
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
                        serde_json::to_string_pretty(claims)?.replace('\n', "\n             "),
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

async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    // The issuer comes from the caller, or from the operator's record of
    // the AccessToken; never from the token itself.
    let (token, recorded_issuer) = match (&args.access_token, args.token.as_deref()) {
        (Some(name), _) => {
            let (resource, token) = load(&args.kube, &args.namespace, name).await?;
            let token = token.ok_or_else(|| {
                anyhow!(
                    "AccessToken {}/{name} has no token in its Secret",
                    args.namespace
                )
            })?;
            let recorded = resource.status.and_then(|s| s.minted).map(|m| m.issuer_url);
            (token, recorded)
        }
        (None, Some(token)) if token != "-" => (token.to_string(), None),
        (None, _) => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("reading the token from standard input")?;
            (input.trim().to_string(), None)
        }
    };
    decoded(&token)
        .ok_or_else(|| anyhow!("not a JWT (an Opaque token is checked by introspection)"))?;
    let iss = match (&args.issuer, recorded_issuer) {
        (Some(issuer), _) => issuer.clone(),
        (None, Some(recorded)) => {
            eprintln!("issuer: {recorded} (as recorded in the AccessToken's status)");
            recorded
        }
        (None, None) => bail!(
            "pass --issuer: the issuer a token names is not trusted to choose the keys it is checked with"
        ),
    };
    let jwks_url = args
        .jwks_url
        .clone()
        .unwrap_or_else(|| format!("{}/.well-known/jwks.json", iss.trim_end_matches('/')));
    if !jwks_url.starts_with("https://") {
        bail!("refusing to fetch keys from {jwks_url}: only https protects them on the way");
    }
    let mut http = reqwest::Client::builder();
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        http = http.add_root_certificate(
            reqwest::Certificate::from_pem(&pem).context("the CA file is not PEM")?,
        );
    }
    let jwks: jsonwebtoken::jwk::JwkSet = http
        .build()?
        .get(&jwks_url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("fetching the JWKS from {jwks_url}"))?
        .json()
        .await
        .with_context(|| format!("{jwks_url} did not answer a JWKS"))?;
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
        Err(error) => bail!("invalid: {error}"),
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
