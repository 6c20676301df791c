//! The streaming processor: Kafka → micro-batches → pipeline → Delta, exactly once.
//!
//! Guarantee: every Kafka record of a configured topic ends up exactly once in the lake (as a
//! data version, a no-op, or a quarantine row). How:
//!
//! - Each table of a batch has three destinations (its data table, its quarantine table and
//!   `dq_metrics`); every Delta commit records, per (topic, partition), the last offset it covers
//!   (transaction actions, app id `<group>:<topic>:<partition>`). A record at or below a
//!   destination's mark is never applied to that destination again.
//! - After the three commits, a progress blob per table and group is saved: the cumulative metric
//!   state and the marks it covers. A destination that had nothing to write makes no commit but
//!   a progress note; should that note be missing (a crash in between), the blob lifts its mark.
//!   So after a crash between two commits of a batch, each destination is re-planned from the
//!   records it lacks, and the metric state from the records the blob lacks.
//! - Partitions are read from those marks, never from Kafka's committed offsets: `--once` and
//!   `--all-partitions` assign them at the marks; a group member re-assigns in the rebalance
//!   callback and re-reads the marks from the lake before applying anything, dropping records of
//!   partitions it lost. Kafka offset commits are advisory: they only save re-reading.
//!
//! Several processors may share a group (one partition is applied by one member at a time: a
//! batch applies between two polls, and a rebalance waits for the poll). Data and quarantine stay
//! exactly-once then; the cumulative metric state is kept per table by whichever member saved it
//! last, so it is only exact with one processor per group.
//!
//! Failures: an unreachable broker is waited for with backoff (librdkafka reconnects on its own
//! while a run is under way); a table whose batch fails is retried with backoff after re-reading
//! its marks, then set aside (its partitions paused, tried again with a growing backoff) while
//! the other tables go on; `--once` exits with the error instead. Nothing is lost either way: a
//! resumed table and a restart both start from the lake's positions. A record the consumer
//! delivers twice within a batch is applied once; offsets it never delivers stop the processor
//! (`kafka.on_data_loss: fail`) or are counted and logged (`warn`: normal for a compacted topic).
//! A stop request (SIGTERM, Ctrl-C) lets the batch in flight finish.
//!
//! `--once` drains each partition to the end the broker reports in its first fetch response,
//! ending a micro-batch as soon as the backlog is read.

mod apply;
mod batcher;
pub mod bench;
mod consumer;
mod data_loss;
mod intake;
mod latency;
mod maintenance;
mod options;
mod processor;
mod progress;
mod topics;
mod watermarks;

pub use consumer::client_config;
pub use data_loss::{DataLoss, Gap};
pub use latency::LatencySummary;
pub use maintenance::MaintenanceTotals;
pub use options::{KafkaConnection, Maintenance, Partitions, ProcessOptions};
pub use processor::{ProcessSummary, Processor, TableTotals};
pub use topics::{TopicOutcome, create_topics};
