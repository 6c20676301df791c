//! Property: random per-key sequences of inserts, updates and deletes, produced over random
//! partitions and processed in random chunks, leave the Delta table equal to a simple in-memory
//! SCD2 model; at most one current row per key and no overlapping intervals, every time, with
//! files rewritten by decoding or by splicing.
//!
//! Each case uses the broker and Delta on disk, so the case count is small.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::process_scenarios::{Event, Flow, delete, field, insert, update};

const STATUSES: [&str; 3] = ["parked", "moving", "service"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Insert,
    Update,
    Delete,
}

#[derive(Debug, Clone)]
struct Case {
    partitions: i32,
    track_intermediate: bool,
    /// Every file a commit rewrites is spliced (see `Lake::with_splice_min_rows`), not only
    /// large ones: the small tables of these cases take the splicing path too.
    splice_all: bool,
    /// (key, op, status index) in produce order; event `i` happens at second `i`.
    events: Vec<(i64, Op, usize)>,
    /// Events per chunk; each chunk is produced, then processed by one `--once` run.
    chunks: Vec<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    let op = prop_oneof![Just(Op::Insert), Just(Op::Update), Just(Op::Delete)];
    (
        1..=3i32,
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec((1..=6i64, op, 0..STATUSES.len()), 1..30),
        prop::collection::vec(1..12usize, 1..4),
    )
        .prop_map(
            |(partitions, track_intermediate, splice_all, events, chunks)| Case {
                partitions,
                track_intermediate,
                splice_all,
                events,
                chunks,
            },
        )
}

/// One stored version in the model.
#[derive(Debug, Clone, PartialEq)]
struct Version {
    key: i64,
    status: Option<&'static str>,
    operation: &'static str,
    from: i64,
    to: Option<i64>,
}

#[derive(Debug, Default)]
struct Model {
    versions: Vec<Version>,
    /// key → index of its current version.
    current: BTreeMap<i64, usize>,
}

impl Model {
    /// Applies one micro-batch: every event in order with `track_intermediate`, else only the
    /// last event of each key. An upsert equal to the current version changes nothing; a delete
    /// closes the current version.
    fn apply(&mut self, batch: &[(usize, (i64, Op, usize))], track_intermediate: bool) {
        let mut last: BTreeMap<i64, usize> = BTreeMap::new();
        for (position, (_, (key, _, _))) in batch.iter().enumerate() {
            last.insert(*key, position);
        }
        for (position, (second, (key, op, status))) in batch.iter().enumerate() {
            if !track_intermediate && last.get(key) != Some(&position) {
                continue;
            }
            let at = *second as i64;
            let status = STATUSES[*status];
            match op {
                Op::Insert | Op::Update => {
                    if let Some(&c) = self.current.get(key)
                        && self.versions[c].status == Some(status)
                    {
                        continue;
                    }
                    if let Some(c) = self.current.remove(key) {
                        self.versions[c].to = Some(at);
                    }
                    self.current.insert(*key, self.versions.len());
                    self.versions.push(Version {
                        key: *key,
                        status: Some(status),
                        operation: if *op == Op::Insert {
                            "INSERT"
                        } else {
                            "UPDATE"
                        },
                        from: at,
                        to: None,
                    });
                }
                Op::Delete => {
                    if let Some(c) = self.current.remove(key) {
                        self.versions[c].to = Some(at);
                    }
                }
            }
        }
    }

    fn rows(&self, base: DateTime<Utc>) -> Vec<Value> {
        let time =
            |s: i64| (base + Duration::seconds(s)).to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut rows: Vec<&Version> = self.versions.iter().collect();
        rows.sort_by_key(|v| (v.key, v.from, v.to.unwrap_or(i64::MAX)));
        rows.iter()
            .map(|v| {
                json!([
                    v.key,
                    v.status,
                    v.operation,
                    time(v.from),
                    v.to.map(time),
                    v.to.is_none()
                ])
            })
            .collect()
    }
}

fn vehicles(track_intermediate: bool) -> String {
    format!(
        r#"
tables:
  - name: vehicles
    topic: {{topic}}
    primary_key: id
    schema:
      - {{name: id, type: integer, nullable: false}}
      - {{name: status, type: string}}
    scd2: {{track_intermediate: {track_intermediate}}}
"#
    )
}

async fn run_case(case: Case) {
    let base: DateTime<Utc> = "2026-03-01T09:00:00Z"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut flow = Flow::new(&vehicles(case.track_intermediate), case.partitions).await;
    flow.splice_min_rows = case.splice_all.then_some(1);
    let timed: Vec<(usize, (i64, Op, usize))> = case.events.iter().copied().enumerate().collect();
    let mut chunk_model = Model::default();
    let mut event_model = Model::default();
    let mut batches_as_chunked = true;
    let mut rest = timed.as_slice();
    let mut sizes = case.chunks.iter().cycle();
    while !rest.is_empty() {
        let size = sizes.next().copied().unwrap_or(1).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let events: Vec<Event> = chunk
            .iter()
            .map(|(second, (key, op, status))| {
                let when = (base + Duration::seconds(*second as i64)).to_rfc3339();
                let row = json!({"id": key, "status": STATUSES[*status]});
                match op {
                    Op::Insert => insert(row, &when),
                    Op::Update => update(row, &when),
                    Op::Delete => delete(json!({"id": key}), &when),
                }
            })
            .collect();
        flow.produce(&events).await;
        let summary = flow.process().await;
        // A run may split a chunk into several micro-batches (when a fetch is slow); then the
        // chunk model is only a lower bound of the history.
        batches_as_chunked &= summary.batches == 1;
        chunk_model.apply(chunk, case.track_intermediate);
        for event in chunk {
            event_model.apply(std::slice::from_ref(event), case.track_intermediate);
        }
        flow.assert_invariants().await;
    }

    let stored: Vec<Value> = flow
        .versions("id, status")
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
        .collect();
    let current = |rows: &[Value]| -> Vec<Value> {
        rows.iter()
            .filter(|r| r[5] == json!(true))
            .cloned()
            .collect()
    };
    let expected = chunk_model.rows(base);
    assert_eq!(
        current(&stored),
        current(&expected),
        "current rows: the last surviving version of each key"
    );
    if case.track_intermediate || batches_as_chunked {
        assert_eq!(stored, expected, "the whole history");
    } else {
        let (least, most) = (expected.len(), event_model.rows(base).len());
        assert!(
            (least..=most).contains(&stored.len()),
            "history of {} versions, between {least} (one batch per chunk) and {most} (one per event)",
            stored.len()
        );
    }
    let keys: Vec<Value> = field(
        &flow.rows("SELECT id FROM vehicles WHERE _is_current").await,
        "id",
    );
    assert_eq!(
        keys.len(),
        chunk_model.current.len(),
        "one current row per live key"
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_iters: 20,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn the_lake_equals_an_in_memory_scd2_model(case in case()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        runtime.block_on(run_case(case));
    }
}
