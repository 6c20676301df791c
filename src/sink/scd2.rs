//! SCD Type 2 into a Delta data table: one micro-batch of changes becomes ONE Delta commit. For
//! plain Parquet tables (what dqetl writes) that commit is a direct copy-on-write of the files
//! holding the versions it closes plus the new versions (`rewrite.rs`), recorded as a MERGE; for
//! a table with deletion vectors, column mapping or partitions it is delta-rs's MERGE over a
//! staged union of
//!   - close rows: keyed by the primary key, they match the key's current version and close it
//!     (`_effective_to`, `_is_current = false`);
//!   - insert rows: with a NULL merge key they never match and are inserted as they are
//!     (new current versions, intermediate versions already closed, tombstones).
//!
//! Either way, which rows to close and insert is decided here, key by key, against the table's
//! state read in the same snapshot the commit is made on (a concurrent commit makes it conflict,
//! and the whole cycle reruns on fresh data), so the commit itself carries no logic that could
//! drift.

use std::collections::BTreeMap;
use std::hash::BuildHasher as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::DeltaTable;
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt32Array,
};
use deltalake::arrow::compute::{SortOptions, cast, concat, interleave, sort_to_indices, take};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::row::{OwnedRow, Row, RowConverter, Rows, SortField};
use deltalake::datafusion::common::{Column, ScalarValue};
use deltalake::datafusion::prelude::{Expr, SessionConfig, SessionContext, lit};
use futures::StreamExt as _;
use hashbrown::HashTable;
use smallvec::SmallVec;

use super::change_rows::ChangeRows;
use super::error::{Result, SinkError};
use super::lake::{Lake, LakeTable};
use super::rewrite::{self, Rewrite};
use super::table::{delta_error, lake_commit_properties, same_columns, writer_properties};
use super::watermarks::{
    TxnPlan, last_offsets, partitions, plan_transactions, recorded, row_partitions,
    rows_after_watermarks,
};
use crate::config::spec::{HardDeletes, TableSpec};
use crate::pipeline::plan::SourcePosition;
use crate::pipeline::schema::{
    EFFECTIVE_FROM, EFFECTIVE_TO, INGESTED_AT, IS_CURRENT, OPERATION, changes_schema,
    data_table_schema, positioned_changes_schema, transformed_fields,
};

/// Columns of the staged MERGE source next to the data table's columns.
const MERGE_KEY: &str = "__dqetl_merge_key";
const CLOSE_AT: &str = "__dqetl_close_at";
/// Columns of the state query.
const STATE_LAST: &str = "__dqetl_last";
const STATE_CURRENT: &str = "__dqetl_current";
const STATE_FROM: &str = "__dqetl_from";
const STATE_FILE: &str = "__dqetl_file";

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// A new table version holds the batch and advances the watermarks.
    Committed {
        version: u64,
        /// New versions written (current rows, closed intermediate versions, tombstones, or
        /// appended quarantine and metric rows).
        rows_inserted: usize,
        /// Current versions closed.
        rows_closed: usize,
        /// Changes that changed nothing (equal to the current version, or deleting an absent key).
        rows_unchanged: usize,
    },
    /// Nothing to write: every change equals the table's state (or there were no rows). No new
    /// table version, so the txn watermarks stay where they were; a progress note records the
    /// offsets instead (see [`Lake::commit_changes`] and [`Lake::resume_offsets`]).
    Unchanged { rows_unchanged: usize },
    /// Every partition of the batch is already recorded at or beyond its end offset: the batch
    /// was committed before and is not applied again.
    Replayed,
}

impl CommitOutcome {
    /// The table version created, if any.
    pub fn version(&self) -> Option<u64> {
        match self {
            CommitOutcome::Committed { version, .. } => Some(*version),
            _ => None,
        }
    }
}

