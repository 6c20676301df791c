//! JSON values as DMS sends them (numbers as numbers, booleans and timestamps as strings,
//! decimals as strings or numbers) coerced to the configured column types. A value that cannot be
//! coerced is an error, never NULL: the decoder turns it into a malformed record.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde_json::Value;

use crate::config::spec::ColumnType;
use crate::pipeline::decimal::{Decimal, DecimalFitError};

/// One coerced, non-null value in the representation of its Arrow column.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Int(i32),
    Long(i64),
    Double(f64),
    Boolean(bool),
    /// Microseconds since the epoch, UTC.
    TimestampMicros(i64),
    /// Days since the epoch.
    Date(i32),
    /// Unscaled value at the column's scale.
    Decimal(i128),
}

/// Why a value does not fit its column; rendered into `expected <type>, found <value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoerceError {
    pub expected: String,
    /// The offending JSON value, compact, shortened if long.
    pub found: String,
    /// Extra detail, e.g. `out of range for a 32-bit integer`.
    pub detail: Option<String>,
}

impl std::fmt::Display for CoerceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "expected {}, found {}", self.expected, self.found)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

/// Longest rendering of an offending value inside a reason.
const FOUND_MAX_CHARS: usize = 80;

fn error(column_type: ColumnType, value: &Value, detail: Option<&str>) -> CoerceError {
    let rendered = value.to_string();
    let found = if rendered.chars().count() > FOUND_MAX_CHARS {
        let mut short: String = rendered.chars().take(FOUND_MAX_CHARS).collect();
        short.push('…');
        short
    } else {
        rendered
    };
    CoerceError {
        expected: column_type.to_string(),
        found,
        detail: detail.map(str::to_owned),
    }
}

/// Coerces a non-null JSON value to `column_type`. (NULL handling is the caller's: JSON null and
/// a missing field are both NULL.)
pub fn coerce(value: &Value, column_type: ColumnType) -> Result<Cell, CoerceError> {
    let fail = |detail: Option<&str>| error(column_type, value, detail);
    match column_type {
        ColumnType::String | ColumnType::Text => Ok(Cell::Text(match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            // json/jsonb and arrays arrive as nested JSON: keep their compact text.
            other => other.to_string(),
        })),
        ColumnType::Int => {
            let whole = integer(value).ok_or_else(|| fail(None))?;
            let whole = whole.ok_or_else(|| fail(Some("not a whole number")))?;
            i32::try_from(whole)
                .map(Cell::Int)
                .map_err(|_| fail(Some("out of range for a 32-bit integer")))
        }
        ColumnType::Long => {
            let whole = integer(value).ok_or_else(|| fail(None))?;
            let whole = whole.ok_or_else(|| {
                fail(Some(
                    "not a whole number or out of range for a 64-bit integer",
                ))
            })?;
            Ok(Cell::Long(whole))
        }
        ColumnType::Double | ColumnType::Real => match value {
            Value::Number(n) => n.as_f64().map(Cell::Double).ok_or_else(|| fail(None)),
            Value::String(s) => parse_double(s).map(Cell::Double).ok_or_else(|| fail(None)),
            _ => Err(fail(None)),
        },
        ColumnType::Decimal { precision, scale } => {
            let decimal = match value {
                Value::Number(n) => Decimal::parse(&n.to_string()),
                Value::String(s) => Decimal::parse(s.trim()),
                _ => None,
            }
            .ok_or_else(|| fail(None))?;
            decimal
                .to_unscaled(precision, scale)
                .map(Cell::Decimal)
                .map_err(|e| match e {
                    DecimalFitError::Inexact => fail(Some("more fractional digits than the scale")),
                    DecimalFitError::Overflow => fail(Some("too many digits for the precision")),
                })
        }
        ColumnType::Boolean => match value {
            Value::Bool(b) => Ok(Cell::Boolean(*b)),
            Value::String(s) => parse_bool(s).map(Cell::Boolean).ok_or_else(|| fail(None)),
            Value::Number(n) => match n.as_i64() {
                Some(1) => Ok(Cell::Boolean(true)),
                Some(0) => Ok(Cell::Boolean(false)),
                _ => Err(fail(None)),
            },
            _ => Err(fail(None)),
        },
        ColumnType::Timestamp => match value {
            Value::String(s) => parse_timestamp_micros(s)
                .map(Cell::TimestampMicros)
                .ok_or_else(|| fail(None)),
            _ => Err(fail(None)),
        },
        ColumnType::Date => match value {
            Value::String(s) => parse_date_days(s).map(Cell::Date).ok_or_else(|| fail(None)),
            _ => Err(fail(None)),
        },
    }
}

