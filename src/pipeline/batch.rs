//! One micro-batch of one table, from decoded events to a [`BatchPlan`]:
//! rules → quarantine → transforms → SCD2 selection → metrics. Pure: `now` comes in as an
//! argument, and nothing here reads or writes anything but its arguments (and logs counts).
//!
//! Accounting, so nothing is lost: `events = loaded + deletes + quarantined + control_records`,
//! where `quarantined` counts malformed messages, rows failing an error rule and rows a transform
//! could not be applied to.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{ArrayRef, AsArray, RecordBatch, RecordBatchOptions, StringArray};

use crate::config::spec::{CompliancePredicate, MetricKind, Severity, TableSpec};

use super::anomaly;
use super::error::{PipelineError, Result, arrow_context};
use super::metrics::{
    Merged, SCOPE_BATCH, SCOPE_CUMULATIVE, TableMetricState, measure, metric_rows,
};
use super::pii::PiiMasks;
use super::plan::{BatchPlan, BatchStats, Changes, DecodedBatch, Operation};
use super::quarantine::{self, RejectedRow};
use super::reason;
use super::rules::{self, RuleOutcome};
use super::scd2;
use super::schema::{OPERATION, SOURCE_TS, changes_schema, decoded_schema, source_fields};
use super::selection::RowSelection;
use super::transforms;
use super::values::ColumnValues;

/// Plans one decoded micro-batch of `table`: what to merge, what to quarantine, which metrics to
/// record. `state` is the table's cumulative metric state before this batch; the plan's
/// cumulative metrics include the batch, and its `metric_state` is the batch's own, for the
/// caller to merge in once the batch is applied.
pub fn plan(
    table: &TableSpec,
    decoded: &DecodedBatch,
    state: &TableMetricState,
    now: DateTime<Utc>,
) -> Result<BatchPlan, PipelineError> {
    let rows = &decoded.rows;
    check_schema(table, rows)?;
    let n = rows.num_rows();

    let operations = rows
        .column_by_name(OPERATION)
        .map(|c| c.as_string::<i32>())
        .ok_or_else(|| schema_error(table, "no _operation column"))?;
    let is_delete: Vec<bool> = (0..n)
        .map(|row| operations.value(row) == Operation::Delete.as_dms())
        .collect();
    let evaluated: Vec<bool> = is_delete.iter().map(|d| !d).collect();

    let key = scd2::key_column(table, rows)?;
    let key_values = ColumnValues::new(&key)
        .ok_or_else(|| schema_error(table, "unsupported primary key type"))?;
    let outcomes = rules::evaluate(table, rows, &evaluated, key_values)?;
    log_warning_failures(table, &outcomes);

    let masks = PiiMasks::for_quarantine(table);
    let failed_error_rule: Vec<bool> = (0..n)
        .map(|row| {
            outcomes
                .iter()
                .any(|o| o.failed[row] && table.rules[o.rule].severity == Severity::Error)
        })
        .collect();

    let transformed = transforms::apply(table, rows, &is_delete, &masks)?;
    let mut transform_failures: BTreeMap<usize, Vec<&transforms::TransformFailure>> =
        BTreeMap::new();
    for failure in &transformed.failures {
        if !failed_error_rule[failure.row] {
            transform_failures
                .entry(failure.row)
                .or_default()
                .push(failure);
        }
    }

    let mut rejected = Vec::new();
    let mut participants = Vec::with_capacity(n);
    for (row, &failed_rule) in failed_error_rule.iter().enumerate() {
        let transform_failed = transform_failures.get(&row);
        if failed_rule || transform_failed.is_some() {
            rejected.push(rejected_row(
                table,
                rows,
                &outcomes,
                transform_failed.map(Vec::as_slice).unwrap_or_default(),
                row,
                &masks,
            )?);
        } else {
            participants.push(row as u32);
        }
    }

    let selection = scd2::select(table, rows, &participants, &is_delete)?;
    let changes = build_changes(table, rows, &transformed.columns, selection.changes)?;
    let quarantine = quarantine::build(table, rows, &rejected, &decoded.malformed, &masks, now)?;

    let has_events = n > 0 || !decoded.malformed.is_empty();
    let (metrics, metric_state) = if has_events {
        let measured = take_source_columns(table, rows, &selection.current)?;
        let mut batch_state = measure(table, &measured, &outcomes)?;
        let mut metrics = metric_rows(table, &batch_state, SCOPE_BATCH);
        log_breaches(table, &metrics);
        let anomalies = anomaly::check_batch(table, state, &mut batch_state);
        let cumulative = Merged {
            cumulative: state,
            batch: &batch_state,
        };
        metrics.extend(metric_rows(table, &cumulative, SCOPE_CUMULATIVE));
        metrics.extend(anomalies);
        (metrics, batch_state)
    } else {
        (Vec::new(), TableMetricState::default())
    };

    let deletes = participants
        .iter()
        .filter(|&&row| is_delete[row as usize])
        .count() as u64;
    let stats = BatchStats {
        events: (n + decoded.malformed.len()) as u64 + decoded.control_records,
        malformed: decoded.malformed.len() as u64,
        control_records: decoded.control_records,
        deletes,
        loaded: participants.len() as u64 - deletes,
        quarantined: quarantine.num_rows() as u64,
        rule_failures: outcomes
            .iter()
            .filter(|o| o.failures > 0)
            .map(|o| (table.rules[o.rule].id.clone(), o.failures))
            .collect(),
    };
    Ok(BatchPlan {
        table: table.name.clone(),
        changes,
        quarantine,
        metrics,
        metric_state,
        stats,
    })
}

