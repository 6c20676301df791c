//! Which events of a batch become SCD2 changes, in which order.
//!
//! Events of one key keep Kafka order: (partition, offset). DMS keys messages by primary key, so
//! one key lives in one partition and its offsets order its events. With `scd2.sequence_by` the
//! events are ordered by that column first (NULLs first), then by Kafka position. The last event
//! per key is the key's final state; with `track_intermediate` every event is a change, in order.

use std::collections::HashSet;
use std::hash::Hash;

use deltalake::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
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

    let is_last = last_of_each_key(table, &key, &ordered)?;

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

/// Per position in `ordered`: whether it is its key's last event there. Integer keys (the
/// common case) are compared as integers; others in Arrow's row format.
fn last_of_each_key(table: &TableSpec, key: &ArrayRef, ordered: &[u32]) -> Result<Vec<bool>> {
    if let Some(keys) = key.as_primitive_opt::<Int32Type>() {
        return Ok(last_of(ordered, |row| {
            keys.is_valid(row).then(|| keys.value(row))
        }));
    }
    if let Some(keys) = key.as_primitive_opt::<Int64Type>() {
        return Ok(last_of(ordered, |row| {
            keys.is_valid(row).then(|| keys.value(row))
        }));
    }
    let converter = RowConverter::new(vec![SortField::new(key.data_type().clone())])
        .map_err(arrow_context(&table.name, "comparing primary keys"))?;
    let keys = converter
        .convert_columns(std::slice::from_ref(key))
        .map_err(arrow_context(&table.name, "comparing primary keys"))?;
    Ok(last_of(ordered, |row| keys.row(row)))
}

/// Walks `ordered` from the end: a key met for the first time there is at its last event.
fn last_of<K: Hash + Eq>(ordered: &[u32], key: impl Fn(usize) -> K) -> Vec<bool> {
    // The keys are integers or a few bytes of row format: a fast hasher, not SipHash.
    let mut seen: HashSet<K, rustc_hash::FxBuildHasher> =
        HashSet::with_capacity_and_hasher(ordered.len(), Default::default());
    let mut is_last = vec![false; ordered.len()];
    for (position, &row) in ordered.iter().enumerate().rev() {
        is_last[position] = seen.insert(key(row as usize));
    }
    is_last
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
    let position = |row: &u32| (partitions[*row as usize], offsets[*row as usize]);
    // Kafka hands out each partition's records in offset order, so the batch is usually in order
    // within each partition: grouping by partition (a counting sort, arrival order kept) then
    // orders it, which the check confirms; a full sort is only the fallback.
    let mut ordered =
        group_by_partition(participants, partitions).unwrap_or_else(|| participants.to_vec());
    if !ordered.is_sorted_by_key(position) {
        ordered.sort_unstable_by_key(position);
    }
    Ok(ordered)
}

/// `rows` grouped by partition in ascending order, each group in the order given; None when
/// the partition numbers span too wide a range for a counting sort.
fn group_by_partition(rows: &[u32], partitions: &[i32]) -> Option<Vec<u32>> {
    const MAX_SPAN: i64 = 4096;
    let partition = |row: u32| partitions[row as usize];
    let low = rows.iter().map(|&r| partition(r)).min()?;
    let high = rows.iter().map(|&r| partition(r)).max()?;
    let span = i64::from(high) - i64::from(low) + 1;
    if span > MAX_SPAN {
        return None;
    }
    let slot = |row: u32| (i64::from(partition(row)) - i64::from(low)) as usize;
    let mut starts = vec![0_usize; span as usize + 1];
    for &row in rows {
        starts[slot(row) + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut grouped = vec![0; rows.len()];
    for &row in rows {
        let at = &mut starts[slot(row)];
        grouped[*at] = row;
        *at += 1;
    }
    Some(grouped)
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

    proptest::proptest! {
        /// Whatever the arrival order, partition numbers and keys, the selection is the last
        /// event per key in (partition, offset) order, as a plain sort and map find it.
        #[test]
        fn selection_follows_the_kafka_position_of_each_key(
            events in proptest::collection::vec((0_i32..6, 0_i32..3, proptest::bool::ANY), 1..60),
            wide in proptest::bool::ANY,
            shuffle in proptest::collection::vec(0_usize..60, 60),
        ) {
            // Offsets unique per partition, in arrival order or not.
            let mut events: Vec<(i32, Option<i32>, i32, i64)> = events
                .iter()
                .enumerate()
                .map(|(i, &(key, partition, _))| {
                    let partition = if wide { partition * 5_000 - 5_000 } else { partition };
                    (key, None, partition, i as i64)
                })
                .collect();
            for (i, &j) in shuffle.iter().enumerate().take(events.len()) {
                if events[0].0 % 2 == 0 {
                    let j = j % events.len();
                    events.swap(i, j);
                }
            }
            let batch = rows(&events);
            let participants: Vec<u32> = (0..events.len() as u32).collect();
            let selection = select(&spec(), &batch, &participants, &vec![false; events.len()])
                .unwrap_or_else(|e| panic!("{e}"));
            let mut expected = participants.clone();
            expected.sort_by_key(|&row| (events[row as usize].2, events[row as usize].3));
            let mut last = std::collections::HashMap::new();
            for (position, &row) in expected.iter().enumerate() {
                last.insert(events[row as usize].0, position);
            }
            let expected: Vec<u32> = expected
                .iter()
                .enumerate()
                .filter(|(position, row)| last[&events[**row as usize].0] == *position)
                .map(|(_, &row)| row)
                .collect();
            proptest::prop_assert_eq!(&selection.changes, &expected);
            proptest::prop_assert_eq!(&selection.current, &expected);
        }
    }
}
