//! `deequ_checks` (batch metrics with thresholds) and `anomaly_checks` (a metric against its history).

use crate::config::diagnostics::did_you_mean;
use crate::config::model::{AnomalyCheckConfig, DeequCheckConfig, Value};
use crate::config::spec::{
    AnomalyCheckSpec, AnomalyStrategy, CompliancePredicate, MetricCheckSpec, MetricKind,
};
use crate::config::validate::checker::{Checker, ColumnSet, describe};
use crate::config::validate::rules::compile_pattern;

/// Deequ's metrics; matched case-insensitively (the original's processor lower-cased them).
pub const METRICS: &[&str] = &["size", "completeness", "uniqueness", "compliance"];
pub const ANOMALY_STRATEGIES: &[&str] = &["relative_rate_of_change", "stddev"];
pub const DEFAULT_STDDEV_K: f64 = 3.0;
pub const DEFAULT_MIN_HISTORY: u64 = 5;

pub(super) fn deequ_checks(
    c: &mut Checker,
    table_path: &str,
    table: &str,
    columns: Option<&ColumnSet>,
    checks: &[DeequCheckConfig],
) -> Option<Vec<MetricCheckSpec>> {
    let mut specs = Vec::new();
    let mut ok = true;
    for (j, check) in checks.iter().enumerate() {
        let path = format!("{table_path}.deequ_checks[{j}]");
        match deequ_check(c, &path, table, columns, check) {
            Some(spec) => specs.push(spec),
            None => ok = false,
        }
    }
    ok.then_some(specs)
}

/// The canonical lower-case metric name, or None (reported).
fn metric_name(c: &mut Checker, path: &str, metric: Option<&str>) -> Option<&'static str> {
    let Some(metric) = metric else {
        c.error_hint(
            path,
            "`metric` is required",
            Some(format!("one of {}", METRICS.join(", "))),
        );
        return None;
    };
    let lower = metric.to_ascii_lowercase();
    match METRICS.iter().find(|m| **m == lower) {
        Some(m) => Some(m),
        None => {
            c.error_hint(
                path,
                format!("Unknown Deequ metric: {metric}"),
                did_you_mean(&lower, METRICS.iter().copied())
                    .or_else(|| Some(format!("one of {}", METRICS.join(", ")))),
            );
            None
        }
    }
}

fn deequ_check(
    c: &mut Checker,
    path: &str,
    table: &str,
    columns: Option<&ColumnSet>,
    check: &DeequCheckConfig,
) -> Option<MetricCheckSpec> {
    let metric = metric_name(c, &format!("{path}.metric"), check.metric.as_deref());
    let severity = c.severity(&format!("{path}.severity"), check.severity.as_deref());
    let threshold = threshold(
        c,
        &format!("{path}.threshold"),
        metric,
        check.threshold.as_ref(),
    );
    let column_path = format!("{path}.column");
    let (kind, column) = match metric? {
        "size" => {
            if check.column.is_some() {
                c.warn(&column_path, "size counts rows; `column` is ignored");
            }
            ignore(c, path, "pattern", check.pattern.is_some(), "size");
            ignore(c, path, "expression", check.expression.is_some(), "size");
            (MetricKind::Size, None)
        }
        simple @ ("completeness" | "uniqueness") => {
            ignore(c, path, "pattern", check.pattern.is_some(), simple);
            ignore(c, path, "expression", check.expression.is_some(), simple);
            let col = c.column_ref(&column_path, check.column.as_deref(), table, columns)?;
            let kind = if simple == "completeness" {
                MetricKind::Completeness
            } else {
                MetricKind::Uniqueness
            };
            (kind, Some(col.name))
        }
        _ => compliance(c, path, table, columns, check)?,
    };
    Some(MetricCheckSpec {
        kind,
        column,
        threshold: threshold?,
        severity: severity?,
    })
}

fn ignore(c: &mut Checker, path: &str, key: &str, present: bool, metric: &str) {
    if present {
        c.warn(
            &format!("{path}.{key}"),
            format!("`{key}` is ignored by {metric}"),
        );
    }
}

