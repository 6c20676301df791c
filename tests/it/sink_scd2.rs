//! SCD Type 2 into Delta on disk: given these changes, the table holds these versions, and the
//! invariants hold after every scenario (at most one current row per key, no overlapping
//! history intervals).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMicrosecondType};
use deltalake::datafusion::prelude::SessionContext;
use dqetl::config::layout::LakeLayout;
use dqetl::config::spec::{
    ColumnSpec, ColumnType, HardDeletes, Scd2Spec, TableSpec, TransformKind, TransformSpec,
};
use dqetl::pipeline::plan::SourcePosition;
use dqetl::pipeline::schema::changes_schema;
use dqetl::sink::{CommitOutcome, Lake, LakeTable, SinkError};

pub const GROUP: &str = "dqetl-test";
pub const TOPIC: &str = "cdc-vehicles";

fn column(name: &str, column_type: ColumnType) -> ColumnSpec {
    ColumnSpec {
        name: name.into(),
        column_type,
        nullable: true,
        unique: false,
        default: None,
    }
}

/// `vehicles(id long pk, driver string → renamed driver_name, speed double)`.
pub fn vehicles(hard_deletes: HardDeletes, track_intermediate: bool) -> TableSpec {
    TableSpec {
        name: "vehicles".into(),
        topic: TOPIC.into(),
        delta_path: None,
        primary_key: Some("id".into()),
        internal: false,
        columns: vec![
            column("id", ColumnType::Long),
            column("driver", ColumnType::String),
            column("speed", ColumnType::Double),
        ],
        rules: Vec::new(),
        transforms: vec![TransformSpec {
            id: "t1".into(),
            column: "driver".into(),
            kind: TransformKind::Rename {
                new_name: "driver_name".into(),
            },
            order: 1,
        }],
        checks: Vec::new(),
        anomaly_checks: Vec::new(),
        foreign_keys: Vec::new(),
        indexes: Vec::new(),
        scd2: Scd2Spec {
            sequence_by: None,
            hard_deletes,
            track_intermediate,
        },
        mask_pii_in_quarantine: true,
    }
}

pub fn ts(text: &str) -> i64 {
    text.parse::<DateTime<Utc>>()
        .expect("test timestamp")
        .timestamp_micros()
}

pub fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("test timestamp")
}

/// One change as the pipeline hands it to the sink.
#[derive(Clone)]
pub struct Change {
    id: Option<i64>,
    driver: Option<&'static str>,
    speed: Option<f64>,
    operation: &'static str,
    effective_from: &'static str,
}

pub fn insert(id: i64, driver: &'static str, speed: f64, when: &'static str) -> Change {
    Change {
        id: Some(id),
        driver: Some(driver),
        speed: Some(speed),
        operation: "INSERT",
        effective_from: when,
    }
}

pub fn update(id: i64, driver: &'static str, speed: f64, when: &'static str) -> Change {
    Change {
        operation: "UPDATE",
        ..insert(id, driver, speed, when)
    }
}

/// A key-only delete image.
pub fn delete(id: i64, when: &'static str) -> Change {
    Change {
        id: Some(id),
        driver: None,
        speed: None,
        operation: "DELETE",
        effective_from: when,
    }
}

/// `change` without its key: a row the sink refuses, to show it takes no part when left out.
pub fn keyless(mut change: Change) -> Change {
    change.id = None;
    change
}

pub fn changes(table: &TableSpec, rows: &[Change]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(rows.iter().map(|c| c.id).collect::<Int64Array>()),
        Arc::new(rows.iter().map(|c| c.driver).collect::<StringArray>()),
        Arc::new(rows.iter().map(|c| c.speed).collect::<Float64Array>()),
        Arc::new(
            rows.iter()
                .map(|c| Some(c.operation))
                .collect::<StringArray>(),
        ),
        Arc::new(
            TimestampMicrosecondArray::from(
                rows.iter()
                    .map(|c| ts(c.effective_from))
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
    ];
    RecordBatch::try_new(changes_schema(table), columns).expect("changes batch")
}

pub fn ends(offsets: &[(i32, i64)]) -> Vec<SourcePosition> {
    offsets
        .iter()
        .map(|(p, o)| SourcePosition {
            topic: TOPIC.into(),
            partition: *p,
            offset: *o,
        })
        .collect()
}

pub struct TestLake {
    pub dir: tempfile::TempDir,
    pub lake: Lake,
}

impl TestLake {
    pub fn new() -> TestLake {
        let dir = tempfile::tempdir().expect("temp dir");
        let lake = Lake::new(LakeLayout::local(dir.path()), HashMap::new());
        TestLake { dir, lake }
    }

    pub fn layout(&self) -> LakeLayout {
        LakeLayout::local(self.dir.path())
    }

    /// A second, independent handle on the same lake (another process, as far as Delta knows).
    pub fn reopen(&self) -> Lake {
        Lake::new(self.layout(), HashMap::new())
    }

    pub async fn version(&self, table: &str) -> Option<u64> {
        self.lake
            .table_version(&LakeTable::Data(table.into()))
            .await
            .expect("table version")
    }
}

/// SQL over one Delta table at `location`, registered as `t`.
pub async fn sql(location: &str, query: &str) -> Vec<RecordBatch> {
    let table = dqetl::sink::open_table("t", location, &HashMap::new())
        .await
        .expect("open table")
        .expect("table exists");
    let ctx = SessionContext::new();
    ctx.register_table("t", table.table_provider().await.expect("provider"))
        .expect("register");
    ctx.sql(query)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run")
}

/// One stored version, read back from the Delta table.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub id: i64,
    pub driver_name: Option<String>,
    pub speed: Option<f64>,
    pub operation: String,
    pub from: i64,
    pub to: Option<i64>,
    pub current: bool,
    pub ingested_at: i64,
}

