//! The SCD2 commit as a direct copy-on-write, without a join: the state read already knows which
//! data files hold the current versions a batch closes, so those files are read, their closed
//! rows get `_effective_to` and `_is_current = false`, and the rewritten files plus the new
//! versions are committed in one Delta commit (remove the old files, add the new ones, the txn
//! actions). A general MERGE would scan the table again and join every row with the batch; this
//! costs one read and one write of the files involved.
//!
//! Large files are spliced rather than decoded (see `splice.rs`): only the two columns a close
//! changes are encoded again.
//!
//! Only for tables whose files are plain Parquet: no deletion vectors, no column mapping, no
//! partitions. Any other table goes through the MERGE (see [`supported`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::ObjectStore;
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMicrosecondArray,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, LogicalFileView, Transaction};
// Deprecated in parquet 59 in favour of hand-written `AsyncFileReader`s; it is what delta-rs's
// own data file reader still uses, and it does what is needed here (ranged reads by row group).
#[allow(deprecated)]
use deltalake::parquet::arrow::async_reader::ParquetObjectReader;
use deltalake::parquet::arrow::async_reader::{
    ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder,
};
use deltalake::protocol::{DeltaOperation, MergePredicate};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::StreamExt as _;

use super::error::{Result, SinkError};
use super::scd2::{NewVersions, key_rows};
use super::splice::{Spliced, splice};
use super::table::{delta_error, lake_commit_properties, writer_properties};
use crate::config::spec::TableSpec;
use crate::pipeline::schema::{EFFECTIVE_TO, IS_CURRENT};

/// Where the rewritten output rolls over to a new file.
const REWRITE_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// Files spliced at once (each holds its new file in memory until it is stored).
const SPLICES_IN_FLIGHT: usize = 2;
/// Rows per batch read from a data file.
const READ_BATCH_ROWS: usize = 32 * 1024;
/// New versions are laid out and handed to the Parquet writer this many at a time.
const VERSION_SLICE_ROWS: usize = 16 * 1024;

/// Whether a table's files can be rewritten directly.
pub(super) fn supported(target: &DeltaTable) -> bool {
    let Ok(snapshot) = target.snapshot() else {
        return false;
    };
    let mapped = snapshot
        .metadata()
        .configuration()
        .get("delta.columnMapping.mode")
        .is_some_and(|mode| !mode.eq_ignore_ascii_case("none"));
    let partitioned = !snapshot.metadata().partition_columns().is_empty();
    let with_deletion_vectors = snapshot
        .log_data()
        .iter()
        .any(|f| f.deletion_vector_descriptor().is_some());
    !mapped && !partitioned && !with_deletion_vectors
}

/// A reader of one data file by ranged reads; its known size saves a request for it.
#[allow(deprecated)]
pub(super) fn object_reader(
    store: Arc<dyn ObjectStore>,
    path: &deltalake::Path,
    size: i64,
) -> ParquetObjectReader {
    let reader = ParquetObjectReader::new(store, path.clone());
    match u64::try_from(size) {
        Ok(size) => reader.with_file_size(size),
        Err(_) => reader,
    }
}

/// What to write in one commit.
pub(super) struct Rewrite<'a> {
    pub table: &'a TableSpec,
    /// The data table's schema.
    pub schema: SchemaRef,
    /// Index of the primary key in `schema`.
    pub key: usize,
    /// Current versions to close: key (the bytes of its `key_rows` form) → close time. Probed
    /// for every current row of every file a batch touches, hence the fast hasher.
    pub closes: HashMap<Box<[u8]>, i64, rustc_hash::FxBuildHasher>,
    /// The files (as the scan's file column names them) holding those current versions.
    pub files: BTreeSet<String>,
    /// New versions, in `schema`.
    pub versions: NewVersions<'a>,
    /// Files with at least this many rows are spliced (see [`splice`]); smaller ones are
    /// decoded and written together with the new versions, which compacts them.
    pub splice_min_rows: usize,
}

