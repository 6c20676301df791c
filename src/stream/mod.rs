//! The streaming processor: Kafka → micro-batches → pipeline → Delta, exactly once.
//!
//! Guarantee: every Kafka record of a configured topic ends up exactly once in the lake (as a
//! data version, a no-op, or a quarantine row). Each Delta commit records, per (topic, partition),
//! the last offset it covers; records at or below that watermark are never applied again, so a
//! crash at any point neither loses nor duplicates a row. Kafka offset commits are advisory:
//! they only save re-reading.

mod batcher;
mod consumer;
mod options;
mod processor;
mod watermarks;

pub use options::{KafkaConnection, ProcessOptions};
pub use processor::{ProcessSummary, Processor};
