//! Row-level DQ rules on the raw decoded values of insert/update/load rows.
//!
//! Every rule is evaluated on every such row, so a row learns all the rules it fails. A NULL
//! fails every rule unless the rule sets `allow_null: true` (`not_null` always fails it); the
//! outcome of a row never depends on other rows, except for `unique`:
//! - `unique` counts a value as duplicated when rows of two or more *different keys* in the batch
//!   hold it; every such row fails. Several events of one key are versions of one row, not
//!   duplicates (the original counted them, so two updates of a key failed a unique rule on it).
//!   NULL is not a value: it never collides with another NULL; it fails unless `allow_null`.
//! - `range` compares numbers (decimals exactly; numeric strings parsed; NaN and non-numeric
//!   strings fail), bounds inclusive.
//! - `allowed_values`, `regex` (find semantics; anchor for a full match) and `length` (characters)
//!   look at the value's text form (see `values`).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;

use deltalake::arrow::array::RecordBatch;

use crate::config::spec::{RuleKind, RuleSpec, TableSpec};

use super::decimal::Decimal;
use super::error::{PipelineError, Result};
use super::schema::column_position;
use super::values::{ColumnValues, Numeric};

/// What one rule found in one batch.
#[derive(Debug, Clone)]
pub(crate) struct RuleOutcome {
    /// Index into `table.rules`.
    pub rule: usize,
    /// Per decoded row: evaluated and failed.
    pub failed: Vec<bool>,
    pub failures: u64,
    pub evaluated: u64,
}

/// The rule's type name as configured.
pub(crate) fn kind_name(kind: &RuleKind) -> &'static str {
    match kind {
        RuleKind::Range { .. } => "range",
        RuleKind::AllowedValues { .. } => "allowed_values",
        RuleKind::Regex { .. } => "regex",
        RuleKind::NotNull => "not_null",
        RuleKind::Unique => "unique",
        RuleKind::Length { .. } => "length",
    }
}

/// Evaluates every rule of `table` on the rows flagged in `evaluate` (the non-delete rows).
/// `key` is the primary-key column, used by `unique` to tell versions of one row from duplicates.
pub(crate) fn evaluate(
    table: &TableSpec,
    rows: &RecordBatch,
    evaluate: &[bool],
    key: ColumnValues<'_>,
) -> Result<Vec<RuleOutcome>> {
    let evaluated = evaluate.iter().filter(|&&e| e).count() as u64;
    table
        .rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let values = column_values(table, rows, rule)?;
            let failed = match &rule.kind {
                RuleKind::Unique => unique_failures(rule, values, key, evaluate),
                kind => {
                    if matches!(kind, RuleKind::Range { .. }) && !supports_range(values) {
                        return Err(unsupported(table, rule));
                    }
                    match float_range_failures(rule, values, evaluate) {
                        Some(failed) => failed,
                        None => {
                            let bounds = RangeBounds::of(kind);
                            (0..rows.num_rows())
                                .map(|row| evaluate[row] && fails(rule, &bounds, values, row))
                                .collect()
                        }
                    }
                }
            };
            let failures = failed.iter().filter(|&&f| f).count() as u64;
            Ok(RuleOutcome {
                rule: index,
                failed,
                failures,
                evaluated,
            })
        })
        .collect()
}

pub(crate) fn column_values<'b>(
    table: &TableSpec,
    rows: &'b RecordBatch,
    rule: &RuleSpec,
) -> Result<ColumnValues<'b>> {
    let index = column_position(table, &rule.column, || format!("rule '{}'", rule.id))?;
    ColumnValues::new(rows.column(index)).ok_or_else(|| unsupported(table, rule))
}

fn unsupported(table: &TableSpec, rule: &RuleSpec) -> PipelineError {
    let column_type = table
        .column(&rule.column)
        .map(|c| c.column_type)
        .unwrap_or(crate::config::spec::ColumnType::String);
    PipelineError::UnsupportedRule {
        table: table.name.clone(),
        rule: rule.id.clone(),
        kind: kind_name(&rule.kind),
        column: rule.column.clone(),
        column_type,
    }
}

fn supports_range(values: ColumnValues<'_>) -> bool {
    matches!(
        values,
        ColumnValues::Int32(_)
            | ColumnValues::Int64(_)
            | ColumnValues::Float64(_)
            | ColumnValues::Decimal(..)
            | ColumnValues::Utf8(_)
    )
}

