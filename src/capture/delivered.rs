//! What the topics already hold, so that a restarted capture sends nothing twice.
//!
//! PostgreSQL resends every change after the slot's confirmed position, and that position lags
//! behind what the broker acknowledged (it is confirmed every few seconds, and a crash can come
//! in between). So every streamed change carries a [`POSITION_HEADER`]: the source (the
//! cluster's system identifier and the slot), its transaction's commit LSN, its own LSN and its
//! index at that LSN (an update that changes the key is a delete and an insert at one LSN).
//! These positions only grow in stream order.
//!
//! The producer is idempotent and keeps each partition's messages in the order they were sent,
//! so a partition holds a prefix of what capture meant to send to it, and its last message says
//! how far that prefix goes. A session starts by reading the last message of every partition;
//! a change at or below the position found in its partition is already there and is skipped.
//! Capture picks each message's partition itself (CRC-32 of the key modulo the partition
//! count, what librdkafka's default partitioner picks for a keyed message), so it knows where a
//! change would land before sending it.
//!
//! A partition whose last message carries no position of this source (written by an older
//! capture, another producer, or the snapshot) skips nothing: the fallback is a duplicate,
//! never a loss.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::error::{CaptureError, Result};

/// The Kafka header carrying a change's position.
pub const POSITION_HEADER: &str = "dqetl-position";
/// Bounds each metadata request and the read of the partitions' last messages.
const TIMEOUT: Duration = Duration::from_secs(30);
/// With every partition read, this long without a message means the end was reached (the
/// high watermark cannot say: see `read_last_messages`).
const QUIET: Duration = Duration::from_secs(1);

/// Where a change stands in the stream; ordered as the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    pub commit_lsn: u64,
    pub lsn: u64,
    pub index: u32,
}

/// The last position delivered to each partition of the configured topics.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    /// `<system identifier>:<slot>`: positions of another source are not comparable.
    source: String,
    /// Partition count per topic (0: unknown, the broker picks and nothing is skipped).
    partitions: HashMap<String, i32>,
    last: HashMap<(String, i32), Position>,
}

impl Delivered {
    /// Reads the last message of every partition of `topics`.
    pub(crate) async fn read(bootstrap: &str, topics: &[String], source: String) -> Result<Self> {
        let bootstrap = bootstrap.to_string();
        let topics = topics.to_vec();
        tokio::task::spawn_blocking(move || read_last_messages(&bootstrap, &topics, source))
            .await
            .map_err(|_| CaptureError::Delivered {
                what: "the reading task ended".into(),
                source: None,
            })?
    }

    /// The partition capture sends `key`'s changes of `topic` to, when it knows the count.
    pub(crate) fn partition(&self, topic: &str, key: &str) -> Option<i32> {
        let count = *self.partitions.get(topic)?;
        (count > 0 && !key.is_empty()).then(|| partition_for(key.as_bytes(), count))
    }

    /// True when `partition` of `topic` already holds the change at `position`.
    pub(crate) fn holds(&self, topic: &str, partition: i32, position: Position) -> bool {
        self.last
            .get(&(topic.to_string(), partition))
            .is_some_and(|last| position <= *last)
    }

    /// The header value of a change at `position`.
    pub(crate) fn header(&self, position: Position) -> String {
        format!(
            "{}:{}:{}:{}",
            self.source, position.commit_lsn, position.lsn, position.index
        )
    }

    /// Partitions holding positions of this source.
    pub(crate) fn known_partitions(&self) -> usize {
        self.last.len()
    }
}

/// The position in a header value written by `source`; None for another source or a value
/// that does not parse.
fn parse_header(value: &[u8], source: &str) -> Option<Position> {
    let text = std::str::from_utf8(value).ok()?;
    let rest = text.strip_prefix(source)?.strip_prefix(':')?;
    let mut parts = rest.split(':');
    let position = Position {
        commit_lsn: parts.next()?.parse().ok()?,
        lsn: parts.next()?.parse().ok()?,
        index: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(position)
}

/// librdkafka's `consistent_random` partitioner for a non-empty key: CRC-32 modulo the count.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    let count = u32::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from(crc32(key) % count).unwrap_or(0)
}

