//! Delta tables of the lake: create on first use, the SCD2 MERGE of data tables, quarantine and
//! metrics appends, and the transaction (txn) bookkeeping that makes every commit exactly-once.
//!
//! Guarantee: each commit writes one batch of one table and, in the same Delta commit, the last
//! Kafka offset of every partition the batch came from. A batch whose offsets are already
//! recorded is skipped, so replays after a crash or a rebalance neither lose nor duplicate rows.

mod change_rows;
mod error;
mod lake;
mod maintain;
mod metrics;
mod quarantine;
mod rewrite;
mod scd2;
mod splice;
mod state;
mod table;
mod upload;
mod watermarks;

pub use change_rows::ChangeRows;
pub use error::{Result, SinkError};
pub use lake::{Lake, LakeTable};
pub use maintain::{Compaction, Vacuum};
pub use scd2::CommitOutcome;
pub use table::open_existing as open_table;
pub use watermarks::{Watermarks, app_id, rows_after_watermarks};

/// The processor drives commits from spawned tasks, so every future here must be `Send`; this
/// fails to compile otherwise.
#[cfg(test)]
#[allow(dead_code)]
mod futures_are_send {
    use deltalake::arrow::record_batch::RecordBatch;

    use super::{Lake, LakeTable};
    use crate::config::spec::TableSpec;
    use crate::pipeline::plan::MetricRow;

    fn is_send<T: Send>(_: &T) {}

    fn shared_between_tasks<T: Send + Sync>() {}

    fn lake_is_shareable() {
        shared_between_tasks::<Lake>();
    }

    fn check(lake: &Lake, table: &TableSpec, batch: &RecordBatch, rows: &[MetricRow]) {
        let now = chrono::Utc::now();
        is_send(&lake.commit_changes(table, batch, &[], "g", now));
        is_send(&lake.append_quarantine(table, batch, &[], "g"));
        is_send(&lake.append_metrics("t", 1, rows, &[], "g", now));
        is_send(&lake.watermarks(LakeTable::Metrics, "g", &[]));
        is_send(&lake.save_state("s", Vec::new()));
        is_send(&lake.load_state("s"));
        is_send(&lake.table_version(&LakeTable::Metrics));
        is_send(&lake.compact(LakeTable::Metrics));
        is_send(&lake.vacuum(LakeTable::Metrics, std::time::Duration::ZERO));
        is_send(&lake.resume_offsets("t", "g", &[]));
    }
}
