//! `dq_rules`: row-level data quality rules.

use std::collections::{BTreeMap, HashSet};

use crate::config::diagnostics::did_you_mean;
use crate::config::model::{RuleConfig, Value};
use crate::config::spec::{RuleKind, RuleSpec};
use crate::config::validate::checker::{Checker, ColumnSet, describe};

pub const RULE_TYPES: &[&str] = &[
    "range",
    "allowed_values",
    "regex",
    "not_null",
    "unique",
    "length",
];

/// Checks every rule of one table; Some only when all are valid.
pub(super) fn rules(
    c: &mut Checker,
    table_path: &str,
    table: &str,
    columns: Option<&ColumnSet>,
    rules: &[RuleConfig],
) -> Option<Vec<RuleSpec>> {
    let mut ids = HashSet::new();
    let mut specs = Vec::new();
    let mut ok = true;
    for (j, rule) in rules.iter().enumerate() {
        let path = format!("{table_path}.dq_rules[{j}]");
        match self::rule(c, &path, table, columns, rule, &mut ids) {
            Some(spec) => specs.push(spec),
            None => ok = false,
        }
    }
    ok.then_some(specs)
}

fn rule(
    c: &mut Checker,
    path: &str,
    table: &str,
    columns: Option<&ColumnSet>,
    rule: &RuleConfig,
    ids: &mut HashSet<String>,
) -> Option<RuleSpec> {
    let id = match rule.id.as_deref().map(str::trim) {
        None | Some("") => {
            c.error(
                &format!("{path}.id"),
                "rule `id` is required (it names the rule in quarantine rows and metrics)",
            );
            None
        }
        Some(id) if !ids.insert(id.to_string()) => {
            c.error(&format!("{path}.id"), format!("Duplicate rule ID: {id}"));
            None
        }
        Some(id) => Some(id.to_string()),
    };
    let column = c.column_ref(
        &format!("{path}.column"),
        rule.column.as_deref(),
        table,
        columns,
    );
    let severity = c.severity(&format!("{path}.severity"), rule.severity.as_deref());
    let params_path = format!("{path}.params");
    let params = rule.params.as_ref();
    let kind = match rule.rule_type.as_deref() {
        None => {
            c.error_hint(
                &format!("{path}.type"),
                "rule `type` is required",
                Some(format!("one of {}", RULE_TYPES.join(", "))),
            );
            None
        }
        Some("range") => {
            c.unknown_params(&params_path, params, &["min", "max"], "a range rule");
            if let Some(col) = &column
                && let Some(ty) = col.column_type
                && !ty.is_numeric()
            {
                c.error(
                    &format!("{path}.column"),
                    format!(
                        "a range rule needs a numeric column; '{}' is {ty}",
                        col.name
                    ),
                );
            }
            range(c, &params_path, params)
        }
        Some("allowed_values") => {
            c.unknown_params(&params_path, params, &["values"], "an allowed_values rule");
            allowed_values(c, &params_path, params)
        }
        Some("regex") => {
            c.unknown_params(&params_path, params, &["pattern"], "a regex rule");
            regex(c, &params_path, params)
        }
        Some("not_null") => {
            c.unknown_params(&params_path, params, &[], "a not_null rule");
            if rule.allow_null == Some(true) {
                c.warn(
                    &format!("{path}.allow_null"),
                    "allow_null: true makes a not_null rule pass every row",
                );
            }
            Some(RuleKind::NotNull)
        }
        Some("unique") => {
            c.unknown_params(&params_path, params, &[], "a unique rule");
            Some(RuleKind::Unique)
        }
        Some("length") => {
            c.unknown_params(&params_path, params, &["min", "max"], "a length rule");
            length(c, &params_path, params)
        }
        Some(other) => {
            c.error_hint(
                &format!("{path}.type"),
                format!("Unknown DQ rule type: {other}"),
                did_you_mean(other, RULE_TYPES.iter().copied())
                    .or_else(|| Some(format!("one of {}", RULE_TYPES.join(", ")))),
            );
            None
        }
    };
    Some(RuleSpec {
        id: id?,
        column: column?.name,
        kind: kind?,
        severity: severity?,
        allow_null: rule.allow_null.unwrap_or(false),
    })
}

fn range(
    c: &mut Checker,
    params_path: &str,
    params: Option<&BTreeMap<String, Value>>,
) -> Option<RuleKind> {
    let min = number_param(c, params_path, params, "min");
    let max = number_param(c, params_path, params, "max");
    let (min, max) = bounds(c, params_path, "range", min?, max?)?;
    Some(RuleKind::Range { min, max })
}

