//! The one-off job commands post-deploy runs on aws, run here against the test services:
//! `dqetl sql --ddl --create-replication-slot` and `dqetl topics sync`.

use std::process::Command;

use crate::support;

fn dqetl() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dqetl"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_creates_the_source_tables_and_the_slot_and_a_rerun_keeps_them() {
    let url = support::postgres().fresh_database("jobs_sql").await;
    let slot = support::unique("jobs_slot").replace('-', "_");
    for round in 0..2 {
        let out = dqetl()
            .args([
                "--config",
                "config/tables.yaml",
                "sql",
                "--ddl",
                "--create-replication-slot",
                &slot,
            ])
            .env("DQETL_PG_URL", &url)
            .output()
            .expect("dqetl runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = if round == 0 {
            "created"
        } else {
            "already there"
        };
        assert!(
            stdout.contains(&format!("replication slot {slot}: {expected}")),
            "{stdout}"
        );
    }
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let tables: Vec<String> = client
        .query("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1", &[])
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
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
    let plugin: String = client
        .query_one(
            "SELECT plugin::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("the slot exists")
        .get(0);
    assert_eq!(plugin, "test_decoding");
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .expect("drop slot");
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_sync_creates_every_configured_topic_once() {
    let bootstrap = support::broker().bootstrap();
    for round in 0..2 {
        let out = dqetl()
            .args([
                "--config",
                "config/tables.yaml",
                "topics",
                "sync",
                "--bootstrap",
                &bootstrap,
                "--partitions",
                "2",
            ])
            .output()
            .expect("dqetl runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for table in [
            "vehicles",
            "drivers",
            "vehicle_telemetry",
            "deliveries",
            "alerts",
        ] {
            let line = format!("topic cdc-{table}: ");
            assert!(
                stdout.contains(&line),
                "round {round}: no line for {table} in {stdout}"
            );
            if round == 1 {
                assert!(stdout.contains(&format!("{line}already there")), "{stdout}");
            }
        }
    }
}
