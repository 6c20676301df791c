//! `dqetl process` end to end: DMS messages produced to the tansu broker, the processor run with
//! `once`, the Delta tables read back with `dqetl query`'s engine. One test per semantic point;
//! the SCD2 invariants are checked after every scenario.
//!
//! The harness at the top (a [`Flow`]: one config, one topic, one lake, one consumer group) is
//! shared by the other `process_*` test modules.
#![allow(dead_code)] // Each process_* module uses a part of the harness.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deltalake::arrow::record_batch::RecordBatch;
use dqetl::cdc::encode::encode;
use dqetl::config::layout::LakeLayout;
use dqetl::config::spec::{ConfigSpec, TableSpec};
use dqetl::config::{LoadContext, load::load_str, validate};
use dqetl::pipeline::plan::Operation;
use dqetl::query::local::LocalQuery;
use dqetl::query::render::render_json;
use dqetl::sink::{Lake, LakeTable};
use dqetl::stream::{KafkaConnection, Partitions, ProcessOptions, ProcessSummary, Processor};
use dqetl::target::local::ports::free_port;
use dqetl::target::local::process::SpawnOptions;
use dqetl::target::local::{Broker, BrokerOptions, Storage, create_topics};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::support;

/// How long one `once` run may take before the test fails instead of hanging.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// A config from YAML text; `{topic}` is replaced by `topic`. Panics with every diagnostic.
pub fn config(yaml: &str, topic: &str) -> ConfigSpec {
    let text = yaml.replace("{topic}", topic);
    let ctx = LoadContext {
        stack_name: "it".into(),
        account_id: None,
    };
    let loaded = load_str(&text, "test.yaml", &ctx).unwrap_or_else(|e| panic!("config loads: {e}"));
    let report = validate(&loaded);
    report.spec.unwrap_or_else(|| {
        let errors: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
        panic!("config is valid:\n{}", errors.join("\n"))
    })
}

/// One DMS event of the test table.
#[derive(Debug, Clone)]
pub struct Event {
    pub op: Operation,
    pub row: Value,
    pub at: DateTime<Utc>,
}

pub fn at(text: &str) -> DateTime<Utc> {
    text.parse()
        .unwrap_or_else(|e| panic!("test timestamp {text}: {e}"))
}

pub fn insert(row: Value, when: &str) -> Event {
    Event {
        op: Operation::Insert,
        row,
        at: at(when),
    }
}

pub fn update(row: Value, when: &str) -> Event {
    Event {
        op: Operation::Update,
        row,
        at: at(when),
    }
}

pub fn load(row: Value, when: &str) -> Event {
    Event {
        op: Operation::Load,
        row,
        at: at(when),
    }
}

/// A key-only delete image, as DMS sends for a table without full replica identity.
pub fn delete(key: Value, when: &str) -> Event {
    Event {
        op: Operation::Delete,
        row: key,
        at: at(when),
    }
}

/// A message as it goes to Kafka: key, value, and the partition (None: by key hash).
#[derive(Debug, Clone)]
pub struct Message {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub partition: Option<i32>,
}

impl Message {
    pub fn raw(key: &str, value: impl Into<Vec<u8>>) -> Message {
        Message {
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.into()),
            partition: None,
        }
    }

    pub fn on(mut self, partition: i32) -> Message {
        self.partition = Some(partition);
        self
    }
}

/// One table's pipeline under test: its config, topic, lake folder and consumer group.
pub struct Flow {
    pub config: ConfigSpec,
    /// The broker the flow's topic lives on.
    pub bootstrap: String,
    pub topic: String,
    pub group: String,
    pub lake_dir: tempfile::TempDir,
    /// Passed to [`Lake::with_splice_min_rows`] when set, so small tables are spliced too.
    pub splice_min_rows: Option<usize>,
}

impl Flow {
    /// A new topic with `partitions` partitions, a new lake and a new group; `yaml` names the
    /// topic `{topic}` and declares one source table.
    pub async fn new(yaml: &str, partitions: i32) -> Flow {
        Flow::on(&support::broker().bootstrap(), yaml, partitions).await
    }

    /// As [`Flow::new`], on another broker.
    pub async fn on(bootstrap: &str, yaml: &str, partitions: i32) -> Flow {
        let topic = support::unique("cdc-it");
        let config = config(yaml, &topic);
        create_topics(bootstrap, &[(&topic, partitions)])
            .await
            .unwrap_or_else(|e| panic!("creating topic {topic}: {}", support::error_chain(&e)));
        Flow {
            config,
            bootstrap: bootstrap.to_string(),
            topic,
            group: support::unique("dqetl-it"),
            lake_dir: tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}")),
            splice_min_rows: None,
        }
    }

    pub fn table(&self) -> &TableSpec {
        self.config
            .source_tables()
            .next()
            .unwrap_or_else(|| panic!("the config declares a source table"))
    }

    pub fn layout(&self) -> LakeLayout {
        LakeLayout::local(self.lake_dir.path())
    }

    pub fn lake_path(&self) -> &Path {
        self.lake_dir.path()
    }

    /// The DMS message of an event, keyed by the row's primary key.
    pub fn message(&self, event: &Event) -> Message {
        let table = self.table();
        let row: Map<String, Value> = match &event.row {
            Value::Object(m) => m.clone(),
            other => panic!("an event row is a JSON object, got {other}"),
        };
        let pk = table.primary_key.as_deref().unwrap_or("id");
        let key = row.get(pk).map(|v| v.to_string()).unwrap_or_default();
        let value = encode(table, "public", event.op, row, event.at, Some(1));
        Message::raw(&key, value)
    }

    /// Produces the events in order; returns (partition, offset) of each.
    pub async fn produce(&self, events: &[Event]) -> Vec<(i32, i64)> {
        let messages: Vec<Message> = events.iter().map(|e| self.message(e)).collect();
        produce(&self.bootstrap, &self.topic, &messages).await
    }

    pub fn options(&self) -> ProcessOptions {
        ProcessOptions {
            kafka: KafkaConnection {
                bootstrap_servers: self.bootstrap.clone(),
                ..KafkaConnection::default()
            },
            group: self.group.clone(),
            tables: Vec::new(),
            once: true,
            partitions: Partitions::Group,
            // `--once` ends a batch when the backlog is read, so a long interval only keeps a
            // slow first fetch from splitting it.
            trigger_interval: Duration::from_secs(10),
            max_batch_records: 10_000,
            max_batch_bytes: 64 << 20,
            consumer_options: Vec::new(),
            maintenance: None,
            on_data_loss: self.config.kafka.on_data_loss,
        }
    }

    /// Runs the processor with `once` until the topic is drained.
    pub async fn process(&self) -> ProcessSummary {
        self.process_with(self.options()).await
    }

    pub async fn process_with(&self, options: ProcessOptions) -> ProcessSummary {
        let mut lake = Lake::new(self.layout(), Default::default());
        if let Some(rows) = self.splice_min_rows {
            lake = lake.with_splice_min_rows(rows);
        }
        let processor = Processor::new(&self.config, lake, options)
            .await
            .unwrap_or_else(|e| panic!("processor starts: {e:#}"));
        let (_stop, stop_rx) = watch::channel(false);
        match tokio::time::timeout(RUN_LIMIT, processor.run(stop_rx)).await {
            Ok(Ok(summary)) => summary,
            Ok(Err(e)) => panic!("processor failed: {e:#}"),
            Err(_) => panic!("processor did not drain the topic within {RUN_LIMIT:?}"),
        }
    }

    /// Rows of one SQL query over the lake, as JSON objects.
    pub async fn rows(&self, sql: &str) -> Vec<Value> {
        rows(&self.layout(), &self.config, sql).await
    }

    /// The versions of the data table, `columns` first, ordered by key and interval.
    pub async fn versions(&self, columns: &str) -> Vec<Value> {
        let table = &self.table().name;
        let pk = self
            .table()
            .primary_key
            .clone()
            .unwrap_or_else(|| "id".into());
        self.rows(&format!(
            "SELECT {columns}, _operation, _effective_from, _effective_to, _is_current FROM {table} \
             ORDER BY {pk}, _effective_from, _effective_to NULLS LAST"
        ))
        .await
    }

    pub async fn quarantine(&self, columns: &str) -> Vec<Value> {
        let table = &self.table().name;
        self.rows(&format!(
            "SELECT {columns} FROM {table}_quarantine ORDER BY _partition, _offset"
        ))
        .await
    }

    pub async fn version_of(&self, table: LakeTable) -> Option<u64> {
        Lake::new(self.layout(), Default::default())
            .table_version(&table)
            .await
            .unwrap_or_else(|e| panic!("table version: {e}"))
    }

    /// At most one current row per key; no history interval of a key overlaps another.
    pub async fn assert_invariants(&self) {
        assert_invariants(&self.layout(), &self.config, self.table()).await;
    }
}

