//! Rows for `<table>_quarantine`: rejected rows with their source columns (PII masked unless the
//! table opts out), every rule they failed, a reason text and their Kafka position; malformed
//! messages with NULL columns and their raw payload.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, Int64Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray, UInt32Array, new_null_array,
};
use deltalake::arrow::compute::{concat, take};

use crate::config::spec::TableSpec;

use super::error::{Result, arrow_context};
use super::pii::PiiMasks;
use super::plan::{MalformedRecord, Operation};
use super::schema::{OFFSET, OPERATION, PARTITION, TOPIC, quarantine_schema};

/// `_failed_rules` of a malformed record (it failed decoding, not a rule).
pub const MALFORMED_RULE: &str = "malformed";

/// A decoded row that is quarantined, with what it failed.
#[derive(Debug, Clone)]
pub(crate) struct RejectedRow {
    pub row: usize,
    /// Rule ids (config order, errors and warnings), then transform ids.
    pub failed: Vec<String>,
    /// One text per entry of `failed`.
    pub reasons: Vec<String>,
}

/// Builds the quarantine batch: rejected rows in batch order, then malformed records.
pub(crate) fn build(
    table: &TableSpec,
    rows: &RecordBatch,
    rejected: &[RejectedRow],
    malformed: &[MalformedRecord],
    masks: &PiiMasks,
    now: DateTime<Utc>,
) -> Result<RecordBatch> {
    let context = |what: &str| {
        let context = format!("building quarantine rows: {what}");
        arrow_context(&table.name, &context)
    };
    let indices = UInt32Array::from(rejected.iter().map(|r| r.row as u32).collect::<Vec<_>>());
    let total = rejected.len() + malformed.len();

    let mut columns: Vec<ArrayRef> = Vec::with_capacity(table.columns.len() + 8);
    for (index, column) in table.columns.iter().enumerate() {
        let mut taken =
            take(rows.column(index).as_ref(), &indices, None).map_err(context(&column.name))?;
        if masks.masks(&column.name)
            && let Some(strings) = taken.as_string_opt::<i32>()
        {
            let masked: StringArray = strings
                .iter()
                .map(|v| v.map(|s| masks.apply(&column.name, s).into_owned()))
                .collect();
            taken = Arc::new(masked);
        }
        let nulls = new_null_array(taken.data_type(), malformed.len());
        columns.push(concat(&[taken.as_ref(), nulls.as_ref()]).map_err(context(&column.name))?);
    }

    let mut failed_rules = ListBuilder::new(StringBuilder::new());
    let mut reasons = StringBuilder::with_capacity(total, total * 64);
    for row in rejected {
        for id in &row.failed {
            failed_rules.values().append_value(id);
        }
        failed_rules.append(true);
        reasons.append_value(row.reasons.join(super::reason::SEPARATOR));
    }
    for record in malformed {
        failed_rules.values().append_value(MALFORMED_RULE);
        failed_rules.append(true);
        reasons.append_value(&record.reason);
    }
    columns.push(Arc::new(failed_rules.finish()));
    columns.push(Arc::new(reasons.finish()));

    let operations = rows.column_by_name(OPERATION).map(|c| c.as_string::<i32>());
    let stored = |dms: Option<&str>| dms.and_then(Operation::from_dms).map(|op| op.as_stored());
    let operation: StringArray = rejected
        .iter()
        .map(|r| stored(operations.map(|ops| ops.value(r.row))))
        .chain(
            malformed
                .iter()
                .map(|m| m.operation.map(|op| op.as_stored())),
        )
        .collect();
    columns.push(Arc::new(operation));

    let raw: StringArray = rejected
        .iter()
        .map(|_| None)
        .chain(malformed.iter().map(|m| Some(m.raw.as_str())))
        .collect();
    columns.push(Arc::new(raw));

    let topics = rows.column_by_name(TOPIC).map(|c| c.as_string::<i32>());
    let topic: StringArray = rejected
        .iter()
        .map(|r| {
            Some(
                topics
                    .map(|t| t.value(r.row))
                    .unwrap_or(&table.topic)
                    .to_owned(),
            )
        })
        .chain(malformed.iter().map(|m| Some(m.position.topic.clone())))
        .collect();
    columns.push(Arc::new(topic));

    let partitions = rows
        .column_by_name(PARTITION)
        .and_then(|c| c.as_any().downcast_ref::<Int32Array>());
    let partition: Int32Array = rejected
        .iter()
        .map(|r| partitions.map(|p| p.value(r.row)).unwrap_or_default())
        .chain(malformed.iter().map(|m| m.position.partition))
        .map(Some)
        .collect();
    columns.push(Arc::new(partition));

    let offsets = rows
        .column_by_name(OFFSET)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>());
    let offset: Int64Array = rejected
        .iter()
        .map(|r| offsets.map(|o| o.value(r.row)).unwrap_or_default())
        .chain(malformed.iter().map(|m| m.position.offset))
        .map(Some)
        .collect();
    columns.push(Arc::new(offset));

    let quarantined_at =
        TimestampMicrosecondArray::from(vec![now.timestamp_micros(); total]).with_timezone("UTC");
    columns.push(Arc::new(quarantined_at));

    RecordBatch::try_new(quarantine_schema(table), columns).map_err(context("assembling the batch"))
}
