//! An independent reader of what `dqetl process` wrote: the Python `deltalake` package (its own
//! implementation of the Delta protocol's reader side) reads the data, quarantine and metrics
//! tables the processor produced from messages on the broker. Needs the venv at `$DQETL_VENV`
//! (default `/var/cache/dqetl/venv`) with `deltalake` and `pyarrow`, as `sink_python_reader` does.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::process_scenarios::{Flow, delete, insert, update};

fn python() -> PathBuf {
    let venv = std::env::var("DQETL_VENV").unwrap_or_else(|_| "/var/cache/dqetl/venv".into());
    PathBuf::from(venv).join("bin").join("python")
}

const READER: &str = r#"
import json, os, sys
from deltalake import DeltaTable

data_path, quarantine_path, metrics_path = sys.argv[1:4]
iso = lambda v: v.isoformat() if v is not None else None
data = DeltaTable(data_path)
quarantine = DeltaTable(quarantine_path)
metrics = DeltaTable(metrics_path)
print(json.dumps({
    "data_operations": [h.get("operation") for h in data.history()],
    "data": sorted((
        [r["id"], r["status"], r["km"], r["_operation"], iso(r["_effective_from"]),
         iso(r["_effective_to"]), r["_is_current"]]
        for r in data.to_pyarrow_table().to_pylist()
    ), key=lambda v: (v[0], v[4], v[5] or "~")),
    "quarantine": sorted(
        [r["_offset"], r["id"], r["_failed_rules"], r["_dq_reason"]]
        for r in quarantine.to_pyarrow_table().to_pylist()
    ),
    "metrics": sorted(
        [m["metric_name"], m["column_name"] or "", m["scope"], m["metric_value"], m["passed"]]
        for m in metrics.to_pyarrow_table().to_pylist()
    ),
}))
# The reader's native thread pools can abort the interpreter's teardown; the answer is out.
sys.stdout.flush()
os._exit(0)
"#;

const FLEET: &str = r#"
tables:
  - name: fleet
    topic: {topic}
    primary_key: id
    schema:
      - {name: id, type: integer, nullable: false}
      - {name: status, type: string}
      - {name: km, type: double}
    dq_rules:
      - {id: km_positive, type: range, column: km, params: {min: 0}}
    deequ_checks:
      - {metric: completeness, column: status, threshold: 0.5}
      - {metric: size, threshold: 1}
    scd2: {hard_deletes: tombstone}
"#;

#[tokio::test]
async fn the_python_deltalake_package_reads_what_the_processor_wrote() {
    let flow = Flow::new(FLEET, 2).await;
    flow.produce(&[
        insert(
            json!({"id": 1, "status": "parked", "km": 0.0}),
            "2026-03-01T09:00:00Z",
        ),
        insert(
            json!({"id": 2, "status": "moving", "km": -4.0}),
            "2026-03-01T09:00:00Z",
        ),
        insert(
            json!({"id": 3, "status": null, "km": 2.0}),
            "2026-03-01T09:00:00Z",
        ),
    ])
    .await;
    flow.process().await;
    flow.produce(&[
        update(
            json!({"id": 1, "status": "moving", "km": 12.5}),
            "2026-03-01T10:00:00Z",
        ),
        delete(json!({"id": 3}), "2026-03-01T10:30:00Z"),
    ])
    .await;
    flow.process().await;

    let layout = flow.layout();
    let out = std::process::Command::new(python())
        .args([
            "-c",
            READER,
            &layout.data_table("fleet"),
            &layout.quarantine_table("fleet"),
            &layout.metrics_table(),
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {} failed ({e}); create the venv with deltalake and pyarrow",
                python().display()
            )
        });
    assert!(
        out.status.success(),
        "python reader failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("reader prints JSON: {e}"));

    assert_eq!(
        seen["data"],
        json!([
            [
                1,
                "parked",
                0.0,
                "INSERT",
                "2026-03-01T09:00:00+00:00",
                "2026-03-01T10:00:00+00:00",
                false
            ],
            [
                1,
                "moving",
                12.5,
                "UPDATE",
                "2026-03-01T10:00:00+00:00",
                null,
                true
            ],
            [
                3,
                null,
                2.0,
                "INSERT",
                "2026-03-01T09:00:00+00:00",
                "2026-03-01T10:30:00+00:00",
                false
            ],
            [
                3,
                null,
                null,
                "DELETE",
                "2026-03-01T10:30:00+00:00",
                "2026-03-01T10:30:00+00:00",
                false
            ],
        ])
    );
    let merges = seen["data_operations"]
        .as_array()
        .map_or(0, |ops| ops.iter().filter(|o| *o == "MERGE").count());
    assert_eq!(
        merges, 2,
        "one MERGE per batch: {}",
        seen["data_operations"]
    );
    let quarantine = seen["quarantine"].as_array().cloned().unwrap_or_default();
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    assert_eq!(quarantine[0][1], json!(2));
    assert_eq!(quarantine[0][2], json!(["km_positive"]));
    assert_eq!(quarantine[0][3], json!("km_positive range: km=-4 not >= 0"));

    // The metrics read by Python equal those `dqetl query` reads.
    let ours: Vec<Value> = flow
        .rows("SELECT metric_name, column_name, scope, metric_value, passed FROM dq_metrics")
        .await
        .iter()
        .map(|r| {
            json!([
                r["metric_name"],
                r["column_name"].as_str().unwrap_or(""),
                r["scope"],
                r["metric_value"],
                r["passed"]
            ])
        })
        .collect();
    let mut ours = ours;
    ours.sort_by_key(|v| v.to_string());
    let mut theirs = seen["metrics"].as_array().cloned().unwrap_or_default();
    theirs.sort_by_key(|v| v.to_string());
    assert!(!theirs.is_empty(), "metrics were written");
    assert_eq!(theirs, ours);
    assert!(
        theirs.contains(&json!(["Completeness", "status", "batch", 0.5, true])),
        "first batch: 1 of the 2 loaded rows has a status: {theirs:?}"
    );
}
