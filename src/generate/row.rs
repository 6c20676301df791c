//! Values as the generator writes them, keys, and whole rows (one value per configured column).

use std::fmt;

use chrono::{NaiveDate, NaiveDateTime, SecondsFormat};
use serde::Serialize;

/// An exact decimal `unscaled × 10^-scale`, for `decimal(p,s)` columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    pub unscaled: i128,
    pub scale: u8,
}

impl Decimal {
    pub fn to_f64(self) -> f64 {
        self.unscaled as f64 / 10f64.powi(i32::from(self.scale))
    }

    /// Digits left of the decimal point (0 for |x| < 1), what a `decimal(p,s)` column bounds by `p - s`.
    pub fn integer_digits(self) -> u32 {
        let whole = self.unscaled.unsigned_abs() / 10u128.pow(u32::from(self.scale));
        if whole == 0 { 0 } else { whole.ilog10() + 1 }
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.unscaled < 0 { "-" } else { "" };
        let digits = self.unscaled.unsigned_abs().to_string();
        let scale = usize::from(self.scale);
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{whole}.{fraction}")
    }
}

/// One column value. Its variant follows the column's type (see `TableShape::conform`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    Timestamp(NaiveDateTime),
    Date(NaiveDate),
    Decimal(Decimal),
}

impl Value {
    pub fn text(s: impl Into<String>) -> Value {
        Value::Text(s.into())
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The literal PostgreSQL parses back into the same value (sent as a text parameter and cast).
    pub fn sql_literal(&self) -> Option<String> {
        Some(match self {
            Value::Null => return None,
            Value::Int(v) => v.to_string(),
            // Rust prints the shortest text that reads back as the same double; PostgreSQL's
            // float8 input is correctly rounded, so the stored value is exactly this one.
            Value::Float(v) => format!("{v}"),
            Value::Text(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Timestamp(ts) => ts.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
            Value::Date(d) => d.format("%Y-%m-%d").to_string(),
            Value::Decimal(d) => d.to_string(),
        })
    }

    /// The text form the processor's `allowed_values`, `regex` and `length` rules look at
    /// (the same as `pipeline::values`): doubles printed shortest, booleans `true`/`false`,
    /// timestamps RFC 3339 in UTC, decimals with their scale.
    pub fn rule_text(&self) -> Option<String> {
        Some(match self {
            Value::Null => return None,
            Value::Timestamp(ts) => ts.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true),
            other => other.sql_literal()?,
        })
    }

    /// The value as a number for `range`: `None` for NULL, `Some(None)` when it is not a number.
    pub fn numeric(&self) -> Option<Option<f64>> {
        Some(match self {
            Value::Null => return None,
            Value::Int(v) => Some(*v as f64),
            Value::Float(v) => Some(*v),
            Value::Decimal(d) => Some(d.to_f64()),
            Value::Text(s) => parse_number(s.trim()),
            Value::Bool(_) | Value::Timestamp(_) | Value::Date(_) => None,
        })
    }
}

/// A plain decimal number (`-12`, `3.5`, `.5`), as the processor reads numeric strings.
fn parse_number(text: &str) -> Option<f64> {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits_only = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits_only(whole) || !digits_only(fraction) {
        return None;
    }
    text.parse().ok()
}

/// A primary-key value: what identifies a row across its versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum Key {
    Int(i64),
    Text(String),
}

impl Key {
    /// The key as the value of its column.
    pub fn to_value(&self) -> Value {
        match self {
            Key::Int(v) => Value::Int(*v),
            Key::Text(s) => Value::Text(s.clone()),
        }
    }

    /// The key of a primary-key value; NULL has none.
    pub fn from_value(value: &Value) -> Option<Key> {
        match value {
            Value::Null => None,
            Value::Int(v) => Some(Key::Int(*v)),
            other => other.sql_literal().map(Key::Text),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(v) => write!(f, "{v}"),
            Key::Text(s) => f.write_str(s),
        }
    }
}

/// A full row: one value per configured column, in config order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    pub fn nulls(width: usize) -> Row {
        Row(vec![Value::Null; width])
    }

    pub fn get(&self, column: usize) -> &Value {
        self.0.get(column).unwrap_or(&Value::Null)
    }

    pub fn set(&mut self, column: usize, value: Value) {
        if let Some(slot) = self.0.get_mut(column) {
            *slot = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_print_with_their_scale() {
        assert_eq!(
            Decimal {
                unscaled: 1250,
                scale: 2
            }
            .to_string(),
            "12.50"
        );
        assert_eq!(
            Decimal {
                unscaled: -5,
                scale: 3
            }
            .to_string(),
            "-0.005"
        );
        assert_eq!(
            Decimal {
                unscaled: 7,
                scale: 0
            }
            .to_string(),
            "7"
        );
        assert_eq!(
            Decimal {
                unscaled: 123_456,
                scale: 2
            }
            .integer_digits(),
            4
        );
        assert_eq!(
            Decimal {
                unscaled: 5,
                scale: 2
            }
            .integer_digits(),
            0
        );
    }

    #[test]
    fn rule_text_matches_the_processor_text_form() {
        assert_eq!(Value::Float(1.0).rule_text().as_deref(), Some("1"));
        assert_eq!(Value::Float(37.05).rule_text().as_deref(), Some("37.05"));
        assert_eq!(Value::Bool(false).rule_text().as_deref(), Some("false"));
        let ts = NaiveDate::from_ymd_opt(2026, 11, 25)
            .and_then(|d| d.and_hms_micro_opt(14, 1, 32, 123_456));
        assert_eq!(
            ts.map(Value::Timestamp)
                .and_then(|v| v.rule_text())
                .as_deref(),
            Some("2026-11-25T14:01:32.123456Z")
        );
        assert_eq!(Value::Null.rule_text(), None);
    }

    #[test]
    fn numeric_strings_are_numbers_and_other_strings_are_not() {
        assert_eq!(Value::text(" 5.5 ").numeric(), Some(Some(5.5)));
        assert_eq!(Value::text("-12").numeric(), Some(Some(-12.0)));
        assert_eq!(Value::text("abc").numeric(), Some(None));
        assert_eq!(Value::text("").numeric(), Some(None));
        assert_eq!(Value::text("1e5").numeric(), Some(None));
        assert_eq!(Value::Null.numeric(), None);
    }
}
