//! Exactly-once into Delta: every commit records its Kafka end offsets as Delta transaction
//! actions; they read back after a restart, and a replay (same or other batch boundaries)
//! writes nothing twice. Plus the quarantine and metrics tables and the state blobs.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int32Array, Int64Array, ListBuilder, RecordBatch,
    StringArray, StringBuilder, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Int64Type};
use dqetl::pipeline::plan::MetricRow;
use dqetl::pipeline::schema::quarantine_schema;
use dqetl::sink::{CommitOutcome, Lake, LakeTable, SinkError};

use crate::sink_scd2::{
    GROUP, TOPIC, TestLake, at, changes, ends, insert, sql, update, vehicles, versions,
};
use dqetl::config::spec::{HardDeletes, TableSpec};

fn partitions(list: &[i32]) -> Vec<(String, i32)> {
    list.iter().map(|p| (TOPIC.to_string(), *p)).collect()
}

/// Quarantine rows (one per position) as the pipeline builds them.
pub fn quarantined(table: &TableSpec, positions: &[(i32, i64)]) -> RecordBatch {
    let n = positions.len();
    let mut rules = ListBuilder::new(StringBuilder::new());
    for _ in positions {
        rules.values().append_value("veh_001");
        rules.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            positions
                .iter()
                .map(|(_, o)| Some(*o))
                .collect::<Int64Array>(),
        ),
        Arc::new(StringArray::from(vec![Some("ana"); n])),
        Arc::new(Float64Array::from(vec![Some(-5.0); n])),
        Arc::new(rules.finish()),
        Arc::new(StringArray::from(vec![
            "veh_001: speed -5 is below the minimum 0";
            n
        ])),
        Arc::new(StringArray::from(vec![Some("insert"); n])),
        Arc::new(StringArray::from(vec![None::<&str>; n])),
        Arc::new(StringArray::from(vec![TOPIC; n])),
        Arc::new(positions.iter().map(|(p, _)| *p).collect::<Int32Array>()),
        Arc::new(positions.iter().map(|(_, o)| *o).collect::<Int64Array>()),
        Arc::new(
            TimestampMicrosecondArray::from(vec![Utc::now().timestamp_micros(); n])
                .with_timezone("UTC"),
        ),
    ];
    RecordBatch::try_new(quarantine_schema(table), columns).expect("quarantine batch")
}

pub fn metric(
    table: &str,
    name: &str,
    column: Option<&str>,
    value: f64,
    threshold: Option<f64>,
) -> MetricRow {
    MetricRow {
        table_name: table.into(),
        metric_name: name.into(),
        column_name: column.map(Into::into),
        metric_value: value,
        threshold,
        passed: threshold.is_none_or(|t| value >= t),
        scope: "batch",
    }
}

async fn count(location: &str, query: &str) -> i64 {
    let batches = sql(location, query).await;
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test]
async fn watermarks_are_read_back_after_a_restart() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let batch = changes(&table, &[insert(1, "ana", 10.0, "2026-03-01T09:00:00Z")]);
    t.lake
        .commit_changes(&table, &batch, &ends(&[(0, 41), (1, 7)]), GROUP, Utc::now())
        .await
        .expect("commit");

    let restarted = t.reopen();
    let marks = restarted
        .watermarks(
            LakeTable::Data("vehicles".into()),
            GROUP,
            &partitions(&[0, 1, 2]),
        )
        .await
        .expect("watermarks");
    let expected: HashMap<(String, i32), i64> =
        [((TOPIC.to_string(), 0), 41), ((TOPIC.to_string(), 1), 7)].into();
    assert_eq!(
        marks, expected,
        "partition 2 was never committed, so it has no watermark"
    );

    let other_group = restarted
        .watermarks(
            LakeTable::Data("vehicles".into()),
            "another-group",
            &partitions(&[0]),
        )
        .await
        .expect("watermarks");
    assert!(
        other_group.is_empty(),
        "watermarks belong to one consumer group"
    );
}

#[tokio::test]
async fn watermarks_of_a_table_that_does_not_exist_are_empty_and_create_nothing() {
    let t = TestLake::new();
    let marks = t
        .lake
        .watermarks(
            LakeTable::Quarantine("vehicles".into()),
            GROUP,
            &partitions(&[0]),
        )
        .await
        .expect("read");
    assert!(marks.is_empty());
    assert!(!std::path::Path::new(&t.layout().quarantine_table("vehicles")).exists());
}

#[tokio::test]
async fn a_replayed_batch_is_skipped_even_when_its_contents_differ() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let batch = changes(&table, &[insert(1, "ana", 10.0, "2026-03-01T09:00:00Z")]);
    t.lake
        .commit_changes(&table, &batch, &ends(&[(0, 10), (1, 4)]), GROUP, Utc::now())
        .await
        .expect("commit");
    let version = t.version("vehicles").await;

    // After a crash the processor re-reads offsets it already committed; whatever it rebuilds
    // from them (here a different change) must not be applied again.
    let rebuilt = changes(&table, &[update(1, "ana", 99.0, "2026-03-01T09:30:00Z")]);
    let outcome = t
        .reopen()
        .commit_changes(
            &table,
            &rebuilt,
            &ends(&[(0, 10), (1, 3)]),
            GROUP,
            Utc::now(),
        )
        .await
        .expect("replay");
    assert_eq!(outcome, CommitOutcome::Replayed);
    assert_eq!(t.version("vehicles").await, version);
    let rows = versions(&t).await;
    assert_eq!(
        rows.iter().map(|v| v.speed).collect::<Vec<_>>(),
        vec![Some(10.0)]
    );

    // One partition moving forward makes it a new batch: it is applied and only that
    // partition's watermark moves.
    let outcome = t
        .lake
        .commit_changes(
            &table,
            &rebuilt,
            &ends(&[(0, 10), (1, 5)]),
            GROUP,
            Utc::now(),
        )
        .await
        .expect("new batch");
    assert!(
        matches!(
            outcome,
            CommitOutcome::Committed {
                rows_inserted: 1,
                rows_closed: 1,
                ..
            }
        ),
        "{outcome:?}"
    );
    let marks = t
        .lake
        .watermarks(
            LakeTable::Data("vehicles".into()),
            GROUP,
            &partitions(&[0, 1]),
        )
        .await
        .expect("read");
    assert_eq!(
        (
            marks[&(TOPIC.to_string(), 0)],
            marks[&(TOPIC.to_string(), 1)]
        ),
        (10, 5)
    );
}

