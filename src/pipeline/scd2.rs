//! Which events of a batch become SCD2 changes, in which order.
//!
//! Events of one key keep Kafka order: (partition, offset). DMS keys messages by primary key, so
//! one key lives in one partition and its offsets order its events. With `scd2.sequence_by` the
//! events are ordered by that column first (NULLs first), then by Kafka position. The last event
//! per key is the key's final state; with `track_intermediate` every event is a change, in order.

use std::collections::HashMap;

use deltalake::arrow::array::{ArrayRef, AsArray, RecordBatch, UInt32Array};
use deltalake::arrow::compute::{SortColumn, lexsort_to_indices, take};
use deltalake::arrow::datatypes::{Int32Type, Int64Type};
use deltalake::arrow::row::{RowConverter, SortField};

use crate::config::spec::TableSpec;

use super::error::{PipelineError, Result, arrow_context};
use super::schema::{OFFSET, PARTITION, column_position};

/// Row indices (into the decoded batch) chosen for the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selection {
    /// The changes, in application order: one per key (its last event) unless `track_intermediate`.
    pub changes: Vec<u32>,
    /// Each key's last event when it is not a delete: the rows that end the batch as current.
    pub current: Vec<u32>,
}

/// Orders the `participants` (rows that passed rules and transforms, deletes included) and picks
/// the changes.
pub(crate) fn select(
    table: &TableSpec,
    rows: &RecordBatch,
    participants: &[u32],
    is_delete: &[bool],
) -> Result<Selection> {
    if participants.is_empty() {
        return Ok(Selection {
            changes: Vec::new(),
            current: Vec::new(),
        });
    }
    let key = key_column(table, rows)?;
    let ordered = order(table, rows, participants)?;

    let converter = RowConverter::new(vec![SortField::new(key.data_type().clone())])
        .map_err(arrow_context(&table.name, "comparing primary keys"))?;
    let keys = converter
        .convert_columns(&[key])
        .map_err(arrow_context(&table.name, "comparing primary keys"))?;
    // The keys are Arrow's row format (a few bytes each): a fast hasher, not SipHash.
    let mut last_position: HashMap<_, usize, rustc_hash::FxBuildHasher> =
        HashMap::with_capacity_and_hasher(ordered.len(), Default::default());
    for (position, &row) in ordered.iter().enumerate() {
        last_position.insert(keys.row(row as usize), position);
    }
    let mut is_last = vec![false; ordered.len()];
    for &position in last_position.values() {
        is_last[position] = true;
    }

    let changes = if table.scd2.track_intermediate {
        ordered.clone()
    } else {
        ordered
            .iter()
            .zip(&is_last)
            .filter(|&(_, &last)| last)
            .map(|(&row, _)| row)
            .collect()
    };
    let current = ordered
        .iter()
        .zip(&is_last)
        .filter(|&(&row, &last)| last && !is_delete[row as usize])
        .map(|(&row, _)| row)
        .collect();
    Ok(Selection { changes, current })
}

pub(crate) fn key_column(table: &TableSpec, rows: &RecordBatch) -> Result<ArrayRef> {
    let key = table
        .primary_key
        .as_ref()
        .ok_or_else(|| PipelineError::NoPrimaryKey {
            table: table.name.clone(),
        })?;
    let index = column_position(table, key, || "primary_key".into())?;
    Ok(rows.column(index).clone())
}

