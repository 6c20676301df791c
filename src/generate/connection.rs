//! The generator's connection to the source database: opening it, telling a lost connection
//! (server restart or crash, network) from the database's answer to a statement, and how long
//! and how often to try again.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::error::DbRejection;

/// How long the generator keeps trying to reach the database after losing it.
pub(crate) const RECONNECT_PATIENCE: Duration = Duration::from_secs(300);
/// Bounds one connection attempt (a server that accepts TCP but never answers).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A client and the task driving its connection; dropping it closes the connection.
pub(crate) struct Connection {
    pub client: Client,
    task: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why an attempt to connect failed.
#[derive(Debug)]
pub(crate) enum ConnectError {
    Refused(crate::pg::PgError),
    TimedOut,
}

impl ConnectError {
    pub(crate) fn rejection(&self) -> Box<DbRejection> {
        match self {
            ConnectError::Refused(e) => match e.postgres_error() {
                Some(error) => DbRejection::from_error(error),
                None => Box::new(DbRejection {
                    code: "-".into(),
                    constraint: None,
                    column: None,
                    message: Some(e.to_string()),
                }),
            },
            ConnectError::TimedOut => Box::new(DbRejection {
                code: "-".into(),
                constraint: None,
                column: None,
                message: Some(format!("no answer within {CONNECT_TIMEOUT:?}")),
            }),
        }
    }
}

pub(crate) async fn connect(source: &crate::pg::PgConfig) -> Result<Connection, ConnectError> {
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, source.connect())
        .await
        .map_err(|_| ConnectError::TimedOut)?
        .map_err(ConnectError::Refused)?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %DbRejection::from_error(&e), "source database connection ended");
        }
    });
    Ok(Connection { client, task })
}

/// True when `error` means the connection is gone rather than that the database refused the
/// statement: the server ended the session (shutdown, crash, `pg_terminate_backend`), the
/// connection failed (SQLSTATE class 08), or the socket did.
pub(crate) fn is_connection_loss(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now.
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    std::error::Error::source(error).is_some_and(|cause| cause.is::<std::io::Error>())
}

/// Waits between reconnection attempts: doubling from a quarter second up to five.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            next: FIRST_BACKOFF,
        }
    }

    /// The wait before the next attempt.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_their_cap() {
        let mut backoff = Backoff::new();
        let waits: Vec<Duration> = (0..7).map(|_| backoff.next_wait()).collect();
        assert_eq!(
            waits,
            [250, 500, 1000, 2000, 4000, 5000, 5000].map(Duration::from_millis)
        );
    }
}
