//! What the source database already holds: each table's columns as the catalog describes them,
//! its row count, and the values its unique columns already use.

use std::collections::HashSet;

use tokio_postgres::Client;

use super::error::GenerateError;
use super::shape::{CatalogColumn, TableShape};

/// The columns of `schema.table`; empty when the table does not exist.
pub(crate) async fn columns(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Vec<CatalogColumn>, GenerateError> {
    let rows = client
        .query(
            "SELECT column_name::text, \
                    CASE WHEN data_type IN ('ARRAY', 'USER-DEFINED') THEN udt_name::text ELSE data_type::text END, \
                    is_nullable = 'NO', \
                    character_maximum_length::int4, numeric_precision::int4, numeric_scale::int4, \
                    column_default IS NOT NULL \
             FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 \
             ORDER BY ordinal_position",
            &[&schema, &table],
        )
        .await
        .map_err(|source| GenerateError::Catalog { table: table.to_string(), source })?;
    let unsigned = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok());
    Ok(rows
        .iter()
        .map(|r| CatalogColumn {
            name: r.get(0),
            data_type: r.get(1),
            not_null: r.get(2),
            max_chars: unsigned(r.get(3)),
            numeric_precision: unsigned(r.get(4)),
            numeric_scale: unsigned(r.get(5)),
            has_default: r.get(6),
        })
        .collect())
}

pub(crate) async fn row_count(client: &Client, table: &TableShape) -> Result<u64, GenerateError> {
    let row = client
        .query_one(&format!("SELECT count(*) FROM {}", table.sql_name), &[])
        .await
        .map_err(|source| GenerateError::Catalog {
            table: table.name.clone(),
            source,
        })?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// The values `column` already holds, as text, so that new rows never collide with them.
pub(crate) async fn used_values(
    client: &Client,
    table: &TableShape,
    column: usize,
) -> Result<HashSet<String>, GenerateError> {
    let col = &table.columns[column].sql_name;
    let rows = client
        .query(
            &format!(
                "SELECT {col}::text FROM {} WHERE {col} IS NOT NULL",
                table.sql_name
            ),
            &[],
        )
        .await
        .map_err(|source| GenerateError::Catalog {
            table: table.name.clone(),
            source,
        })?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}