impl Lake {
    /// Applies one micro-batch of SCD2 changes (schema `changes_schema(table)`, in application
    /// order) to the table's Delta table in one commit that also records `ends` as transaction
    /// actions (app id `<app_prefix>:<topic>:<partition>`, version = last offset).
    ///
    /// Per key: an INSERT/UPDATE whose data columns equal the current version (NULL equals NULL)
    /// changes nothing; otherwise the current version is closed at the change's
    /// `_effective_from` and the change becomes the current version. A DELETE closes the current
    /// version (and with `hard_deletes: tombstone` adds a closed DELETE version); deleting an
    /// absent key changes nothing. With `track_intermediate` a key may have several changes,
    /// applied in order; otherwise a repeated key is an error. Should a change carry a source
    /// time before the key's latest recorded time (the source's clock, not Kafka, is out of
    /// order), it takes effect at that latest time so history intervals never overlap.
    ///
    /// A batch that changes nothing creates no table version, so replays and reloads do not grow
    /// the log with empty versions; the txn watermarks stay behind. Reading those events again
    /// would be harmless (they are no-ops again: keys stay in one partition, so nothing newer
    /// for them can have been committed in between), and a progress note records the offsets so
    /// that [`Lake::resume_offsets`] need not go back that far.
    ///
    /// `changes` is a batch (every row a change, in order) or a plan's
    /// [`Changes`](crate::pipeline::plan::Changes) (rows picked from the decoded batch's columns).
    /// It may also carry each change's `_topic/_partition/_offset`
    /// (`positioned_changes_schema`): changes at or below their partition's watermark are then
    /// dropped row by row, which makes a replay that overlaps the watermark safe (resuming from
    /// [`Lake::resume_offsets`] re-reads events some tables already hold). Without positions the
    /// caller must not pass such events. A batch whose partitions are all recorded at or beyond
    /// their ends is skipped as a replay either way.
    pub async fn commit_changes<'c>(
        &self,
        table: &TableSpec,
        changes: impl Into<ChangeRows<'c>>,
        ends: &[SourcePosition],
        app_prefix: &str,
        now: DateTime<Utc>,
    ) -> Result<CommitOutcome> {
        let changes: ChangeRows<'c> = changes.into();
        let shape = ChangeShape::of(table, changes.batch)?;
        // Positioned changes are filtered row by row against the watermarks: as a batch of
        // their own (only replays send them).
        let owned;
        let changes = if shape.positioned && !changes.is_every_row() {
            owned = changes.to_batch().map_err(|source| SinkError::Arrow {
                table: table.name.clone(),
                operation: "picking the changes",
                source,
            })?;
            ChangeRows::from(&owned)
        } else {
            changes
        };
        let lake_table = LakeTable::Data(table.name.clone());
        let ends = last_offsets(ends);
        let outcome = if changes.len() == 0 {
            CommitOutcome::Unchanged { rows_unchanged: 0 }
        } else {
            let groups = group_by_key(table, &shape, changes)?;
            let batch = Batch {
                table,
                shape: &shape,
                changes,
                groups: &groups,
                ends: &ends,
                app_prefix,
                now,
                schema: data_table_schema(table),
                splice_min_rows: self.splice_min_rows,
            };
            let mut lock = self.lock(lake_table.clone()).await;
            loop {
                let target = lock.latest_or_create(&batch.schema).await?;
                match batch.apply(target).await {
                    Ok((committed, outcome)) => break lock.keep(committed, outcome),
                    Err(err) => lock.retry_or_fail(err).await?,
                }
            }
        };
        if let CommitOutcome::Unchanged { .. } = outcome {
            self.note_progress(&lake_table, app_prefix, &ends).await?;
        }
        Ok(outcome)
    }
}

/// One batch of changes and what its commit needs.
struct Batch<'a> {
    table: &'a TableSpec,
    shape: &'a ChangeShape,
    changes: ChangeRows<'a>,
    groups: &'a KeyGroups,
    ends: &'a BTreeMap<(String, i32), i64>,
    app_prefix: &'a str,
    now: DateTime<Utc>,
    schema: SchemaRef,
    splice_min_rows: usize,
}

impl<'a> Batch<'a> {
    /// Reads the table state, decides the versions and commits them in one MERGE.
    async fn apply(&self, target: DeltaTable) -> Result<(Option<DeltaTable>, CommitOutcome)> {
        let Batch {
            table,
            shape,
            changes,
            groups,
            ..
        } = *self;
        let mut watched = partitions(self.ends);
        if shape.positioned {
            watched.extend(row_partitions(&table.name, changes.batch)?);
            watched.sort();
            watched.dedup();
        }
        let seen = recorded(&target, &table.name, self.app_prefix, &watched).await?;
        let txns = match plan_transactions(self.app_prefix, self.ends, &seen) {
            TxnPlan::Replay => return Ok((None, CommitOutcome::Replayed)),
            TxnPlan::Apply(txns) => txns,
        };
        // Changes at or below the watermark of their partition were committed before: applying
        // them again on a newer state would resurrect or duplicate versions.
        // (Positioned changes are every row of their batch: see `commit_changes`.)
        let kept;
        let regrouped;
        let (changes, groups, already) = if shape.positioned && !seen.is_empty() {
            kept = rows_after_watermarks(&table.name, changes.batch, &seen)?;
            let already = changes.len() - kept.num_rows();
            if already == 0 {
                (changes, groups, 0)
            } else {
                let kept = ChangeRows::from(&kept);
                regrouped = group_by_key(table, shape, kept)?;
                (kept, &regrouped, already)
            }
        } else {
            if txns.len() < self.ends.len() {
                tracing::warn!(
                    table = %table.name,
                    "changes without positions overlap offsets this table already committed; \
                     they are applied again (send positioned changes to have them filtered)"
                );
            }
            (changes, groups, 0)
        };
        if changes.len() == 0 {
            return Ok((
                None,
                CommitOutcome::Unchanged {
                    rows_unchanged: already,
                },
            ));
        }
        let started = std::time::Instant::now();
        let state = read_state(&target, table, shape, changes, groups).await?;
        let state_read = started.elapsed();
        let mut plan = plan_versions(table, shape, changes, groups, &state)?;
        plan.unchanged += already;
        if plan.closes.is_empty() && plan.versions.is_empty() {
            return Ok((
                None,
                CommitOutcome::Unchanged {
                    rows_unchanged: plan.unchanged,
                },
            ));
        }
        let writing = std::time::Instant::now();
        let direct = rewrite::supported(&target);
        let committed = if direct {
            self.rewrite(&plan, &state, changes)
                .commit(target, txns)
                .await?
        } else {
            let staged = stage(table, shape, changes, &self.schema, &plan, self.now)?;
            merge(target, table, shape, staged, txns).await?
        };
        let version = committed.version().unwrap_or_default();
        tracing::debug!(
            table = %table.name,
            version,
            direct,
            state_read_ms = state_read.as_millis() as u64,
            write_ms = writing.elapsed().as_millis() as u64,
            inserted = plan.versions.len(),
            closed = plan.closes.len(),
            unchanged = plan.unchanged,
            "SCD2 commit"
        );
        let outcome = CommitOutcome::Committed {
            version,
            rows_inserted: plan.versions.len(),
            rows_closed: plan.closes.len(),
            rows_unchanged: plan.unchanged,
        };
        Ok((Some(committed), outcome))
    }

