//! Crash safety of the `dqetl process` binary: 50k+ messages over 3 partitions, the processor
//! killed with SIGKILL at random moments (seeded) and restarted each time, then drained with
//! `--once`. The lake must equal the lake of one uninterrupted run: no row lost, none twice.
//!
//! History is kept with `track_intermediate`, so the lake does not depend on where micro-batches
//! happen to start and end: any difference is a lost or repeated event.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use dqetl::pipeline::plan::Operation;

use crate::process_scenarios::{
    Event, Flow, Message, SqliteBroker, delete, insert, produce, rows, update,
};

const TELEMETRY: &str = r#"
settings:
  trigger_interval: "1 second"
  max_batch_records: 2000
tables:
  - name: telemetry
    topic: {topic}
    primary_key: id
    schema:
      - {name: id, type: integer, nullable: false}
      - {name: vehicle_id, type: integer}
      - {name: speed, type: double}
      - {name: status, type: string}
    dq_rules:
      - {id: speed_range, type: range, column: speed, params: {min: 0, max: 300}}
    transforms:
      - {id: status_upper, type: upper, column: status, order: 1}
    scd2: {track_intermediate: true}
    # Enough distinct values that the cumulative metric state is saved as parts, not inline.
    deequ_checks:
      - {metric: uniqueness, column: id, threshold: 0.0, severity: warning}
      - {metric: uniqueness, column: speed, threshold: 0.0, severity: warning}
"#;

const MESSAGES: usize = 50_000;
const KEYS: i64 = 4_000;
const KILLS: usize = 10;
/// The whole test should stay within a few minutes in a debug build; every wait is bounded.
const DRAIN_LIMIT: Duration = Duration::from_secs(240);

/// The workload: per key an insert, then updates, deletes and re-inserts; ~2% of messages are
/// undecodable and ~3% fail the speed rule. Returns the messages and how many must be quarantined.
fn workload(flow: &Flow, rng: &mut SmallRng, count: usize) -> (Vec<Message>, usize) {
    let base: DateTime<Utc> = "2026-03-01T00:00:00Z"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let statuses = ["moving", "idle", "parked", "service"];
    let mut alive = vec![false; KEYS as usize + 1];
    let mut messages = Vec::with_capacity(count);
    let mut bad = 0;
    for i in 0..count {
        let key = rng.random_range(1..=KEYS);
        let when = (base + chrono::Duration::milliseconds(i as i64 * 10)).to_rfc3339();
        let roll: f64 = rng.random();
        if roll < 0.02 {
            bad += 1;
            let text = if rng.random_bool(0.5) {
                "{\"data\": {\"id\": "
            } else {
                "garbage"
            };
            messages.push(Message::raw(&key.to_string(), text));
            continue;
        }
        let event = if !alive[key as usize] {
            insert(Value::Null, &when)
        } else if rng.random_bool(0.1) {
            delete(json!({"id": key}), &when)
        } else {
            update(Value::Null, &when)
        };
        let event = match event.op {
            Operation::Delete => {
                alive[key as usize] = false;
                event
            }
            _ => {
                // Deletes bypass the rules; an upsert may fail the speed rule, and then it does
                // not change the key's state.
                let speed = if roll < 0.05 {
                    bad += 1;
                    -1.0 - rng.random_range(0..50) as f64
                } else {
                    alive[key as usize] = true;
                    rng.random_range(0..2000) as f64 / 10.0
                };
                let row = json!({
                    "id": key,
                    "vehicle_id": key % 97,
                    "speed": speed,
                    "status": statuses[rng.random_range(0..statuses.len())],
                });
                Event { row, ..event }
            }
        };
        messages.push(flow.message(&event));
    }
    (messages, bad)
}

