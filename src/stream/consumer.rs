//! The Kafka consumer: one group, the configured topics, positions taken from the lake.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::options::{KafkaConnection, ProcessOptions};

pub(super) type Consumer = StreamConsumer<ProcessorContext>;

/// Where to read each partition from: the offset after the last one every destination of its
/// table has applied, as far as the processor knows. Partitions not listed start at the beginning.
pub(super) type Starts = HashMap<(String, i32), i64>;

/// Forwards librdkafka's logs to tracing and positions every assigned partition at the lake's
/// offsets, never at Kafka's committed ones (those are advisory and may lag or be gone).
///
/// The starts it assigns with may be stale (another processor of the group may have moved a
/// partition on since); stale starts are never ahead of the truth, because marks only grow. So
/// the loop, told of the change, reloads the marks from the lake before applying anything, and
/// records at or below them are filtered out.
#[derive(Default)]
pub(super) struct ProcessorContext {
    changed: AtomicBool,
    starts: Mutex<Starts>,
    /// When a client error was last logged and how many were not since: an outage logs a line
    /// every 10 s, not one per poll.
    last_error: Mutex<(Option<Instant>, u64)>,
}

impl ProcessorContext {
    /// Whether partitions were assigned or revoked since the last call.
    pub(super) fn take_assignment_change(&self) -> bool {
        self.changed.swap(false, Ordering::AcqRel)
    }

    pub(super) fn set_starts(&self, starts: Starts) {
        *self.starts.lock().unwrap_or_else(|p| p.into_inner()) = starts;
    }

    pub(super) fn positioned(
        &self,
        assigned: &TopicPartitionList,
    ) -> KafkaResult<TopicPartitionList> {
        let starts = self.starts.lock().unwrap_or_else(|p| p.into_inner());
        let mut tpl = TopicPartitionList::new();
        for e in assigned.elements() {
            let start = starts
                .get(&(e.topic().to_string(), e.partition()))
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            tpl.add_partition_offset(e.topic(), e.partition(), start)?;
        }
        Ok(tpl)
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
        // Broker down or restarting: librdkafka keeps reconnecting on its own; say so clearly.
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        let (logged_at, suppressed) = &mut *last;
        if logged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(%error, suppressed = *suppressed, "kafka client error (the client keeps retrying): {reason}");
            *logged_at = Some(Instant::now());
            *suppressed = 0;
        } else {
            *suppressed += 1;
        }
    }
}

impl ConsumerContext for ProcessorContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // Re-assigning inside the callback replaces the assignment librdkafka just made
                // (at the committed offsets) with one at the lake's positions.
                match self.positioned(tpl).and_then(|p| consumer.assign(&p)) {
                    Ok(()) => tracing::info!(partitions = tpl.count(), "partitions assigned"),
                    Err(error) => tracing::warn!(
                        %error,
                        "partitions assigned, but positioning them failed; records already in the \
                         lake are read again and skipped"
                    ),
                }
                self.changed.store(true, Ordering::Release);
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                self.changed.store(true, Ordering::Release);
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
    consumer_config(opts).create_with_context(ProcessorContext::default())
}

/// The processor's consumer settings: dqetl's, then the config's `consumer_options` over them.
fn consumer_config(opts: &ProcessOptions) -> ClientConfig {
    let mut cfg = client_config(&opts.kafka);
    cfg.set("group.id", &opts.group)
        // Offsets are committed by the loop after the Delta commits, never automatically.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "30000")
        // A batch applies between two polls; a slow lake must not cost the assignment.
        .set("max.poll.interval.ms", "600000")
        .set("reconnect.backoff.ms", "200")
        .set("reconnect.backoff.max.ms", "10000");
    fetch_settings(&mut cfg, &opts.consumer_options);
    cfg
}

/// How the processor fetches, then `overrides` (the config's `consumer_options`) over everything
/// set so far. The benchmark's bare consumer uses the same.
pub(crate) fn fetch_settings(cfg: &mut ClientConfig, overrides: &[(String, String)]) {
    cfg.set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        // librdkafka prefetches up to 64 MiB per partition by default, which alone would exceed
        // the processor's memory budget with a few partitions; 16 MiB keeps fetches flowing.
        .set("queued.max.messages.kbytes", "16384")
        // A partition's next fetch is postponed while that queue is over its bound (a batch is
        // being applied): by 10 ms instead of librdkafka's 1 s, which idled fetching for a
        // second whenever the broker was faster than the processor.
        .set("fetch.queue.backoff.ms", "10")
        // A fetch with nothing new returns after 100 ms instead of librdkafka's 500: records that
        // arrive meanwhile are not held back that long before their micro-batch sees them.
        // tansu holds every fetch this long, new records or not, and answers at most 5 MiB, so
        // this also bounds what it serves: ~50 MiB/s (see `kafka.consumer_options` in README).
        .set("fetch.wait.max.ms", "100");
    for (key, value) in overrides {
        cfg.set(key, value);
    }
}

/// The partition's end as the broker reported it in its latest fetch response to this consumer;
/// `None` before the first one. It is what the consumer has actually seen of the partition, so
/// `--once` trusts it over the end offsets a broker lists (tansu's in-memory storage lists the
/// first offset of the last record batch, not the end).
pub(super) fn fetched_end(consumer: &Consumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client pointer is valid while `consumer` is borrowed; `topic` is a
    // NUL-terminated string that outlives the call; the out-pointers point to live locals.
    // librdkafka only reads its cached offsets here (no broker request, no callback).
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Partitions;

    #[test]
    fn the_configs_consumer_options_override_dqetls_settings() {
        let opts = ProcessOptions {
            kafka: KafkaConnection {
                bootstrap_servers: "127.0.0.1:9092".into(),
                ..KafkaConnection::default()
            },
            group: "g".into(),
            tables: Vec::new(),
            once: false,
            partitions: Partitions::Group,
            trigger_interval: Duration::from_secs(1),
            max_batch_records: 10,
            max_batch_bytes: 10,
            consumer_options: vec![
                ("fetch.wait.max.ms".into(), "25".into()),
                ("client.rack".into(), "eu-1a".into()),
            ],
            maintenance: None,
            on_data_loss: Default::default(),
        };
        let cfg = consumer_config(&opts);
        assert_eq!(cfg.get("fetch.wait.max.ms"), Some("25"));
        assert_eq!(cfg.get("client.rack"), Some("eu-1a"));
        // dqetl's own settings stay where no option replaces them.
        assert_eq!(cfg.get("enable.auto.commit"), Some("false"));
        assert_eq!(cfg.get("max.partition.fetch.bytes"), Some("10485760"));
        assert_eq!(cfg.get("fetch.queue.backoff.ms"), Some("10"));
        let plain = consumer_config(&ProcessOptions {
            consumer_options: Vec::new(),
            ..opts
        });
        assert_eq!(plain.get("fetch.wait.max.ms"), Some("100"));
    }
}
