//! Points in time as users write them (`expiresAt`), kept as text.

use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A point in time as the user wrote it (RFC 3339), e.g. `expiresAt`.
///
/// Kept as text and parsed where it is used: the API server admits times
/// the operator's timestamp type cannot hold (it ends at 9999-12-30), and
/// one such object must not make the whole list of its kind unreadable. A
/// value that does not parse is judged in the reconcile, with a condition.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FixedTime(String);

impl JsonSchema for FixedTime {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FixedTime".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

impl FixedTime {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The time, or why it cannot be used.
    pub fn parse(&self) -> Result<Timestamp, String> {
        self.0.parse().map_err(|e| {
            format!(
                "expiresAt {:?} is not a time the operator can use: {e}",
                self.0
            )
        })
    }
}

impl From<&str> for FixedTime {
    fn from(text: &str) -> Self {
        Self(text.to_string())
    }
}

impl std::fmt::Debug for FixedTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::fmt::Display for FixedTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_text_and_judges_it_when_used() {
        let ok = FixedTime::from("2030-01-01T00:00:00Z");
        assert_eq!(ok.parse().unwrap().to_string(), "2030-01-01T00:00:00Z");
        let too_late: FixedTime = serde_json::from_str("\"9999-12-31T23:59:59Z\"").unwrap();
        assert_eq!(too_late.as_str(), "9999-12-31T23:59:59Z");
        assert!(too_late.parse().is_err());
        assert_eq!(
            serde_json::to_string(&too_late).unwrap(),
            "\"9999-12-31T23:59:59Z\""
        );
    }
}
