//! Anomaly checks: a batch's metric against the history of that metric in earlier batches.
//!
//! The history of each check is a mergeable state kept with the table's cumulative metric state
//! ([`TableMetricState::anomaly_history`]), so it is saved, reloaded and replayed exactly as the
//! cumulative metrics are: a batch's state carries its own point, and merging it in appends it.
//!
//! Strategies, as Deequ's:
//! - `relative_rate_of_change` (Deequ's RelativeRateOfChangeStrategy): the value divided by the
//!   previous batch's is within `[max_decrease, max_increase]`, i.e. the value lies within
//!   `previous × max_decrease ..= previous × max_increase` (a missing side is unbounded).
//! - `stddev` (Deequ's OnlineNormalStrategy): the value lies within `mean ± k · stddev` of the
//!   earlier values (sample standard deviation); like Deequ by default, a value found anomalous
//!   does not enter the mean and deviation, so one outlier does not widen the band for the next.
//!
//! A check fires once `min_history` earlier batches have a value. Its outcome is a `dq_metrics`
//! row with scope `anomaly`: the watched metric's name and column, the batch's value, as
//! threshold the bound on the side the value moved to, and `passed` false for an anomaly.

use serde::{Deserialize, Serialize};

use crate::config::spec::{AnomalyCheckSpec, AnomalyStrategy, Severity, TableSpec};

use super::metrics::{TableMetricState, check_value};
use super::plan::MetricRow;

pub const SCOPE_ANOMALY: &str = "anomaly";

/// The earlier values of one anomaly check's metric, as the check's strategy needs them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricHistory {
    /// Batches that had a value.
    pub points: u64,
    /// The latest of them.
    pub last: Option<f64>,
    /// Values that entered the mean and deviation (those not found anomalous), with their mean
    /// and sum of squared differences from it (Welford's online form).
    pub count: u64,
    pub mean: f64,
    pub m2: f64,
}

impl MetricHistory {
    /// One batch's value.
    fn point(value: f64, anomalous: bool) -> MetricHistory {
        MetricHistory {
            points: 1,
            last: Some(value),
            count: u64::from(!anomalous),
            mean: if anomalous { 0.0 } else { value },
            m2: 0.0,
        }
    }

    /// Appends `later`: the result is the history of both, in order (Chan et al.'s combination
    /// of means and squared differences).
    pub fn merge(&mut self, later: MetricHistory) {
        self.points += later.points;
        self.last = later.last.or(self.last);
        let count = self.count + later.count;
        if count == 0 {
            return;
        }
        let (a, b) = (self.count as f64, later.count as f64);
        let delta = later.mean - self.mean;
        self.mean += delta * b / count as f64;
        self.m2 += later.m2 + delta * delta * a * b / count as f64;
        self.count = count;
    }

    /// Sample standard deviation of the values counted; 0 for a single value.
    fn stddev(&self) -> f64 {
        if self.count < 2 {
            0.0
        } else {
            (self.m2 / (self.count - 1) as f64).sqrt()
        }
    }
}

/// What a check found for one batch's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyOutcome {
    pub lower: f64,
    pub upper: f64,
    pub anomalous: bool,
    /// The bound on the side the value lies: the upper one at or above the band's middle.
    pub threshold: f64,
}

/// Judges `value` against `history` (the earlier batches), or None while the history is
/// shorter than the check's `min_history`.
pub fn judge(
    check: &AnomalyCheckSpec,
    history: &MetricHistory,
    value: f64,
) -> Option<AnomalyOutcome> {
    if history.points < check.min_history {
        return None;
    }
    // The band, and the value it is centred on: the previous value or the mean.
    let (lower, middle, upper) = match check.strategy {
        AnomalyStrategy::RelativeRateOfChange {
            max_increase,
            max_decrease,
        } => {
            let previous = history.last?;
            (
                max_decrease.map_or(f64::NEG_INFINITY, |d| previous * d),
                previous,
                max_increase.map_or(f64::INFINITY, |i| previous * i),
            )
        }
        AnomalyStrategy::StdDev { k } => {
            if history.count == 0 {
                return None;
            }
            let spread = k * history.stddev();
            (history.mean - spread, history.mean, history.mean + spread)
        }
    };
    Some(AnomalyOutcome {
        lower,
        upper,
        anomalous: value < lower || value > upper,
        threshold: if value >= middle { upper } else { lower },
    })
}

