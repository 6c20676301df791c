//! The compiled DDL runs on a real PostgreSQL and creates what the config describes: tables,
//! primary keys, foreign keys, indexes and defaults, read back from the catalog.

use std::path::Path;

use dqetl::config::compile;
use dqetl::config::spec::ConfigSpec;
use dqetl::config::{LoadContext, load_spec};
use tokio_postgres::{Client, NoTls};

use crate::support;

fn spec_of(rel: &str) -> ConfigSpec {
    let ctx = LoadContext {
        stack_name: "ddl".into(),
        account_id: None,
    };
    load_spec(&Path::new(env!("CARGO_MANIFEST_DIR")).join(rel), &ctx)
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("test database connection ended: {e}");
        }
    });
    client
}

async fn strings(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<String> {
    client
        .query(sql, params)
        .await
        .expect(sql)
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect()
}

/// (constraint type, column) of one table's key constraints.
async fn key_columns(client: &Client, schema: &str, table: &str) -> Vec<(String, String)> {
    let rows = client
        .query(
            "SELECT tc.constraint_type::text, kcu.column_name::text
             FROM information_schema.table_constraints tc
             JOIN information_schema.key_column_usage kcu
               ON kcu.constraint_name = tc.constraint_name AND kcu.table_schema = tc.table_schema
             WHERE tc.table_schema = $1 AND tc.table_name = $2
             ORDER BY 1, 2",
            &[&schema, &table],
        )
        .await
        .expect("key constraints");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test]
async fn the_vehicle_config_creates_its_five_tables_with_keys() {
    let spec = spec_of("config/tables.yaml");
    let client = connect(&support::postgres().fresh_database("ddl_vehicle").await).await;
    let ddl = compile::ddl(&spec);
    client
        .batch_execute(&ddl)
        .await
        .unwrap_or_else(|e| panic!("DDL fails: {e}\n{ddl}"));
    // Running it again is harmless (IF NOT EXISTS), as post-deploy may.
    client
        .batch_execute(&ddl)
        .await
        .expect("DDL is re-runnable");

    let tables = strings(
        &client,
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
        &[],
    )
    .await;
    assert_eq!(
        tables,
        [
            "alerts",
            "deliveries",
            "drivers",
            "vehicle_telemetry",
            "vehicles"
        ]
    );
    assert_eq!(
        key_columns(&client, "public", "vehicles").await,
        [
            ("PRIMARY KEY".to_string(), "id".to_string()),
            ("UNIQUE".to_string(), "vin".to_string())
        ]
    );
    let latitude = strings(
        &client,
        "SELECT data_type::text FROM information_schema.columns
         WHERE table_name = 'vehicle_telemetry' AND column_name = 'latitude'",
        &[],
    )
    .await;
    assert_eq!(
        latitude,
        ["double precision"],
        "doubles keep their precision (the original used DECIMAL(10,4))"
    );
}

#[tokio::test]
async fn keys_indexes_and_escaped_defaults_exist_as_declared() {
    let spec = spec_of("tests/fixtures/config/ddl_keys_and_indexes.yaml");
    let client = connect(&support::postgres().fresh_database("ddl_keys").await).await;
    let ddl = compile::ddl(&spec);
    // order_lines references orders but is declared first: the DDL must create orders first.
    client
        .batch_execute(&ddl)
        .await
        .unwrap_or_else(|e| panic!("DDL fails: {e}\n{ddl}"));

    assert_eq!(
        key_columns(&client, "shop", "orders").await,
        [("PRIMARY KEY".to_string(), "code".to_string())]
    );
    assert_eq!(
        key_columns(&client, "shop", "order_lines").await,
        [
            ("FOREIGN KEY".to_string(), "order_code".to_string()),
            ("PRIMARY KEY".to_string(), "id".to_string())
        ]
    );
    let fk_target = strings(
        &client,
        "SELECT confrelid::regclass::text FROM pg_constraint WHERE contype = 'f' AND conrelid = 'shop.order_lines'::regclass",
        &[],
    )
    .await;
    assert_eq!(fk_target, ["shop.orders"]);

    let indexes = strings(
        &client,
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'shop' AND indexname LIKE 'idx_%' ORDER BY indexname",
        &[],
    )
    .await;
    assert_eq!(
        indexes,
        [
            "CREATE INDEX idx_order_lines_order_code ON shop.order_lines USING btree (order_code)",
            "CREATE UNIQUE INDEX idx_order_lines_order_code_sku ON shop.order_lines USING btree (order_code, sku)",
        ]
    );

    let default_of = |column: &'static str| {
        let client = &client;
        async move {
            strings(
                client,
                "SELECT column_default::text FROM information_schema.columns
                 WHERE table_schema = 'shop' AND table_name = 'orders' AND column_name = $1",
                &[&column],
            )
            .await
        }
    };
    assert_eq!(default_of("note").await, ["'it''s new'::text"]);
    assert_eq!(default_of("placed_at").await, ["now()"]);
    assert_eq!(default_of("paid").await, ["false"]);

    // The default really applies, quote included; `user` (a reserved word) was quoted.
    client
        .execute(
            "INSERT INTO shop.orders (code, \"user\", total) VALUES ('A-1', 'ann', 12.5)",
            &[],
        )
        .await
        .expect("insert");
    let row = client
        .query_one("SELECT note, paid FROM shop.orders WHERE code = 'A-1'", &[])
        .await
        .expect("row");
    assert_eq!(row.get::<_, String>(0), "it's new");
    assert!(!row.get::<_, bool>(1));
}
