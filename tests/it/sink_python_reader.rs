//! An independent reader: the Python `deltalake` package (delta-rs through pyarrow, a separate
//! implementation of the protocol's reader side) reads the data, quarantine and metrics tables
//! dqetl wrote. Needs the venv at `$DQETL_VENV` (default `/var/cache/dqetl/venv`) with
//! `deltalake` and `pyarrow` installed.

use std::path::PathBuf;

use dqetl::config::spec::HardDeletes;

use crate::sink_exactly_once::{metric, quarantined};
use crate::sink_scd2::{GROUP, TestLake, at, ends, insert_two_then_update_and_delete, vehicles};

fn python() -> PathBuf {
    let venv = std::env::var("DQETL_VENV").unwrap_or_else(|_| "/var/cache/dqetl/venv".into());
    PathBuf::from(venv).join("bin").join("python")
}

const READER: &str = r#"
import json, os, sys
from deltalake import DeltaTable

data_path, quarantine_path, metrics_path = sys.argv[1:4]
data = DeltaTable(data_path)
rows = data.to_pyarrow_table().to_pylist()
quarantine = DeltaTable(quarantine_path).to_pyarrow_table()
metrics = DeltaTable(metrics_path).to_pyarrow_table()
print(json.dumps({
    "data_version": data.version(),
    "operations": [h.get("operation") for h in data.history()],
    "data": sorted((
        [r["id"], r["driver_name"], r["speed"], r["_operation"], r["_effective_from"].isoformat(),
         r["_effective_to"].isoformat() if r["_effective_to"] else None, r["_is_current"]]
        for r in rows
    ), key=lambda v: (v[0], v[4], v[5] or "~")),
    "quarantine_rows": quarantine.num_rows,
    "quarantine_rules": quarantine.column("_failed_rules").to_pylist(),
    "quarantine_offsets": sorted(quarantine.column("_offset").to_pylist()),
    "metrics_types": {f.name: str(f.type) for f in metrics.schema},
    "metrics": sorted([m["metric_name"], m["batch_id"], m["passed"], m["metric_value"]] for m in metrics.to_pylist()),
}))
# The reader's native thread pools can abort the interpreter's teardown ("terminate called
# without an active exception"); the answer is out, so leave without tearing down.
sys.stdout.flush()
os._exit(0)
"#;

#[tokio::test]
async fn the_python_deltalake_package_reads_every_table_dqetl_wrote() {
    let t = TestLake::new();
    let table = vehicles(HardDeletes::Tombstone, false);
    insert_two_then_update_and_delete(&t, &table).await;
    t.lake
        .append_quarantine(
            &table,
            &quarantined(&table, &[(0, 2), (1, 5)]),
            &ends(&[(0, 3), (1, 5)]),
            GROUP,
        )
        .await
        .expect("quarantine");
    let rows = [
        metric("vehicles", "Size", None, 4.0, Some(1.0)),
        metric("vehicles", "Uniqueness", Some("id"), 0.5, Some(1.0)),
    ];
    t.lake
        .append_metrics(
            "vehicles",
            7,
            &rows,
            &ends(&[(0, 3)]),
            GROUP,
            at("2026-03-01T10:31:00Z"),
        )
        .await
        .expect("metrics");

    let layout = t.layout();
    let out = std::process::Command::new(python())
        .args([
            "-c",
            READER,
            &layout.data_table("vehicles"),
            &layout.quarantine_table("vehicles"),
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
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("reader prints JSON");

    assert_eq!(seen["data_version"], 2, "create + one commit per batch");
    let operations = seen["operations"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|o| *o == "MERGE")
        .count();
    assert_eq!(
        operations, 2,
        "each batch is one MERGE: {}",
        seen["operations"]
    );
    assert_eq!(
        seen["data"],
        serde_json::json!([
            [
                1,
                "ana",
                10.0,
                "INSERT",
                "2026-03-01T09:00:00+00:00",
                "2026-03-01T10:00:00+00:00",
                false
            ],
            [
                1,
                "ana",
                12.5,
                "UPDATE",
                "2026-03-01T10:00:00+00:00",
                null,
                true
            ],
            [
                2,
                "bo",
                20.0,
                "INSERT",
                "2026-03-01T09:00:00+00:00",
                "2026-03-01T10:30:00+00:00",
                false
            ],
            [
                2,
                null,
                null,
                "DELETE",
                "2026-03-01T10:30:00+00:00",
                "2026-03-01T10:30:00+00:00",
                false
            ],
        ])
    );
    assert_eq!(seen["quarantine_rows"], 2);
    assert_eq!(
        seen["quarantine_rules"],
        serde_json::json!([["veh_001"], ["veh_001"]])
    );
    assert_eq!(seen["quarantine_offsets"], serde_json::json!([2, 5]));
    assert_eq!(seen["metrics_types"]["batch_id"], "int64");
    assert_eq!(seen["metrics_types"]["passed"], "bool");
    assert_eq!(
        seen["metrics"],
        serde_json::json!([["Size", 7, true, 4.0], ["Uniqueness", 7, false, 0.5]])
    );
}
