//! Exactly-once bookkeeping: each commit records, per Kafka partition of its batch, the last
//! offset it holds as a Delta transaction action (`txn`: app id `<group>:<topic>:<partition>`,
//! version = offset). The processor resumes from these, so the log of every table says how far
//! it has consumed, atomically with the data.
//!
//! A batch that has nothing to write to a table makes no commit there (no empty versions), so
//! that table's txn watermark stays behind. For those batches a progress note (a small state
//! object per table and partition) records "every event up to this offset is reflected in this
//! table". A note is only ever a lower bound of the truth: losing one, or a crash before it is
//! written, only means some no-op events are read again. [`Lake::resume_offsets`] combines both.

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
            tracing::debug!(
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

/// The state name of the progress note of one table and one partition of one group.
fn note_name(lake_table: &LakeTable, app_id: &str) -> String {
    format!(
        "progress-{}-{}",
        hex::encode(lake_table.name()),
        hex::encode(app_id)
    )
}

/// The partitions the rows come from (a row may come from a partition `ends` does not name).
pub(crate) fn row_partitions(table: &str, rows: &RecordBatch) -> Result<Vec<(String, i32)>> {
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::Int32Type;

    use crate::pipeline::schema::{PARTITION, TOPIC};
    let missing = |name: &str| SinkError::BatchSchema {
        table: table.to_string(),
        what: "positioned",
        detail: format!("column `{name}` is missing or mistyped"),
    };
    let topics = rows
        .column_by_name(TOPIC)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| missing(TOPIC))?;
    let partitions = rows
        .column_by_name(PARTITION)
        .and_then(|c| c.as_primitive_opt::<Int32Type>())
        .ok_or_else(|| missing(PARTITION))?;
    let mut found: Vec<(String, i32)> = (0..rows.num_rows())
        .filter(|&i| topics.is_valid(i) && partitions.is_valid(i))
        .map(|i| (topics.value(i).to_string(), partitions.value(i)))
        .collect();
    found.sort();
    found.dedup();
    Ok(found)
}

impl Lake {
    /// The offset to resume each partition of a source table's topic from: the smallest of
    /// what its data, quarantine and metrics tables have taken in (txn watermark or progress
    /// note), plus one. A partition missing from the answer starts from the beginning, as some
    /// table has taken in nothing from it yet.
    ///
    /// This holds as long as every batch is handed to all three commit methods (with empty rows
    /// when there is nothing for a table), so each table either commits or notes its progress.
    pub async fn resume_offsets(
        &self,
        table: &str,
        app_prefix: &str,
        topics_partitions: &[(String, i32)],
    ) -> Result<Watermarks> {
        let tables = [
            LakeTable::Data(table.to_string()),
            LakeTable::Quarantine(table.to_string()),
            LakeTable::Metrics,
        ];
        let mut taken_in: Vec<Watermarks> = Vec::with_capacity(tables.len());
        for lake_table in tables {
            let mut marks = self
                .watermarks(lake_table.clone(), app_prefix, topics_partitions)
                .await?;
            for (topic, partition) in topics_partitions {
                let name = note_name(&lake_table, &app_id(app_prefix, topic, *partition));
                if let Some(noted) = self.read_note(&name).await? {
                    let mark = marks.entry((topic.clone(), *partition)).or_insert(noted);
                    *mark = (*mark).max(noted);
                }
            }
            taken_in.push(marks);
        }
        let mut resume = Watermarks::new();
        for key in topics_partitions {
            let least = taken_in
                .iter()
                .map(|marks| marks.get(key).copied())
                .collect::<Option<Vec<i64>>>();
            if let Some(least) = least.and_then(|all| all.into_iter().min()) {
                resume.insert(key.clone(), least + 1);
            }
        }
        Ok(resume)
    }

    /// Records that a table has taken in every event up to `ends` without a commit.
    pub(crate) async fn note_progress(
        &self,
        lake_table: &LakeTable,
        app_prefix: &str,
        ends: &BTreeMap<(String, i32), i64>,
    ) -> Result<()> {
        for ((topic, partition), end) in ends {
            let name = note_name(lake_table, &app_id(app_prefix, topic, *partition));
            let known = match self.cached_note(&name) {
                Some(noted) => Some(noted),
                None => self.read_note(&name).await?,
            };
            if known.is_some_and(|noted| noted >= *end) {
                continue;
            }
            self.save_state(&name, end.to_string().into_bytes()).await?;
            self.notes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name, *end);
        }
        Ok(())
    }

    fn cached_note(&self, name: &str) -> Option<i64> {
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
    }

    async fn read_note(&self, name: &str) -> Result<Option<i64>> {
        let Some(bytes) = self.load_state(name).await? else {
            return Ok(None);
        };
        let noted = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok());
        if noted.is_none() {
            // Only a lower bound is lost: those partitions are read again from their txn watermark.
            tracing::warn!(note = name, "unreadable progress note ignored");
        }
        Ok(noted)
    }

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
