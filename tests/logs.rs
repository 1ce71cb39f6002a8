//! JSON logs, as a log pipeline reads them: every line one JSON object with
//! each key once, and every line a reconcile writes names the resource's
//! kind, namespace and name.

mod support;

use std::{collections::HashSet, time::Duration};

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::json;
use support::{
    TestNamespace, control_plane,
    operator::Operator,
    resources::{apply, token_issuer, wait_reason},
};
use tokensmith::api::AccessToken;

/// The keys of a JSON object, refusing one that holds a key twice (which
/// `serde_json::Value` would quietly keep the last of).
struct Keys(Vec<String>);

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Once;
        impl<'de> Visitor<'de> for Once {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let (mut keys, mut seen) = (Vec::new(), HashSet::new());
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format!("key {key:?} twice")));
                    }
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        deserializer.deserialize_map(Once)
    }
}

#[tokio::test]
async fn json_lines_have_unique_keys_and_name_their_resource() {
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "logs").await;
    let operator = Operator::start(&["--log-format", "json"]);
    operator.http().await;
    token_issuer(&client, &ns.name, "signer", json!({})).await;
    let tokens = kube::Api::<AccessToken>::namespaced(client.clone(), &ns.name);
    apply(
        &tokens,
        "logged",
        json!({ "spec": { "issuerRef": { "kind": "TokenIssuer", "name": "signer" } } }),
    )
    .await;
    wait_reason(&tokens, "logged", "Issued").await;

    // The status can be visible before the reconcile that wrote it has
    // logged its end: read the log until it holds the token's lines (or
    // for 30 s at most), then check all of it. Only whole lines count: the
    // operator may be in the middle of writing the last one.
    let about = |text: &str| {
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|value| {
                (value["message"] == "token minted" || value["message"] == "reconciled")
                    && value["namespace"] == ns.name.as_str()
            })
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let mut text = operator.log_text();
        text.truncate(text.rfind('\n').map_or(0, |end| end + 1));
        if about(&text) >= 2 || tokio::time::Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut about_the_token = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let keys = serde_json::from_str::<Keys>(line)
            .unwrap_or_else(|e| panic!("not one JSON object with unique keys ({e}): {line}"))
            .0;
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["timestamp", "level", "message"] {
            assert!(keys.iter().any(|k| k == key), "no {key}: {line}");
        }
        if value["message"] == "token minted" || value["message"] == "reconciled" {
            if value["namespace"] == ns.name.as_str() {
                about_the_token += 1;
                assert_eq!(value["kind"], "AccessToken", "{line}");
                assert_eq!(value["name"], "logged", "{line}");
            }
            for key in ["kind", "namespace", "name"] {
                assert!(keys.iter().any(|k| k == key), "no {key}: {line}");
            }
        }
    }
    assert!(
        about_the_token >= 2,
        "the token's reconciles were logged:\n{text}"
    );
}