impl Rewrite<'_> {
    pub async fn commit(self, target: DeltaTable, txns: Vec<Transaction>) -> Result<DeltaTable> {
        let name = &self.table.name;
        let location = target.table_url().to_string();
        let delta = |operation, source| delta_error(name, &location, operation, source);
        let snapshot = target.snapshot().map_err(|e| delta("read", e))?;
        let table_url = target
            .table_url()
            .as_str()
            .trim_end_matches('/')
            .to_string();
        // The scan names a file by its URL; the log by its path relative to the table.
        let views: Vec<_> = snapshot
            .log_data()
            .iter()
            .filter(|v| {
                let path = v.path();
                self.files.contains(path.as_ref())
                    || self.files.contains(&format!("{table_url}/{path}"))
            })
            .collect();
        if views.len() != self.files.len() {
            return Err(SinkError::StateMismatch {
                table: name.clone(),
                detail: format!(
                    "{} of the {} files holding current versions are not in the table's log",
                    self.files.len() - views.len(),
                    self.files.len()
                ),
            });
        }
        let store = target.object_store();
        // Files are streamed row group by row group and the output rolls over at a bounded size,
        // so memory follows the row group and file sizes, not the size of the table.
        let mut writer = RecordBatchWriter::for_table(&target)
            .map_err(|e| delta("write", e))?
            .with_writer_properties(writer_properties(&self.schema))
            .with_target_file_size(REWRITE_FILE_BYTES);
        // The new versions first, a slice at a time: at most a slice of them is laid out as
        // arrays beside the changes at any moment.
        let versions = self.versions.len();
        for start in (0..versions).step_by(VERSION_SLICE_ROWS) {
            let slice = self
                .versions
                .batch(start..versions.min(start + VERSION_SLICE_ROWS))
                .map_err(|source| SinkError::Arrow {
                    table: name.clone(),
                    operation: "laying out the new versions",
                    source,
                })?;
            writer.write(slice).await.map_err(|e| delta("write", e))?;
        }
        let mut closed = 0;
        let (large, mut decoded): (Vec<_>, Vec<_>) = views.iter().partition(|view| {
            view.num_records()
                .is_some_and(|n| n >= self.splice_min_rows)
        });
        // A file's splice waits on the store (reads, and the write of the new file) for about
        // half its time; with two in flight one computes while the other waits.
        let mut waiting = large.into_iter();
        let mut splices = futures::stream::FuturesUnordered::new();
        let mut spliced = Vec::new();
        loop {
            while splices.len() < SPLICES_IN_FLIGHT {
                let Some(view) = waiting.next() else { break };
                splices.push(self.splice_one(store.clone(), view));
            }
            let Some((view, file)) = splices.next().await else {
                break;
            };
            match file? {
                Some(file) => {
                    closed += file.closed;
                    spliced.push(file.add);
                }
                None => decoded.push(view),
            }
        }
        for view in decoded {
            let path = view.object_store_path();
            let mut batches = self.read(store.clone(), &path, view.size()).await?;
            while let Some(batch) = batches.next().await {
                let batch = self.conform(batch.map_err(|e| self.file_error(&path, e))?, &path)?;
                let (batch, n) = self.close(batch)?;
                closed += n;
                writer.write(batch).await.map_err(|e| delta("write", e))?;
            }
        }
        if closed != self.closes.len() {
            return Err(SinkError::StateMismatch {
                table: name.clone(),
                detail: format!(
                    "{} current versions to close, {closed} found in the files that hold them",
                    self.closes.len()
                ),
            });
        }
        let adds = writer.flush().await.map_err(|e| delta("write", e))?;
        let actions: Vec<Action> = views
            .iter()
            .map(|v| Action::Remove(v.remove_action(true)))
            .chain(spliced.into_iter().chain(adds).map(Action::Add))
            .collect();
        let operation = DeltaOperation::Merge {
            predicate: None,
            merge_predicate: Some(format!(
                "target.{key} = source.{key} AND target.{IS_CURRENT}",
                key = self.schema.field(self.key).name()
            )),
            matched_predicates: vec![MergePredicate {
                action_type: "update".into(),
                predicate: None,
            }],
            not_matched_predicates: vec![MergePredicate {
                action_type: "insert".into(),
                predicate: None,
            }],
            not_matched_by_source_predicates: Vec::new(),
        };
        CommitBuilder::from(lake_commit_properties(txns))
            .with_actions(actions)
            .build(Some(snapshot), target.log_store(), operation)
            .await
            .map_err(|e| delta("merge", e))?;
        // The committed table, read forward from the snapshot the commit was built on.
        let mut committed = target;
        committed
            .update_state()
            .await
            .map_err(|e| delta("read", e))?;
        Ok(committed)
    }

    /// [`splice`], with the file it was given.
    async fn splice_one<'v>(
        &self,
        store: Arc<dyn ObjectStore>,
        view: &'v LogicalFileView,
    ) -> (&'v LogicalFileView, Result<Option<Spliced>>) {
        (view, splice(self, store, view).await)
    }

    /// One data file's rows, fetched a row group at a time (ranged reads) and decoded a batch at
    /// a time: memory follows the row group, not the file.
    #[allow(deprecated)]
    async fn read(
        &self,
        store: Arc<dyn ObjectStore>,
        path: &deltalake::Path,
        size: i64,
    ) -> Result<ParquetRecordBatchStream<ParquetObjectReader>> {
        ParquetRecordBatchStreamBuilder::new(object_reader(store, path, size))
            .await
            .and_then(|b| b.with_batch_size(READ_BATCH_ROWS).build())
            .map_err(|e| self.file_error(path, e))
    }

    /// A batch of a data file with the data table's columns and types.
    fn conform(&self, batch: RecordBatch, path: &deltalake::Path) -> Result<RecordBatch> {
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|field| {
                let column = batch.column_by_name(field.name()).ok_or_else(|| {
                    self.file_error(path, format!("no column `{}`", field.name()))
                })?;
                cast(column, field.data_type()).map_err(|e| self.file_error(path, e))
            })
            .collect::<Result<Vec<_>>>()?;
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| self.file_error(path, e))
    }

    pub(super) fn file_error(
        &self,
        path: &deltalake::Path,
        detail: impl std::fmt::Display,
    ) -> SinkError {
        SinkError::DataFile {
            table: self.table.name.clone(),
            path: path.to_string(),
            detail: detail.to_string(),
        }
    }

    /// Closes the current versions of the batch's keys in `batch`; returns how many it closed.
    fn close(&self, batch: RecordBatch) -> Result<(RecordBatch, usize)> {
        let to_index = self.index(EFFECTIVE_TO)?;
        let current_index = self.index(IS_CURRENT)?;
        let Some(closed) = self.close_columns(
            batch.column(self.key),
            batch
                .column(to_index)
                .as_primitive::<TimestampMicrosecondType>(),
            batch.column(current_index).as_boolean(),
        )?
        else {
            return Ok((batch, 0));
        };
        let mut columns = batch.columns().to_vec();
        columns[to_index] = Arc::new(closed.to);
        columns[current_index] = Arc::new(closed.current);
        let batch =
            RecordBatch::try_new(batch.schema(), columns).map_err(|source| SinkError::Arrow {
                table: self.table.name.clone(),
                operation: "closing current versions",
                source,
            })?;
        Ok((batch, closed.rows))
    }

    /// Index of a column of the data table.
    pub(super) fn index(&self, name: &str) -> Result<usize> {
        self.schema
            .index_of(name)
            .map_err(|source| SinkError::Arrow {
                table: self.table.name.clone(),
                operation: "closing current versions",
                source,
            })
    }

    /// The `_effective_to` and `_is_current` columns with the current versions of the batch's
    /// keys closed; `None` when none of `key` is one of them.
    pub(super) fn close_columns(
        &self,
        key: &ArrayRef,
        to: &TimestampMicrosecondArray,
        current: &BooleanArray,
    ) -> Result<Option<ClosedColumns>> {
        let keys = key_rows(self.table, std::slice::from_ref(key))?;
        let mut rows = 0;
        let mut new_to = Vec::with_capacity(key.len());
        let mut new_current = Vec::with_capacity(key.len());
        for row in 0..key.len() {
            let is_current = current.is_valid(row) && current.value(row);
            let close_at = if is_current {
                self.closes.get(keys.row(row).as_ref())
            } else {
                None
            };
            match close_at {
                Some(at) => {
                    rows += 1;
                    new_to.push(Some(*at));
                    new_current.push(Some(false));
                }
                None => {
                    new_to.push(to.is_valid(row).then(|| to.value(row)));
                    new_current.push(current.is_valid(row).then(|| current.value(row)));
                }
            }
        }
        if rows == 0 {
            return Ok(None);
        }
        Ok(Some(ClosedColumns {
            to: TimestampMicrosecondArray::from(new_to)
                .with_timezone_opt(to.timezone().map(str::to_string)),
            current: BooleanArray::from(new_current),
            rows,
        }))
    }
}

/// `_effective_to` and `_is_current` after closing `rows` current versions.
pub(super) struct ClosedColumns {
    pub to: TimestampMicrosecondArray,
    pub current: BooleanArray,
    pub rows: usize,
}
