//! Column transforms in ascending `order`, with the original's semantics:
//! - `round`: HALF_UP on the decimal form of the value (37.05 → 37.1), the type stays;
//! - `mask_pii`: the first `visible_chars` characters plus `****`;
//! - `cast` to `target_type` (a value that cannot be cast quarantines its row instead of
//!   silently becoming NULL), `trim` (spaces), `lower`, `upper`, `default_value` (replaces NULL),
//!   `rename` (the name only; see `schema::transformed_fields`).
//!
//! NULL stays NULL everywhere except `default_value`. Transforms refer to columns by their
//! configured (source) names, also after a rename.

use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array,
    Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array,
};
use deltalake::arrow::compute::{CastOptions, cast_with_options, concat, take};
use deltalake::arrow::datatypes::{DataType, Decimal128Type, Float64Type};

use crate::cdc::coerce::{Cell, coerce};
use crate::config::spec::{ColumnType, TableSpec, TransformKind, TransformSpec};

use super::decimal::{Decimal, DecimalFitError};
use super::error::{PipelineError, Result, arrow_context};
use super::pii::PiiMasks;
use super::reason;
use super::schema::column_position;
use super::values::ColumnValues;

/// Keeps the first `visible_chars` characters (not bytes) and appends `****`.
pub fn mask_pii(text: &str, visible_chars: usize) -> String {
    let mut masked: String = text.chars().take(visible_chars).collect();
    masked.push_str("****");
    masked
}

/// HALF_UP rounding of the shortest decimal form of `value` (what Spark's `round` does through
/// `BigDecimal(Double.toString(x))`). NaN and infinities are returned unchanged.
pub fn round_half_up(value: f64, decimals: u32) -> f64 {
    round_half_up_binary(value, decimals).unwrap_or_else(|| round_half_up_decimal(value, decimals))
}

/// [`round_half_up`] through the decimal digits: exact for every value, and slow (it formats and
/// parses text).
fn round_half_up_decimal(value: f64, decimals: u32) -> f64 {
    match Decimal::from_f64(value) {
        Some(decimal) => decimal.round_half_up(decimals).to_f64(),
        None => value,
    }
}

/// Powers of ten that are exact doubles.
const POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// [`round_half_up`] in binary arithmetic, for the values whose rounding is decided far from the
/// half-way point; None near it (2.675 is 2.67499999… in binary) or out of the exact range.
///
/// Why it is exact there: the shortest decimal form of `value` and `value` itself differ by less
/// than half an ulp, and `|value| × 10^d` carries at most one rounding error, so when the scaled
/// fraction is clearly away from .5 both round the same way; the result `n / 10^d` is then one
/// correctly rounded division, the same double that parsing the rounded decimal text gives.
fn round_half_up_binary(value: f64, decimals: u32) -> Option<f64> {
    let scale = *POWERS_OF_TEN.get(decimals as usize)?;
    let scaled = value.abs() * scale;
    // Below 2^40 the errors above stay under 2^-12 of a unit; the margin is far wider than that.
    if !scaled.is_finite() || scaled >= 1_099_511_627_776.0 {
        return None;
    }
    let whole = scaled.trunc();
    let fraction = scaled - whole;
    if (fraction - 0.5).abs() <= 1e-9_f64.max(scaled * 1e-13) {
        return None;
    }
    let rounded = if fraction > 0.5 { whole + 1.0 } else { whole };
    if rounded == 0.0 {
        // The decimal form of zero carries no sign.
        return Some(0.0);
    }
    Some((rounded / scale).copysign(value))
}

/// The type name of a transform as configured.
pub(crate) fn kind_name(kind: &TransformKind) -> &'static str {
    match kind {
        TransformKind::Trim => "trim",
        TransformKind::Lower => "lower",
        TransformKind::Upper => "upper",
        TransformKind::Round { .. } => "round",
        TransformKind::MaskPii { .. } => "mask_pii",
        TransformKind::Cast { .. } => "cast",
        TransformKind::DefaultValue { .. } => "default_value",
        TransformKind::Rename { .. } => "rename",
    }
}