fn schema_error(table: &TableSpec, detail: &str) -> PipelineError {
    PipelineError::SchemaMismatch {
        table: table.name.clone(),
        detail: detail.to_owned(),
    }
}

fn check_schema(table: &TableSpec, rows: &RecordBatch) -> Result<()> {
    let expected = decoded_schema(table);
    let actual = rows.schema();
    if expected.fields().len() != actual.fields().len() {
        return Err(schema_error(
            table,
            &format!(
                "{} columns, expected {}",
                actual.fields().len(),
                expected.fields().len()
            ),
        ));
    }
    for (want, got) in expected.fields().iter().zip(actual.fields()) {
        if want.name() != got.name() || want.data_type() != got.data_type() {
            return Err(schema_error(
                table,
                &format!(
                    "column {} {}, expected {} {}",
                    got.name(),
                    got.data_type(),
                    want.name(),
                    want.data_type()
                ),
            ));
        }
    }
    Ok(())
}

/// Every rule a quarantined row failed (errors and warnings, config order), then the transforms
/// that failed on it, each with its reason.
fn rejected_row(
    table: &TableSpec,
    rows: &RecordBatch,
    outcomes: &[RuleOutcome],
    transform_failures: &[&transforms::TransformFailure],
    row: usize,
    masks: &PiiMasks,
) -> Result<RejectedRow> {
    let mut failed = Vec::new();
    let mut reasons = Vec::new();
    for outcome in outcomes.iter().filter(|o| o.failed[row]) {
        let rule = &table.rules[outcome.rule];
        let values = rules::column_values(table, rows, rule)?;
        failed.push(rule.id.clone());
        reasons.push(reason::rule_failure(rule, values, row, masks));
    }
    for failure in transform_failures {
        failed.push(failure.transform_id.clone());
        reasons.push(failure.reason.clone());
    }
    Ok(RejectedRow {
        row,
        failed,
        reasons,
    })
}

