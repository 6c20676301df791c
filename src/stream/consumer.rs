//! The Kafka consumer: one group, the configured topics, offsets stored by us.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};

use super::options::{KafkaConnection, ProcessOptions};

pub(super) type Consumer = StreamConsumer<ProcessorContext>;

/// Forwards librdkafka's logs to tracing and notes partition assignments, so the loop can
/// re-read watermarks from Delta and seek before applying anything from a new partition.
#[derive(Default)]
pub(super) struct ProcessorContext {
    assigned: Arc<AtomicBool>,
}

impl ProcessorContext {
    pub(super) fn take_assignment_change(&self) -> bool {
        self.assigned.swap(false, Ordering::AcqRel)
    }
}

impl ClientContext for ProcessorContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(facility = fac, "kafka: {log_message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "kafka: {log_message}"),
            _ => tracing::debug!(facility = fac, "kafka: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Broker down or restarting: librdkafka keeps retrying on its own; say so clearly.
        tracing::warn!(%error, "kafka client error, retrying: {reason}");
    }
}

impl ConsumerContext for ProcessorContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned");
                self.assigned.store(true, Ordering::Release);
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// librdkafka settings shared by every dqetl client (processor, capture, topic admin).
pub fn client_config(kafka: &KafkaConnection) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &kafka.bootstrap_servers);
    if let Some(p) = &kafka.security_protocol {
        cfg.set("security.protocol", p);
    }
    if let Some(m) = &kafka.sasl_mechanism {
        cfg.set("sasl.mechanism", m);
    }
    if let Some(u) = &kafka.sasl_username {
        cfg.set("sasl.username", u);
    }
    if let Ok(password) = std::env::var("DQETL_KAFKA_PASSWORD") {
        cfg.set("sasl.password", password);
    }
    cfg
}

pub(super) fn create(opts: &ProcessOptions) -> KafkaResult<Consumer> {
    let mut cfg = client_config(&opts.kafka);
    cfg.set("group.id", &opts.group)
        // Offsets are committed by the loop after the Delta commits, never automatically.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "30000")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760");
    cfg.create_with_context(ProcessorContext::default())
}
