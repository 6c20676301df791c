//! What the local broker knows about a stack: which topics exist, and how far the processor's
//! consumer group is behind on each (committed offsets against high watermarks).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::error::LocalError;

const TIMEOUT: Duration = Duration::from_secs(10);

/// One partition: where its log ends and where the group stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    pub partition: i32,
    /// First offset still in the log.
    pub low: i64,
    /// Offset the next message will get.
    pub high: i64,
    /// The group's committed offset (the next message it will read); None: nothing committed.
    pub committed: Option<i64>,
}

impl PartitionLag {
    /// Messages the group has not committed yet.
    pub fn lag(&self) -> u64 {
        let from = self.committed.unwrap_or(self.low).max(self.low);
        u64::try_from(self.high - from).unwrap_or(0)
    }
}

/// One topic of the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicLag {
    pub topic: String,
    /// False when the topic does not exist on the broker.
    pub exists: bool,
    pub partitions: Vec<PartitionLag>,
}

impl TopicLag {
    pub fn lag(&self) -> u64 {
        self.partitions.iter().map(PartitionLag::lag).sum()
    }

    /// Messages in the topic (high watermarks summed over partitions).
    pub fn end_offsets(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| u64::try_from(p.high).unwrap_or(0))
            .sum()
    }
}

fn client(bootstrap: &str, group: Option<&str>) -> Result<BaseConsumer, LocalError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "10000")
        .set("enable.auto.commit", "false")
        // rdkafka's own log lines about a broker going away would clutter command output.
        .set("log_level", "3");
    if let Some(group) = group {
        config.set("group.id", group);
    }
    config.create().map_err(|source| LocalError::Kafka {
        bootstrap: bootstrap.to_string(),
        what: "cannot create a client".into(),
        source: Box::new(source),
    })
}

/// Topics on the broker with their partition counts.
pub fn existing_topics(bootstrap: &str) -> Result<BTreeMap<String, usize>, LocalError> {
    let consumer = client(bootstrap, None)?;
    let metadata = consumer
        .fetch_metadata(None, TIMEOUT)
        .map_err(|source| LocalError::Kafka {
            bootstrap: bootstrap.to_string(),
            what: "cannot list topics".into(),
            source: Box::new(source),
        })?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect())
}

/// The consumer lag of `group` on each of `topics` (in the given order).
pub fn consumer_lag(
    bootstrap: &str,
    group: &str,
    topics: &[String],
) -> Result<Vec<TopicLag>, LocalError> {
    let consumer = client(bootstrap, Some(group))?;
    let kafka = |what: String| {
        let bootstrap = bootstrap.to_string();
        move |source| LocalError::Kafka {
            bootstrap,
            what,
            source: Box::new(source),
        }
    };
    let metadata = consumer
        .fetch_metadata(None, TIMEOUT)
        .map_err(kafka("cannot list topics".into()))?;
    let partitions: BTreeMap<&str, Vec<i32>> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name(), t.partitions().iter().map(|p| p.id()).collect()))
        .collect();

    let mut wanted = TopicPartitionList::new();
    for topic in topics {
        for &partition in partitions.get(topic.as_str()).into_iter().flatten() {
            wanted.add_partition(topic, partition);
        }
    }
    let committed = if wanted.count() == 0 {
        TopicPartitionList::new()
    } else {
        consumer
            .committed_offsets(wanted, TIMEOUT)
            .map_err(kafka(format!("cannot read the offsets of group {group}")))?
    };

    let mut lags = Vec::with_capacity(topics.len());
    for topic in topics {
        let Some(ids) = partitions.get(topic.as_str()) else {
            lags.push(TopicLag {
                topic: topic.clone(),
                exists: false,
                partitions: Vec::new(),
            });
            continue;
        };
        let mut parts = Vec::with_capacity(ids.len());
        for &partition in ids {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, TIMEOUT)
                .map_err(kafka(format!(
                    "cannot read the end of {topic}[{partition}]"
                )))?;
            let committed =
                committed
                    .find_partition(topic, partition)
                    .and_then(|p| match p.offset() {
                        Offset::Offset(offset) => Some(offset),
                        _ => None,
                    });
            parts.push(PartitionLag {
                partition,
                low,
                high,
                committed,
            });
        }
        parts.sort_by_key(|p| p.partition);
        lags.push(TopicLag {
            topic: topic.clone(),
            exists: true,
            partitions: parts,
        });
    }
    Ok(lags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_committed_offset_or_the_log_start() {
        let p = |low, high, committed| PartitionLag {
            partition: 0,
            low,
            high,
            committed,
        };
        assert_eq!(p(0, 10, Some(4)).lag(), 6);
        assert_eq!(p(0, 10, None).lag(), 10);
        assert_eq!(p(3, 10, None).lag(), 7, "deleted messages are not lag");
        assert_eq!(p(0, 10, Some(10)).lag(), 0);
        assert_eq!(p(5, 10, Some(2)).lag(), 5);
        assert_eq!(p(0, 0, None).lag(), 0);
    }
}
