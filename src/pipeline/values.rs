//! Typed, per-row access to one Arrow column of a table, and each value's text form. The text
//! form is what `allowed_values`, `regex`, `length` and `unique` compare and what reasons show,
//! so it is defined once here.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat};
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array,
    Int64Array, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::buffer::NullBuffer;
use deltalake::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType,
};

use super::decimal::{Decimal, format_unscaled};

/// A column of one of the types a table column can have (see `ColumnType::arrow_type`).
#[derive(Clone, Copy)]
pub(crate) enum ColumnValues<'a> {
    Utf8(&'a StringArray),
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
    Float64(&'a Float64Array),
    Boolean(&'a BooleanArray),
    Timestamp(&'a TimestampMicrosecondArray),
    Date(&'a Date32Array),
    Decimal(&'a Decimal128Array, i8),
}

/// A numeric view of a value, for `range`.
pub(crate) enum Numeric {
    Float(f64),
    Exact(Decimal),
}

impl<'a> ColumnValues<'a> {
    /// None when the array's type is not one a table column can have.
    pub(crate) fn new(array: &'a ArrayRef) -> Option<ColumnValues<'a>> {
        Some(match array.data_type() {
            DataType::Utf8 => ColumnValues::Utf8(array.as_string::<i32>()),
            DataType::Int32 => ColumnValues::Int32(array.as_primitive::<Int32Type>()),
            DataType::Int64 => ColumnValues::Int64(array.as_primitive::<Int64Type>()),
            DataType::Float64 => ColumnValues::Float64(array.as_primitive::<Float64Type>()),
            DataType::Boolean => ColumnValues::Boolean(array.as_boolean()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                ColumnValues::Timestamp(array.as_primitive::<TimestampMicrosecondType>())
            }
            DataType::Date32 => ColumnValues::Date(array.as_primitive::<Date32Type>()),
            DataType::Decimal128(_, scale) => {
                ColumnValues::Decimal(array.as_primitive::<Decimal128Type>(), *scale)
            }
            _ => return None,
        })
    }

    fn array(&self) -> &dyn Array {
        match self {
            ColumnValues::Utf8(a) => *a,
            ColumnValues::Int32(a) => *a,
            ColumnValues::Int64(a) => *a,
            ColumnValues::Float64(a) => *a,
            ColumnValues::Boolean(a) => *a,
            ColumnValues::Timestamp(a) => *a,
            ColumnValues::Date(a) => *a,
            ColumnValues::Decimal(a, _) => *a,
        }
    }

    pub(crate) fn is_null(&self, row: usize) -> bool {
        self.array().is_null(row)
    }

    /// The column's validity, None when it has no NULLs.
    pub(crate) fn nulls(self) -> Option<&'a NullBuffer> {
        match self {
            ColumnValues::Utf8(a) => a.nulls(),
            ColumnValues::Int32(a) => a.nulls(),
            ColumnValues::Int64(a) => a.nulls(),
            ColumnValues::Float64(a) => a.nulls(),
            ColumnValues::Boolean(a) => a.nulls(),
            ColumnValues::Timestamp(a) => a.nulls(),
            ColumnValues::Date(a) => a.nulls(),
            ColumnValues::Decimal(a, _) => a.nulls(),
        }
    }

    pub(crate) fn is_string(&self) -> bool {
        matches!(self, ColumnValues::Utf8(_))
    }

    /// The value's text form; None for NULL.
    pub(crate) fn text(&self, row: usize) -> Option<Cow<'a, str>> {
        if self.is_null(row) {
            return None;
        }
        Some(match self {
            ColumnValues::Utf8(a) => Cow::Borrowed(a.value(row)),
            ColumnValues::Int32(a) => Cow::Owned(a.value(row).to_string()),
            ColumnValues::Int64(a) => Cow::Owned(a.value(row).to_string()),
            ColumnValues::Float64(a) => Cow::Owned(float_text(a.value(row))),
            ColumnValues::Boolean(a) => Cow::Borrowed(if a.value(row) { "true" } else { "false" }),
            ColumnValues::Timestamp(a) => Cow::Owned(timestamp_text(a.value(row))),
            ColumnValues::Date(a) => Cow::Owned(date_text(a.value(row))),
            ColumnValues::Decimal(a, scale) => Cow::Owned(format_unscaled(a.value(row), *scale)),
        })
    }

    /// Appends the value's text form (as [`ColumnValues::text`] gives it) to `out`, without an
    /// allocation for integers; false for NULL.
    pub(crate) fn write_text(&self, row: usize, out: &mut String) -> bool {
        if self.is_null(row) {
            return false;
        }
        match self {
            ColumnValues::Int32(a) => out.push_str(itoa::Buffer::new().format(a.value(row))),
            ColumnValues::Int64(a) => out.push_str(itoa::Buffer::new().format(a.value(row))),
            other => {
                if let Some(text) = other.text(row) {
                    out.push_str(&text);
                }
            }
        }
        true
    }

    /// The value as a number, for numeric and decimal columns and numeric strings. The outer
    /// None is NULL; `Some(None)` is a value that is not a number.
    pub(crate) fn numeric(&self, row: usize) -> Option<Option<Numeric>> {
        if self.is_null(row) {
            return None;
        }
        Some(match self {
            ColumnValues::Int32(a) => Some(Numeric::Float(f64::from(a.value(row)))),
            // Bounds are doubles; i64 beyond 2^53 loses nothing that a double bound could tell apart.
            ColumnValues::Int64(a) => Some(Numeric::Float(a.value(row) as f64)),
            ColumnValues::Float64(a) => Some(Numeric::Float(a.value(row))),
            ColumnValues::Decimal(a, scale) => {
                Some(Numeric::Exact(Decimal::from_unscaled(a.value(row), *scale)))
            }
            // Exact, like decimals: "90.0000000000000001" is above 90.
            ColumnValues::Utf8(a) => Decimal::parse(a.value(row).trim()).map(Numeric::Exact),
            ColumnValues::Boolean(_) | ColumnValues::Timestamp(_) | ColumnValues::Date(_) => None,
        })
    }
}

/// Doubles as Rust prints them (shortest round trip); non-finite values as PostgreSQL spells them.
pub(crate) fn float_text(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        format!("{value}")
    }
}

/// `2026-11-25T14:01:32.123456Z` (fraction omitted when zero).
pub(crate) fn timestamp_text(micros: i64) -> String {
    match DateTime::from_timestamp_micros(micros) {
        Some(ts) => ts.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => format!("{micros}µs"),
    }
}

/// `2026-11-25`.
pub(crate) fn date_text(days: i32) -> String {
    match DateTime::from_timestamp(i64::from(days) * 86_400, 0) {
        Some(ts) => ts.date_naive().format("%Y-%m-%d").to_string(),
        None => format!("day {days}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn text_forms_are_stable_per_type() {
        let ts: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_795_615_292_123_456), None])
                .with_timezone("UTC"),
        );
        let values = ColumnValues::new(&ts).expect("timestamp column");
        assert_eq!(
            values.text(0).as_deref(),
            Some("2026-11-25T14:01:32.123456Z")
        );
        assert_eq!(values.text(1), None);

        let doubles: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 37.05, f64::NAN]));
        let values = ColumnValues::new(&doubles).expect("double column");
        assert_eq!(values.text(0).as_deref(), Some("1"));
        assert_eq!(values.text(1).as_deref(), Some("37.05"));
        assert_eq!(values.text(2).as_deref(), Some("NaN"));

        let decimals: ArrayRef = Arc::new(
            Decimal128Array::from(vec![1250_i128])
                .with_precision_and_scale(5, 2)
                .expect("valid decimal type"),
        );
        assert_eq!(
            ColumnValues::new(&decimals)
                .and_then(|v| v.text(0))
                .as_deref(),
            Some("12.50")
        );

        let dates: ArrayRef = Arc::new(Date32Array::from(vec![20_782]));
        assert_eq!(
            ColumnValues::new(&dates).and_then(|v| v.text(0)).as_deref(),
            Some("2026-11-25")
        );
    }
}
