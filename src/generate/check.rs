//! Which configured DQ rules a written row fails, with the processor's semantics (see
//! `pipeline::rules`): NULL fails every rule unless `allow_null` (`not_null` always fails it),
//! `range` is inclusive on numbers and numeric strings, `allowed_values` is exact on the text form,
//! `regex` has find semantics, `length` counts characters.
//!
//! `unique` is the one rule whose outcome depends on other rows of the same micro-batch. The
//! generator never writes one value of a `unique` column for two keys (see `source::Source`), so
//! a non-NULL value never fails it whatever the batching; only NULL does (unless `allow_null`).

use crate::config::spec::{RuleKind, RuleSpec};

use super::row::Value;

/// Whether `value` fails `rule` on its own.
pub(crate) fn fails(rule: &RuleSpec, value: &Value) -> bool {
    if value.is_null() {
        return matches!(rule.kind, RuleKind::NotNull) || !rule.allow_null;
    }
    match &rule.kind {
        RuleKind::NotNull | RuleKind::Unique => false,
        RuleKind::Range { min, max } => match value.numeric() {
            Some(Some(x)) => x.is_nan() || min.is_some_and(|m| x < m) || max.is_some_and(|m| x > m),
            _ => true,
        },
        RuleKind::AllowedValues { values } => {
            let text = value.rule_text().unwrap_or_default();
            !values.contains(&text)
        }
        RuleKind::Regex { pattern } => !pattern.is_match(&value.rule_text().unwrap_or_default()),
        RuleKind::Length { min, max } => {
            let chars = value.rule_text().unwrap_or_default().chars().count() as u64;
            min.is_some_and(|m| chars < m) || max.is_some_and(|m| chars > m)
        }
    }
}

/// The short name of a rule's kind, as configured.
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::spec::Severity;

    pub(crate) fn rule(id: &str, column: &str, kind: RuleKind) -> RuleSpec {
        RuleSpec {
            id: id.into(),
            column: column.into(),
            kind,
            severity: Severity::Error,
            allow_null: false,
        }
    }

    pub(crate) fn regex(pattern: &str) -> RuleKind {
        RuleKind::Regex {
            pattern: regex::Regex::new(pattern).unwrap_or_else(|e| panic!("{e}")),
        }
    }

    #[test]
    fn range_is_inclusive_and_null_fails_it() {
        let r = rule(
            "tel_001",
            "latitude",
            RuleKind::Range {
                min: Some(-90.0),
                max: Some(90.0),
            },
        );
        assert!(!fails(&r, &Value::Float(90.0)));
        assert!(!fails(&r, &Value::Float(-90.0)));
        assert!(fails(&r, &Value::Float(90.000001)));
        assert!(fails(&r, &Value::Null));
        assert!(fails(&r, &Value::text("north")));
        assert!(!fails(&r, &Value::text("45")));
    }

    #[test]
    fn allow_null_lets_null_pass_every_rule_but_not_null() {
        let mut r = rule(
            "r",
            "c",
            RuleKind::AllowedValues {
                values: vec!["a".into()],
            },
        );
        r.allow_null = true;
        assert!(!fails(&r, &Value::Null));
        let mut nn = rule("n", "c", RuleKind::NotNull);
        nn.allow_null = true;
        assert!(fails(&nn, &Value::Null));
    }

    #[test]
    fn allowed_values_compare_the_text_form_exactly() {
        let r = rule(
            "del_001",
            "status",
            RuleKind::AllowedValues {
                values: vec!["assigned".into(), "1".into()],
            },
        );
        assert!(!fails(&r, &Value::text("assigned")));
        assert!(fails(&r, &Value::text("ASSIGNED")));
        assert!(!fails(&r, &Value::Int(1)));
        assert!(fails(&r, &Value::Float(1.5)));
    }

    #[test]
    fn regex_finds_and_anchors_match_whole() {
        assert!(!fails(
            &rule("d", "e", regex(r"^DRV\d{5}$")),
            &Value::text("DRV12345")
        ));
        assert!(fails(
            &rule("d", "e", regex(r"^DRV\d{5}$")),
            &Value::text("xDRV12345")
        ));
        assert!(!fails(
            &rule("d", "e", regex(r"DRV\d{5}")),
            &Value::text("xDRV12345")
        ));
    }

    #[test]
    fn length_counts_characters() {
        let r = rule(
            "l",
            "c",
            RuleKind::Length {
                min: Some(3),
                max: Some(5),
            },
        );
        assert!(fails(&r, &Value::text("ab")));
        assert!(!fails(&r, &Value::text("żółwi")));
        assert!(fails(&r, &Value::text("abcdef")));
    }
}
