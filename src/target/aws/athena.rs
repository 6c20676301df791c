//! Athena: run a query in the stack's workgroup and read all its result pages, and register the
//! lake's Delta tables as native Delta tables (Athena engine 3 reads the schema from the Delta log).

use std::time::{Duration, Instant};

use std::sync::Arc;

use aws_sdk_athena::types::{QueryExecutionContext, QueryExecutionState};
use deltalake::arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use deltalake::arrow::datatypes::{Field, Schema};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;
use serde::Serialize;

use crate::target::aws::clients::AwsClients;
use crate::target::aws::error::{ApiResultExt, AwsError};

/// A query's result: column names and rows of (nullable) text values, as Athena returns them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueryResult {
    pub query_id: String,
    pub columns: Vec<String>,
    /// Athena's type of each column (`integer`, `varchar`, `timestamp`, ...).
    pub types: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
    pub bytes_scanned: Option<i64>,
}

impl QueryResult {
    /// The rows as one Arrow batch, so they render exactly like a local query. Integer, floating
    /// point and boolean columns become typed; a column whose values do not parse as its type
    /// (and every other type) stays text.
    pub fn to_record_batch(&self) -> Result<RecordBatch, ArrowError> {
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (i, name) in self.columns.iter().enumerate() {
            let values: Vec<Option<&str>> = self
                .rows
                .iter()
                .map(|r| r.get(i).and_then(|v| v.as_deref()))
                .collect();
            let athena_type = self
                .types
                .get(i)
                .map(|t| t.to_ascii_lowercase())
                .unwrap_or_default();
            let array = typed_column(&athena_type, &values);
            fields.push(Field::new(name, array.data_type().clone(), true));
            arrays.push(array);
        }
        if fields.is_empty() {
            return Ok(RecordBatch::new_empty(Arc::new(Schema::empty())));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
    }
}

fn typed_column(athena_type: &str, values: &[Option<&str>]) -> ArrayRef {
    fn parse_all<T: std::str::FromStr>(values: &[Option<&str>]) -> Option<Vec<Option<T>>> {
        values
            .iter()
            .map(|v| match v {
                None => Some(None),
                Some(s) => s.parse().ok().map(Some),
            })
            .collect()
    }
    match athena_type {
        "tinyint" | "smallint" | "integer" | "int" | "bigint" => {
            if let Some(v) = parse_all::<i64>(values) {
                return Arc::new(Int64Array::from(v));
            }
        }
        "double" | "float" | "real" => {
            if let Some(v) = parse_all::<f64>(values) {
                return Arc::new(Float64Array::from(v));
            }
        }
        "boolean" => {
            if let Some(v) = parse_all::<bool>(values) {
                return Arc::new(BooleanArray::from(v));
            }
        }
        _ => {}
    }
    Arc::new(StringArray::from(values.to_vec()))
}

/// Where queries run.
pub struct Athena<'a> {
    pub clients: &'a AwsClients,
    pub workgroup: &'a str,
    pub database: &'a str,
    pub poll: Duration,
    pub timeout: Duration,
}

