//! SQL over the local lake with DataFusion: every Delta table that exists is registered under
//! its name (`<table>`, `<table>_quarantine`, `dq_metrics`).

use std::collections::HashMap;

use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::SessionContext;

use crate::config::layout::LakeLayout;
use crate::config::spec::ConfigSpec;
use crate::sink::{LakeTable, SinkError};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Lake(#[from] SinkError),

    #[error(
        "table `{table}` has no data yet: {location} does not exist (the processor creates it on its first batch)"
    )]
    NotCreatedYet { table: String, location: String },

    #[error("the query names a table that is not in the lake; tables: {available}")]
    UnknownTable {
        available: String,
        #[source]
        source: Box<DataFusionError>,
    },

    #[error("the query failed")]
    Sql(#[source] Box<DataFusionError>),
}

impl QueryError {
    fn sql(source: DataFusionError) -> QueryError {
        QueryError::Sql(Box::new(source))
    }
}

/// The lake tables of a config, each with whether it exists yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredTables {
    /// Names registered in the session, in config order (data, quarantine, then `dq_metrics`).
    pub registered: Vec<String>,
    /// Configured tables that do not exist yet, by name, with their location.
    pub missing: Vec<(String, String)>,
}

/// The lake tables a config describes, in config order.
pub fn lake_tables(config: &ConfigSpec) -> Vec<LakeTable> {
    let mut tables = Vec::new();
    for t in config.source_tables() {
        tables.push(LakeTable::Data(t.name.clone()));
        tables.push(LakeTable::Quarantine(t.name.clone()));
    }
    tables.push(LakeTable::Metrics);
    tables
}

/// Registers every existing Delta table of the config's lake in `ctx`.
pub async fn register_lake(
    ctx: &SessionContext,
    layout: &LakeLayout,
    config: &ConfigSpec,
) -> Result<RegisteredTables, QueryError> {
    register_lake_with(ctx, layout, config, &HashMap::new()).await
}

/// As [`register_lake`], with object-store options (for a lake on S3).
pub async fn register_lake_with(
    ctx: &SessionContext,
    layout: &LakeLayout,
    config: &ConfigSpec,
    storage_options: &HashMap<String, String>,
) -> Result<RegisteredTables, QueryError> {
    let mut found = RegisteredTables {
        registered: Vec::new(),
        missing: Vec::new(),
    };
    for lake_table in lake_tables(config) {
        let name = lake_table.name();
        let location = lake_table.location(layout);
        match crate::sink::open_table(&name, &location, storage_options).await? {
            Some(table) => {
                let delta = |source| SinkError::Delta {
                    table: name.clone(),
                    location: location.clone(),
                    operation: "register",
                    source: Box::new(source),
                };
                table
                    .update_datafusion_session(&ctx.state())
                    .map_err(delta)?;
                let provider = table.table_provider().await.map_err(QueryError::sql)?;
                ctx.register_table(name.as_str(), provider)
                    .map_err(QueryError::sql)?;
                found.registered.push(name);
            }
            None => found.missing.push((name, location)),
        }
    }
    Ok(found)
}

/// A DataFusion session over the lake.
pub struct LocalQuery {
    ctx: SessionContext,
    tables: RegisteredTables,
}

impl LocalQuery {
    pub async fn open(layout: &LakeLayout, config: &ConfigSpec) -> Result<LocalQuery, QueryError> {
        let ctx = SessionContext::new();
        let tables = register_lake(&ctx, layout, config).await?;
        Ok(LocalQuery { ctx, tables })
    }

    pub fn tables(&self) -> &RegisteredTables {
        &self.tables
    }

    /// Runs one SQL statement and returns its rows. A query over a configured table that has no
    /// Delta table yet fails naming that table.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        let planned = self.ctx.sql(sql).await;
        let frame = match planned {
            Ok(frame) => frame,
            Err(err) => return Err(self.explain(sql, err)),
        };
        frame.collect().await.map_err(QueryError::sql)
    }

    fn explain(&self, sql: &str, err: DataFusionError) -> QueryError {
        let message = err.to_string();
        if !message.contains("not found") {
            return QueryError::sql(err);
        }
        let words: Vec<String> = sql
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .map(|w| w.to_ascii_lowercase())
            .collect();
        if let Some((table, location)) = self
            .tables
            .missing
            .iter()
            .find(|(name, _)| words.contains(&name.to_ascii_lowercase()))
        {
            return QueryError::NotCreatedYet {
                table: table.clone(),
                location: location.clone(),
            };
        }
        let available = if self.tables.registered.is_empty() {
            "none yet".to_string()
        } else {
            self.tables.registered.join(", ")
        };
        QueryError::UnknownTable {
            available,
            source: Box::new(err),
        }
    }
}
