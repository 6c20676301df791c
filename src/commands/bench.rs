//! `dqetl bench`: benchmarks (not tests). They measure this machine and print a table.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

use crate::cli::GlobalArgs;
use crate::stream::bench::{self, BenchOptions, BrokerStorage, Mix, ProcessorArgs};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The streaming processor: pure core, Kafka → Delta throughput per mix, latency, peak RSS.
    Process(BenchProcessArgs),
    /// The processor of `bench process`'s end-to-end and latency runs, which start it as a
    /// process of its own (so that its peak RSS is the processor's alone); prints its report as
    /// JSON.
    #[command(hide = true)]
    Processor(BenchProcessorArgs),
}

#[derive(Debug, Args)]
pub struct BenchProcessorArgs {
    #[arg(long)]
    pub topic: String,
    #[arg(long)]
    pub bootstrap: String,
    #[arg(long)]
    pub group: String,
    #[arg(long)]
    pub lake: PathBuf,
    #[arg(long)]
    pub max_batch_records: Option<u64>,
    /// Run as a group member with this trigger interval until SIGTERM, instead of draining.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub follow: Option<Duration>,
    /// A librdkafka property of the consumer, `KEY=VALUE` (repeatable).
    #[arg(long = "consumer-option", value_parser = consumer_option)]
    pub consumer_options: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct BenchProcessArgs {
    /// Messages per mix for the throughput runs (use at least 1000000 for real figures).
    #[arg(long, default_value_t = 100_000)]
    pub messages: usize,
    /// Only this mix (by default insert-heavy, then update-heavy).
    #[arg(long, value_enum)]
    pub mix: Option<MixArg>,
    /// Produce rate of the latency run, events per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u32,
    /// How long the latency run produces, e.g. `30s`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub latency_duration: Duration,
    /// The processor's trigger interval in the latency run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub trigger_interval: Duration,
    /// Records per micro-batch at most, instead of the config's `settings.max_batch_records`.
    #[arg(long)]
    pub max_batch_records: Option<u64>,
    /// Use this broker instead of starting a temporary tansu broker.
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// Storage of the temporary tansu broker: `sqlite` (what the local target runs) or `memory`
    /// (faster, to see more of the processor itself).
    #[arg(long, value_enum, default_value = "sqlite")]
    pub broker_storage: BrokerStorageArg,
    /// A librdkafka property of the consumers, as the config's `kafka.consumer_options` sets
    /// it, e.g. `fetch.wait.max.ms=25` (repeatable).
    #[arg(long = "consumer-option", value_name = "KEY=VALUE", value_parser = consumer_option)]
    pub consumer_options: Vec<(String, String)>,
    /// Partitions of the benchmark's topics (the config's `kafka.partitions` default).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub partitions: i32,
}

/// `KEY=VALUE`, a property librdkafka accepts.
fn consumer_option(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
        return Err(format!("expected KEY=VALUE, found {text:?}"));
    };
    let (key, value) = (key.trim(), value.trim());
    crate::config::validate::librdkafka_accepts(key, value)
        .map_err(|reason| format!("librdkafka refuses `{key}`: {reason}"))?;
    Ok((key.to_string(), value.to_string()))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BrokerStorageArg {
    Sqlite,
    Memory,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MixArg {
    InsertHeavy,
    UpdateHeavy,
    /// Only inserts of growing keys (not part of the default run).
    AppendOnly,
}

pub async fn run(global: &GlobalArgs, command: BenchCommand) -> anyhow::Result<()> {
    let args = match command {
        BenchCommand::Process(args) => args,
        BenchCommand::Processor(args) => {
            let (stop_tx, stop) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                super::shutdown_signal().await;
                let _ = stop_tx.send(true);
            });
            let args = ProcessorArgs {
                topic: args.topic,
                bootstrap: args.bootstrap,
                group: args.group,
                lake: args.lake,
                max_batch_records: args.max_batch_records,
                follow: args.follow,
                consumer_options: args.consumer_options,
            };
            let run = bench::run_processor(&args, stop).await?;
            return super::print_stdout(&format!("{}\n", serde_json::to_string(&run)?));
        }
    };
    let mixes = match args.mix {
        Some(MixArg::InsertHeavy) => vec![Mix::InsertHeavy],
        Some(MixArg::UpdateHeavy) => vec![Mix::UpdateHeavy],
        Some(MixArg::AppendOnly) => vec![Mix::AppendOnly],
        None => vec![Mix::InsertHeavy, Mix::UpdateHeavy],
    };
    let options = BenchOptions {
        messages: args.messages.max(1),
        mixes,
        rate: args.rate.max(1),
        latency_duration: args.latency_duration,
        trigger_interval: args.trigger_interval,
        max_batch_records: args.max_batch_records,
        bootstrap: args.bootstrap,
        broker_storage: match args.broker_storage {
            BrokerStorageArg::Sqlite => BrokerStorage::Sqlite,
            BrokerStorageArg::Memory => BrokerStorage::Memory,
        },
        dqetl: std::env::current_exe().context("locating the dqetl binary")?,
        consumer_options: args.consumer_options,
        partitions: args.partitions,
    };
    let report = bench::run(&options).await?;
    if global.json {
        super::print_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?))
    } else {
        super::print_stdout(&format!("{report}"))
    }
}
