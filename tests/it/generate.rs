//! `dqetl generate-data` against a real PostgreSQL: the source tables end up holding exactly
//! what the summary says, every violation written is in the database and fails its rule (as
//! PostgreSQL itself evaluates it), nothing the DDL refuses is attempted, a refused write
//! stops the run with the table and the reason, and a lost connection does not: the run
//! carries on and its summary stays exact.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use dqetl::config::compile::ddl;
use dqetl::config::spec::{
    ColumnSpec, ColumnType, ConfigSpec, ForeignKeySpec, KafkaSpec, RuleKind, RuleSpec, Scd2Spec,
    SettingsSpec, Severity, TableSpec,
};
use dqetl::config::{LoadContext, load_spec};
use dqetl::generate::{self, GenerateError, GenerateOptions, Key, Mode, Report, StopReason};
use dqetl::pg::{PgConfig, TlsSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_postgres::{Client, NoTls};

use crate::support;

// ----- configs -----

fn col(name: &str, column_type: ColumnType, nullable: bool) -> ColumnSpec {
    ColumnSpec {
        name: name.into(),
        column_type,
        nullable,
        unique: false,
        default: None,
    }
}

fn unique(mut c: ColumnSpec) -> ColumnSpec {
    c.unique = true;
    c
}

fn rule(id: &str, column: &str, kind: RuleKind) -> RuleSpec {
    RuleSpec {
        id: id.into(),
        column: column.into(),
        kind,
        severity: Severity::Error,
        allow_null: false,
    }
}

fn warning(mut r: RuleSpec) -> RuleSpec {
    r.severity = Severity::Warning;
    r
}

fn range(min: f64, max: f64) -> RuleKind {
    RuleKind::Range {
        min: Some(min),
        max: Some(max),
    }
}

fn allowed(values: &[&str]) -> RuleKind {
    RuleKind::AllowedValues {
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

fn regex(pattern: &str) -> RuleKind {
    RuleKind::Regex {
        pattern: regex::Regex::new(pattern).unwrap_or_else(|e| panic!("{e}")),
    }
}

fn table(name: &str, columns: Vec<ColumnSpec>, rules: Vec<RuleSpec>) -> TableSpec {
    TableSpec {
        name: name.into(),
        topic: format!("cdc-{name}"),
        delta_path: None,
        primary_key: Some("id".into()),
        internal: false,
        columns,
        rules,
        transforms: vec![],
        checks: vec![],
        anomaly_checks: vec![],
        foreign_keys: vec![],
        indexes: vec![],
        scd2: Scd2Spec::default(),
        mask_pii_in_quarantine: true,
    }
}

fn config(tables: Vec<TableSpec>) -> ConfigSpec {
    ConfigSpec {
        settings: SettingsSpec {
            checkpoint_location: None,
            quarantine_path: None,
            delta_bucket: None,
            trigger_interval: Duration::from_secs(15),
            max_batch_records: 100_000,
            max_batch_bytes: 64 << 20,
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

/// config/tables.yaml, the vehicle-telemetry use case.
fn vehicle_config() -> ConfigSpec {
    let context = LoadContext {
        stack_name: "test".into(),
        account_id: None,
    };
    load_spec(Path::new("config/tables.yaml"), &context).unwrap_or_else(|e| panic!("{e}"))
}

/// A shop: `orders` is listed before the `customers` it references, so only a generator that
/// orders parents first can seed it.
fn shop_config() -> ConfigSpec {
    use ColumnType::{Double, Int, String as Str, Text};
    let mut orders = table(
        "orders",
        vec![
            col("id", Int, false),
            col("customer_id", Int, false),
            col("amount", Double, true),
            col("status", Str, true),
            col("note", Text, true),
            col("updated_at", Str, true),
        ],
        vec![
            rule("ord_001", "amount", range(0.0, 10_000.0)),
            rule("ord_002", "status", allowed(&["new", "paid", "shipped"])),
            rule(
                "ord_003",
                "note",
                RuleKind::Length {
                    min: Some(2),
                    max: Some(40),
                },
            ),
            rule("ord_004", "customer_id", RuleKind::NotNull),
            warning(rule("ord_005", "amount", range(0.0, 5_000.0))),
        ],
    );
    orders.foreign_keys = vec![ForeignKeySpec {
        column: "customer_id".into(),
        ref_table: "customers".into(),
        ref_column: "id".into(),
    }];
    let customers = table(
        "customers",
        vec![
            col("id", Int, false),
            unique(col("code", Str, false)),
            col("tier", Str, true),
            col("email", Str, true),
            col("name", Str, false),
        ],
        vec![
            rule("cus_001", "code", regex(r"^CUS-\d{4}$")),
            rule("cus_002", "tier", allowed(&["gold", "silver", "bronze"])),
            rule("cus_003", "name", RuleKind::NotNull),
            rule("cus_004", "email", RuleKind::Unique),
        ],
    );
    config(vec![orders, customers])
}

// ----- source database -----

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    tokio::spawn(connection);
    client
}

/// A fresh database holding the config's source tables.
async fn source_database(prefix: &str, spec: &ConfigSpec) -> (String, Client) {
    let url = support::postgres().fresh_database(prefix).await;
    let client = connect(&url).await;
    client
        .batch_execute(&ddl(spec))
        .await
        .unwrap_or_else(|e| panic!("apply DDL: {e}"));
    (url, client)
}

fn options(url: &str, mode: Mode, events: u64, seed: u64, bad_ratio: f64) -> GenerateOptions {
    GenerateOptions {
        source: PgConfig::parse(url, "the test database URL", &TlsSettings::default())
            .unwrap_or_else(|e| panic!("test database URL: {e}")),
        mode,
        rate: None,
        events: Some(events),
        bad_ratio,
        seed,
        progress: false,
    }
}

async fn generate(spec: &ConfigSpec, options: &GenerateOptions) -> Report {
    let (_stop, stop) = watch::channel(false);
    generate::run(spec, options, stop)
        .await
        .unwrap_or_else(|e| panic!("generate: {e}"))
}

async fn keys_in(client: &Client, table: &str) -> BTreeSet<Key> {
    let rows = client
        .query(&format!("SELECT id::int8 FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    rows.iter().map(|r| Key::Int(r.get(0))).collect()
}

async fn count(client: &Client, sql: &str) -> u64 {
    let row = client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)
}

/// The SQL condition under which PostgreSQL finds a row breaking `rule` (NULL fails every rule).
fn violates(rule: &RuleSpec) -> String {
    let c = &rule.column;
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    match &rule.kind {
        RuleKind::NotNull => format!("{c} IS NULL"),
        RuleKind::Range { min, max } => {
            let mut parts = vec![format!("{c} IS NULL")];
            parts.extend(min.map(|m| format!("{c} < {m}")));
            parts.extend(max.map(|m| format!("{c} > {m}")));
            format!("({})", parts.join(" OR "))
        }
        RuleKind::AllowedValues { values } => {
            let list: Vec<String> = values.iter().map(|v| quote(v)).collect();
            format!("({c} IS NULL OR {c}::text NOT IN ({}))", list.join(", "))
        }
        RuleKind::Regex { pattern } => {
            format!("({c} IS NULL OR {c}::text !~ {})", quote(pattern.as_str()))
        }
        RuleKind::Length { min, max } => {
            let mut parts = vec![format!("{c} IS NULL")];
            parts.extend(min.map(|m| format!("char_length({c}::text) < {m}")));
            parts.extend(max.map(|m| format!("char_length({c}::text) > {m}")));
            format!("({})", parts.join(" OR "))
        }
        // Values never repeat (checked separately), so only NULL fails `unique`.
        RuleKind::Unique => format!("{c} IS NULL"),
    }
}

/// The database holds exactly the rows the ledger says the run left, and for every rule the rows
/// PostgreSQL finds breaking it are exactly those the ledger records as breaking it.
async fn assert_source_matches(client: &Client, spec: &ConfigSpec, report: &Report) {
    let writes: u64 = report
        .summary
        .tables
        .iter()
        .map(|t| t.written.insert + t.written.update + t.written.delete)
        .sum();
    assert_eq!(
        writes,
        report.summary.events + report.summary.seed_writes,
        "committed writes"
    );
    for t in spec.source_tables() {
        let summary = report
            .summary
            .table(&t.name)
            .unwrap_or_else(|| panic!("no summary for {}", t.name));
        let ledger = report
            .ledger
            .table(&t.name)
            .unwrap_or_else(|| panic!("no ledger for {}", t.name));
        let in_db = keys_in(client, &t.name).await;
        let expected: BTreeSet<Key> = ledger.source_keys().into_iter().cloned().collect();
        assert_eq!(in_db, expected, "keys of {}", t.name);
        assert_eq!(
            in_db.len() as u64,
            summary.source.rows,
            "row count of {}",
            t.name
        );
        assert_eq!(
            summary.source.live_keys,
            summary.written.insert - summary.source.deleted_keys,
            "{}",
            t.name
        );
        assert_eq!(
            summary.written.delete, summary.source.deleted_keys,
            "{}",
            t.name
        );
        for (r, rule) in t.rules.iter().enumerate() {
            let sql = format!("SELECT count(*) FROM {} WHERE {}", t.name, violates(rule));
            let in_db = count(client, &sql).await;
            let recorded = ledger
                .keys()
                .into_iter()
                .filter_map(|(_, h)| h.source_version())
                .filter(|e| e.failed_rules.contains(&(r as u16)))
                .count() as u64;
            assert_eq!(in_db, recorded, "rows breaking {} in {}", rule.id, t.name);
        }
    }
}

// ----- scenarios -----

#[tokio::test]
async fn vehicle_traffic_leaves_the_source_tables_exactly_as_its_summary_says() {
    let spec = vehicle_config();
    let (url, client) = source_database("gen_vehicle", &spec).await;
    let report = generate(&spec, &options(&url, Mode::Auto, 2500, 7, 0.3)).await;

    assert!(report.failure.is_none(), "{:?}", report.failure);
    let s = &report.summary;
    assert_eq!(
        (s.mode, s.stopped, s.events),
        ("vehicle", StopReason::Budget, 2500)
    );
    assert_source_matches(&client, &spec, &report).await;

    // The seed: 15 vehicles with 17-character VINs and 10 drivers, before any other write.
    let vins = count(
        &client,
        "SELECT count(*) FROM vehicles WHERE vin ~ '^[A-Z0-9]{17}$'",
    )
    .await;
    assert_eq!(vins, count(&client, "SELECT count(*) FROM vehicles").await);
    let seeded = report
        .ledger
        .table("vehicles")
        .map(|t| t.keys().len())
        .unwrap_or(0);
    assert!(seeded >= 15, "{seeded} vehicles");
    assert!(s.seed_writes == 25, "{} seed writes", s.seed_writes);
    // Realistic telemetry: valid rows drive at most 80 km/h inside New York.
    let wild = "SELECT count(*) FROM vehicle_telemetry WHERE speed_kmh BETWEEN 80.0001 AND 350 \
                OR (latitude BETWEEN -90 AND 90 AND latitude NOT BETWEEN 40.5 AND 40.95)";
    assert_eq!(count(&client, wild).await, 0);

    // Every kind of traffic happened: updates (status changes, corrections), soft and hard deletes.
    for name in ["vehicles", "drivers", "deliveries"] {
        let t = s.table(name).unwrap_or_else(|| panic!("{name}"));
        assert!(t.written.update > 0, "{name}: {:?}", t.written);
    }
    let hard_deletes: u64 = s.tables.iter().map(|t| t.written.delete).sum();
    assert!(hard_deletes > 0);
    // Hard deletes of vehicles and drivers only hit rows nothing points at (no FK is declared,
    // so the database would not have stopped an orphan).
    let parent_deletes = ["vehicles", "drivers"]
        .iter()
        .filter_map(|n| s.table(n))
        .map(|t| t.written.delete)
        .sum::<u64>();
    assert!(parent_deletes > 0);
    for (child, column, parent) in [
        ("vehicle_telemetry", "vehicle_id", "vehicles"),
        ("deliveries", "vehicle_id", "vehicles"),
        ("deliveries", "driver_id", "drivers"),
        ("alerts", "vehicle_id", "vehicles"),
        ("alerts", "driver_id", "drivers"),
    ] {
        let orphans = format!(
            "SELECT count(*) FROM {child} c WHERE c.{column} IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.id = c.{column})"
        );
        assert_eq!(count(&client, &orphans).await, 0, "{child}.{column}");
    }
    let soft = count(
        &client,
        "SELECT count(*) FROM vehicles WHERE status = 'decommissioned'",
    )
    .await
        + count(
            &client,
            "SELECT count(*) FROM drivers WHERE status = 'terminated'",
        )
        .await;
    assert!(soft > 0, "no soft deletes");

    // Every rule §4.3 violates was violated, and quarantine is expected for each failure.
    for (table, id) in [
        ("vehicle_telemetry", "tel_001"),
        ("vehicle_telemetry", "tel_002"),
        ("vehicle_telemetry", "tel_003"),
        ("vehicle_telemetry", "tel_004"),
        ("vehicle_telemetry", "tel_005"),
        ("deliveries", "del_001"),
        ("alerts", "alt_001"),
        ("drivers", "drv_001"),
    ] {
        let r = s.rule(table, id).unwrap_or_else(|| panic!("{id}"));
        assert!(r.failures > 0, "{id} never failed");
        assert_eq!(r.quarantined, r.failures, "{id}");
        assert_eq!(r.not_exercised, None, "{id}");
    }
    // drivers.name is NOT NULL: the original's NULL-name drivers are never attempted.
    let drv_002 = s
        .rule("drivers", "drv_002")
        .unwrap_or_else(|| panic!("drv_002"));
    assert_eq!(drv_002.failures, 0);
    assert!(
        drv_002
            .not_exercised
            .as_deref()
            .is_some_and(|w| w.contains("drivers.name is NOT NULL")),
        "{drv_002:?}"
    );
    assert!(
        s.notes.iter().any(|n| n.contains("NULL name")),
        "{:?}",
        s.notes
    );

    // Per table, quarantined rows = versions failing at least one error rule; current rows are
    // the keys left with a valid version.
    for t in &s.tables {
        let ledger = report
            .ledger
            .table(&t.table)
            .unwrap_or_else(|| panic!("{}", t.table));
        let current = ledger.lake_current_keys().len() as u64;
        assert_eq!(t.lake.current_rows, current, "{}", t.table);
        assert!(t.lake.versions_min <= t.lake.versions_max);
        assert_eq!(
            t.lake.quarantined_rows,
            t.lake.quarantined_inserts + t.lake.quarantined_updates
        );
    }
    let telemetry = s
        .table("vehicle_telemetry")
        .unwrap_or_else(|| panic!("telemetry"));
    let bad_telemetry = count(
        &client,
        "SELECT count(*) FROM vehicle_telemetry WHERE latitude NOT BETWEEN -90 AND 90 OR longitude NOT BETWEEN -180 AND 180 \
         OR speed_kmh NOT BETWEEN 0 AND 350 OR fuel_level_pct NOT BETWEEN 0 AND 120 OR vehicle_id IS NULL",
    )
    .await;
    // Telemetry is append-only: every bad row is still there, and each is one quarantine row.
    assert_eq!(telemetry.lake.quarantined_rows, bad_telemetry);
    assert_eq!(
        telemetry.lake.current_rows + bad_telemetry,
        telemetry.source.rows
    );
}

#[tokio::test]
async fn the_same_seed_gives_the_same_traffic() {
    let spec = vehicle_config();
    let (first_url, _a) = source_database("gen_seed_a", &spec).await;
    let (second_url, _b) = source_database("gen_seed_b", &spec).await;
    let first = generate(&spec, &options(&first_url, Mode::Auto, 700, 11, 0.1)).await;
    let second = generate(&spec, &options(&second_url, Mode::Auto, 700, 11, 0.1)).await;

    let mut a = first.summary.clone();
    let mut b = second.summary.clone();
    a.elapsed_seconds = 0.0;
    b.elapsed_seconds = 0.0;
    assert_eq!(a, b);
    for (x, y) in first.ledger.tables().iter().zip(second.ledger.tables()) {
        assert_eq!(x.keys(), y.keys(), "histories of {}", x.name);
    }
    // And another seed gives other traffic.
    let (third_url, _c) = source_database("gen_seed_c", &spec).await;
    let third = generate(&spec, &options(&third_url, Mode::Auto, 700, 12, 0.1)).await;
    let mut c = third.summary.clone();
    c.elapsed_seconds = 0.0;
    c.seed = 11;
    assert_ne!(a, c);
}

#[tokio::test]
async fn generic_traffic_writes_parents_first_and_violates_only_what_the_database_accepts() {
    let spec = shop_config();
    let (url, client) = source_database("gen_shop", &spec).await;
    let report = generate(&spec, &options(&url, Mode::Auto, 1500, 3, 0.3)).await;

    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert_eq!(report.summary.mode, "generic");
    assert_source_matches(&client, &spec, &report).await;

    // orders comes first in the config and references customers: the seed (and everything
    // after it) only went through because every parent row was written before its children.
    let orders = report
        .summary
        .table("orders")
        .unwrap_or_else(|| panic!("orders"));
    let customers = report
        .summary
        .table("customers")
        .unwrap_or_else(|| panic!("customers"));
    assert!(orders.source.rows > 0 && customers.source.rows > 0);
    assert!(orders.written.update > 0 && customers.written.update > 0);
    assert!(
        orders.written.delete > 0 && customers.written.delete > 0,
        "{orders:?} {customers:?}"
    );

    for (table, id) in [
        ("orders", "ord_001"),
        ("orders", "ord_002"),
        ("orders", "ord_003"),
        ("customers", "cus_001"),
        ("customers", "cus_002"),
    ] {
        let r = report
            .summary
            .rule(table, id)
            .unwrap_or_else(|| panic!("{id}"));
        assert!(r.failures > 0 && r.not_exercised.is_none(), "{r:?}");
    }
    // A NOT NULL foreign key, a NOT NULL name: nothing the database accepts breaks them.
    let ord_004 = report
        .summary
        .rule("orders", "ord_004")
        .unwrap_or_else(|| panic!("ord_004"));
    assert_eq!(ord_004.failures, 0);
    assert!(
        ord_004
            .not_exercised
            .as_deref()
            .is_some_and(|w| w.contains("foreign key to customers.id")),
        "{ord_004:?}"
    );
    let cus_003 = report
        .summary
        .rule("customers", "cus_003")
        .unwrap_or_else(|| panic!("cus_003"));
    assert!(
        cus_003
            .not_exercised
            .as_deref()
            .is_some_and(|w| w.contains("customers.name is NOT NULL")),
        "{cus_003:?}"
    );

    // A warning rule: its failures are loaded unless the row also breaks an error rule.
    let ord_005 = report
        .summary
        .rule("orders", "ord_005")
        .unwrap_or_else(|| panic!("ord_005"));
    assert_eq!(ord_005.severity, "warning");
    assert!(
        0 < ord_005.quarantined && ord_005.quarantined < ord_005.failures,
        "{ord_005:?}"
    );
    // `unique` fails on NULL only: the generator never repeats a value.
    let cus_004 = report
        .summary
        .rule("customers", "cus_004")
        .unwrap_or_else(|| panic!("cus_004"));
    assert!(cus_004.failures > 0, "{cus_004:?}");
    let repeated = count(
        &client,
        "SELECT count(email) - count(DISTINCT email) FROM customers",
    )
    .await;
    assert_eq!(repeated, 0);

    // Valid codes have the pattern's shape; unique codes stayed unique.
    let shaped = count(
        &client,
        "SELECT count(*) FROM customers WHERE code ~ '^CUS-[0-9]{4}$'",
    )
    .await;
    let customers_total = count(&client, "SELECT count(*) FROM customers").await;
    let bad_codes = report
        .summary
        .rule("customers", "cus_001")
        .map(|r| r.failures)
        .unwrap_or(0);
    assert!(
        shaped > 0 && shaped < customers_total,
        "{shaped} of {customers_total}, {bad_codes} failures written"
    );
}

#[tokio::test]
async fn a_write_the_database_refuses_stops_the_run_with_the_table_and_the_reason() {
    let spec = vehicle_config();
    let (url, client) = source_database("gen_refused", &spec).await;
    // A constraint the config does not know about: the generator's out-of-range speeds hit it.
    client
        .batch_execute(
            "ALTER TABLE vehicle_telemetry ADD CONSTRAINT speed_cap CHECK (speed_kmh < 300)",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let report = generate(&spec, &options(&url, Mode::Vehicle, 2000, 5, 1.0)).await;

    assert_eq!(report.summary.stopped, StopReason::Error);
    let failure = report
        .failure
        .as_ref()
        .map(|e| e.to_string())
        .unwrap_or_default();
    match &report.failure {
        Some(GenerateError::Rejected {
            table,
            operation,
            rejection,
        }) => {
            assert_eq!(
                (table.as_str(), *operation),
                ("vehicle_telemetry", "insert")
            );
            assert_eq!(rejection.code, "23514");
            assert_eq!(rejection.constraint.as_deref(), Some("speed_cap"));
        }
        other => panic!("expected a rejected insert, got {other:?}"),
    }
    assert!(
        failure.contains("vehicle_telemetry") && failure.contains("speed_cap"),
        "{failure}"
    );
    // The summary covers exactly the committed writes; the failed transaction left nothing.
    assert_source_matches(&client, &spec, &report).await;
}

#[tokio::test]
async fn a_missing_source_table_is_named_before_anything_is_written() {
    let spec = vehicle_config();
    let url = support::postgres().fresh_database("gen_missing").await;
    let (_stop, stop) = watch::channel(false);
    let err = generate::run(&spec, &options(&url, Mode::Auto, 10, 1, 0.1), stop)
        .await
        .err();
    let message = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("table 'vehicles' does not exist in schema 'public'"),
        "{message}"
    );
}

#[tokio::test]
async fn a_stop_request_ends_the_run_with_a_summary_of_what_was_committed() {
    let spec = vehicle_config();
    let (url, client) = source_database("gen_stop", &spec).await;
    let (stop_tx, stop) = watch::channel(false);
    let mut opts = options(&url, Mode::Auto, 0, 9, 0.1);
    opts.events = None;
    opts.rate = Some(200.0);
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let _ = stop_tx.send(true);
    });
    let report = generate::run(&spec, &opts, stop)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = stopper.await;

    assert_eq!(report.summary.stopped, StopReason::Interrupted);
    assert!(report.failure.is_none());
    // Paced at 200/s for about 1.5 s.
    assert!(
        (100..=400).contains(&report.summary.events),
        "{} events",
        report.summary.events
    );
    assert_source_matches(&client, &spec, &report).await;
}

#[tokio::test]
async fn duration_zero_seeds_the_fleet_only() {
    let spec = vehicle_config();
    let (url, client) = source_database("gen_seed_only", &spec).await;
    let report = generate(&spec, &options(&url, Mode::Auto, 0, 2, 0.0)).await;

    assert_eq!(report.summary.events, 0);
    assert_eq!(count(&client, "SELECT count(*) FROM vehicles").await, 15);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM drivers WHERE employee_id ~ '^DRV[0-9]{5}$'"
        )
        .await,
        10
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM vehicle_telemetry").await,
        0
    );
    assert_source_matches(&client, &spec, &report).await;

    // Seeding again (a re-run of post-deploy) finds the rows and writes nothing.
    let again = generate(&spec, &options(&url, Mode::Auto, 0, 3, 0.0)).await;
    assert!(again.failure.is_none(), "{:?}", again.failure);
    assert_eq!(count(&client, "SELECT count(*) FROM vehicles").await, 15);
    assert_eq!(count(&client, "SELECT count(*) FROM drivers").await, 10);
    assert!(
        again.ledger.tables().iter().all(|t| t.keys().is_empty()),
        "a second seed-only run wrote rows"
    );
}

#[tokio::test]
async fn the_original_projects_vehicle_config_runs_unchanged() {
    let context = LoadContext {
        stack_name: "test".into(),
        account_id: None,
    };
    let spec = load_spec(
        Path::new("config/examples/vehicle-telemetry-original.yaml"),
        &context,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (url, client) = source_database("gen_original", &spec).await;
    let report = generate(&spec, &options(&url, Mode::Auto, 400, 4, 0.08)).await;

    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert_eq!(report.summary.mode, "vehicle");
    assert_source_matches(&client, &spec, &report).await;
}

// ----- lost connections -----

/// The simple-protocol COMMIT the generator sends, as it appears on the wire.
const COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

/// Where the proxy cuts a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// The COMMIT reaches the server (the transaction commits), its reply never comes back.
    AfterCommit,
    /// The COMMIT never reaches the server (the transaction does not commit).
    BeforeCommit,
    /// A statement in the middle of a transaction never reaches the server.
    MidTransaction,
}

/// A TCP proxy in front of the test cluster that cuts client connections at those moments,
/// once the first transaction has committed (so the generator's start-up is left alone).
#[derive(Default)]
struct CuttingProxy {
    commits: AtomicU32,
    statements: AtomicU32,
    cuts: [AtomicU32; 3],
}

impl CuttingProxy {
    /// Every 5th COMMIT is cut, alternately after and before it reaches the server; every
    /// 97th statement (a Bind message) after the first commit is cut before it does.
    fn decide(&self, chunk: &[u8]) -> Option<Cut> {
        let cut = if chunk == COMMIT {
            let n = self.commits.fetch_add(1, Ordering::SeqCst);
            match (n % 5, (n / 5) % 2) {
                (4, 0) => Some(Cut::AfterCommit),
                (4, _) => Some(Cut::BeforeCommit),
                _ => None,
            }
        } else if chunk.first() == Some(&b'B') && self.commits.load(Ordering::SeqCst) > 0 {
            let n = self.statements.fetch_add(1, Ordering::SeqCst);
            (n % 97 == 50).then_some(Cut::MidTransaction)
        } else {
            None
        };
        if let Some(cut) = cut {
            self.cuts[cut as usize].fetch_add(1, Ordering::SeqCst);
        }
        cut
    }

    fn cuts(&self, cut: Cut) -> u32 {
        self.cuts[cut as usize].load(Ordering::SeqCst)
    }

    /// Listens on a free port and relays every connection to `upstream`.
    async fn start(self: &Arc<Self>, upstream: u16) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let proxy = Arc::clone(self);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                tokio::spawn(Arc::clone(&proxy).relay(client, server));
            }
        });
        port
    }

    async fn relay(self: Arc<Self>, client: TcpStream, server: TcpStream) {
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_server, mut to_server) = server.into_split();
        let cut = Arc::new(AtomicBool::new(false));
        let replies_cut = Arc::clone(&cut);
        let replies = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                if replies_cut.load(Ordering::SeqCst)
                    || to_client.write_all(&buf[..n]).await.is_err()
                {
                    break;
                }
            }
        });
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from_client.read(&mut buf).await {
            let chunk = &buf[..n];
            match self.decide(chunk) {
                None => {
                    if to_server.write_all(chunk).await.is_err() {
                        break;
                    }
                }
                Some(Cut::AfterCommit) => {
                    cut.store(true, Ordering::SeqCst);
                    let _ = to_server.write_all(chunk).await;
                    // Let the server commit before the connection goes.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
                Some(Cut::BeforeCommit | Cut::MidTransaction) => break,
            }
        }
        cut.store(true, Ordering::SeqCst);
        replies.abort();
        // Dropping the halves closes both connections.
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_connections_lose_double_and_misreport_no_write() {
    let spec = vehicle_config();
    let (url, client) = source_database("gen_cut", &spec).await;
    let proxy = Arc::new(CuttingProxy::default());
    let pg_port = support::postgres().port();
    let proxy_port = proxy.start(pg_port).await;
    let through_proxy = url.replace(&format!(":{pg_port}/"), &format!(":{proxy_port}/"));
    assert_ne!(
        through_proxy, url,
        "the URL names the cluster's port: {url}"
    );

    let report = generate(&spec, &options(&through_proxy, Mode::Auto, 1200, 21, 0.3)).await;

    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert_eq!(
        (report.summary.stopped, report.summary.events),
        (StopReason::Budget, 1200)
    );
    let cuts = [Cut::AfterCommit, Cut::BeforeCommit, Cut::MidTransaction].map(|c| proxy.cuts(c));
    eprintln!("cuts {cuts:?}, losses {}", report.summary.connection_losses);
    assert!(
        cuts.iter().all(|&n| n >= 1),
        "every kind of cut happened: {cuts:?}"
    );
    assert_eq!(
        report.summary.connection_losses,
        u64::from(cuts.iter().sum::<u32>()),
        "every cut was seen as a lost connection"
    );
    // Transactions that committed without their reply are counted once, those that did not
    // were written again: the database holds exactly what the summary says.
    assert_source_matches(&client, &spec, &report).await;
}
