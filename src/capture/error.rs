//! What can go wrong in capture, and whether waiting and retrying can fix it.

use std::path::PathBuf;

use rdkafka::error::KafkaError;

use crate::pg::PgError;

pub type Result<T, E = CaptureError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("invalid PostgreSQL URL: {reason}")]
    InvalidUrl { reason: String },

    #[error("invalid source database URL or TLS setting")]
    Url(#[source] PgError),

    #[error("invalid {what} name {name:?}: {expected}")]
    InvalidName {
        what: &'static str,
        name: String,
        expected: &'static str,
    },

    #[error("cannot connect to PostgreSQL at {target}")]
    Connect {
        target: String,
        #[source]
        source: PgError,
    },

    #[error("PostgreSQL query failed while {doing}")]
    Query {
        doing: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("replication connection failed while {doing}")]
    Replication {
        doing: &'static str,
        #[source]
        source: pg_walstream::ReplicationError,
    },

    #[error(
        "PostgreSQL wal_level is {found}; logical replication needs wal_level = logical (restart the server after changing it)"
    )]
    WalLevel { found: String },

    #[error("table {schema}.{table} from the config does not exist in the source database")]
    MissingTable { schema: String, table: String },

    #[error(
        "table {schema}.{table}: primary key column {column:?} from the config does not exist in the source table"
    )]
    MissingKeyColumn {
        schema: String,
        table: String,
        column: String,
    },

    #[error("table {table} has no primary_key in the config; capture keys every message by it")]
    NoPrimaryKey { table: String },

    #[error("replication slot {slot} belongs to {found}, not to {expected}; choose another --slot")]
    ForeignSlot {
        slot: String,
        found: String,
        expected: String,
    },

    #[error(
        "replication slot {slot} is in use by another process (pid {pid}); is another capture running?"
    )]
    SlotInUse { slot: String, pid: i32 },

    #[error("replication slot {slot} does not exist")]
    SlotMissing { slot: String },

    #[error("the replication slot {slot} appeared while capture was creating it; retrying")]
    SlotRace { slot: String },

    #[error("unexpected replication message: {what}")]
    Protocol { what: String },

    #[error("cannot create the Kafka producer for {bootstrap}")]
    ProducerConfig {
        bootstrap: String,
        #[source]
        source: KafkaError,
    },

    #[error("Kafka did not accept a message for topic {topic}")]
    Produce {
        topic: String,
        #[source]
        source: KafkaError,
    },

    #[error("Kafka delivery tracking stopped unexpectedly")]
    DeliveryTrackingLost,

    #[error("cannot find out what the topics already hold: {what}")]
    Delivered {
        what: String,
        #[source]
        source: Option<Box<KafkaError>>,
    },

    #[error("capture state file {path}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CaptureError {
    /// Whether the error can go away by itself (a service restarting, a slot still held by a
    /// dying walsender, a broker coming back), so capture should back off and try again rather
    /// than exit.
    pub fn is_retryable(&self) -> bool {
        match self {
            CaptureError::SlotInUse { .. }
            | CaptureError::SlotRace { .. }
            | CaptureError::Produce { .. }
            | CaptureError::DeliveryTrackingLost
            | CaptureError::Delivered { .. } => true,
            CaptureError::Replication { source, .. } => !source.is_permanent(),
            // A server that is down or restarting comes back; a wrong password or a missing
            // database does not.
            CaptureError::Query { source, .. } => !is_permanent_db_error(source),
            // An unverifiable certificate or a wrong TLS setting stays so.
            CaptureError::Connect { source, .. } => match source {
                PgError::Connect { source, .. } => !is_permanent_db_error(source),
                _ => false,
            },
            CaptureError::InvalidUrl { .. }
            | CaptureError::Url(_)
            | CaptureError::InvalidName { .. }
            | CaptureError::WalLevel { .. }
            | CaptureError::MissingTable { .. }
            | CaptureError::MissingKeyColumn { .. }
            | CaptureError::NoPrimaryKey { .. }
            | CaptureError::ForeignSlot { .. }
            | CaptureError::SlotMissing { .. }
            | CaptureError::Protocol { .. }
            | CaptureError::ProducerConfig { .. }
            | CaptureError::State { .. } => false,
        }
    }
}

/// Errors the server reports about the request itself (syntax, missing objects, privileges,
/// configuration such as `wal_level`) will not change on retry; connection losses will.
fn is_permanent_db_error(err: &tokio_postgres::Error) -> bool {
    let Some(code) = err.code() else { return false };
    let class = &code.code()[..2];
    // 42: syntax or access rule violation; 55: object not in prerequisite state (e.g.
    // wal_level below logical) is left retryable because 55006 (object in use) is transient.
    matches!(class, "42" | "28" | "3D" | "3F" | "0A" | "22")
}