    /// The planned versions as a direct copy-on-write (see [`rewrite`]): the new versions are
    /// written from the changes; the closes are looked up by key in the files the state read
    /// found.
    fn rewrite<'r>(
        &'r self,
        plan: &'r VersionPlan,
        state: &KeyState,
        changes: ChangeRows<'r>,
    ) -> Rewrite<'r> {
        let table = self.table;
        let versions = NewVersions {
            schema: self.schema.clone(),
            changes,
            versions: &plan.versions,
            now: self.now,
        };
        Rewrite {
            table,
            schema: self.schema.clone(),
            key: self.shape.key,
            closes: plan
                .closes
                .iter()
                .map(|c| (Box::from(c.key.as_ref()), c.at))
                .collect(),
            files: plan
                .closes
                .iter()
                .map(|c| state.current_files[c.stored].clone())
                .collect(),
            versions,
            splice_min_rows: self.splice_min_rows,
        }
    }
}

/// Where things are in a changes batch.
struct ChangeShape {
    /// Transformed data columns: the first `data_columns` columns, in data-table order.
    data_columns: usize,
    key: usize,
    key_name: String,
    operation: usize,
    effective_from: usize,
    /// The batch carries `_topic/_partition/_offset` (see `positioned_changes_schema`).
    positioned: bool,
}