pub async fn versions(t: &TestLake) -> Vec<Version> {
    let location = t.layout().data_table("vehicles");
    let batches = sql(
        &location,
        "SELECT id, driver_name, speed, _operation, _effective_from, _effective_to, _is_current, _ingested_at \
         FROM t ORDER BY id, _effective_from, _effective_to NULLS LAST, _is_current",
    )
    .await;
    let mut out = Vec::new();
    for b in &batches {
        let text = |i: usize| cast(b.column(i), &DataType::Utf8).expect("cast to text");
        let (driver, operation) = (text(1), text(3));
        let (driver, operation) = (driver.as_string::<i32>(), operation.as_string::<i32>());
        let id = b.column(0).as_primitive::<Int64Type>();
        let speed = b.column(2).as_primitive::<Float64Type>();
        let from = b.column(4).as_primitive::<TimestampMicrosecondType>();
        let to = b.column(5).as_primitive::<TimestampMicrosecondType>();
        let current = b
            .column(6)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .expect("boolean");
        let ingested = b.column(7).as_primitive::<TimestampMicrosecondType>();
        for r in 0..b.num_rows() {
            out.push(Version {
                id: id.value(r),
                driver_name: driver.is_valid(r).then(|| driver.value(r).to_string()),
                speed: speed.is_valid(r).then(|| speed.value(r)),
                operation: operation.value(r).to_string(),
                from: from.value(r),
                to: to.is_valid(r).then(|| to.value(r)),
                current: current.value(r),
                ingested_at: ingested.value(r),
            });
        }
    }
    out
}

/// At most one current row per key; the current row is open and the latest; closed rows end
/// no earlier than they start; intervals of one key never overlap.
pub fn assert_invariants(rows: &[Version]) {
    let mut by_key: BTreeMap<i64, Vec<&Version>> = BTreeMap::new();
    for r in rows {
        by_key.entry(r.id).or_default().push(r);
    }
    for (key, mut history) in by_key {
        let current: Vec<_> = history.iter().filter(|v| v.current).collect();
        assert!(
            current.len() <= 1,
            "key {key} has {} current rows: {history:?}",
            current.len()
        );
        for v in &history {
            assert_eq!(
                v.current,
                v.to.is_none(),
                "key {key}: current rows are exactly the open ones: {v:?}"
            );
            if let Some(to) = v.to {
                assert!(
                    to >= v.from,
                    "key {key}: interval ends before it starts: {v:?}"
                );
            }
        }
        history.sort_by_key(|v| (v.from, v.to.unwrap_or(i64::MAX)));
        for pair in history.windows(2) {
            let end = pair[0]
                .to
                .expect("only the last version of a key may be open");
            assert!(
                end <= pair[1].from,
                "key {key}: intervals overlap: {:?} and {:?}",
                pair[0],
                pair[1]
            );
        }
    }
}

fn current_of(rows: &[Version], id: i64) -> Option<&Version> {
    rows.iter().find(|v| v.id == id && v.current)
}

/// Two keys inserted at 09:00, then key 1 updated (speed 12.5) at 10:00 and key 2 deleted at
/// 10:30, in two commits; the outcome of the second.
pub async fn insert_two_then_update_and_delete(t: &TestLake, table: &TableSpec) -> CommitOutcome {
    let first = changes(
        table,
        &[
            insert(1, "ana", 10.0, "2026-03-01T09:00:00Z"),
            insert(2, "bo", 20.0, "2026-03-01T09:00:00Z"),
        ],
    );
    t.lake
        .commit_changes(table, &first, &ends(&[(0, 1)]), GROUP, Utc::now())
        .await
        .expect("first");
    let second = changes(
        table,
        &[
            update(1, "ana", 12.5, "2026-03-01T10:00:00Z"),
            delete(2, "2026-03-01T10:30:00Z"),
        ],
    );
    t.lake
        .commit_changes(table, &second, &ends(&[(0, 3)]), GROUP, Utc::now())
        .await
        .expect("second")
}

