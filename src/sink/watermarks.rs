//! Exactly-once bookkeeping: each commit records, per Kafka partition of its batch, the last
//! offset it holds as a Delta transaction action (`txn`: app id `<group>:<topic>:<partition>`,
//! version = offset). The processor resumes from these, so the log of every table says how far
//! it has consumed, atomically with the data.

use std::collections::{BTreeMap, HashMap};

use deltalake::DeltaTable;
use deltalake::arrow::array::{Array, AsArray, BooleanArray};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::{Int32Type, Int64Type};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::Transaction;

use super::error::{Result, SinkError};
use super::lake::{Lake, LakeTable};
use super::table::delta_error;
use crate::pipeline::plan::SourcePosition;
use crate::pipeline::schema::{OFFSET, PARTITION, TOPIC};

/// Recorded offsets per (topic, partition).
pub type Watermarks = HashMap<(String, i32), i64>;

/// The transaction app id of one partition for one consumer group.
pub fn app_id(app_prefix: &str, topic: &str, partition: i32) -> String {
    format!("{app_prefix}:{topic}:{partition}")
}

/// The last offset per partition of a batch (the largest, should `ends` name one twice).
pub(crate) fn last_offsets(ends: &[SourcePosition]) -> BTreeMap<(String, i32), i64> {
    let mut last = BTreeMap::new();
    for end in ends {
        let entry = last
            .entry((end.topic.clone(), end.partition))
            .or_insert(end.offset);
        *entry = (*entry).max(end.offset);
    }
    last
}

/// The partitions a batch ends in.
pub(crate) fn partitions(ends: &BTreeMap<(String, i32), i64>) -> Vec<(String, i32)> {
    ends.keys().cloned().collect()
}

/// What the recorded watermarks say about a batch.
#[derive(Debug)]
pub(crate) enum TxnPlan {
    /// Every partition of the batch is already recorded at or beyond its end: the batch was
    /// committed before (a replay after a crash or rebalance) and must not be applied again.
    Replay,
    /// Apply the batch; the transactions advance the partitions that move forward (a partition
    /// already recorded further is left alone, so a watermark never goes back).
    Apply(Vec<Transaction>),
}

pub(crate) fn plan_transactions(
    app_prefix: &str,
    ends: &BTreeMap<(String, i32), i64>,
    recorded: &Watermarks,
) -> TxnPlan {
    let advancing: Vec<Transaction> = ends
        .iter()
        .filter(|(key, end)| recorded.get(*key).is_none_or(|seen| *end > seen))
        .map(|((topic, partition), end)| {
            Transaction::new(app_id(app_prefix, topic, *partition), *end)
        })
        .collect();
    // A batch without positions (no `ends`) carries no replay information, so it is applied.
    if advancing.is_empty() && !ends.is_empty() {
        TxnPlan::Replay
    } else {
        if advancing.len() < ends.len() {
            tracing::warn!(
                already_recorded = ends.len() - advancing.len(),
                "batch overlaps offsets this table has already committed; callers should start each \
                 partition after its watermark"
            );
        }
        TxnPlan::Apply(advancing)
    }
}

/// The recorded offsets of the given partitions in one table state (missing → not recorded).
pub(crate) async fn recorded(
    table: &DeltaTable,
    table_name: &str,
    app_prefix: &str,
    partitions: &[(String, i32)],
) -> Result<Watermarks> {
    let location = table.table_url().to_string();
    let snapshot = table
        .snapshot()
        .map_err(|source| delta_error(table_name, &location, "read watermarks", source))?;
    let log_store = table.log_store();
    let mut found = Watermarks::new();
    for (topic, partition) in partitions {
        let version = snapshot
            .transaction_version(log_store.as_ref(), app_id(app_prefix, topic, *partition))
            .await
            .map_err(|source| delta_error(table_name, &location, "read watermarks", source))?;
        if let Some(v) = version {
            found.insert((topic.clone(), *partition), v);
        }
    }
    Ok(found)
}

