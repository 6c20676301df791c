//! `dqetl bench process`: how fast the processor is on this machine, measured, never asserted.
//!
//! Vehicle-telemetry DMS messages (the shipped config's `vehicle_telemetry` table, its rules,
//! transforms and checks) go into a tansu broker, then:
//! - the pure core (decode + rules + transforms + SCD2 selection + metrics, no I/O) on one thread;
//! - producing them, and consuming them with rdkafka alone (the ceiling for the processor);
//! - end to end, Kafka → Delta with SCD2, per mix (insert-heavy, update-heavy), `--once`;
//! - produce-to-commit latency (p50/p99) at a fixed produce rate, with a long-running processor;
//! - the peak RSS of each phase (`VmHWM`, reset between phases through `/proc/self/clear_refs`);
//!   the end-to-end and latency runs start the processor as a process of its own, so their
//!   peaks are the processor's alone.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::latency::LatencySummary;
use super::options::{KafkaConnection, Maintenance, Partitions, ProcessOptions};
use super::processor::Processor;
use crate::cdc::decode::{RawMessage, decode};
use crate::cdc::encode::encode;
use crate::config::layout::LakeLayout;
use crate::config::spec::{ConfigSpec, TableSpec};
use crate::pipeline::TableMetricState;
use crate::pipeline::plan::Operation;
use crate::sink::Lake;
use crate::target::local::process::SpawnOptions;
use crate::target::local::{Broker, BrokerOptions, Storage, create_topics};

/// The shape of the change stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mix {
    /// 90% inserts of new keys, 9% updates, 1% deletes: the table grows.
    InsertHeavy,
    /// A key space of 1/50 of the messages, loaded first, then 97% updates and 3% deletes:
    /// every batch closes current versions.
    UpdateHeavy,
    /// Inserts of new, growing keys only, as telemetry and event tables get: a batch's keys lie
    /// above every stored one, so its commit reads and rewrites no stored file.
    AppendOnly,
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mix::InsertHeavy => "insert-heavy",
            Mix::UpdateHeavy => "update-heavy",
            Mix::AppendOnly => "append-only",
        })
    }
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Messages per mix for the throughput runs.
    pub messages: usize,
    pub mixes: Vec<Mix>,
    /// Produce rate of the latency run, events per second.
    pub rate: u32,
    /// How long the latency run produces.
    pub latency_duration: Duration,
    /// The processor's trigger interval in the latency run.
    pub trigger_interval: Duration,
    /// Overrides the config's `settings.max_batch_records` (batch size bounds memory).
    pub max_batch_records: Option<u64>,
    /// An existing broker; by default a tansu broker is started in a temporary folder.
    pub bootstrap: Option<String>,
    /// The storage of the tansu broker the benchmark starts.
    pub broker_storage: BrokerStorage,
    /// The `dqetl` binary that runs the processor of the end-to-end and latency runs
    /// (`dqetl bench processor`).
    pub dqetl: PathBuf,
    /// librdkafka properties of the processor's and the raw consumer's consumers, as the
    /// config's `kafka.consumer_options` sets them.
    pub consumer_options: Vec<(String, String)>,
    /// Partitions of each topic the benchmark creates.
    pub partitions: i32,
}

/// The storage of the benchmark's own tansu broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokerStorage {
    /// SQLite, as the local target runs it.
    #[default]
    Sqlite,
    /// In memory: a faster broker, to see more of the processor itself. Good for the runs from
    /// the beginning of a topic that the benchmark makes (see docs/benchmarks.md).
    Memory,
}

impl fmt::Display for BrokerStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BrokerStorage::Sqlite => "SQLite",
            BrokerStorage::Memory => "memory",
        })
    }
}

/// Everything measured, for the table and for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub build: &'static str,
    pub machine: Machine,
    /// The broker measured against: `tansu (SQLite storage)`, or the address given.
    pub broker: String,
    /// The consumers' librdkafka properties beyond dqetl's own (`--consumer-option`).
    pub consumer_options: Vec<(String, String)>,
    pub messages: usize,
    pub partitions: i32,
    pub core: CoreResult,
    pub mixes: Vec<MixResult>,
    pub latency: LatencyResult,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CoreResult {
    /// Events per pass.
    pub events: usize,
    pub batch: usize,
    /// Passes over the same events, each from an empty metric state.
    pub passes: usize,
    /// The median pass's time and rate.
    pub seconds: f64,
    pub events_per_second: f64,
    /// Every pass's rate, slowest first: the spread shows what the machine did meanwhile.
    pub pass_events_per_second: Vec<f64>,
    /// The median batch's rate over all passes: steadier than a pass where other work shares
    /// the machine.
    pub median_batch_events_per_second: f64,
    pub peak: PeakMemory,
}