/// (rows inserted, closed, unchanged) of a commit that created a table version.
pub fn committed(outcome: &CommitOutcome) -> (usize, usize, usize) {
    match outcome {
        CommitOutcome::Committed {
            rows_inserted,
            rows_closed,
            rows_unchanged,
            ..
        } => (*rows_inserted, *rows_closed, *rows_unchanged),
        other => panic!("expected a commit, got {other:?}"),
    }
}

#[tokio::test]
async fn first_batch_inserts_updates_of_unknown_keys_and_ignores_deletes_of_unknown_keys() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let batch = changes(
        &table,
        &[
            insert(1, "ana", 50.0, "2026-03-01T10:00:00Z"),
            update(2, "bo", 60.5, "2026-03-01T10:00:01Z"),
            delete(3, "2026-03-01T10:00:02Z"),
        ],
    );
    let now = at("2026-03-01T11:00:00Z");
    let outcome = t
        .lake
        .commit_changes(&table, &batch, &ends(&[(0, 2)]), GROUP, now)
        .await
        .expect("commit");
    assert_eq!(committed(&outcome), (2, 0, 1));

    let rows = versions(&t).await;
    assert_invariants(&rows);
    assert_eq!(
        rows,
        vec![
            Version {
                id: 1,
                driver_name: Some("ana".into()),
                speed: Some(50.0),
                operation: "INSERT".into(),
                from: ts("2026-03-01T10:00:00Z"),
                to: None,
                current: true,
                ingested_at: now.timestamp_micros(),
            },
            Version {
                id: 2,
                driver_name: Some("bo".into()),
                speed: Some(60.5),
                operation: "UPDATE".into(),
                from: ts("2026-03-01T10:00:01Z"),
                to: None,
                current: true,
                ingested_at: now.timestamp_micros(),
            },
        ]
    );
    // Version 0 created the table, version 1 is the batch: one commit.
    assert_eq!(t.version("vehicles").await, Some(1));
}

#[tokio::test]
async fn an_update_closes_the_current_version_at_the_source_time_and_adds_the_new_one() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let first = changes(&table, &[insert(7, "ana", 50.0, "2026-03-01T10:00:00Z")]);
    t.lake
        .commit_changes(
            &table,
            &first,
            &ends(&[(0, 0)]),
            GROUP,
            at("2026-03-01T10:00:05Z"),
        )
        .await
        .expect("first");
    let before = t.version("vehicles").await;

    let second = changes(&table, &[update(7, "ana", 72.5, "2026-03-01T10:05:00Z")]);
    let later = at("2026-03-01T10:05:09Z");
    let outcome = t
        .lake
        .commit_changes(&table, &second, &ends(&[(0, 1)]), GROUP, later)
        .await
        .expect("second");
    assert_eq!(committed(&outcome), (1, 1, 0));
    assert_eq!(
        t.version("vehicles").await,
        before.map(|v| v + 1),
        "one commit per batch"
    );

    let rows = versions(&t).await;
    assert_invariants(&rows);
    assert_eq!(rows.len(), 2);
    let (old, new) = (&rows[0], &rows[1]);
    assert_eq!(
        (old.speed, old.from, old.to, old.current),
        (
            Some(50.0),
            ts("2026-03-01T10:00:00Z"),
            Some(ts("2026-03-01T10:05:00Z")),
            false
        )
    );
    assert_eq!(
        old.ingested_at,
        ts("2026-03-01T10:00:05Z"),
        "closing a version keeps when it was ingested"
    );
    assert_eq!(
        (new.speed, new.from, new.to, new.current),
        (Some(72.5), ts("2026-03-01T10:05:00Z"), None, true)
    );
    assert_eq!(
        (new.operation.as_str(), new.ingested_at),
        ("UPDATE", later.timestamp_micros())
    );
}

#[tokio::test]
async fn replaying_equal_values_creates_no_table_version() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let batch = changes(
        &table,
        &[
            insert(1, "ana", 50.0, "2026-03-01T10:00:00Z"),
            insert(2, "bo", 61.0, "2026-03-01T10:00:00Z"),
        ],
    );
    t.lake
        .commit_changes(&table, &batch, &ends(&[(0, 1)]), GROUP, Utc::now())
        .await
        .expect("first");
    let before = t.version("vehicles").await;
    let rows_before = versions(&t).await;

    // The same events again at later offsets (e.g. re-published): the values equal the current
    // versions, so nothing is written, not even an empty commit.
    let outcome = t
        .lake
        .commit_changes(&table, &batch, &ends(&[(0, 9)]), GROUP, Utc::now())
        .await
        .expect("replay");
    assert_eq!(outcome, CommitOutcome::Unchanged { rows_unchanged: 2 });
    assert_eq!(t.version("vehicles").await, before);
    assert_eq!(versions(&t).await, rows_before);
}