impl Athena<'_> {
    /// Runs one statement, waits for it (calling `on_wait` with the state between polls) and
    /// returns every result row.
    pub async fn run(
        &self,
        sql: &str,
        mut on_wait: impl FnMut(&str),
    ) -> Result<QueryResult, AwsError> {
        let started = self
            .clients
            .athena
            .start_query_execution()
            .query_string(sql)
            .work_group(self.workgroup)
            .query_execution_context(
                QueryExecutionContext::builder()
                    .database(self.database)
                    .build(),
            )
            .send()
            .await
            .api("athena", "StartQueryExecution")?;
        let id = started.query_execution_id().unwrap_or_default().to_string();
        let begun = Instant::now();
        let bytes_scanned = loop {
            let out = self
                .clients
                .athena
                .get_query_execution()
                .query_execution_id(&id)
                .send()
                .await
                .api("athena", "GetQueryExecution")?;
            let exec = out.query_execution();
            let status = exec.and_then(|e| e.status());
            let state = status
                .and_then(|s| s.state())
                .cloned()
                .unwrap_or(QueryExecutionState::Queued);
            match state {
                QueryExecutionState::Succeeded => {
                    break exec
                        .and_then(|e| e.statistics())
                        .and_then(|s| s.data_scanned_in_bytes());
                }
                QueryExecutionState::Failed | QueryExecutionState::Cancelled => {
                    return Err(AwsError::Unexpected {
                        what: format!("athena query {id}"),
                        detail: format!(
                            "{}: {}",
                            state.as_str(),
                            status
                                .and_then(|s| s.state_change_reason())
                                .unwrap_or("no reason given")
                        ),
                    });
                }
                other => on_wait(other.as_str()),
            }
            if begun.elapsed() >= self.timeout {
                return Err(AwsError::Timeout {
                    what: format!("athena query {id}"),
                    waited: self.timeout,
                });
            }
            tokio::time::sleep(self.poll).await;
        };
        let mut result = self.results(&id).await?;
        result.bytes_scanned = bytes_scanned;
        Ok(result)
    }

    /// Every page of a finished query's results.
    async fn results(&self, id: &str) -> Result<QueryResult, AwsError> {
        let mut result = QueryResult {
            query_id: id.to_string(),
            ..Default::default()
        };
        let mut token = None;
        let mut first_page = true;
        loop {
            let out = self
                .clients
                .athena
                .get_query_results()
                .query_execution_id(id)
                .set_next_token(token)
                .send()
                .await
                .api("athena", "GetQueryResults")?;
            let Some(set) = out.result_set() else { break };
            if first_page && let Some(meta) = set.result_set_metadata() {
                let info = meta.column_info();
                result.columns = info
                    .iter()
                    .map(|c| c.label().unwrap_or(c.name()).to_string())
                    .collect();
                result.types = info.iter().map(|c| c.r#type().to_string()).collect();
            }
            let mut rows: Vec<Vec<Option<String>>> = set
                .rows()
                .iter()
                .map(|r| {
                    r.data()
                        .iter()
                        .map(|d| d.var_char_value().map(str::to_string))
                        .collect()
                })
                .collect();
            // A SELECT's first row repeats the column labels.
            if first_page && !rows.is_empty() && is_header_row(&rows[0], &result.columns) {
                rows.remove(0);
            }
            result.rows.extend(rows);
            first_page = false;
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(result)
    }
}

fn is_header_row(row: &[Option<String>], columns: &[String]) -> bool {
    !columns.is_empty()
        && row.len() == columns.len()
        && row
            .iter()
            .zip(columns)
            .all(|(v, c)| v.as_deref() == Some(c.as_str()))
}

/// The DDL that registers a Delta table for Athena (idempotent).
pub fn register_delta_table_sql(database: &str, table: &str, location: &str) -> String {
    let location = if location.ends_with('/') {
        location.to_string()
    } else {
        format!("{location}/")
    };
    format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS {}.{} LOCATION '{}' TBLPROPERTIES ('table_type'='DELTA')",
        quote_ident(database),
        quote_ident(table),
        location.replace('\'', "''")
    )
}

/// Backtick-quotes an identifier for Athena DDL (database names may hold hyphens).
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_become_typed_arrow_columns_where_the_values_allow() {
        let result = QueryResult {
            query_id: "q".into(),
            columns: vec![
                "id".into(),
                "score".into(),
                "ok".into(),
                "at".into(),
                "odd".into(),
            ],
            types: vec![
                "integer".into(),
                "double".into(),
                "boolean".into(),
                "timestamp".into(),
                "bigint".into(),
            ],
            rows: vec![
                vec![
                    Some("1".into()),
                    Some("0.5".into()),
                    Some("true".into()),
                    Some("2024-01-01 00:00:00.000".into()),
                    Some("7".into()),
                ],
                vec![
                    Some("2".into()),
                    None,
                    Some("false".into()),
                    None,
                    Some("not a number".into()),
                ],
            ],
            bytes_scanned: None,
        };
        let batch = result.to_record_batch().unwrap();
        let types: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect();
        assert_eq!(types, ["Int64", "Float64", "Boolean", "Utf8", "Utf8"]);
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(1).null_count(), 1);
    }

    #[test]
    fn registers_native_delta_tables_with_quoted_names() {
        assert_eq!(
            register_delta_table_sql("fleet_db", "vehicles", "s3://fleet-delta-1/vehicles"),
            "CREATE EXTERNAL TABLE IF NOT EXISTS `fleet_db`.`vehicles` LOCATION 's3://fleet-delta-1/vehicles/' \
             TBLPROPERTIES ('table_type'='DELTA')"
        );
        assert!(register_delta_table_sql("d", "t", "s3://b/o'k/").contains("'s3://b/o''k/'"));
    }

    #[test]
    fn the_header_row_is_recognised_only_when_it_repeats_the_labels() {
        let cols = vec!["a".to_string(), "b".to_string()];
        assert!(is_header_row(&[Some("a".into()), Some("b".into())], &cols));
        assert!(!is_header_row(&[Some("1".into()), Some("b".into())], &cols));
        assert!(!is_header_row(&[Some("a".into())], &cols));
    }
}
