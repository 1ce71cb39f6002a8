//! The token service's serving certificate: a cert-manager style Secret
//! (`tls.crt`, `tls.key`) when one is named, else a CA and certificate made
//! by the first replica and shared by every replica through a Secret, with
//! the CA published in a ConfigMap for clients to trust. The generated
//! certificate is renewed before it expires and re-made when the names it
//! must carry change, from the same CA; every replica looks again every
//! [`RECHECK_EVERY`] and serves what it finds without a restart.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, Issuer, KeyPair};
use serde_json::json;
use tracing::info;

use crate::cluster::labels::{MANAGED_BY, MANAGER};

/// The Secret holding the generated serving certificate.
pub const GENERATED_SECRET: &str = "tokensmith-serving-cert";
/// The ConfigMap publishing the CA of the generated certificate (`ca.crt`).
pub const CA_CONFIGMAP: &str = "tokensmith-ca";

/// How long a generated serving certificate is valid.
const LEAF_VALIDITY_DAYS: i64 = 90;
/// A generated certificate is replaced once this little is left of it (a
/// third, as cert-manager renews), so no replica ever serves an expired one.
const RENEW_WHEN_DAYS_LEFT: i64 = 30;
/// How long the generated CA is valid.
const CA_VALIDITY_DAYS: i64 = 3650;
/// How often every replica looks at its serving certificate again: a
/// generated one is renewed or re-made for new names, a named Secret
/// (cert-manager's) is reloaded when it changed.
pub const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

const DAY: i64 = 86_400;

/// What the generated certificate in the Secret is.
#[derive(Clone, Debug, PartialEq)]
pub struct Existing {
    /// Its subject alternative names (DNS names and IP addresses).
    pub names: Vec<String>,
    /// Its expiry, in Unix seconds.
    pub not_after: i64,
    /// The CA's key is kept (by this version on), so a new certificate can be
    /// signed by the CA clients already trust.
    pub ca_key: bool,
    pub ca_not_after: i64,
}

/// What the generated certificate needs.
#[derive(Debug, PartialEq)]
pub enum Plan {
    Keep,
    /// A new certificate signed by the same CA: clients notice nothing.
    Reissue(String),
    /// A new CA and certificate: clients must trust the new `tokensmith-ca`.
    NewAuthority(String),
}

/// The next step for the generated certificate `existing`, which must name
/// every one of `wanted` (the service's names and the host of
/// `--public-url`).
pub fn plan(existing: Option<&Existing>, wanted: &[String], now: i64) -> Plan {
    let Some(existing) = existing else {
        return Plan::NewAuthority("there is no serving certificate yet".into());
    };
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|name| !existing.names.contains(name))
        .map(String::as_str)
        .collect();
    let why = if !missing.is_empty() {
        format!("it does not name {}", missing.join(", "))
    } else if existing.not_after - now < RENEW_WHEN_DAYS_LEFT * DAY {
        format!("it expires in {} days", (existing.not_after - now) / DAY)
    } else {
        return Plan::Keep;
    };
    if !existing.ca_key {
        Plan::NewAuthority(format!(
            "{why}, and its CA's key was not kept (made by an older version)"
        ))
    } else if existing.ca_not_after - now < LEAF_VALIDITY_DAYS * DAY {
        Plan::NewAuthority(format!("{why}, and its CA expires before a new one would"))
    } else {
        Plan::Reissue(why)
    }
}

/// PEM certificate chain and key to serve with.
#[derive(Clone, PartialEq)]
pub struct ServingCert {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// The CA that clients trust it by, where known.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServingCert { .. }")
    }
}

/// Loads the named Secret (`namespace/name` or `name` in `namespace`).
pub async fn from_secret(
    client: &Client,
    namespace: &str,
    reference: &str,
) -> anyhow::Result<ServingCert> {
    let (ns, name) = reference.split_once('/').unwrap_or((namespace, reference));
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .map_err(|e| anyhow::anyhow!("TLS Secret {ns}/{name}: {e}"))?;
    let what = format!("TLS Secret {ns}/{name}");
    Ok(ServingCert {
        cert_pem: field(&secret, "tls.crt", &what)?,
        key_pem: field(&secret, "tls.key", &what)?,
        ca_pem: field(&secret, "ca.crt", &what).ok(),
    })
}