#[tokio::test]
async fn a_reload_of_equal_rows_is_a_no_op_and_of_changed_rows_a_new_version() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let initial = changes(
        &table,
        &[
            insert(1, "ana", 50.0, "2026-03-01T10:00:00Z"),
            insert(2, "bo", 61.0, "2026-03-01T10:00:00Z"),
        ],
    );
    t.lake
        .commit_changes(&table, &initial, &ends(&[(0, 1)]), GROUP, Utc::now())
        .await
        .expect("initial");
    let before = t.version("vehicles").await;

    // A full reload: `load` arrives stored as INSERT, with the reload's time.
    let reload_equal = changes(
        &table,
        &[
            insert(1, "ana", 50.0, "2026-03-02T00:00:00Z"),
            insert(2, "bo", 61.0, "2026-03-02T00:00:00Z"),
        ],
    );
    let outcome = t
        .lake
        .commit_changes(&table, &reload_equal, &ends(&[(0, 3)]), GROUP, Utc::now())
        .await
        .expect("reload");
    assert_eq!(outcome, CommitOutcome::Unchanged { rows_unchanged: 2 });
    assert_eq!(t.version("vehicles").await, before);

    let reload_changed = changes(
        &table,
        &[
            insert(1, "ana", 50.0, "2026-03-03T00:00:00Z"),
            insert(2, "bo", 99.0, "2026-03-03T00:00:00Z"),
        ],
    );
    let outcome = t
        .lake
        .commit_changes(&table, &reload_changed, &ends(&[(0, 5)]), GROUP, Utc::now())
        .await
        .expect("reload");
    assert_eq!(committed(&outcome), (1, 1, 1));
    let rows = versions(&t).await;
    assert_invariants(&rows);
    assert_eq!(rows.len(), 3);
    let bo = current_of(&rows, 2).expect("bo is current");
    assert_eq!(
        (bo.speed, bo.from),
        (Some(99.0), ts("2026-03-03T00:00:00Z"))
    );
    assert_eq!(
        current_of(&rows, 1).map(|v| v.from),
        Some(ts("2026-03-01T10:00:00Z")),
        "ana kept her version"
    );
}

#[tokio::test]
async fn a_key_only_delete_closes_the_current_row() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let first = changes(
        &table,
        &[
            insert(4, "cy", 30.0, "2026-03-01T10:00:00Z"),
            insert(5, "di", 31.0, "2026-03-01T10:00:00Z"),
        ],
    );
    t.lake
        .commit_changes(&table, &first, &ends(&[(0, 1)]), GROUP, Utc::now())
        .await
        .expect("first");

    let gone = changes(&table, &[delete(4, "2026-03-01T12:00:00Z")]);
    let outcome = t
        .lake
        .commit_changes(&table, &gone, &ends(&[(0, 2)]), GROUP, Utc::now())
        .await
        .expect("delete");
    assert_eq!(committed(&outcome), (0, 1, 0));

    let rows = versions(&t).await;
    assert_invariants(&rows);
    assert_eq!(rows.len(), 2, "close mode adds no row");
    let closed = rows.iter().find(|v| v.id == 4).expect("row 4");
    assert_eq!(
        (closed.current, closed.to),
        (false, Some(ts("2026-03-01T12:00:00Z")))
    );
    assert_eq!(
        closed.driver_name.as_deref(),
        Some("cy"),
        "the closed row keeps its values"
    );
    assert!(current_of(&rows, 5).is_some());

    // Deleting it again changes nothing.
    let before = t.version("vehicles").await;
    let again = changes(&table, &[delete(4, "2026-03-01T12:30:00Z")]);
    let outcome = t
        .lake
        .commit_changes(&table, &again, &ends(&[(0, 3)]), GROUP, Utc::now())
        .await
        .expect("again");
    assert_eq!(outcome, CommitOutcome::Unchanged { rows_unchanged: 1 });
    assert_eq!(t.version("vehicles").await, before);
}

#[tokio::test]
async fn tombstone_mode_adds_a_closed_delete_version() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Tombstone, false);
    let first = changes(&table, &[insert(4, "cy", 30.0, "2026-03-01T10:00:00Z")]);
    t.lake
        .commit_changes(&table, &first, &ends(&[(0, 0)]), GROUP, Utc::now())
        .await
        .expect("first");
    let gone = changes(&table, &[delete(4, "2026-03-01T12:00:00Z")]);
    let outcome = t
        .lake
        .commit_changes(&table, &gone, &ends(&[(0, 1)]), GROUP, Utc::now())
        .await
        .expect("delete");
    assert_eq!(committed(&outcome), (1, 1, 0));

    let rows = versions(&t).await;
    assert_invariants(&rows);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].operation.as_str(), rows[0].to),
        ("INSERT", Some(ts("2026-03-01T12:00:00Z")))
    );
    let tombstone = &rows[1];
    assert_eq!(tombstone.operation, "DELETE");
    assert_eq!(
        (tombstone.from, tombstone.to, tombstone.current),
        (
            ts("2026-03-01T12:00:00Z"),
            Some(ts("2026-03-01T12:00:00Z")),
            false
        )
    );
    assert!(
        rows.iter().all(|v| !v.current),
        "a deleted key has no current row"
    );
}

