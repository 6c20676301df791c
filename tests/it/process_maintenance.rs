//! Table maintenance in `dqetl process`: between batches, once its interval is up, the processor
//! compacts and vacuums every table it writes; rows stay as they were.

use std::path::Path;
use std::time::Duration;

use dqetl::sink::LakeTable;
use dqetl::stream::{Maintenance, ProcessOptions};
use serde_json::{Value, json};

use crate::process_scenarios::{Flow, ORDERS, delete, insert, totals, update};
use crate::sink_exactly_once::parquet_files_on_disk;

async fn live_files(flow: &Flow, table: &LakeTable) -> Vec<String> {
    crate::sink_exactly_once::live_files(&table.name(), &table.location(&flow.layout())).await
}

fn folder(flow: &Flow, table: &LakeTable) -> std::path::PathBuf {
    Path::new(&table.location(&flow.layout())).to_path_buf()
}

#[tokio::test]
async fn maintenance_compacts_appended_tables_and_vacuums_replaced_files_keeping_every_row() {
    let flow = Flow::new(ORDERS, 1).await;
    let tables = [
        LakeTable::Data("orders".into()),
        LakeTable::Quarantine("orders".into()),
        LakeTable::Metrics,
    ];
    // Three batches: each adds a quarantine and a metrics file; the updates replace data files.
    for (batch, at) in [
        "2026-03-01T09:00:00Z",
        "2026-03-01T10:00:00Z",
        "2026-03-01T11:00:00Z",
    ]
    .iter()
    .enumerate()
    {
        let n = batch as i64;
        let mut events = vec![
            insert(json!({"id": 10 + n, "amount": 5.0}), at),
            insert(json!({"id": 20 + n, "amount": 5000.0}), at),
        ];
        if n > 0 {
            events.push(update(json!({"id": 10, "amount": 1.0 + n as f64}), at));
        }
        flow.produce(&events).await;
        flow.process().await;
    }
    let mut replaced = Vec::new();
    for table in &tables {
        let live = live_files(&flow, table).await;
        replaced.extend(
            parquet_files_on_disk(&folder(&flow, table))
                .into_iter()
                .filter(|f| !live.contains(f))
                .map(|f| folder(&flow, table).join(f)),
        );
    }
    assert!(!replaced.is_empty(), "the updates replaced data files");
    assert!(live_files(&flow, &tables[1]).await.len() >= 3);
    assert!(live_files(&flow, &tables[2]).await.len() >= 3);
    let versions = flow.versions("id, amount").await;
    let quarantined = flow.quarantine("id, amount").await;
    let metrics = flow
        .rows("SELECT batch_id, metric_name, metric_value FROM dq_metrics ORDER BY batch_id, metric_name")
        .await;

    // Older than the retention by the time the next run looks.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    flow.produce(&[delete(json!({"id": 11}), "2026-03-01T12:00:00Z")])
        .await;
    let summary = flow
        .process_with(ProcessOptions {
            maintenance: Some(Maintenance {
                interval: Duration::from_millis(1),
                vacuum_retention: Duration::from_secs(1),
            }),
            ..flow.options()
        })
        .await;

    let done = &summary.maintenance;
    assert_eq!(done.rounds, 1, "{done:?}");
    assert_eq!(done.failures, 0, "{done:?}");
    assert!(done.files_compacted >= 6, "{done:?}");
    assert!(done.files_vacuumed as usize >= replaced.len(), "{done:?}");
    for file in &replaced {
        assert!(!file.exists(), "{} was vacuumed", file.display());
    }
    // The batch of the run itself went in first.
    assert_eq!(totals(&summary, "orders").deletes, 1);
    for table in &tables[1..] {
        assert_eq!(
            live_files(&flow, table).await.len(),
            1,
            "{} compacted into one file",
            table.name()
        );
    }
    let mut expected = versions.clone();
    for row in expected.iter_mut() {
        if row["id"] == json!(11) {
            row["_effective_to"] = json!("2026-03-01T12:00:00Z");
            row["_is_current"] = json!(false);
        }
    }
    assert_eq!(flow.versions("id, amount").await, expected);
    assert_eq!(flow.quarantine("id, amount").await, quarantined);
    let after: Vec<Value> = flow
        .rows("SELECT batch_id, metric_name, metric_value FROM dq_metrics ORDER BY batch_id, metric_name")
        .await;
    assert_eq!(after[..metrics.len()], metrics[..], "no metric row changed");
    flow.assert_invariants().await;
}
