//! Throughput of the pure core on the messages `dqetl bench process` measures it with (the
//! shipped config's `vehicle_telemetry` table, its insert-heavy workload): decode, rules,
//! transforms, SCD2 selection and metrics of one micro-batch, in events per second, with decode
//! and the rest reported apart.
//!
//! `cargo bench --bench pipeline_core` (optimized), or `cargo test --bench pipeline_core` for a
//! quick unoptimized run. Arguments: `[batch_size] [batches]` (default 10000 20).

use std::time::{Duration, Instant};

use chrono::Utc;
use dqetl::cdc::decode::decode;
use dqetl::pipeline::{TableMetricState, plan};
use dqetl::stream::bench::{Mix, Workload, raw_messages, telemetry_config};

/// The allocator and settings of the `dqetl` binary, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: dqetl::allocator::MallocConf = dqetl::allocator::MALLOC_CONF;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let batch_size = args.first().copied().unwrap_or(10_000);
    let batches = args.get(1).copied().unwrap_or(20);
    let spec = match telemetry_config(None) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("loading the shipped config: {e:#}");
            std::process::exit(1);
        }
    };
    let table = &spec.tables[0];
    let mut workload = Workload::new(Mix::InsertHeavy, batch_size * batches, 1);
    let payloads: Vec<Vec<(Vec<u8>, Vec<u8>)>> = (0..batches)
        .map(|_| (0..batch_size).map(|_| workload.next(table)).collect())
        .collect();
    let bytes: usize = payloads
        .iter()
        .flatten()
        .map(|(key, payload)| key.len() + payload.len())
        .sum();
    // A profiler can be attached from here on: the rest is what is measured.
    eprintln!(
        "pipeline_core: {} messages generated (pid {}); measuring",
        batches * batch_size,
        std::process::id()
    );

    let mut state = TableMetricState::default();
    // Per-batch times too: their median shrugs off the bursts of a shared machine.
    let (mut decode_times, mut plan_times) = (Vec::new(), Vec::new());
    let mut loaded = 0;
    let now = Utc::now();
    for (b, batch) in payloads.iter().enumerate() {
        let raw = raw_messages(&table.topic, (b * batch_size) as i64, batch);
        let started = Instant::now();
        let decoded = decode(table, &raw);
        decode_times.push(started.elapsed());
        let started = Instant::now();
        match plan(table, &decoded, &state, now) {
            Ok(plan) => {
                loaded += plan.stats.loaded;
                state.merge(plan.metric_state);
            }
            Err(e) => {
                eprintln!("plan failed: {e}");
                std::process::exit(1);
            }
        }
        plan_times.push(started.elapsed());
    }
    let events = (batch_size * batches) as f64;
    let totals: Vec<Duration> = decode_times
        .iter()
        .zip(&plan_times)
        .map(|(d, p)| *d + *p)
        .collect();
    println!(
        "pipeline_core: {batches} batches × {batch_size} vehicle_telemetry events ({:.1} MiB of DMS JSON)",
        bytes as f64 / 1_048_576.0
    );
    for (name, times) in [
        ("decode", decode_times),
        ("rules→metrics", plan_times),
        ("end to end", totals),
    ] {
        let total: Duration = times.iter().sum();
        println!(
            "  {name:<13}  {:>10.0} events/s  ({:.3} s; median batch {:.0} events/s)",
            events / total.as_secs_f64(),
            total.as_secs_f64(),
            batch_size as f64 / median(times).as_secs_f64()
        );
    }
    println!("  {loaded} loaded");
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times.get(times.len() / 2).copied().unwrap_or_default()
}