/// Checks a rule's optional `min`/`max` pair: min ≤ max (an error), and at least one of them
/// (a warning: the rule would then only reject NULL).
fn bounds<T: PartialOrd + std::fmt::Display + Copy>(
    c: &mut Checker,
    params_path: &str,
    rule_type: &str,
    min: Option<T>,
    max: Option<T>,
) -> Option<(Option<T>, Option<T>)> {
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        c.error(
            &format!("{params_path}.min"),
            format!("min ({lo}) is greater than max ({hi})"),
        );
        return None;
    }
    if min.is_none() && max.is_none() {
        c.warn(
            params_path,
            format!("a {rule_type} rule without min or max only rejects NULL"),
        );
    }
    Some((min, max))
}

/// Some(None) when absent, Some(Some(x)) for a number, None (reported) otherwise.
fn number_param(
    c: &mut Checker,
    params_path: &str,
    params: Option<&BTreeMap<String, Value>>,
    key: &str,
) -> Option<Option<f64>> {
    match params.and_then(|p| p.get(key)) {
        None | Some(Value::Null) => Some(None),
        Some(Value::Number(n)) => n.as_f64().map(Some),
        Some(other) => {
            c.error(
                &format!("{params_path}.{key}"),
                format!("expected a number, found {}", describe(other)),
            );
            None
        }
    }
}

/// Some(None) when absent, Some(Some(n)) for a non-negative integer, None (reported) otherwise.
pub(super) fn count_param(
    c: &mut Checker,
    params_path: &str,
    params: Option<&BTreeMap<String, Value>>,
    key: &str,
) -> Option<Option<u64>> {
    match params.and_then(|p| p.get(key)) {
        None | Some(Value::Null) => Some(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().map(Some),
        Some(other) => {
            c.error(
                &format!("{params_path}.{key}"),
                format!("expected a non-negative integer, found {}", describe(other)),
            );
            None
        }
    }
}

fn length(
    c: &mut Checker,
    params_path: &str,
    params: Option<&BTreeMap<String, Value>>,
) -> Option<RuleKind> {
    let min = count_param(c, params_path, params, "min");
    let max = count_param(c, params_path, params, "max");
    let (min, max) = bounds(c, params_path, "length", min?, max?)?;
    Some(RuleKind::Length { min, max })
}

fn allowed_values(
    c: &mut Checker,
    params_path: &str,
    params: Option<&BTreeMap<String, Value>>,
) -> Option<RuleKind> {
    let path = format!("{params_path}.values");
    let items = match params.and_then(|p| p.get("values")) {
        None | Some(Value::Null) => {
            c.error(
                &path,
                "an allowed_values rule needs `values`, a non-empty list",
            );
            return None;
        }
        Some(Value::Array(items)) if items.is_empty() => {
            c.error(&path, "`values` is empty: no value would pass");
            return None;
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            c.error(
                &path,
                format!("expected a list of values, found {}", describe(other)),
            );
            return None;
        }
    };
    let mut values = Vec::with_capacity(items.len());
    let mut ok = true;
    for (k, item) in items.iter().enumerate() {
        match item {
            Value::String(s) => values.push(s.clone()),
            Value::Number(n) => values.push(n.to_string()),
            Value::Bool(b) => values.push(b.to_string()),
            other => {
                c.error(
                    &format!("{path}[{k}]"),
                    format!(
                        "expected a string, number or boolean, found {}",
                        describe(other)
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(RuleKind::AllowedValues { values })
}

fn regex(
    c: &mut Checker,
    params_path: &str,
    params: Option<&BTreeMap<String, Value>>,
) -> Option<RuleKind> {
    let path = format!("{params_path}.pattern");
    match params.and_then(|p| p.get("pattern")) {
        None | Some(Value::Null) => {
            c.error(&path, "a regex rule needs `pattern`");
            None
        }
        Some(Value::String(p)) => {
            compile_pattern(c, &path, p).map(|pattern| RuleKind::Regex { pattern })
        }
        Some(other) => {
            c.error(
                &path,
                format!(
                    "expected a regular expression string, found {}",
                    describe(other)
                ),
            );
            None
        }
    }
}

/// Compiles with the `regex` crate (no look-around or back-references, unlike Java's).
pub(super) fn compile_pattern(c: &mut Checker, path: &str, pattern: &str) -> Option<regex::Regex> {
    match regex::Regex::new(pattern) {
        Ok(re) => Some(re),
        Err(e) => {
            let detail = e.to_string();
            let last_line = detail.lines().last().unwrap_or("").trim().to_string();
            c.error_hint(
                path,
                format!("invalid regular expression {pattern:?}: {last_line}"),
                Some("patterns use Rust regex syntax (no look-around or back-references)".into()),
            );
            None
        }
    }
}