#[derive(Debug, Clone, Serialize)]
pub struct MixResult {
    pub mix: Mix,
    pub produce_per_second: f64,
    pub raw_consume_per_second: f64,
    pub end_to_end_seconds: f64,
    pub end_to_end_per_second: f64,
    /// End to end as a fraction of the raw consume rate.
    pub ratio_to_raw_consume: f64,
    pub batches: u64,
    pub data_versions: usize,
    pub quarantined: u64,
    pub peak: PeakMemory,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    pub rate: u32,
    pub trigger_interval_ms: u128,
    pub records: u64,
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub max_ms: Option<u64>,
    pub achieved_rate: f64,
    pub peak: PeakMemory,
}

const CORE_BATCH: usize = 10_000;

/// Passes of the pure core over its events; the median one is reported. A pass takes a fraction
/// of a second, so a single one is at the mercy of whatever else the machine does in that moment.
const CORE_PASSES: usize = 5;

/// Runs every measurement. Progress goes to the log (`RUST_LOG=info`).
pub async fn run(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let work = WorkDir::new()?;
    let (broker, bootstrap) = match &opts.bootstrap {
        Some(b) => (None, b.clone()),
        None => {
            let broker = start_broker(&work.path.join("broker"), opts.broker_storage)?;
            let bootstrap = broker.bootstrap();
            (Some(broker), bootstrap)
        }
    };
    let outcome = measure(opts, &work.path, &bootstrap).await;
    if let Some(broker) = broker
        && let Err(error) = broker.stop()
    {
        tracing::warn!(%error, "stopping the benchmark broker failed");
    }
    outcome
}

async fn measure(opts: &BenchOptions, work: &Path, bootstrap: &str) -> anyhow::Result<BenchReport> {
    let base = telemetry_config(opts.max_batch_records)?;
    tracing::info!(
        events = opts.messages.min(200_000),
        "measuring the pure core"
    );
    let core = core(&base, opts.messages.min(200_000))?;
    let mut mixes = Vec::new();
    for (n, mix) in opts.mixes.iter().enumerate() {
        mixes.push(
            end_to_end(
                opts,
                &base,
                *mix,
                bootstrap,
                &work.join(format!("lake-{n}")),
            )
            .await?,
        );
    }
    let latency = latency(opts, &base, bootstrap, &work.join("lake-latency")).await?;
    Ok(BenchReport {
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        machine: machine(),
        broker: match &opts.bootstrap {
            Some(bootstrap) => format!("at {bootstrap}"),
            None => format!("tansu ({} storage)", opts.broker_storage),
        },
        consumer_options: opts.consumer_options.clone(),
        messages: opts.messages,
        partitions: opts.partitions,
        core,
        mixes,
        latency,
    })
}

/// The shipped config's `vehicle_telemetry` table, alone, with `max_batch_records` instead of
/// the config's `settings.max_batch_records` when given.
/// Generated (key, payload) pairs as the decoder receives them from Kafka: partition 0, offsets
/// from `first_offset` on.
pub fn raw_messages<'a>(
    topic: &'a str,
    first_offset: i64,
    messages: &'a [(Vec<u8>, Vec<u8>)],
) -> Vec<RawMessage<'a>> {
    messages
        .iter()
        .zip(first_offset..)
        .map(|((key, payload), offset)| RawMessage {
            topic,
            partition: 0,
            offset,
            key: Some(key),
            payload: Some(payload),
        })
        .collect()
}

pub fn telemetry_config(max_batch_records: Option<u64>) -> anyhow::Result<ConfigSpec> {
    let ctx = crate::config::LoadContext {
        stack_name: "bench".into(),
        account_id: None,
    };
    let loaded = crate::config::load::load_str(
        include_str!("../../config/tables.yaml"),
        "config/tables.yaml",
        &ctx,
    )
    .context("loading the shipped config")?;
    let mut spec = crate::config::validate(&loaded)
        .spec
        .context("the shipped config does not validate")?;
    spec.tables.retain(|t| t.name == "vehicle_telemetry");
    anyhow::ensure!(
        spec.tables.len() == 1,
        "the shipped config has no vehicle_telemetry table"
    );
    if let Some(records) = max_batch_records {
        spec.settings.max_batch_records = records.max(1);
    }
    Ok(spec)
}

/// The config with the table reading `topic`.
fn with_topic(base: &ConfigSpec, topic: &str) -> ConfigSpec {
    let mut spec = base.clone();
    for t in &mut spec.tables {
        t.topic = topic.to_string();
    }
    spec
}

fn table(spec: &ConfigSpec) -> &TableSpec {
    &spec.tables[0]
}

