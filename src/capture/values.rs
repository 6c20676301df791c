//! PostgreSQL text-format values to JSON, the way DMS writes them: integers and numerics as
//! numbers, booleans as the strings "true"/"false", timestamps as ISO 8601 strings, everything
//! else as its text. pgoutput (text mode) and the snapshot (`col::text`) both hand us the type's
//! output-function text, so one conversion serves both.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde_json::Value;

/// Type OIDs from `pg_type.dat`; stable across PostgreSQL versions.
pub(crate) mod oid {
    pub const BOOL: u32 = 16;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const OID: u32 = 26;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const NUMERIC: u32 = 1700;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
}

/// Converts one non-null value. Never fails: text that does not parse as its type (e.g.
/// `Infinity`, `NaN`, a non-ISO DateStyle) is passed on as a string, for the processor to
/// coerce or quarantine with a clear reason.
pub(crate) fn text_to_json(type_oid: u32, text: &str) -> Value {
    match type_oid {
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => integer(text),
        oid::FLOAT4 | oid::FLOAT8 => double(text),
        oid::NUMERIC => numeric(text),
        oid::BOOL => match text {
            "t" | "true" => Value::String("true".into()),
            "f" | "false" => Value::String("false".into()),
            other => Value::String(other.into()),
        },
        oid::TIMESTAMPTZ => timestamptz(text),
        oid::TIMESTAMP => timestamp(text),
        _ => Value::String(text.into()),
    }
}

/// Converts an optional value: SQL NULL becomes JSON null.
pub(crate) fn to_json(type_oid: u32, text: Option<&str>) -> Value {
    match text {
        Some(text) => text_to_json(type_oid, text),
        None => Value::Null,
    }
}

fn integer(text: &str) -> Value {
    match text.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => numeric(text),
    }
}

/// float4/float8 text as a JSON number (a double holds either exactly).
fn double(text: &str) -> Value {
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(text.into())),
        _ => Value::String(text.into()),
    }
}

/// Numeric text as a JSON number: an integer when it is one and fits, otherwise a double
/// (DMS writes numeric as double) — but only when the double holds exactly the same decimal
/// value; a numeric beyond a double's precision stays its exact text rather than being rounded.
/// NaN and infinities have no JSON number form and stay text too.
fn numeric(text: &str) -> Value {
    if let Ok(n) = text.parse::<i64>() {
        return Value::from(n);
    }
    let exact = |f: f64| canonical_decimal(&f.to_string()) == canonical_decimal(text);
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && exact(f) => double(text),
        _ => Value::String(text.into()),
    }
}

/// A decimal's digits without insignificant zeros, to compare values written differently
/// (`2.50` and `2.5`). `None` for anything but plain decimal notation.
fn canonical_decimal(text: &str) -> Option<String> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    if int.is_empty() && frac.is_empty() {
        return Some("0".into());
    }
    let sign = if negative { "-" } else { "" };
    Some(format!(
        "{sign}{}.{frac}",
        if int.is_empty() { "0" } else { int }
    ))
}

/// `2024-03-01 12:30:45.5+01` → `2024-03-01T11:30:45.500000Z` (UTC, microseconds).
fn timestamptz(text: &str) -> Value {
    // PostgreSQL prints the offset as +HH, +HH:MM or +HH:MM:SS; chrono's %#z takes the first two.
    match DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z") {
        Ok(ts) => Value::String(iso_utc(ts.with_timezone(&Utc))),
        Err(_) => Value::String(text.into()),
    }
}

/// `2024-03-01 12:30:45.5` → `2024-03-01T12:30:45.500000` (no zone: the column has none).
fn timestamp(text: &str) -> Value {
    match NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f") {
        Ok(ts) => Value::String(ts.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()),
        Err(_) => Value::String(text.into()),
    }
}

fn iso_utc(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_become_json_numbers() {
        assert_eq!(text_to_json(oid::INT4, "42"), json!(42));
        assert_eq!(text_to_json(oid::INT2, "-7"), json!(-7));
        assert_eq!(
            text_to_json(oid::INT8, "9223372036854775807"),
            json!(9223372036854775807i64)
        );
    }

    #[test]
    fn numerics_and_floats_become_json_numbers() {
        assert_eq!(text_to_json(oid::NUMERIC, "12.50"), json!(12.5));
        assert_eq!(text_to_json(oid::NUMERIC, "100"), json!(100));
        assert_eq!(text_to_json(oid::FLOAT8, "-0.125"), json!(-0.125));
        assert_eq!(text_to_json(oid::FLOAT4, "1e+10"), json!(1e10));
    }

    #[test]
    fn a_numeric_a_double_cannot_hold_exactly_stays_exact_text() {
        assert_eq!(
            text_to_json(oid::NUMERIC, "12345678901234567890.123456789"),
            json!("12345678901234567890.123456789")
        );
        assert_eq!(text_to_json(oid::NUMERIC, "0.1"), json!(0.1));
        assert_eq!(text_to_json(oid::NUMERIC, "-0.000"), json!(-0.0));
    }

    #[test]
    fn numbers_without_a_json_form_stay_text() {
        assert_eq!(text_to_json(oid::NUMERIC, "NaN"), json!("NaN"));
        assert_eq!(text_to_json(oid::FLOAT8, "Infinity"), json!("Infinity"));
        assert_eq!(text_to_json(oid::FLOAT8, "-Infinity"), json!("-Infinity"));
    }

    #[test]
    fn booleans_become_strings_as_dms_writes_them() {
        assert_eq!(text_to_json(oid::BOOL, "t"), json!("true"));
        assert_eq!(text_to_json(oid::BOOL, "f"), json!("false"));
    }

    #[test]
    fn timestamptz_is_normalised_to_utc_iso() {
        assert_eq!(
            text_to_json(oid::TIMESTAMPTZ, "2024-03-01 12:30:45.5+01"),
            json!("2024-03-01T11:30:45.500000Z")
        );
        assert_eq!(
            text_to_json(oid::TIMESTAMPTZ, "2024-03-01 12:30:45+05:30"),
            json!("2024-03-01T07:00:45.000000Z")
        );
        assert_eq!(
            text_to_json(oid::TIMESTAMPTZ, "2024-12-31 23:59:59.999999+00"),
            json!("2024-12-31T23:59:59.999999Z")
        );
    }

    #[test]
    fn timestamp_without_zone_keeps_its_wall_clock() {
        assert_eq!(
            text_to_json(oid::TIMESTAMP, "2024-03-01 12:30:45.123"),
            json!("2024-03-01T12:30:45.123000")
        );
    }

    #[test]
    fn unparsable_timestamps_pass_through_as_text() {
        assert_eq!(
            text_to_json(oid::TIMESTAMPTZ, "infinity"),
            json!("infinity")
        );
        assert_eq!(
            text_to_json(oid::TIMESTAMP, "03/01/2024 12:30"),
            json!("03/01/2024 12:30")
        );
    }

    #[test]
    fn other_types_are_their_text_and_null_is_null() {
        assert_eq!(text_to_json(25, "héllo"), json!("héllo"));
        assert_eq!(text_to_json(1082, "2024-03-01"), json!("2024-03-01"));
        assert_eq!(text_to_json(3802, "{\"a\": 1}"), json!("{\"a\": 1}"));
        assert_eq!(to_json(oid::INT4, None), Value::Null);
    }
}