/// The generated certificate for `dns_names`: made by the first replica
/// that needs it, renewed before it expires and re-made when the names it
/// must carry change (a new `--public-url`), by whichever replica sees it
/// first; the others read it. The CA is kept across renewals, so clients
/// that trust `tokensmith-ca` keep trusting the service.
pub async fn generated(
    client: &Client,
    namespace: &str,
    dns_names: Vec<String>,
) -> anyhow::Result<ServingCert> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut attempts = 0;
    let cert = loop {
        attempts += 1;
        let current = secrets.get_opt(GENERATED_SECRET).await?;
        let existing = current.as_ref().and_then(inspect);
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let made = match plan(existing.as_ref(), &dns_names, now) {
            Plan::Keep => break read_generated(current.as_ref().expect("kept means found"))?,
            Plan::Reissue(why) => {
                let secret = current.as_ref().expect("reissued means found");
                let (ca_cert, ca_key) = (
                    field(secret, "ca.crt", GENERATED_SECRET)?,
                    field(secret, "ca.key", GENERATED_SECRET)?,
                );
                info!(%why, "issuing a new serving certificate from the same CA");
                Made::from_ca(
                    String::from_utf8(ca_cert)?,
                    String::from_utf8(ca_key)?,
                    dns_names.clone(),
                )?
            }
            Plan::NewAuthority(why) => {
                info!(%why, "making a new CA and serving certificate; clients must trust the new ConfigMap tokensmith-ca");
                Made::new_authority(dns_names.clone())?
            }
        };
        match store(&secrets, current, &made).await {
            Ok(()) => break made.serving(),
            // Another replica wrote it meanwhile: look again (it may have
            // made just what is needed).
            Err(kube::Error::Api(status)) if status.code == 409 && attempts < 5 => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let ca_pem = cert
        .ca_pem
        .clone()
        .expect("a generated certificate's CA is known");
    publish_ca(client, namespace, String::from_utf8(ca_pem)?).await?;
    Ok(cert)
}

/// Writes `made` as the generated Secret: created when there is none,
/// else replaced on the condition that it is still `current` (409 if
/// another replica wrote it meanwhile).
async fn store(secrets: &Api<Secret>, current: Option<Secret>, made: &Made) -> kube::Result<()> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(GENERATED_SECRET.into()),
            labels: Some(BTreeMap::from([(MANAGED_BY.0.into(), MANAGED_BY.1.into())])),
            resource_version: current.and_then(|c| c.metadata.resource_version),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".into(),
                ByteString(made.chain_pem.clone().into_bytes()),
            ),
            (
                "tls.key".into(),
                ByteString(made.key_pem.clone().into_bytes()),
            ),
            (
                "ca.crt".into(),
                ByteString(made.ca_pem.clone().into_bytes()),
            ),
            (
                "ca.key".into(),
                ByteString(made.ca_key_pem.clone().into_bytes()),
            ),
        ])),
        ..Secret::default()
    };
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    };
    match secret.metadata.resource_version {
        None => secrets.create(&params, &secret).await.map(drop),
        Some(_) => secrets
            .replace(GENERATED_SECRET, &params, &secret)
            .await
            .map(drop),
    }
}

