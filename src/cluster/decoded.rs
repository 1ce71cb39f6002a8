//! Tolerant decoding of the operator's own kinds.
//!
//! A LIST of a kind is decoded as one document: a single object that the
//! Rust type cannot hold (a value admission let through, a field written by
//! a newer version) would otherwise fail the whole list, and with it every
//! other object of the kind. Each item is decoded on its own here; one that
//! fails is kept as its metadata and the reason, so the watch goes on and
//! the object can be named.

use std::{borrow::Cow, fmt};

use kube::{Resource, api::ObjectMeta};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};

/// An object that could not be decoded into its Rust type.
#[derive(Clone, Debug)]
pub struct Undecodable {
    pub meta: ObjectMeta,
    /// Where and why decoding failed, e.g. `spec.lifetime: invalid value`.
    pub reason: String,
}

impl fmt::Display for Undecodable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// An object of kind `K` as the API server sent it: decoded, or not.
#[derive(Clone, Debug)]
pub struct Decoded<K>(pub Result<K, Box<Undecodable>>);

impl<'de, K: DeserializeOwned> Deserialize<'de> for Decoded<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        match serde_path_to_error::deserialize::<_, K>(&value) {
            Ok(object) => Ok(Self(Ok(object))),
            Err(error) => {
                // Without readable metadata the object cannot even be named
                // or tracked by the watch; that is the API server's promise,
                // so failing the whole response is right.
                let meta = value
                    .get("metadata")
                    .map(ObjectMeta::deserialize)
                    .transpose()
                    .map_err(serde::de::Error::custom)?
                    .unwrap_or_default();
                let reason = format!("{}: {}", error.path(), error.inner());
                Ok(Self(Err(Box::new(Undecodable { meta, reason }))))
            }
        }
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Decoded<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &()) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match &self.0 {
            Ok(object) => object.meta(),
            Err(undecodable) => &undecodable.meta,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.0 {
            Ok(object) => object.meta_mut(),
            Err(undecodable) => &mut undecodable.meta,
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::core::ObjectList;
    use serde_json::json;

    use super::*;
    use crate::api::AccessToken;

    fn token(name: &str, spec: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "tokensmith.dev/v1alpha1",
            "kind": "AccessToken",
            "metadata": {"name": name, "namespace": "team-a", "resourceVersion": "7"},
            "spec": spec,
        })
    }

    #[test]
    fn one_bad_item_does_not_fail_the_list() {
        let list = json!({
            "apiVersion": "tokensmith.dev/v1alpha1",
            "kind": "AccessTokenList",
            "metadata": {"resourceVersion": "9"},
            "items": [
                token("good", json!({"scopes": ["read"]})),
                token("bad", json!({"scopes": "not a list"})),
                token("also-good", json!({})),
            ],
        });
        let list: ObjectList<Decoded<AccessToken>> =
            serde_json::from_value(list).expect("the list decodes");
        let names: Vec<_> = list
            .items
            .iter()
            .map(|d| (d.meta().name.clone().unwrap(), d.0.is_ok()))
            .collect();
        assert_eq!(
            names,
            [
                ("good".to_string(), true),
                ("bad".to_string(), false),
                ("also-good".to_string(), true)
            ]
        );
        let Err(bad) = &list.items[1].0 else {
            unreachable!()
        };
        assert!(bad.reason.starts_with("spec.scopes"), "{}", bad.reason);
        assert_eq!(bad.meta.resource_version.as_deref(), Some("7"));
    }

    #[test]
    fn an_object_without_readable_metadata_is_an_error() {
        let broken = json!({"metadata": {"name": 5}, "spec": {}});
        assert!(serde_json::from_value::<Decoded<AccessToken>>(broken).is_err());
    }
}
