//! Local CDC, dqetl's stand-in for AWS DMS: PostgreSQL logical replication (pgoutput) → Kafka,
//! one DMS JSON message per row change (`load` for the initial snapshot, then
//! `insert`/`update`/`delete`), keyed by the primary key's text, on each table's topic.
//!
//! Guarantees:
//! - **No gap, no double between snapshot and stream.** The slot is created with an exported
//!   snapshot; the tables are read in that snapshot and the stream starts at the slot's
//!   consistent point. The snapshot is taken only when the slot is created; a marker file in
//!   `state_dir` records that it was delivered, and a slot without that marker (a crash
//!   mid-snapshot) is dropped and recreated with a fresh snapshot.
//! - **Exactly once into Kafka.** PostgreSQL is told a transaction is done (standby status
//!   update) only after the broker acknowledged every message up to its commit; a restart
//!   resumes from there, so nothing is lost. What PostgreSQL then resends and the topics
//!   already hold is recognised by the position every message carries and not sent again
//!   (`delivered`), so a crash, a broker restart or a database restart doubles nothing.
//! - **Keeps going.** An unreachable database or broker is retried with backoff, and logged.
//!   Logs never contain row values.

mod delivered;
mod emit;
pub mod error;
mod producer;
mod slot;
mod snapshot;
mod source;
mod state;
mod stream;
mod values;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pg_walstream::{
    LogicalReplicationStream, ReplicationSlotOptions, ReplicationStreamConfig, RetryConfig,
};

pub use delivered::{POSITION_HEADER, partition_for};
pub use error::CaptureError;
use error::Result;
pub use pg_walstream::CancellationToken;
pub use slot::{SlotLag, slot_lag};

use crate::config::spec::ConfigSpec;
use crate::error_chain::error_chain;
use crate::pg::TlsSettings;
use delivered::Delivered;
use emit::Emitter;
use producer::{DeliveryTracker, Producer};
use slot::SlotPlan;
use snapshot::CopyOutcome;
use source::PgTarget;
use state::SnapshotMarker;
use stream::ChangeStream;

/// Messages in flight (sent, not yet acknowledged) before capture waits for the broker.
const MAX_IN_FLIGHT: usize = 20_000;
/// How long a session's messages still in flight get to be acknowledged when it ends.
const SESSION_FLUSH: Duration = Duration::from_secs(10);

/// Everything `run` needs besides the config.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// The source database, without a password (taken from `PGPASSWORD` when needed).
    pub pg_url: String,
    /// TLS settings for when the URL has none (`DQETL_PG_SSLMODE`, `DQETL_PG_SSLROOTCERT`).
    pub tls: TlsSettings,
    pub slot: String,
    pub publication: String,
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    pub bootstrap: String,
    /// Where the snapshot marker lives (`<state_dir>/<slot>.json`).
    pub state_dir: PathBuf,
    /// How often a standby status update is sent, idle or not.
    pub status_interval: Duration,
    /// How long librdkafka retries one message before capture starts over from the last
    /// confirmed position.
    pub message_timeout: Duration,
    /// Waits between attempts after a failure grow from 1 s up to this.
    pub max_backoff: Duration,
    /// On shutdown, how long to wait for the broker to acknowledge what was sent.
    pub shutdown_drain: Duration,
}

impl CaptureOptions {
    /// Defaults for everything but the endpoints and names.
    pub fn new(
        pg_url: String,
        slot: String,
        publication: String,
        bootstrap: String,
        state_dir: PathBuf,
    ) -> Self {
        CaptureOptions {
            pg_url,
            tls: TlsSettings::default(),
            slot,
            publication,
            bootstrap,
            state_dir,
            status_interval: Duration::from_secs(10),
            message_timeout: producer::MESSAGE_TIMEOUT,
            max_backoff: Duration::from_secs(30),
            shutdown_drain: Duration::from_secs(30),
        }
    }
}

/// What a capture run did, reported when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureReport {
    /// `load` records sent by snapshots (more than one snapshot if one was interrupted).
    pub snapshot_rows: u64,
    /// `insert`/`update`/`delete` records sent by the session that ended with the shutdown
    /// (a session cut short by an error is replayed by the next one, so it is not counted).
    pub changes: u64,
    /// Changes of published tables outside the config, not sent.
    pub skipped: u64,
    /// Changes PostgreSQL resent that the topics already held, not sent again.
    pub already_delivered: u64,
    /// Sessions that ended in an error and were retried.
    pub restarts: u64,
}

