//! Human-readable `_dq_reason` text: rule id, rule type, column, value (masked when PII) and the
//! expectation, e.g. `tel_001 range: latitude=123.4 not in [-90, 90]`.

use crate::config::spec::{RuleKind, RuleSpec};

use super::pii::PiiMasks;
use super::rules::kind_name;
use super::values::ColumnValues;

/// Longest value shown in a reason, in characters.
const VALUE_MAX_CHARS: usize = 64;
/// Most allowed values listed in a reason.
const ALLOWED_SHOWN: usize = 10;

/// Joins the reasons of one quarantined row.
pub(crate) const SEPARATOR: &str = "; ";

/// Why `rule` failed on `row`.
pub(crate) fn rule_failure(
    rule: &RuleSpec,
    values: ColumnValues<'_>,
    row: usize,
    masks: &PiiMasks,
) -> String {
    let head = format!("{} {}", rule.id, kind_name(&rule.kind));
    let column = &rule.column;
    let Some(shown) = shown_value(column, values, row, masks) else {
        return format!("{head}: {column} is null");
    };
    match &rule.kind {
        RuleKind::NotNull => format!("{head}: {column} is null"),
        RuleKind::Range { min, max } => {
            let expectation = range_text(min.map(float), max.map(float));
            match values.numeric(row) {
                Some(Some(_)) => format!("{head}: {column}={shown} not {expectation}"),
                _ => format!("{head}: {column}={shown} is not a number (expected {expectation})"),
            }
        }
        RuleKind::AllowedValues { values: allowed } => {
            let mut list: Vec<&str> = allowed
                .iter()
                .take(ALLOWED_SHOWN)
                .map(String::as_str)
                .collect();
            if allowed.len() > ALLOWED_SHOWN {
                list.push("…");
            }
            format!("{head}: {column}={shown} not in [{}]", list.join(", "))
        }
        RuleKind::Regex { pattern } => format!(
            "{head}: {column}={shown} does not match {}",
            pattern.as_str()
        ),
        RuleKind::Unique => {
            format!("{head}: {column}={shown} is held by more than one key in the batch")
        }
        RuleKind::Length { min, max } => {
            let chars = values
                .text(row)
                .map(|t| t.chars().count())
                .unwrap_or_default();
            let expectation = match (min, max) {
                (Some(min), Some(max)) => format!("between {min} and {max}"),
                (Some(min), None) => format!("at least {min}"),
                (None, Some(max)) => format!("at most {max}"),
                (None, None) => "any number of".into(),
            };
            format!("{head}: {column}={shown} has {chars} characters, expected {expectation}")
        }
    }
}

/// Why a transform could not be applied to a row (only `cast` and decimal `round` can fail).
pub(crate) fn transform_failure(
    transform_id: &str,
    kind: &str,
    column: &str,
    values: ColumnValues<'_>,
    row: usize,
    masks: &PiiMasks,
    problem: &str,
) -> String {
    let shown = shown_value(column, values, row, masks).unwrap_or_else(|| "null".into());
    format!("{transform_id} {kind}: {column}={shown} {problem}")
}

/// The value as a reason shows it: strings quoted, long values shortened, PII masked.
pub(crate) fn shown_value(
    column: &str,
    values: ColumnValues<'_>,
    row: usize,
    masks: &PiiMasks,
) -> Option<String> {
    let text = values.text(row)?;
    let text = masks.apply(column, &text);
    let shortened = if text.chars().count() > VALUE_MAX_CHARS {
        let mut short: String = text.chars().take(VALUE_MAX_CHARS).collect();
        short.push('…');
        std::borrow::Cow::Owned(short)
    } else {
        text
    };
    let quote = values.is_string() || masks.masks(column);
    Some(if quote {
        serde_json::Value::String(shortened.into_owned()).to_string()
    } else {
        shortened.into_owned()
    })
}

fn float(value: f64) -> String {
    super::values::float_text(value)
}

