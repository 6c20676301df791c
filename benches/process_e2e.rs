//! End-to-end benchmark of the streaming processor, the same code as `dqetl bench process`:
//! the pure core, Kafka → Delta throughput for an insert-heavy and an update-heavy mix, the
//! produce-to-commit latency at 10k events/s, and peak RSS, against a temporary tansu broker.
//!
//! `cargo bench --bench process_e2e -- [messages] [latency-seconds]` (default 1000000 and 30);
//! `cargo test --bench process_e2e` runs it unoptimized with a small workload. Needs `tansu`.

use std::time::Duration;

use dqetl::stream::bench::{BenchOptions, BrokerStorage, Mix, run};

/// The allocator and settings of the `dqetl` binary, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: dqetl::allocator::MallocConf = dqetl::allocator::MALLOC_CONF;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --bench` passes nothing: then a smoke run.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let number =
        |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (messages, seconds) = if benchmarking {
        (number(0, 1_000_000), number(1, 30))
    } else {
        (number(0, 5_000), number(1, 3))
    };
    let options = BenchOptions {
        messages: messages as usize,
        mixes: vec![Mix::InsertHeavy, Mix::UpdateHeavy],
        rate: 10_000,
        latency_duration: Duration::from_secs(seconds),
        trigger_interval: Duration::from_secs(1),
        max_batch_records: None,
        bootstrap: std::env::var("DQETL_BENCH_BOOTSTRAP").ok(),
        broker_storage: match std::env::var("DQETL_BENCH_BROKER_STORAGE").as_deref() {
            Ok("memory") => BrokerStorage::Memory,
            _ => BrokerStorage::Sqlite,
        },
        // The end-to-end and latency runs' processor runs as `dqetl bench processor`, in a
        // process of its own.
        dqetl: env!("CARGO_BIN_EXE_dqetl").into(),
        consumer_options: Vec::new(),
        partitions: 3,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(run(&options)) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("benchmark failed: {e:#}");
            std::process::exit(1);
        }
    }
}
