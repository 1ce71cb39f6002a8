//! Durations as users write them (`90m`, `720h`), kept as written so GitOps
//! diffs stay empty, parsed where they are used.

use std::{fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A duration as written by the user, in Go's notation (`90m`, `1h30m`, `720h`).
///
/// The text is kept exactly as written, so the operator never rewrites what
/// GitOps tools compare; it is parsed where it is used.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Duration(String);

/// The schema pattern: one or more `<number><unit>` groups, unit one of ms, s, m, h.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 64,
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// Why a duration's text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason} (write it like 90s, 30m, 1h30m or 720h)")]
pub struct DurationError {
    text: String,
    reason: &'static str,
}

impl Duration {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parsed value; the schema already guarantees the format, so this
    /// only fails for objects that bypassed validation or overflow.
    pub fn to_std(&self) -> Result<std::time::Duration, DurationError> {
        parse_go_duration(&self.0)
    }
}

impl From<&str> for Duration {
    fn from(text: &str) -> Self {
        Self(text.to_string())
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_go_duration(text)?;
        Ok(Self(text.to_string()))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Parses the subset of Go's `time.ParseDuration` the schema admits.
pub fn parse_go_duration(text: &str) -> Result<std::time::Duration, DurationError> {
    let fail = |reason| DurationError {
        text: text.to_string(),
        reason,
    };
    if text.is_empty() {
        return Err(fail("it is empty"));
    }
    let mut total_nanos: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| fail("a number has no unit"))?;
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            _ => return Err(fail("units are ms, s, m and h")),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() || (number.contains('.') && fraction.is_empty()) {
            return Err(fail("a number is malformed"));
        }
        let whole: u128 = whole.parse().map_err(|_| fail("a number is too large"))?;
        let mut nanos = whole
            .checked_mul(unit_nanos)
            .ok_or_else(|| fail("it is too large"))?;
        if !fraction.is_empty() {
            let digits = fraction.len().min(18) as u32;
            let fraction: u128 = fraction[..digits as usize]
                .parse()
                .map_err(|_| fail("a number is malformed"))?;
            nanos += fraction * unit_nanos / 10u128.pow(digits);
        }
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or_else(|| fail("it is too large"))?;
        rest = after;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| fail("it is too large"))?;
    Ok(std::time::Duration::new(
        secs,
        (total_nanos % 1_000_000_000) as u32,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    #[test]
    fn parses_go_durations() {
        for (text, expected) in [
            ("90s", Std::from_secs(90)),
            ("30m", Std::from_secs(1800)),
            ("1h30m", Std::from_secs(5400)),
            ("720h", Std::from_secs(720 * 3600)),
            ("1.5h", Std::from_secs(5400)),
            ("250ms", Std::from_millis(250)),
            ("1h0m0s", Std::from_secs(3600)),
        ] {
            assert_eq!(parse_go_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn rejects_what_go_would_reject() {
        for text in ["", "10", "h", "1d", "1.h", ".5h", "1h 30m", "-1h", "1e3s"] {
            assert!(
                parse_go_duration(text).is_err(),
                "{text:?} should be rejected"
            );
        }
    }

    #[test]
    fn rejects_overflow_instead_of_wrapping() {
        assert!(parse_go_duration("99999999999999999999999999999999999h").is_err());
    }

    #[test]
    fn keeps_the_text_as_written() {
        let d: Duration = "60m".parse().unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"60m\"");
    }

    #[test]
    fn error_names_the_text_and_the_fix() {
        let message = parse_go_duration("1d").unwrap_err().to_string();
        assert!(
            message.contains("\"1d\"") && message.contains("720h"),
            "{message}"
        );
    }
}