impl ChangeShape {
    fn of(table: &TableSpec, changes: &RecordBatch) -> Result<ChangeShape> {
        let pk = table
            .primary_key
            .as_deref()
            .ok_or_else(|| SinkError::NoPrimaryKey {
                table: table.name.clone(),
            })?;
        let key = table
            .column_index(pk)
            .ok_or_else(|| SinkError::NoPrimaryKey {
                table: table.name.clone(),
            })?;
        let expected = changes_schema(table);
        let positioned_schema = positioned_changes_schema(table);
        let actual = changes.schema();
        let describe = |s: &Schema| {
            s.fields()
                .iter()
                .map(|f| format!("{} {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let positioned = same_columns(&positioned_schema, &actual);
        if !positioned && !same_columns(&expected, &actual) {
            return Err(SinkError::BatchSchema {
                table: table.name.clone(),
                what: "changes",
                detail: format!(
                    "expected [{}], got [{}]",
                    describe(&expected),
                    describe(&actual)
                ),
            });
        }
        let data_columns = transformed_fields(table).len();
        Ok(ChangeShape {
            data_columns,
            key,
            key_name: expected.field(key).name().clone(),
            operation: data_columns,
            effective_from: data_columns + 1,
            positioned,
        })
    }
}

/// The kind of one change, with the value it stores in `_operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Upsert(&'static str),
    Delete,
}

impl Change {
    /// The change an `_operation` value stands for (any case; a load is an insert), without an
    /// allocation per row.
    fn of_operation(operation: &str) -> Option<Change> {
        let is = |name: &str| operation.eq_ignore_ascii_case(name);
        if is("INSERT") || is("LOAD") {
            Some(Change::Upsert("INSERT"))
        } else if is("UPDATE") {
            Some(Change::Upsert("UPDATE"))
        } else if is("DELETE") {
            Some(Change::Delete)
        } else {
            None
        }
    }
}

/// Change rows per key, in batch order; keys in order of first appearance.
struct KeyGroups {
    /// Every change row's key in `key_rows` form: one buffer for the batch, where a copy per
    /// key was an allocation each.
    key_rows: Rows,
    /// The change rows of each key. Most keys have one change: its row is kept inline, without
    /// an allocation per key.
    keys: Vec<SmallVec<[usize; 1]>>,
    /// Each group by the hash of its key's row form: holds group numbers only, so it lives beside
    /// the row buffer it reads keys from, and the state read finds the group of a stored key
    /// through it instead of building a map of its own.
    index: HashTable<usize>,
    hasher: foldhash::fast::RandomState,
    kinds: Vec<Change>,
    effective_from: Vec<i64>,
}

impl KeyGroups {
    /// The key of group `group`.
    fn key(&self, group: usize) -> Row<'_> {
        self.key_rows.row(self.keys[group][0])
    }

    /// The group of `key` (in [`key_rows`] form), if the batch has it.
    fn group_of(&self, key: Row<'_>) -> Option<usize> {
        let hash = self.hasher.hash_one(key.as_ref());
        self.index.find(hash, |&g| self.key(g) == key).copied()
    }
}

fn group_by_key(
    table: &TableSpec,
    shape: &ChangeShape,
    changes: ChangeRows<'_>,
) -> Result<KeyGroups> {
    let picked_keys = changes
        .picked(shape.key)
        .map_err(|source| SinkError::Arrow {
            table: table.name.clone(),
            operation: "picking the keys",
            source,
        })?;
    if let Some(row) = (0..picked_keys.len()).find(|&i| picked_keys.is_null(i)) {
        return Err(SinkError::NullKey {
            table: table.name.clone(),
            column: shape.key_name.clone(),
            row,
        });
    }
    let keys = key_rows(table, std::slice::from_ref(&picked_keys))?;
    drop(picked_keys);
    let operations = changes.column(shape.operation).as_string::<i32>();
    let from = changes
        .column(shape.effective_from)
        .as_primitive::<TimestampMicrosecondType>();
    let mut kinds = Vec::with_capacity(changes.len());
    let mut effective_from = Vec::with_capacity(changes.len());
    // Keys are looked up in the converted rows, never copied.
    let hasher = foldhash::fast::RandomState::default();
    let mut index: HashTable<usize> = HashTable::with_capacity(changes.len());
    let mut groups: Vec<SmallVec<[usize; 1]>> = Vec::new();
    for row in 0..changes.len() {
        let at = changes.row(row);
        let operation = if operations.is_null(at) {
            ""
        } else {
            operations.value(at)
        };
        let Some(kind) = Change::of_operation(operation) else {
            return Err(SinkError::UnknownOperation {
                table: table.name.clone(),
                row,
                operation: operation.to_string(),
            });
        };
        kinds.push(kind);
        if from.is_null(at) {
            return Err(SinkError::BatchSchema {
                table: table.name.clone(),
                what: "changes",
                detail: format!("row {row} has no {EFFECTIVE_FROM}"),
            });
        }
        effective_from.push(from.value(at));
        let key = keys.row(row);
        let hash = hasher.hash_one(key.as_ref());
        let first_row = |g: usize| keys.row(groups[g][0]);
        match index.find(hash, |&g| first_row(g) == key).copied() {
            Some(g) => {
                if !table.scd2.track_intermediate {
                    return Err(SinkError::DuplicateKey {
                        table: table.name.clone(),
                        first_row: groups[g][0],
                        second_row: row,
                    });
                }
                groups[g].push(row);
            }
            None => {
                index.insert_unique(hash, groups.len(), |&g| {
                    hasher.hash_one(keys.row(groups[g][0]).as_ref())
                });
                groups.push(smallvec::smallvec![row]);
            }
        }
    }
    Ok(KeyGroups {
        key_rows: keys,
        keys: groups,
        index,
        hasher,
        kinds,
        effective_from,
    })
}

pub(super) fn key_rows(table: &TableSpec, key: &[ArrayRef]) -> Result<Rows> {
    comparable_rows(table, key, "key comparison")
}

/// Rows whose bytes are equal exactly when every value is equal, NULL equal to NULL.
fn comparable_rows(
    table: &TableSpec,
    columns: &[ArrayRef],
    operation: &'static str,
) -> Result<Rows> {
    let arrow = |source| SinkError::Arrow {
        table: table.name.clone(),
        operation,
        source,
    };
    let fields = columns
        .iter()
        .map(|c| SortField::new(c.data_type().clone()))
        .collect();
    RowConverter::new(fields)
        .and_then(|c| c.convert_columns(columns))
        .map_err(arrow)
}

/// The table's state for the keys of a batch: per key its current version (if any) and the
/// latest time it recorded (the current version's start or the last closed version's end).
struct KeyState {
    /// Data columns of the current versions, typed like the changes.
    current: RecordBatch,
    /// The data file holding each current version (as the scan names it).
    current_files: Vec<String>,
    /// By key group (as `KeyGroups::keys`); empty when no key has a stored version.
    known: Vec<Known>,
}

#[derive(Clone, Default)]
struct Known {
    current_row: Option<usize>,
    latest: Option<i64>,
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn read_state(
    target: &DeltaTable,
    table: &TableSpec,
    shape: &ChangeShape,
    changes: ChangeRows<'_>,
    groups: &KeyGroups,
) -> Result<KeyState> {
    let data_fields: Vec<Field> = transformed_fields(table);
    let data_schema = Arc::new(Schema::new(data_fields.clone()));
    let empty = KeyState {
        current: RecordBatch::new_empty(data_schema.clone()),
        current_files: Vec::new(),
        known: Vec::new(),
    };
    let has_files = target
        .snapshot()
        .map(|s| s.log_data().num_files() > 0)
        .unwrap_or(true);
    if !has_files {
        return Ok(empty);
    }
    let query = |source| SinkError::query(&table.name, "reading the current versions", source);
    let delta = |source| delta_error(&table.name, target.table_url().as_str(), "read", source);
    let arrow = |source| SinkError::Arrow {
        table: table.name.clone(),
        operation: "state query",
        source,
    };
    let ctx = SessionContext::new_with_config(state_query_config());
    target
        .update_datafusion_session(&ctx.state())
        .map_err(delta)?;
    let provider = target
        .table_provider()
        .with_file_column(STATE_FILE)
        .await
        .map_err(query)?;
    // The batch's distinct keys (the first change of each key), as the join's build side.
    let firsts: UInt32Array = groups
        .keys
        .iter()
        .map(|rows| changes.row(rows[0]) as u32)
        .collect();
    let distinct = take(changes.column(shape.key), &firsts, None).map_err(arrow)?;
    // Only versions whose key lies within the batch's keys can join them: the scan skips the
    // data files (and row groups) whose key statistics lie outside. A batch of new keys above
    // all stored ones, as an append-only table with a growing key gets, reads no file at all.
    let scan = ctx.read_table(provider).map_err(query)?;
    let scan = match key_bounds(&distinct) {
        Some((low, high)) => scan
            .filter(
                Expr::Column(Column::from_name(shape.key_name.clone()))
                    .between(lit(low), lit(high)),
            )
            .map_err(query)?,
        None => scan,
    };
    ctx.register_table("target", scan.into_view())
        .map_err(query)?;
    let keys = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            &shape.key_name,
            distinct.data_type().clone(),
            true,
        )])),
        vec![distinct],
    )
    .map_err(arrow)?;
    ctx.register_batch("batch_keys", keys).map_err(query)?;
    let pk = quote(&shape.key_name);
    let from = quote(EFFECTIVE_FROM);
    let join = format!("FROM batch_keys k JOIN target t ON t.{pk} = k.{pk}");
    // One scan over the table: every version of the batch's keys with its times, folded batch
    // by batch as the join streams them, so memory follows the keys and not their history:
    // closed versions count for their times alone, current ones are kept whole.
    let data_list = data_fields
        .iter()
        .map(|f| format!("t.{}", quote(f.name())))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {data_list}, t.{from} AS {state_from}, COALESCE(t.{to}, t.{from}) AS {state_last}, \
         t.{is_current} AS {state_current}, t.{file} {join}",
        state_from = quote(STATE_FROM),
        to = quote(EFFECTIVE_TO),
        state_last = quote(STATE_LAST),
        is_current = quote(IS_CURRENT),
        state_current = quote(STATE_CURRENT),
        file = quote(STATE_FILE),
    );
    let mut found = ctx
        .sql(&sql)
        .await
        .map_err(query)?
        .execute_stream()
        .await
        .map_err(query)?;
    let mut known = vec![Known::default(); groups.keys.len()];
    let mut any_version = false;
    // Current versions seen so far: their data columns (one part per streamed batch), and per
    // key its row in the concatenated parts, its start and its file.
    let mut parts: Vec<Vec<ArrayRef>> = Vec::new();
    let mut current_rows: Vec<u32> = Vec::new();
    let mut current_from: Vec<Option<i64>> = Vec::new();
    let mut current_files: Vec<String> = Vec::new();
    let mut kept = 0u32;
    while let Some(batch) = found.next().await {
        let batch = batch.map_err(query)?;
        let column = |offset: usize| batch.column(shape.data_columns + offset);
        // The scan may hand back other physical types (e.g. string views); compare like with
        // like.
        let key =
            cast(batch.column(shape.key), data_fields[shape.key].data_type()).map_err(arrow)?;
        let timestamps = |offset| cast(column(offset), &crate::pipeline::schema::timestamp_type());
        let started = timestamps(0).map_err(arrow)?;
        let started = started.as_primitive::<TimestampMicrosecondType>();
        let last = timestamps(1).map_err(arrow)?;
        let last = last.as_primitive::<TimestampMicrosecondType>();
        let current_flags = cast(column(2), &DataType::Boolean).map_err(arrow)?;
        let current_flags = current_flags.as_boolean();
        let files = cast(column(3), &DataType::Utf8).map_err(arrow)?;
        let files = files.as_string::<i32>();
        let keys = key_rows(table, std::slice::from_ref(&key))?;
        let mut take_rows: Vec<u32> = Vec::new();
        for row in 0..batch.num_rows() {
            // The join returns only versions of the batch's keys.
            // Scanned rows find their key group by their key's row form, without a copy.
            let Some(group) = groups.group_of(keys.row(row)) else {
                continue;
            };
            any_version = true;
            let known = &mut known[group];
            known.latest = known
                .latest
                .max(last.is_valid(row).then(|| last.value(row)));
            if !(current_flags.is_valid(row) && current_flags.value(row)) {
                continue;
            }
            let from = started.is_valid(row).then(|| started.value(row));
            let slot = match known.current_row {
                None => {
                    known.current_row = Some(current_rows.len());
                    current_rows.push(0);
                    current_from.push(None);
                    current_files.push(String::new());
                    current_rows.len() - 1
                }
                // One current version per key is the invariant; should a table hold two, the
                // later one is the key's current version.
                Some(index) => {
                    let later = from.is_some()
                        && (current_from[index].is_none() || from > current_from[index]);
                    if !later {
                        continue;
                    }
                    index
                }
            };
            current_rows[slot] = kept + take_rows.len() as u32;
            current_from[slot] = from;
            current_files[slot] = files.value(row).to_string();
            take_rows.push(row as u32);
        }
        if take_rows.is_empty() {
            continue;
        }
        let indices = UInt32Array::from(take_rows);
        kept += indices.len() as u32;
        let part = data_fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                take(batch.column(i), &indices, None).and_then(|c| cast(&c, f.data_type()))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(arrow)?;
        parts.push(part);
    }
    if !any_version {
        return Ok(empty);
    }
    let data: Vec<ArrayRef> = (0..data_fields.len())
        .map(|i| {
            let columns: Vec<&dyn Array> = parts.iter().map(|p| p[i].as_ref()).collect();
            if columns.is_empty() {
                Ok(deltalake::arrow::array::new_empty_array(
                    data_fields[i].data_type(),
                ))
            } else {
                concat(&columns)
            }
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(arrow)?;
    drop(parts);
    let indices = UInt32Array::from(current_rows);
    let current = data
        .iter()
        .map(|c| take(c, &indices, None))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(arrow)?;
    let current = RecordBatch::try_new(data_schema, current).map_err(arrow)?;
    Ok(KeyState {
        current,
        current_files,
        known,
    })
}

/// The smallest and the largest non-null key; `None` when there is none, or when the key is a
/// float: Parquet statistics leave NaN out, so a file holding a NaN key would look unreachable.
fn key_bounds(keys: &ArrayRef) -> Option<(ScalarValue, ScalarValue)> {
    let bounded_by_statistics = matches!(
        keys.data_type(),
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Date32
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Decimal128(..)
            | DataType::Boolean
            | DataType::Timestamp(..)
    );
    if !bounded_by_statistics {
        return None;
    }
    let first = |descending| {
        let options = SortOptions {
            descending,
            nulls_first: false,
        };
        let index = sort_to_indices(keys, Some(options), Some(1)).ok()?;
        let at = usize::try_from(*index.values().first()?).ok()?;
        if keys.is_null(at) {
            return None;
        }
        ScalarValue::try_from_array(keys, at).ok()
    };
    Some((first(false)?, first(true)?))
}

/// The state queries join the batch's keys with the data table: the keys (at most a batch's
/// worth) are always the collected build side, so the data table is only streamed past them,
/// never repartitioned or held. The join passes no bounds of its own down to the scan: they
/// skipped row groups by their statistics, which leave NaN out, so a NaN key never found its
/// stored version; [`key_bounds`] bounds the scan instead, for the key types it can.
fn state_query_config() -> SessionConfig {
    let mut config = SessionConfig::new();
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.hash_join_single_partition_threshold = usize::MAX;
    optimizer.hash_join_single_partition_threshold_rows = usize::MAX;
    optimizer.enable_join_dynamic_filter_pushdown = false;
    config
}

/// One version to insert: the change row it comes from and its interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NewVersion {
    source_row: usize,
    operation: &'static str,
    effective_from: i64,
    /// `None` for the new current version.
    effective_to: Option<i64>,
}

