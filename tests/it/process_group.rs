//! The processor as a consumer: micro-batches bounded by record count and bytes, and partitions
//! moving between two processors of one consumer group (a rebalance) with nothing lost or
//! applied twice.

use std::time::Duration;

use dqetl::cdc::encode::encode;
use dqetl::config::layout::LakeLayout;
use dqetl::config::spec::ConfigSpec;
use dqetl::pipeline::plan::Operation;
use dqetl::sink::{Lake, LakeTable};
use dqetl::stream::{KafkaConnection, Partitions, ProcessOptions, ProcessSummary, Processor};
use dqetl::target::local::create_topics;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::process_scenarios::{
    Event, Flow, Message, ORDERS, RUN_LIMIT, SqliteBroker, TWO_TABLES, at, config, field, insert,
    produce, rows, totals, update,
};
use crate::support;

fn orders(first: i64, count: i64, amount: f64, when: &str) -> Vec<Event> {
    (first..first + count)
        .map(|id| {
            let row = json!({"id": id, "amount": amount, "status": "new"});
            if amount == 1.0 {
                insert(row, when)
            } else {
                update(row, when)
            }
        })
        .collect()
}

#[tokio::test]
async fn a_backlog_is_split_into_batches_by_record_count_and_by_bytes() {
    let flow = Flow::new(ORDERS, 1).await;
    flow.produce(&orders(1, 25, 1.0, "2026-03-01T09:00:00Z"))
        .await;
    let by_count = flow
        .process_with(ProcessOptions {
            max_batch_records: 10,
            ..flow.options()
        })
        .await;
    assert_eq!(
        (by_count.batches, totals(&by_count, "orders").loaded),
        (3, 25),
        "25 records at most 10 a batch: {by_count:?}"
    );
    let sizes = flow
        .rows("SELECT metric_value FROM dq_metrics WHERE metric_name = 'Size' AND scope = 'batch' ORDER BY batch_id")
        .await;
    assert_eq!(
        field(&sizes, "metric_value"),
        [json!(10.0), json!(10.0), json!(5.0)]
    );

    // A batch closes once its keys and values reach the bound: the record that crosses it is
    // the batch's last.
    const MAX_BYTES: usize = 1_000;
    let updates = orders(1, 25, 2.0, "2026-03-01T10:00:00Z");
    let mut expected = 0;
    let mut bytes = 0;
    for m in updates.iter().map(|e| flow.message(e)) {
        if bytes == 0 {
            expected += 1;
        }
        bytes += m.key.map_or(0, |k| k.len()) + m.value.map_or(0, |v| v.len());
        if bytes >= MAX_BYTES {
            bytes = 0;
        }
    }
    assert!(expected > 3, "the bound splits the backlog: {expected}");
    flow.produce(&updates).await;
    let by_bytes = flow
        .process_with(ProcessOptions {
            max_batch_bytes: MAX_BYTES,
            ..flow.options()
        })
        .await;
    let t = totals(&by_bytes, "orders");
    assert_eq!(t.loaded, 25, "{by_bytes:?}");
    assert_eq!(by_bytes.batches, expected, "{by_bytes:?}");
    let current = flow
        .rows("SELECT count(*) AS n FROM orders WHERE _is_current AND amount = 2.0")
        .await;
    assert_eq!(field(&current, "n"), [json!(25)]);
    flow.assert_invariants().await;
}

/// A processor of the flow's group running until told to stop.
fn start(flow: &Flow) -> (watch::Sender<bool>, JoinHandle<ProcessSummary>) {
    let options = ProcessOptions {
        once: false,
        trigger_interval: Duration::from_millis(200),
        ..flow.options()
    };
    let (config, layout) = (flow.config.clone(), flow.layout());
    let (stop, stop_rx) = watch::channel(false);
    let running = tokio::spawn(async move {
        let lake = Lake::new(layout, Default::default());
        let processor = Processor::new(&config, lake, options)
            .await
            .unwrap_or_else(|e| panic!("processor starts: {e:#}"));
        processor
            .run(stop_rx)
            .await
            .unwrap_or_else(|e| panic!("processor failed: {e:#}"))
    });
    (stop, running)
}