/// A row a transform could not be applied to.
#[derive(Debug, Clone)]
pub(crate) struct TransformFailure {
    pub row: usize,
    pub transform_id: String,
    pub reason: String,
}

/// The data columns after every transform (config order, types of `schema::transformed_fields`).
pub(crate) struct Transformed {
    pub columns: Vec<ArrayRef>,
    pub failures: Vec<TransformFailure>,
}

/// Applies the table's transforms to the data columns of `rows`. `is_delete` rows keep their
/// NULLs (`default_value` would invent values a delete image never carried); every other
/// transform applies to them too, so a delete's key matches the transformed key in the lake and
/// no PII lands unmasked in a tombstone.
pub(crate) fn apply(
    table: &TableSpec,
    rows: &RecordBatch,
    is_delete: &[bool],
    masks: &PiiMasks,
) -> Result<Transformed> {
    let mut columns: Vec<ArrayRef> = (0..table.columns.len())
        .map(|i| rows.column(i).clone())
        .collect();
    let mut types: Vec<ColumnType> = table.columns.iter().map(|c| c.column_type).collect();
    let mut failures = Vec::new();
    for transform in &table.transforms {
        let index = column_position(table, &transform.column, || {
            format!("transform '{}'", transform.id)
        })?;
        let input = columns[index].clone();
        let output = match &transform.kind {
            TransformKind::Rename { .. } => input,
            TransformKind::Trim => {
                map_strings(table, transform, &input, |s| s.trim_matches(' ').to_owned())?
            }
            TransformKind::Lower => map_strings(table, transform, &input, str::to_lowercase)?,
            TransformKind::Upper => map_strings(table, transform, &input, str::to_uppercase)?,
            TransformKind::MaskPii { visible_chars } => {
                map_strings(table, transform, &input, |s| mask_pii(s, *visible_chars))?
            }
            TransformKind::Round { decimals } => {
                round(table, transform, &input, *decimals, masks, &mut failures)?
            }
            TransformKind::Cast { target_type } => {
                let output = cast(table, transform, &input, *target_type, masks, &mut failures)?;
                types[index] = *target_type;
                output
            }
            TransformKind::DefaultValue { value } => {
                default_value(table, transform, &input, types[index], value, is_delete)?
            }
        };
        columns[index] = output;
    }
    Ok(Transformed { columns, failures })
}

fn unsupported(
    table: &TableSpec,
    transform: &TransformSpec,
    data_type: &DataType,
) -> PipelineError {
    PipelineError::UnsupportedTransform {
        table: table.name.clone(),
        transform: transform.id.clone(),
        kind: kind_name(&transform.kind),
        column: transform.column.clone(),
        data_type: data_type.clone(),
    }
}

fn map_strings(
    table: &TableSpec,
    transform: &TransformSpec,
    input: &ArrayRef,
    f: impl Fn(&str) -> String,
) -> Result<ArrayRef> {
    let strings = input
        .as_string_opt::<i32>()
        .ok_or_else(|| unsupported(table, transform, input.data_type()))?;
    let mapped: StringArray = strings.iter().map(|v| v.map(&f)).collect();
    Ok(Arc::new(mapped))
}