/// Where a check's history is kept in the metric state. A changed `k` starts a new history,
/// since which values entered the deviation depends on it.
pub fn history_key(check: &AnomalyCheckSpec, instance: Option<&str>) -> String {
    let watched = match instance {
        Some(instance) => format!("{}({instance})", check.metric),
        None => check.metric.clone(),
    };
    match check.strategy {
        AnomalyStrategy::RelativeRateOfChange { .. } => {
            format!("{watched}/relative_rate_of_change")
        }
        AnomalyStrategy::StdDev { k } => format!("{watched}/stddev(k={k})"),
    }
}

/// Runs the table's anomaly checks on a batch: the `dq_metrics` rows of those that fire, logged
/// at their severity when anomalous. Each check's value joins the history in `batch` (the
/// batch's own state), for the caller to merge into the cumulative state once applied.
pub(crate) fn check_batch(
    table: &TableSpec,
    cumulative: &TableMetricState,
    batch: &mut TableMetricState,
) -> Vec<MetricRow> {
    let mut rows = Vec::new();
    for check in &table.anomaly_checks {
        // The deequ check that computes the watched metric (validation warns when none does).
        let Some(computed) = table.checks.iter().find(|c| {
            c.metric_name() == check.metric
                && (check.column.is_none() || c.column.as_deref() == check.column.as_deref())
        }) else {
            continue;
        };
        let (instance, value) = check_value(computed, &*batch);
        let Some(value) = value.filter(|v| v.is_finite()) else {
            continue;
        };
        let key = history_key(check, instance.as_deref());
        let history = cumulative
            .anomaly_history
            .get(&key)
            .copied()
            .unwrap_or_default();
        let outcome = judge(check, &history, value);
        if let Some(outcome) = outcome {
            if outcome.anomalous {
                log_anomaly(table, check, instance.as_deref(), value, &outcome);
            }
            rows.push(MetricRow {
                table_name: table.name.clone(),
                metric_name: check.metric.clone(),
                column_name: instance,
                metric_value: value,
                threshold: Some(outcome.threshold),
                passed: !outcome.anomalous,
                scope: SCOPE_ANOMALY,
            });
        }
        let anomalous = outcome.is_some_and(|o| o.anomalous);
        batch
            .anomaly_history
            .entry(key)
            .or_default()
            .merge(MetricHistory::point(value, anomalous));
    }
    rows
}