#[tokio::test]
async fn track_intermediate_keeps_every_version_of_a_batch_in_one_commit() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Tombstone, true);
    let first = changes(&table, &[insert(1, "ana", 10.0, "2026-03-01T09:00:00Z")]);
    t.lake
        .commit_changes(&table, &first, &ends(&[(0, 0)]), GROUP, Utc::now())
        .await
        .expect("first");
    let before = t.version("vehicles").await;

    let batch = changes(
        &table,
        &[
            update(1, "ana", 20.0, "2026-03-01T10:00:00Z"),
            insert(2, "bo", 1.0, "2026-03-01T10:00:00Z"),
            update(1, "ana", 20.0, "2026-03-01T10:30:00Z"), // equal to the previous version: no-op
            update(1, "ana", 30.0, "2026-03-01T11:00:00Z"),
            delete(2, "2026-03-01T11:30:00Z"),
        ],
    );
    let outcome = t
        .lake
        .commit_changes(&table, &batch, &ends(&[(0, 5)]), GROUP, Utc::now())
        .await
        .expect("batch");
    // Inserted: ana@10, ana@11, bo@10, bo's tombstone; closed: ana@9; unchanged: ana@10:30.
    assert_eq!(committed(&outcome), (4, 1, 1));
    assert_eq!(
        t.version("vehicles").await,
        before.map(|v| v + 1),
        "all versions in one commit"
    );

    let rows = versions(&t).await;
    assert_invariants(&rows);
    let ana: Vec<(Option<f64>, i64, Option<i64>)> = rows
        .iter()
        .filter(|v| v.id == 1)
        .map(|v| (v.speed, v.from, v.to))
        .collect();
    assert_eq!(
        ana,
        vec![
            (
                Some(10.0),
                ts("2026-03-01T09:00:00Z"),
                Some(ts("2026-03-01T10:00:00Z"))
            ),
            (
                Some(20.0),
                ts("2026-03-01T10:00:00Z"),
                Some(ts("2026-03-01T11:00:00Z"))
            ),
            (Some(30.0), ts("2026-03-01T11:00:00Z"), None),
        ]
    );
    let bo: Vec<(&str, i64, Option<i64>)> = rows
        .iter()
        .filter(|v| v.id == 2)
        .map(|v| (v.operation.as_str(), v.from, v.to))
        .collect();
    assert_eq!(
        bo,
        vec![
            (
                "INSERT",
                ts("2026-03-01T10:00:00Z"),
                Some(ts("2026-03-01T11:30:00Z"))
            ),
            (
                "DELETE",
                ts("2026-03-01T11:30:00Z"),
                Some(ts("2026-03-01T11:30:00Z"))
            ),
        ]
    );
}