/// The rows to stage for one batch.
#[derive(Debug, Default)]
struct VersionPlan {
    closes: Vec<Close>,
    versions: Vec<NewVersion>,
    unchanged: usize,
}

/// A stored current version to close.
#[derive(Debug)]
struct Close {
    /// A change row of the key (the MERGE takes the key value from it).
    row: usize,
    /// The key, as `key_rows` encodes it.
    key: OwnedRow,
    /// The version's row in `KeyState::current`.
    stored: usize,
    at: i64,
}

/// The version at the head of a key's history while its changes are applied.
#[derive(Clone, Copy)]
enum Head {
    Absent,
    /// The current version stored in the table (row in `KeyState::current`).
    Stored(usize),
    /// A version inserted by this batch (index into `VersionPlan::versions`).
    Pending(usize),
}

fn plan_versions(
    table: &TableSpec,
    shape: &ChangeShape,
    changes: ChangeRows<'_>,
    groups: &KeyGroups,
    state: &KeyState,
) -> Result<VersionPlan> {
    let values = ComparedValues::of(table, shape, changes, groups, state)?;
    let tombstones = table.scd2.hard_deletes == HardDeletes::Tombstone;
    let mut plan = VersionPlan::default();
    for (group, rows) in groups.keys.iter().enumerate() {
        let known = state.known.get(group);
        let mut head = match known.and_then(|k| k.current_row) {
            Some(r) => Head::Stored(r),
            None => Head::Absent,
        };
        let mut latest = known.and_then(|k| k.latest);
        let mut close_stored = None;
        let stored = known.and_then(|k| k.current_row);
        for &row in rows {
            let at = latest.map_or(groups.effective_from[row], |l| {
                groups.effective_from[row].max(l)
            });
            let kind = groups.kinds[row];
            let unchanged = match (kind, head) {
                (_, Head::Absent) => kind == Change::Delete,
                (Change::Upsert(_), Head::Stored(r)) => values.change(row) == values.stored(r),
                (Change::Upsert(_), Head::Pending(v)) => {
                    values.change(row) == values.change(plan.versions[v].source_row)
                }
                (Change::Delete, _) => false,
            };
            if unchanged {
                plan.unchanged += 1;
                continue;
            }
            match head {
                Head::Stored(_) => close_stored = Some(at),
                Head::Pending(v) => plan.versions[v].effective_to = Some(at),
                Head::Absent => {}
            }
            match kind {
                Change::Upsert(operation) => {
                    plan.versions.push(NewVersion {
                        source_row: row,
                        operation,
                        effective_from: at,
                        effective_to: None,
                    });
                    head = Head::Pending(plan.versions.len() - 1);
                }
                Change::Delete => {
                    if tombstones {
                        plan.versions.push(NewVersion {
                            source_row: row,
                            operation: "DELETE",
                            effective_from: at,
                            effective_to: Some(at),
                        });
                    }
                    head = Head::Absent;
                }
            }
            latest = Some(at);
        }
        if let (Some(at), Some(stored)) = (close_stored, stored) {
            plan.closes.push(Close {
                row: rows[0],
                key: groups.key(group).owned(),
                stored,
                at,
            });
        }
    }
    Ok(plan)
}