/// Realistic vehicle telemetry changes, ~1% of them failing a range rule.
pub struct Workload {
    mix: Mix,
    rng: SmallRng,
    next_id: i64,
    live: Vec<i64>,
    key_space: usize,
    clock: DateTime<Utc>,
}

impl Workload {
    pub fn new(mix: Mix, messages: usize, seed: u64) -> Workload {
        Workload {
            mix,
            rng: SmallRng::seed_from_u64(seed),
            next_id: 1,
            live: Vec::new(),
            key_space: (messages / 50).max(100),
            clock: DateTime::from_timestamp(1_795_615_200, 0).unwrap_or_default(),
        }
    }

    /// The next change: its key and its DMS message.
    pub fn next(&mut self, table: &TableSpec) -> (Vec<u8>, Vec<u8>) {
        self.clock += chrono::Duration::milliseconds(1);
        let roll: f64 = self.rng.random();
        let op = match self.mix {
            Mix::AppendOnly => Operation::Insert,
            Mix::InsertHeavy if roll < 0.90 || self.live.is_empty() => Operation::Insert,
            Mix::InsertHeavy if roll < 0.99 => Operation::Update,
            Mix::UpdateHeavy if self.live.len() < self.key_space => Operation::Insert,
            Mix::UpdateHeavy if roll < 0.97 => Operation::Update,
            _ => Operation::Delete,
        };
        let id = match op {
            Operation::Insert | Operation::Load => {
                let id = self.next_id;
                self.next_id += 1;
                self.live.push(id);
                id
            }
            Operation::Update => self.live[self.rng.random_range(0..self.live.len())],
            Operation::Delete => {
                let at = self.rng.random_range(0..self.live.len());
                self.live.swap_remove(at)
            }
        };
        let row = if op == Operation::Delete {
            json!({"id": id})
        } else {
            self.row(id)
        };
        let row = match row {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let payload = encode(
            table,
            "public",
            op,
            row,
            self.clock,
            Some(self.next_id as u64),
        );
        (id.to_string().into_bytes(), payload)
    }

    fn row(&mut self, id: i64) -> Value {
        let r = &mut self.rng;
        let bad = r.random_bool(0.01);
        let recorded = self.clock.format("%Y-%m-%d %H:%M:%S%.3f").to_string();
        json!({
            "id": id,
            "vehicle_id": r.random_range(1..500),
            "recorded_at": recorded,
            "latitude": if bad { 123.4 } else { 37.0 + r.random::<f64>() },
            "longitude": -122.0 - r.random::<f64>(),
            "speed_kmh": (r.random::<f64>() * 1300.0).round() / 10.0,
            "fuel_level_pct": (r.random::<f64>() * 1000.0).round() / 10.0,
            "engine_temp_c": 70.0 + (r.random::<f64>() * 400.0).round() / 10.0,
            "odometer_km": r.random_range(1000..300_000) as f64,
            "engine_status": if r.random_bool(0.8) { "running" } else { "idle" },
            "harsh_braking": if r.random_bool(0.02) { "true" } else { "false" },
            "harsh_acceleration": if r.random_bool(0.02) { "true" } else { "false" },
            "created_at": recorded,
        })
    }
}

/// Decode + plan on one thread, in batches, no I/O.
fn core(spec: &ConfigSpec, events: usize) -> anyhow::Result<CoreResult> {
    let table = table(spec);
    let mut workload = Workload::new(Mix::InsertHeavy, events, 1);
    let messages: Vec<(Vec<u8>, Vec<u8>)> = (0..events).map(|_| workload.next(table)).collect();
    let rss = PeakRss::start();
    let now = Utc::now();
    let mut batch_rates = Vec::new();
    let mut passes = Vec::with_capacity(CORE_PASSES);
    for _ in 0..CORE_PASSES {
        let mut state = TableMetricState::default();
        let started = Instant::now();
        for (n, chunk) in messages.chunks(CORE_BATCH).enumerate() {
            let batch_started = Instant::now();
            let raw = raw_messages(&table.topic, (n * CORE_BATCH) as i64, chunk);
            let decoded = decode(table, &raw);
            let plan =
                crate::pipeline::plan(table, &decoded, &state, now).context("planning a batch")?;
            state.merge(plan.metric_state);
            batch_rates.push(chunk.len() as f64 / batch_started.elapsed().as_secs_f64());
        }
        passes.push(started.elapsed().as_secs_f64());
    }
    passes.sort_unstable_by(f64::total_cmp);
    let seconds = passes[passes.len() / 2];
    batch_rates.sort_unstable_by(f64::total_cmp);
    Ok(CoreResult {
        events,
        batch: CORE_BATCH,
        passes: CORE_PASSES,
        seconds,
        events_per_second: events as f64 / seconds,
        pass_events_per_second: passes.iter().rev().map(|s| events as f64 / s).collect(),
        median_batch_events_per_second: batch_rates
            .get(batch_rates.len() / 2)
            .copied()
            .unwrap_or_default(),
        peak: rss.finish(),
    })
}

async fn end_to_end(
    opts: &BenchOptions,
    base: &ConfigSpec,
    mix: Mix,
    bootstrap: &str,
    lake_dir: &Path,
) -> anyhow::Result<MixResult> {
    let topic = format!("bench-{mix}-{:08x}", rand::random::<u32>());
    create_topics(bootstrap, &[(&topic, opts.partitions)])
        .await
        .context("creating the topic")?;
    let spec = with_topic(base, &topic);
    tracing::info!(%mix, messages = opts.messages, %topic, "producing");
    let mut workload = Workload::new(mix, opts.messages, 7);
    let produced = produce(
        bootstrap,
        &topic,
        table(&spec),
        &mut workload,
        opts.messages,
        None,
    )
    .await?;
    let produce_per_second = opts.messages as f64 / produced.seconds;

    tracing::info!(%mix, "consuming with rdkafka alone");
    let raw_seconds = raw_consume(
        bootstrap,
        &topic,
        opts.partitions,
        opts.messages,
        &opts.consumer_options,
    )
    .await?;

    tracing::info!(%mix, "processing end to end (--once, in a process of its own)");
    let (run, peak) = ProcessorProcess::start(
        &opts.dqetl,
        &ProcessorArgs {
            topic: topic.clone(),
            bootstrap: bootstrap.to_string(),
            group: format!("bench-{:08x}", rand::random::<u32>()),
            lake: lake_dir.to_path_buf(),
            max_batch_records: opts.max_batch_records,
            follow: None,
            consumer_options: opts.consumer_options.clone(),
        },
    )?
    .finish()
    .await?;
    anyhow::ensure!(
        run.events as usize == opts.messages,
        "the processor decoded {} of {} events",
        run.events,
        opts.messages
    );
    let seconds = run.seconds;
    let data_versions = count_rows(lake_dir, &spec).await?;
    let per_second = opts.messages as f64 / seconds;
    Ok(MixResult {
        mix,
        produce_per_second,
        raw_consume_per_second: opts.messages as f64 / raw_seconds,
        end_to_end_seconds: seconds,
        end_to_end_per_second: per_second,
        ratio_to_raw_consume: per_second / (opts.messages as f64 / raw_seconds),
        batches: run.batches,
        data_versions,
        quarantined: run.quarantined,
        peak,
    })
}

/// Where and how a phase's processor runs: `dqetl bench processor`, a hidden command, so that
/// it has a process of its own and its peak RSS is what `dqetl process` would hold, without the
/// benchmark's generator and producer.
#[derive(Debug, Clone)]
pub struct ProcessorArgs {
    pub topic: String,
    pub bootstrap: String,
    pub group: String,
    pub lake: PathBuf,
    pub max_batch_records: Option<u64>,
    /// Run as a group member with this trigger interval until stopped (SIGTERM), instead of
    /// draining the topic (`--once`).
    pub follow: Option<Duration>,
    /// The config's `kafka.consumer_options`.
    pub consumer_options: Vec<(String, String)>,
}

/// What that process reports on its standard output, as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessorRun {
    /// From creating the processor to the end of its run.
    pub seconds: f64,
    pub batches: u64,
    pub events: u64,
    pub quarantined: u64,
    pub latency: LatencySummary,
}

