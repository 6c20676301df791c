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
use dqetl::stream::{KafkaConnection, ProcessOptions, ProcessSummary, Processor};
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
    pub topic: String,
    pub group: String,
    pub lake_dir: tempfile::TempDir,
}

impl Flow {
    /// A new topic with `partitions` partitions, a new lake and a new group; `yaml` names the
    /// topic `{topic}` and declares one source table.
    pub async fn new(yaml: &str, partitions: i32) -> Flow {
        let topic = support::unique("cdc-it");
        let config = config(yaml, &topic);
        support::broker().create_topic(&topic, partitions).await;
        Flow {
            config,
            topic,
            group: support::unique("dqetl-it"),
            lake_dir: tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}")),
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
        produce(&support::broker().bootstrap(), &self.topic, &messages).await
    }

    pub fn options(&self) -> ProcessOptions {
        ProcessOptions {
            kafka: KafkaConnection {
                bootstrap_servers: support::broker().bootstrap(),
                ..KafkaConnection::default()
            },
            group: self.group.clone(),
            tables: Vec::new(),
            once: true,
            trigger_interval: Duration::from_millis(300),
            max_batch_records: 10_000,
            max_batch_bytes: 64 << 20,
        }
    }

    /// Runs the processor with `once` until the topic is drained.
    pub async fn process(&self) -> ProcessSummary {
        self.process_with(self.options()).await
    }

    pub async fn process_with(&self, options: ProcessOptions) -> ProcessSummary {
        let lake = Lake::new(self.layout(), Default::default());
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

const ORDERS: &str = r#"
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
    flow.assert_invariants().await;
}