/// The data values `plan_versions` compares, in one row format so that equality is a byte
/// comparison: the stored current versions, and the change rows that can meet one — those of a
/// key with a stored current version or with more than one change in the batch. A new key's only
/// change (most of an insert-heavy batch) is never compared, so it is neither copied nor
/// converted.
struct ComparedValues {
    rows: Rows,
    /// Per change row, its place in `rows` (`NOT_COMPARED` when it has none).
    change_slots: Vec<u32>,
    /// Where the stored current versions start in `rows`.
    stored_start: usize,
}

const NOT_COMPARED: u32 = u32::MAX;

impl ComparedValues {
    fn of(
        table: &TableSpec,
        shape: &ChangeShape,
        changes: ChangeRows<'_>,
        groups: &KeyGroups,
        state: &KeyState,
    ) -> Result<ComparedValues> {
        let mut change_slots = vec![NOT_COMPARED; changes.len()];
        let mut picks: Vec<(usize, usize)> = Vec::new();
        for (group, rows) in groups.keys.iter().enumerate() {
            let stored = state
                .known
                .get(group)
                .is_some_and(|k| k.current_row.is_some());
            if stored || rows.len() > 1 {
                for &row in rows {
                    change_slots[row] = picks.len() as u32;
                    picks.push((0, changes.row(row)));
                }
            }
        }
        let stored_start = picks.len();
        picks.extend((0..state.current.num_rows()).map(|row| (1, row)));
        let arrow = |source| SinkError::Arrow {
            table: table.name.clone(),
            operation: "value comparison",
            source,
        };
        let columns = (0..shape.data_columns)
            .map(|i| {
                interleave(
                    &[changes.column(i).as_ref(), state.current.column(i).as_ref()],
                    &picks,
                )
                .map_err(arrow)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ComparedValues {
            rows: comparable_rows(table, &columns, "value comparison")?,
            change_slots,
            stored_start,
        })
    }

    /// The values of change row `row`, which must be one of the compared rows.
    fn change(&self, row: usize) -> Row<'_> {
        let slot = self.change_slots[row];
        debug_assert_ne!(
            slot, NOT_COMPARED,
            "change row {row} was not set aside for comparison"
        );
        self.rows.row(slot as usize)
    }