/// The shipped config's `vehicle_telemetry` table read from `args.topic`, until `stop` or, when
/// draining, the end of the topic: the body of `dqetl bench processor`.
pub async fn run_processor(
    args: &ProcessorArgs,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<ProcessorRun> {
    let mut spec = with_topic(&telemetry_config(args.max_batch_records)?, &args.topic);
    spec.kafka.consumer_options = args.consumer_options.clone();
    let lake = Lake::new(LakeLayout::local(&args.lake), Default::default());
    let options = process_options(
        &args.bootstrap,
        &args.group,
        &spec,
        args.follow.is_none(),
        args.follow.unwrap_or(spec.settings.trigger_interval),
    );
    let started = Instant::now();
    let summary = Processor::new(&spec, lake, options)
        .await?
        .run(stop)
        .await?;
    let totals = summary
        .per_table
        .values()
        .next()
        .cloned()
        .unwrap_or_default();
    Ok(ProcessorRun {
        seconds: started.elapsed().as_secs_f64(),
        batches: summary.batches,
        events: totals.events,
        quarantined: totals.quarantined,
        latency: summary.latency,
    })
}

/// `dqetl bench processor` running as a child of this process, its memory sampled until it
/// exits. Killed if dropped before [`ProcessorProcess::finish`] (a phase that failed).
struct ProcessorProcess {
    dqetl: PathBuf,
    /// Taken by `finish`.
    child: Option<std::process::Child>,
    memory: Option<PeakRss>,
}

impl ProcessorProcess {
    fn start(dqetl: &Path, args: &ProcessorArgs) -> anyhow::Result<ProcessorProcess> {
        let mut command = std::process::Command::new(dqetl);
        command
            .args(["bench", "processor", "--topic", &args.topic])
            .args(["--bootstrap", &args.bootstrap, "--group", &args.group])
            .arg("--lake")
            .arg(&args.lake);
        if let Some(records) = args.max_batch_records {
            command.args(["--max-batch-records", &records.to_string()]);
        }
        for (key, value) in &args.consumer_options {
            command.args(["--consumer-option", &format!("{key}={value}")]);
        }
        if let Some(interval) = args.follow {
            command.args([
                "--follow",
                &humantime::format_duration(interval).to_string(),
            ]);
        }
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the processor process {}", dqetl.display()))?;
        Ok(ProcessorProcess {
            dqetl: dqetl.to_path_buf(),
            memory: Some(PeakRss::of_child(child.id())),
            child: Some(child),
        })
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|child| matches!(child.try_wait(), Ok(Some(_))))
    }

    /// Asks it to stop after the batch in flight, as `dqetl process` does on SIGTERM.
    fn stop(&self) {
        let Some(child) = &self.child else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        if let Err(error) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
            tracing::warn!(%error, "stopping the processor process");
        }
    }

    /// Waits for it to exit: its report and its peak memory.
    async fn finish(mut self) -> anyhow::Result<(ProcessorRun, PeakMemory)> {
        let dqetl = self.dqetl.clone();
        let (Some(child), Some(memory)) = (self.child.take(), self.memory.take()) else {
            anyhow::bail!("the processor process was already waited for");
        };
        tokio::task::spawn_blocking(move || {
            let output = child
                .wait_with_output()
                .context("waiting for the processor process")?;
            let peak = memory.finish();
            anyhow::ensure!(
                output.status.success(),
                "the processor process {} failed ({})",
                dqetl.display(),
                output.status
            );
            let run = serde_json::from_slice(&output.stdout)
                .context("reading the processor process's report")?;
            Ok((run, peak))
        })
        .await
        .context("waiting for the processor process")?
    }
}