/// CRC-32 (IEEE 802.3, as zlib and librdkafka compute it).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn read_last_messages(bootstrap: &str, topics: &[String], source: String) -> Result<Delivered> {
    let failed = |what: String| {
        move |source| CaptureError::Delivered {
            what,
            source: Some(Box::new(source)),
        }
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "dqetl-capture-positions")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("log_level", "3")
        .create()
        .map_err(failed("cannot create a consumer".into()))?;

    let mut delivered = Delivered {
        source,
        ..Delivered::default()
    };
    let mut assignment = TopicPartitionList::new();
    let mut pending: HashSet<(String, i32)> = HashSet::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(failed(format!("cannot read the metadata of {topic}")))?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        let count = i32::try_from(count).unwrap_or(0);
        delivered.partitions.insert(topic.clone(), count);
        for partition in 0..count {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, TIMEOUT)
                .map_err(failed(format!(
                    "cannot read the offsets of {topic}[{partition}]"
                )))?;
            if high > low {
                assignment
                    .add_partition_offset(topic, partition, Offset::Offset(high - 1))
                    .map_err(failed(format!("cannot assign {topic}[{partition}]")))?;
                pending.insert((topic.clone(), partition));
            }
        }
    }
    if pending.is_empty() {
        return Ok(delivered);
    }
    consumer
        .assign(&assignment)
        .map_err(failed("cannot assign the partitions".into()))?;
    // Read from there to the end: tansu 0.6 reports the high watermark as the last batch's
    // first offset + 1, so `high - 1` may be the first record of a batch, not the last record.
    // Positions only grow within a partition, so the greatest one read is the last one.
    let deadline = Instant::now() + TIMEOUT;
    let mut last_message_at = Instant::now();
    let mut read: HashSet<(String, i32)> = HashSet::new();
    while read.len() < pending.len() || last_message_at.elapsed() < QUIET {
        if Instant::now() >= deadline {
            let (topic, partition) = pending
                .iter()
                .find(|k| !read.contains(*k))
                .cloned()
                .unwrap_or_default();
            return Err(CaptureError::Delivered {
                what: format!(
                    "the last messages of {topic}[{partition}] did not arrive within {TIMEOUT:?}"
                ),
                source: None,
            });
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.map_err(failed("cannot read the last messages".into()))?;
        last_message_at = Instant::now();
        let slot = (message.topic().to_string(), message.partition());
        let position = message.headers().and_then(|headers| {
            headers
                .iter()
                .filter(|h| h.key == POSITION_HEADER)
                .find_map(|h| parse_header(h.value?, &delivered.source))
        });
        if let Some(position) = position {
            let last = delivered.last.entry(slot.clone()).or_insert(position);
            *last = (*last).max(position);
        }
        read.insert(slot);
    }
    Ok(delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_standard_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn a_header_is_read_back_only_for_its_own_source() {
        let delivered = Delivered {
            source: "7312:dqetl_demo".into(),
            ..Delivered::default()
        };
        let position = Position {
            commit_lsn: 0x1_6B37_4D48,
            lsn: 0x1_6B37_4C00,
            index: 1,
        };
        let header = delivered.header(position);
        assert_eq!(
            parse_header(header.as_bytes(), "7312:dqetl_demo"),
            Some(position)
        );
        assert_eq!(parse_header(header.as_bytes(), "7312:dqetl_other"), None);
        assert_eq!(parse_header(header.as_bytes(), "7312:dqetl_dem"), None);
        assert_eq!(
            parse_header(b"7312:dqetl_demo:1:2", "7312:dqetl_demo"),
            None
        );
        assert_eq!(
            parse_header(b"7312:dqetl_demo:1:2:3:4", "7312:dqetl_demo"),
            None
        );
    }

    #[test]
    fn positions_order_by_commit_then_change_then_index() {
        let at = |commit_lsn, lsn, index| Position {
            commit_lsn,
            lsn,
            index,
        };
        // A transaction that began earlier but committed later comes later in the stream.
        assert!(at(200, 50, 0) > at(100, 90, 5));
        assert!(at(200, 60, 0) > at(200, 50, 1));
        assert!(at(200, 60, 1) > at(200, 60, 0));
    }

    #[test]
    fn a_partition_holds_what_is_at_or_below_its_last_position() {
        let mut delivered = Delivered::default();
        delivered.partitions.insert("cdc-a".into(), 3);
        let key = "42";
        let partition = delivered.partition("cdc-a", key).expect("known topic");
        assert_eq!(partition, partition_for(b"42", 3));
        let last = Position {
            commit_lsn: 100,
            lsn: 90,
            index: 0,
        };
        delivered.last.insert(("cdc-a".into(), partition), last);
        assert!(delivered.holds("cdc-a", partition, last));
        assert!(delivered.holds("cdc-a", partition, Position { lsn: 80, ..last }));
        assert!(!delivered.holds("cdc-a", partition, Position { index: 1, ..last }));
        assert!(!delivered.holds("cdc-a", (partition + 1) % 3, last));
        assert_eq!(delivered.partition("cdc-unknown", key), None);
        assert_eq!(delivered.partition("cdc-a", ""), None);
    }
}
