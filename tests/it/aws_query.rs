//! `query` on Athena (moto, with queued results): the statement runs in the stack's workgroup and
//! database, the header row is dropped, and the result prints as an aligned table or JSON rows.

use std::time::Duration;

use dqetl::commands::query_aws::render;
use dqetl::target::aws::athena::Athena;

use crate::aws_support::{Moto, create_minimal_stack};

fn cell(v: Option<&str>) -> serde_json::Value {
    match v {
        Some(v) => serde_json::json!({"VarCharValue": v}),
        None => serde_json::json!({}),
    }
}

#[tokio::test]
async fn a_query_runs_in_the_stack_workgroup_and_prints_its_rows() {
    let moto = Moto::start();
    let clients = moto.clients().await;
    let outputs = create_minimal_stack(&clients, "fleet-query").await;
    let column = |name: &str, ty: &str| serde_json::json!({"CatalogName": "hive", "SchemaName": "", "TableName": "", "Name": name, "Label": name, "Type": ty, "Precision": 0, "Scale": 0, "Nullable": "UNKNOWN", "CaseSensitive": false});
    moto.queue_athena_results(serde_json::json!([{
        "rows": [
            {"Data": [cell(Some("id")), cell(Some("make"))]},
            {"Data": [cell(Some("1")), cell(Some("Volvo"))]},
            {"Data": [cell(Some("22")), cell(None)]}
        ],
        "column_info": [column("id", "integer"), column("make", "varchar")]
    }]))
    .await;

    let athena = Athena {
        clients: &clients,
        workgroup: &outputs.athena_work_group,
        database: &outputs.glue_database,
        poll: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
    };
    let result = athena
        .run("SELECT id, make FROM vehicles WHERE _is_current", |_| {})
        .await
        .unwrap();
    assert_eq!(result.columns, ["id", "make"]);
    assert_eq!(
        result.rows,
        vec![
            vec![Some("1".to_string()), Some("Volvo".to_string())],
            vec![Some("22".to_string()), None]
        ]
    );

    let exec = clients
        .athena
        .get_query_execution()
        .query_execution_id(&result.query_id)
        .send()
        .await
        .unwrap();
    let exec = exec.query_execution().unwrap();
    assert_eq!(
        exec.query(),
        Some("SELECT id, make FROM vehicles WHERE _is_current")
    );
    assert_eq!(exec.work_group(), Some("fleet-query-wg"));
    assert_eq!(
        exec.query_execution_context().and_then(|c| c.database()),
        Some("fleet_query_db")
    );

    assert_eq!(result.types, ["integer", "varchar"]);

    // Printed exactly as a local query prints: a table with the row count, or typed JSON rows.
    assert_eq!(
        render(&result, false).unwrap(),
        "+----+-------+\n| id | make  |\n+----+-------+\n| 1  | Volvo |\n| 22 |       |\n+----+-------+\n(2 rows)"
    );
    let json: serde_json::Value = serde_json::from_str(&render(&result, true).unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{"id": 1, "make": "Volvo"}, {"id": 22, "make": null}])
    );
}
