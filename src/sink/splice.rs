//! Splicing a data file: closing a version changes only its `_effective_to` and `_is_current`,
//! and the row stays where it is. So a large file is rewritten by copying the encoded bytes of
//! every other column chunk as they are, and encoding only those two columns again, in the row
//! groups that hold a version to close. Decoding and re-encoding every column of every file a
//! batch touches was most of a commit's cost, and random updates touch most files.
//!
//! The new file holds the same rows as the old one, so its Delta statistics are the old ones
//! with the two columns' entries recomputed.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Timelike as _};
use deltalake::arrow::array::{ArrayRef, AsArray, BooleanArray, TimestampMicrosecondArray};
use deltalake::arrow::compute::concat_batches;
use deltalake::arrow::datatypes::TimestampMicrosecondType;
use deltalake::kernel::{Add, LogicalFileView};
use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt as _};
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use deltalake::parquet::arrow::arrow_writer::{ArrowRowGroupWriterFactory, compute_leaves};
use deltalake::parquet::column::writer::ColumnCloseResult;
use deltalake::parquet::errors::ParquetError;
use deltalake::parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, RowGroupMetaData};
use deltalake::parquet::file::reader::{ChunkReader, Length};
use deltalake::parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use serde_json::{Map, Value};

use super::error::Result;
use super::rewrite::{ClosedColumns, Rewrite, object_reader};
use super::table::{same_columns, writer_properties_builder};
use super::upload::{StoredFile, Written};
use crate::pipeline::schema::{EFFECTIVE_TO, IS_CURRENT};

/// A file rewritten by splicing.
pub(super) struct Spliced {
    pub add: Add,
    /// Current versions it closed.
    pub closed: usize,
}

/// Rewrites `file` with the batch's closes applied, copying the column chunks a close does not
/// change. `None` when the file's columns are not exactly the data table's (another writer's
/// file, an older layout): such a file is decoded and rewritten instead.
pub(super) async fn splice(
    rewrite: &Rewrite<'_>,
    store: Arc<dyn ObjectStore>,
    file: &LogicalFileView,
) -> Result<Option<Spliced>> {
    let path = file.object_store_path();
    let fail = |detail: &dyn std::fmt::Display| rewrite.file_error(&path, detail);
    let mut reader = object_reader(store.clone(), &path, file.size());
    // The offset index (page locations) is carried over for copied chunks, so the new file
    // has one for every column like the files this sink writes.
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let source = ArrowReaderMetadata::load_async(&mut reader, options)
        .await
        .map_err(|e| fail(&e))?;
    if !same_columns(source.schema(), &rewrite.schema)
        || source.parquet_schema().num_columns() != rewrite.schema.fields().len()
    {
        return Ok(None);
    }
    // Named as delta-rs names the files it writes.
    let name = format!("part-00000-{}-c000.snappy.parquet", uuid::Uuid::new_v4());
    let written = deltalake::Path::from(name.as_str());
    let mut stored = StoredFile::new(store.clone(), written.clone());
    let (closed, summary) =
        match copy_with_closes(rewrite, &store, &path, &source, &mut stored).await {
            Ok(copied) => copied,
            Err(e) => {
                stored.abandon().await;
                return Err(e);
            }
        };
    let size = stored
        .finish()
        .await
        .map_err(|e| rewrite.file_error(&written, e))?;
    let size = i64::try_from(size).map_err(|e| rewrite.file_error(&written, e))?;
    let stats = file
        .stats()
        .map(|stats| summary.patch(&stats, EFFECTIVE_TO, IS_CURRENT))
        .transpose()
        .map_err(|e| fail(&e))?;
    Ok(Some(Spliced {
        add: Add {
            path: name,
            size,
            partition_values: Default::default(),
            modification_time: chrono::Utc::now().timestamp_millis(),
            data_change: true,
            stats,
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
            clustering_provider: None,
        },
        closed,
    }))
}