/// A tansu broker of the test's own with SQLite storage, stopped when dropped. Unlike the shared
/// test broker's memory storage (tansu 0.6), it serves a fetch that starts inside a record batch
/// from that offset (memory storage skips the rest of the batch) and lists true end offsets; and
/// topics, records and group offsets survive a restart.
pub struct SqliteBroker {
    dir: tempfile::TempDir,
    port: u16,
    broker: Option<Broker>,
}

impl SqliteBroker {
    pub fn start() -> SqliteBroker {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let port = free_port().unwrap_or_else(|e| panic!("no free port: {e}"));
        let mut broker = SqliteBroker {
            dir,
            port,
            broker: None,
        };
        broker.restart();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGTERM, then SIGKILL after a grace period).
    pub fn stop(&mut self) {
        if let Some(broker) = self.broker.take() {
            broker
                .stop()
                .unwrap_or_else(|e| panic!("stopping the broker: {}", support::error_chain(&e)));
        }
    }

    /// Starts the broker again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        let options = BrokerOptions {
            spawn: SpawnOptions {
                die_with_parent: Some(nix::sys::signal::Signal::SIGKILL),
                ..SpawnOptions::default()
            },
            log_file: Some(self.dir.path().join("tansu.log")),
            ready_timeout: Duration::from_secs(60),
        };
        let started = Broker::start_with(
            self.dir.path(),
            self.port,
            Storage::Sqlite("tansu.db".into()),
            &options,
        )
        .unwrap_or_else(|e| panic!("starting a SQLite broker: {}", support::error_chain(&e)));
        self.broker = Some(started);
    }
}

impl Drop for SqliteBroker {
    fn drop(&mut self) {
        if let Some(broker) = self.broker.take() {
            let _ = broker.stop();
        }
    }
}

/// Produces messages to `topic`, waiting for every delivery; returns (partition, offset) each.
pub async fn produce(bootstrap: &str, topic: &str, messages: &[Message]) -> Vec<(i32, i64)> {
    let producer: FutureProducer = producer_config(bootstrap)
        .create()
        .unwrap_or_else(|e| panic!("producer: {e}"));
    let mut pending = Vec::with_capacity(messages.len());
    for m in messages {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(key) = &m.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &m.value {
            record = record.payload(value.as_slice());
        }
        if let Some(p) = m.partition {
            record = record.partition(p);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((e, _)) => panic!("producing to {topic}: {e}"),
            }
        }
    }
    let mut positions = Vec::with_capacity(pending.len());
    for delivery in pending {
        match tokio::time::timeout(Duration::from_secs(60), delivery).await {
            Ok(Ok(Ok(d))) => positions.push((d.partition, d.offset)),
            Ok(Ok(Err((e, _)))) => panic!("delivery to {topic} failed: {e}"),
            Ok(Err(_)) => panic!("delivery to {topic} was cancelled"),
            Err(_) => panic!("delivery to {topic} timed out"),
        }
    }
    positions
}

pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "60000")
        .set("linger.ms", "5")
        // Room for the oversized messages of the bad-input tests.
        .set("message.max.bytes", "16777216")
        // One in-flight request keeps the produced order, which the tests rely on.
        .set("max.in.flight.requests.per.connection", "1");
    cfg
}

/// Rows of one SQL query over a lake, as JSON objects.
pub async fn rows(layout: &LakeLayout, config: &ConfigSpec, sql: &str) -> Vec<Value> {
    let query = LocalQuery::open(layout, config)
        .await
        .unwrap_or_else(|e| panic!("opening the lake: {e}"));
    let batches: Vec<RecordBatch> = query
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("query {sql}: {e:#}"));
    let text = render_json(&batches).unwrap_or_else(|e| panic!("rendering rows: {e}"));
    match serde_json::from_str(&text) {
        Ok(Value::Array(rows)) => rows,
        other => panic!("rows render as a JSON array, got {other:?}"),
    }
}

/// At most one current row per key; no two history intervals of a key overlap; a closed
/// interval never ends before it starts.
pub async fn assert_invariants(layout: &LakeLayout, config: &ConfigSpec, table: &TableSpec) {
    let pk = table.primary_key.clone().unwrap_or_else(|| "id".into());
    let exists = Lake::new(layout.clone(), Default::default())
        .table_version(&LakeTable::Data(table.name.clone()))
        .await
        .unwrap_or_else(|e| panic!("table version: {e}"));
    if exists.is_none() {
        return;
    }
    let versions = rows(
        layout,
        config,
        &format!(
            "SELECT CAST({pk} AS VARCHAR) AS k, CAST(_effective_from AS BIGINT) AS f, \
             CAST(_effective_to AS BIGINT) AS t, _is_current AS c FROM {} ORDER BY k, f, t NULLS LAST",
            table.name
        ),
    )
    .await;
    let mut by_key: BTreeMap<String, Vec<(i64, Option<i64>, bool)>> = BTreeMap::new();
    for v in &versions {
        let key = v["k"].as_str().unwrap_or_default().to_string();
        let from = v["f"]
            .as_i64()
            .unwrap_or_else(|| panic!("_effective_from is set: {v}"));
        by_key
            .entry(key)
            .or_default()
            .push((from, v["t"].as_i64(), v["c"] == json!(true)));
    }
    for (key, history) in &by_key {
        let current = history.iter().filter(|v| v.2).count();
        assert!(
            current <= 1,
            "key {key} has {current} current rows: {history:?}"
        );
        for v in history {
            assert_eq!(
                v.2,
                v.1.is_none(),
                "key {key}: only the current row is open: {history:?}"
            );
            if let Some(to) = v.1 {
                assert!(
                    to >= v.0,
                    "key {key}: interval ends before it starts: {history:?}"
                );
            }
        }
        for pair in history.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let a_end = a.1.unwrap_or(i64::MAX);
            // Zero-length tombstones may touch the next version; nothing may overlap.
            assert!(a_end <= b.0, "key {key}: intervals overlap: {history:?}");
        }
    }
}

