//! `dqetl topics sync`: create every configured table's topic (`cdc-<name>` unless named), with
//! the config's partition count. Existing topics are kept. On aws it runs as a one-off job and
//! talks SASL/SCRAM over TLS; the password comes from `DQETL_KAFKA_PASSWORD`.

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::cli::{GlobalArgs, Target};
use crate::stream::{KafkaConnection, TopicOutcome, client_config, create_topics};

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create the topics the config names (idempotent).
    Sync(TopicsSyncArgs),
}

#[derive(Debug, Args)]
pub struct TopicsSyncArgs {
    /// Kafka bootstrap servers (default: DQETL_KAFKA_BOOTSTRAP, else the config's).
    #[arg(long, env = "DQETL_KAFKA_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    /// Partitions of new topics (default: the config's kafka.partitions).
    #[arg(long, env = "DQETL_KAFKA_PARTITIONS")]
    pub partitions: Option<i32>,
    /// Replication factor of new topics (MSK: 2).
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i32,
}

pub async fn run(global: &GlobalArgs, command: TopicsCommand) -> anyhow::Result<()> {
    let TopicsCommand::Sync(args) = command;
    let spec = super::load_config(global)?;
    let bootstrap = match args.bootstrap {
        Some(b) => b,
        None => super::default_bootstrap(global, &spec)?,
    };
    let aws = global.target == Target::Aws;
    let kafka = KafkaConnection {
        bootstrap_servers: bootstrap.clone(),
        security_protocol: spec.kafka.security_protocol.clone().filter(|_| aws),
        sasl_mechanism: spec.kafka.sasl_mechanism.clone().filter(|_| aws),
        sasl_username: std::env::var("DQETL_KAFKA_USERNAME")
            .ok()
            .or_else(|| spec.kafka.sasl_username.clone())
            .filter(|_| aws),
    };
    let partitions = args.partitions.unwrap_or(spec.kafka.partitions);
    let names: Vec<(&str, i32)> = spec
        .source_tables()
        .map(|t| (t.topic.as_str(), partitions))
        .collect();
    let outcomes = create_topics(&client_config(&kafka), &names, args.replication_factor)
        .await
        .with_context(|| format!("creating topics on Kafka at {bootstrap}"))?;
    let mut failed = Vec::new();
    for (topic, outcome) in outcomes {
        match outcome {
            TopicOutcome::Created => println!("topic {topic}: created ({partitions} partitions)"),
            TopicOutcome::AlreadyThere => println!("topic {topic}: already there"),
            TopicOutcome::Failed(code) => {
                println!("topic {topic}: FAILED ({code})");
                failed.push(topic);
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("could not create topic(s): {}", failed.join(", "));
    }
    Ok(())
}