impl Drop for ProcessorProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(memory) = self.memory.take() {
            memory.finish();
        }
    }
}

async fn latency(
    opts: &BenchOptions,
    base: &ConfigSpec,
    bootstrap: &str,
    lake_dir: &Path,
) -> anyhow::Result<LatencyResult> {
    let topic = format!("bench-latency-{:08x}", rand::random::<u32>());
    create_topics(bootstrap, &[(&topic, opts.partitions)])
        .await
        .context("creating the topic")?;
    let spec = with_topic(base, &topic);
    let group = format!("bench-{:08x}", rand::random::<u32>());
    let layout = LakeLayout::local(lake_dir);
    let mut processor = ProcessorProcess::start(
        &opts.dqetl,
        &ProcessorArgs {
            topic: topic.clone(),
            bootstrap: bootstrap.to_string(),
            group: group.clone(),
            lake: lake_dir.to_path_buf(),
            max_batch_records: opts.max_batch_records,
            follow: Some(opts.trigger_interval),
            consumer_options: opts.consumer_options.clone(),
        },
    )?;
    // The group assignment takes a moment; latency counts from the first produced record.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let count = (opts.rate as f64 * opts.latency_duration.as_secs_f64()) as usize;
    tracing::info!(
        rate = opts.rate,
        count,
        "producing at a fixed rate for the latency run"
    );
    let mut workload = Workload::new(Mix::InsertHeavy, count, 11);
    let produced = produce(
        bootstrap,
        &topic,
        table(&spec),
        &mut workload,
        count,
        Some(opts.rate),
    )
    .await?;

    // Wait until every produced record is applied everywhere, then stop.
    let lake = Lake::new(layout, Default::default());
    let partitions: Vec<(String, i32)> =
        produced.ends.keys().map(|p| (topic.clone(), *p)).collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let resume = lake
            .resume_offsets(&table(&spec).name, &group, &partitions)
            .await?;
        let done = produced
            .ends
            .iter()
            .all(|(p, end)| resume.get(&(topic.clone(), *p)).is_some_and(|r| *r > *end));
        if done {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the processor did not catch up within 10 minutes"
        );
        if processor.exited() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    processor.stop();
    let (run, peak) = processor.finish().await?;
    Ok(LatencyResult {
        rate: opts.rate,
        trigger_interval_ms: opts.trigger_interval.as_millis(),
        records: run.latency.records,
        p50_ms: run.latency.p50_ms,
        p99_ms: run.latency.p99_ms,
        max_ms: run.latency.max_ms,
        achieved_rate: count as f64 / produced.seconds,
        peak,
    })
}

