//! Keeps the `caBundle` of the finalizer webhook's configuration set to the
//! CA that the token service's certificate chains to, as cert-manager's
//! cainjector does: the chart cannot know a CA the operator generates.
//! Written only where it differs, so a restart writes nothing.

use k8s_openapi::{ByteString, api::admissionregistration::v1::MutatingWebhookConfiguration};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tracing::{info, warn};

/// The positions of the webhooks of `config` whose `caBundle` is not `ca`.
pub fn stale(config: &MutatingWebhookConfiguration, ca: &[u8]) -> Vec<usize> {
    config
        .webhooks
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, webhook)| {
            webhook
                .client_config
                .ca_bundle
                .as_ref()
                .map(|b| b.0.as_slice())
                != Some(ca)
        })
        .map(|(at, _)| at)
        .collect()
}

/// The JSON patch setting `ca` at the webhooks `at`, on the condition that
/// the configuration is still at `resource_version` (the positions are
/// only known for it).
pub fn patch(at: &[usize], resource_version: &str, ca: &[u8]) -> json_patch::Patch {
    let encoded = serde_json::to_value(ByteString(ca.to_vec())).expect("base64");
    let mut operations = vec![
        json!({ "op": "test", "path": "/metadata/resourceVersion", "value": resource_version }),
    ];
    operations.extend(at.iter().map(|i| {
        json!({ "op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded })
    }));
    serde_json::from_value(json!(operations)).expect("a JSON patch")
}

/// Sets `ca_pem` as the `caBundle` of every webhook of the configuration
/// `name` where it differs. Failures are logged, not returned: without the
/// webhook the operator applies the finalizer itself.
pub async fn inject(client: &Client, name: &str, ca_pem: &[u8]) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let config = match api.get_opt(name).await {
        Ok(Some(config)) => config,
        Ok(None) => {
            warn!(
                configuration = name,
                "the finalizer webhook's MutatingWebhookConfiguration does not exist: the operator adds the finalizer itself"
            );
            return;
        }
        Err(error) => {
            warn!(configuration = name, %error, "could not read the finalizer webhook's configuration");
            return;
        }
    };
    let at = stale(&config, ca_pem);
    let Some(version) = config
        .metadata
        .resource_version
        .as_deref()
        .filter(|_| !at.is_empty())
    else {
        return;
    };
    let params = PatchParams::default();
    match api
        .patch(
            name,
            &params,
            &Patch::<()>::Json(patch(&at, version, ca_pem)),
        )
        .await
    {
        Ok(_) => info!(
            configuration = name,
            webhooks = at.len(),
            "set the finalizer webhook's caBundle"
        ),
        // Changed meanwhile (another replica, or Helm): the next look mends it.
        Err(error) => {
            warn!(configuration = name, %error, "could not set the finalizer webhook's caBundle")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, WebhookClientConfig};

    /// Each webhook's caBundle.
    type Bundles<'a> = &'a [Option<&'a [u8]>];

    fn config(bundles: Bundles) -> MutatingWebhookConfiguration {
        MutatingWebhookConfiguration {
            webhooks: Some(
                bundles
                    .iter()
                    .map(|bundle| MutatingWebhook {
                        client_config: WebhookClientConfig {
                            ca_bundle: bundle.map(|b| ByteString(b.to_vec())),
                            ..Default::default()
                        },
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn only_webhooks_without_the_ca_are_stale() {
        let cases: [(Bundles, Vec<usize>); 5] = [
            (&[], vec![]),
            (&[Some(b"ca")], vec![]),
            (&[None], vec![0]),
            (&[Some(b"old")], vec![0]),
            (&[Some(b"ca"), None, Some(b"old")], vec![1, 2]),
        ];
        for (bundles, expected) in cases {
            assert_eq!(stale(&config(bundles), b"ca"), expected, "{bundles:?}");
        }
    }

    #[test]
    fn the_patch_sets_the_ca_where_stale_if_nothing_changed_meanwhile() {
        let patch = serde_json::to_value(patch(&[1, 2], "42", b"ca")).unwrap();
        assert_eq!(
            patch,
            json!([
                { "op": "test", "path": "/metadata/resourceVersion", "value": "42" },
                { "op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": "Y2E=" },
                { "op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": "Y2E=" },
            ])
        );
    }
}