/// The processor hands the sink the decoded batch's columns and the rows that are changes, in
/// application order: rows left out (a NULL key, a key repeated without `track_intermediate`,
/// another key) take no part, and the picked rows apply in the order given, not the batch's.
#[tokio::test]
async fn picked_rows_of_a_wider_batch_commit_exactly_what_those_rows_alone_commit() {
    let table = vehicles(HardDeletes::Tombstone, true);
    let first = [
        insert(1, "ana", 10.0, "2026-03-01T09:00:00Z"),
        insert(2, "bo", 20.0, "2026-03-01T09:00:00Z"),
    ];
    let not_a_change = keyless(delete(1, "2026-03-01T12:00:00Z"));
    let wide = [
        update(1, "ana", 30.0, "2026-03-01T11:00:00Z"),
        not_a_change,
        insert(9, "zed", 1.0, "2026-03-01T10:00:00Z"),
        delete(2, "2026-03-01T10:30:00Z"),
        update(1, "ana", 20.0, "2026-03-01T10:00:00Z"),
        insert(3, "cy", 5.0, "2026-03-01T10:00:00Z"),
    ];
    let picked_rows = [4, 0, 3, 5];
    let picked: Vec<Change> = picked_rows.iter().map(|&r| wide[r].clone()).collect();

    let mut stored = Vec::new();
    for picked_from_wide in [false, true] {
        let t = TestLake::new();
        t.lake
            .commit_changes(
                &table,
                &changes(&table, &first),
                &ends(&[(0, 1)]),
                GROUP,
                Utc::now(),
            )
            .await
            .expect("first");
        let outcome = if picked_from_wide {
            let batch = dqetl::pipeline::plan::Changes {
                batch: changes(&table, &wide),
                rows: Some(picked_rows.iter().map(|&r| r as u32).collect()),
            };
            t.lake
                .commit_changes(&table, &batch, &ends(&[(0, 7)]), GROUP, Utc::now())
                .await
        } else {
            let batch = changes(&table, &picked);
            t.lake
                .commit_changes(&table, &batch, &ends(&[(0, 7)]), GROUP, Utc::now())
                .await
        }
        .expect("picked changes");
        // Inserted: ana@10, ana@11, bo's tombstone, cy; closed: ana@9, bo@9.
        assert_eq!(
            committed(&outcome),
            (4, 2, 0),
            "picked from wide: {picked_from_wide}"
        );
        let rows = versions(&t).await;
        assert_invariants(&rows);
        assert!(
            rows.iter().all(|v| v.id != 9),
            "row 2 was not picked: {rows:?}"
        );
        stored.push(
            rows.into_iter()
                .map(|v| Version {
                    ingested_at: 0,
                    ..v
                })
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(stored[0], stored[1]);
    let ana: Vec<Option<f64>> = stored[1]
        .iter()
        .filter(|v| v.id == 1)
        .map(|v| v.speed)
        .collect();
    assert_eq!(
        ana,
        [Some(10.0), Some(20.0), Some(30.0)],
        "applied in the order picked"
    );
}

#[tokio::test]
async fn several_keys_mix_new_changed_unchanged_and_deleted_in_one_commit() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let first = changes(
        &table,
        &[
            insert(1, "ana", 10.0, "2026-03-01T09:00:00Z"),
            insert(2, "bo", 20.0, "2026-03-01T09:00:00Z"),
            insert(3, "cy", 30.0, "2026-03-01T09:00:00Z"),
        ],
    );
    t.lake
        .commit_changes(&table, &first, &ends(&[(0, 2), (1, 0)]), GROUP, Utc::now())
        .await
        .expect("first");

    let batch = changes(
        &table,
        &[
            update(1, "ana", 11.0, "2026-03-01T10:00:00Z"),
            update(2, "bo", 20.0, "2026-03-01T10:00:00Z"),
            delete(3, "2026-03-01T10:00:00Z"),
            insert(4, "di", 40.0, "2026-03-01T10:00:00Z"),
            Change {
                driver: None,
                ..update(5, "", 50.0, "2026-03-01T10:00:00Z")
            },
        ],
    );
    let outcome = t
        .lake
        .commit_changes(&table, &batch, &ends(&[(0, 6), (1, 3)]), GROUP, Utc::now())
        .await
        .expect("batch");
    assert_eq!(committed(&outcome), (3, 2, 1));

    let rows = versions(&t).await;
    assert_invariants(&rows);
    let current: Vec<(i64, Option<f64>)> = rows
        .iter()
        .filter(|v| v.current)
        .map(|v| (v.id, v.speed))
        .collect();
    assert_eq!(
        current,
        vec![
            (1, Some(11.0)),
            (2, Some(20.0)),
            (4, Some(40.0)),
            (5, Some(50.0))
        ]
    );
    assert_eq!(
        current_of(&rows, 5).map(|v| v.driver_name.clone()),
        Some(None),
        "NULL values are stored as NULL"
    );
    assert_eq!(rows.len(), 6);

    // NULL equals NULL: the same change again is a no-op.
    let same = changes(
        &table,
        &[Change {
            driver: None,
            ..update(5, "", 50.0, "2026-03-01T11:00:00Z")
        }],
    );
    let outcome = t
        .lake
        .commit_changes(&table, &same, &ends(&[(0, 7)]), GROUP, Utc::now())
        .await
        .expect("same");
    assert_eq!(outcome, CommitOutcome::Unchanged { rows_unchanged: 1 });
}

#[tokio::test]
async fn a_change_with_an_older_source_time_takes_effect_at_the_latest_time_of_its_key() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let first = changes(&table, &[insert(1, "ana", 10.0, "2026-03-01T10:00:00Z")]);
    t.lake
        .commit_changes(&table, &first, &ends(&[(0, 0)]), GROUP, Utc::now())
        .await
        .expect("first");
    let late = changes(&table, &[update(1, "ana", 12.0, "2026-03-01T09:59:00Z")]);
    t.lake
        .commit_changes(&table, &late, &ends(&[(0, 1)]), GROUP, Utc::now())
        .await
        .expect("late");
    let gone = changes(&table, &[delete(1, "2026-03-01T11:00:00Z")]);
    t.lake
        .commit_changes(&table, &gone, &ends(&[(0, 2)]), GROUP, Utc::now())
        .await
        .expect("delete");
    let back = changes(&table, &[insert(1, "ana", 13.0, "2026-03-01T10:30:00Z")]);
    t.lake
        .commit_changes(&table, &back, &ends(&[(0, 3)]), GROUP, Utc::now())
        .await
        .expect("re-insert");

    let rows = versions(&t).await;
    assert_invariants(&rows);
    let history: Vec<(Option<f64>, i64, Option<i64>)> =
        rows.iter().map(|v| (v.speed, v.from, v.to)).collect();
    assert_eq!(
        history,
        vec![
            (
                Some(10.0),
                ts("2026-03-01T10:00:00Z"),
                Some(ts("2026-03-01T10:00:00Z"))
            ),
            (
                Some(12.0),
                ts("2026-03-01T10:00:00Z"),
                Some(ts("2026-03-01T11:00:00Z"))
            ),
            (Some(13.0), ts("2026-03-01T11:00:00Z"), None),
        ]
    );
}