/// Runs capture until `shutdown` is cancelled (then flushes, confirms what the broker
/// acknowledged and returns) or until an error that retrying cannot fix.
pub async fn run(
    config: &ConfigSpec,
    options: &CaptureOptions,
    shutdown: CancellationToken,
) -> Result<CaptureReport> {
    slot::validate_slot_name(&options.slot)?;
    if options.publication.is_empty() {
        return Err(CaptureError::InvalidName {
            what: "publication",
            name: String::new(),
            expected: "a non-empty name",
        });
    }
    let target = PgTarget::parse(&options.pg_url, &options.tls)?;
    let mut report = CaptureReport::default();
    let min_backoff = Duration::from_secs(1);
    let mut backoff = min_backoff;
    tracing::info!(
        source = %target.describe(), slot = %options.slot, publication = %options.publication,
        broker = %options.bootstrap, "capture starting"
    );
    loop {
        let started = Instant::now();
        // A producer per session: an idempotent producer that hit a fatal error (e.g. a broker
        // that lost its state) stays unusable, so starting over must start with a fresh one.
        let producer = Producer::new(&options.bootstrap, options.message_timeout)?;
        let outcome = session(config, options, &target, &producer, &shutdown, &mut report).await;
        // What this session sent must have landed (or failed) before the next one reads what
        // the topics hold.
        producer.flush(SESSION_FLUSH);
        drop(producer);
        match outcome {
            Ok(()) => break,
            Err(err) if !err.is_retryable() => {
                tracing::error!(error = %error_chain(&err), "capture stopped");
                return Err(err);
            }
            Err(err) => {
                if shutdown.is_cancelled() {
                    break;
                }
                report.restarts += 1;
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = min_backoff;
                }
                tracing::warn!(
                    error = %error_chain(&err), retry_in = ?backoff,
                    "capture interrupted; starting over from the last confirmed position"
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(options.max_backoff.max(min_backoff));
            }
        }
    }
    tracing::info!(
        snapshot_rows = report.snapshot_rows,
        changes = report.changes,
        already_delivered = report.already_delivered,
        restarts = report.restarts,
        "capture stopped"
    );
    Ok(report)
}

