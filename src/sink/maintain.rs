//! Table upkeep: micro-batches leave many small files; compaction rewrites them into few large
//! ones (a `dataChange = false` commit, so readers and txn watermarks are unaffected). Every
//! commit that rewrites files leaves the old ones on storage for readers of older versions;
//! vacuum deletes those no version younger than the retention needs.
//! Checkpoints are written in the background after the commit that reaches one (see
//! `TableLock::keep`); expired log entries are removed by [`Lake::clean_log`].

use std::num::NonZeroU64;
use std::time::Duration;

use deltalake::operations::optimize::OptimizeType;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::table::config::TablePropertiesExt as _;

use super::error::Result;
use super::lake::{Lake, LakeTable};
use super::table::{delta_error, lake_commit_properties, writer_properties};

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    pub files_removed: u64,
    pub files_added: u64,
    /// The version the compaction committed; `None` when there was nothing to compact.
    pub version: Option<u64>,
}

/// The byte size of `rows` rows of the table's files, on average; None without rows to go by.
fn data_file_target_size(
    snapshot: &deltalake::table::state::DeltaTableState,
    rows: usize,
) -> Option<NonZeroU64> {
    let (bytes, records) =
        snapshot
            .log_data()
            .iter()
            .fold((0_u64, 0_u64), |(bytes, records), file| {
                (
                    bytes + u64::try_from(file.size()).unwrap_or(0),
                    records + file.num_records().unwrap_or(0) as u64,
                )
            });
    if records == 0 {
        return None;
    }
    NonZeroU64::new((bytes as f64 / records as f64 * rows as f64).ceil() as u64)
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
    ///
    /// A data table's files are gathered into files of about the splice threshold's rows
    /// (32,768; see [`Lake::with_splice_min_rows`]), as the SCD2 commits gather the small files
    /// they rewrite, not delta-rs's 100 MiB: every commit that closes a version in a file
    /// rewrites it, and larger files would make each of those rewrite more.
    pub async fn compact(&self, table: LakeTable) -> Result<Option<Compaction>> {
        let is_data = matches!(table, LakeTable::Data(_));
        let name = table.name();
        let location = table.location(self.layout());
        let mut lock = self.lock(table).await;
        loop {
            let Some(target) = lock.latest_existing().await? else {
                return Ok(None);
            };
            let before = target.version();
            // A data table's file size and writer settings, from its files and schema.
            let sized = match target.snapshot() {
                Ok(snapshot) if is_data => data_file_target_size(snapshot, self.splice_min_rows)
                    .map(|size| (size, snapshot.snapshot().arrow_schema())),
                _ => None,
            };
            let mut compact = target
                .optimize()
                .with_type(OptimizeType::Compact)
                .with_commit_properties(lake_commit_properties(Vec::new()));
            if let Some((size, schema)) = sized {
                compact = compact
                    .with_target_size(size)
                    .with_writer_properties(writer_properties(&schema));
            }
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