fn process_options(
    bootstrap: &str,
    group: &str,
    spec: &ConfigSpec,
    once: bool,
    trigger_interval: Duration,
) -> ProcessOptions {
    ProcessOptions {
        kafka: KafkaConnection {
            bootstrap_servers: bootstrap.to_string(),
            ..KafkaConnection::default()
        },
        group: group.to_string(),
        tables: Vec::new(),
        once,
        partitions: Partitions::Group,
        trigger_interval,
        max_batch_records: spec.settings.max_batch_records as usize,
        max_batch_bytes: spec.settings.max_batch_bytes as usize,
        consumer_options: spec.kafka.consumer_options.clone(),
        maintenance: Maintenance::from_settings(&spec.settings),
        on_data_loss: spec.kafka.on_data_loss,
    }
}

struct Produced {
    seconds: f64,
    /// The last offset written per partition.
    ends: BTreeMap<i32, i64>,
}

/// Produces `count` changes, keyed by primary key; paced to `rate` per second when given.
async fn produce(
    bootstrap: &str,
    topic: &str,
    table: &TableSpec,
    workload: &mut Workload,
    count: usize,
    rate: Option<u32>,
) -> anyhow::Result<Produced> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "120000")
        .create()
        .context("creating the producer")?;
    let started = Instant::now();
    let mut pending = VecDeque::new();
    let mut ends = BTreeMap::new();
    for n in 0..count {
        if let Some(rate) = rate
            && n % 100 == 0
        {
            let due = started + Duration::from_secs_f64(n as f64 / f64::from(rate.max(1)));
            tokio::time::sleep_until(due.into()).await;
        }
        let (key, payload) = workload.next(table);
        loop {
            let record = FutureRecord::to(topic).key(&key).payload(&payload);
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push_back(delivery);
                    break;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => match pending.pop_front() {
                    Some(oldest) => delivered(oldest, &mut ends).await?,
                    None => tokio::time::sleep(Duration::from_millis(10)).await,
                },
                Err((error, _)) => return Err(error).context("producing"),
            }
        }
        if pending.len() >= 100_000
            && let Some(oldest) = pending.pop_front()
        {
            delivered(oldest, &mut ends).await?;
        }
    }
    while let Some(delivery) = pending.pop_front() {
        delivered(delivery, &mut ends).await?;
    }
    Ok(Produced {
        seconds: started.elapsed().as_secs_f64(),
        ends,
    })
}

async fn delivered(
    delivery: rdkafka::producer::DeliveryFuture,
    ends: &mut BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    match delivery.await {
        Ok(Ok(d)) => {
            let end = ends.entry(d.partition).or_insert(d.offset);
            *end = (*end).max(d.offset);
            Ok(())
        }
        Ok(Err((error, _))) => Err(error).context("a message was not delivered"),
        Err(_) => anyhow::bail!("the producer dropped a delivery"),
    }
}

/// Reads `count` records of the topic with rdkafka alone; returns the seconds it took.
async fn raw_consume(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    count: usize,
    consumer_options: &[(String, String)],
) -> anyhow::Result<f64> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("bench-raw-{:08x}", rand::random::<u32>()),
        )
        .set("enable.auto.commit", "false");
    super::consumer::fetch_settings(&mut cfg, consumer_options);
    let consumer: StreamConsumer = cfg.create().context("creating the consumer")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    let started = Instant::now();
    consumer.assign(&tpl)?;
    let mut received = 0;
    while received < count {
        match tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await {
            Ok(Ok(_)) => received += 1,
            Ok(Err(error)) => tracing::warn!(%error, "raw consume"),
            Err(_) => anyhow::bail!("raw consume stalled at {received} of {count} records"),
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn count_rows(lake_dir: &Path, spec: &ConfigSpec) -> anyhow::Result<usize> {
    let query = crate::query::local::LocalQuery::open(&LakeLayout::local(lake_dir), spec).await?;
    let sql = format!("SELECT count(*) AS n FROM {}", table(spec).name);
    let batches = query.query(&sql).await?;
    let n = batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<deltalake::arrow::array::Int64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0);
    Ok(n as usize)
}

/// Peak memory of a phase, in MiB: the kernel's resident peak (`VmHWM`), and the peaks of its
/// two parts as sampled every 10 ms: anonymous memory (the heap: what the work holds) and
/// file-backed pages (mostly the binary's code, shared and reclaimable). `None` when not
/// measurable here.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PeakMemory {
    pub rss_mib: Option<f64>,
    pub anon_mib: Option<f64>,
    pub file_mib: Option<f64>,
}

