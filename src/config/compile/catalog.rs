//! The lake catalog: every Delta table dqetl writes (data, `<table>_quarantine`, `dq_metrics`),
//! where it lives on the target, and its columns with their Arrow, Delta and Athena types.
//!
//! Columns come from `pipeline::schema`, the same functions the sink creates tables with, so the
//! catalog cannot disagree with the data.

use deltalake::arrow::datatypes::{DataType, Schema, TimeUnit};
use serde_json::{Value, json};

use crate::config::layout::LakeLayout;
use crate::config::spec::ConfigSpec;
use crate::pipeline::schema::{
    METRICS_TABLE, data_table_schema, metrics_schema, quarantine_schema, quarantine_table_name,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// A lake column type with no Athena equivalent; never silently turned into STRING.
    #[error("table {table}, column {column}: the lake type {arrow_type} has no Athena type")]
    UnmappedType {
        table: String,
        column: String,
        arrow_type: String,
    },
}

pub fn catalog(spec: &ConfigSpec, layout: &LakeLayout) -> Result<Value, CatalogError> {
    let mut tables = Vec::new();
    for table in spec.source_tables() {
        tables.push(entry(
            &table.name,
            "data",
            layout.data_table(&table.name),
            &data_table_schema(table),
        )?);
        let quarantine = quarantine_table_name(&table.name);
        tables.push(entry(
            &quarantine,
            "quarantine",
            layout.quarantine_table(&table.name),
            &quarantine_schema(table),
        )?);
    }
    tables.push(entry(
        METRICS_TABLE,
        "metrics",
        layout.metrics_table(),
        &metrics_schema(),
    )?);
    Ok(json!({ "tables": tables }))
}

fn entry(name: &str, kind: &str, location: String, schema: &Schema) -> Result<Value, CatalogError> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let (delta_type, athena_type) =
                lake_types(field.data_type()).ok_or_else(|| CatalogError::UnmappedType {
                    table: name.to_string(),
                    column: field.name().clone(),
                    arrow_type: field.data_type().to_string(),
                })?;
            Ok(json!({
                "name": field.name(),
                "arrow_type": field.data_type().to_string(),
                "delta_type": delta_type,
                "athena_type": athena_type,
                "nullable": field.is_nullable(),
            }))
        })
        .collect::<Result<Vec<_>, CatalogError>>()?;
    Ok(json!({ "name": name, "kind": kind, "location": location, "columns": columns }))
}

/// The Delta and Athena spelling of a lake column type; None for types dqetl never writes.
pub fn lake_types(ty: &DataType) -> Option<(String, String)> {
    let pair = |delta: &str, athena: &str| Some((delta.to_string(), athena.to_string()));
    match ty {
        DataType::Utf8 | DataType::LargeUtf8 => pair("string", "STRING"),
        DataType::Int8 => pair("byte", "TINYINT"),
        DataType::Int16 => pair("short", "SMALLINT"),
        DataType::Int32 => pair("integer", "INT"),
        DataType::Int64 => pair("long", "BIGINT"),
        DataType::Float32 => pair("float", "FLOAT"),
        DataType::Float64 => pair("double", "DOUBLE"),
        DataType::Boolean => pair("boolean", "BOOLEAN"),
        DataType::Date32 => pair("date", "DATE"),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => pair("timestamp", "TIMESTAMP"),
        DataType::Timestamp(TimeUnit::Microsecond, None) => pair("timestamp_ntz", "TIMESTAMP"),
        DataType::Decimal128(p, s) => {
            Some((format!("decimal({p},{s})"), format!("DECIMAL({p},{s})")))
        }
        DataType::List(item) | DataType::LargeList(item) => {
            let (delta, athena) = lake_types(item.data_type())?;
            Some((format!("array<{delta}>"), format!("ARRAY<{athena}>")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spec::ColumnType;

    #[test]
    fn every_config_type_has_the_athena_type_the_spec_declares() {
        let all = [
            ColumnType::String,
            ColumnType::Text,
            ColumnType::Int,
            ColumnType::Long,
            ColumnType::Double,
            ColumnType::Real,
            ColumnType::Boolean,
            ColumnType::Timestamp,
            ColumnType::Date,
            ColumnType::Decimal {
                precision: 12,
                scale: 4,
            },
        ];
        for ty in all {
            let (_, athena) = lake_types(&ty.arrow_type()).expect("every config type maps");
            assert_eq!(athena, ty.athena_type(), "{ty}");
        }
    }

    #[test]
    fn lists_of_strings_are_arrays() {
        let list = DataType::List(std::sync::Arc::new(
            deltalake::arrow::datatypes::Field::new("item", DataType::Utf8, true),
        ));
        assert_eq!(
            lake_types(&list),
            Some(("array<string>".into(), "ARRAY<STRING>".into()))
        );
        assert_eq!(lake_types(&DataType::Binary), None);
    }
}
