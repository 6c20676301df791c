//! Errors of the Delta sink. Every variant names the lake table it concerns; row values never
//! appear in a message (keys are reported by their row number in the batch).

use deltalake::DeltaTableError;
use deltalake::arrow::error::ArrowError;
use deltalake::datafusion::error::DataFusionError;
use deltalake::logstore::object_store;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("table `{table}` at {location}: {operation} failed")]
    Delta {
        table: String,
        location: String,
        operation: &'static str,
        #[source]
        source: Box<DeltaTableError>,
    },

    #[error("table `{table}`: query while {operation} failed")]
    Query {
        table: String,
        operation: &'static str,
        #[source]
        source: Box<DataFusionError>,
    },

    #[error("table `{table}`: building the batch for {operation} failed")]
    Arrow {
        table: String,
        operation: &'static str,
        #[source]
        source: ArrowError,
    },

    #[error("table `{table}` at {location} is not a valid lake location")]
    InvalidLocation {
        table: String,
        location: String,
        #[source]
        source: Box<DeltaTableError>,
    },

    #[error(
        "table `{table}` at {location} already exists with a different schema: {detail}; \
         the config describes a different table (move the old table away or restore the config)"
    )]
    SchemaMismatch {
        table: String,
        location: String,
        detail: String,
    },

    #[error("table `{table}`: the {what} batch does not match its schema: {detail}")]
    BatchSchema {
        table: String,
        what: &'static str,
        detail: String,
    },

    #[error("table `{table}` has no primary key, so it cannot be kept as SCD2 history")]
    NoPrimaryKey { table: String },

    #[error(
        "table `{table}`: change rows {first_row} and {second_row} have the same key \
         (one row per key is expected unless scd2.track_intermediate is on)"
    )]
    DuplicateKey {
        table: String,
        first_row: usize,
        second_row: usize,
    },

    #[error("table `{table}`: change row {row} has a NULL primary key `{column}`")]
    NullKey {
        table: String,
        column: String,
        row: usize,
    },

    #[error(
        "table `{table}`: change row {row} has operation {operation:?}, expected INSERT, UPDATE or DELETE"
    )]
    UnknownOperation {
        table: String,
        row: usize,
        operation: String,
    },

    #[error("state `{name}` at {location}: {operation} failed")]
    State {
        name: String,
        location: String,
        operation: &'static str,
        #[source]
        source: Box<object_store::Error>,
    },

    #[error("state name `{name}` is not a plain file name (letters, digits, `-`, `_`, `.`)")]
    StateName { name: String },

    #[error("table `{table}`: reading data file {path} failed: {detail}")]
    DataFile {
        table: String,
        path: String,
        detail: String,
    },

    /// The files of a snapshot do not hold what the state read of the same snapshot found.
    #[error("table `{table}`: the data files disagree with the table's state: {detail}")]
    StateMismatch { table: String, detail: String },
}

impl SinkError {
    pub(crate) fn query(
        table: &str,
        operation: &'static str,
        source: DataFusionError,
    ) -> SinkError {
        SinkError::Query {
            table: table.to_string(),
            operation,
            source: Box::new(source),
        }
    }
}

pub type Result<T, E = SinkError> = std::result::Result<T, E>;
