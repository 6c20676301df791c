//! Table upkeep: micro-batches leave many small files; compaction rewrites them into few large
//! ones (a `dataChange = false` commit, so readers and txn watermarks are unaffected). Every
//! commit that rewrites files leaves the old ones on storage for readers of older versions;
//! vacuum deletes those no version younger than the retention needs.
//! Checkpoints are written in the background after the commit that reaches one (see
//! `TableLock::keep`); expired log entries are removed by [`Lake::clean_log`].

use std::time::Duration;

use deltalake::operations::optimize::OptimizeType;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::table::config::TablePropertiesExt as _;

use super::error::Result;
use super::lake::{Lake, LakeTable};
use super::table::{delta_error, lake_commit_properties};

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    pub files_removed: u64,
    pub files_added: u64,
    /// The version the compaction committed; `None` when there was nothing to compact.
    pub version: Option<u64>,
}

/// What a vacuum did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vacuum {
    pub files_deleted: u64,
}

impl Lake {
    /// Compacts a table's small files. `None` when the table does not exist yet. Runs under the
    /// same per-table lock as this process's commits; a conflict with another writer is retried
    /// on a fresh read, and a MERGE that loses to a compaction is retried the same way.
    pub async fn compact(&self, table: LakeTable) -> Result<Option<Compaction>> {
        let name = table.name();
        let location = table.location(self.layout());
        let mut lock = self.lock(table).await;
        loop {
            let Some(target) = lock.latest_existing().await? else {
                return Ok(None);
            };
            let before = target.version();
            let compact = target
                .optimize()
                .with_type(OptimizeType::Compact)
                .with_commit_properties(lake_commit_properties(Vec::new()));
            match compact.await {
                Ok((compacted, metrics)) => {
                    let version = compacted.version().filter(|v| Some(*v) != before);
                    let outcome = Compaction {
                        files_removed: metrics.num_files_removed,
                        files_added: metrics.num_files_added,
                        version,
                    };
                    return Ok(Some(lock.keep(Some(compacted), outcome)));
                }
                Err(source) => {
                    lock.retry_or_fail(delta_error(&name, &location, "compact", source))
                        .await?
                }
            }
        }
    }

    /// Deletes the files of a table that no version committed within `retention` still uses:
    /// the ones commits replaced (SCD2 rewrites, compactions) and the ones a writer that died
    /// mid-commit left behind, once older than `retention`. Versions older than that can no
    /// longer be read (time travel). `None` when the table does not exist yet. Runs under the
    /// table's lock: this process commits nothing to the table meanwhile.
    pub async fn vacuum(&self, table: LakeTable, retention: Duration) -> Result<Option<Vacuum>> {
        let name = table.name();
        let location = table.location(self.layout());
        let mut lock = self.lock(table).await;
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        loop {
            let Some(target) = lock.latest_existing().await? else {
                return Ok(None);
            };
            // Full: a listing of the table's folder, so files no commit ever recorded (a killed
            // writer's) go too, not only those the log marks as removed.
            let vacuum = target
                .vacuum()
                .with_retention_period(retention)
                .with_enforce_retention_duration(false)
                .with_mode(VacuumMode::Full)
                .with_commit_properties(lake_commit_properties(Vec::new()));
            match vacuum.await {
                Ok((vacuumed, metrics)) => {
                    let outcome = Vacuum {
                        files_deleted: metrics.files_deleted.len() as u64,
                    };
                    return Ok(Some(lock.keep(Some(vacuumed), outcome)));
                }
                Err(source) => {
                    lock.retry_or_fail(delta_error(&name, &location, "vacuum", source))
                        .await?
                }
            }
        }
    }

    /// Deletes the table's log entries older than its `delta.logRetentionDuration` (30 days by
    /// default) that a later checkpoint makes unnecessary; returns how many. Nothing when the
    /// table does not exist yet, or when its `delta.enableExpiredLogCleanup` is false.
    pub async fn clean_log(&self, table: LakeTable) -> Result<usize> {
        let name = table.name();
        let location = table.location(self.layout());
        let Some(target) = self.latest_existing(&table).await? else {
            return Ok(0);
        };
        let enabled = target
            .snapshot()
            .map(|s| s.table_config().enable_expired_log_cleanup())
            .unwrap_or(false);
        if !enabled {
            return Ok(0);
        }
        deltalake::checkpoints::cleanup_metadata(&target, None)
            .await
            .map_err(|source| delta_error(&name, &location, "log cleanup", source))
    }
}