#[tokio::test]
async fn duplicate_keys_without_track_intermediate_are_refused_before_anything_is_written() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let batch = changes(
        &table,
        &[
            insert(1, "ana", 10.0, "2026-03-01T09:00:00Z"),
            insert(2, "bo", 10.0, "2026-03-01T09:00:00Z"),
            update(1, "ana", 11.0, "2026-03-01T09:01:00Z"),
        ],
    );
    let err = t
        .lake
        .commit_changes(&table, &batch, &ends(&[(0, 2)]), GROUP, Utc::now())
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            SinkError::DuplicateKey {
                first_row: 0,
                second_row: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("track_intermediate"), "{err}");
    assert_eq!(t.version("vehicles").await, None, "nothing was created");
}

#[tokio::test]
async fn a_changes_batch_of_another_shape_is_refused_naming_the_columns() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let mut other = vehicles(HardDeletes::Close, false);
    other.transforms.clear(); // `driver` instead of `driver_name`
    let batch = changes(&other, &[insert(1, "ana", 10.0, "2026-03-01T09:00:00Z")]);
    let err = t
        .lake
        .commit_changes(&table, &batch, &[], GROUP, Utc::now())
        .await
        .expect_err("refused");
    let message = err.to_string();
    assert!(
        message.contains("driver_name") && message.contains("vehicles"),
        "{message}"
    );
}

#[tokio::test]
async fn an_existing_table_of_another_schema_is_reported_not_overwritten() {
    let t = TestLake::new();
    let mut old = vehicles(HardDeletes::Close, false);
    old.transforms.clear();
    let batch = changes(&old, &[insert(1, "ana", 10.0, "2026-03-01T09:00:00Z")]);
    t.lake
        .commit_changes(&old, &batch, &[], GROUP, Utc::now())
        .await
        .expect("old shape");

    let table = vehicles(HardDeletes::Close, false);
    let batch = changes(&table, &[insert(1, "ana", 10.0, "2026-03-01T09:00:00Z")]);
    let err = t
        .reopen()
        .commit_changes(&table, &batch, &[], GROUP, Utc::now())
        .await
        .expect_err("mismatch");
    assert!(matches!(err, SinkError::SchemaMismatch { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("driver_name string") && message.contains("driver string"),
        "{message}"
    );
}

/// A data table another writer created partitioned (which the direct rewrite does not handle)
/// is kept through a MERGE: same versions, and the new files stay in partition folders.
#[tokio::test]
async fn a_table_partitioned_by_another_writer_gets_the_same_versions_through_merge() {
    use deltalake::kernel::StructField;
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;

    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let location = t.layout().data_table(&table.name);
    let columns: Vec<StructField> = dqetl::pipeline::schema::data_table_schema(&table)
        .fields()
        .iter()
        .map(|f| f.as_ref().try_into_kernel().expect("kernel field"))
        .collect();
    std::fs::create_dir_all(&location).expect("table folder");
    deltalake::DeltaTableBuilder::from_url(
        deltalake::ensure_table_uri(&location).expect("table URL"),
    )
    .expect("builder")
    .build()
    .expect("table")
    .create()
    .with_columns(columns)
    .with_partition_columns(["driver_name"])
    .await
    .expect("create the partitioned table");

    let outcome = insert_two_then_update_and_delete(&t, &table).await;
    assert_eq!(committed(&outcome), (1, 2, 0));

    let rows = versions(&t).await;
    assert_invariants(&rows);
    let summary: Vec<(i64, Option<f64>, bool, Option<i64>)> = rows
        .iter()
        .map(|v| (v.id, v.speed, v.current, v.to))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, Some(10.0), false, Some(ts("2026-03-01T10:00:00Z"))),
            (1, Some(12.5), true, None),
            (2, Some(20.0), false, Some(ts("2026-03-01T10:30:00Z"))),
        ]
    );
    let partitioned = std::fs::read_dir(&location)
        .expect("table folder")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("driver_name="))
        .count();
    assert_eq!(partitioned, 2, "files stay in one folder per driver_name");
}