async fn finish(stop: watch::Sender<bool>, running: JoinHandle<ProcessSummary>) -> ProcessSummary {
    let _ = stop.send(true);
    match tokio::time::timeout(RUN_LIMIT, running).await {
        Ok(Ok(summary)) => summary,
        other => panic!("the processor stops cleanly: {other:?}"),
    }
}

/// Waits until every key's current row has `amount`.
async fn until_current(flow: &Flow, keys: i64, amount: f64) {
    let sql =
        format!("SELECT count(*) AS n FROM orders WHERE _is_current AND amount = {amount:.1}");
    until_count(&flow.layout(), &flow.config, "orders", &sql, keys).await;
}

#[tokio::test]
async fn partitions_moving_between_two_processors_lose_and_repeat_nothing() {
    // SQLite storage: a member that takes a partition over resumes it mid record batch, which
    // the memory storage serves from the next batch.
    let broker = SqliteBroker::start();
    let flow = Flow::on(&broker.bootstrap(), ORDERS, 4).await;
    const KEYS: i64 = 120;

    let (stop_a, a) = start(&flow);
    flow.produce(&orders(1, KEYS, 1.0, "2026-03-01T09:00:00Z"))
        .await;
    until_current(&flow, KEYS, 1.0).await;

    // A second member joins: the group's partitions are split between the two.
    let (stop_b, b) = start(&flow);
    tokio::time::sleep(Duration::from_secs(3)).await;
    flow.produce(&orders(1, KEYS, 2.0, "2026-03-01T10:00:00Z"))
        .await;
    until_current(&flow, KEYS, 2.0).await;

    // The first leaves: the second takes every partition over from the lake's positions.
    let first = finish(stop_a, a).await;
    flow.produce(&orders(1, KEYS, 3.0, "2026-03-01T11:00:00Z"))
        .await;
    until_current(&flow, KEYS, 3.0).await;
    let second = finish(stop_b, b).await;

    let versions = flow.versions("id, amount").await;
    assert_eq!(
        versions.len(),
        3 * KEYS as usize,
        "three versions per key, none twice"
    );
    for key in 1..=KEYS {
        let amounts: Vec<_> = versions
            .iter()
            .filter(|v| v["id"] == json!(key))
            .map(|v| v["amount"].clone())
            .collect();
        assert_eq!(amounts, [json!(1.0), json!(2.0), json!(3.0)], "key {key}");
    }
    let (ta, tb) = (totals(&first, "orders"), totals(&second, "orders"));
    assert!(
        ta.loaded > 0 && tb.loaded >= KEYS as u64,
        "both members applied records, the one left alone the last wave at least: {first:?} {second:?}"
    );
    // Every record was read by a member; one taking a partition over may read again what the
    // other applied since it last saved the table's progress (see README, Known gaps).
    assert!(ta.events + tb.events >= 3 * KEYS as u64);
    flow.assert_invariants().await;
}