pub const ORDERS: &str = r#"
tables:
  - name: orders
    topic: {topic}
    primary_key: id
    schema:
      - {name: id, type: integer, nullable: false}
      - {name: amount, type: double}
      - {name: status, type: string}
    dq_rules:
      - {id: amount_range, type: range, column: amount, params: {min: 0, max: 1000}}
    transforms:
      - {id: status_upper, type: upper, column: status, order: 1}
    deequ_checks:
      - {metric: size, threshold: 1}
"#;

#[tokio::test]
async fn smoke_events_through_the_broker_land_in_delta() {
    let flow = Flow::new(ORDERS, 1).await;
    flow.produce(&[
        insert(
            json!({"id": 1, "amount": 10.0, "status": "new"}),
            "2026-03-01T09:00:00Z",
        ),
        insert(
            json!({"id": 2, "amount": 2000.0, "status": "new"}),
            "2026-03-01T09:00:01Z",
        ),
        insert(
            json!({"id": 3, "amount": 30.0, "status": "new"}),
            "2026-03-01T09:00:02Z",
        ),
    ])
    .await;
    let first = flow.process().await;
    flow.produce(&[
        update(
            json!({"id": 1, "amount": 12.5, "status": "paid"}),
            "2026-03-01T10:00:00Z",
        ),
        delete(json!({"id": 3}), "2026-03-01T10:00:01Z"),
    ])
    .await;
    let second = flow.process().await;

    let totals = |s: &ProcessSummary| s.per_table.get("orders").cloned().unwrap_or_default();
    assert_eq!(
        (
            first.records,
            totals(&first).loaded,
            totals(&first).quarantined
        ),
        (3, 2, 1)
    );
    assert_eq!(
        (
            second.records,
            totals(&second).loaded,
            totals(&second).deletes
        ),
        (2, 1, 1)
    );
    assert_eq!(
        flow.versions("id, amount, status").await,
        vec![
            json!({"id": 1, "amount": 10.0, "status": "NEW", "_operation": "INSERT",
                   "_effective_from": "2026-03-01T09:00:00Z", "_effective_to": "2026-03-01T10:00:00Z", "_is_current": false}),
            json!({"id": 1, "amount": 12.5, "status": "PAID", "_operation": "UPDATE",
                   "_effective_from": "2026-03-01T10:00:00Z", "_effective_to": null, "_is_current": true}),
            json!({"id": 3, "amount": 30.0, "status": "NEW", "_operation": "INSERT",
                   "_effective_from": "2026-03-01T09:00:02Z", "_effective_to": "2026-03-01T10:00:01Z", "_is_current": false}),
        ]
    );
    assert_eq!(
        flow.quarantine("id, amount, _failed_rules, _offset").await,
        vec![json!({"id": 2, "amount": 2000.0, "_failed_rules": ["amount_range"], "_offset": 1})]
    );
    let sizes = flow
        .rows("SELECT metric_value FROM dq_metrics WHERE metric_name = 'Size' AND scope = 'batch' ORDER BY batch_id")
        .await;
    assert_eq!(
        sizes,
        vec![json!({"metric_value": 2.0}), json!({"metric_value": 1.0})],
        "rows that end each batch current"
    );
    // The second batch quarantined nothing, yet the quarantine table counts as through it: the
    // lake resumes after the last record (offset 4), not after the first batch.
    let resume = Lake::new(flow.layout(), Default::default())
        .resume_offsets("orders", &flow.group, &[(flow.topic.clone(), 0)])
        .await
        .expect("resume offsets");
    assert_eq!(resume.get(&(flow.topic.clone(), 0)), Some(&5));
    flow.assert_invariants().await;
}

/// The totals of the flow's one table in a summary.
pub fn totals(summary: &ProcessSummary, table: &str) -> dqetl::stream::TableTotals {
    summary.per_table.get(table).cloned().unwrap_or_default()
}

/// The values of one field of the rows, in row order.
pub fn field(rows: &[Value], name: &str) -> Vec<Value> {
    rows.iter().map(|r| r[name].clone()).collect()
}

const READINGS: &str = r#"
tables:
  - name: readings
    topic: {topic}
    primary_key: id
    schema:
      - {name: id, type: integer, nullable: false}
      - {name: temp, type: double}
      - {name: code, type: string}
      - {name: status, type: string}
      - {name: note, type: string}
    dq_rules:
      - {id: temp_range, type: range, column: temp, params: {min: -10, max: 40}}
      - {id: code_length, type: length, column: code, params: {min: 2, max: 4}}
      - {id: code_format, type: regex, column: code, params: {pattern: "^[A-Z]+$"}}
      - {id: status_known, type: allowed_values, column: status, params: {values: [ok, late]}}
      - {id: note_present, type: not_null, column: note, severity: warning}
"#;

fn reading(id: i64, temp: f64, code: &str) -> Value {
    json!({"id": id, "temp": temp, "code": code, "status": "ok", "note": "n"})
}

#[tokio::test]
async fn range_and_length_bounds_are_inclusive() {
    let flow = Flow::new(READINGS, 1).await;
    let when = "2026-03-01T09:00:00Z";
    flow.produce(&[
        insert(reading(1, -10.0, "AB"), when),
        insert(reading(2, 40.0, "ABCD"), when),
        insert(reading(3, -10.001, "AB"), when),
        insert(reading(4, 40.001, "AB"), when),
        insert(reading(5, 20.0, "A"), when),
        insert(reading(6, 20.0, "ABCDE"), when),
    ])
    .await;
    let summary = flow.process().await;

    assert_eq!(
        field(&flow.versions("id").await, "id"),
        [json!(1), json!(2)]
    );
    assert_eq!(
        flow.quarantine("id, _failed_rules").await,
        vec![
            json!({"id": 3, "_failed_rules": ["temp_range"]}),
            json!({"id": 4, "_failed_rules": ["temp_range"]}),
            json!({"id": 5, "_failed_rules": ["code_length"]}),
            json!({"id": 6, "_failed_rules": ["code_length"]}),
        ]
    );
    let t = totals(&summary, "readings");
    assert_eq!((t.loaded, t.quarantined), (2, 4));
    assert_eq!(
        t.rule_failures,
        BTreeMap::from([
            ("code_length".to_string(), 2),
            ("temp_range".to_string(), 2)
        ])
    );
    flow.assert_invariants().await;
}

#[tokio::test]
async fn a_quarantined_row_lists_every_rule_it_fails_with_a_reason_each() {
    let flow = Flow::new(READINGS, 1).await;
    flow.produce(&[insert(
        json!({"id": 7, "temp": 99.5, "code": "a1b2c", "status": "lost", "note": null}),
        "2026-03-01T09:00:00Z",
    )])
    .await;
    flow.process().await;

    let rows = flow
        .quarantine("id, _failed_rules, _dq_reason, _operation")
        .await;
    assert_eq!(
        rows,
        vec![json!({
            "id": 7,
            "_failed_rules": ["temp_range", "code_length", "code_format", "status_known", "note_present"],
            "_dq_reason": "temp_range range: temp=99.5 not in [-10, 40]; \
                code_length length: code=\"a1b2c\" has 5 characters, expected between 2 and 4; \
                code_format regex: code=\"a1b2c\" does not match ^[A-Z]+$; \
                status_known allowed_values: status=\"lost\" not in [ok, late]; \
                note_present not_null: note is null",
            "_operation": "INSERT",
        })]
    );
    assert_eq!(
        flow.version_of(LakeTable::Data("readings".into())).await,
        None,
        "nothing loaded"
    );
}