/// Keeps the rows whose `_topic/_partition/_offset` lie beyond the recorded watermark of their
/// partition, so a replay with other batch boundaries adds no row twice.
pub fn rows_after_watermarks(
    table: &str,
    rows: &RecordBatch,
    watermarks: &Watermarks,
) -> Result<RecordBatch> {
    if watermarks.is_empty() || rows.num_rows() == 0 {
        return Ok(rows.clone());
    }
    let column = |name: &'static str| {
        rows.column_by_name(name)
            .ok_or_else(|| SinkError::BatchSchema {
                table: table.to_string(),
                what: "positioned",
                detail: format!("column `{name}` is missing"),
            })
    };
    let wrong_type = |name: &'static str| SinkError::BatchSchema {
        table: table.to_string(),
        what: "positioned",
        detail: format!("column `{name}` has an unexpected type"),
    };
    let topics = column(TOPIC)?
        .as_string_opt::<i32>()
        .ok_or_else(|| wrong_type(TOPIC))?;
    let partitions = column(PARTITION)?
        .as_primitive_opt::<Int32Type>()
        .ok_or_else(|| wrong_type(PARTITION))?;
    let offsets = column(OFFSET)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| wrong_type(OFFSET))?;
    let keep: BooleanArray = (0..rows.num_rows())
        .map(|i| {
            let already = !topics.is_null(i)
                && watermarks
                    .get(&(topics.value(i).to_string(), partitions.value(i)))
                    .is_some_and(|seen| offsets.value(i) <= *seen);
            Some(!already)
        })
        .collect();
    filter_record_batch(rows, &keep).map_err(|source| SinkError::Arrow {
        table: table.to_string(),
        operation: "watermark filter",
        source,
    })
}

impl Lake {
    /// The offsets recorded in a table for the given partitions of one consumer group. A
    /// partition the table has never committed (or a table that does not exist yet) is absent:
    /// the processor starts that partition from the beginning for this table.
    pub async fn watermarks(
        &self,
        lake_table: LakeTable,
        app_prefix: &str,
        topics_partitions: &[(String, i32)],
    ) -> Result<Watermarks> {
        match self.latest_existing(&lake_table).await? {
            Some(table) => {
                recorded(&table, &lake_table.name(), app_prefix, topics_partitions).await
            }
            None => Ok(Watermarks::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(list: &[(&str, i32, i64)]) -> BTreeMap<(String, i32), i64> {
        list.iter()
            .map(|(t, p, o)| ((t.to_string(), *p), *o))
            .collect()
    }

    #[test]
    fn a_batch_at_or_below_every_watermark_is_a_replay() {
        let recorded: Watermarks = [
            (("cdc-a".to_string(), 0), 10),
            (("cdc-a".to_string(), 1), 7),
        ]
        .into();
        let plan = plan_transactions("g", &ends(&[("cdc-a", 0, 10), ("cdc-a", 1, 3)]), &recorded);
        assert!(matches!(plan, TxnPlan::Replay), "{plan:?}");
    }

    #[test]
    fn only_advancing_partitions_get_a_transaction() {
        let recorded: Watermarks = [(("cdc-a".to_string(), 0), 10)].into();
        let TxnPlan::Apply(txns) =
            plan_transactions("g", &ends(&[("cdc-a", 0, 9), ("cdc-a", 1, 4)]), &recorded)
        else {
            panic!("expected the batch to be applied");
        };
        let got: Vec<(String, i64)> = txns.into_iter().map(|t| (t.app_id, t.version)).collect();
        assert_eq!(got, vec![("g:cdc-a:1".to_string(), 4)]);
    }

    #[test]
    fn a_batch_without_positions_is_applied() {
        assert!(
            matches!(plan_transactions("g", &BTreeMap::new(), &Watermarks::new()), TxnPlan::Apply(t) if t.is_empty())
        );
    }

    #[test]
    fn last_offsets_keeps_the_largest_per_partition() {
        let pos = |o| SourcePosition {
            topic: "t".into(),
            partition: 2,
            offset: o,
        };
        assert_eq!(
            last_offsets(&[pos(5), pos(9), pos(7)]),
            ends(&[("t", 2, 9)])
        );
    }
}