/// One connection's worth of work: setup, snapshot if the slot is new, then streaming.
async fn session(
    config: &ConfigSpec,
    options: &CaptureOptions,
    target: &PgTarget,
    producer: &Producer,
    shutdown: &CancellationToken,
    report: &mut CaptureReport,
) -> Result<()> {
    let mut client = target.connect().await?;
    source::check_wal_level(&client).await?;
    let mut tables = source::describe_tables(&client, config).await?;
    source::ensure_replica_identity(&client, &mut tables).await?;
    source::ensure_publication(&client, &options.publication, &tables).await?;

    let marker_path = state::marker_path(&options.state_dir, &options.slot);
    let existing = slot::inspect(&client, &options.slot).await?;
    let marker = state::read_marker(&marker_path);
    let plan = slot::plan(
        &options.slot,
        target.database(),
        existing.as_ref(),
        marker.as_ref(),
    )?;

    let topics: Vec<String> = tables.iter().map(|t| t.spec.topic.clone()).collect();
    let system_id = source::system_identifier(&client).await?;
    let delivered = Delivered::read(
        &options.bootstrap,
        &topics,
        format!("{system_id}:{}", options.slot),
    )
    .await?;
    tracing::info!(
        partitions = delivered.known_partitions(),
        "read the last position delivered to each partition"
    );
    let mut tracker = DeliveryTracker::start(MAX_IN_FLIGHT, producer.bootstrap());
    let stream_config =
        ReplicationStreamConfig::builder(options.slot.clone(), options.publication.clone())
            .with_feedback_interval(options.status_interval)
            // Retrying is capture's job (it starts the whole session over).
            .with_retry_config(RetryConfig {
                max_attempts: 1,
                ..RetryConfig::default()
            });
    let replication_url = target.replication_url();

    let mut stream = match plan {
        SlotPlan::Resume => {
            tracing::info!(slot = %options.slot, "resuming from the slot's confirmed position (snapshot already delivered)");
            let mut stream = LogicalReplicationStream::new(&replication_url, stream_config)
                .await
                .map_err(|source| CaptureError::Replication {
                    doing: "connecting for replication",
                    source,
                })?;
            stream
                .start(None)
                .await
                .map_err(|source| CaptureError::Replication {
                    doing: "starting replication",
                    source,
                })?;
            stream
        }
        SlotPlan::Snapshot { drop_existing } => {
            if drop_existing {
                tracing::warn!(slot = %options.slot, "the slot's snapshot was never completed; recreating the slot and taking a new snapshot");
                slot::drop_slot(&client, &options.slot).await?;
            }
            state::remove_marker(&marker_path)?;
            let load_ts = server_time(&client).await?;
            let mut stream =
                create_slot_with_snapshot(&replication_url, stream_config, &options.slot).await?;
            let snapshot_name = stream
                .exported_snapshot_name()
                .ok_or_else(|| CaptureError::SlotRace {
                    slot: options.slot.clone(),
                })?
                .to_string();
            let consistent_point = slot::inspect(&client, &options.slot)
                .await?
                .and_then(|s| s.confirmed_flush_lsn)
                .unwrap_or_default();
            let mut marker = SnapshotMarker {
                slot: options.slot.clone(),
                database: target.database().to_string(),
                consistent_point,
                complete: false,
            };
            state::write_marker(&marker_path, &marker)?;
            tracing::info!(slot = %options.slot, consistent_point = %marker.consistent_point, "slot created; taking the initial snapshot");

            let mut emitter = Emitter::new(producer, &mut tracker, &delivered);
            let outcome = snapshot::copy_tables(
                &mut client,
                &snapshot_name,
                &tables,
                load_ts,
                &mut emitter,
                shutdown,
            )
            .await?;
            let rows = match outcome {
                CopyOutcome::Interrupted => return Ok(()),
                CopyOutcome::Copied { rows } => rows,
            };
            report.snapshot_rows += rows;
            tokio::select! {
                done = tracker.barrier() => done?,
                _ = shutdown.cancelled() => return Ok(()),
            }
            marker.complete = true;
            state::write_marker(&marker_path, &marker)?;
            tracing::info!(rows, "snapshot delivered; streaming changes");
            stream
                .start(None)
                .await
                .map_err(|source| CaptureError::Replication {
                    doing: "starting replication",
                    source,
                })?;
            stream
        }
    };

    let emitter = Emitter::new(producer, &mut tracker, &delivered);
    let stats = ChangeStream::new(&tables, &client, emitter)
        .run(
            &mut stream,
            options.status_interval,
            options.shutdown_drain,
            shutdown,
        )
        .await;
    let _ = stream.stop().await;
    let stats = stats?;
    report.changes += stats.changes;
    report.skipped += stats.skipped;
    report.already_delivered += stats.already_delivered;
    Ok(())
}

/// Creates the slot with `EXPORT_SNAPSHOT` on a replication connection, which must stay open
/// (and idle) while the snapshot is read.
async fn create_slot_with_snapshot(
    replication_url: &str,
    config: ReplicationStreamConfig,
    slot: &str,
) -> Result<LogicalReplicationStream> {
    let config = config.with_slot_options(ReplicationSlotOptions {
        snapshot: Some("export".to_string()),
        ..ReplicationSlotOptions::default()
    });
    let mut stream = LogicalReplicationStream::new(replication_url, config)
        .await
        .map_err(|source| CaptureError::Replication {
            doing: "connecting for replication",
            source,
        })?;
    stream
        .ensure_replication_slot()
        .await
        .map_err(|source| CaptureError::Replication {
            doing: "creating the replication slot",
            source,
        })?;
    if stream.exported_snapshot_name().is_none() {
        // Someone created the slot between our check and our create: start over.
        return Err(CaptureError::SlotRace {
            slot: slot.to_string(),
        });
    }
    Ok(stream)
}

/// The server's clock, to stamp `load` records. Taken just before the slot is created, so it
/// is earlier than the commit time of every change the slot streams afterwards: per key, a
/// load never looks newer than the changes that follow it.
async fn server_time(client: &tokio_postgres::Client) -> Result<DateTime<Utc>> {
    let row = client
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .map_err(source::query_err("reading the server clock"))?;
    Ok(row.get(0))
}