/// Publishes `ca_pem` in the ConfigMap clients read it from, unless it is
/// there already (every start after the first: no write at all).
async fn publish_ca(client: &Client, namespace: &str, ca_pem: String) -> anyhow::Result<()> {
    let ca = ConfigMap {
        metadata: ObjectMeta {
            name: Some(CA_CONFIGMAP.into()),
            labels: Some(BTreeMap::from([(MANAGED_BY.0.into(), MANAGED_BY.1.into())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("ca.crt".into(), ca_pem)])),
        ..ConfigMap::default()
    };
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let published = config_maps
        .get_opt(CA_CONFIGMAP)
        .await?
        .is_some_and(|current| {
            current.data == ca.data
                && current.labels().get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
        });
    if published {
        return Ok(());
    }
    let mut body = serde_json::to_value(&ca)?;
    body["apiVersion"] = json!("v1");
    body["kind"] = json!("ConfigMap");
    config_maps
        .patch(
            CA_CONFIGMAP,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    Ok(())
}

/// The bytes under `key` in `secret` (named `what` in the error).
fn field(secret: &Secret, key: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .ok_or_else(|| anyhow::anyhow!("{what} has no {key}"))
}

fn read_generated(secret: &Secret) -> anyhow::Result<ServingCert> {
    let what = format!("Secret {GENERATED_SECRET}");
    let field = |key: &str| field(secret, key, &what);
    Ok(ServingCert {
        cert_pem: field("tls.crt")?,
        key_pem: field("tls.key")?,
        ca_pem: Some(field("ca.crt")?),
    })
}

/// What the generated Secret holds, read from its certificates; `None`
/// when they cannot be read (then a new CA and certificate are made).
fn inspect(secret: &Secret) -> Option<Existing> {
    let data = secret.data.as_ref()?;
    let leaf = data.get("tls.crt")?;
    let ca = data.get("ca.crt")?;
    let (names, not_after) = read_certificate(&leaf.0)?;
    let (_, ca_not_after) = read_certificate(&ca.0)?;
    Some(Existing {
        names,
        not_after,
        ca_key: data.contains_key("ca.key"),
        ca_not_after,
    })
}

/// The subject alternative names and expiry of the first certificate in
/// `pem`.
fn read_certificate(pem: &[u8]) -> Option<(Vec<String>, i64)> {
    use x509_parser::{extensions::GeneralName, pem::parse_x509_pem};
    let (_, pem) = parse_x509_pem(pem).ok()?;
    let certificate = pem.parse_x509().ok()?;
    let names = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(dns.to_string()),
                    GeneralName::IPAddress(bytes) => ip_text(bytes),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some((names, certificate.validity().not_after.timestamp()))
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

/// A CA (new or kept) and a serving certificate signed by it.
struct Made {
    ca_pem: String,
    ca_key_pem: String,
    chain_pem: String,
    key_pem: String,
}

impl Made {
    /// A new CA, and a certificate for `dns_names` from it.
    fn new_authority(dns_names: Vec<String>) -> anyhow::Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tokensmith token service CA");
        (ca_params.not_before, ca_params.not_after) = validity(CA_VALIDITY_DAYS)?;
        let ca_key = KeyPair::generate()?;
        let ca_key_pem = ca_key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
        let ca_pem = ca.pem();
        Self::signed(&ca, ca_pem, ca_key_pem, dns_names)
    }

    /// A certificate for `dns_names` from the CA `ca_pem` (key `ca_key_pem`).
    fn from_ca(ca_pem: String, ca_key_pem: String, dns_names: Vec<String>) -> anyhow::Result<Self> {
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key_pem)?)?;
        Self::signed(&issuer, ca_pem, ca_key_pem, dns_names)
    }

    fn signed(
        issuer: &Issuer<'_, KeyPair>,
        ca_pem: String,
        ca_key_pem: String,
        dns_names: Vec<String>,
    ) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(dns_names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "tokensmith token service");
        (params.not_before, params.not_after) = validity(LEAF_VALIDITY_DAYS)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, issuer)?;
        Ok(Self {
            chain_pem: format!("{}{ca_pem}", cert.pem()),
            key_pem: key.serialize_pem(),
            ca_pem,
            ca_key_pem,
        })
    }

    fn serving(&self) -> ServingCert {
        ServingCert {
            cert_pem: self.chain_pem.clone().into_bytes(),
            key_pem: self.key_pem.clone().into_bytes(),
            ca_pem: Some(self.ca_pem.clone().into_bytes()),
        }
    }
}