#[tokio::test]
async fn a_failed_warning_rule_loads_the_row_and_is_counted() {
    let flow = Flow::new(READINGS, 1).await;
    flow.produce(&[
        insert(
            json!({"id": 1, "temp": 20.0, "code": "AB", "status": "ok", "note": null}),
            "2026-03-01T09:00:00Z",
        ),
        insert(
            json!({"id": 2, "temp": 21.0, "code": "AB", "status": "late", "note": null}),
            "2026-03-01T09:00:01Z",
        ),
        insert(
            json!({"id": 3, "temp": 22.0, "code": "AB", "status": "ok", "note": "fine"}),
            "2026-03-01T09:00:02Z",
        ),
    ])
    .await;
    let summary = flow.process().await;

    assert_eq!(
        flow.versions("id, note")
            .await
            .iter()
            .map(|r| (r["id"].clone(), r["note"].clone()))
            .collect::<Vec<_>>(),
        [
            (json!(1), Value::Null),
            (json!(2), Value::Null),
            (json!(3), json!("fine"))
        ]
    );
    assert_eq!(
        flow.version_of(LakeTable::Quarantine("readings".into()))
            .await,
        None
    );
    let t = totals(&summary, "readings");
    assert_eq!((t.loaded, t.quarantined), (3, 0));
    assert_eq!(
        t.rule_failures,
        BTreeMap::from([("note_present".to_string(), 2)])
    );
    let rates = flow
        .rows("SELECT metric_value FROM dq_metrics WHERE metric_name = 'RuleFailureRate' AND column_name = 'note_present' AND scope = 'batch'")
        .await;
    assert_eq!(
        field(&rates, "metric_value"),
        [json!(2.0 / 3.0)],
        "the warning rule's failure rate"
    );
    flow.assert_invariants().await;
}

const NULLS: &str = r#"
tables:
  - name: sensors
    topic: {topic}
    primary_key: id
    schema:
      - {name: id, type: integer, nullable: false}
      - {name: temp, type: double}
      - {name: code, type: string}
      - {name: status, type: string}
    dq_rules:
      - {id: temp_range, type: range, column: temp, params: {min: 0, max: 50}}
      - {id: code_format, type: regex, column: code, params: {pattern: "^[A-Z]+$"}, allow_null: true}
      - {id: status_known, type: allowed_values, column: status, params: {values: [ok]}}
    transforms:
      - {id: code_default, type: default_value, column: code, params: {value: NONE}, order: 1}
      - {id: status_upper, type: upper, column: status, order: 2}
"#;

#[tokio::test]
async fn null_fails_value_rules_unless_the_rule_allows_it() {
    let flow = Flow::new(NULLS, 1).await;
    let when = "2026-03-01T09:00:00Z";
    flow.produce(&[
        insert(
            json!({"id": 1, "temp": null, "code": "AB", "status": "ok"}),
            when,
        ),
        insert(
            json!({"id": 2, "temp": 10.0, "code": null, "status": "ok"}),
            when,
        ),
        insert(
            json!({"id": 3, "temp": 10.0, "code": "AB", "status": null}),
            when,
        ),
        // Absent from the image is the same as null.
        insert(json!({"id": 4, "code": "AB", "status": "ok"}), when),
        insert(
            json!({"id": 5, "temp": 10.0, "code": "AB", "status": "ok"}),
            when,
        ),
    ])
    .await;
    flow.process().await;

    assert_eq!(
        flow.versions("id, temp, code, status")
            .await
            .iter()
            .map(|r| json!([r["id"], r["temp"], r["code"], r["status"]]))
            .collect::<Vec<_>>(),
        [json!([2, 10.0, "NONE", "OK"]), json!([5, 10.0, "AB", "OK"])],
        "an allowed NULL is loaded, then default_value fills it"
    );
    assert_eq!(
        flow.quarantine("id, _failed_rules, _dq_reason, status")
            .await,
        vec![
            json!({"id": 1, "_failed_rules": ["temp_range"], "_dq_reason": "temp_range range: temp is null", "status": "ok"}),
            json!({"id": 3, "_failed_rules": ["status_known"], "_dq_reason": "status_known allowed_values: status is null", "status": null}),
            json!({"id": 4, "_failed_rules": ["temp_range"], "_dq_reason": "temp_range range: temp is null", "status": "ok"}),
        ],
        "quarantine keeps the raw values, before transforms"
    );
    flow.assert_invariants().await;
}

const PEOPLE: &str = r#"
tables:
  - name: people
    topic: {topic}
    primary_key: id
    schema:
      - {name: id, type: integer, nullable: false}
      - {name: lat, type: double}
      - {name: hr, type: double}
      - {name: name, type: string}
      - {name: phone, type: string}
      - {name: status, type: string}
      - {name: city, type: string}
      - {name: score, type: string}
      - {name: comment, type: string}
    transforms:
      - {id: t_lat, type: round, column: lat, params: {decimals: 1}, order: 1}
      - {id: t_hr, type: round, column: hr, params: {decimals: 0}, order: 2}
      - {id: t_name, type: mask_pii, column: name, params: {visible_chars: 2}, order: 3}
      - {id: t_phone, type: mask_pii, column: phone, params: {visible_chars: 0}, order: 4}
      - {id: t_trim, type: trim, column: status, order: 5}
      - {id: t_lower, type: lower, column: status, order: 6}
      - {id: t_upper, type: upper, column: city, order: 7}
      - {id: t_cast, type: cast, column: score, params: {target_type: double}, order: 8}
      - {id: t_default, type: default_value, column: comment, params: {value: none}, order: 9}
      - {id: t_rename, type: rename, column: city, params: {new_name: town}, order: 10}
"#;

#[tokio::test]
async fn transforms_store_the_originals_exact_values() {
    let flow = Flow::new(PEOPLE, 1).await;
    let when = "2026-03-01T09:00:00Z";
    flow.produce(&[
        insert(
            json!({"id": 1, "lat": 37.05, "hr": 72.5, "name": "Alice", "phone": "0612345678",
                   "status": "  Late ", "city": "paris", "score": "12.5", "comment": null}),
            when,
        ),
        insert(
            json!({"id": 2, "lat": -2.45, "hr": 0.5, "name": "J", "phone": null,
                   "status": "OK", "city": null, "score": null, "comment": "hi"}),
            when,
        ),
        insert(
            json!({"id": 3, "lat": 1.0, "hr": 1.0, "name": "Bob", "phone": "1",
                   "status": "ok", "city": "x", "score": "abc", "comment": "c"}),
            when,
        ),
    ])
    .await;
    let summary = flow.process().await;

    assert_eq!(
        flow.versions("id, lat, hr, name, phone, status, town, score, comment")
            .await
            .iter()
            .map(|r| json!([
                r["id"],
                r["lat"],
                r["hr"],
                r["name"],
                r["phone"],
                r["status"],
                r["town"],
                r["score"],
                r["comment"]
            ]))
            .collect::<Vec<_>>(),
        [
            json!([
                1, 37.1, 73.0, "Al****", "****", "late", "PARIS", 12.5, "none"
            ]),
            json!([2, -2.5, 1.0, "J****", null, "ok", null, null, "hi"]),
        ]
    );
    assert_eq!(
        flow.quarantine("id, _failed_rules, _dq_reason, name").await,
        vec![
            json!({"id": 3, "_failed_rules": ["t_cast"], "_dq_reason": "t_cast cast: score=\"abc\" cannot be cast to double", "name": "Bo****"})
        ],
        "a value that cannot be cast quarantines its row (PII masked there too)"
    );
    assert_eq!(totals(&summary, "people").quarantined, 1);
    flow.assert_invariants().await;
}