/// The test's folder, kept for inspection when `DQETL_KEEP_TEST_DIRS` is set.
struct Kept {
    _removed_on_drop: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Kept {
    fn new(dir: tempfile::TempDir) -> Kept {
        let path = dir.path().to_path_buf();
        if std::env::var_os("DQETL_KEEP_TEST_DIRS").is_some() {
            Kept {
                _removed_on_drop: None,
                path: dir.keep(),
            }
        } else {
            Kept {
                _removed_on_drop: Some(dir),
                path,
            }
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

fn config_file(dir: &Path, flow: &Flow) -> PathBuf {
    let path = dir.join("tables.yaml");
    std::fs::write(&path, TELEMETRY.replace("{topic}", &flow.topic))
        .unwrap_or_else(|e| panic!("writing the config: {e}"));
    path
}

/// Starts `dqetl process` on `lake` with the flow's group, logging to `log`, with `extra`
/// arguments.
#[allow(clippy::too_many_arguments)]
fn spawn(
    bootstrap: &str,
    config: &Path,
    lake: &Path,
    group: &str,
    log: &Path,
    once: bool,
    trigger_interval: &str,
    extra: &[&str],
) -> Child {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("log file: {e}"));
    let err = log_file
        .try_clone()
        .unwrap_or_else(|e| panic!("log file: {e}"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_dqetl"));
    command
        .arg("--config")
        .arg(config)
        .args(["process", "--bootstrap", bootstrap, "--group", group])
        .arg("--lake")
        .arg(lake)
        .args(["--trigger-interval", trigger_interval])
        // The default log filter, as a user gets it.
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err);
    if once {
        command.arg("--once");
    }
    command.args(extra);
    command
        .spawn()
        .unwrap_or_else(|e| panic!("starting dqetl process: {e}"))
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Waits for the child to exit within `limit`; kills it and fails otherwise.
fn wait_success(mut child: Child, limit: Duration, log: &Path) {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                assert!(
                    status.success(),
                    "dqetl process failed ({status}):\n{}",
                    tail(log)
                );
                return;
            }
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "dqetl process did not finish within {limit:?}:\n{}",
                    tail(log)
                );
            }
            Err(e) => panic!("waiting for dqetl process: {e}"),
        }
    }
}

