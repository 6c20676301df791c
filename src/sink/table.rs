//! Opening and creating one Delta table: location → URL, create on first use with the exact
//! schema from `pipeline::schema`, and a schema check when the table already exists.

use std::collections::HashMap;
use std::path::Path;

use deltalake::arrow::datatypes::Schema;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::{StructField, StructType};
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::{
    EnabledStatistics, WriterProperties, WriterPropertiesBuilder,
};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};

use super::error::{Result, SinkError};

/// Whether a location is on the local filesystem (an absolute path or a `file://` URL).
pub(crate) fn local_path(location: &str) -> Option<&Path> {
    if let Some(rest) = location.strip_prefix("file://") {
        return Some(Path::new(rest));
    }
    (!location.contains("://")).then(|| Path::new(location))
}

/// A table builder for a location. Local directories are created, as Delta needs them to exist.
fn builder(
    table: &str,
    location: &str,
    storage_options: &HashMap<String, String>,
) -> Result<DeltaTableBuilder> {
    let url =
        deltalake::ensure_table_uri(location).map_err(|source| SinkError::InvalidLocation {
            table: table.to_string(),
            location: location.to_string(),
            source: Box::new(source),
        })?;
    Ok(DeltaTableBuilder::from_url(url)
        .map_err(|source| delta_error(table, location, "open", source))?
        .with_storage_options(storage_options.clone()))
}