/// Writes the spliced file into `stored`, moving it on to the store column chunk by column
/// chunk; returns the versions it closed and what the two rewritten columns now hold.
async fn copy_with_closes(
    rewrite: &Rewrite<'_>,
    store: &Arc<dyn ObjectStore>,
    path: &deltalake::Path,
    source: &ArrowReaderMetadata,
    stored: &mut StoredFile,
) -> Result<(usize, ColumnSummary)> {
    let fail = |detail: &dyn std::fmt::Display| rewrite.file_error(path, detail);
    let to_index = rewrite.index(EFFECTIVE_TO)?;
    let current_index = rewrite.index(IS_CURRENT)?;
    let metadata = source.metadata().clone();
    let props = writer_properties_builder(&rewrite.schema)
        .set_key_value_metadata(metadata.file_metadata().key_value_metadata().cloned())
        .build();
    let mut writer = SerializedFileWriter::new(
        stored.writer(),
        metadata.file_metadata().schema_descr().root_schema_ptr(),
        Arc::new(props),
    )
    .map_err(|e| fail(&e))?;
    let encoders = ArrowRowGroupWriterFactory::new(&writer, source.schema().clone());
    let projection = ProjectionMask::leaves(
        metadata.file_metadata().schema_descr(),
        [rewrite.key, to_index, current_index],
    );
    let projected = source
        .schema()
        .project(&[rewrite.key, to_index, current_index])
        .map(Arc::new)
        .map_err(|e| fail(&e))?;
    let mut closed = 0;
    let mut summary = ColumnSummary::default();
    for (group, row_group) in metadata.row_groups().iter().enumerate() {
        let range = byte_range(row_group).map_err(|e| fail(&e))?;
        let bytes = store
            .get_range(path, range.clone())
            .await
            .map_err(|e| fail(&e))?;
        let chunk = RowGroupBytes {
            start: range.start,
            bytes,
        };
        let batches =
            ParquetRecordBatchReaderBuilder::new_with_metadata(chunk.clone(), source.clone())
                .with_row_groups(vec![group])
                .with_projection(projection.clone())
                .with_batch_size(
                    usize::try_from(row_group.num_rows())
                        .unwrap_or(usize::MAX)
                        .max(1),
                )
                .build()
                .map_err(|e| fail(&e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| fail(&e))?;
        let columns = concat_batches(&projected, &batches).map_err(|e| fail(&e))?;
        let (key, to, current) = (columns.column(0), columns.column(1), columns.column(2));
        let to = to.as_primitive::<TimestampMicrosecondType>();
        let current = current.as_boolean();
        let mut out = writer.next_row_group().map_err(|e| fail(&e))?;
        match rewrite.close_columns(key, to, current)? {
            None => {
                summary.observe(to, current);
                for column in 0..row_group.num_columns() {
                    copy_chunk(&mut out, &chunk, &metadata, group, column).map_err(|e| fail(&e))?;
                    stored.store_written().await.map_err(|e| fail(&e))?;
                }
            }
            Some(ClosedColumns {
                to: new_to,
                current: new_current,
                rows,
            }) => {
                closed += rows;
                summary.observe(&new_to, &new_current);
                let mut encoders: Vec<_> = encoders
                    .create_column_writers(group)
                    .map_err(|e| fail(&e))?
                    .into_iter()
                    .map(Some)
                    .collect();
                let replaced: [(usize, ArrayRef); 2] = [
                    (to_index, Arc::new(new_to)),
                    (current_index, Arc::new(new_current)),
                ];
                for column in 0..row_group.num_columns() {
                    match replaced.iter().find(|(i, _)| *i == column) {
                        None => copy_chunk(&mut out, &chunk, &metadata, group, column)
                            .map_err(|e| fail(&e))?,
                        Some((_, array)) => {
                            let Some(mut encoder) = encoders.get_mut(column).and_then(Option::take)
                            else {
                                return Err(fail(&format!("no writer for column {column}")));
                            };
                            for leaf in compute_leaves(source.schema().field(column), array)
                                .map_err(|e| fail(&e))?
                            {
                                encoder.write(&leaf).map_err(|e| fail(&e))?;
                            }
                            encoder
                                .close()
                                .and_then(|chunk| chunk.append_to_row_group(&mut out))
                                .map_err(|e| fail(&e))?;
                        }
                    }
                    stored.store_written().await.map_err(|e| fail(&e))?;
                }
            }
        }
        out.close().map_err(|e| fail(&e))?;
    }
    // Writes the footer into `stored`'s buffer; `finish` stores it.
    writer.into_inner().map_err(|e| fail(&e))?;
    Ok((closed, summary))
}

/// Where a row group's column chunks lie in its file.
fn byte_range(row_group: &RowGroupMetaData) -> std::result::Result<Range<u64>, ParquetError> {
    let mut range: Option<Range<u64>> = None;
    for column in row_group.columns() {
        let (start, length) = column.byte_range();
        let end = start + length;
        range = Some(match range {
            Some(r) => r.start.min(start)..r.end.max(end),
            None => start..end,
        });
    }
    range.ok_or_else(|| ParquetError::General("a row group without columns".into()))
}

/// One row group's bytes, addressed by their offsets in the whole file.
#[derive(Clone)]
struct RowGroupBytes {
    start: u64,
    bytes: Bytes,
}

impl RowGroupBytes {
    fn slice(&self, start: u64, length: usize) -> std::result::Result<Bytes, ParquetError> {
        let offset = start
            .checked_sub(self.start)
            .and_then(|o| usize::try_from(o).ok())
            .filter(|o| o + length <= self.bytes.len())
            .ok_or_else(|| {
                ParquetError::General(format!(
                    "bytes {start}..{} are outside the row group's {}..{}",
                    start + length as u64,
                    self.start,
                    self.start + self.bytes.len() as u64
                ))
            })?;
        Ok(self.bytes.slice(offset..offset + length))
    }
}

impl Length for RowGroupBytes {
    fn len(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

impl ChunkReader for RowGroupBytes {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> std::result::Result<Self::T, ParquetError> {
        let end = self.start + self.bytes.len() as u64;
        let length = usize::try_from(end.saturating_sub(start)).unwrap_or(0);
        Ok(bytes::Buf::reader(self.slice(start, length)?))
    }

    fn get_bytes(&self, start: u64, length: usize) -> std::result::Result<Bytes, ParquetError> {
        self.slice(start, length)
    }
}

/// Appends a column chunk of the source row group as it is encoded.
fn copy_chunk(
    out: &mut SerializedRowGroupWriter<'_, Written>,
    chunk: &RowGroupBytes,
    metadata: &ParquetMetaData,
    group: usize,
    column: usize,
) -> std::result::Result<(), ParquetError> {
    let row_group = metadata.row_group(group);
    let source = row_group.column(column);
    out.append_column(
        chunk,
        ColumnCloseResult {
            bytes_written: u64::try_from(source.compressed_size()).unwrap_or(0),
            rows_written: u64::try_from(row_group.num_rows()).unwrap_or(0),
            metadata: source.clone(),
            bloom_filter: None,
            column_index: page_index(metadata.column_index(), group, column),
            offset_index: page_index(metadata.offset_index(), group, column),
        },
    )
}

/// A column chunk's entry in a page index, by row group then column.
fn page_index<T: Clone>(index: Option<&Vec<Vec<T>>>, group: usize, column: usize) -> Option<T> {
    index
        .and_then(|groups| groups.get(group))
        .and_then(|columns| columns.get(column))
        .cloned()
}

/// What the Delta statistics say of `_effective_to` and `_is_current`, over a whole file.
#[derive(Default)]
struct ColumnSummary {
    to_min: Option<i64>,
    to_max: Option<i64>,
    to_nulls: u64,
    current_min: Option<bool>,
    current_max: Option<bool>,
    current_nulls: u64,
}

impl ColumnSummary {
    fn observe(&mut self, to: &TimestampMicrosecondArray, current: &BooleanArray) {
        for value in to.iter() {
            match value {
                Some(v) => {
                    self.to_min = Some(self.to_min.map_or(v, |m| m.min(v)));
                    self.to_max = Some(self.to_max.map_or(v, |m| m.max(v)));
                }
                None => self.to_nulls += 1,
            }
        }
        for value in current.iter() {
            match value {
                Some(v) => {
                    self.current_min = Some(self.current_min.map_or(v, |m| m & v));
                    self.current_max = Some(self.current_max.map_or(v, |m| m | v));
                }
                None => self.current_nulls += 1,
            }
        }
    }

    /// The source file's statistics with the two columns' entries replaced. A column the
    /// source does not index (no null count) stays unindexed; a column without values has no
    /// bounds, as the Delta writer leaves them.
    fn patch(&self, stats: &str, to: &str, current: &str) -> serde_json::Result<String> {
        let mut stats: Map<String, Value> = serde_json::from_str(stats)?;
        let columns = [
            (
                to,
                self.to_nulls,
                self.to_min.and_then(timestamp_stat),
                self.to_max.and_then(timestamp_stat),
            ),
            (
                current,
                self.current_nulls,
                self.current_min.map(Value::Bool),
                self.current_max.map(Value::Bool),
            ),
        ];
        for (name, nulls, min, max) in columns {
            let indexed = stats
                .get("nullCount")
                .and_then(Value::as_object)
                .is_some_and(|counts| counts.contains_key(name));
            if !indexed {
                continue;
            }
            set(&mut stats, "nullCount", name, Some(Value::from(nulls)));
            set(&mut stats, "minValues", name, min);
            set(&mut stats, "maxValues", name, max);
        }
        serde_json::to_string(&stats)
    }
}

/// Sets or removes `stats[section][column]`.
fn set(stats: &mut Map<String, Value>, section: &str, column: &str, value: Option<Value>) {
    match value {
        Some(value) => {
            let entries = stats
                .entry(section)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(entries) = entries {
                entries.insert(column.to_string(), value);
            }
        }
        None => {
            if let Some(entries) = stats.get_mut(section).and_then(Value::as_object_mut) {
                entries.remove(column);
            }
        }
    }
}

/// A timestamp as the Delta writer puts it in statistics: UTC, truncated to milliseconds, the
/// fraction left out when the value has none.
fn timestamp_stat(micros: i64) -> Option<Value> {
    let at = DateTime::from_timestamp_micros(micros)?.naive_utc();
    let format = if at.nanosecond() == 0 {
        "%Y-%m-%dT%H:%M:%SZ"
    } else {
        "%Y-%m-%dT%H:%M:%S%.3fZ"
    };
    Some(Value::from(at.format(format).to_string()))
}