fn round(
    table: &TableSpec,
    transform: &TransformSpec,
    input: &ArrayRef,
    decimals: u32,
    masks: &PiiMasks,
    failures: &mut Vec<TransformFailure>,
) -> Result<ArrayRef> {
    match input.data_type() {
        DataType::Float64 => {
            let rounded: Float64Array = input
                .as_primitive::<Float64Type>()
                .unary(|x| round_half_up(x, decimals));
            Ok(Arc::new(rounded))
        }
        // Whole numbers have no fractional digits to round.
        DataType::Int32 | DataType::Int64 => Ok(input.clone()),
        DataType::Decimal128(precision, scale) => {
            let (precision, scale) = (*precision, *scale);
            let decimals_in = input.as_primitive::<Decimal128Type>();
            let values = ColumnValues::new(input)
                .ok_or_else(|| unsupported(table, transform, input.data_type()))?;
            let mut rounded = Vec::with_capacity(decimals_in.len());
            for row in 0..decimals_in.len() {
                if decimals_in.is_null(row) {
                    rounded.push(None);
                    continue;
                }
                let value =
                    Decimal::from_unscaled(decimals_in.value(row), scale).round_half_up(decimals);
                match value.to_unscaled(precision, scale) {
                    Ok(unscaled) => rounded.push(Some(unscaled)),
                    Err(DecimalFitError::Inexact | DecimalFitError::Overflow) => {
                        failures.push(TransformFailure {
                            row,
                            transform_id: transform.id.clone(),
                            reason: reason::transform_failure(
                                &transform.id,
                                "round",
                                &transform.column,
                                values,
                                row,
                                masks,
                                &format!("rounded to {decimals} decimals does not fit decimal({precision},{scale})"),
                            ),
                        });
                        rounded.push(None);
                    }
                }
            }
            let array = Decimal128Array::from(rounded)
                .with_precision_and_scale(precision, scale)
                .map_err(arrow_context(&table.name, "rounding a decimal column"))?;
            Ok(Arc::new(array))
        }
        other => Err(unsupported(table, transform, other)),
    }
}

fn cast(
    table: &TableSpec,
    transform: &TransformSpec,
    input: &ArrayRef,
    target: ColumnType,
    masks: &PiiMasks,
    failures: &mut Vec<TransformFailure>,
) -> Result<ArrayRef> {
    let options = CastOptions {
        safe: true,
        ..CastOptions::default()
    };
    let output = cast_with_options(input, &target.arrow_type(), &options)
        .map_err(|_| unsupported(table, transform, input.data_type()))?;
    // Safe casts turn values they cannot convert into NULL; those rows are reported, not loaded.
    if output.null_count() > input.null_count() {
        let values = ColumnValues::new(input)
            .ok_or_else(|| unsupported(table, transform, input.data_type()))?;
        for row in (0..input.len()).filter(|&row| input.is_valid(row) && output.is_null(row)) {
            failures.push(TransformFailure {
                row,
                transform_id: transform.id.clone(),
                reason: reason::transform_failure(
                    &transform.id,
                    "cast",
                    &transform.column,
                    values,
                    row,
                    masks,
                    &format!("cannot be cast to {target}"),
                ),
            });
        }
    }
    Ok(output)
}

fn default_value(
    table: &TableSpec,
    transform: &TransformSpec,
    input: &ArrayRef,
    column_type: ColumnType,
    value: &serde_json::Value,
    is_delete: &[bool],
) -> Result<ArrayRef> {
    if value.is_null() || input.null_count() == 0 {
        return Ok(input.clone());
    }
    let invalid = |reason: String| PipelineError::InvalidDefault {
        table: table.name.clone(),
        transform: transform.id.clone(),
        column: transform.column.clone(),
        value: value.to_string(),
        reason,
    };
    let cell = coerce(value, column_type).map_err(|e| invalid(e.to_string()))?;
    let default = single_value_array(cell, input.data_type())
        .ok_or_else(|| invalid(format!("column is {}", input.data_type())))?;
    // Take from [input..., default]: NULLs of non-delete rows point at the default.
    let with_default = concat(&[input.as_ref(), default.as_ref()])
        .map_err(arrow_context(&table.name, "applying a default value"))?;
    let default_index = input.len() as u32;
    let indices: UInt32Array = (0..input.len())
        .map(|row| {
            Some(if input.is_null(row) && !is_delete[row] {
                default_index
            } else {
                row as u32
            })
        })
        .collect();
    take(&with_default, &indices, None)
        .map_err(arrow_context(&table.name, "applying a default value"))
}

