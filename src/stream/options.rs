//! What `dqetl process` needs to run, resolved from config, target and flags.

use std::time::Duration;

use crate::config::spec::{OnDataLoss, SettingsSpec};

/// How to reach the broker. The password, when there is one, comes from the environment
/// (`DQETL_KAFKA_PASSWORD`, injected by ECS from Secrets Manager), never from argv or files.
#[derive(Debug, Clone, Default)]
pub struct KafkaConnection {
    pub bootstrap_servers: String,
    pub security_protocol: Option<String>,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
}

/// How the processor gets its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Partitions {
    /// Shared with the other members of the consumer group (several processors).
    #[default]
    Group,
    /// Every partition, read by this processor alone without joining the group (offsets are
    /// still committed to it). For a processor that runs alone, as on the local target: a
    /// restart after a crash reads at once, instead of waiting for the dead member's session to
    /// time out (and for the broker to notice).
    All,
}

#[derive(Debug, Clone)]
pub struct ProcessOptions {
    pub kafka: KafkaConnection,
    /// The consumer group; also the prefix of the Delta transaction app ids.
    pub group: String,
    /// Only these tables (all source tables when empty).
    pub tables: Vec<String>,
    /// Drain what is in the topics now, then exit (every partition, as with [`Partitions::All`]).
    pub once: bool,
    pub partitions: Partitions,
    pub trigger_interval: Duration,
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
    /// librdkafka properties over the consumer's own (the config's `kafka.consumer_options`).
    pub consumer_options: Vec<(String, String)>,
    /// Table upkeep between batches; `None`: none.
    pub maintenance: Option<Maintenance>,
    /// What to do on offsets never delivered (the config's `kafka.on_data_loss`).
    pub on_data_loss: OnDataLoss,
}

/// How the processor keeps its tables (the config's `settings.maintenance_interval` and
/// `settings.vacuum_retention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maintenance {
    /// From the start, and from one round to the next.
    pub interval: Duration,
    /// Files replaced longer ago than this are deleted.
    pub vacuum_retention: Duration,
}

impl Maintenance {
    /// What the config's settings ask for; `None` when they turn maintenance off.
    pub fn from_settings(settings: &SettingsSpec) -> Option<Maintenance> {
        settings.maintenance_interval.map(|interval| Maintenance {
            interval,
            vacuum_retention: settings.vacuum_retention,
        })
    }
}