#[tokio::test]
async fn a_batch_reads_only_the_data_files_its_keys_can_be_in() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Close, false);
    let commit = |rows: Vec<Change>, offset: i64| {
        let batch = changes(&table, &rows);
        let lake = &t.lake;
        let table = &table;
        async move {
            lake.commit_changes(table, &batch, &ends(&[(0, offset)]), GROUP, Utc::now())
                .await
        }
    };
    commit(
        (1..=3)
            .map(|id| insert(id, "ana", 10.0, "2026-03-01T09:00:00Z"))
            .collect(),
        2,
    )
    .await
    .expect("keys 1..3");
    let low_keys = crate::sink_splice::files(&crate::sink_splice::data_table(&t).await);
    assert_eq!(low_keys.len(), 1, "one file of keys 1..3: {low_keys:?}");
    commit(
        (10..=12)
            .map(|id| insert(id, "bo", 20.0, "2026-03-01T09:00:00Z"))
            .collect(),
        5,
    )
    .await
    .expect("keys 10..12");
    // The file of keys 1..3 is gone from the disk: reading it fails from now on.
    let location = t.layout().data_table("vehicles");
    let low_file = std::path::Path::new(&location).join(&low_keys[0].0);
    std::fs::remove_file(&low_file).expect("remove the file of keys 1..3");

    let reaches_it = commit(vec![update(2, "ana", 11.0, "2026-03-01T10:00:00Z")], 6).await;
    assert!(
        reaches_it.is_err(),
        "a batch with key 2 reads the removed file: {reaches_it:?}"
    );
    let outcome = commit(
        vec![
            update(11, "bo", 25.0, "2026-03-01T10:00:00Z"),
            insert(20, "cy", 30.0, "2026-03-01T10:00:00Z"),
        ],
        6,
    )
    .await
    .expect("keys 11 and 20 lie outside the removed file's keys, which is never read");
    assert_eq!(committed(&outcome), (2, 1, 0));
}

/// A table `name(key primary key, value)` of the given column types.
fn keyed_table(name: &str, key: (&str, ColumnType), value: (&str, ColumnType)) -> TableSpec {
    TableSpec {
        name: name.into(),
        primary_key: Some(key.0.into()),
        columns: vec![column(key.0, key.1), column(value.0, value.1)],
        transforms: Vec::new(),
        ..vehicles(HardDeletes::Close, false)
    }
}

/// Inserts `keys` with `values` in one batch, then updates `keys[updated]` to `value` in the
/// next; the update must close the stored version, leaving one current version per key.
async fn assert_update_finds_the_stored_version(
    table: &TableSpec,
    keys: ArrayRef,
    values: ArrayRef,
    updated: usize,
    value: ArrayRef,
) {
    let t = TestLake::new();
    let batch = |keys: ArrayRef, values: ArrayRef, operation: &str| {
        let n = keys.len();
        let columns: Vec<ArrayRef> = vec![
            keys,
            values,
            Arc::new(StringArray::from(vec![operation; n])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![ts("2026-03-01T10:00:00Z"); n])
                    .with_timezone("UTC"),
            ),
        ];
        RecordBatch::try_new(changes_schema(table), columns).expect("changes batch")
    };
    let stored = keys.len() as i64;
    let first = batch(keys.clone(), values, "INSERT");
    t.lake
        .commit_changes(table, &first, &ends(&[(0, 1)]), GROUP, Utc::now())
        .await
        .expect("first");
    let second = batch(keys.slice(updated, 1), value, "UPDATE");
    let outcome = t
        .lake
        .commit_changes(table, &second, &ends(&[(0, 2)]), GROUP, Utc::now())
        .await
        .expect("second");
    assert_eq!(
        committed(&outcome),
        (1, 1, 0),
        "the update closes the stored version"
    );
    let current = sql(
        &t.layout().data_table(&table.name),
        "SELECT count(*) FROM t WHERE _is_current",
    )
    .await;
    let current = current[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(current, stored, "one current version per key");
}

#[tokio::test]
async fn a_timestamp_key_below_the_millisecond_finds_its_current_version() {
    // delta-rs writes timestamp statistics cut to the millisecond, below the keys' microseconds;
    // the state read, which skips files by their key statistics, must still find the version.
    let table = keyed_table(
        "readings",
        ("taken_at", ColumnType::Timestamp),
        ("value", ColumnType::Double),
    );
    let keys = ["2026-03-01T09:00:00.000100Z", "2026-03-01T09:00:00.000500Z"];
    let micros: Vec<i64> = keys.iter().map(|k| ts(k)).collect();
    assert_update_finds_the_stored_version(
        &table,
        Arc::new(TimestampMicrosecondArray::from(micros).with_timezone("UTC")),
        Arc::new(Float64Array::from(vec![1.0, 2.0])),
        1,
        Arc::new(Float64Array::from(vec![3.0])),
    )
    .await;
}

#[tokio::test]
async fn a_nan_key_finds_its_current_version() {
    // Parquet statistics leave NaN out: a file holding only a NaN key and 1.0 records 1.0 as
    // its maximum, which must not make the file look unreachable for the NaN key.
    let table = keyed_table(
        "levels",
        ("level", ColumnType::Double),
        ("label", ColumnType::String),
    );
    assert_update_finds_the_stored_version(
        &table,
        Arc::new(Float64Array::from(vec![1.0, f64::NAN])),
        Arc::new(StringArray::from(vec!["one", "unknown"])),
        1,
        Arc::new(StringArray::from(vec!["still unknown"])),
    )
    .await;
}