#[tokio::test]
async fn a_batch_that_changes_nothing_leaves_the_watermarks_where_they_were() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let batch = changes(&table, &[insert(1, "ana", 10.0, "2026-03-01T09:00:00Z")]);
    t.lake
        .commit_changes(&table, &batch, &ends(&[(0, 3)]), GROUP, Utc::now())
        .await
        .expect("commit");
    let outcome = t
        .lake
        .commit_changes(&table, &batch, &ends(&[(0, 8)]), GROUP, Utc::now())
        .await
        .expect("no-op");
    assert_eq!(outcome, CommitOutcome::Unchanged { rows_unchanged: 1 });
    let marks = t
        .lake
        .watermarks(LakeTable::Data("vehicles".into()), GROUP, &partitions(&[0]))
        .await
        .expect("read");
    assert_eq!(
        marks[&(TOPIC.to_string(), 0)],
        3,
        "no commit, so offsets 4..=8 will be read again (as no-ops)"
    );
}

#[tokio::test]
async fn a_quarantine_replay_with_other_batch_boundaries_adds_no_duplicates() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let first = quarantined(&table, &[(0, 0), (0, 2), (0, 4), (1, 1)]);
    let outcome = t
        .lake
        .append_quarantine(&table, &first, &ends(&[(0, 4), (1, 1)]), GROUP)
        .await
        .expect("first");
    assert!(
        matches!(
            outcome,
            CommitOutcome::Committed {
                rows_inserted: 4,
                ..
            }
        ),
        "{outcome:?}"
    );

    // Restarted from earlier offsets, cut differently: 2 and 4 of partition 0 and 1 of
    // partition 1 are already there; 6, 7 and partition 1's 3 are new.
    let replay = quarantined(&table, &[(0, 2), (0, 4), (0, 6), (0, 7), (1, 1), (1, 3)]);
    let outcome = t
        .reopen()
        .append_quarantine(&table, &replay, &ends(&[(0, 7), (1, 3)]), GROUP)
        .await
        .expect("replay");
    assert!(
        matches!(
            outcome,
            CommitOutcome::Committed {
                rows_inserted: 3,
                rows_unchanged: 3,
                ..
            }
        ),
        "{outcome:?}"
    );

    let location = t.layout().quarantine_table("vehicles");
    assert_eq!(count(&location, "SELECT count(*) FROM t").await, 7);
    assert_eq!(
        count(
            &location,
            "SELECT count(DISTINCT (_partition, _offset)) FROM t"
        )
        .await,
        7
    );

    // The same replay once more is recognised as committed.
    let outcome = t
        .lake
        .append_quarantine(&table, &replay, &ends(&[(0, 7), (1, 3)]), GROUP)
        .await
        .expect("again");
    assert_eq!(outcome, CommitOutcome::Replayed);
}

