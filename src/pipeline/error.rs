//! Why a micro-batch could not be planned. Bad *data* never ends up here (it goes to quarantine);
//! these are config/plan mismatches that validation should have refused, reported with the table,
//! the rule/transform/check and the column, instead of panicking or silently skipping.

use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::error::ArrowError;
use deltalake::datafusion::error::DataFusionError;

use crate::config::spec::ColumnType;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("table '{table}': the decoded batch does not match the configured schema: {detail}")]
    SchemaMismatch { table: String, detail: String },

    #[error(
        "table '{table}': {context} refers to column '{column}', which the table does not have"
    )]
    UnknownColumn {
        table: String,
        context: String,
        column: String,
    },

    #[error("table '{table}' has no primary key, so its changes cannot be planned")]
    NoPrimaryKey { table: String },

    #[error(
        "table '{table}': rule '{rule}' ({kind}) cannot run on column '{column}' of type {column_type}"
    )]
    UnsupportedRule {
        table: String,
        rule: String,
        kind: &'static str,
        column: String,
        column_type: ColumnType,
    },

    #[error(
        "table '{table}': transform '{transform}' ({kind}) cannot run on column '{column}' of type {data_type}"
    )]
    UnsupportedTransform {
        table: String,
        transform: String,
        kind: &'static str,
        column: String,
        data_type: DataType,
    },

    #[error(
        "table '{table}': transform '{transform}': default value {value} does not fit column '{column}': {reason}"
    )]
    InvalidDefault {
        table: String,
        transform: String,
        column: String,
        value: String,
        reason: String,
    },

    #[error("table '{table}': compliance check '{name}': expression {expression:?} is invalid")]
    ComplianceExpression {
        table: String,
        name: String,
        expression: String,
        #[source]
        source: Box<DataFusionError>,
    },

    #[error(
        "table '{table}': compliance check '{name}': expression {expression:?} is {data_type}, expected boolean"
    )]
    ComplianceNotBoolean {
        table: String,
        name: String,
        expression: String,
        data_type: DataType,
    },

    #[error("table '{table}': {context}")]
    Arrow {
        table: String,
        context: String,
        #[source]
        source: ArrowError,
    },
}

/// `Result` of the pipeline.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Adds the table and what was being done to an Arrow error.
pub(crate) fn arrow_context(
    table: &str,
    context: &str,
) -> impl FnOnce(ArrowError) -> PipelineError + use<> {
    let table = table.to_owned();
    let context = context.to_owned();
    move |source| PipelineError::Arrow {
        table,
        context,
        source,
    }
}
