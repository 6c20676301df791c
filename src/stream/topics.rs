//! Creating topics, for every place that needs them (`topics sync`, the local broker, the
//! benchmark), so they agree on what an existing topic means: kept as it is, not an error.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaErrorCode;

/// What creating one topic did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    AlreadyThere,
    Failed(RDKafkaErrorCode),
}

/// Creates `topics` (name, partitions) with `replication` copies each; returns each topic's
/// outcome in order. An error is returned only when the broker cannot be asked at all.
pub async fn create_topics(
    config: &ClientConfig,
    topics: &[(&str, i32)],
    replication: i32,
) -> KafkaResult<Vec<(String, TopicOutcome)>> {
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| {
            NewTopic::new(name, *partitions, TopicReplication::Fixed(replication))
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new_topics, &options).await?;
    Ok(results
        .into_iter()
        .map(|result| match result {
            Ok(topic) => (topic, TopicOutcome::Created),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                (topic, TopicOutcome::AlreadyThere)
            }
            Err((topic, code)) => (topic, TopicOutcome::Failed(code)),
        })
        .collect())
}