/// From an hour ago (clocks differ) to `days` from now.
fn validity(days: i64) -> anyhow::Result<(time::OffsetDateTime, time::OffsetDateTime)> {
    let now = time::OffsetDateTime::now_utc();
    Ok((
        now - time::Duration::hours(1),
        now + time::Duration::days(days),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAYS: i64 = DAY;

    fn existing(names: &[&str], days_left: i64, ca_key: bool, ca_days_left: i64) -> Existing {
        Existing {
            names: names.iter().map(|n| n.to_string()).collect(),
            not_after: days_left * DAYS,
            ca_key,
            ca_not_after: ca_days_left * DAYS,
        }
    }

    #[test]
    fn the_plan_follows_names_expiry_and_what_the_ca_allows() {
        let wanted: Vec<String> = vec!["tokensmith.ns.svc".into(), "tokens.example.com".into()];
        let both = ["tokensmith.ns.svc", "tokens.example.com"];
        let rows: [(Option<Existing>, &str, &str); 7] = [
            (None, "NewAuthority", "no serving certificate yet"),
            (Some(existing(&both, 60, true, 3000)), "Keep", ""),
            (Some(existing(&both, 60, false, 3000)), "Keep", ""),
            (
                Some(existing(&["tokensmith.ns.svc"], 60, true, 3000)),
                "Reissue",
                "does not name tokens.example.com",
            ),
            (
                Some(existing(&both, 29, true, 3000)),
                "Reissue",
                "expires in 29 days",
            ),
            (
                Some(existing(&["tokensmith.ns.svc"], 60, false, 3000)),
                "NewAuthority",
                "CA's key was not kept",
            ),
            (
                Some(existing(&both, 10, true, 80)),
                "NewAuthority",
                "its CA expires",
            ),
        ];
        for (existing, step, says) in rows {
            let planned = plan(existing.as_ref(), &wanted, 0);
            let (name, why) = match &planned {
                Plan::Keep => ("Keep", ""),
                Plan::Reissue(why) => ("Reissue", why.as_str()),
                Plan::NewAuthority(why) => ("NewAuthority", why.as_str()),
            };
            assert_eq!(name, step, "{existing:?}: {planned:?}");
            assert!(why.contains(says), "{existing:?}: {planned:?}");
        }
    }

    #[test]
    fn a_reissued_certificate_keeps_the_ca_and_names_what_is_asked() {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = Made::new_authority(names.clone()).unwrap();
        let (read_names, not_after) = read_certificate(first.chain_pem.as_bytes()).unwrap();
        assert_eq!(read_names, names);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!((not_after - now - LEAF_VALIDITY_DAYS * DAY).abs() < 60);
        let (_, ca_not_after) = read_certificate(first.ca_pem.as_bytes()).unwrap();
        assert!(ca_not_after - now > 3000 * DAY);

        let more = vec!["localhost".to_string(), "tokens.example.com".to_string()];
        let second =
            Made::from_ca(first.ca_pem.clone(), first.ca_key_pem.clone(), more.clone()).unwrap();
        assert_eq!(second.ca_pem, first.ca_pem, "the same CA");
        assert_ne!(second.key_pem, first.key_pem, "a new key");
        assert_eq!(
            read_certificate(second.chain_pem.as_bytes()).unwrap().0,
            more
        );
        // The new certificate verifies against the kept CA.
        let (_, ca) = x509_parser::pem::parse_x509_pem(first.ca_pem.as_bytes()).unwrap();
        let ca = ca.parse_x509().unwrap();
        let (_, leaf) = x509_parser::pem::parse_x509_pem(second.chain_pem.as_bytes()).unwrap();
        let leaf = leaf.parse_x509().unwrap();
        assert!(leaf.verify_signature(Some(ca.public_key())).is_ok());
        assert!(
            !format!("{:?}", second.serving()).contains("PRIVATE KEY"),
            "the key never reaches a Debug print"
        );
    }
}