/// Opens the table if one exists at `location`; `None` when nothing was created there yet.
/// Never creates anything (local directories included), so reads of a missing table leave no trace.
pub async fn open_existing(
    table: &str,
    location: &str,
    storage_options: &HashMap<String, String>,
) -> Result<Option<DeltaTable>> {
    if let Some(path) = local_path(location)
        && !path.join("_delta_log").is_dir()
    {
        return Ok(None);
    }
    match builder(table, location, storage_options)?.load().await {
        Ok(t) => Ok(Some(t)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(source) => Err(delta_error(table, location, "open", source)),
    }
}

/// Opens the table at `location`, creating it with `schema` if it does not exist yet.
/// Another writer may create the same table at the same moment (several processors start
/// together); losing that race is fine, the winner's table is opened instead.
pub(crate) async fn open_or_create(
    table: &str,
    location: &str,
    schema: &Schema,
    storage_options: &HashMap<String, String>,
) -> Result<DeltaTable> {
    if let Some(existing) = open_existing(table, location, storage_options).await? {
        check_schema(table, location, &existing, schema)?;
        return Ok(existing);
    }
    let columns = delta_columns(table, schema)?;
    let empty = builder(table, location, storage_options)?
        .build()
        .map_err(|source| delta_error(table, location, "open", source))?;
    let created = empty
        .create()
        .with_table_name(table)
        .with_columns(columns)
        .with_save_mode(SaveMode::ErrorIfExists)
        .await;
    match created {
        Ok(t) => {
            tracing::info!(table, location, "created Delta table");
            Ok(t)
        }
        Err(create_err) => match open_existing(table, location, storage_options).await {
            Ok(Some(existing)) => {
                tracing::debug!(table, location, "table was created concurrently; opened it");
                check_schema(table, location, &existing, schema)?;
                Ok(existing)
            }
            _ => Err(delta_error(table, location, "create", create_err)),
        },
    }
}

fn delta_columns(table: &str, schema: &Schema) -> Result<Vec<StructField>> {
    schema
        .fields()
        .iter()
        .map(|f| {
            f.as_ref()
                .try_into_kernel()
                .map_err(|source| SinkError::Arrow {
                    table: table.to_string(),
                    operation: "table creation",
                    source,
                })
        })
        .collect()
}

/// The existing table must hold exactly the columns (names, order, types, nullability) the
/// config describes; writing into a table of another shape would fail obscurely later.
fn check_schema(
    table: &str,
    location: &str,
    existing: &DeltaTable,
    expected: &Schema,
) -> Result<()> {
    let expected: StructType = expected
        .try_into_kernel()
        .map_err(|source| SinkError::Arrow {
            table: table.to_string(),
            operation: "schema check",
            source,
        })?;
    let actual = existing
        .snapshot()
        .map_err(|source| delta_error(table, location, "read schema", source))?
        .schema();
    let describe = |s: &StructType| {
        s.fields()
            .map(|f| {
                let null = if f.is_nullable() { "" } else { " not null" };
                format!("{} {}{null}", f.name(), f.data_type())
            })
            .collect::<Vec<_>>()
    };
    let (want, have) = (describe(&expected), describe(&actual));
    if want == have {
        return Ok(());
    }
    let missing: Vec<&String> = want.iter().filter(|c| !have.contains(c)).collect();
    let extra: Vec<&String> = have.iter().filter(|c| !want.contains(c)).collect();
    let detail = if missing.is_empty() && extra.is_empty() {
        format!(
            "columns are in another order: table has [{}]",
            have.join(", ")
        )
    } else {
        format!(
            "config expects [{}] that the table lacks; table has [{}] that the config lacks",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            extra
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(SinkError::SchemaMismatch {
        table: table.to_string(),
        location: location.to_string(),
        detail,
    })
}

/// The properties of every commit made through a table lock: the transaction actions (a batch's;
/// none for maintenance), and none of delta-rs's post-commit work. A checkpoint (every
/// `delta.checkpointInterval` versions) is written in the background instead (see
/// [`super::lake::TableLock::keep`]), so the batch that reaches one does not wait for it: it took
/// ~300 ms on a 300,000-row table, a latency spike every 100 batches. Expired log files are
/// removed by table maintenance, not after every commit, which listed the whole `_delta_log`
/// folder each time (up to 30 days of commits).
pub(crate) fn lake_commit_properties(
    txns: Vec<deltalake::kernel::Transaction>,
) -> deltalake::kernel::transaction::CommitProperties {
    deltalake::kernel::transaction::CommitProperties::default()
        .with_application_transactions(txns)
        .with_create_checkpoint(false)
        .with_cleanup_expired_logs(Some(false))
}

pub(crate) fn delta_error(
    table: &str,
    location: &str,
    operation: &'static str,
    source: DeltaTableError,
) -> SinkError {
    SinkError::Delta {
        table: table.to_string(),
        location: location.to_string(),
        operation,
        source: Box::new(source),
    }
}

/// Same column names and types, in the same order.
pub(crate) fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type())
}

/// A batch handed to the sink must have the table's columns (names and types, in order).
pub(crate) fn check_batch_schema(
    table: &str,
    what: &'static str,
    expected: &Schema,
    batch: &RecordBatch,
) -> Result<()> {
    let actual = batch.schema();
    let same = expected.fields().len() == actual.fields().len()
        && expected
            .fields()
            .iter()
            .zip(actual.fields())
            .all(|(e, a)| e.name() == a.name() && e.data_type().equals_datatype(a.data_type()));
    if same {
        return Ok(());
    }
    let describe = |s: &Schema| {
        s.fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(SinkError::BatchSchema {
        table: table.to_string(),
        what,
        detail: format!(
            "expected [{}], got [{}]",
            describe(expected),
            describe(&actual)
        ),
    })
}

/// Rows per Parquet row group: readers fetch a row group at a time and the writer holds one's
/// encoded pages until it is flushed, so this bounds the memory of a scan, a rewrite and a
/// commit (Parquet's default is a million rows; 128k rows kept ~30 MB more at a 100k-row commit).
const ROW_GROUP_ROWS: usize = 32 * 1024;

/// Parquet settings for every data file this sink writes. Dictionary encoding pays off for
/// strings and flags (few distinct values per file) but not for measurements, ids and
/// timestamps, where the writer builds a dictionary only to abandon it; statistics per column
/// chunk are what Delta and DataFusion prune with (page-level ones cost more and are not read).
pub(crate) fn writer_properties(schema: &Schema) -> WriterProperties {
    writer_properties_builder(schema).build()
}

/// [`writer_properties`], still open to additions.
pub(crate) fn writer_properties_builder(schema: &Schema) -> WriterPropertiesBuilder {
    use deltalake::arrow::datatypes::DataType;
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_dictionary_enabled(false);
    for field in schema.fields() {
        if matches!(
            field.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean
        ) {
            builder = builder
                .set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), true);
        }
    }
    builder
}
