//! Arrow schemas of the lake tables, derived from the table config. The sink creates Delta tables
//! with exactly these schemas; the pipeline builds batches in them.

use std::sync::Arc;

use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::config::spec::{ColumnType, TableSpec, TransformKind};

use super::error::{PipelineError, Result};

pub const OPERATION: &str = "_operation";
pub const SOURCE_TS: &str = "_source_ts";
pub const TOPIC: &str = "_topic";
pub const PARTITION: &str = "_partition";
pub const OFFSET: &str = "_offset";
pub const EFFECTIVE_FROM: &str = "_effective_from";
pub const EFFECTIVE_TO: &str = "_effective_to";
pub const IS_CURRENT: &str = "_is_current";
pub const INGESTED_AT: &str = "_ingested_at";
pub const FAILED_RULES: &str = "_failed_rules";
pub const DQ_REASON: &str = "_dq_reason";
pub const RAW: &str = "_raw";
pub const QUARANTINED_AT: &str = "_quarantined_at";

/// The name of the quarantine table of a data table.
pub fn quarantine_table_name(table: &str) -> String {
    format!("{table}_quarantine")
}

/// The name of the metrics table.
pub const METRICS_TABLE: &str = "dq_metrics";

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Data columns exactly as configured (before transforms), all nullable: a key-only delete
/// image leaves the other columns empty.
pub fn source_fields(table: &TableSpec) -> Vec<Field> {
    table
        .columns
        .iter()
        .map(|c| Field::new(&c.name, c.column_type.arrow_type(), true))
        .collect()
}

/// The position of configured column `column` in the table's source columns; `context` names
/// what refers to it (a rule, a transform, the primary key) for the error when there is none.
pub(crate) fn column_position(
    table: &TableSpec,
    column: &str,
    context: impl FnOnce() -> String,
) -> Result<usize> {
    table
        .column_index(column)
        .ok_or_else(|| PipelineError::UnknownColumn {
            table: table.name.clone(),
            context: context(),
            column: column.to_owned(),
        })
}

/// Decoded events: source columns plus CDC metadata (see `DecodedBatch::rows`).
pub fn decoded_schema(table: &TableSpec) -> SchemaRef {
    let mut fields = source_fields(table);
    fields.push(Field::new(OPERATION, DataType::Utf8, false));
    fields.push(Field::new(SOURCE_TS, timestamp_type(), false));
    fields.push(Field::new(TOPIC, DataType::Utf8, false));
    fields.push(Field::new(PARTITION, DataType::Int32, false));
    fields.push(Field::new(OFFSET, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// Data columns after transforms: `cast` changes a type, `rename` a name, others keep both.
pub fn transformed_fields(table: &TableSpec) -> Vec<Field> {
    table
        .columns
        .iter()
        .map(|c| {
            let mut name = c.name.clone();
            let mut ty: ColumnType = c.column_type;
            for t in table.transforms.iter().filter(|t| t.column == c.name) {
                match &t.kind {
                    TransformKind::Cast { target_type } => ty = *target_type,
                    TransformKind::Rename { new_name } => name = new_name.clone(),
                    _ => {}
                }
            }
            Field::new(name, ty.arrow_type(), true)
        })
        .collect()
}

/// SCD2 changes handed to the sink: transformed data columns, `_operation`, `_effective_from`.
pub fn changes_schema(table: &TableSpec) -> SchemaRef {
    let mut fields = transformed_fields(table);
    fields.push(Field::new(OPERATION, DataType::Utf8, false));
    fields.push(Field::new(EFFECTIVE_FROM, timestamp_type(), false));
    Arc::new(Schema::new(fields))
}

/// SCD2 changes that also say where each came from (`_topic`, `_partition`, `_offset` after
/// `_effective_from`). The sink accepts either form; with positions it drops, row by row, changes
/// it has already committed, so a replay that overlaps the table's watermark is safe.
pub fn positioned_changes_schema(table: &TableSpec) -> SchemaRef {
    let mut fields: Vec<Field> = changes_schema(table)
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(TOPIC, DataType::Utf8, false));
    fields.push(Field::new(PARTITION, DataType::Int32, false));
    fields.push(Field::new(OFFSET, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// The Delta data table: transformed data columns plus the SCD2 columns.
pub fn data_table_schema(table: &TableSpec) -> SchemaRef {
    let mut fields = transformed_fields(table);
    fields.push(Field::new(OPERATION, DataType::Utf8, false));
    fields.push(Field::new(EFFECTIVE_FROM, timestamp_type(), false));
    fields.push(Field::new(EFFECTIVE_TO, timestamp_type(), true));
    fields.push(Field::new(IS_CURRENT, DataType::Boolean, false));
    fields.push(Field::new(INGESTED_AT, timestamp_type(), false));
    Arc::new(Schema::new(fields))
}

/// The quarantine table: source columns (masked where configured), the reasons and provenance.
pub fn quarantine_schema(table: &TableSpec) -> SchemaRef {
    let mut fields = source_fields(table);
    fields.push(Field::new(
        FAILED_RULES,
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        false,
    ));
    fields.push(Field::new(DQ_REASON, DataType::Utf8, false));
    fields.push(Field::new(OPERATION, DataType::Utf8, true));
    fields.push(Field::new(RAW, DataType::Utf8, true));
    fields.push(Field::new(TOPIC, DataType::Utf8, false));
    fields.push(Field::new(PARTITION, DataType::Int32, false));
    fields.push(Field::new(OFFSET, DataType::Int64, false));
    fields.push(Field::new(QUARANTINED_AT, timestamp_type(), false));
    Arc::new(Schema::new(fields))
}

/// `dq_metrics`: the original's columns (`passed` boolean, `batch_id` long) plus `scope`.
pub fn metrics_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("batch_id", DataType::Int64, false),
        Field::new("metric_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, true),
        Field::new("metric_value", DataType::Float64, true),
        Field::new("threshold", DataType::Float64, true),
        Field::new("passed", DataType::Boolean, false),
        Field::new("timestamp", timestamp_type(), false),
        Field::new("scope", DataType::Utf8, false),
    ]))
}