    /// The values of stored current version `row`.
    fn stored(&self, row: usize) -> Row<'_> {
        self.rows.row(self.stored_start + row)
    }
}

/// The MERGE source: close rows (merge key set, data NULL) then insert rows (merge key NULL).
fn stage(
    table: &TableSpec,
    shape: &ChangeShape,
    changes: ChangeRows<'_>,
    data_schema: &SchemaRef,
    plan: &VersionPlan,
    now: DateTime<Utc>,
) -> Result<RecordBatch> {
    let arrow = |source| SinkError::Arrow {
        table: table.name.clone(),
        operation: "staging the merge",
        source,
    };
    let key_rows: UInt32Array = staged_column(
        plan.closes.iter().map(|c| Some(changes.row(c.row) as u32)),
        plan.versions.iter().map(|_| None),
    );
    let close_at = timestamps(staged_column(
        plan.closes.iter().map(|c| Some(c.at)),
        plan.versions.iter().map(|_| None),
    ));
    let mut fields = vec![
        Field::new(
            MERGE_KEY,
            changes.column(shape.key).data_type().clone(),
            true,
        ),
        Field::new(CLOSE_AT, crate::pipeline::schema::timestamp_type(), true),
    ];
    fields.extend(
        data_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true)),
    );
    let mut columns = vec![
        take(changes.column(shape.key), &key_rows, None).map_err(arrow)?,
        close_at,
    ];
    columns.extend(
        version_columns(data_schema, changes, &plan.versions, plan.closes.len(), now)
            .map_err(arrow)?,
    );
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(arrow)
}

/// The new versions of a batch as data table rows, built a slice at a time where they are
/// written (the direct commit): built whole, they were a copy of the batch's changes held until
/// the write began.
pub(super) struct NewVersions<'a> {
    schema: SchemaRef,
    changes: ChangeRows<'a>,
    versions: &'a [NewVersion],
    now: DateTime<Utc>,
}