fn single_value_array(cell: Cell, data_type: &DataType) -> Option<ArrayRef> {
    Some(match (cell, data_type) {
        (Cell::Text(v), DataType::Utf8) => Arc::new(StringArray::from(vec![v.as_ref()])),
        (Cell::Int(v), DataType::Int32) => Arc::new(Int32Array::from(vec![v])),
        (Cell::Long(v), DataType::Int64) => Arc::new(Int64Array::from(vec![v])),
        (Cell::Double(v), DataType::Float64) => Arc::new(Float64Array::from(vec![v])),
        (Cell::Boolean(v), DataType::Boolean) => Arc::new(BooleanArray::from(vec![v])),
        (Cell::TimestampMicros(v), DataType::Timestamp(_, tz)) => {
            Arc::new(TimestampMicrosecondArray::from(vec![v]).with_timezone_opt(tz.clone()))
        }
        (Cell::Date(v), DataType::Date32) => Arc::new(Date32Array::from(vec![v])),
        (Cell::Decimal(v), DataType::Decimal128(p, s)) => Arc::new(
            Decimal128Array::from(vec![v])
                .with_precision_and_scale(*p, *s)
                .ok()?,
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use deltalake::arrow::datatypes::{Field, Schema};
    use serde_json::json;

    use super::*;
    use crate::pipeline::testing::{doubles, strings, table, transform};

    fn assert_binary_agrees(
        value: f64,
        decimals: u32,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        if let Some(binary) = round_half_up_binary(value, decimals) {
            let decimal = round_half_up_decimal(value, decimals);
            proptest::prop_assert_eq!(
                binary.to_bits(),
                decimal.to_bits(),
                "round({}, {}): binary {} decimal {}",
                value,
                decimals,
                binary,
                decimal
            );
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn binary_rounding_agrees_with_the_decimal_form(
            value in proptest::prelude::any::<f64>(),
            small in -1e7_f64..1e7,
            decimals in 0_u32..=16,
        ) {
            assert_binary_agrees(value, decimals)?;
            assert_binary_agrees(small, decimals)?;
        }

        /// Values whose decimal form ends in 5 just past the rounding digit: the half-way cases.
        #[test]
        fn binary_rounding_agrees_on_half_way_decimals(
            text in "-?[0-9]{1,7}\\.[0-9]{0,8}5",
            decimals in 0_u32..=9,
        ) {
            let value: f64 = text.parse().expect("a decimal");
            assert_binary_agrees(value, decimals)?;
        }
    }

    #[test]
    fn round_is_half_up_on_the_decimal_form() {
        assert_eq!(round_half_up(37.05, 1), 37.1);
        assert_eq!(round_half_up(-0.001, 2).to_bits(), 0.0_f64.to_bits());
        assert_eq!(round_half_up(72.5, 0), 73.0);
        assert_eq!(round_half_up(-2.5, 0), -3.0);
        assert_eq!(round_half_up(2.675, 2), 2.68); // binary 2.67499999… but its decimal form is 2.675
        assert_eq!(round_half_up(1.005, 2), 1.01);
        assert_eq!(round_half_up(40.712775, 5), 40.71278);
        assert_eq!(round_half_up(-73.9857049, 5), -73.98570);
        assert_eq!(round_half_up(12.0, 3), 12.0);
        assert!(round_half_up(f64::NAN, 2).is_nan());
        assert_eq!(round_half_up(f64::INFINITY, 2), f64::INFINITY);
    }

    #[test]
    fn mask_pii_keeps_the_first_characters() {
        assert_eq!(mask_pii("+15551234567", 4), "+155****");
        assert_eq!(mask_pii("+15551234567", 0), "****");
        assert_eq!(mask_pii("abc", 4), "abc****");
        assert_eq!(mask_pii("", 2), "****");
        assert_eq!(mask_pii("Zoë Ångström", 3), "Zoë****");
        assert_eq!(mask_pii("日本語テキスト", 2), "日本****");
    }

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let schema = Schema::new(
            columns
                .iter()
                .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        RecordBatch::try_new(
            Arc::new(schema),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn run(
        t: &TableSpec,
        rows: &RecordBatch,
        is_delete: &[bool],
    ) -> (RecordBatch, Vec<TransformFailure>) {
        let out = apply(t, rows, is_delete, &PiiMasks::for_quarantine(t))
            .unwrap_or_else(|e| panic!("{e}"));
        let fields = crate::pipeline::schema::transformed_fields(t);
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), out.columns)
            .unwrap_or_else(|e| panic!("{e}"));
        (batch, out.failures)
    }

    #[test]
    fn string_transforms_apply_in_order_and_keep_nulls() {
        let mut t = table(
            "t",
            &[("id", ColumnType::Int), ("name", ColumnType::String)],
        );
        t.transforms = vec![
            transform("a", "name", TransformKind::Trim, 1),
            transform("b", "name", TransformKind::Upper, 2),
            transform("c", "name", TransformKind::MaskPii { visible_chars: 2 }, 3),
        ];
        let rows = batch(vec![
            ("id", Arc::new(Int32Array::from(vec![1, 2, 3]))),
            (
                "name",
                Arc::new(StringArray::from(vec![Some("  ann  "), None, Some("\tbo")])),
            ),
        ]);
        let (out, failures) = run(&t, &rows, &[false; 3]);
        assert!(failures.is_empty());
        // trim removes spaces only, as Spark's trim does.
        assert_eq!(
            strings(&out, "name"),
            [Some("AN****".into()), None, Some("\tB****".into())]
        );
    }

    #[test]
    fn lower_and_rename() {
        let mut t = table(
            "t",
            &[("id", ColumnType::Int), ("status", ColumnType::String)],
        );
        t.transforms = vec![
            transform("a", "status", TransformKind::Lower, 1),
            transform(
                "b",
                "status",
                TransformKind::Rename {
                    new_name: "state".into(),
                },
                2,
            ),
        ];
        let rows = batch(vec![
            ("id", Arc::new(Int32Array::from(vec![1]))),
            ("status", Arc::new(StringArray::from(vec!["DELIVERED"]))),
        ]);
        let (out, _) = run(&t, &rows, &[false]);
        assert_eq!(strings(&out, "state"), [Some("delivered".into())]);
    }

    #[test]
    fn round_keeps_the_double_type() {
        let mut t = table(
            "t",
            &[("id", ColumnType::Int), ("temp", ColumnType::Double)],
        );
        t.transforms = vec![transform(
            "a",
            "temp",
            TransformKind::Round { decimals: 1 },
            1,
        )];
        let rows = batch(vec![
            ("id", Arc::new(Int32Array::from(vec![1, 2, 3]))),
            (
                "temp",
                Arc::new(Float64Array::from(vec![Some(37.05), None, Some(-0.04)])),
            ),
        ]);
        let (out, _) = run(&t, &rows, &[false; 3]);
        assert_eq!(doubles(&out, "temp"), [Some(37.1), None, Some(0.0)]);
    }

    #[test]
    fn decimal_round_that_overflows_the_precision_is_a_row_failure() {
        let ty = ColumnType::Decimal {
            precision: 4,
            scale: 2,
        };
        let mut t = table("t", &[("id", ColumnType::Int), ("price", ty)]);
        t.transforms = vec![transform(
            "r",
            "price",
            TransformKind::Round { decimals: 1 },
            1,
        )];
        let prices = Decimal128Array::from(vec![Some(1234_i128), Some(9995)])
            .with_precision_and_scale(4, 2)
            .unwrap_or_else(|e| panic!("{e}"));
        let rows = batch(vec![
            ("id", Arc::new(Int32Array::from(vec![1, 2]))),
            ("price", Arc::new(prices)),
        ]);
        let (out, failures) = run(&t, &rows, &[false; 2]);
        let rounded = out.column(1).as_primitive::<Decimal128Type>();
        assert_eq!(rounded.value(0), 1230);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].row, 1);
        assert_eq!(
            failures[0].reason,
            "r round: price=99.95 rounded to 1 decimals does not fit decimal(4,2)"
        );
    }

    #[test]
    fn cast_changes_the_type_and_reports_values_it_cannot_convert() {
        let mut t = table(
            "t",
            &[("id", ColumnType::Int), ("code", ColumnType::String)],
        );
        t.transforms = vec![transform(
            "c",
            "code",
            TransformKind::Cast {
                target_type: ColumnType::Long,
            },
            1,
        )];
        let rows = batch(vec![
            ("id", Arc::new(Int32Array::from(vec![1, 2, 3]))),
            (
                "code",
                Arc::new(StringArray::from(vec![Some("42"), Some("abc"), None])),
            ),
        ]);
        let (out, failures) = run(&t, &rows, &[false; 3]);
        assert_eq!(
            crate::pipeline::testing::longs(&out, "code"),
            [Some(42), None, None]
        );
        assert_eq!(failures.len(), 1);
        assert_eq!(
            (failures[0].row, failures[0].reason.as_str()),
            (1, "c cast: code=\"abc\" cannot be cast to long")
        );
    }

    #[test]
    fn default_value_fills_nulls_except_in_delete_images() {
        let mut t = table(
            "t",
            &[
                ("id", ColumnType::Int),
                ("status", ColumnType::String),
                ("n", ColumnType::Int),
            ],
        );
        t.transforms = vec![
            transform(
                "d1",
                "status",
                TransformKind::DefaultValue {
                    value: json!("unknown"),
                },
                1,
            ),
            transform(
                "d2",
                "n",
                TransformKind::DefaultValue { value: json!(0) },
                2,
            ),
        ];
        let rows = batch(vec![
            ("id", Arc::new(Int32Array::from(vec![1, 2, 3]))),
            (
                "status",
                Arc::new(StringArray::from(vec![Some("ok"), None, None])),
            ),
            ("n", Arc::new(Int32Array::from(vec![Some(5), None, None]))),
        ]);
        let (out, _) = run(&t, &rows, &[false, false, true]);
        assert_eq!(
            strings(&out, "status"),
            [Some("ok".into()), Some("unknown".into()), None]
        );
        assert_eq!(
            crate::pipeline::testing::ints(&out, "n"),
            [Some(5), Some(0), None]
        );
    }

    #[test]
    fn a_default_that_does_not_fit_the_column_is_a_config_error() {
        let mut t = table("t", &[("id", ColumnType::Int), ("n", ColumnType::Int)]);
        t.transforms = vec![transform(
            "d",
            "n",
            TransformKind::DefaultValue {
                value: json!("many"),
            },
            1,
        )];
        let rows = batch(vec![
            ("id", Arc::new(Int32Array::from(vec![1]))),
            ("n", Arc::new(Int32Array::from(vec![None::<i32>]))),
        ]);
        let error = apply(&t, &rows, &[false], &PiiMasks::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            error,
            "table 't': transform 'd': default value \"many\" does not fit column 'n': expected integer, found \"many\""
        );
    }

    #[test]
    fn mask_on_a_number_column_is_refused() {
        let mut t = table("t", &[("id", ColumnType::Int), ("n", ColumnType::Int)]);
        t.transforms = vec![transform(
            "m",
            "n",
            TransformKind::MaskPii { visible_chars: 1 },
            1,
        )];
        let rows = batch(vec![
            ("id", Arc::new(Int32Array::from(vec![1]))),
            ("n", Arc::new(Int32Array::from(vec![7]))),
        ]);
        let error = apply(&t, &rows, &[false], &PiiMasks::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            error,
            "table 't': transform 'm' (mask_pii) cannot run on column 'n' of type Int32"
        );
    }
}