/// Range bounds, also as exact decimals for decimal columns.
pub(crate) struct RangeBounds {
    min: Option<(f64, Option<Decimal>)>,
    max: Option<(f64, Option<Decimal>)>,
}

impl RangeBounds {
    pub(crate) fn of(kind: &RuleKind) -> RangeBounds {
        match kind {
            RuleKind::Range { min, max } => RangeBounds {
                min: min.map(|m| (m, Decimal::from_f64(m))),
                max: max.map(|m| (m, Decimal::from_f64(m))),
            },
            _ => RangeBounds {
                min: None,
                max: None,
            },
        }
    }

    /// Inclusive containment; NaN is in no interval.
    pub(crate) fn contains(&self, value: &Numeric) -> bool {
        let above_min = match (&self.min, value) {
            (None, Numeric::Float(x)) => !x.is_nan(),
            (None, Numeric::Exact(_)) => true,
            (Some((min, _)), Numeric::Float(x)) => *x >= *min,
            (Some((min, exact)), Numeric::Exact(d)) => match exact {
                Some(exact) => d.cmp_value(exact) != Ordering::Less,
                None => d.to_f64() >= *min,
            },
        };
        let below_max = match (&self.max, value) {
            (None, _) => true,
            (Some((max, _)), Numeric::Float(x)) => *x <= *max,
            (Some((max, exact)), Numeric::Exact(d)) => match exact {
                Some(exact) => d.cmp_value(exact) != Ordering::Greater,
                None => d.to_f64() <= *max,
            },
        };
        above_min && below_max
    }
}

/// `range` over a column of doubles or integers, compared as doubles straight from the column's
/// buffer (the row-by-row route through [`Numeric`] was most of the rules' cost): the same
/// outcome as [`fails`], NaN included, which is in no interval. None for other rules and columns.
fn float_range_failures(
    rule: &RuleSpec,
    values: ColumnValues<'_>,
    evaluate: &[bool],
) -> Option<Vec<bool>> {
    let RuleKind::Range { min, max } = rule.kind else {
        return None;
    };
    let (low, high) = (
        min.unwrap_or(f64::NEG_INFINITY),
        max.unwrap_or(f64::INFINITY),
    );
    // Values first, in a loop without branches; then the NULL rows, if any, are set apart.
    fn compare<T: Copy>(values: &[T], evaluate: &[bool], inside: impl Fn(T) -> bool) -> Vec<bool> {
        values
            .iter()
            .zip(evaluate)
            .map(|(&value, &evaluated)| evaluated & !inside(value))
            .collect()
    }
    let inside = |v: f64| v >= low && v <= high;
    let mut failed = match values {
        ColumnValues::Float64(a) => compare(a.values(), evaluate, inside),
        ColumnValues::Int32(a) => compare(a.values(), evaluate, |v| inside(f64::from(v))),
        // As `Numeric` compares them: bounds are doubles.
        ColumnValues::Int64(a) => compare(a.values(), evaluate, |v| inside(v as f64)),
        _ => return None,
    };
    if let Some(nulls) = values.nulls().filter(|n| n.null_count() > 0) {
        for (row, failed) in failed.iter_mut().enumerate() {
            if nulls.is_null(row) {
                *failed = evaluate[row] && !rule.allow_null;
            }
        }
    }
    Some(failed)
}

/// Whether one non-unique rule fails one row.
fn fails(rule: &RuleSpec, bounds: &RangeBounds, values: ColumnValues<'_>, row: usize) -> bool {
    if values.is_null(row) {
        return matches!(rule.kind, RuleKind::NotNull) || !rule.allow_null;
    }
    match &rule.kind {
        RuleKind::NotNull | RuleKind::Unique => false,
        RuleKind::Range { .. } => match values.numeric(row) {
            Some(Some(number)) => !bounds.contains(&number),
            _ => true,
        },
        RuleKind::AllowedValues { values: allowed } => {
            let text = values.text(row).unwrap_or_default();
            !allowed.iter().any(|a| a.as_str() == text.as_ref())
        }
        RuleKind::Regex { pattern } => !pattern.is_match(&values.text(row).unwrap_or_default()),
        RuleKind::Length { min, max } => {
            let chars = values.text(row).unwrap_or_default().chars().count() as u64;
            min.is_some_and(|m| chars < m) || max.is_some_and(|m| chars > m)
        }
    }
}