impl NewVersions<'_> {
    pub(super) fn len(&self) -> usize {
        self.versions.len()
    }

    /// Versions `range`, in the data table's schema.
    pub(super) fn batch(
        &self,
        range: std::ops::Range<usize>,
    ) -> std::result::Result<RecordBatch, ArrowError> {
        let columns = version_columns(
            &self.schema,
            self.changes,
            &self.versions[range],
            0,
            self.now,
        )?;
        RecordBatch::try_new(self.schema.clone(), columns)
    }
}

/// The columns of `data_schema` for `leading_nulls` rows of NULLs (a MERGE source's close rows),
/// then `versions`.
fn version_columns(
    data_schema: &SchemaRef,
    changes: ChangeRows<'_>,
    versions: &[NewVersion],
    leading_nulls: usize,
    now: DateTime<Utc>,
) -> std::result::Result<Vec<ArrayRef>, ArrowError> {
    let versions = versions.iter();
    let data_rows: UInt32Array = staged_column(
        nulls(leading_nulls),
        versions
            .clone()
            .map(|v| Some(changes.row(v.source_row) as u32)),
    );
    data_schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            Ok(match field.name().as_str() {
                OPERATION => Arc::new(staged_column::<_, StringArray>(
                    nulls(leading_nulls),
                    versions.clone().map(|v| Some(v.operation)),
                )),
                EFFECTIVE_FROM => timestamps(staged_column(
                    nulls(leading_nulls),
                    versions.clone().map(|v| Some(v.effective_from)),
                )),
                EFFECTIVE_TO => timestamps(staged_column(
                    nulls(leading_nulls),
                    versions.clone().map(|v| v.effective_to),
                )),
                IS_CURRENT => Arc::new(staged_column::<_, BooleanArray>(
                    nulls(leading_nulls),
                    versions.clone().map(|v| Some(v.effective_to.is_none())),
                )),
                INGESTED_AT => timestamps(staged_column(
                    nulls(leading_nulls),
                    versions.clone().map(|_| Some(now.timestamp_micros())),
                )),
                _ => take(changes.column(i), &data_rows, None)?,
            })
        })
        .collect()
}

fn timestamps(values: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}

/// A staged column: the values of the close rows, then those of the insert rows.
fn staged_column<T, C: FromIterator<Option<T>>>(
    close_rows: impl Iterator<Item = Option<T>>,
    insert_rows: impl Iterator<Item = Option<T>>,
) -> C {
    close_rows.chain(insert_rows).collect()
}

fn nulls<T>(n: usize) -> impl Iterator<Item = Option<T>> {
    std::iter::repeat_with(|| None).take(n)
}

fn source(name: &str) -> Expr {
    Expr::Column(Column::new(Some("s"), name))
}

fn target(name: &str) -> Expr {
    Expr::Column(Column::new(Some("t"), name))
}

async fn merge(
    target_table: DeltaTable,
    table: &TableSpec,
    shape: &ChangeShape,
    staged: RecordBatch,
    txns: Vec<deltalake::kernel::Transaction>,
) -> Result<DeltaTable> {
    let location = target_table.table_url().to_string();
    let delta = |operation, source| delta_error(&table.name, &location, operation, source);
    let staged_df = SessionContext::new()
        .read_batch(staged.clone())
        .map_err(|source| SinkError::query(&table.name, "staging the merge", source))?;
    let names: Vec<String> = staged
        .schema()
        .fields()
        .iter()
        .skip(2)
        .map(|f| f.name().clone())
        .collect();
    let predicate = target(&shape.key_name)
        .eq(source(MERGE_KEY))
        .and(target(IS_CURRENT).eq(lit(true)));
    let (committed, _metrics) = target_table
        .merge(staged_df, predicate)
        .with_source_alias("s")
        .with_target_alias("t")
        .with_commit_properties(lake_commit_properties(txns))
        .with_writer_properties(writer_properties(&data_table_schema(table)))
        .when_matched_update(|update| {
            update
                .update(Column::new_unqualified(EFFECTIVE_TO), source(CLOSE_AT))
                .update(Column::new_unqualified(IS_CURRENT), lit(false))
        })
        .map_err(|e| delta("merge", e))?
        .when_not_matched_insert(|insert| {
            names.iter().fold(
                insert.predicate(source(MERGE_KEY).is_null()),
                |insert, name| insert.set(Column::new_unqualified(name), source(name)),
            )
        })
        .map_err(|e| delta("merge", e))?
        .await
        .map_err(|e| delta("merge", e))?;
    Ok(committed)
}

#[cfg(test)]
mod tests {
    use super::Change;

    #[test]
    fn operations_are_read_in_any_case_and_a_load_is_an_insert() {
        assert_eq!(
            Change::of_operation("insert"),
            Some(Change::Upsert("INSERT"))
        );
        assert_eq!(Change::of_operation("Load"), Some(Change::Upsert("INSERT")));
        assert_eq!(
            Change::of_operation("UPDATE"),
            Some(Change::Upsert("UPDATE"))
        );
        assert_eq!(Change::of_operation("dElEtE"), Some(Change::Delete));
        assert_eq!(Change::of_operation("upsert"), None);
        assert_eq!(Change::of_operation(""), None);
        assert_eq!(Change::of_operation("INSERTED"), None);
    }
}