impl fmt::Display for PeakMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(rss) = self.rss_mib else {
            return f.write_str("-");
        };
        write!(f, "{rss:.0} MiB")?;
        if let (Some(anon), Some(file)) = (self.anon_mib, self.file_mib) {
            write!(f, " (heap {anon:.0}, code and files {file:.0})")?;
        }
        Ok(())
    }
}

/// Peak memory of a process: this one from a starting point on, or a child over its life.
struct PeakRss {
    watched: Watched,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<Sampled>>,
}

enum Watched {
    /// This process; `reset` tells whether its `VmHWM` was reset at the start.
    This { reset: bool },
    /// A child process, whose `VmHWM` is sampled until it exits (it is gone afterwards).
    Child,
}

/// The largest values sampled, in KiB.
#[derive(Debug, Default, Clone, Copy)]
struct Sampled {
    anon: u64,
    file: u64,
    hwm: u64,
}

impl PeakRss {
    /// Resets the kernel's peak counter (`5` to `/proc/self/clear_refs`, Linux ≥ 4.0), after
    /// handing the heap that earlier phases freed back to the system: glibc keeps it otherwise,
    /// and the reset peak would start from it. Starts the sampler of the two parts.
    fn start() -> PeakRss {
        // SAFETY: malloc_trim only releases free heap pages; it takes no pointers.
        unsafe {
            nix::libc::malloc_trim(0);
        }
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        PeakRss::sample("/proc/self/status".into(), Watched::This { reset })
    }

    /// Samples child process `pid` until it exits.
    fn of_child(pid: u32) -> PeakRss {
        PeakRss::sample(format!("/proc/{pid}/status").into(), Watched::Child)
    }

    /// Starts sampling `status` (a `/proc/<pid>/status` file) every 10 ms.
    fn sample(status: PathBuf, watched: Watched) -> PeakRss {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let sampler = std::thread::Builder::new()
            .name("bench-rss".into())
            .spawn(move || {
                let mut peak = Sampled::default();
                while !stopped.load(Ordering::Relaxed) {
                    if let Some(now) = read_status(&status) {
                        peak.anon = peak.anon.max(now.anon);
                        peak.file = peak.file.max(now.file);
                        peak.hwm = peak.hwm.max(now.hwm);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                peak
            })
            .ok();
        PeakRss {
            watched,
            stop,
            sampler,
        }
    }

    /// The peaks since [`PeakRss::start`], or over the child's life. `VmHWM` of this process is
    /// left out when it could not be reset (it would then include earlier phases).
    fn finish(self) -> PeakMemory {
        self.stop.store(true, Ordering::Relaxed);
        let sampled = self
            .sampler
            .and_then(|s| s.join().ok())
            .filter(|s| s.anon > 0);
        let mib = |kib: u64| kib as f64 / 1024.0;
        let hwm = match self.watched {
            Watched::This { reset } => reset
                .then(|| read_status(Path::new("/proc/self/status")))
                .flatten()
                .map(|now| now.hwm),
            Watched::Child => sampled.map(|s| s.hwm),
        };
        PeakMemory {
            rss_mib: hwm.filter(|&kib| kib > 0).map(mib),
            anon_mib: sampled.map(|s| mib(s.anon)),
            file_mib: sampled.map(|s| mib(s.file)),
        }
    }
}

/// Resident anonymous and file-backed memory and the resident peak now, in KiB.
fn read_status(path: &Path) -> Option<Sampled> {
    let status = std::fs::read_to_string(path).ok()?;
    Some(Sampled {
        anon: status_field(&status, "RssAnon:")?,
        file: status_field(&status, "RssFile:")?,
        hwm: status_field(&status, "VmHWM:")?,
    })
}

/// A `/proc/<pid>/status` field in KiB.
fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
    }
}

fn start_broker(dir: &Path, storage: BrokerStorage) -> anyhow::Result<Broker> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let port = crate::target::local::ports::free_port().context("finding a free port")?;
    let options = BrokerOptions {
        spawn: SpawnOptions {
            die_with_parent: Some(nix::sys::signal::Signal::SIGKILL),
            ..SpawnOptions::default()
        },
        log_file: Some(dir.join("tansu.log")),
        ready_timeout: Duration::from_secs(60),
    };
    let storage = match storage {
        BrokerStorage::Sqlite => Storage::Sqlite("bench.db".into()),
        BrokerStorage::Memory => Storage::Memory,
    };
    Broker::start_with(dir, port, storage, &options)
        .context("starting a tansu broker for the benchmark")
}

