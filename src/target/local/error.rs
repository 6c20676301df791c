//! Errors of the local stack's lifecycle: deploy, post-deploy, status, catch-up and teardown.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::error::KafkaError;

use super::broker::BrokerError;
use super::owned::ProcessInfo;
use super::postgres::PostgresError;
use super::process::ProcessError;
use super::stack::StackError;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    #[error(transparent)]
    Broker(Box<BrokerError>),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(
        "stack `{stack}` is not deployed here ({state_file} does not exist); run `dqetl deploy` first"
    )]
    NotDeployed { stack: String, state_file: PathBuf },
    #[error(
        "{service} of stack `{stack}` is not running; run `dqetl --stack-name {stack} deploy` to start it"
    )]
    ServiceDown {
        service: &'static str,
        stack: String,
    },
    #[error("cannot connect to PostgreSQL at {url}")]
    Connect {
        url: String,
        #[source]
        source: crate::pg::PgError,
    },
    #[error("PostgreSQL at {url}: {what}")]
    Sql {
        url: String,
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("Kafka at {bootstrap}: {what}")]
    Kafka {
        bootstrap: String,
        what: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("cannot find the running dqetl executable to start `dqetl {command}`")]
    CurrentExe {
        command: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "`dqetl {command}` exited right after starting ({status}); its log {log} ends with:\n{log_tail}"
    )]
    WorkerExited {
        command: &'static str,
        status: String,
        log: PathBuf,
        log_tail: String,
    },
    #[error("`dqetl {command}` failed ({status}); {where_to_look}")]
    ChildFailed {
        command: &'static str,
        status: String,
        where_to_look: String,
    },
    #[error("`dqetl query` failed for `{sql}` ({status}): {stderr}")]
    Query {
        sql: String,
        status: String,
        stderr: String,
    },
    #[error("`dqetl query --json` printed something that is not a JSON array of rows for `{sql}`")]
    QueryOutput {
        sql: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot read the generator's summary {path}")]
    ReadSummary {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the generator's summary {path} is not what dqetl expects")]
    ParseSummary {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} did not happen within {}: {detail}", humantime::format_duration(*waited))]
    Timeout {
        what: String,
        waited: Duration,
        detail: String,
    },
    #[error("{what} stopped while waiting: {detail}")]
    Stalled { what: String, detail: String },
    #[error("interrupted")]
    Interrupted,
    #[error(
        "these processes still point into {dir} after stopping the stack, so it was not removed:\n{}",
        processes.iter().map(|p| format!("  pid {} {}", p.pid, p.command)).collect::<Vec<_>>().join("\n")
    )]
    StillRunning {
        dir: PathBuf,
        processes: Vec<ProcessInfo>,
    },
    #[error("cannot remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl LocalError {
    /// Maps a failed connection to `url` (local URLs hold no password).
    pub(crate) fn connect(url: &str) -> impl FnOnce(crate::pg::PgError) -> LocalError {
        let url = url.to_string();
        move |source| LocalError::Connect { url, source }
    }
}

impl From<BrokerError> for LocalError {
    fn from(error: BrokerError) -> Self {
        LocalError::Broker(Box::new(error))
    }
}
