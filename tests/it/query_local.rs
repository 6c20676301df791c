//! `dqetl query` on the local target: SQL over the data, quarantine and metrics tables.

use std::time::Duration;

use chrono::Utc;
use deltalake::arrow::array::{AsArray, RecordBatch};
use deltalake::arrow::datatypes::Int64Type;
use dqetl::config::spec::{ConfigSpec, HardDeletes, KafkaSpec, SettingsSpec, TableSpec};
use dqetl::query::local::{LocalQuery, QueryError};
use dqetl::sink::Lake;

use crate::sink_exactly_once::{metric, quarantined};
use crate::sink_scd2::{GROUP, TestLake, changes, delete, ends, insert, update, vehicles};

fn config(tables: Vec<TableSpec>) -> ConfigSpec {
    ConfigSpec {
        settings: SettingsSpec {
            checkpoint_location: None,
            quarantine_path: None,
            delta_bucket: None,
            trigger_interval: Duration::from_secs(10),
            max_batch_records: 1000,
            max_batch_bytes: 1 << 20,
            maintenance_interval: None,
            vacuum_retention: std::time::Duration::from_secs(7 * 24 * 3600),
        },
        kafka: KafkaSpec {
            bootstrap_servers: None,
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            partitions: 3,
            consumer_group: None,
            consumer_options: Vec::new(),
            on_data_loss: Default::default(),
        },
        schema_name: "public".into(),
        tables,
    }
}

/// vehicles with history, quarantine rows and metrics; drivers configured but never processed.
async fn populated(lake: &Lake) -> ConfigSpec {
    let table = vehicles(HardDeletes::Close, false);
    let first = changes(
        &table,
        &[
            insert(1, "ana", 10.0, "2026-03-01T09:00:00Z"),
            insert(2, "bo", 20.0, "2026-03-01T09:00:00Z"),
        ],
    );
    lake.commit_changes(&table, &first, &ends(&[(0, 1)]), GROUP, Utc::now())
        .await
        .expect("first");
    let second = changes(
        &table,
        &[
            update(1, "ana", 15.0, "2026-03-01T10:00:00Z"),
            delete(2, "2026-03-01T10:00:00Z"),
        ],
    );
    lake.commit_changes(&table, &second, &ends(&[(0, 4)]), GROUP, Utc::now())
        .await
        .expect("second");
    lake.append_quarantine(
        &table,
        &quarantined(&table, &[(0, 2)]),
        &ends(&[(0, 4)]),
        GROUP,
    )
    .await
    .expect("quarantine");
    let metrics = [
        metric("vehicles", "Size", None, 3.0, Some(1.0)),
        metric("vehicles", "Completeness", Some("driver"), 1.0, Some(0.95)),
    ];
    lake.append_metrics("vehicles", 1, &metrics, &ends(&[(0, 4)]), GROUP, Utc::now())
        .await
        .expect("metrics");

    let mut drivers = vehicles(HardDeletes::Close, false);
    drivers.name = "drivers".into();
    drivers.topic = "cdc-drivers".into();
    let mut dq_metrics = vehicles(HardDeletes::Close, false);
    dq_metrics.name = "dq_metrics".into();
    dq_metrics.internal = true;
    config(vec![table, drivers, dq_metrics])
}

fn single_i64(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test]
async fn sql_reaches_data_quarantine_and_metrics_tables() {
    let t = TestLake::new();
    let config = populated(&t.lake).await;
    let session = LocalQuery::open(&t.layout(), &config).await.expect("open");
    assert_eq!(
        session.tables().registered,
        vec!["vehicles", "vehicles_quarantine", "dq_metrics"]
    );

    let current = session
        .query("SELECT count(*) FROM vehicles WHERE _is_current")
        .await
        .expect("query");
    assert_eq!(single_i64(&current), 1, "bo was deleted, ana is current");
    let history = session
        .query("SELECT count(*) FROM vehicles")
        .await
        .expect("query");
    assert_eq!(single_i64(&history), 3);
    let quarantine = session
        .query("SELECT count(*) FROM vehicles_quarantine WHERE _offset = 2")
        .await
        .expect("query");
    assert_eq!(single_i64(&quarantine), 1);
    let failing = session
        .query("SELECT count(*) FROM dq_metrics WHERE table_name = 'vehicles' AND passed = true AND batch_id = 1")
        .await
        .expect("query");
    assert_eq!(single_i64(&failing), 2);
}

#[tokio::test]
async fn a_configured_table_without_data_yet_is_named_in_the_error() {
    let t = TestLake::new();
    let config = populated(&t.lake).await;
    let session = LocalQuery::open(&t.layout(), &config).await.expect("open");
    let err = session
        .query("SELECT * FROM drivers")
        .await
        .expect_err("no drivers table yet");
    assert!(
        matches!(&err, QueryError::NotCreatedYet { table, .. } if table == "drivers"),
        "{err:?}"
    );
    assert!(err.to_string().contains("drivers"), "{err}");

    let err = session
        .query("SELECT * FROM nowhere")
        .await
        .expect_err("unknown table");
    let message = err.to_string();
    assert!(matches!(err, QueryError::UnknownTable { .. }), "{message}");
    assert!(
        message.contains("vehicles_quarantine") && message.contains("dq_metrics"),
        "{message}"
    );
}

#[test]
fn the_query_command_prints_json_rows_from_the_stack_lake() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let lake_dir = cwd.path().join(".dqetl").join("demo").join("lake");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let lake = Lake::new(
            dqetl::config::layout::LakeLayout::local(&lake_dir),
            Default::default(),
        );
        populated(&lake).await;
    });
    let config = cwd.path().join("tables.yaml");
    std::fs::write(
        &config,
        r#"settings:
  trigger_interval: "10 seconds"
kafka:
  bootstrap_servers: "PLACEHOLDER_BOOTSTRAP_SERVERS"
tables:
  - name: vehicles
    primary_key: id
    schema:
      - {name: id, type: long, nullable: false}
      - {name: driver, type: string}
      - {name: speed, type: double}
    transforms:
      - {id: t1, type: rename, column: driver, params: {new_name: driver_name}, order: 1}
  - name: drivers
    primary_key: id
    schema:
      - {name: id, type: long, nullable: false}
"#,
    )
    .expect("write config");

    let run = |sql: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dqetl"))
            .current_dir(cwd.path())
            .args([
                "--config",
                "tables.yaml",
                "--stack-name",
                "demo",
                "--json",
                "query",
                sql,
            ])
            .output()
            .expect("run dqetl")
    };
    let out = run("SELECT id, speed FROM vehicles WHERE _is_current ORDER BY id");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    assert_eq!(rows, serde_json::json!([{"id": 1, "speed": 15.0}]));

    let out = run("SELECT * FROM drivers");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`drivers` has no data yet"), "{stderr}");

    std::fs::write(&config, "tables: [{name: broken}]\n").expect("write config");
    let out = run("SELECT 1");
    assert_eq!(out.status.code(), Some(2), "a config error exits with 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("tables.yaml"));
}