/// The changes: transformed data columns, `_operation` (stored form), `_effective_from` (the
/// source commit time), at the selected rows in order. The columns are the batch's own, whole:
/// the rows are picked where they are used (see [`Changes`]).
fn build_changes(
    table: &TableSpec,
    rows: &RecordBatch,
    transformed: &[ArrayRef],
    selected: Vec<u32>,
) -> Result<Changes> {
    let operations = rows
        .column_by_name(OPERATION)
        .map(|c| c.as_string::<i32>())
        .ok_or_else(|| schema_error(table, "no _operation column"))?;
    let stored: StringArray = operations
        .iter()
        .map(|op| op.and_then(Operation::from_dms).map(|op| op.as_stored()))
        .collect();
    let source_ts = rows
        .column_by_name(SOURCE_TS)
        .ok_or_else(|| schema_error(table, "no _source_ts column"))?;
    let mut columns = transformed.to_vec();
    columns.push(Arc::new(stored));
    columns.push(source_ts.clone());
    let batch = RecordBatch::try_new(changes_schema(table), columns)
        .map_err(arrow_context(&table.name, "building SCD2 changes"))?;
    let every_row = selected.len() == rows.num_rows()
        && selected
            .iter()
            .enumerate()
            .all(|(i, &row)| row as usize == i);
    Ok(Changes {
        batch,
        rows: (!every_row).then_some(selected),
    })
}

/// The data columns the checks read (config names and types) at the given rows, for metrics:
/// every column when a compliance expression may name any of them.
fn take_source_columns(
    table: &TableSpec,
    rows: &RecordBatch,
    selected: &[u32],
) -> Result<RecordBatch> {
    let selection = RowSelection::new(selected, rows.num_rows());
    let any_column = table.checks.iter().any(|c| {
        matches!(
            c.kind,
            MetricKind::Compliance {
                predicate: CompliancePredicate::Expression(_),
                ..
            }
        )
    });
    let read = |name: &str| {
        any_column
            || table
                .checks
                .iter()
                .any(|c| c.column.as_deref() == Some(name))
    };
    let (fields, columns): (Vec<_>, Vec<_>) = source_fields(table)
        .into_iter()
        .enumerate()
        .filter(|(_, field)| read(field.name()))
        .map(|(i, field)| selection.apply(rows.column(i).as_ref()).map(|c| (field, c)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(arrow_context(&table.name, "selecting rows to measure"))?
        .into_iter()
        .unzip();
    let schema = Arc::new(deltalake::arrow::datatypes::Schema::new(fields));
    let options = RecordBatchOptions::new().with_row_count(Some(selected.len()));
    RecordBatch::try_new_with_options(schema, columns, &options)
        .map_err(arrow_context(&table.name, "selecting rows to measure"))
}

/// One line per warning rule that failed in this batch: counts only, never values.
fn log_warning_failures(table: &TableSpec, outcomes: &[RuleOutcome]) {
    for outcome in outcomes.iter().filter(|o| o.failures > 0) {
        let rule = &table.rules[outcome.rule];
        if rule.severity == Severity::Warning {
            tracing::warn!(
                table = %table.name,
                rule = %rule.id,
                column = %rule.column,
                failures = outcome.failures,
                evaluated = outcome.evaluated,
                "warning rule failed; rows loaded anyway"
            );
        }
    }
}

/// Batch metrics below their threshold, at the check's severity.
fn log_breaches(table: &TableSpec, metrics: &[super::plan::MetricRow]) {
    for metric in metrics.iter().filter(|m| !m.passed) {
        let severity = table
            .checks
            .iter()
            .find(|c| {
                let instance = match &c.kind {
                    MetricKind::Compliance { name, .. } => Some(name),
                    _ => c.column.as_ref(),
                };
                c.metric_name() == metric.metric_name && instance == metric.column_name.as_ref()
            })
            .map(|c| c.severity)
            .unwrap_or(Severity::Warning);
        let column = metric.column_name.as_deref().unwrap_or("");
        match severity {
            Severity::Error => {
                tracing::error!(table = %table.name, metric = %metric.metric_name, column, value = metric.metric_value, threshold = metric.threshold, "DQ threshold breach")
            }
            Severity::Warning => {
                tracing::warn!(table = %table.name, metric = %metric.metric_name, column, value = metric.metric_value, threshold = metric.threshold, "DQ threshold breach")
            }
        }
    }
}
