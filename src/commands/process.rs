//! `dqetl process`: the streaming processor.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;

use crate::cli::{GlobalArgs, Target};
use crate::config::layout::LakeLayout;
use crate::sink::Lake;
use crate::stream::{KafkaConnection, Maintenance, Partitions, ProcessOptions, Processor};

#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Drain what is in the topics now, then exit.
    #[arg(long)]
    pub once: bool,
    /// Read every partition in this process instead of sharing them with the other processors
    /// of the consumer group (offsets are still committed to the group). For a processor that
    /// runs alone: after a crash, its restart reads at once instead of waiting for the dead
    /// member's session to time out. The local target runs its processor this way.
    #[arg(long)]
    pub all_partitions: bool,
    /// Only these tables (comma-separated); all source tables by default.
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Kafka bootstrap servers (default: the local stack's broker, or the config's `kafka.bootstrap_servers`).
    #[arg(long, env = "DQETL_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    /// Lake root directory or URL (default: `.dqetl/<stack>/lake` locally, the stack's buckets on aws).
    #[arg(long, env = "DQETL_LAKE")]
    pub lake: Option<String>,
    /// Consumer group (default: the config's `kafka.consumer_group`, else `dqetl-<stack>`).
    #[arg(long, env = "DQETL_GROUP")]
    pub group: Option<String>,
    /// Override the config's trigger interval, e.g. `2s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub trigger_interval: Option<Duration>,
}

pub async fn run(global: &GlobalArgs, args: ProcessArgs) -> anyhow::Result<()> {
    let spec = super::load_config(global)?;
    let bootstrap = match &args.bootstrap {
        Some(b) => b.clone(),
        None => super::default_bootstrap(global, &spec)?,
    };
    let layout = match (&args.lake, global.target) {
        (Some(root), _) if root.starts_with("s3://") => LakeLayout::aws_root(root),
        (Some(root), _) => LakeLayout::local(&absolute(PathBuf::from(root))?),
        (None, Target::Local) => LakeLayout::local(&super::local_stack_dir(global)?.join("lake")),
        (None, Target::Aws) => {
            let account = std::env::var("DQETL_AWS_ACCOUNT_ID")
                .context("DQETL_AWS_ACCOUNT_ID is not set (the ECS task definition sets it); or pass --lake s3://...")?;
            LakeLayout::aws(&spec, &global.stack_name, &account)
        }
    };
    let lake = Lake::new(layout, super::storage_options(global));
    let opts = ProcessOptions {
        kafka: KafkaConnection {
            bootstrap_servers: bootstrap,
            security_protocol: spec
                .kafka
                .security_protocol
                .clone()
                .filter(|_| global.target == Target::Aws),
            sasl_mechanism: spec
                .kafka
                .sasl_mechanism
                .clone()
                .filter(|_| global.target == Target::Aws),
            sasl_username: spec
                .kafka
                .sasl_username
                .clone()
                .filter(|_| global.target == Target::Aws),
        },
        group: args
            .group
            .or_else(|| spec.kafka.consumer_group.clone())
            .unwrap_or_else(|| format!("dqetl-{}", global.stack_name)),
        tables: args.tables,
        once: args.once,
        partitions: if args.all_partitions {
            Partitions::All
        } else {
            Partitions::Group
        },
        trigger_interval: args
            .trigger_interval
            .unwrap_or(spec.settings.trigger_interval),
        max_batch_records: spec.settings.max_batch_records as usize,
        max_batch_bytes: spec.settings.max_batch_bytes as usize,
        consumer_options: spec.kafka.consumer_options.clone(),
        maintenance: Maintenance::from_settings(&spec.settings),
        on_data_loss: spec.kafka.on_data_loss,
    };
    let processor = Processor::new(&spec, lake, opts).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        super::shutdown_signal().await;
        tracing::info!("stopping after the batch in flight");
        let _ = stop_tx.send(true);
    });
    let summary = processor.run(stop_rx).await?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "processed {} records in {} micro-batches",
            summary.records, summary.batches
        );
        for (table, t) in &summary.per_table {
            println!(
                "  {table}: {} events, {} loaded, {} quarantined ({} malformed), {} deletes, {} control, {} already applied",
                t.events,
                t.loaded,
                t.quarantined,
                t.malformed,
                t.deletes,
                t.control_records,
                t.skipped_already_applied
            );
        }
        let m = &summary.maintenance;
        if m.rounds > 0 {
            println!(
                "  table maintenance: {} rounds, {} small files compacted, {} files vacuumed, {} log entries removed, {} failed steps",
                m.rounds, m.files_compacted, m.files_vacuumed, m.log_entries_removed, m.failures
            );
        }
    }
    Ok(())
}

fn absolute(p: PathBuf) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p
    } else {
        std::env::current_dir()?.join(p)
    })
}