/// `compliance` measures the fraction of rows matching `pattern` (on `column`) or `expression`.
fn compliance(
    c: &mut Checker,
    path: &str,
    table: &str,
    columns: Option<&ColumnSet>,
    check: &DeequCheckConfig,
) -> Option<(MetricKind, Option<String>)> {
    let column_path = format!("{path}.column");
    match (check.pattern.as_deref(), check.expression.as_deref()) {
        (Some(_), Some(_)) => {
            c.error(
                path,
                "a compliance check takes `pattern` or `expression`, not both",
            );
            None
        }
        (None, None) => {
            c.error_hint(
                path,
                "a compliance check needs `pattern` (a regex on `column`) or `expression` (a condition on the row)",
                Some("e.g. {metric: compliance, column: vin, pattern: \"^[A-HJ-NPR-Z0-9]{17}$\", threshold: 0.99}".into()),
            );
            None
        }
        (Some(pattern), None) => {
            let col = c.column_ref(&column_path, check.column.as_deref(), table, columns);
            let regex = compile_pattern(c, &format!("{path}.pattern"), pattern);
            let col = col?;
            let name = check
                .name
                .clone()
                .unwrap_or_else(|| format!("{}_compliance", col.name));
            let kind = MetricKind::Compliance {
                name,
                predicate: CompliancePredicate::Pattern(regex?),
            };
            Some((kind, Some(col.name)))
        }
        (None, Some(expression)) => {
            if expression.trim().is_empty() {
                c.error(&format!("{path}.expression"), "`expression` is empty");
                return None;
            }
            let column = match check.column.as_deref() {
                Some(_) => Some(
                    c.column_ref(&column_path, check.column.as_deref(), table, columns)?
                        .name,
                ),
                None => None,
            };
            let name = match (&check.name, &column) {
                (Some(name), _) => name.clone(),
                (None, Some(col)) => format!("{col}_compliance"),
                (None, None) => {
                    c.error(
                        path,
                        "a compliance check with an `expression` and no `column` needs a `name`",
                    );
                    return None;
                }
            };
            let kind = MetricKind::Compliance {
                name,
                predicate: CompliancePredicate::Expression(expression.to_string()),
            };
            Some((kind, column))
        }
    }
}

/// Passes when value >= threshold: fractions lie in [0, 1], size is a row count (int or float).
fn threshold(
    c: &mut Checker,
    path: &str,
    metric: Option<&str>,
    threshold: Option<&Value>,
) -> Option<Option<f64>> {
    let value = match threshold {
        None | Some(Value::Null) => return Some(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(other) => {
            c.error(
                path,
                format!("expected a number, found {}", describe(other)),
            );
            return None;
        }
    }?;
    match metric {
        Some("size") if value < 0.0 => {
            c.error(
                path,
                format!("a size threshold is a row count and cannot be negative, found {value}"),
            );
            None
        }
        Some(m) if m != "size" && !(0.0..=1.0).contains(&value) => {
            c.error(
                path,
                format!("a {m} threshold is a fraction between 0 and 1, found {value}"),
            );
            None
        }
        _ => Some(Some(value)),
    }
}

pub(super) fn anomaly_checks(
    c: &mut Checker,
    table_path: &str,
    table: &str,
    columns: Option<&ColumnSet>,
    checks: &[AnomalyCheckConfig],
    computed: &[MetricCheckSpec],
) -> Option<Vec<AnomalyCheckSpec>> {
    let mut specs = Vec::new();
    let mut ok = true;
    for (j, check) in checks.iter().enumerate() {
        let path = format!("{table_path}.anomaly_checks[{j}]");
        match anomaly_check(c, &path, table, columns, check, computed) {
            Some(spec) => specs.push(spec),
            None => ok = false,
        }
    }
    ok.then_some(specs)
}

fn anomaly_check(
    c: &mut Checker,
    path: &str,
    table: &str,
    columns: Option<&ColumnSet>,
    check: &AnomalyCheckConfig,
    computed: &[MetricCheckSpec],
) -> Option<AnomalyCheckSpec> {
    let metric = metric_name(c, &format!("{path}.metric"), check.metric.as_deref());
    let severity = c.severity(&format!("{path}.severity"), check.severity.as_deref());
    let column_path = format!("{path}.column");
    let column = match (metric, check.column.as_deref()) {
        (Some("size"), Some(_)) => {
            c.warn(&column_path, "size counts rows; `column` is ignored");
            Some(None)
        }
        (Some("size"), None) | (None, _) => Some(None),
        (Some(_), col) => c
            .column_ref(&column_path, col, table, columns)
            .map(|r| Some(r.name)),
    };
    let strategy = strategy(c, path, check);
    let min_history = match check.min_history {
        None => Some(DEFAULT_MIN_HISTORY),
        Some(0) => {
            c.error(
                &format!("{path}.min_history"),
                "min_history must be at least 1",
            );
            None
        }
        Some(n) => Some(n),
    };
    let (metric, column) = (metric?, column?);
    let canonical = canonical_metric(metric);
    let is_computed = computed.iter().any(|m| {
        m.metric_name() == canonical
            && (metric == "size" || m.column.as_deref() == column.as_deref())
    });
    if !is_computed {
        let watched = match &column {
            Some(col) => format!("{canonical}({col})"),
            None => canonical.to_string(),
        };
        c.warn(
            path,
            format!("no deequ_checks entry computes {watched}, so this anomaly check has no history to compare"),
        );
    }
    Some(AnomalyCheckSpec {
        metric: canonical.to_string(),
        column,
        strategy: strategy?,
        min_history: min_history?,
        severity: severity?,
    })
}

/// The name written to `dq_metrics.metric_name` (Deequ's spelling).
fn canonical_metric(lower: &str) -> &'static str {
    match lower {
        "size" => "Size",
        "completeness" => "Completeness",
        "uniqueness" => "Uniqueness",
        _ => "Compliance",
    }
}