/// `None`: not numeric at all. `Some(None)`: numeric but not an i64 (fraction or range).
fn integer(value: &Value) -> Option<Option<i64>> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Some(Some(i));
            }
            if n.is_u64() {
                return Some(None);
            }
            Some(Decimal::parse(&n.to_string()).and_then(|d| d.to_i64()))
        }
        Value::String(s) => {
            let trimmed = s.trim();
            if let Ok(i) = trimmed.parse::<i64>() {
                return Some(Some(i));
            }
            Decimal::parse(trimmed).map(|d| d.to_i64())
        }
        _ => None,
    }
}

/// Numeric strings, and PostgreSQL's spellings of the non-finite doubles.
pub fn parse_double(text: &str) -> Option<f64> {
    let trimmed = text.trim();
    match trimmed {
        "NaN" => return Some(f64::NAN),
        "Infinity" | "+Infinity" => return Some(f64::INFINITY),
        "-Infinity" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    // Only plain decimal syntax: Rust's parser would also take "inf" or "nan".
    Decimal::parse(trimmed)?;
    trimmed.parse::<f64>().ok()
}

/// `true`/`false` and PostgreSQL's `t`/`f`, `1`/`0` (any case).
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "1" => Some(true),
        "false" | "f" | "0" => Some(false),
        _ => None,
    }
}

/// ISO 8601 / PostgreSQL timestamps: `2026-11-25T14:01:32.123456Z`, `2026-11-25 14:01:32`,
/// `2026-11-25 14:01:32.5+02`, `...+05:30`, `...+0530`, a bare date (midnight). No zone means UTC
/// (DMS converts to UTC). Fractions beyond microseconds are truncated.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let date_len = text.find(['T', 't', ' ']).unwrap_or(text.len());
    let date = NaiveDate::parse_from_str(&text[..date_len], "%Y-%m-%d").ok()?;
    if date_len == text.len() {
        return Some(Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN)));
    }
    let rest = &text[date_len + 1..];
    let (time, zone) = NaiveTime::parse_and_remainder(rest, "%H:%M:%S%.f")
        .or_else(|_| NaiveTime::parse_and_remainder(rest, "%H:%M"))
        .ok()?;
    let local = NaiveDateTime::new(date, time);
    let offset = parse_zone(zone.trim_start())?;
    offset
        .from_local_datetime(&local)
        .single()
        .map(|ts| ts.with_timezone(&Utc))
}

/// Microseconds since the epoch of [`parse_timestamp`].
pub fn parse_timestamp_micros(text: &str) -> Option<i64> {
    parse_timestamp(text).map(|ts| ts.timestamp_micros())
}

/// `Z`, empty (UTC), `+HH`, `+HHMM`, `+HH:MM`, `+HH:MM:SS` (PostgreSQL prints seconds for
/// historical zones).
fn parse_zone(zone: &str) -> Option<FixedOffset> {
    if zone.is_empty() || zone == "Z" || zone == "z" {
        return FixedOffset::east_opt(0);
    }
    let (sign, digits) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    let parts: Vec<&str> = if digits.contains(':') {
        digits.split(':').collect()
    } else if digits.len() == 4 {
        vec![&digits[..2], &digits[2..]]
    } else {
        vec![digits]
    };
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut seconds = 0_i32;
    for (part, unit) in parts.iter().zip([3600, 60, 1]) {
        seconds += part.parse::<i32>().ok()? * unit;
    }
    FixedOffset::east_opt(sign * seconds)
}