fn range_text(min: Option<String>, max: Option<String>) -> String {
    match (min, max) {
        (Some(min), Some(max)) => format!("in [{min}, {max}]"),
        (Some(min), None) => format!(">= {min}"),
        (None, Some(max)) => format!("<= {max}"),
        (None, None) => "a number".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{ArrayRef, Float64Array, StringArray};

    use super::*;
    use crate::config::spec::{ColumnType, Severity, TransformKind};
    use crate::pipeline::testing::{regex, rule, table, transform};

    fn describe(kind: RuleKind, column: &str, values: ArrayRef, masks: &PiiMasks) -> String {
        let values = ColumnValues::new(&values).unwrap_or_else(|| panic!("supported column"));
        rule_failure(
            &rule("r_1", column, kind, Severity::Error),
            values,
            0,
            masks,
        )
    }

    fn text(value: Option<&str>) -> ArrayRef {
        Arc::new(StringArray::from(vec![value]))
    }

    #[test]
    fn reasons_name_rule_column_value_and_expectation() {
        let none = PiiMasks::default();
        let lat: ArrayRef = Arc::new(Float64Array::from(vec![123.4]));
        assert_eq!(
            describe(
                RuleKind::Range {
                    min: Some(-90.0),
                    max: Some(90.0)
                },
                "latitude",
                lat.clone(),
                &none
            ),
            "r_1 range: latitude=123.4 not in [-90, 90]"
        );
        assert_eq!(
            describe(
                RuleKind::Range {
                    min: Some(0.0),
                    max: None
                },
                "latitude",
                lat,
                &none
            ),
            "r_1 range: latitude=123.4 not >= 0"
        );
        assert_eq!(
            describe(
                RuleKind::Range {
                    min: Some(0.0),
                    max: Some(9.5)
                },
                "code",
                text(Some("abc")),
                &none
            ),
            "r_1 range: code=\"abc\" is not a number (expected in [0, 9.5])"
        );
        assert_eq!(
            describe(RuleKind::NotNull, "vehicle_id", text(None), &none),
            "r_1 not_null: vehicle_id is null"
        );
        assert_eq!(
            describe(
                RuleKind::AllowedValues {
                    values: vec!["a".into(), "b".into()]
                },
                "status",
                text(Some("c")),
                &none
            ),
            "r_1 allowed_values: status=\"c\" not in [a, b]"
        );
        assert_eq!(
            describe(
                regex("^DRV\\d{5}$"),
                "employee_id",
                text(Some("DR1")),
                &none
            ),
            "r_1 regex: employee_id=\"DR1\" does not match ^DRV\\d{5}$"
        );
        assert_eq!(
            describe(
                RuleKind::Length {
                    min: Some(3),
                    max: Some(5)
                },
                "name",
                text(Some("ab")),
                &none
            ),
            "r_1 length: name=\"ab\" has 2 characters, expected between 3 and 5"
        );
        assert_eq!(
            describe(RuleKind::Unique, "vin", text(Some("V1")), &none),
            "r_1 unique: vin=\"V1\" is held by more than one key in the batch"
        );
    }

    #[test]
    fn pii_values_are_masked_in_reasons() {
        let mut t = table(
            "drivers",
            &[("id", ColumnType::Int), ("phone", ColumnType::String)],
        );
        t.transforms.push(transform(
            "tx",
            "phone",
            TransformKind::MaskPii { visible_chars: 4 },
            1,
        ));
        let masks = PiiMasks::for_quarantine(&t);
        let reason = describe(
            regex("^\\+1\\d{3}$"),
            "phone",
            text(Some("+15551234567")),
            &masks,
        );
        assert_eq!(
            reason,
            "r_1 regex: phone=\"+155****\" does not match ^\\+1\\d{3}$"
        );
        t.mask_pii_in_quarantine = false;
        let reason = describe(
            regex("^\\+1\\d{3}$"),
            "phone",
            text(Some("+15551234567")),
            &PiiMasks::for_quarantine(&t),
        );
        assert!(reason.contains("+15551234567"), "{reason}");
    }

    #[test]
    fn long_values_are_shortened() {
        let reason = describe(
            regex("^y"),
            "notes",
            text(Some(&"x".repeat(1000))),
            &PiiMasks::default(),
        );
        assert!(reason.chars().count() < 120, "{reason}");
    }
}