fn strategy(c: &mut Checker, path: &str, check: &AnomalyCheckConfig) -> Option<AnomalyStrategy> {
    let strategy_path = format!("{path}.strategy");
    match check.strategy.as_deref() {
        None => {
            c.error_hint(
                &strategy_path,
                "`strategy` is required",
                Some(format!("one of {}", ANOMALY_STRATEGIES.join(", "))),
            );
            None
        }
        Some("relative_rate_of_change") => {
            if check.k.is_some() {
                c.warn(
                    &format!("{path}.k"),
                    "`k` is read by the stddev strategy only (ignored)",
                );
            }
            let mut ok = true;
            for (key, value) in [
                ("max_increase", check.max_increase),
                ("max_decrease", check.max_decrease),
            ] {
                if let Some(v) = value
                    && !(v.is_finite() && v >= 0.0)
                {
                    c.error(
                        &format!("{path}.{key}"),
                        format!("{key} is a ratio and must be 0 or more, found {v}"),
                    );
                    ok = false;
                }
            }
            if check.max_increase.is_none() && check.max_decrease.is_none() {
                c.error(
                    path,
                    "relative_rate_of_change needs `max_increase`, `max_decrease` or both",
                );
                ok = false;
            }
            if let (Some(inc), Some(dec)) = (check.max_increase, check.max_decrease)
                && dec > inc
            {
                c.error(
                    &format!("{path}.max_decrease"),
                    format!("max_decrease ({dec}) exceeds max_increase ({inc})"),
                );
                ok = false;
            }
            ok.then_some(AnomalyStrategy::RelativeRateOfChange {
                max_increase: check.max_increase,
                max_decrease: check.max_decrease,
            })
        }
        Some("stddev") => {
            for (key, present) in [
                ("max_increase", check.max_increase.is_some()),
                ("max_decrease", check.max_decrease.is_some()),
            ] {
                if present {
                    c.warn(
                        &format!("{path}.{key}"),
                        format!("`{key}` is read by relative_rate_of_change only (ignored)"),
                    );
                }
            }
            match check.k {
                None => Some(AnomalyStrategy::StdDev {
                    k: DEFAULT_STDDEV_K,
                }),
                Some(k) if k.is_finite() && k > 0.0 => Some(AnomalyStrategy::StdDev { k }),
                Some(k) => {
                    c.error(
                        &format!("{path}.k"),
                        format!("k must be greater than 0, found {k}"),
                    );
                    None
                }
            }
        }
        Some(other) => {
            c.error_hint(
                &strategy_path,
                format!("unknown anomaly strategy {other:?}"),
                did_you_mean(other, ANOMALY_STRATEGIES.iter().copied())
                    .or_else(|| Some(format!("one of {}", ANOMALY_STRATEGIES.join(", ")))),
            );
            None
        }
    }
}
