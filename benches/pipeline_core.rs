//! Throughput of the pure core on vehicle-telemetry-shaped DMS messages: decode, rules,
//! transforms, SCD2 selection and metrics of one micro-batch, in events per second.
//!
//! `cargo bench --bench pipeline_core` (optimized), or `cargo test --bench pipeline_core` for a
//! quick unoptimized run. Arguments: `[batch_size] [batches]` (default 10000 20).

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use dqetl::cdc::decode::{RawMessage, decode};
use dqetl::cdc::encode::encode;
use dqetl::config::spec::{
    ColumnSpec, ColumnType, MetricCheckSpec, MetricKind, RuleKind, RuleSpec, Scd2Spec, Severity,
    TableSpec, TransformKind, TransformSpec,
};
use dqetl::pipeline::plan::Operation;
use dqetl::pipeline::{TableMetricState, plan};
use serde_json::{Map, Value, json};

/// The allocator and settings of the `dqetl` binary, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: dqetl::allocator::MallocConf = dqetl::allocator::MALLOC_CONF;

fn column(name: &str, column_type: ColumnType) -> ColumnSpec {
    ColumnSpec {
        name: name.into(),
        column_type,
        nullable: true,
        unique: false,
        default: None,
    }
}

fn rule(id: &str, column: &str, kind: RuleKind) -> RuleSpec {
    RuleSpec {
        id: id.into(),
        column: column.into(),
        kind,
        severity: Severity::Error,
        allow_null: false,
    }
}

fn check(kind: MetricKind, column: Option<&str>, threshold: f64) -> MetricCheckSpec {
    MetricCheckSpec {
        kind,
        column: column.map(str::to_owned),
        threshold: Some(threshold),
        severity: Severity::Warning,
    }
}

/// The original's vehicle_telemetry table, as `config/tables.yaml` declares it.
fn telemetry() -> TableSpec {
    let columns = [
        ("id", ColumnType::Int),
        ("vehicle_id", ColumnType::Int),
        ("recorded_at", ColumnType::String),
        ("latitude", ColumnType::Double),
        ("longitude", ColumnType::Double),
        ("speed_kmh", ColumnType::Double),
        ("fuel_level_pct", ColumnType::Double),
        ("engine_temp_c", ColumnType::Double),
        ("odometer_km", ColumnType::Double),
        ("engine_status", ColumnType::String),
        ("harsh_braking", ColumnType::String),
        ("harsh_acceleration", ColumnType::String),
        ("created_at", ColumnType::String),
    ];
    TableSpec {
        name: "vehicle_telemetry".into(),
        topic: "cdc-vehicle_telemetry".into(),
        delta_path: None,
        primary_key: Some("id".into()),
        internal: false,
        columns: columns.iter().map(|(n, t)| column(n, *t)).collect(),
        rules: vec![
            rule(
                "tel_001",
                "latitude",
                RuleKind::Range {
                    min: Some(-90.0),
                    max: Some(90.0),
                },
            ),
            rule(
                "tel_002",
                "longitude",
                RuleKind::Range {
                    min: Some(-180.0),
                    max: Some(180.0),
                },
            ),
            rule(
                "tel_003",
                "speed_kmh",
                RuleKind::Range {
                    min: Some(0.0),
                    max: Some(350.0),
                },
            ),
            rule(
                "tel_004",
                "fuel_level_pct",
                RuleKind::Range {
                    min: Some(0.0),
                    max: Some(120.0),
                },
            ),
            rule("tel_005", "vehicle_id", RuleKind::NotNull),
        ],
        transforms: vec![
            TransformSpec {
                id: "tel_tx_001".into(),
                column: "latitude".into(),
                kind: TransformKind::Round { decimals: 5 },
                order: 1,
            },
            TransformSpec {
                id: "tel_tx_002".into(),
                column: "longitude".into(),
                kind: TransformKind::Round { decimals: 5 },
                order: 2,
            },
        ],
        checks: vec![
            check(MetricKind::Completeness, Some("vehicle_id"), 0.95),
            check(MetricKind::Completeness, Some("latitude"), 0.90),
            check(MetricKind::Uniqueness, Some("id"), 1.0),
            check(MetricKind::Size, None, 1.0),
        ],
        anomaly_checks: Vec::new(),
        foreign_keys: Vec::new(),
        indexes: Vec::new(),
        scd2: Scd2Spec::default(),
        mask_pii_in_quarantine: true,
    }
}

/// Realistic rows, 2% of them out of range (quarantined), as the data generator sends them.
fn messages(table: &TableSpec, count: usize, first_id: usize) -> Vec<Vec<u8>> {
    let commit = Utc
        .timestamp_opt(1_795_615_200, 0)
        .single()
        .unwrap_or_default();
    (0..count)
        .map(|i| {
            let id = first_id + i;
            let bad = i % 50 == 0;
            let row = json!({
                "id": id,
                "vehicle_id": 1 + id % 40,
                "recorded_at": "2026-11-25 14:00:00.123456",
                "latitude": if bad { 123.4 } else { 40.0 + (id % 1000) as f64 * 0.001_234_5 },
                "longitude": -74.0 - (id % 777) as f64 * 0.000_987_6,
                "speed_kmh": (id % 120) as f64 + 0.5,
                "fuel_level_pct": (id % 100) as f64,
                "engine_temp_c": 90.25,
                "odometer_km": 12_345.6 + id as f64,
                "engine_status": "running",
                "harsh_braking": "false",
                "harsh_acceleration": "false",
                "created_at": null,
            });
            let row: Map<String, Value> = match row {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            encode(
                table,
                "public",
                Operation::Insert,
                row,
                commit,
                Some(id as u64),
            )
        })
        .collect()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let batch_size = args.first().copied().unwrap_or(10_000);
    let batches = args.get(1).copied().unwrap_or(20);
    let table = telemetry();
    let payloads: Vec<Vec<Vec<u8>>> = (0..batches)
        .map(|b| messages(&table, batch_size, b * batch_size))
        .collect();
    let bytes: usize = payloads.iter().flatten().map(Vec::len).sum();
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
        let raw: Vec<RawMessage> = batch
            .iter()
            .enumerate()
            .map(|(i, p)| RawMessage {
                topic: &table.topic,
                partition: (i % 3) as i32,
                offset: (b * batch_size + i) as i64,
                key: None,
                payload: Some(p),
            })
            .collect();
        let started = Instant::now();
        let decoded = decode(&table, &raw);
        decode_times.push(started.elapsed());
        let started = Instant::now();
        match plan(&table, &decoded, &state, now) {
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