const CONTACTS: &str = r#"
tables:
  - name: contacts
    topic: {topic}
    primary_key: id
    schema:
      - {name: id, type: integer, nullable: false}
      - {name: phone, type: string}
      - {name: amount, type: double}
    dq_rules:
      - {id: phone_digits, type: regex, column: phone, params: {pattern: "^[0-9]{10}$"}}
    transforms:
      - {id: phone_mask, type: mask_pii, column: phone, params: {visible_chars: 4}, order: 1}
"#;

#[tokio::test]
async fn pii_is_masked_in_quarantine_rows_reasons_and_raw_payloads() {
    let flow = Flow::new(CONTACTS, 1).await;
    let when = "2026-03-01T09:00:00Z";
    flow.produce(&[
        insert(
            json!({"id": 1, "phone": "06-1234-5678", "amount": 1.0}),
            when,
        ),
        insert(
            json!({"id": 2, "phone": "0612345678", "amount": "lots"}),
            when,
        ),
        insert(json!({"id": 3, "phone": "0698765432", "amount": 2.0}), when),
    ])
    .await;
    flow.process().await;

    let rows = flow.quarantine("id, phone, _dq_reason, _raw").await;
    assert_eq!(field(&rows, "id"), [json!(1), Value::Null]);
    assert_eq!(rows[0]["phone"], json!("06-1****"));
    assert_eq!(
        rows[0]["_dq_reason"],
        json!("phone_digits regex: phone=\"06-1****\" does not match ^[0-9]{10}$")
    );
    let raw = rows[1]["_raw"].as_str().unwrap_or_default();
    assert!(
        raw.contains("\"0612****\"") && !raw.contains("0612345678"),
        "masked raw payload: {raw}"
    );
    assert!(
        rows[1]["_dq_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("malformed: ") && r.contains("amount")),
        "{}",
        rows[1]["_dq_reason"]
    );
    let all = flow.rows("SELECT * FROM contacts_quarantine").await;
    let text = serde_json::to_string(&all).unwrap_or_default();
    assert!(
        !text.contains("5678") && !text.contains("345678"),
        "no unmasked phone anywhere: {text}"
    );
    assert_eq!(
        flow.versions("id, phone").await[0]["phone"],
        json!("0698****")
    );
    flow.assert_invariants().await;
}

#[tokio::test]
async fn quarantine_keeps_pii_when_the_table_opts_out_of_masking() {
    let yaml = format!("{CONTACTS}    quarantine: {{mask_pii: false}}\n");
    let flow = Flow::new(&yaml, 1).await;
    flow.produce(&[insert(
        json!({"id": 1, "phone": "06-1234-5678", "amount": 1.0}),
        "2026-03-01T09:00:00Z",
    )])
    .await;
    flow.process().await;
    assert_eq!(
        flow.quarantine("phone, _dq_reason").await,
        vec![
            json!({"phone": "06-1234-5678", "_dq_reason": "phone_digits regex: phone=\"06-1234-5678\" does not match ^[0-9]{10}$"})
        ]
    );
}

const VEHICLES: &str = r#"
tables:
  - name: vehicles
    topic: {topic}
    primary_key: id
    schema:
      - {name: id, type: integer, nullable: false}
      - {name: status, type: string}
      - {name: km, type: double}
"#;

fn vehicle(id: i64, status: &str, km: f64) -> Value {
    json!({"id": id, "status": status, "km": km})
}

/// (id, status, _operation, from, to, current) of every version.
async fn history(flow: &Flow) -> Vec<Value> {
    flow.versions("id, status")
        .await
        .iter()
        .map(|r| {
            json!([
                r["id"],
                r["status"],
                r["_operation"],
                r["_effective_from"],
                r["_effective_to"],
                r["_is_current"]
            ])
        })
        .collect()
}

#[tokio::test]
async fn a_first_batch_of_updates_and_deletes_starts_the_history() {
    let flow = Flow::new(VEHICLES, 1).await;
    flow.produce(&[
        // An update of a key the lake has never seen becomes its first version.
        update(vehicle(1, "moving", 10.0), "2026-03-01T09:00:00Z"),
        // Deleting an unknown key changes nothing.
        delete(json!({"id": 2}), "2026-03-01T09:00:01Z"),
        // Inserted and deleted within the batch: the last event wins, nothing remains.
        insert(vehicle(3, "parked", 0.0), "2026-03-01T09:00:02Z"),
        delete(json!({"id": 3}), "2026-03-01T09:00:03Z"),
        insert(vehicle(4, "parked", 5.0), "2026-03-01T09:00:04Z"),
    ])
    .await;
    let summary = flow.process().await;

    assert_eq!(
        history(&flow).await,
        [
            json!([1, "moving", "UPDATE", "2026-03-01T09:00:00Z", null, true]),
            json!([4, "parked", "INSERT", "2026-03-01T09:00:04Z", null, true]),
        ]
    );
    let t = totals(&summary, "vehicles");
    assert_eq!((t.events, t.loaded, t.deletes, t.quarantined), (5, 3, 2, 0));
    flow.assert_invariants().await;
}

#[tokio::test]
async fn two_updates_of_one_key_in_a_batch_the_later_offset_wins() {
    let flow = Flow::new(VEHICLES, 1).await;
    flow.produce(&[insert(vehicle(1, "parked", 0.0), "2026-03-01T09:00:00Z")])
        .await;
    flow.process().await;
    flow.produce(&[
        update(vehicle(1, "moving", 10.0), "2026-03-01T10:00:05Z"),
        // Later in Kafka, earlier by the source clock: Kafka order decides.
        update(vehicle(1, "stopped", 12.0), "2026-03-01T10:00:03Z"),
    ])
    .await;
    flow.process().await;

    assert_eq!(
        history(&flow).await,
        [
            json!([
                1,
                "parked",
                "INSERT",
                "2026-03-01T09:00:00Z",
                "2026-03-01T10:00:03Z",
                false
            ]),
            json!([1, "stopped", "UPDATE", "2026-03-01T10:00:03Z", null, true]),
        ]
    );
    flow.assert_invariants().await;
}

#[tokio::test]
async fn track_intermediate_keeps_every_version_of_a_batch_as_history() {
    let yaml = format!("{VEHICLES}    scd2: {{track_intermediate: true}}\n");
    let flow = Flow::new(&yaml, 1).await;
    flow.produce(&[
        insert(vehicle(1, "parked", 0.0), "2026-03-01T09:00:00Z"),
        update(vehicle(1, "moving", 10.0), "2026-03-01T10:00:00Z"),
        update(vehicle(1, "stopped", 12.0), "2026-03-01T11:00:00Z"),
    ])
    .await;
    flow.process().await;
    assert_eq!(
        history(&flow).await,
        [
            json!([
                1,
                "parked",
                "INSERT",
                "2026-03-01T09:00:00Z",
                "2026-03-01T10:00:00Z",
                false
            ]),
            json!([
                1,
                "moving",
                "UPDATE",
                "2026-03-01T10:00:00Z",
                "2026-03-01T11:00:00Z",
                false
            ]),
            json!([1, "stopped", "UPDATE", "2026-03-01T11:00:00Z", null, true]),
        ]
    );
    flow.assert_invariants().await;
}

#[tokio::test]
async fn insert_and_update_of_a_new_key_in_one_batch_make_one_current_version() {
    let flow = Flow::new(VEHICLES, 1).await;
    flow.produce(&[
        insert(vehicle(9, "new", 0.0), "2026-03-01T09:00:00Z"),
        update(vehicle(9, "moving", 3.5), "2026-03-01T09:05:00Z"),
    ])
    .await;
    flow.process().await;
    assert_eq!(
        history(&flow).await,
        [json!([
            9,
            "moving",
            "UPDATE",
            "2026-03-01T09:05:00Z",
            null,
            true
        ])]
    );
    flow.assert_invariants().await;
}

#[tokio::test]
async fn a_key_only_delete_closes_the_current_row() {
    let flow = Flow::new(VEHICLES, 1).await;
    flow.produce(&[
        insert(vehicle(1, "parked", 0.0), "2026-03-01T09:00:00Z"),
        insert(vehicle(2, "parked", 0.0), "2026-03-01T09:00:00Z"),
    ])
    .await;
    flow.process().await;
    flow.produce(&[delete(json!({"id": 1}), "2026-03-01T12:00:00Z")])
        .await;
    let summary = flow.process().await;

    assert_eq!(
        history(&flow).await,
        [
            json!([
                1,
                "parked",
                "INSERT",
                "2026-03-01T09:00:00Z",
                "2026-03-01T12:00:00Z",
                false
            ]),
            json!([2, "parked", "INSERT", "2026-03-01T09:00:00Z", null, true]),
        ]
    );
    assert_eq!(totals(&summary, "vehicles").deletes, 1);
    flow.assert_invariants().await;
}

#[tokio::test]
async fn a_delete_with_tombstones_also_records_a_delete_version() {
    let yaml = format!("{VEHICLES}    scd2: {{hard_deletes: tombstone}}\n");
    let flow = Flow::new(&yaml, 1).await;
    flow.produce(&[insert(vehicle(1, "parked", 0.0), "2026-03-01T09:00:00Z")])
        .await;
    flow.process().await;
    flow.produce(&[delete(json!({"id": 1}), "2026-03-01T12:00:00Z")])
        .await;
    flow.process().await;
    assert_eq!(
        history(&flow).await,
        [
            json!([
                1,
                "parked",
                "INSERT",
                "2026-03-01T09:00:00Z",
                "2026-03-01T12:00:00Z",
                false
            ]),
            json!([
                1,
                null,
                "DELETE",
                "2026-03-01T12:00:00Z",
                "2026-03-01T12:00:00Z",
                false
            ]),
        ]
    );
    flow.assert_invariants().await;
}

/// Versions of every lake table of the flow.
async fn lake_versions(flow: &Flow) -> [Option<u64>; 3] {
    let name = flow.table().name.clone();
    [
        flow.version_of(LakeTable::Data(name.clone())).await,
        flow.version_of(LakeTable::Quarantine(name)).await,
        flow.version_of(LakeTable::Metrics).await,
    ]
}

/// Commits offset 0 for every partition of the topic in the flow's group: as if Kafka had
/// forgotten (or someone had reset) how far the group got.
async fn reset_kafka_offsets(flow: &Flow, partitions: i32) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &flow.bootstrap)
        .set("group.id", &flow.group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&flow.topic, p, rdkafka::Offset::Offset(0))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .unwrap_or_else(|e| panic!("resetting the group's offsets: {e}"));
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("reading the group's offsets: {e}"));
    for e in committed.elements() {
        assert_eq!(
            e.offset(),
            rdkafka::Offset::Offset(0),
            "offset reset for {e:?}"
        );
    }
}