/// Waits until `sql` (a count as `n`) gives `want`, the table existing or not yet.
async fn until_count(layout: &LakeLayout, config: &ConfigSpec, table: &str, sql: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + RUN_LIMIT;
    let lake = Lake::new(layout.clone(), Default::default());
    loop {
        let exists = lake
            .table_version(&LakeTable::Data(table.into()))
            .await
            .ok()
            .flatten()
            .is_some();
        if exists && field(&rows(layout, config, sql).await, "n") == [json!(want)] {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sql} did not reach {want} in time"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_table_whose_lake_fails_is_set_aside_while_the_others_go_on_and_catches_up_after() {
    const CUSTOMERS: i64 = 60;
    let broker = SqliteBroker::start();
    let bootstrap = broker.bootstrap();
    let prefix = support::unique("cdc-aside");
    let spec = config(TWO_TABLES, &prefix);
    let (orders_topic, customers_topic) =
        (format!("{prefix}-orders"), format!("{prefix}-customers"));
    create_topics(
        &bootstrap,
        &[(orders_topic.as_str(), 1), (customers_topic.as_str(), 1)],
    )
    .await
    .unwrap_or_else(|e| panic!("topics: {}", support::error_chain(&e)));
    let when = at("2026-03-01T09:00:00Z");
    let orders = |ids: std::ops::RangeInclusive<i64>| -> Vec<Message> {
        let table = spec.table("orders").expect("orders");
        ids.map(|id| {
            let row = json!({"id": id, "amount": 5.0});
            let Value::Object(row) = row else {
                unreachable!()
            };
            Message::raw(
                &id.to_string(),
                encode(table, "public", Operation::Insert, row, when, None),
            )
        })
        .collect()
    };
    let customers = |codes: std::ops::RangeInclusive<i64>| -> Vec<Message> {
        let table = spec.table("customers").expect("customers");
        codes
            .map(|n| {
                let row = json!({"code": format!("c{n}"), "name": "Ann"});
                let Value::Object(row) = row else {
                    unreachable!()
                };
                Message::raw(
                    &format!("c{n}"),
                    encode(table, "public", Operation::Insert, row, when, None),
                )
            })
            .collect()
    };

    // A file where the customers table's folder would be: every commit to it fails.
    let lake_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let blocker = lake_dir.path().join("customers");
    std::fs::write(&blocker, b"in the way").unwrap_or_else(|e| panic!("blocker: {e}"));
    let layout = LakeLayout::local(lake_dir.path());
    let options = ProcessOptions {
        kafka: KafkaConnection {
            bootstrap_servers: bootstrap.clone(),
            ..KafkaConnection::default()
        },
        group: support::unique("dqetl-aside"),
        tables: Vec::new(),
        once: false,
        partitions: Partitions::Group,
        trigger_interval: Duration::from_millis(200),
        max_batch_records: 10_000,
        max_batch_bytes: 64 << 20,
        consumer_options: Vec::new(),
        maintenance: None,
        on_data_loss: Default::default(),
    };
    let processor = Processor::new(
        &spec,
        Lake::new(layout.clone(), Default::default()),
        options,
    )
    .await
    .unwrap_or_else(|e| panic!("processor starts: {e:#}"));
    let (stop, stop_rx) = watch::channel(false);
    let running = tokio::spawn(processor.run(stop_rx));

    let orders_count = "SELECT count(*) AS n FROM orders WHERE _is_current";
    let customers_count = "SELECT count(*) AS n FROM customers WHERE _is_current";
    produce(&bootstrap, &orders_topic, &orders(1..=5)).await;
    produce(&bootstrap, &customers_topic, &customers(1..=3)).await;
    until_count(&layout, &spec, "orders", orders_count, 5).await;
    // Past the three attempts (1 s, 2 s apart) the customers table is set aside.
    tokio::time::sleep(Duration::from_secs(4)).await;
    produce(&bootstrap, &orders_topic, &orders(6..=10)).await;
    produce(&bootstrap, &customers_topic, &customers(4..=5)).await;
    until_count(&layout, &spec, "orders", orders_count, 10).await;

    // New customers arrive one at a time while the table is tried again and resumed: those
    // left unread while it was paused come after the seek back, none skipped or doubled.
    std::fs::remove_file(&blocker).unwrap_or_else(|e| panic!("removing the blocker: {e}"));
    // Orders keep coming too, so batches are applied (and the next collected meanwhile) around
    // the resume.
    for n in 6..=CUSTOMERS {
        produce(&bootstrap, &customers_topic, &customers(n..=n)).await;
        produce(&bootstrap, &orders_topic, &orders(n + 5..=n + 5)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_count(&layout, &spec, "customers", customers_count, CUSTOMERS).await;
    until_count(&layout, &spec, "orders", orders_count, CUSTOMERS + 5).await;

    let _ = stop.send(true);
    let summary = match tokio::time::timeout(RUN_LIMIT, running).await {
        Ok(Ok(Ok(summary))) => summary,
        other => panic!("the processor stops cleanly: {other:?}"),
    };
    assert!(summary.parked.is_empty(), "{summary:?}");
    assert!(
        summary.retries >= 3,
        "attempts at the failing table: {summary:?}"
    );
    let versions = rows(
        &layout,
        &spec,
        "SELECT code, count(*) AS n FROM customers GROUP BY code ORDER BY CAST(substr(code, 2) AS INT)",
    )
    .await;
    assert_eq!(
        versions,
        (1..=CUSTOMERS)
            .map(|n| json!({"code": format!("c{n}"), "n": 1}))
            .collect::<Vec<_>>(),
        "each customer once, none lost while the table was set aside"
    );
    let t = totals(&summary, "customers");
    assert_eq!(
        (t.loaded, t.offsets_not_delivered),
        (CUSTOMERS as u64, 0),
        "{summary:?}"
    );
}