/// `YYYY-MM-DD` (a timestamp at exactly midnight is accepted too).
pub fn parse_date_days(text: &str) -> Option<i32> {
    let text = text.trim();
    let date = match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(date) => date,
        Err(_) => {
            let ts = parse_timestamp(text)?;
            if ts.time() != NaiveTime::MIN {
                return None;
            }
            ts.date_naive()
        }
    };
    i32::try_from(
        date.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1)?)
            .num_days(),
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ok(value: Value, ty: ColumnType) -> Cell {
        coerce(&value, ty).unwrap_or_else(|e| panic!("{value} as {ty}: {e}"))
    }

    fn err(value: Value, ty: ColumnType) -> String {
        match coerce(&value, ty) {
            Ok(cell) => panic!("{value} as {ty} should fail, got {cell:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn integers_accept_numbers_and_numeric_strings_but_not_fractions_or_overflow() {
        assert_eq!(ok(json!(42), ColumnType::Int), Cell::Int(42));
        assert_eq!(ok(json!("-7"), ColumnType::Int), Cell::Int(-7));
        assert_eq!(ok(json!(3.0), ColumnType::Int), Cell::Int(3));
        assert_eq!(
            ok(json!(9_000_000_000_i64), ColumnType::Long),
            Cell::Long(9_000_000_000)
        );
        assert_eq!(
            err(json!(1.5), ColumnType::Int),
            "expected integer, found 1.5 (not a whole number)"
        );
        assert_eq!(
            err(json!(2_147_483_648_i64), ColumnType::Int),
            "expected integer, found 2147483648 (out of range for a 32-bit integer)"
        );
        assert_eq!(
            err(json!("abc"), ColumnType::Int),
            "expected integer, found \"abc\""
        );
        assert_eq!(
            err(json!(true), ColumnType::Long),
            "expected long, found true"
        );
        assert!(
            err(json!(u64::MAX), ColumnType::Long)
                .starts_with("expected long, found 18446744073709551615")
        );
    }

    #[test]
    fn doubles_accept_numbers_numeric_strings_and_postgres_non_finite_spellings() {
        assert_eq!(ok(json!(37.05), ColumnType::Double), Cell::Double(37.05));
        assert_eq!(ok(json!(12), ColumnType::Double), Cell::Double(12.0));
        assert_eq!(ok(json!("1e3"), ColumnType::Real), Cell::Double(1000.0));
        assert_eq!(
            ok(json!("-Infinity"), ColumnType::Double),
            Cell::Double(f64::NEG_INFINITY)
        );
        assert!(matches!(ok(json!("NaN"), ColumnType::Double), Cell::Double(x) if x.is_nan()));
        assert_eq!(
            err(json!("abc"), ColumnType::Double),
            "expected double, found \"abc\""
        );
        assert_eq!(
            err(json!("inf"), ColumnType::Double),
            "expected double, found \"inf\""
        );
        assert_eq!(
            err(json!([1]), ColumnType::Double),
            "expected double, found [1]"
        );
    }

    #[test]
    fn decimals_are_exact_from_strings_and_number_text() {
        let ty = ColumnType::Decimal {
            precision: 10,
            scale: 2,
        };
        assert_eq!(ok(json!("12345678.90"), ty), Cell::Decimal(1_234_567_890));
        assert_eq!(ok(json!(0.1), ty), Cell::Decimal(10));
        assert_eq!(ok(json!(7), ty), Cell::Decimal(700));
        assert_eq!(
            err(json!("1.234"), ty),
            "expected decimal(10,2), found \"1.234\" (more fractional digits than the scale)"
        );
        assert_eq!(
            err(json!("123456789.00"), ty),
            "expected decimal(10,2), found \"123456789.00\" (too many digits for the precision)"
        );
        assert_eq!(
            err(json!("12,5"), ty),
            "expected decimal(10,2), found \"12,5\""
        );
    }

    #[test]
    fn booleans_accept_postgres_and_dms_spellings() {
        for (value, expected) in [
            (json!(true), true),
            (json!("false"), false),
            (json!("t"), true),
            (json!("F"), false),
            (json!("1"), true),
            (json!(0), false),
        ] {
            assert_eq!(ok(value, ColumnType::Boolean), Cell::Boolean(expected));
        }
        assert_eq!(
            err(json!("yes"), ColumnType::Boolean),
            "expected boolean, found \"yes\""
        );
        assert_eq!(
            err(json!(2), ColumnType::Boolean),
            "expected boolean, found 2"
        );
    }

    #[test]
    fn timestamps_accept_iso_and_postgres_forms_with_or_without_zone() {
        let expected = 1_795_615_292_123_456_i64;
        for text in [
            "2026-11-25T14:01:32.123456Z",
            "2026-11-25 14:01:32.123456",
            "2026-11-25T16:01:32.123456+02",
            "2026-11-25T16:01:32.123456+02:00",
            "2026-11-25T12:01:32.123456-0200",
            "2026-11-25 14:01:32.123456789",
        ] {
            assert_eq!(
                ok(json!(text), ColumnType::Timestamp),
                Cell::TimestampMicros(expected),
                "{text}"
            );
        }
        assert_eq!(
            ok(json!("2026-11-25 14:01"), ColumnType::Timestamp),
            Cell::TimestampMicros(1_795_615_260_000_000)
        );
        assert_eq!(
            ok(json!("2026-11-25"), ColumnType::Timestamp),
            Cell::TimestampMicros(1_795_564_800_000_000)
        );
        for bad in [
            "2026-13-01 00:00:00",
            "yesterday",
            "2026-11-25T25:00:00",
            "2026-11-25 14:01:32 CET",
            "infinity",
        ] {
            assert!(
                coerce(&json!(bad), ColumnType::Timestamp).is_err(),
                "{bad} must be rejected"
            );
        }
        assert_eq!(
            err(json!(1_795_615_292), ColumnType::Timestamp),
            "expected timestamp, found 1795615292"
        );
    }

    #[test]
    fn dates_accept_iso_dates_and_midnight_timestamps_only() {
        assert_eq!(
            ok(json!("2026-11-25"), ColumnType::Date),
            Cell::Date(20_782)
        );
        assert_eq!(ok(json!("1969-12-31"), ColumnType::Date), Cell::Date(-1));
        assert_eq!(
            ok(json!("2026-11-25T00:00:00Z"), ColumnType::Date),
            Cell::Date(20_782)
        );
        assert_eq!(
            err(json!("2026-11-25 10:00:00"), ColumnType::Date),
            "expected date, found \"2026-11-25 10:00:00\""
        );
    }

    #[test]
    fn strings_take_any_scalar_as_text_and_nested_json_as_compact_text() {
        assert_eq!(
            ok(json!("abc"), ColumnType::String),
            Cell::Text("abc".into())
        );
        assert_eq!(ok(json!(12.5), ColumnType::Text), Cell::Text("12.5".into()));
        assert_eq!(
            ok(json!(false), ColumnType::String),
            Cell::Text("false".into())
        );
        assert_eq!(
            ok(json!({"a": 1}), ColumnType::String),
            Cell::Text("{\"a\":1}".into())
        );
    }

    #[test]
    fn long_offending_values_are_shortened_in_the_message() {
        let message = err(json!("x".repeat(500)), ColumnType::Int);
        assert!(message.chars().count() < 120, "{message}");
        assert!(message.contains('…'));
    }
}
