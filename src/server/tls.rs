//! The token service's serving certificate: a cert-manager style Secret
//! (`tls.crt`, `tls.key`) when one is named, else a CA and certificate made
//! once and shared by every replica through a Secret, with the CA published
//! in a ConfigMap for clients to trust.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::json;

use crate::cluster::labels::{MANAGED_BY, MANAGER};

/// The Secret holding the generated serving certificate.
pub const GENERATED_SECRET: &str = "tokensmith-serving-cert";
/// The ConfigMap publishing the CA of the generated certificate (`ca.crt`).
pub const CA_CONFIGMAP: &str = "tokensmith-ca";

/// PEM certificate chain and key to serve with.
pub struct ServingCert {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
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
    })
}

/// The generated certificate for `dns_names`: made by the first replica
/// that needs it, read by the others.
pub async fn generated(
    client: &Client,
    namespace: &str,
    dns_names: Vec<String>,
) -> anyhow::Result<ServingCert> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let (ca_pem, cert) = match secrets.get_opt(GENERATED_SECRET).await? {
        Some(existing) => read_generated(&existing)?,
        None => {
            let (ca_pem, cert) = generate(dns_names)?;
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(GENERATED_SECRET.into()),
                    labels: Some(BTreeMap::from([(MANAGED_BY.0.into(), MANAGED_BY.1.into())])),
                    ..ObjectMeta::default()
                },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(BTreeMap::from([
                    ("tls.crt".into(), ByteString(cert.cert_pem.clone())),
                    ("tls.key".into(), ByteString(cert.key_pem.clone())),
                    ("ca.crt".into(), ByteString(ca_pem.clone().into_bytes())),
                ])),
                ..Secret::default()
            };
            let params = PostParams {
                field_manager: Some(MANAGER.into()),
                ..PostParams::default()
            };
            match secrets.create(&params, &secret).await {
                Ok(_) => (ca_pem, cert),
                // Another replica made it first: use theirs.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    read_generated(&secrets.get(GENERATED_SECRET).await?)?
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
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
    // Published already (every start after the first): no write at all.
    let published = config_maps
        .get_opt(CA_CONFIGMAP)
        .await?
        .is_some_and(|current| {
            current.data == ca.data
                && current.labels().get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
        });
    if published {
        return Ok(cert);
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
    Ok(cert)
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

fn read_generated(secret: &Secret) -> anyhow::Result<(String, ServingCert)> {
    let what = format!("Secret {GENERATED_SECRET}");
    let field = |key: &str| field(secret, key, &what);
    Ok((
        String::from_utf8(field("ca.crt")?)?,
        ServingCert {
            cert_pem: field("tls.crt")?,
            key_pem: field("tls.key")?,
        },
    ))
}

/// A new CA and a serving certificate for `dns_names` signed by it.
fn generate(dns_names: Vec<String>) -> anyhow::Result<(String, ServingCert)> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tokensmith token service CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let mut params = CertificateParams::new(dns_names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "tokensmith token service");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    let chain = format!("{}{}", cert.pem(), ca.pem());
    Ok((
        ca.pem(),
        ServingCert {
            cert_pem: chain.into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_ca_and_a_certificate_for_the_names() {
        let (ca, cert) = generate(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        let chain = String::from_utf8(cert.cert_pem).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(
            String::from_utf8(cert.key_pem)
                .unwrap()
                .contains("PRIVATE KEY")
        );
        assert!(
            !format!(
                "{:?}",
                ServingCert {
                    cert_pem: vec![],
                    key_pem: b"secret".to_vec()
                }
            )
            .contains("secret")
        );
    }
}