/// Every data version and quarantine row, sorted, without the processing-time columns.
async fn lake_content(flow: &Flow, lake: &Path) -> (Vec<Value>, Vec<Value>) {
    let layout = dqetl::config::layout::LakeLayout::local(lake);
    let data = rows(
        &layout,
        &flow.config,
        "SELECT id, vehicle_id, speed, status, _operation, _effective_from, _effective_to, _is_current \
         FROM telemetry ORDER BY id, _effective_from, _effective_to NULLS LAST, _operation",
    )
    .await;
    let quarantine = rows(
        &layout,
        &flow.config,
        "SELECT id, vehicle_id, speed, status, _failed_rules, _dq_reason, _operation, _raw, _topic, _partition, _offset \
         FROM telemetry_quarantine ORDER BY _partition, _offset",
    )
    .await;
    (data, quarantine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_processor_at_random_moments_loses_and_repeats_nothing() {
    // The shared test broker's memory storage loses records when a consumer resumes inside a
    // record batch, which every restart here does; SQLite storage (the local target's) does not.
    let broker = SqliteBroker::start();
    let flow = Flow::on(&broker.bootstrap(), TELEMETRY, 3).await;
    let mut rng = SmallRng::seed_from_u64(0x5eed_c4a5);
    let (messages, bad) = workload(&flow, &mut rng, MESSAGES);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    if std::env::var_os("DQETL_KEEP_TEST_DIRS").is_some() {
        eprintln!("crash test: keeping {}", dir.path().display());
    }
    let dir = Kept::new(dir);
    let config = config_file(dir.path(), &flow);
    let log = dir.path().join("process.log");
    let crashed_lake = dir.path().join("crashed");

    // The messages arrive over several seconds while the processor is killed again and again:
    // first a group member (a fresh group is assigned at once), then `--all-partitions` runs (a
    // SIGKILLed member keeps its partitions until its session times out, 30 s, which would only
    // add waiting; the recovery path is the same: positions come from the lake). They never exit
    // on their own, so every cycle ends in a kill, wherever the run is.
    let producing = {
        let (bootstrap, topic) = (flow.bootstrap.clone(), flow.topic.clone());
        tokio::spawn(async move {
            let mut produced = 0;
            for chunk in messages.chunks(2_500) {
                produced += produce(&bootstrap, &topic, chunk).await.len();
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            produced
        })
    };
    let started = Instant::now();
    let (mut kills, mut cycles) = (0, 0);
    while kills < KILLS || !producing.is_finished() {
        assert!(cycles < 80, "too many cycles: {kills} kills in {cycles}");
        let restart: &[&str] = if cycles > 0 {
            &["--all-partitions"]
        } else {
            &[]
        };
        let mut child = spawn(
            &flow.bootstrap,
            &config,
            &crashed_lake,
            &flow.group,
            &log,
            false,
            "300ms",
            restart,
        );
        cycles += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(800..3_000))).await;
        match child.try_wait() {
            Ok(Some(status)) => panic!(
                "dqetl process exited on its own ({status}):\n{}",
                tail(&log)
            ),
            _ => {
                child.kill().unwrap_or_else(|e| panic!("kill -9: {e}"));
                let _ = child.wait();
                kills += 1;
            }
        }
    }
    let produced = tokio::time::timeout(Duration::from_secs(120), producing)
        .await
        .unwrap_or_else(|_| panic!("producing did not finish"))
        .unwrap_or_else(|e| panic!("producer task: {e}"));
    assert_eq!(produced, MESSAGES);
    let crash_phase = started.elapsed();
    wait_success(
        spawn(
            &flow.bootstrap,
            &config,
            &crashed_lake,
            &flow.group,
            &log,
            true,
            "300ms",
            &[],
        ),
        DRAIN_LIMIT,
        &log,
    );

    // The reference: one uninterrupted run over the same topic, into another lake.
    let reference_lake = dir.path().join("reference");
    let reference_log = dir.path().join("reference.log");
    wait_success(
        spawn(
            &flow.bootstrap,
            &config,
            &reference_lake,
            &format!("{}-reference", flow.group),
            &reference_log,
            true,
            "300ms",
            &[],
        ),
        DRAIN_LIMIT,
        &reference_log,
    );

    let (data, quarantine) = lake_content(&flow, &crashed_lake).await;
    let (reference_data, reference_quarantine) = lake_content(&flow, &reference_lake).await;
    let mut positions: Vec<(i64, i64)> = quarantine
        .iter()
        .map(|r| {
            (
                r["_partition"].as_i64().unwrap_or(-1),
                r["_offset"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    positions.dedup();
    assert_eq!(
        positions.len(),
        quarantine.len(),
        "no message quarantined twice"
    );
    assert_eq!(
        quarantine.len(),
        bad,
        "every bad message quarantined exactly once"
    );
    assert_eq!(reference_quarantine.len(), bad);
    assert!(
        data.len() > KEYS as usize,
        "history was written: {} versions",
        data.len()
    );
    assert_eq!(
        data.len(),
        reference_data.len(),
        "data versions after {KILLS} kills"
    );
    assert!(data == reference_data, "the data tables differ");
    assert!(
        quarantine == reference_quarantine,
        "the quarantine tables differ"
    );
    crate::process_scenarios::assert_invariants(
        &dqetl::config::layout::LakeLayout::local(&crashed_lake),
        &flow.config,
        flow.table(),
    )
    .await;
    let state_dir = dqetl::config::layout::LakeLayout::local(&crashed_lake).state_dir();
    let parts = std::fs::read_dir(&state_dir)
        .unwrap_or_else(|e| panic!("{state_dir}: {e}"))
        .filter_map(|e| e.ok())
        .filter(|e| {
            // stream-<table>-<group>-<writer>-<n>.json; the blob is stream-<table>-<group>.json.
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("stream-") && name.matches('-').count() == 4
        })
        .count();
    assert!(
        parts > 0,
        "the metric state was saved as parts across the kills"
    );
    eprintln!(
        "crash test: {MESSAGES} messages, {kills} kills in {cycles} runs ({crash_phase:?}), {} versions, {bad} quarantined, {parts} state parts",
        data.len()
    );
}

/// Waits until the log holds `text`.
fn wait_for_log(log: &Path, text: &str, limit: Duration) {
    let started = Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(text)
    {
        assert!(
            started.elapsed() < limit,
            "no {text:?} in the log within {limit:?}:\n{}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_applies_the_batch_in_flight_before_exiting() {
    a_stop_signal_applies_the_batch_in_flight_before_exiting(nix::sys::signal::Signal::SIGTERM)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_applies_the_batch_in_flight_before_exiting() {
    a_stop_signal_applies_the_batch_in_flight_before_exiting(nix::sys::signal::Signal::SIGINT)
        .await;
}

async fn a_stop_signal_applies_the_batch_in_flight_before_exiting(
    signal: nix::sys::signal::Signal,
) {
    let broker = SqliteBroker::start();
    let flow = Flow::on(&broker.bootstrap(), TELEMETRY, 3).await;
    let dir = Kept::new(tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}")));
    let config = config_file(dir.path(), &flow);
    let (lake, log) = (dir.path().join("lake"), dir.path().join("process.log"));
    // A long trigger interval: what arrives stays in the batch being collected.
    let child = spawn(
        &flow.bootstrap,
        &config,
        &lake,
        &flow.group,
        &log,
        false,
        "120s",
        &[],
    );
    wait_for_log(&log, "partitions assigned", Duration::from_secs(90));
    let mut rng = SmallRng::seed_from_u64(11);
    let (messages, bad) = workload(&flow, &mut rng, 500);
    produce(&flow.bootstrap, &flow.topic, &messages).await;
    // Time to fetch them into the batch; nothing may be applied before the interval ends.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let layout = dqetl::config::layout::LakeLayout::local(&lake);
    let lake_handle = dqetl::sink::Lake::new(layout.clone(), Default::default());
    let data_table = dqetl::sink::LakeTable::Data("telemetry".into());
    assert_eq!(
        lake_handle.table_version(&data_table).await.ok().flatten(),
        None,
        "the batch is still in flight"
    );

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("{signal}: {e}"));
    wait_success(child, Duration::from_secs(90), &log);

    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("stop requested; the batch in flight was applied"),
        "{}",
        tail(&log)
    );
    assert!(
        text.contains("processed 500 records in 1 micro-batches"),
        "{}",
        tail(&log)
    );
    // One line of its own per table and batch, not delta-rs's per commit and snapshot load.
    assert!(text.contains("batch applied"), "{}", tail(&log));
    assert!(
        !text.contains("transaction committed successfully"),
        "delta-rs commit logs at the default level:\n{}",
        tail(&log)
    );
    let (_, quarantine) = lake_content(&flow, &lake).await;
    assert_eq!(
        quarantine.len(),
        bad,
        "the batch's bad messages are in quarantine"
    );
    let data = rows(&layout, &flow.config, "SELECT count(*) AS n FROM telemetry").await;
    assert!(
        data[0]["n"].as_i64().unwrap_or(0) > 0,
        "the batch's rows are in the lake"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_stopped_and_restarted_mid_run_costs_nothing() {
    use dqetl::stream::{ProcessOptions, Processor};
    let mut broker = SqliteBroker::start();
    let flow = Flow::on(&broker.bootstrap(), TELEMETRY, 3).await;
    let mut rng = SmallRng::seed_from_u64(23);
    let (messages, bad) = workload(&flow, &mut rng, 8_000);
    let (first, second) = messages.split_at(4_000);
    let bad_in_first = first.iter().filter(|m| is_bad(m)).count();
    produce(&flow.bootstrap, &flow.topic, first).await;

    let dir = Kept::new(tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}")));
    let lake_dir = dir.path().join("lake");
    let layout = dqetl::config::layout::LakeLayout::local(&lake_dir);
    let options = ProcessOptions {
        once: false,
        trigger_interval: Duration::from_millis(300),
        ..flow.options()
    };
    let processor = Processor::new(
        &flow.config,
        dqetl::sink::Lake::new(layout.clone(), Default::default()),
        options,
    )
    .await
    .unwrap_or_else(|e| panic!("processor starts: {e:#}"));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(processor.run(stop_rx));
    let quarantined = || async {
        let exists = dqetl::sink::Lake::new(layout.clone(), Default::default())
            .table_version(&dqetl::sink::LakeTable::Quarantine("telemetry".into()))
            .await
            .ok()
            .flatten()
            .is_some();
        if !exists {
            return 0;
        }
        rows(
            &layout,
            &flow.config,
            "SELECT count(*) AS n FROM telemetry_quarantine",
        )
        .await[0]["n"]
            .as_u64()
            .unwrap_or(0) as usize
    };
    let wait_for = |want: usize| async move {
        let started = Instant::now();
        loop {
            let n = quarantined().await;
            if n >= want {
                return n;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "only {n} of {want} quarantined in time"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    wait_for(bad_in_first).await;

    broker.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !running.is_finished(),
        "the processor waits for the broker instead of exiting"
    );
    broker.restart();
    produce(&flow.bootstrap, &flow.topic, second).await;
    assert_eq!(wait_for(bad).await, bad, "no quarantine row twice");

    // The reference: one uninterrupted `--once` run into another lake.
    let reference_dir = dir.path().join("reference");
    let reference = Processor::new(
        &flow.config,
        dqetl::sink::Lake::new(
            dqetl::config::layout::LakeLayout::local(&reference_dir),
            Default::default(),
        ),
        ProcessOptions {
            group: format!("{}-reference", flow.group),
            ..flow.options()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("reference processor: {e:#}"));
    let (_keep, idle) = tokio::sync::watch::channel(false);
    tokio::time::timeout(DRAIN_LIMIT, reference.run(idle))
        .await
        .unwrap_or_else(|_| panic!("the reference run did not finish"))
        .unwrap_or_else(|e| panic!("reference run: {e:#}"));
    let (reference_data, reference_quarantine) = lake_content(&flow, &reference_dir).await;
    let started = Instant::now();
    let data = loop {
        let (data, _) = lake_content(&flow, &lake_dir).await;
        if data.len() >= reference_data.len() || started.elapsed() > Duration::from_secs(120) {
            break data;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = stop.send(true);
    let summary = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .unwrap_or_else(|_| panic!("the processor did not stop"))
        .unwrap_or_else(|e| panic!("processor task: {e}"))
        .unwrap_or_else(|e| panic!("processor failed: {e:#}"));

    let (final_data, quarantine) = lake_content(&flow, &lake_dir).await;
    assert_eq!(
        final_data, data,
        "nothing more was applied after the lake matched"
    );
    assert!(
        data == reference_data,
        "the data equals an uninterrupted run's ({} vs {} versions)",
        data.len(),
        reference_data.len()
    );
    assert!(
        quarantine == reference_quarantine,
        "the quarantine equals an uninterrupted run's"
    );
    let t = summary
        .per_table
        .get("telemetry")
        .cloned()
        .unwrap_or_default();
    assert_eq!(t.events, 8_000, "every message decoded once: {summary:?}");
    assert_eq!(t.offsets_not_delivered, 0, "{summary:?}");
}

/// Whether a workload message is one `workload` counted as bad.
fn is_bad(message: &Message) -> bool {
    let text = String::from_utf8_lossy(message.value.as_deref().unwrap_or_default()).to_string();
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => v["data"]["speed"].as_f64().is_some_and(|s| s < 0.0),
        Err(_) => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_started_before_its_broker_waits_for_it() {
    use dqetl::stream::Processor;
    let mut broker = SqliteBroker::start();
    let flow = Flow::on(&broker.bootstrap(), TELEMETRY, 3).await;
    let mut rng = SmallRng::seed_from_u64(5);
    let (messages, bad) = workload(&flow, &mut rng, 300);
    produce(&flow.bootstrap, &flow.topic, &messages).await;
    broker.stop();

    let processor = Processor::new(
        &flow.config,
        dqetl::sink::Lake::new(flow.layout(), Default::default()),
        flow.options(),
    )
    .await
    .unwrap_or_else(|e| panic!("processor starts: {e:#}"));
    let (_keep, stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(processor.run(stop_rx));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !running.is_finished(),
        "the processor waits for the broker instead of exiting"
    );
    broker.restart();
    let summary = tokio::time::timeout(Duration::from_secs(120), running)
        .await
        .unwrap_or_else(|_| panic!("the processor did not finish after the broker came up"))
        .unwrap_or_else(|e| panic!("processor task: {e}"))
        .unwrap_or_else(|e| panic!("processor failed: {e:#}"));
    let t = summary
        .per_table
        .get("telemetry")
        .cloned()
        .unwrap_or_default();
    assert_eq!((t.events, t.quarantined), (300, bad as u64), "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_reading_every_partition_resumes_at_once_after_sigkill() {
    let broker = SqliteBroker::start();
    let flow = Flow::on(&broker.bootstrap(), TELEMETRY, 3).await;
    let dir = Kept::new(tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}")));
    let config = config_file(dir.path(), &flow);
    let (lake, log) = (dir.path().join("lake"), dir.path().join("process.log"));
    let mut rng = SmallRng::seed_from_u64(31);
    let (messages, bad) = workload(&flow, &mut rng, 2_000);
    let (first, second) = messages.split_at(1_000);
    produce(&flow.bootstrap, &flow.topic, first).await;
    let start = || {
        spawn(
            &flow.bootstrap,
            &config,
            &lake,
            &flow.group,
            &log,
            false,
            "300ms",
            &["--all-partitions"],
        )
    };

    let mut child = Running(Some(start()));
    wait_for_log(&log, "batch applied", Duration::from_secs(90));
    child.kill();
    produce(&flow.bootstrap, &flow.topic, second).await;

    // A group member killed this way would keep its partitions until its session timed out
    // (30 s) and its restart would wait for that; reading every partition itself, it does not.
    let restarted = Instant::now();
    let mut child = Running(Some(start()));
    let layout = dqetl::config::layout::LakeLayout::local(&lake);
    let quarantine = dqetl::sink::LakeTable::Quarantine("telemetry".into());
    loop {
        let exists = dqetl::sink::Lake::new(layout.clone(), Default::default())
            .table_version(&quarantine)
            .await
            .ok()
            .flatten()
            .is_some();
        let quarantined = if exists {
            rows(
                &layout,
                &flow.config,
                "SELECT count(*) AS n FROM telemetry_quarantine",
            )
            .await[0]["n"]
                .as_u64()
                .unwrap_or(0)
        } else {
            0
        };
        if quarantined >= bad as u64 {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "{quarantined} of {bad} bad messages quarantined {:?} after the restart:\n{}",
            restarted.elapsed(),
            tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let child = child
        .0
        .take()
        .unwrap_or_else(|| panic!("the processor runs"));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        .unwrap_or_else(|e| panic!("SIGTERM: {e}"));
    wait_success(child, Duration::from_secs(60), &log);
    let (_, quarantine) = lake_content(&flow, &lake).await;
    assert_eq!(quarantine.len(), bad, "every bad message quarantined once");
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("partitions assigned"),
        "no group membership, no assignment by the group"
    );
}

/// A processor that is killed with SIGKILL when dropped, so a failing test leaves none behind.
struct Running(Option<Child>);

impl Running {
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}