/// `unique`: a value fails on every row holding it when two or more different keys hold it.
fn unique_failures(
    rule: &RuleSpec,
    values: ColumnValues<'_>,
    key: ColumnValues<'_>,
    evaluate: &[bool],
) -> Vec<bool> {
    struct Holders<'k> {
        first_key: Option<Cow<'k, str>>,
        shared: bool,
    }
    let mut holders: HashMap<Cow<'_, str>, Holders<'_>> = HashMap::new();
    for row in (0..evaluate.len()).filter(|&row| evaluate[row]) {
        let Some(value) = values.text(row) else {
            continue;
        };
        let row_key = key.text(row);
        let entry = holders.entry(value).or_insert_with(|| Holders {
            first_key: row_key.clone(),
            shared: false,
        });
        if entry.first_key != row_key {
            entry.shared = true;
        }
    }
    (0..evaluate.len())
        .map(|row| {
            evaluate[row]
                && match values.text(row) {
                    None => !rule.allow_null,
                    Some(value) => holders.get(&value).is_some_and(|h| h.shared),
                }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{
        ArrayRef, Decimal128Array, Float64Array, Int32Array, StringArray,
    };
    use deltalake::arrow::datatypes::{Field, Schema};

    use super::*;
    use crate::config::spec::{ColumnType, Severity};
    use crate::pipeline::testing::{regex, rule, table};

    /// Runs one rule over the given column values (ids 1..=n, all evaluated) and returns which failed.
    fn run(
        column_type: ColumnType,
        values: ArrayRef,
        kind: RuleKind,
        allow_null: bool,
    ) -> Vec<bool> {
        let ids: ArrayRef = Arc::new(Int32Array::from(
            (1..=values.len() as i32).collect::<Vec<_>>(),
        ));
        run_with_ids(column_type, values, ids, kind, allow_null)
    }

    fn run_with_ids(
        column_type: ColumnType,
        values: ArrayRef,
        ids: ArrayRef,
        kind: RuleKind,
        allow_null: bool,
    ) -> Vec<bool> {
        let mut t = table("t", &[("id", ColumnType::Int), ("v", column_type)]);
        let mut r = rule("r1", "v", kind, Severity::Error);
        r.allow_null = allow_null;
        t.rules.push(r);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("v", values.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(schema, vec![ids.clone(), values])
            .unwrap_or_else(|e| panic!("{e}"));
        let everything = vec![true; batch.num_rows()];
        let key = ColumnValues::new(&ids).unwrap_or_else(|| panic!("int key"));
        let outcomes = evaluate(&t, &batch, &everything, key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            outcomes[0].failures,
            outcomes[0].failed.iter().filter(|f| **f).count() as u64
        );
        assert_eq!(outcomes[0].evaluated, batch.num_rows() as u64);
        outcomes[0].failed.clone()
    }

    use deltalake::arrow::datatypes::DataType;

    fn doubles(values: &[Option<f64>]) -> ArrayRef {
        Arc::new(Float64Array::from(values.to_vec()))
    }

    fn texts(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    use proptest::prelude::Strategy as _;

    proptest::proptest! {
        /// Ranges over doubles and integers, read straight from the buffers, fail exactly the
        /// rows the row-by-row route through `Numeric` fails.
        #[test]
        fn a_range_over_numbers_fails_the_rows_the_general_route_fails(
            values in proptest::collection::vec(proptest::option::of(proptest::prop_oneof![
                proptest::num::f64::ANY,
                (-200_i32..200).prop_map(f64::from),
            ]), 0..40),
            min in proptest::option::of(-100.0_f64..100.0),
            max in proptest::option::of(-100.0_f64..100.0),
            allow_null in proptest::bool::ANY,
            evaluated in proptest::collection::vec(proptest::bool::ANY, 40),
        ) {
            let mut r = rule("r1", "v", RuleKind::Range { min, max }, Severity::Error);
            r.allow_null = allow_null;
            let evaluate = &evaluated[..values.len()];
            let columns: [ArrayRef; 3] = [
                doubles(&values),
                Arc::new(Int32Array::from_iter(values.iter().map(|v| v.map(|v| v as i32)))),
                Arc::new(deltalake::arrow::array::Int64Array::from_iter(
                    values.iter().map(|v| v.map(|v| (v * 1e6) as i64)),
                )),
            ];
            let bounds = RangeBounds::of(&r.kind);
            for column in &columns {
                let values = ColumnValues::new(column).unwrap_or_else(|| panic!("numeric"));
                let general: Vec<bool> = (0..evaluate.len())
                    .map(|row| evaluate[row] && fails(&r, &bounds, values, row))
                    .collect();
                proptest::prop_assert_eq!(
                    float_range_failures(&r, values, evaluate),
                    Some(general),
                    "{:?}", column
                );
            }
        }
    }

    #[test]
    fn range_bounds_are_inclusive() {
        let failed = run(
            ColumnType::Double,
            doubles(&[
                Some(-90.0),
                Some(90.0),
                Some(90.000001),
                Some(-90.000001),
                Some(0.0),
                Some(f64::NAN),
            ]),
            RuleKind::Range {
                min: Some(-90.0),
                max: Some(90.0),
            },
            false,
        );
        assert_eq!(failed, [false, false, true, true, false, true]);
    }

    #[test]
    fn range_with_one_bound_leaves_the_other_side_open() {
        let failed = run(
            ColumnType::Double,
            doubles(&[Some(-1.0), Some(0.0), Some(1e300)]),
            RuleKind::Range {
                min: Some(0.0),
                max: None,
            },
            false,
        );
        assert_eq!(failed, [true, false, false]);
    }

    #[test]
    fn range_on_decimals_compares_exactly() {
        let values: ArrayRef = Arc::new(
            Decimal128Array::from(vec![
                Some(9_000_000_i128),
                Some(9_000_001),
                Some(-9_000_000),
            ])
            .with_precision_and_scale(12, 5)
            .unwrap_or_else(|e| panic!("{e}")),
        );
        let failed = run(
            ColumnType::Decimal {
                precision: 12,
                scale: 5,
            },
            values,
            RuleKind::Range {
                min: Some(-90.0),
                max: Some(90.0),
            },
            false,
        );
        assert_eq!(failed, [false, true, false]);
    }

    #[test]
    fn range_on_strings_compares_numerically_and_fails_non_numbers() {
        let failed = run(
            ColumnType::String,
            texts(&[
                Some("10"),
                Some(" 5.5 "),
                Some("abc"),
                Some("100.5"),
                Some(""),
            ]),
            RuleKind::Range {
                min: Some(0.0),
                max: Some(100.0),
            },
            false,
        );
        assert_eq!(failed, [false, false, true, true, true]);
    }

    #[test]
    fn range_on_booleans_is_refused_as_a_config_error() {
        let mut t = table(
            "t",
            &[("id", ColumnType::Int), ("flag", ColumnType::Boolean)],
        );
        t.rules.push(rule(
            "r1",
            "flag",
            RuleKind::Range {
                min: Some(0.0),
                max: None,
            },
            Severity::Error,
        ));
        let ids: ArrayRef = Arc::new(Int32Array::from(vec![1]));
        let flags: ArrayRef = Arc::new(deltalake::arrow::array::BooleanArray::from(vec![true]));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("flag", DataType::Boolean, true),
        ]));
        let batch = RecordBatch::try_new(schema, vec![ids.clone(), flags])
            .unwrap_or_else(|e| panic!("{e}"));
        let key = ColumnValues::new(&ids).unwrap_or_else(|| panic!("int key"));
        let error = evaluate(&t, &batch, &[true], key)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            error,
            "table 't': rule 'r1' (range) cannot run on column 'flag' of type boolean"
        );
    }

    #[test]
    fn null_fails_every_rule_unless_allow_null_and_always_fails_not_null() {
        let kinds = || {
            vec![
                RuleKind::Range {
                    min: Some(0.0),
                    max: Some(1.0),
                },
                RuleKind::AllowedValues {
                    values: vec!["a".into()],
                },
                regex(".*"),
                RuleKind::Unique,
                RuleKind::Length {
                    min: Some(0),
                    max: Some(5),
                },
            ]
        };
        for kind in kinds() {
            let name = kind_name(&kind);
            assert_eq!(
                run(ColumnType::String, texts(&[None]), kind, false),
                [true],
                "{name} without allow_null"
            );
        }
        for kind in kinds() {
            let name = kind_name(&kind);
            assert_eq!(
                run(ColumnType::String, texts(&[None]), kind, true),
                [false],
                "{name} with allow_null"
            );
        }
        assert_eq!(
            run(
                ColumnType::String,
                texts(&[None, Some("")]),
                RuleKind::NotNull,
                true
            ),
            [true, false]
        );
    }

    #[test]
    fn null_outcome_does_not_depend_on_other_rows() {
        let alone = run(
            ColumnType::String,
            texts(&[None]),
            RuleKind::AllowedValues {
                values: vec!["a".into()],
            },
            false,
        );
        let with_failures = run(
            ColumnType::String,
            texts(&[None, Some("b")]),
            RuleKind::AllowedValues {
                values: vec!["a".into()],
            },
            false,
        );
        let with_passes = run(
            ColumnType::String,
            texts(&[None, Some("a")]),
            RuleKind::AllowedValues {
                values: vec!["a".into()],
            },
            false,
        );
        assert_eq!(
            (alone[0], with_failures[0], with_passes[0]),
            (true, true, true)
        );
    }

    #[test]
    fn allowed_values_are_exact_and_case_sensitive_on_the_text_form() {
        let failed = run(
            ColumnType::String,
            texts(&[
                Some("assigned"),
                Some("ASSIGNED"),
                Some("assigned "),
                Some("failed"),
            ]),
            RuleKind::AllowedValues {
                values: vec!["assigned".into(), "failed".into()],
            },
            false,
        );
        assert_eq!(failed, [false, true, true, false]);
        let numbers: ArrayRef = Arc::new(Int32Array::from(vec![1, 2, 3]));
        let failed = run(
            ColumnType::Int,
            numbers,
            RuleKind::AllowedValues {
                values: vec!["1".into(), "3".into()],
            },
            false,
        );
        assert_eq!(failed, [false, true, false]);
    }

    #[test]
    fn regex_uses_find_semantics_and_anchors_make_a_full_match() {
        let values = || {
            texts(&[
                Some("DRV12345"),
                Some("xDRV12345"),
                Some("DRV123456"),
                Some("drv12345"),
            ])
        };
        assert_eq!(
            run(ColumnType::String, values(), regex("^DRV\\d{5}$"), false),
            [false, true, true, true]
        );
        assert_eq!(
            run(ColumnType::String, values(), regex("DRV\\d{5}"), false),
            [false, false, false, true]
        );
    }

    #[test]
    fn length_counts_characters_inclusively() {
        let failed = run(
            ColumnType::String,
            texts(&[
                Some("ab"),
                Some("abc"),
                Some("abcde"),
                Some("abcdef"),
                Some("żółwi"),
            ]),
            RuleKind::Length {
                min: Some(3),
                max: Some(5),
            },
            false,
        );
        assert_eq!(failed, [true, false, false, true, false]);
    }

    #[test]
    fn unique_fails_every_copy_held_by_different_keys_but_not_versions_of_one_key() {
        let values = texts(&[
            Some("A"),
            Some("B"),
            Some("A"),
            Some("C"),
            Some("C"),
            None,
            None,
        ]);
        let ids: ArrayRef = Arc::new(Int32Array::from(vec![1, 2, 3, 4, 4, 5, 6]));
        let failed = run_with_ids(ColumnType::String, values, ids, RuleKind::Unique, true);
        // A: keys 1 and 3 collide; C: two versions of key 4; NULLs never collide.
        assert_eq!(failed, [true, false, true, false, false, false, false]);
    }

    #[test]
    fn rows_not_evaluated_never_fail_and_are_not_counted() {
        let mut t = table("t", &[("id", ColumnType::Int), ("v", ColumnType::String)]);
        t.rules
            .push(rule("r1", "v", RuleKind::NotNull, Severity::Error));
        let ids: ArrayRef = Arc::new(Int32Array::from(vec![1, 2]));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("v", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(schema, vec![ids.clone(), texts(&[None, None])])
            .unwrap_or_else(|e| panic!("{e}"));
        let key = ColumnValues::new(&ids).unwrap_or_else(|| panic!("int key"));
        let outcomes = evaluate(&t, &batch, &[true, false], key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outcomes[0].failed, [true, false]);
        assert_eq!((outcomes[0].failures, outcomes[0].evaluated), (1, 1));
    }
}