/// A temporary folder for the broker and the lakes, removed at the end.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn new() -> anyhow::Result<WorkDir> {
        let path = std::env::temp_dir().join(format!(
            "dqetl-bench-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = |v: f64| format!("{} events/s", thousands(v));
        writeln!(f, "dqetl bench process ({} build)", self.build)?;
        if self.build == "debug" {
            writeln!(
                f,
                "  a DEBUG build: unoptimized, figures are far below a release build's"
            )?;
        }
        writeln!(
            f,
            "machine: {} cores, {}",
            self.machine.cores, self.machine.cpu
        )?;
        writeln!(
            f,
            "workload: vehicle_telemetry DMS messages, {} per mix, {} partitions, broker {}",
            self.messages, self.partitions, self.broker
        )?;
        if !self.consumer_options.is_empty() {
            let options: Vec<String> = self
                .consumer_options
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            writeln!(f, "consumer options: {}", options.join(", "))?;
        }
        writeln!(f)?;
        writeln!(f, "| measurement | mix | result | peak RSS |")?;
        writeln!(f, "|---|---|---|---|")?;
        writeln!(
            f,
            "| pure core: decode, rules, transforms, metrics (1 thread, {} per batch) | insert-heavy | {} per core (median of {} passes, slowest {}; median batch {}) | {} |",
            self.core.batch,
            rate(self.core.events_per_second),
            self.core.passes,
            rate(
                self.core
                    .pass_events_per_second
                    .first()
                    .copied()
                    .unwrap_or_default()
            ),
            rate(self.core.median_batch_events_per_second),
            self.core.peak
        )?;
        for m in &self.mixes {
            writeln!(
                f,
                "| produce (rdkafka → broker) | {} | {} | |",
                m.mix,
                rate(m.produce_per_second)
            )?;
            writeln!(
                f,
                "| raw consume (rdkafka alone) | {} | {} | |",
                m.mix,
                rate(m.raw_consume_per_second)
            )?;
            writeln!(
                f,
                "| end to end Kafka → Delta, SCD2 (`--once`, {} batches, {} versions, {} quarantined) | {} | {} = {:.0}% of raw consume | {} |",
                m.batches,
                m.data_versions,
                m.quarantined,
                m.mix,
                rate(m.end_to_end_per_second),
                m.ratio_to_raw_consume * 100.0,
                m.peak
            )?;
        }
        let l = &self.latency;
        let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
        writeln!(
            f,
            "| produce → committed latency at {} events/s (achieved {}), trigger {} ms, {} records | insert-heavy | p50 {}, p99 {}, max {} | {} |",
            l.rate,
            thousands(l.achieved_rate),
            l.trigger_interval_ms,
            l.records,
            ms(l.p50_ms),
            ms(l.p99_ms),
            ms(l.max_ms),
            l.peak
        )
    }
}

/// 1234567.8 → "1,234,568".
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(0.2), "0");
    }

    #[test]
    fn the_append_only_mix_inserts_ever_growing_keys() {
        let spec = telemetry_config(None).unwrap_or_else(|e| panic!("{e:#}"));
        let mut w = Workload::new(Mix::AppendOnly, 1_000, 5);
        let changes: Vec<(String, i64)> = (0..1_000)
            .map(|_| {
                let (_, payload) = w.next(table(&spec));
                let v: Value = serde_json::from_slice(&payload).unwrap_or_default();
                let operation = v["metadata"]["operation"].as_str().unwrap_or_default();
                (
                    operation.to_string(),
                    v["data"]["id"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        assert!(changes.iter().all(|(o, _)| o == "insert"), "{changes:?}");
        assert!(
            changes.windows(2).all(|w| w[0].1 < w[1].1),
            "keys grow: {changes:?}"
        );
    }

    #[test]
    fn the_update_heavy_mix_fills_its_key_space_then_mostly_updates() {
        let spec = telemetry_config(None).unwrap_or_else(|e| panic!("{e:#}"));
        let mut w = Workload::new(Mix::UpdateHeavy, 10_000, 3);
        let ops: Vec<String> = (0..10_000)
            .map(|_| {
                let (_, payload) = w.next(table(&spec));
                let v: Value = serde_json::from_slice(&payload).unwrap_or_default();
                v["metadata"]["operation"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert!(
            ops[..200].iter().all(|o| o == "insert"),
            "the key space of 200 is loaded first"
        );
        let updates = ops.iter().filter(|o| *o == "update").count();
        assert!(updates > 9_000, "{updates} updates");
    }
}
