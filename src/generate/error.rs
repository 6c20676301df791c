//! Errors of the data generator. Messages name the table, the operation and the database's
//! reason, never a row value: PostgreSQL's DETAIL lines and data-exception messages quote values
//! (possibly PII), so database errors are reduced to their SQLSTATE, constraint, column and,
//! where it holds no value, their message.

use std::fmt;
use std::time::Duration;

use super::shape::{Refusal, ShapeError};

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("invalid option: {0}")]
    Option(String),
    #[error("cannot connect to the source database")]
    Connect(#[source] crate::pg::PgError),
    #[error("cannot connect to the source database: {0}")]
    ConnectTimeout(Box<DbRejection>),
    #[error("cannot read the catalog of table '{table}'")]
    Catalog {
        table: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "table '{table}' does not exist in schema '{schema}' of the source database; create the source tables first \
         (`dqetl post-deploy`, or the DDL from `dqetl compile`)"
    )]
    TableMissing { schema: String, table: String },
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("--mode vehicle does not fit this config: {reason}")]
    ModeMismatch { reason: String },
    #[error("the database rejected {operation} on table '{table}': {rejection}")]
    Rejected {
        table: String,
        operation: &'static str,
        rejection: Box<DbRejection>,
    },
    #[error("{operation} on table '{table}' affected {affected} rows instead of 1")]
    RowCount {
        table: String,
        operation: &'static str,
        affected: u64,
    },
    #[error("the database rejected {statement} of a transaction: {rejection}")]
    Transaction {
        statement: &'static str,
        rejection: Box<DbRejection>,
    },
    #[error("cannot make a value for column '{column}' of table '{table}': {reason}")]
    NoValue {
        table: String,
        column: String,
        reason: String,
    },
    #[error(
        "column '{column}' of table '{table}' cannot take the value the traffic chose: {refusal}"
    )]
    Refused {
        table: String,
        column: String,
        refusal: Refusal,
    },
    #[error("the traffic cannot make progress: {0}")]
    Stuck(String),
    #[error(
        "lost the connection to the source database and could not reconnect within {waited:?}: {rejection}"
    )]
    ConnectionLost {
        waited: Duration,
        rejection: Box<DbRejection>,
    },
    #[error(
        "lost the connection to the source database while committing {writes} writes and could not find out \
         whether they committed ({reason}); the summary leaves them out"
    )]
    CommitUnknown { writes: usize, reason: String },
    #[error(
        "after reconnecting, {operation} on table '{table}' of the interrupted transaction could not be written again: {reason}"
    )]
    Replay {
        table: String,
        operation: &'static str,
        reason: String,
    },
}

/// A database error reduced to what is safe to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbRejection {
    /// SQLSTATE, e.g. `23505`.
    pub code: String,
    pub constraint: Option<String>,
    pub column: Option<String>,
    /// The primary message, unless it may quote a value (data exceptions, class 22).
    pub message: Option<String>,
}

impl DbRejection {
    pub(crate) fn from_error(error: &tokio_postgres::Error) -> Box<DbRejection> {
        Box::new(Self::reduce(error))
    }

    fn reduce(error: &tokio_postgres::Error) -> DbRejection {
        match error.as_db_error() {
            Some(db) => {
                let code = db.code().code().to_string();
                let quotes_values = code.starts_with("22");
                DbRejection {
                    message: (!quotes_values).then(|| db.message().to_string()),
                    constraint: db.constraint().map(str::to_string),
                    column: db.column().map(str::to_string),
                    code,
                }
            }
            // Not from the server (connection closed, I/O): these messages hold no row values.
            None => DbRejection {
                code: "-".into(),
                constraint: None,
                column: None,
                message: Some(error.to_string()),
            },
        }
    }
}

impl fmt::Display for DbRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(m) => f.write_str(m)?,
            None => f.write_str("invalid value")?,
        }
        write!(f, " (SQLSTATE {}", self.code)?;
        if let Some(c) = &self.constraint {
            write!(f, ", constraint {c}")?;
        }
        if let Some(c) = &self.column {
            write!(f, ", column {c}")?;
        }
        f.write_str(")")
    }
}
