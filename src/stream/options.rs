//! What `dqetl process` needs to run, resolved from config, target and flags.

use std::time::Duration;

/// How to reach the broker. The password, when there is one, comes from the environment
/// (`DQETL_KAFKA_PASSWORD`, injected by ECS from Secrets Manager), never from argv or files.
#[derive(Debug, Clone, Default)]
pub struct KafkaConnection {
    pub bootstrap_servers: String,
    pub security_protocol: Option<String>,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ProcessOptions {
    pub kafka: KafkaConnection,
    /// The consumer group; also the prefix of the Delta transaction app ids.
    pub group: String,
    /// Only these tables (all source tables when empty).
    pub tables: Vec<String>,
    /// Drain what is in the topics now, then exit.
    pub once: bool,
    pub trigger_interval: Duration,
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
}