#[tokio::test]
async fn a_group_whose_kafka_offsets_are_reset_applies_nothing_twice() {
    let flow = Flow::new(READINGS, 2).await;
    flow.produce(&[
        insert(reading(1, 20.0, "AB"), "2026-03-01T09:00:00Z"),
        insert(reading(2, 99.0, "AB"), "2026-03-01T09:00:00Z"),
        update(reading(1, 21.0, "AB"), "2026-03-01T09:01:00Z"),
        insert(reading(3, 22.0, "AB"), "2026-03-01T09:02:00Z"),
    ])
    .await;
    flow.process().await;
    let before = (
        flow.versions("id, temp").await,
        flow.quarantine("id, _offset").await,
    );
    let versions_before = lake_versions(&flow).await;
    reset_kafka_offsets(&flow, 2).await;

    // The long-running mode (a group member that reads everything the group's offsets say).
    let options = ProcessOptions {
        once: false,
        ..flow.options()
    };
    let lake = Lake::new(flow.layout(), Default::default());
    let processor = Processor::new(&flow.config, lake, options)
        .await
        .unwrap_or_else(|e| panic!("processor starts: {e:#}"));
    let (stop, stop_rx) = watch::channel(false);
    let running = tokio::spawn(processor.run(stop_rx));
    // One new event, so the run is known to have joined the group and read its partition.
    flow.produce(&[update(reading(3, 23.0, "AB"), "2026-03-01T09:03:00Z")])
        .await;
    let deadline = tokio::time::Instant::now() + RUN_LIMIT;
    loop {
        let current = flow
            .rows("SELECT temp FROM readings WHERE id = 3 AND _is_current")
            .await;
        if field(&current, "temp") == [json!(23.0)] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new event was not applied in time"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = stop.send(true);
    let summary = match tokio::time::timeout(RUN_LIMIT, running).await {
        Ok(Ok(Ok(summary))) => summary,
        other => panic!("the processor stops cleanly: {other:?}"),
    };

    let t = totals(&summary, "readings");
    assert_eq!(
        (t.events, t.loaded),
        (1, 1),
        "only the new event is applied: {summary:?}"
    );
    assert_eq!(
        t.skipped_already_applied, 0,
        "partitions start at the lake's positions, not at Kafka's reset offsets: {summary:?}"
    );
    let (versions, quarantine) = (
        flow.versions("id, temp").await,
        flow.quarantine("id, _offset").await,
    );
    assert_eq!(quarantine, before.1, "no quarantine row twice");
    assert_eq!(
        versions.len(),
        before.0.len() + 1,
        "exactly one new version: {versions:?}"
    );
    let [data, quarantined, _] = lake_versions(&flow).await;
    assert_eq!(data, versions_before[0].map(|v| v + 1), "one data commit");
    assert_eq!(quarantined, versions_before[1], "no quarantine commit");
    flow.assert_invariants().await;
}

#[tokio::test]
async fn a_dms_reload_of_the_same_rows_adds_no_version() {
    let flow = Flow::new(VEHICLES, 3).await;
    let rows = [
        vehicle(1, "parked", 0.0),
        vehicle(2, "moving", 7.5),
        vehicle(3, "parked", 1.0),
    ];
    flow.produce(
        &rows
            .iter()
            .map(|r| insert(r.clone(), "2026-03-01T09:00:00Z"))
            .collect::<Vec<_>>(),
    )
    .await;
    flow.produce(&[update(vehicle(2, "stopped", 9.0), "2026-03-01T10:00:00Z")])
        .await;
    flow.process().await;
    let before = history(&flow).await;
    let data_before = flow.version_of(LakeTable::Data("vehicles".into())).await;

    // A full reload re-sends every current row as `load`, at new offsets.
    flow.produce(&[
        load(vehicle(1, "parked", 0.0), "2026-03-02T00:00:00Z"),
        load(vehicle(2, "stopped", 9.0), "2026-03-02T00:00:00Z"),
        load(vehicle(3, "parked", 1.0), "2026-03-02T00:00:00Z"),
    ])
    .await;
    let summary = flow.process().await;

    assert_eq!(
        totals(&summary, "vehicles").loaded,
        3,
        "the reload was read"
    );
    assert_eq!(history(&flow).await, before);
    assert_eq!(
        flow.version_of(LakeTable::Data("vehicles".into())).await,
        data_before,
        "no new table version"
    );
    flow.assert_invariants().await;
}

pub const TWO_TABLES: &str = r#"
tables:
  - name: orders
    topic: {topic}-orders
    primary_key: id
    schema:
      - {name: id, type: integer, nullable: false}
      - {name: amount, type: double}
    dq_rules:
      - {id: amount_range, type: range, column: amount, params: {min: 0}}
    deequ_checks:
      - {metric: size, threshold: 1}
  - name: customers
    topic: {topic}-customers
    primary_key: code
    schema:
      - {name: code, type: string, nullable: false}
      - {name: name, type: string}
    deequ_checks:
      - {metric: completeness, column: name, threshold: 0.5}
"#;

#[tokio::test]
async fn the_tables_of_one_batch_are_applied_together_and_tables_limits_them() {
    let prefix = support::unique("cdc-two");
    let spec = config(TWO_TABLES, &prefix);
    let bootstrap = support::broker().bootstrap();
    let (orders_topic, customers_topic) =
        (format!("{prefix}-orders"), format!("{prefix}-customers"));
    create_topics(
        &bootstrap,
        &[(orders_topic.as_str(), 2), (customers_topic.as_str(), 1)],
    )
    .await
    .unwrap_or_else(|e| panic!("topics: {}", support::error_chain(&e)));
    let when = at("2026-03-01T09:00:00Z");
    let message = |table: &str, op: Operation, row: Value, key: &str| {
        let table = spec.table(table).unwrap_or_else(|| panic!("table {table}"));
        let row = match row {
            Value::Object(row) => row,
            other => panic!("a row is an object: {other}"),
        };
        Message::raw(key, encode(table, "public", op, row, when, None))
    };
    produce(
        &bootstrap,
        &orders_topic,
        &[
            message(
                "orders",
                Operation::Insert,
                json!({"id": 1, "amount": 5.0}),
                "1",
            ),
            message(
                "orders",
                Operation::Insert,
                json!({"id": 2, "amount": -5.0}),
                "2",
            ),
        ],
    )
    .await;
    produce(
        &bootstrap,
        &customers_topic,
        &[
            message(
                "customers",
                Operation::Insert,
                json!({"code": "c1", "name": "Ann"}),
                "c1",
            ),
            message(
                "customers",
                Operation::Insert,
                json!({"code": "c2", "name": null}),
                "c2",
            ),
            message(
                "customers",
                Operation::Insert,
                json!({"code": "c3", "name": "Bo"}),
                "c3",
            ),
        ],
    )
    .await;
    let lake_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let layout = LakeLayout::local(lake_dir.path());
    let group = support::unique("dqetl-two");
    let run = |tables: &[&str]| {
        let options = ProcessOptions {
            kafka: KafkaConnection {
                bootstrap_servers: bootstrap.clone(),
                ..KafkaConnection::default()
            },
            group: group.clone(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
            once: true,
            partitions: Partitions::Group,
            trigger_interval: Duration::from_secs(10),
            max_batch_records: 10_000,
            max_batch_bytes: 64 << 20,
            consumer_options: Vec::new(),
            maintenance: None,
            on_data_loss: Default::default(),
        };
        let (spec, layout) = (spec.clone(), layout.clone());
        async move {
            let processor = Processor::new(&spec, Lake::new(layout, Default::default()), options)
                .await
                .unwrap_or_else(|e| panic!("processor starts: {e:#}"));
            let (_keep, stop) = watch::channel(false);
            tokio::time::timeout(RUN_LIMIT, processor.run(stop))
                .await
                .unwrap_or_else(|_| panic!("the run did not finish"))
                .unwrap_or_else(|e| panic!("the run failed: {e:#}"))
        }
    };

    let only_customers = run(&["customers"]).await;
    assert_eq!(
        only_customers.per_table.keys().collect::<Vec<_>>(),
        ["customers"],
        "--tables limits the run"
    );
    let lake = Lake::new(layout.clone(), Default::default());
    let orders_version = lake
        .table_version(&LakeTable::Data("orders".into()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(orders_version, None, "orders untouched");
    produce(
        &bootstrap,
        &customers_topic,
        &[message(
            "customers",
            Operation::Update,
            json!({"code": "c2", "name": "Cy"}),
            "c2",
        )],
    )
    .await;
    let both = run(&[]).await;
    assert_eq!(both.batches, 1, "one micro-batch for both tables");
    assert_eq!(
        both.per_table
            .get("orders")
            .map(|t| (t.loaded, t.quarantined)),
        Some((1, 1))
    );
    assert_eq!(
        both.per_table.get("customers").map(|t| t.events),
        Some(1),
        "only the new customer event: the others were applied by the first run"
    );

    assert_eq!(
        field(
            &rows(&layout, &spec, "SELECT id FROM orders WHERE _is_current").await,
            "id"
        ),
        [json!(1)]
    );
    assert_eq!(
        field(
            &rows(&layout, &spec, "SELECT id FROM orders_quarantine").await,
            "id"
        ),
        [json!(2)]
    );
    assert_eq!(
        field(
            &rows(
                &layout,
                &spec,
                "SELECT code FROM customers WHERE _is_current ORDER BY code"
            )
            .await,
            "code"
        ),
        [json!("c1"), json!("c2"), json!("c3")]
    );
    assert_eq!(
        field(
            &rows(
                &layout,
                &spec,
                "SELECT name FROM customers WHERE code = 'c2' AND _is_current"
            )
            .await,
            "name"
        ),
        [json!("Cy")]
    );
    assert_eq!(
        rows(
            &layout,
            &spec,
            "SELECT table_name, metric_name, metric_value FROM dq_metrics WHERE scope = 'batch' \
             ORDER BY table_name, batch_id, metric_name"
        )
        .await,
        [
            json!({"table_name": "customers", "metric_name": "Completeness", "metric_value": 2.0 / 3.0}),
            json!({"table_name": "customers", "metric_name": "Completeness", "metric_value": 1.0}),
            json!({"table_name": "orders", "metric_name": "RuleFailureRate", "metric_value": 0.5}),
            json!({"table_name": "orders", "metric_name": "Size", "metric_value": 1.0}),
        ],
        "both tables' metrics in the shared table"
    );
    for table in ["orders", "customers"] {
        let spec_table = spec
            .table(table)
            .unwrap_or_else(|| panic!("table {table}"))
            .clone();
        assert_invariants(&layout, &spec, &spec_table).await;
    }
}

#[tokio::test]
async fn records_read_again_at_the_same_offsets_change_nothing() {
    let flow = Flow::new(READINGS, 2).await;
    flow.produce(&[
        insert(reading(1, 20.0, "AB"), "2026-03-01T09:00:00Z"),
        insert(reading(2, 99.0, "AB"), "2026-03-01T09:00:00Z"),
        insert(reading(3, 21.0, "AB"), "2026-03-01T09:00:00Z"),
    ])
    .await;
    flow.process().await;
    // A batch without quarantine rows: the quarantine table's own mark stays behind.
    flow.produce(&[
        update(reading(1, 22.0, "AB"), "2026-03-01T10:00:00Z"),
        delete(json!({"id": 3}), "2026-03-01T10:00:00Z"),
    ])
    .await;
    flow.process().await;
    let before = (
        flow.versions("id, temp").await,
        flow.quarantine("id, _offset").await,
        lake_versions(&flow).await,
    );
    // Without the progress notes the processor can only trust each table's own marks, so it
    // reads every record again from the start, at the offsets it applied them from.
    let state_dir = std::path::PathBuf::from(flow.layout().state_dir());
    for entry in
        std::fs::read_dir(&state_dir).unwrap_or_else(|e| panic!("{}: {e}", state_dir.display()))
    {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
    }
    let summary = flow.process().await;

    assert_eq!(
        summary.records, 5,
        "every record was read again: {summary:?}"
    );
    assert_eq!(
        totals(&summary, "readings").events,
        5,
        "and planned again: {summary:?}"
    );
    let after = (
        flow.versions("id, temp").await,
        flow.quarantine("id, _offset").await,
        lake_versions(&flow).await,
    );
    assert_eq!(after, before, "no row and no table version was added");
    flow.assert_invariants().await;
}

const SIZE_WATCHED: &str = r#"
tables:
  - name: orders
    topic: {topic}
    primary_key: id
    schema:
      - {name: id, type: integer, nullable: false}
      - {name: amount, type: double}
    deequ_checks:
      - {metric: size, threshold: 1}
    anomaly_checks:
      - {metric: size, strategy: relative_rate_of_change, max_increase: 2.0, max_decrease: 0.5, min_history: 2}
"#;

#[tokio::test]
async fn an_anomaly_check_compares_each_batch_with_the_batches_before_it_across_restarts() {
    let flow = Flow::new(SIZE_WATCHED, 1).await;
    let mut next_id = 0;
    // Each run is a processor of its own: the history comes back from the saved progress.
    for size in [3, 3, 5, 11] {
        let events: Vec<Event> = (0..size)
            .map(|_| {
                next_id += 1;
                insert(
                    json!({"id": next_id, "amount": 1.0}),
                    "2026-03-01T09:00:00Z",
                )
            })
            .collect();
        flow.produce(&events).await;
        flow.process().await;
    }
    let anomalies = flow
        .rows("SELECT batch_id, metric_name, column_name, metric_value, threshold, passed FROM dq_metrics WHERE scope = 'anomaly' ORDER BY batch_id")
        .await;
    let sizes = flow
        .rows("SELECT batch_id FROM dq_metrics WHERE scope = 'batch' AND metric_name = 'Size' ORDER BY batch_id")
        .await;
    let batch_ids = field(&sizes, "batch_id");
    assert_eq!(batch_ids.len(), 4, "one batch per run: {sizes:?}");
    // Two batches of history before the check fires; 5 ≤ 2 × 3 passes, 11 > 2 × 5 does not.
    assert_eq!(
        anomalies,
        [
            json!({"batch_id": batch_ids[2], "metric_name": "Size", "column_name": null,
                   "metric_value": 5.0, "threshold": 6.0, "passed": true}),
            json!({"batch_id": batch_ids[3], "metric_name": "Size", "column_name": null,
                   "metric_value": 11.0, "threshold": 10.0, "passed": false}),
        ]
    );
    flow.assert_invariants().await;
}

const MEASURED: &str = r#"
tables:
  - name: vehicles
    topic: {topic}
    primary_key: id
    schema:
      - {name: id, type: integer, nullable: false}
      - {name: vin, type: string}
      - {name: speed, type: double}
    deequ_checks:
      - {metric: size, threshold: 1}
      - {metric: completeness, column: vin, threshold: 0.9}
      - {metric: uniqueness, column: vin, threshold: 0.5}
      - {metric: compliance, column: vin, pattern: "^V[0-9]+$", threshold: 0.5}
      - {metric: compliance, name: speed_plausible, expression: "speed >= 0 AND speed <= 350", threshold: 0.9}
"#;

#[tokio::test]
async fn metric_values_in_dq_metrics_follow_deequs_definitions() {
    let flow = Flow::new(MEASURED, 1).await;
    let v = |id: i64, vin: Option<&str>, speed: f64| json!({"id": id, "vin": vin, "speed": speed});
    flow.produce(&[
        insert(v(1, Some("V1"), 10.0), "2026-03-01T09:00:00Z"),
        insert(v(2, Some("V1"), 20.0), "2026-03-01T09:00:01Z"),
        insert(v(3, Some("V2"), 400.0), "2026-03-01T09:00:02Z"),
        insert(v(4, None, 30.0), "2026-03-01T09:00:03Z"),
        insert(v(5, Some("x9"), 40.0), "2026-03-01T09:00:04Z"),
        // Key 1 again: the batch measures its last version only.
        update(v(1, Some("V7"), 11.0), "2026-03-01T09:00:05Z"),
    ])
    .await;
    flow.process().await;
    let metrics = flow
        .rows("SELECT metric_name, column_name, metric_value, threshold, passed FROM dq_metrics WHERE scope = 'batch' ORDER BY metric_name, column_name")
        .await;
    // Rows measured: ids 1 (V7), 2 (V1), 3 (V2), 4 (NULL), 5 (x9).
    assert_eq!(
        metrics,
        [
            json!({"metric_name": "Completeness", "column_name": "vin", "metric_value": 0.8, "threshold": 0.9, "passed": false}),
            // speed 400 is out of the expression's range: 4 of 5.
            json!({"metric_name": "Compliance", "column_name": "speed_plausible", "metric_value": 0.8, "threshold": 0.9, "passed": false}),
            // vin like ^V[0-9]+$ (a pattern check is named after its column): V7, V1, V2 of 5,
            // NULL counting as not compliant.
            json!({"metric_name": "Compliance", "column_name": "vin_compliance", "metric_value": 0.6, "threshold": 0.5, "passed": true}),
            json!({"metric_name": "Size", "column_name": null, "metric_value": 5.0, "threshold": 1.0, "passed": true}),
            // Every non-NULL vin occurs once now (V1 of key 1 was replaced by V7): 4 of 5 rows.
            json!({"metric_name": "Uniqueness", "column_name": "vin", "metric_value": 0.8, "threshold": 0.5, "passed": true}),
        ]
    );
    flow.assert_invariants().await;
}