fn log_anomaly(
    table: &TableSpec,
    check: &AnomalyCheckSpec,
    column: Option<&str>,
    value: f64,
    outcome: &AnomalyOutcome,
) {
    let strategy = match check.strategy {
        AnomalyStrategy::RelativeRateOfChange { .. } => "relative_rate_of_change",
        AnomalyStrategy::StdDev { .. } => "stddev",
    };
    let column = column.unwrap_or("");
    let (lower, upper) = (outcome.lower, outcome.upper);
    match check.severity {
        Severity::Error => {
            tracing::error!(table = %table.name, metric = %check.metric, column, value, lower, upper, strategy, "DQ anomaly")
        }
        Severity::Warning => {
            tracing::warn!(table = %table.name, metric = %check.metric, column, value, lower, upper, strategy, "DQ anomaly")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(strategy: AnomalyStrategy, min_history: u64) -> AnomalyCheckSpec {
        AnomalyCheckSpec {
            metric: "Size".into(),
            column: None,
            strategy,
            min_history,
            severity: Severity::Warning,
        }
    }

    fn history_of(values: &[f64]) -> MetricHistory {
        let mut history = MetricHistory::default();
        for &v in values {
            history.merge(MetricHistory::point(v, false));
        }
        history
    }

    #[test]
    fn rate_of_change_bounds_follow_the_previous_value() {
        let rate = check(
            AnomalyStrategy::RelativeRateOfChange {
                max_increase: Some(2.0),
                max_decrease: Some(0.5),
            },
            1,
        );
        let history = history_of(&[1000.0, 100.0]);
        let at = |v| judge(&rate, &history, v).expect("fires");
        assert!(!at(200.0).anomalous, "exactly max_increase is allowed");
        assert!(!at(50.0).anomalous, "exactly max_decrease is allowed");
        let up = at(201.0);
        assert!(up.anomalous);
        assert_eq!((up.lower, up.upper, up.threshold), (50.0, 200.0, 200.0));
        let down = at(49.0);
        assert!(down.anomalous);
        assert_eq!(down.threshold, 50.0);
    }

    #[test]
    fn rate_of_change_with_one_side_leaves_the_other_open() {
        let rate = check(
            AnomalyStrategy::RelativeRateOfChange {
                max_increase: Some(3.0),
                max_decrease: None,
            },
            1,
        );
        let history = history_of(&[10.0]);
        assert!(!judge(&rate, &history, 0.0).expect("fires").anomalous);
        assert!(judge(&rate, &history, 31.0).expect("fires").anomalous);
        // From zero, any growth is an infinite rate.
        let from_zero = history_of(&[0.0]);
        assert!(!judge(&rate, &from_zero, 0.0).expect("fires").anomalous);
        assert!(judge(&rate, &from_zero, 1.0).expect("fires").anomalous);
    }

    #[test]
    fn stddev_band_is_the_mean_plus_minus_k_sample_deviations() {
        let band = check(AnomalyStrategy::StdDev { k: 2.0 }, 3);
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, squared differences 32, sample deviation √(32/7).
        let history = history_of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(history.mean, 5.0);
        let spread = 2.0 * (32.0f64 / 7.0).sqrt();
        let outcome = judge(&band, &history, 5.0).expect("fires");
        assert!((outcome.lower - (5.0 - spread)).abs() < 1e-12);
        assert!((outcome.upper - (5.0 + spread)).abs() < 1e-12);
        assert!(!outcome.anomalous);
        assert!(
            judge(&band, &history, 5.0 + spread + 1e-9)
                .expect("fires")
                .anomalous
        );
        assert!(
            judge(&band, &history, 5.0 - spread - 1e-9)
                .expect("fires")
                .anomalous
        );
    }

    #[test]
    fn nothing_fires_before_min_history_points() {
        let band = check(AnomalyStrategy::StdDev { k: 1.0 }, 3);
        assert_eq!(judge(&band, &history_of(&[1.0, 1.0]), 100.0), None);
        assert!(
            judge(&band, &history_of(&[1.0, 1.0, 1.0]), 100.0)
                .expect("fires")
                .anomalous
        );
    }

    #[test]
    fn an_anomalous_value_stays_out_of_the_mean_but_is_the_previous_value() {
        let mut history = history_of(&[10.0, 12.0]);
        history.merge(MetricHistory::point(500.0, true));
        assert_eq!((history.points, history.count), (3, 2));
        assert_eq!(history.mean, 11.0);
        assert_eq!(history.last, Some(500.0));
    }

    #[test]
    fn merging_in_parts_equals_merging_one_by_one() {
        let values = [3.0, 8.5, 1.25, 9.0, 4.0, 4.0, 7.5];
        let whole = history_of(&values);
        let mut parts = history_of(&values[..3]);
        parts.merge(history_of(&values[3..]));
        assert_eq!((parts.points, parts.count, parts.last), (7, 7, Some(7.5)));
        assert!((parts.mean - whole.mean).abs() < 1e-12);
        assert!((parts.m2 - whole.m2).abs() < 1e-9);
        // An empty later part keeps the last value.
        parts.merge(MetricHistory::default());
        assert_eq!(parts.last, Some(7.5));
    }
}