/// The participants sorted by (sequence_by?, partition, offset).
fn order(table: &TableSpec, rows: &RecordBatch, participants: &[u32]) -> Result<Vec<u32>> {
    let Some(sequence_by) = &table.scd2.sequence_by else {
        return kafka_order(table, rows, participants);
    };
    let index = column_position(table, sequence_by, || "scd2.sequence_by".into())?;
    let indices = UInt32Array::from(participants.to_vec());
    let mut sort_columns = vec![rows.column(index).clone()];
    for name in [PARTITION, OFFSET] {
        sort_columns.push(kafka_column(table, rows, name)?.clone());
    }
    let sort_columns = sort_columns
        .iter()
        .map(|c| {
            take(c.as_ref(), &indices, None).map(|values| SortColumn {
                values,
                options: None,
            })
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(arrow_context(&table.name, "ordering events"))?;
    let permutation = lexsort_to_indices(&sort_columns, None)
        .map_err(arrow_context(&table.name, "ordering events"))?;
    Ok(permutation
        .values()
        .iter()
        .map(|&p| participants[p as usize])
        .collect())
}

/// The participants sorted by (partition, offset), a pair unique in a batch: a plain sort on the
/// two integers, which Arrow's general multi-column sort was several times slower at.
fn kafka_order(table: &TableSpec, rows: &RecordBatch, participants: &[u32]) -> Result<Vec<u32>> {
    let mismatch = |name: &str| PipelineError::SchemaMismatch {
        table: table.name.clone(),
        detail: format!("{name} is not an integer column"),
    };
    let partitions = kafka_column(table, rows, PARTITION)?
        .as_primitive_opt::<Int32Type>()
        .ok_or_else(|| mismatch(PARTITION))?
        .values();
    let offsets = kafka_column(table, rows, OFFSET)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| mismatch(OFFSET))?
        .values();
    let mut ordered = participants.to_vec();
    ordered.sort_unstable_by_key(|&row| (partitions[row as usize], offsets[row as usize]));
    Ok(ordered)
}

fn kafka_column<'r>(table: &TableSpec, rows: &'r RecordBatch, name: &str) -> Result<&'r ArrayRef> {
    rows.column_by_name(name)
        .ok_or_else(|| PipelineError::SchemaMismatch {
            table: table.name.clone(),
            detail: format!("no {name} column"),
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{Int32Array, Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::config::spec::ColumnType;
    use crate::pipeline::testing::table;

    /// Rows of (id, seq, partition, offset).
    fn rows(events: &[(i32, Option<i32>, i32, i64)]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("seq", DataType::Int32, true),
            Field::new(PARTITION, DataType::Int32, false),
            Field::new(OFFSET, DataType::Int64, false),
            Field::new("op", DataType::Utf8, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int32Array::from(
                    events.iter().map(|e| e.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int32Array::from(
                    events.iter().map(|e| e.1).collect::<Vec<_>>(),
                )),
                Arc::new(Int32Array::from(
                    events.iter().map(|e| e.2).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    events.iter().map(|e| e.3).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(vec!["x"; events.len()])),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn spec() -> TableSpec {
        table("t", &[("id", ColumnType::Int), ("seq", ColumnType::Int)])
    }

    #[test]
    fn the_last_event_by_offset_wins_whatever_the_arrival_order_in_the_batch() {
        // Key 1 arrives at offsets 7 then 3 (e.g. merged from two fetches): offset 7 is the latest.
        let batch = rows(&[(1, None, 0, 7), (2, None, 1, 5), (1, None, 0, 3)]);
        let all = [0, 1, 2];
        let selection =
            select(&spec(), &batch, &all, &[false; 3]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(selection.changes, [0, 1]);
        assert_eq!(selection.current, [0, 1]);
    }

    #[test]
    fn track_intermediate_keeps_every_version_in_order() {
        let mut t = spec();
        t.scd2.track_intermediate = true;
        let batch = rows(&[(1, None, 0, 7), (2, None, 1, 5), (1, None, 0, 3)]);
        let selection =
            select(&t, &batch, &[0, 1, 2], &[false; 3]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(selection.changes, [2, 0, 1]);
        assert_eq!(selection.current, [0, 1]);
    }

    #[test]
    fn sequence_by_orders_before_kafka_position() {
        let mut t = spec();
        t.scd2.sequence_by = Some("seq".into());
        let batch = rows(&[(1, Some(2), 0, 1), (1, Some(1), 0, 2), (1, None, 0, 3)]);
        let selection =
            select(&t, &batch, &[0, 1, 2], &[false; 3]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(selection.changes, [0]);
    }

    #[test]
    fn a_key_ending_in_a_delete_has_a_change_but_no_current_row() {
        let batch = rows(&[(1, None, 0, 1), (1, None, 0, 2), (2, None, 0, 3)]);
        let selection = select(&spec(), &batch, &[0, 1, 2], &[false, true, false])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(selection.changes, [1, 2]);
        assert_eq!(selection.current, [2]);
    }

    #[test]
    fn only_participants_take_part() {
        let batch = rows(&[(1, None, 0, 1), (1, None, 0, 2), (2, None, 0, 3)]);
        let selection =
            select(&spec(), &batch, &[0, 2], &[false; 3]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(selection.changes, [0, 2]);
    }
}