#[tokio::test]
async fn quarantine_rows_keep_their_reasons_and_provenance() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let rows = quarantined(&table, &[(2, 17)]);
    t.lake
        .append_quarantine(&table, &rows, &ends(&[(2, 17)]), GROUP)
        .await
        .expect("append");
    let batches = sql(
        &t.layout().quarantine_table("vehicles"),
        "SELECT _failed_rules[1] AS rule, _dq_reason, _topic, _partition, _offset, speed FROM t",
    )
    .await;
    let text = deltalake::arrow::util::pretty::pretty_format_batches(&batches)
        .expect("format")
        .to_string();
    for expected in [
        "veh_001",
        "below the minimum",
        TOPIC,
        "| 2 ",
        "| 17 ",
        "-5.0",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[tokio::test]
async fn dq_metrics_has_the_original_column_types() {
    let t = TestLake::new();
    let rows = [
        metric("vehicles", "Size", None, 3.0, Some(1.0)),
        metric("vehicles", "Completeness", Some("driver"), 0.5, Some(0.95)),
    ];
    let when = at("2026-03-01T12:00:00Z");
    let outcome = t
        .lake
        .append_metrics("vehicles", 42, &rows, &ends(&[(0, 9)]), GROUP, when)
        .await
        .expect("append");
    assert!(
        matches!(
            outcome,
            CommitOutcome::Committed {
                rows_inserted: 2,
                ..
            }
        ),
        "{outcome:?}"
    );

    let table = dqetl::sink::open_table("dq_metrics", &t.layout().metrics_table(), &HashMap::new())
        .await
        .expect("open")
        .expect("exists");
    let schema = table
        .snapshot()
        .expect("snapshot")
        .snapshot()
        .arrow_schema();
    let types: Vec<(String, DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    assert_eq!(
        types,
        dqetl::pipeline::schema::metrics_schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect::<Vec<_>>()
    );
    assert!(types.contains(&("batch_id".into(), DataType::Int64)));
    assert!(types.contains(&("passed".into(), DataType::Boolean)));

    let batches = sql(
        &t.layout().metrics_table(),
        "SELECT batch_id, metric_name, column_name, metric_value, threshold, passed, scope FROM t ORDER BY metric_name",
    )
    .await;
    let b = &batches[0];
    assert_eq!(
        b.column(0).as_primitive::<Int64Type>().values().to_vec(),
        vec![42, 42]
    );
    let passed = b.column(5).as_boolean();
    assert_eq!(
        (passed.value(0), passed.value(1)),
        (false, true),
        "Completeness 0.5 < 0.95 fails, Size passes"
    );
    assert!(b.column(2).is_null(1), "Size has no column");
}

#[tokio::test]
async fn a_replayed_metrics_batch_is_skipped() {
    let t = TestLake::new();
    let rows = [metric("vehicles", "Size", None, 3.0, None)];
    t.lake
        .append_metrics("vehicles", 1, &rows, &ends(&[(0, 9)]), GROUP, Utc::now())
        .await
        .expect("append");
    let again = t
        .reopen()
        .append_metrics("vehicles", 1, &rows, &ends(&[(0, 9)]), GROUP, Utc::now())
        .await
        .expect("again");
    assert_eq!(again, CommitOutcome::Replayed);
    assert_eq!(
        count(&t.layout().metrics_table(), "SELECT count(*) FROM t").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_metric_appends_from_several_tables_all_land() {
    let t = TestLake::new();
    // Separate lake handles behave like separate processors: they race to create dq_metrics and
    // then to append to it.
    let mut tasks = Vec::new();
    for source in ["vehicles", "drivers", "deliveries", "alerts"] {
        let lake = t.reopen();
        tasks.push(tokio::spawn(async move {
            for batch_id in 0..4i64 {
                let rows = [metric(source, "Size", None, batch_id as f64, None)];
                let end = [dqetl::pipeline::plan::SourcePosition {
                    topic: format!("cdc-{source}"),
                    partition: 0,
                    offset: batch_id,
                }];
                lake.append_metrics(source, batch_id, &rows, &end, GROUP, Utc::now())
                    .await?;
            }
            Ok::<Lake, SinkError>(lake)
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("appends");
    }
    let location = t.layout().metrics_table();
    assert_eq!(count(&location, "SELECT count(*) FROM t").await, 16);
    assert_eq!(
        count(
            &location,
            "SELECT count(DISTINCT (table_name, batch_id)) FROM t"
        )
        .await,
        16
    );
    let marks = t
        .lake
        .watermarks(LakeTable::Metrics, GROUP, &[("cdc-drivers".to_string(), 0)])
        .await
        .expect("read");
    assert_eq!(marks[&("cdc-drivers".to_string(), 0)], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_table_concurrently_does_not_fail_either_writer() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let (a, b) = (t.reopen(), t.reopen());
    let (ta, tb) = (table.clone(), table.clone());
    let first = tokio::spawn(async move {
        let batch = changes(&ta, &[insert(1, "ana", 10.0, "2026-03-01T09:00:00Z")]);
        a.commit_changes(&ta, &batch, &ends(&[(0, 0)]), GROUP, Utc::now())
            .await
    });
    let second = tokio::spawn(async move {
        let batch = changes(&tb, &[insert(2, "bo", 20.0, "2026-03-01T09:00:00Z")]);
        b.commit_changes(&tb, &batch, &ends(&[(1, 0)]), GROUP, Utc::now())
            .await
    });
    first.await.expect("task").expect("first writer");
    second.await.expect("task").expect("second writer");
    let rows = versions(&t).await;
    assert_eq!(rows.iter().map(|v| v.id).collect::<Vec<_>>(), vec![1, 2]);
}

#[tokio::test]
async fn state_blobs_round_trip_and_are_absent_until_saved() {
    let t = TestLake::new();
    assert_eq!(
        t.lake
            .load_state("metrics-vehicles.json")
            .await
            .expect("load"),
        None
    );
    t.lake
        .save_state("metrics-vehicles.json", br#"{"size":3}"#.to_vec())
        .await
        .expect("save");
    t.lake
        .save_state("metrics-vehicles.json", br#"{"size":5}"#.to_vec())
        .await
        .expect("replace");
    let loaded = t
        .reopen()
        .load_state("metrics-vehicles.json")
        .await
        .expect("load");
    assert_eq!(loaded.as_deref(), Some(&br#"{"size":5}"#[..]));
    let on_disk = std::path::Path::new(&t.layout().state_dir()).join("metrics-vehicles.json");
    assert!(
        on_disk.is_file(),
        "stored under the layout's state dir: {}",
        on_disk.display()
    );

    let err = t
        .lake
        .save_state("../escape", b"x".to_vec())
        .await
        .expect_err("refused");
    assert!(matches!(err, SinkError::StateName { .. }), "{err:?}");
}

#[tokio::test]
async fn resume_offsets_take_the_least_progress_of_the_three_tables_commits_or_not() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let none = quarantined(&table, &[]);
    let rows = changes(&table, &[insert(1, "ana", 10.0, "2026-03-01T09:00:00Z")]);

    // Batch 1: data commits; quarantine and metrics have nothing to write, so they only note it.
    let first = ends(&[(0, 4), (1, 2)]);
    t.lake
        .commit_changes(&table, &rows, &first, GROUP, Utc::now())
        .await
        .expect("data");
    assert_eq!(
        t.lake
            .append_quarantine(&table, &none, &first, GROUP)
            .await
            .expect("quarantine"),
        CommitOutcome::Unchanged { rows_unchanged: 0 }
    );
    t.lake
        .append_metrics("vehicles", 1, &[], &first, GROUP, Utc::now())
        .await
        .expect("metrics");
    let resume = t
        .reopen()
        .resume_offsets("vehicles", GROUP, &partitions(&[0, 1, 2]))
        .await
        .expect("resume");
    let expected: HashMap<(String, i32), i64> =
        [((TOPIC.to_string(), 0), 5), ((TOPIC.to_string(), 1), 3)].into();
    assert_eq!(
        resume, expected,
        "partition 2 was never read, so it starts from the beginning"
    );
    assert!(
        t.lake
            .load_state("does-not-exist")
            .await
            .expect("load")
            .is_none()
    );

    // Batch 2: the data is a no-op (noted, no commit), quarantine and metrics commit.
    let second = ends(&[(0, 9)]);
    let outcome = t
        .lake
        .commit_changes(&table, &rows, &second, GROUP, Utc::now())
        .await
        .expect("data");
    assert_eq!(outcome, CommitOutcome::Unchanged { rows_unchanged: 1 });
    t.lake
        .append_quarantine(&table, &quarantined(&table, &[(0, 7)]), &second, GROUP)
        .await
        .expect("quarantine");
    t.lake
        .append_metrics(
            "vehicles",
            2,
            &[metric("vehicles", "Size", None, 1.0, None)],
            &second,
            GROUP,
            Utc::now(),
        )
        .await
        .expect("metrics");
    let resume = t
        .reopen()
        .resume_offsets("vehicles", GROUP, &partitions(&[0]))
        .await
        .expect("resume");
    assert_eq!(resume[&(TOPIC.to_string(), 0)], 10);

    // Batch 3 crashes after the data commit: quarantine and metrics never saw it, so the
    // partition resumes where they stopped, not after the data.
    let third = ends(&[(0, 15)]);
    let moved = changes(&table, &[update(1, "ana", 11.0, "2026-03-01T10:00:00Z")]);
    t.lake
        .commit_changes(&table, &moved, &third, GROUP, Utc::now())
        .await
        .expect("data");
    let resume = t
        .reopen()
        .resume_offsets("vehicles", GROUP, &partitions(&[0]))
        .await
        .expect("resume");
    assert_eq!(resume[&(TOPIC.to_string(), 0)], 10);
}

#[tokio::test]
async fn compaction_merges_small_files_and_keeps_rows_and_watermarks() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    assert_eq!(
        t.lake
            .compact(LakeTable::Data("vehicles".into()))
            .await
            .expect("compact"),
        None,
        "no table yet"
    );
    // New keys each batch: every MERGE adds a small file.
    for id in 0..4i64 {
        let batch = changes(&table, &[insert(id, "ana", 10.0, "2026-03-01T09:00:00Z")]);
        t.lake
            .commit_changes(&table, &batch, &ends(&[(0, id)]), GROUP, Utc::now())
            .await
            .expect("commit");
    }
    let before = versions(&t).await;
    let done = t
        .lake
        .compact(LakeTable::Data("vehicles".into()))
        .await
        .expect("compact")
        .expect("table exists");
    assert!(
        done.files_removed > done.files_added && done.files_added >= 1,
        "{done:?}"
    );
    assert!(done.version.is_some());
    assert_eq!(versions(&t).await, before, "compaction changes no row");
    let marks = t
        .lake
        .watermarks(LakeTable::Data("vehicles".into()), GROUP, &partitions(&[0]))
        .await
        .expect("read");
    assert_eq!(marks[&(TOPIC.to_string(), 0)], 3);

    // A MERGE after the compaction still works on the rewritten files.
    let batch = changes(&table, &[update(1, "ana", 14.0, "2026-03-01T09:04:00Z")]);
    t.lake
        .commit_changes(&table, &batch, &ends(&[(0, 4)]), GROUP, Utc::now())
        .await
        .expect("commit");
    crate::sink_scd2::assert_invariants(&versions(&t).await);
}

#[tokio::test]
async fn a_checkpoint_is_written_in_the_background_every_hundred_versions() {
    let t = TestLake::new();
    let log = t.dir.path().join("dq_metrics").join("_delta_log");
    let checkpoints = || -> Vec<String> {
        let mut found: Vec<String> = walk(&log)
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|name| name.contains(".checkpoint."))
            .collect();
        found.sort();
        found
    };
    let rows = [metric("vehicles", "Size", None, 1.0, None)];
    let mut last = 0;
    for offset in 0..101 {
        let outcome = t
            .lake
            .append_metrics(
                "vehicles",
                offset,
                &rows,
                &ends(&[(0, offset)]),
                GROUP,
                Utc::now(),
            )
            .await
            .expect("append");
        if let CommitOutcome::Committed { version, .. } = outcome {
            last = version;
        }
    }
    assert!(last >= 100, "versions up to {last}");
    t.lake.settle().await;
    assert_eq!(
        checkpoints(),
        vec!["00000000000000000099.checkpoint.parquet".to_string()],
        "one checkpoint, at version 99 as delta-rs places them"
    );
    let pointer: serde_json::Value = serde_json::from_slice(
        &std::fs::read(log.join("_last_checkpoint")).expect("_last_checkpoint"),
    )
    .expect("JSON");
    assert_eq!(pointer["version"], 99);
    // Another reader loads the table from the checkpoint and sees every row.
    assert_eq!(
        count(&t.layout().metrics_table(), "SELECT count(*) FROM t").await,
        101
    );
}

#[tokio::test]
async fn a_data_tables_compaction_gathers_files_up_to_the_splice_threshold_not_beyond() {
    let t = TestLake::new();
    // Files of at most about 12 rows: a bin holds two of the 5-row files, not three.
    let lake = t.reopen().with_splice_min_rows(12);
    let table = vehicles(HardDeletes::Close, false);
    for batch in 0..6i64 {
        let rows: Vec<_> = (0..5)
            .map(|i| insert(batch * 5 + i, "ana", 10.0, "2026-03-01T09:00:00Z"))
            .collect();
        lake.commit_changes(
            &table,
            &changes(&table, &rows),
            &ends(&[(0, batch)]),
            GROUP,
            Utc::now(),
        )
        .await
        .expect("commit");
    }
    let before = versions(&t).await;
    let done = lake
        .compact(LakeTable::Data("vehicles".into()))
        .await
        .expect("compact")
        .expect("table exists");
    assert_eq!((done.files_removed, done.files_added), (6, 3), "{done:?}");
    let rows: Vec<usize> = crate::sink_splice::files(&crate::sink_splice::data_table(&t).await)
        .into_iter()
        .map(|(_, rows)| rows)
        .collect();
    assert_eq!(rows, vec![10, 10, 10]);
    assert_eq!(versions(&t).await, before, "compaction changes no row");
}

/// The files of a table's latest version, relative to its folder, sorted.
pub async fn live_files(name: &str, location: &str) -> Vec<String> {
    let mut live: Vec<String> = dqetl::sink::open_table(name, location, &HashMap::new())
        .await
        .expect("open table")
        .expect("table exists")
        .snapshot()
        .expect("snapshot")
        .log_data()
        .iter()
        .map(|f| f.path().to_string())
        .collect();
    live.sort();
    live
}

/// The parquet files under a table's folder (the log excluded), relative to it.
pub fn parquet_files_on_disk(dir: &std::path::Path) -> Vec<String> {
    let mut found: Vec<String> = walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .filter(|p| !p.components().any(|c| c.as_os_str() == "_delta_log"))
        .map(|p| {
            p.strip_prefix(dir)
                .expect("under the table")
                .display()
                .to_string()
        })
        .collect();
    found.sort();
    found
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read table folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn vacuum_deletes_replaced_and_orphaned_files_older_than_the_retention_and_keeps_rows() {
    let t = TestLake::new();
    let data = LakeTable::Data("vehicles".into());
    let table = vehicles(HardDeletes::Close, false);
    assert_eq!(
        t.lake
            .vacuum(data.clone(), std::time::Duration::ZERO)
            .await
            .expect("vacuum"),
        None,
        "no table yet"
    );
    for id in 0..3i64 {
        let batch = changes(&table, &[insert(id, "ana", 10.0, "2026-03-01T09:00:00Z")]);
        t.lake
            .commit_changes(&table, &batch, &ends(&[(0, id)]), GROUP, Utc::now())
            .await
            .expect("commit");
    }
    // Closing key 1 rewrites its file: the old one stays on disk for older versions.
    let batch = changes(&table, &[update(1, "ana", 14.0, "2026-03-01T09:04:00Z")]);
    t.lake
        .commit_changes(&table, &batch, &ends(&[(0, 3)]), GROUP, Utc::now())
        .await
        .expect("commit");
    let folder = t.dir.path().join("vehicles");
    // What a writer killed before its commit leaves behind.
    std::fs::write(folder.join("part-orphan.parquet"), b"never committed").expect("orphan");
    let before = versions(&t).await;
    let on_disk = parquet_files_on_disk(&folder);

    let kept = t
        .lake
        .vacuum(data.clone(), std::time::Duration::from_secs(3600))
        .await
        .expect("vacuum")
        .expect("table exists");
    assert_eq!(kept.files_deleted, 0, "everything is younger than an hour");
    assert_eq!(parquet_files_on_disk(&folder), on_disk);

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let done = t
        .lake
        .vacuum(data.clone(), std::time::Duration::from_secs(1))
        .await
        .expect("vacuum")
        .expect("table exists");
    let live = live_files("vehicles", &t.layout().data_table("vehicles")).await;
    assert_eq!(
        parquet_files_on_disk(&folder),
        live,
        "only the files of the latest version are left"
    );
    assert_eq!(done.files_deleted as usize, on_disk.len() - live.len());
    assert!(
        done.files_deleted >= 2,
        "the replaced file and the orphan: {done:?}"
    );
    assert_eq!(versions(&t).await, before, "vacuum changes no row");

    // The next commit works on the vacuumed table, from this handle and from another one.
    let batch = changes(&table, &[update(2, "ana", 15.0, "2026-03-01T09:05:00Z")]);
    t.reopen()
        .commit_changes(&table, &batch, &ends(&[(0, 4)]), GROUP, Utc::now())
        .await
        .expect("commit");
    let batch = changes(&table, &[update(0, "ana", 16.0, "2026-03-01T09:06:00Z")]);
    t.lake
        .commit_changes(&table, &batch, &ends(&[(0, 5)]), GROUP, Utc::now())
        .await
        .expect("commit");
    crate::sink_scd2::assert_invariants(&versions(&t).await);
}

/// A moto S3 server on a free local port, stopped when dropped.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl S3Server {
    async fn start(buckets: &[&str]) -> S3Server {
        let venv = std::env::var("DQETL_VENV").unwrap_or_else(|_| "/var/cache/dqetl/venv".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let child = std::process::Command::new(format!("{venv}/bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {venv}/bin/moto_server failed ({e}); install moto[server] in the venv"
                )
            });
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        for attempt in 0.. {
            if http.get(&server.endpoint).send().await.is_ok() {
                break;
            }
            assert!(attempt < 100, "moto did not start on {}", server.endpoint);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        for bucket in buckets {
            let created = http
                .put(format!("{}/{bucket}", server.endpoint))
                .send()
                .await
                .expect("create bucket");
            assert!(
                created.status().is_success(),
                "creating bucket {bucket}: {}",
                created.status()
            );
        }
        server
    }

    fn storage_options(&self) -> HashMap<String, String> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The aws layout of stack `demo` in account 123456789012 (buckets `demo-delta-…` and
/// `demo-quarantine-…`) for the `vehicles` table.
fn s3_layout() -> dqetl::config::layout::LakeLayout {
    let config = dqetl::config::spec::ConfigSpec {
        settings: dqetl::config::spec::SettingsSpec {
            checkpoint_location: None,
            quarantine_path: None,
            delta_bucket: None,
            trigger_interval: std::time::Duration::from_secs(10),
            max_batch_records: 10,
            max_batch_bytes: 1 << 20,
            maintenance_interval: None,
            vacuum_retention: std::time::Duration::from_secs(7 * 24 * 3600),
        },
        kafka: dqetl::config::spec::KafkaSpec {
            bootstrap_servers: None,
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            partitions: 1,
            consumer_group: None,
            consumer_options: Vec::new(),
            on_data_loss: Default::default(),
        },
        schema_name: "public".into(),
        tables: vec![vehicles(HardDeletes::Close, false)],
    };
    dqetl::config::layout::LakeLayout::aws(&config, "demo", "123456789012")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lake_works_on_s3_with_concurrent_writers() {
    let s3 = S3Server::start(&["demo-delta-123456789012", "demo-quarantine-123456789012"]).await;
    let layout = s3_layout();
    assert!(layout.data_table("vehicles").starts_with("s3://"));
    let lake = Lake::new(layout.clone(), s3.storage_options());
    let table = vehicles(HardDeletes::Close, false);

    let first = changes(&table, &[insert(1, "ana", 10.0, "2026-03-01T09:00:00Z")]);
    lake.commit_changes(&table, &first, &ends(&[(0, 0)]), GROUP, Utc::now())
        .await
        .expect("first on s3");
    let second = changes(&table, &[update(1, "ana", 12.0, "2026-03-01T10:00:00Z")]);
    let outcome = lake
        .commit_changes(&table, &second, &ends(&[(0, 1)]), GROUP, Utc::now())
        .await
        .expect("second");
    assert!(
        matches!(
            outcome,
            CommitOutcome::Committed {
                rows_inserted: 1,
                rows_closed: 1,
                ..
            }
        ),
        "{outcome:?}"
    );
    lake.append_quarantine(
        &table,
        &quarantined(&table, &[(0, 1)]),
        &ends(&[(0, 1)]),
        GROUP,
    )
    .await
    .expect("quarantine");
    lake.save_state("cumulative-vehicles.json", b"{}".to_vec())
        .await
        .expect("state");

    // Writers in "other processes" race on dq_metrics; conditional puts keep every commit.
    let mut writers = Vec::new();
    for source in ["vehicles", "drivers", "alerts"] {
        let lake = Lake::new(layout.clone(), s3.storage_options());
        writers.push(tokio::spawn(async move {
            for batch_id in 0..3i64 {
                let end = [dqetl::pipeline::plan::SourcePosition {
                    topic: format!("cdc-{source}"),
                    partition: 0,
                    offset: batch_id,
                }];
                let rows = [metric(source, "Size", None, 1.0, None)];
                lake.append_metrics(source, batch_id, &rows, &end, GROUP, Utc::now())
                    .await?;
            }
            Ok::<(), SinkError>(())
        }));
    }
    for w in writers {
        w.await.expect("task").expect("metrics on s3");
    }

    let fresh = Lake::new(layout.clone(), s3.storage_options());
    let marks = fresh
        .watermarks(LakeTable::Data("vehicles".into()), GROUP, &partitions(&[0]))
        .await
        .expect("read");
    assert_eq!(marks[&(TOPIC.to_string(), 0)], 1);
    assert_eq!(
        fresh
            .load_state("cumulative-vehicles.json")
            .await
            .expect("load")
            .as_deref(),
        Some(&b"{}"[..])
    );
    let options = s3.storage_options();
    assert_eq!(count_rows(&layout.metrics_table(), &options).await, 9);

    // Maintenance on S3: the data file the update replaced is deleted, dq_metrics' small files
    // are compacted, and every row stays.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let vacuumed = fresh
        .vacuum(
            LakeTable::Data("vehicles".into()),
            std::time::Duration::from_secs(1),
        )
        .await
        .expect("vacuum on s3")
        .expect("table exists");
    assert!(vacuumed.files_deleted >= 1, "{vacuumed:?}");
    let compacted = fresh
        .compact(LakeTable::Metrics)
        .await
        .expect("compact on s3")
        .expect("table exists");
    assert!(compacted.files_removed >= 9, "{compacted:?}");
    assert_eq!(count_rows(&layout.metrics_table(), &options).await, 9);
    assert_eq!(
        count_rows(&layout.data_table("vehicles"), &options).await,
        2
    );
}

/// The rows of a Delta table on S3.
async fn count_rows(location: &str, options: &HashMap<String, String>) -> i64 {
    sql_count(location, options, "SELECT count(*) FROM t").await
}

/// The single number `query` gives over the Delta table at `location`, registered as `t`.
async fn sql_count(location: &str, options: &HashMap<String, String>, query: &str) -> i64 {
    let table = dqetl::sink::open_table("t", location, options)
        .await
        .expect("open")
        .expect("exists");
    let ctx = deltalake::datafusion::prelude::SessionContext::new();
    table
        .update_datafusion_session(&ctx.state())
        .expect("object store");
    ctx.register_table("t", table.table_provider().await.expect("provider"))
        .expect("register");
    let counted = ctx
        .sql(query)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    counted[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// Changes that carry their Kafka positions, as `positioned_changes_schema` describes.
fn positioned(table: &TableSpec, rows: &[(crate::sink_scd2::Change, i32, i64)]) -> RecordBatch {
    let plain = changes(
        table,
        &rows.iter().map(|(c, _, _)| c.clone()).collect::<Vec<_>>(),
    );
    let mut columns = plain.columns().to_vec();
    columns.push(Arc::new(StringArray::from(vec![TOPIC; rows.len()])));
    columns.push(Arc::new(
        rows.iter().map(|(_, p, _)| *p).collect::<Int32Array>(),
    ));
    columns.push(Arc::new(
        rows.iter().map(|(_, _, o)| *o).collect::<Int64Array>(),
    ));
    RecordBatch::try_new(
        dqetl::pipeline::schema::positioned_changes_schema(table),
        columns,
    )
    .expect("positioned")
}

#[tokio::test]
async fn positioned_changes_overlapping_the_watermark_are_filtered_row_by_row() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, true);
    let first = positioned(
        &table,
        &[
            (insert(1, "ana", 10.0, "2026-03-01T09:00:00Z"), 0, 0),
            (update(1, "ana", 20.0, "2026-03-01T09:10:00Z"), 0, 1),
            (insert(2, "bo", 5.0, "2026-03-01T09:00:00Z"), 1, 0),
            (crate::sink_scd2::delete(2, "2026-03-01T09:20:00Z"), 1, 1),
        ],
    );
    t.lake
        .commit_changes(&table, &first, &ends(&[(0, 1), (1, 1)]), GROUP, Utc::now())
        .await
        .expect("first");
    let before = versions(&t).await;

    // Resumed from an earlier offset: everything up to the watermarks again, plus one new event.
    // Re-applied, the old events would add ana@10 and ana@20 again and resurrect bo.
    let replay = positioned(
        &table,
        &[
            (insert(1, "ana", 10.0, "2026-03-01T09:00:00Z"), 0, 0),
            (update(1, "ana", 20.0, "2026-03-01T09:10:00Z"), 0, 1),
            (update(1, "ana", 30.0, "2026-03-01T09:30:00Z"), 0, 2),
            (insert(2, "bo", 5.0, "2026-03-01T09:00:00Z"), 1, 0),
        ],
    );
    let outcome = t
        .lake
        .commit_changes(&table, &replay, &ends(&[(0, 2), (1, 0)]), GROUP, Utc::now())
        .await
        .expect("replay");
    assert!(
        matches!(
            outcome,
            CommitOutcome::Committed {
                rows_inserted: 1,
                rows_closed: 1,
                rows_unchanged: 3,
                ..
            }
        ),
        "{outcome:?}"
    );
    let rows = versions(&t).await;
    crate::sink_scd2::assert_invariants(&rows);
    assert_eq!(rows.len(), before.len() + 1);
    let history: Vec<(i64, Option<f64>, bool)> =
        rows.iter().map(|v| (v.id, v.speed, v.current)).collect();
    assert_eq!(
        history,
        vec![
            (1, Some(10.0), false),
            (1, Some(20.0), false),
            (1, Some(30.0), true),
            (2, Some(5.0), false)
        ]
    );
}

/// Positioned changes handed over as rows picked from a wider batch are filtered by the
/// watermarks like a batch of those rows alone; the rows left out play no part.
#[tokio::test]
async fn positioned_changes_picked_from_a_wider_batch_are_filtered_like_those_rows_alone() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, true);
    let first = positioned(
        &table,
        &[
            (insert(1, "ana", 10.0, "2026-03-01T09:00:00Z"), 0, 0),
            (update(1, "ana", 20.0, "2026-03-01T09:10:00Z"), 0, 1),
        ],
    );
    t.lake
        .commit_changes(&table, &first, &ends(&[(0, 1)]), GROUP, Utc::now())
        .await
        .expect("first");
    let no_key = crate::sink_scd2::keyless(insert(7, "zed", 1.0, "2026-03-01T09:40:00Z"));
    let wide = positioned(
        &table,
        &[
            (no_key, 0, 2),
            (insert(1, "ana", 10.0, "2026-03-01T09:00:00Z"), 0, 0),
            (update(1, "ana", 20.0, "2026-03-01T09:10:00Z"), 0, 1),
            (insert(9, "cy", 1.0, "2026-03-01T09:40:00Z"), 0, 3),
            (update(1, "ana", 30.0, "2026-03-01T09:30:00Z"), 0, 2),
        ],
    );
    let picked = dqetl::pipeline::plan::Changes {
        batch: wide,
        rows: Some(vec![1, 2, 4]),
    };
    let outcome = t
        .lake
        .commit_changes(&table, &picked, &ends(&[(0, 2)]), GROUP, Utc::now())
        .await
        .expect("picked replay");
    // Inserted ana@30; closed ana@20; unchanged: the two rows at or below the watermark.
    assert_eq!(crate::sink_scd2::committed(&outcome), (1, 1, 2));
    let rows = versions(&t).await;
    crate::sink_scd2::assert_invariants(&rows);
    let history: Vec<(i64, Option<f64>, bool)> =
        rows.iter().map(|v| (v.id, v.speed, v.current)).collect();
    assert_eq!(
        history,
        vec![
            (1, Some(10.0), false),
            (1, Some(20.0), false),
            (1, Some(30.0), true),
        ]
    );
}

/// The rows left after the watermark filter close the versions of their own keys, not of the
/// keys at the same row numbers in the batch as it came.
#[tokio::test]
async fn a_filtered_replay_closes_the_versions_of_the_keys_it_kept() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let first = positioned(
        &table,
        &[
            (insert(1, "ana", 10.0, "2026-03-01T09:00:00Z"), 0, 0),
            (insert(2, "bo", 5.0, "2026-03-01T09:00:00Z"), 1, 0),
        ],
    );
    t.lake
        .commit_changes(&table, &first, &ends(&[(0, 0), (1, 0)]), GROUP, Utc::now())
        .await
        .expect("first");
    // Key 1's insert is at the watermark and left out; key 2's update is new.
    let replay = positioned(
        &table,
        &[
            (insert(1, "ana", 10.0, "2026-03-01T09:00:00Z"), 0, 0),
            (update(2, "bo", 6.0, "2026-03-01T09:30:00Z"), 1, 1),
        ],
    );
    t.lake
        .commit_changes(&table, &replay, &ends(&[(0, 0), (1, 1)]), GROUP, Utc::now())
        .await
        .expect("replay");
    let rows = versions(&t).await;
    crate::sink_scd2::assert_invariants(&rows);
    let history: Vec<(i64, Option<f64>, bool)> =
        rows.iter().map(|v| (v.id, v.speed, v.current)).collect();
    assert_eq!(
        history,
        vec![
            (1, Some(10.0), true),
            (2, Some(5.0), false),
            (2, Some(6.0), true)
        ]
    );
}

/// `rows` inserts (`id` 1..=rows) whose driver names are 8 KiB of incompressible text each, so
/// that their data file is larger than the sink's 8 MiB upload part.
fn wide_inserts(table: &TableSpec, rows: i64) -> RecordBatch {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let drivers: StringArray = (0..rows)
        .map(|_| {
            Some(
                (0..512)
                    .map(|_| format!("{:016x}", noise()))
                    .collect::<String>(),
            )
        })
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(1..=rows)),
        Arc::new(drivers),
        Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64))),
        Arc::new(StringArray::from_iter_values((0..rows).map(|_| "INSERT"))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                (0..rows).map(|_| crate::sink_scd2::ts("2026-03-01T09:00:00Z")),
            )
            .with_timezone("UTC"),
        ),
    ];
    RecordBatch::try_new(dqetl::pipeline::schema::changes_schema(table), columns)
        .expect("wide changes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spliced_file_larger_than_an_upload_part_goes_to_s3_in_parts() {
    use deltalake::logstore::object_store::ObjectStoreExt as _;

    let s3 = S3Server::start(&["demo-delta-123456789012", "demo-quarantine-123456789012"]).await;
    let layout = s3_layout();
    let options = s3.storage_options();
    let lake = Lake::new(layout.clone(), options.clone()).with_splice_min_rows(1);
    let table = vehicles(HardDeletes::Close, false);
    let rows = 1_200;
    lake.commit_changes(
        &table,
        &wide_inserts(&table, rows),
        &ends(&[(0, 0)]),
        GROUP,
        Utc::now(),
    )
    .await
    .expect("wide inserts on s3");
    let update = changes(&table, &[update(7, "ana", 1.0, "2026-03-01T10:00:00Z")]);
    let outcome = lake
        .commit_changes(&table, &update, &ends(&[(0, 1)]), GROUP, Utc::now())
        .await
        .expect("the update splices the wide file");
    assert_eq!(crate::sink_scd2::committed(&outcome), (1, 1, 0));

    let location = layout.data_table("vehicles");
    let data = dqetl::sink::open_table("vehicles", &location, &options)
        .await
        .expect("open")
        .expect("exists");
    let spliced: Vec<_> = data
        .snapshot()
        .expect("snapshot")
        .log_data()
        .iter()
        .filter(|f| f.num_records() == Some(rows as usize))
        .map(|f| (f.object_store_path(), f.size()))
        .collect();
    assert_eq!(spliced.len(), 1, "the spliced file: {spliced:?}");
    let (path, size) = &spliced[0];
    assert!(*size > 8 * 1024 * 1024, "larger than a part: {size} bytes");
    let stored = data
        .object_store()
        .head(path)
        .await
        .expect("the spliced file is stored");
    assert_eq!(stored.size, *size as u64);
    // S3 names a multipart object's ETag after its parts: "<digest>-<parts>".
    let e_tag = stored.e_tag.unwrap_or_default();
    assert!(
        e_tag.trim_matches('"').ends_with("-2"),
        "uploaded in two parts: ETag {e_tag}"
    );
    assert_eq!(count_rows(&location, &options).await, rows + 1);
    let current = sql_count(
        &location,
        &options,
        "SELECT count(*) FROM t WHERE _is_current AND length(driver_name) = 8192",
    )
    .await;
    assert_eq!(
        current,
        rows - 1,
        "every other key keeps its wide current version"
    );
}
