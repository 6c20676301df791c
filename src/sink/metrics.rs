//! `dq_metrics`: one row per metric per batch (and per cumulative state), appended by every
//! source table's stream into the one shared table.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::DeltaTable;
use deltalake::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::record_batch::RecordBatch;

use super::error::{Result, SinkError};
use super::lake::{Lake, LakeTable};
use super::quarantine::append;
use super::scd2::CommitOutcome;
use super::watermarks::{TxnPlan, last_offsets, partitions, plan_transactions, recorded};
use crate::pipeline::plan::{MetricRow, SourcePosition};
use crate::pipeline::schema::{METRICS_TABLE, metrics_schema};

impl Lake {
    /// Appends one batch's metric rows to `dq_metrics` in one commit carrying `ends` (the source
    /// table's partitions) as transaction actions; a batch already recorded is skipped. Several
    /// streams append concurrently: appends do not conflict with each other, and a real
    /// conflict reruns the cycle on a fresh read. A non-finite value (e.g. a ratio over zero
    /// rows) is stored as NULL: there is no value to report.
    pub async fn append_metrics(
        &self,
        table_name: &str,
        batch_id: i64,
        rows: &[MetricRow],
        ends: &[SourcePosition],
        app_prefix: &str,
        now: DateTime<Utc>,
    ) -> Result<CommitOutcome> {
        let ends = last_offsets(ends);
        if rows.is_empty() {
            // Nothing to append, but the progress through these offsets must still count.
            self.note_progress(&LakeTable::Metrics, app_prefix, &ends)
                .await?;
            return Ok(CommitOutcome::Unchanged { rows_unchanged: 0 });
        }
        let batch = metrics_batch(batch_id, rows, now)?;
        let schema = metrics_schema();
        let mut lock = self.lock(LakeTable::Metrics).await;
        loop {
            let target = lock.latest_or_create(&schema).await?;
            match append_unless_recorded(target, &batch, &ends, app_prefix).await {
                Ok((committed, outcome)) => {
                    tracing::debug!(table = table_name, batch_id, ?outcome, "metrics appended");
                    return Ok(lock.keep(committed, outcome));
                }
                Err(err) => lock.retry_or_fail(err).await?,
            }
        }
    }
}

async fn append_unless_recorded(
    target: DeltaTable,
    batch: &RecordBatch,
    ends: &BTreeMap<(String, i32), i64>,
    app_prefix: &str,
) -> Result<(Option<DeltaTable>, CommitOutcome)> {
    let seen = recorded(&target, METRICS_TABLE, app_prefix, &partitions(ends)).await?;
    let txns = match plan_transactions(app_prefix, ends, &seen) {
        TxnPlan::Replay => return Ok((None, CommitOutcome::Replayed)),
        TxnPlan::Apply(txns) => txns,
    };
    let committed = append(target, METRICS_TABLE, batch.clone(), txns).await?;
    let version = committed.version().unwrap_or_default();
    let outcome = CommitOutcome::Committed {
        version,
        rows_inserted: batch.num_rows(),
        rows_closed: 0,
        rows_unchanged: 0,
    };
    Ok((Some(committed), outcome))
}

/// Metric rows in the `dq_metrics` schema.
pub(crate) fn metrics_batch(
    batch_id: i64,
    rows: &[MetricRow],
    now: DateTime<Utc>,
) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            rows.iter()
                .map(|r| Some(r.table_name.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(Int64Array::from(vec![batch_id; rows.len()])),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.metric_name.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.column_name.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.metric_value.is_finite().then_some(r.metric_value))
                .collect::<Float64Array>(),
        ),
        Arc::new(rows.iter().map(|r| r.threshold).collect::<Float64Array>()),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.passed))
                .collect::<BooleanArray>(),
        ),
        Arc::new(
            TimestampMicrosecondArray::from(vec![now.timestamp_micros(); rows.len()])
                .with_timezone("UTC"),
        ),
        Arc::new(rows.iter().map(|r| Some(r.scope)).collect::<StringArray>()),
    ];
    RecordBatch::try_new(metrics_schema(), columns).map_err(|source| SinkError::Arrow {
        table: METRICS_TABLE.to_string(),
        operation: "building metric rows",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::Float64Type;

    fn row(value: f64) -> MetricRow {
        MetricRow {
            table_name: "t".into(),
            metric_name: "Completeness".into(),
            column_name: Some("c".into()),
            metric_value: value,
            threshold: Some(0.9),
            passed: value >= 0.9,
            scope: "batch",
        }
    }

    #[test]
    fn a_non_finite_value_is_stored_as_null() {
        let batch = metrics_batch(7, &[row(0.95), row(f64::NAN)], Utc::now()).expect("valid rows");
        let values = batch
            .column_by_name("metric_value")
            .expect("column")
            .as_primitive::<Float64Type>();
        assert_eq!(values.value(0), 0.95);
        assert!(values.is_null(1));
    }
}
