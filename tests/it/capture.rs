//! `dqetl capture` against a real PostgreSQL (wal_level=logical) and a real broker: snapshot and
//! stream meet without gap or double, a restart loses nothing and doubles nothing, large
//! unchanged values survive updates, and deletes carry the key.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use dqetl::capture::{self, CancellationToken, CaptureOptions, CaptureReport};
use dqetl::config::spec::{
    ColumnSpec, ColumnType, ConfigSpec, KafkaSpec, Scd2Spec, SettingsSpec, TableSpec,
};
use dqetl::pg::{PgConfig, TlsSettings};
use dqetl::target::local::ports::free_port;
use dqetl::target::local::{Broker, BrokerOptions, SpawnOptions, Storage, create_topics};
use nix::sys::signal::Signal;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers as _;
use serde_json::Value;
use std::path::PathBuf;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use crate::support::{self, unique};

// ---------------------------------------------------------------------------------------------
// Scenarios

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_concurrent_writes_arrive_exactly_once_in_dms_format() {
    let db = support::postgres().fresh_database("capture_snapshot").await;
    let pg = connect(&db).await;
    pg.batch_execute(
        "CREATE TABLE vehicles (id int PRIMARY KEY, name varchar(50), speed numeric(6,2), \
         active boolean, seen_at timestamptz, version int NOT NULL DEFAULT 0); \
         INSERT INTO vehicles (id, name, speed, active, seen_at) \
         SELECT g, 'truck-' || g, g * 1.25, g % 2 = 0, '2026-01-02 03:04:05.5+00' FROM generate_series(1, 300) g",
    )
    .await
    .unwrap();
    let topic = unique("cdc-vehicles");
    support::broker().create_topic(&topic, 3).await;
    let config = config_with(vec![vehicles_spec(&topic)]);

    // Writes race the slot creation and the snapshot: each must show up once, as a load or as
    // a change, never both and never neither.
    let writer_db = db.clone();
    let writer = tokio::spawn(async move {
        let pg = connect(&writer_db).await;
        for i in 0..150 {
            let id = 1000 + i;
            pg.execute(
                "INSERT INTO vehicles (id, name, speed, active, seen_at) VALUES ($1, 'new', 10.5, true, now())",
                &[&id],
            )
            .await
            .unwrap();
            let target = 1 + (i * 7) % 300;
            pg.execute(
                "UPDATE vehicles SET version = version + 1, speed = speed + 1 WHERE id = $1",
                &[&target],
            )
            .await
            .unwrap();
            if i % 10 == 0 {
                pg.execute("DELETE FROM vehicles WHERE id = $1", &[&(250 + i / 10)])
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let capture = Running::start(config, options(&db, "snap", dir.path()));
    writer.await.unwrap();

    let expected = table_state(&pg).await;
    let messages = read_until(&topic, 3, |msgs| replay(msgs) == expected).await;
    let report = capture.stop().await;
    drop_slot(&pg, &slot_name("snap")).await;
    assert_eq!(
        replay(&messages),
        expected,
        "the replayed messages rebuild the table"
    );
    assert_eq!(report.snapshot_rows as usize, count_op(&messages, "load"));

    let mut seen_first: BTreeMap<i64, usize> = BTreeMap::new();
    let mut versions: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for m in &messages {
        assert_dms_record(
            m,
            "vehicles",
            &["id", "name", "speed", "active", "seen_at", "version"],
        );
        let op = m.op();
        let id = m.value["data"]["id"].as_i64().unwrap();
        assert_eq!(
            m.key.as_deref(),
            Some(id.to_string().as_str()),
            "keyed by the primary key's text"
        );
        if op == "load" || op == "insert" {
            *seen_first.entry(id).or_default() += 1;
        }
        if op != "delete" {
            versions
                .entry(id)
                .or_default()
                .push(m.value["data"]["version"].as_i64().unwrap());
        }
        if op == "load" {
            assert!(
                m.value["metadata"].get("transaction-id").is_none(),
                "loads carry no transaction id"
            );
        } else {
            assert!(
                m.value["metadata"]["transaction-id"].is_u64(),
                "changes carry the xid"
            );
        }
    }
    // Rows deleted before the snapshot never show up; every other row does, once.
    let deleted: BTreeSet<i64> = (250..265).collect();
    let surviving: BTreeSet<i64> = (1..=300)
        .chain(1000..1150)
        .filter(|id| !deleted.contains(id))
        .collect();
    assert_eq!(
        seen_first
            .keys()
            .copied()
            .filter(|id| !deleted.contains(id))
            .collect::<BTreeSet<_>>(),
        surviving,
        "every row arrives"
    );
    assert!(
        seen_first.values().all(|&n| n == 1),
        "no row arrives both as a load and an insert"
    );
    for (id, seen) in versions {
        let consecutive = seen.windows(2).all(|w| w[1] == w[0] + 1);
        assert!(
            consecutive,
            "row {id}: versions {seen:?} skip or repeat an update"
        );
    }
    assert!(count_op(&messages, "update") > 0 && count_op(&messages, "delete") > 0);
    let raced = |op: &str| messages.iter().any(|m| m.op() == op && m.id() >= 1000);
    assert!(
        raced("load") && raced("insert"),
        "the writer raced the snapshot: some of its rows are loads, some inserts"
    );

    let sample = &messages
        .iter()
        .find(|m| m.op() == "load" && m.value["data"]["id"] == 2)
        .unwrap()
        .value["data"];
    assert_eq!(sample["name"], "truck-2");
    assert_eq!(as_f64(&sample["speed"]), Some(2.5));
    assert_eq!(
        sample["active"], "true",
        "boolean as a string, as DMS writes it"
    );
    assert_eq!(
        as_micros(&sample["seen_at"]),
        Some(micros("2026-01-02T03:04:05.5Z"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_stream_loses_no_change_and_does_not_snapshot_again() {
    let db = support::postgres().fresh_database("capture_restart").await;
    let pg = connect(&db).await;
    pg.batch_execute(
        "CREATE TABLE events (id int PRIMARY KEY, n int NOT NULL); \
         INSERT INTO events SELECT g, 0 FROM generate_series(1, 10) g",
    )
    .await
    .unwrap();
    let topic = unique("cdc-events");
    support::broker().create_topic(&topic, 2).await;
    let config = config_with(vec![events_spec(&topic)]);
    let dir = tempfile::tempdir().unwrap();
    let opts = options(&db, "restart", dir.path());

    // First run: snapshot, then changes while it is stopped gracefully part-way.
    let mut capture = Running::start(config.clone(), opts.clone());
    capture.wait_until_streaming().await;
    insert_events(&pg, 11..=60).await;
    read_until(&topic, 2, |m| ids_of(m).len() == 60).await;
    let writer = spawn_inserts(db.clone(), 61..=120);
    tokio::time::sleep(Duration::from_millis(150)).await;
    capture.stop().await;
    writer.await.unwrap();
    insert_events(&pg, 121..=150).await;

    // Second run: resumes, delivers every change but confirms none of them to PostgreSQL (its
    // status updates are too far apart), then is killed: PostgreSQL resends all it streamed.
    let mut unconfirmed = opts.clone();
    unconfirmed.status_interval = Duration::from_secs(600);
    let capture = Running::start(config.clone(), unconfirmed);
    read_until(&topic, 2, |m| ids_of(m).len() == 150).await;
    insert_events(&pg, 151..=200).await;
    read_until(&topic, 2, |m| ids_of(m).len() == 200).await;
    capture.kill().await;

    // Third run: picks up whatever the killed run had not confirmed.
    let capture = Running::start(config, opts);
    let messages = read_until(&topic, 2, |m| ids_of(m).len() == 200).await;
    let report = capture.stop().await;
    drop_slot(&pg, &slot_name("restart")).await;

    assert_eq!(
        ids_of(&messages),
        (1..=200).collect::<BTreeSet<_>>(),
        "every change is in Kafka"
    );
    assert_eq!(
        count_op(&messages, "load"),
        10,
        "the snapshot is taken once, not on restart"
    );
    assert_eq!(report.snapshot_rows, 0, "the resumed runs take no snapshot");
    // What PostgreSQL resent after the kill and the topic already held was not sent again.
    let mut inserts: Vec<i64> = messages
        .iter()
        .filter(|m| m.op() == "insert")
        .map(|m| m.id())
        .collect();
    inserts.sort_unstable();
    assert_eq!(inserts, (11..=200).collect::<Vec<_>>(), "each insert once");
    // Keys land where librdkafka's default partitioner puts them, as before capture chose
    // partitions itself.
    for m in &messages {
        let key = m.key.as_deref().expect("keyed");
        assert_eq!(
            m.partition,
            capture::partition_for(key.as_bytes(), 2),
            "{key}"
        );
    }
    assert!(
        messages
            .iter()
            .filter(|m| m.op() == "insert")
            .all(|m| m.position.is_some()),
        "streamed changes carry their position"
    );
    assert!(
        messages
            .iter()
            .filter(|m| m.op() == "load")
            .all(|m| m.position.is_none()),
        "snapshot rows carry none"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_connection_is_retried_without_losing_changes() {
    let db = support::postgres()
        .fresh_database("capture_reconnect")
        .await;
    let pg = connect(&db).await;
    pg.batch_execute("CREATE TABLE events (id int PRIMARY KEY, n int NOT NULL)")
        .await
        .unwrap();
    let topic = unique("cdc-events");
    support::broker().create_topic(&topic, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let opts = options(&db, "reconnect", dir.path());
    let mut capture = Running::start(config_with(vec![events_spec(&topic)]), opts.clone());
    capture.wait_until_streaming().await;
    insert_events(&pg, 1..=20).await;
    read_until(&topic, 2, |m| ids_of(m).len() == 20).await;

    // The server drops every capture connection (as on a restart); writes go on meanwhile.
    let writer = spawn_inserts(db.clone(), 21..=80);
    pg.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND (backend_type = 'walsender' OR application_name <> 'capture-test-writer')",
        &[],
    )
    .await
    .unwrap();
    writer.await.unwrap();
    let messages = read_until(&topic, 2, |m| ids_of(m).len() == 80).await;
    let report = capture.stop().await;
    drop_slot(&pg, &opts.slot).await;

    assert!(
        report.restarts >= 1,
        "the lost connection was noticed and retried"
    );
    assert_eq!(ids_of(&messages), (1..=80).collect::<BTreeSet<_>>());
    assert_eq!(report.snapshot_rows, 0, "resuming takes no new snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_retried_without_losing_changes() {
    // A broker of our own, on SQLite so it keeps its data across the outage, tied to this
    // test's thread so a failing test does not leave it running.
    let work_dir = support::scratch_dir("capture-broker").join("broker");
    let port = free_port().expect("free port");
    let broker_options = BrokerOptions {
        spawn: SpawnOptions {
            die_with_parent: Some(Signal::SIGKILL),
            ..SpawnOptions::default()
        },
        ..BrokerOptions::default()
    };
    let start_broker = || {
        Broker::start_with(
            &work_dir,
            port,
            Storage::Sqlite(PathBuf::from("data/tansu.db")),
            &broker_options,
        )
        .unwrap_or_else(|e| panic!("start broker: {}", support::error_chain(&e)))
    };
    let broker = start_broker();
    let topic = unique("cdc-events");
    create_topics(&broker.bootstrap(), &[(&topic, 2)])
        .await
        .expect("create topic");

    let db = support::postgres().fresh_database("capture_outage").await;
    let pg = connect(&db).await;
    pg.batch_execute("CREATE TABLE events (id int PRIMARY KEY, n int NOT NULL)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&db, "outage", dir.path());
    opts.bootstrap = broker.bootstrap();
    opts.message_timeout = Duration::from_secs(3);
    let mut capture = Running::start(config_with(vec![events_spec(&topic)]), opts.clone());
    capture.wait_until_streaming().await;
    insert_events(&pg, 1..=10).await;
    read_until_on(&broker.bootstrap(), &topic, 2, |m| ids_of(m).len() == 10).await;

    // The broker goes away while changes keep coming: they time out, capture backs off and
    // starts over from the last position the broker acknowledged.
    broker.stop().expect("stop broker");
    insert_events(&pg, 11..=40).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let broker = start_broker();
    let messages = read_until_on(&broker.bootstrap(), &topic, 2, |m| ids_of(m).len() == 40).await;
    let report = capture.stop().await;
    drop_slot(&pg, &opts.slot).await;

    assert_eq!(
        ids_of(&messages),
        (1..=40).collect::<BTreeSet<_>>(),
        "no change is lost"
    );
    assert!(report.restarts >= 1, "the outage was noticed and retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_unchanged_value_survives_an_update_of_another_column() {
    let db = support::postgres().fresh_database("capture_toast").await;
    let pg = connect(&db).await;
    pg.batch_execute("CREATE TABLE documents (id int PRIMARY KEY, title varchar(100), body text)")
        .await
        .unwrap();
    // Incompressible text well above the 2 kB TOAST threshold, so it is stored out of line.
    let big_snapshot = random_text(100_000);
    let big_streamed = random_text(100_000);
    pg.execute(
        "INSERT INTO documents VALUES (1, 'draft', $1)",
        &[&big_snapshot],
    )
    .await
    .unwrap();
    let topic = unique("cdc-documents");
    support::broker().create_topic(&topic, 1).await;
    let config = config_with(vec![documents_spec("documents", &topic)]);
    let dir = tempfile::tempdir().unwrap();
    let capture = Running::start(config, options(&db, "toast", dir.path()));

    read_until(&topic, 1, |m| count_op(m, "load") == 1).await;
    pg.execute("UPDATE documents SET title = 'final' WHERE id = 1", &[])
        .await
        .unwrap();
    pg.execute(
        "INSERT INTO documents VALUES (2, 'new', $1)",
        &[&big_streamed],
    )
    .await
    .unwrap();
    pg.execute("UPDATE documents SET title = 'renamed' WHERE id = 2", &[])
        .await
        .unwrap();
    let messages = read_until(&topic, 1, |m| count_op(m, "update") == 2).await;
    capture.stop().await;
    drop_slot(&pg, &slot_name("toast")).await;

    let identity: String = pg
        .query_one(
            "SELECT relreplident::text FROM pg_class WHERE relname = 'documents'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        identity, "f",
        "capture switched the table to REPLICA IDENTITY FULL"
    );
    let updates: Vec<&Msg> = messages.iter().filter(|m| m.op() == "update").collect();
    assert_eq!(updates[0].value["data"]["title"], "final");
    assert_eq!(
        updates[0].value["data"]["body"].as_str(),
        Some(big_snapshot.as_str()),
        "snapshot row keeps its body"
    );
    assert_eq!(updates[1].value["data"]["title"], "renamed");
    assert_eq!(
        updates[1].value["data"]["body"].as_str(),
        Some(big_streamed.as_str()),
        "streamed row keeps its body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_identity_capture_does_not_manage_the_unchanged_value_is_read_back() {
    let db = support::postgres()
        .fresh_database("capture_toast_index")
        .await;
    let pg = connect(&db).await;
    pg.batch_execute(
        "CREATE TABLE notes (id int PRIMARY KEY, title varchar(100), body text); \
         ALTER TABLE notes REPLICA IDENTITY USING INDEX notes_pkey",
    )
    .await
    .unwrap();
    let big = random_text(100_000);
    let topic = unique("cdc-notes");
    support::broker().create_topic(&topic, 1).await;
    let config = config_with(vec![documents_spec("notes", &topic)]);
    let dir = tempfile::tempdir().unwrap();
    let mut capture = Running::start(config, options(&db, "toastidx", dir.path()));
    capture.wait_until_streaming().await;
    pg.execute("INSERT INTO notes VALUES (1, 'a', $1)", &[&big])
        .await
        .unwrap();
    pg.execute("UPDATE notes SET title = 'b' WHERE id = 1", &[])
        .await
        .unwrap();
    let messages = read_until(&topic, 1, |m| count_op(m, "update") == 1).await;
    capture.stop().await;
    drop_slot(&pg, &slot_name("toastidx")).await;

    let identity: String = pg
        .query_one(
            "SELECT relreplident::text FROM pg_class WHERE relname = 'notes'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        identity, "i",
        "a deliberately chosen identity is left alone"
    );
    let update = messages.iter().find(|m| m.op() == "update").unwrap();
    assert_eq!(update.value["data"]["title"], "b");
    assert_eq!(update.value["data"]["body"].as_str(), Some(big.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_with_the_default_replica_identity_carries_the_key() {
    let db = support::postgres().fresh_database("capture_delete").await;
    let pg = connect(&db).await;
    pg.batch_execute(
        "CREATE TABLE readings (id bigint PRIMARY KEY, value int, ok boolean, at timestamptz)",
    )
    .await
    .unwrap();
    let topic = unique("cdc-readings");
    support::broker().create_topic(&topic, 2).await;
    let config = config_with(vec![readings_spec(&topic)]);
    let dir = tempfile::tempdir().unwrap();
    let mut capture = Running::start(config, options(&db, "delete", dir.path()));
    capture.wait_until_streaming().await;
    pg.batch_execute(
        "INSERT INTO readings VALUES (7000000001, 5, true, '2026-03-01 10:00:00+00'); \
         DELETE FROM readings WHERE id = 7000000001",
    )
    .await
    .unwrap();
    let messages = read_until(&topic, 2, |m| count_op(m, "delete") == 1).await;
    capture.stop().await;
    drop_slot(&pg, &slot_name("delete")).await;

    let identity: String = pg
        .query_one(
            "SELECT relreplident::text FROM pg_class WHERE relname = 'readings'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        identity, "d",
        "a table without large columns keeps the default identity"
    );
    let delete = messages.iter().find(|m| m.op() == "delete").unwrap();
    assert_dms_record(delete, "readings", &["id", "value", "ok", "at"]);
    assert_eq!(delete.key.as_deref(), Some("7000000001"));
    assert_eq!(delete.value["data"]["id"], 7000000001i64);
    assert_eq!(delete.value["data"]["value"], Value::Null);
    assert_eq!(delete.value["data"]["ok"], Value::Null);
    let insert = messages.iter().find(|m| m.op() == "insert").unwrap();
    assert_eq!(
        insert.value["metadata"]["transaction-id"], delete.value["metadata"]["transaction-id"],
        "both changes come from one transaction"
    );
    assert_eq!(
        as_micros(&insert.value["data"]["at"]),
        Some(micros("2026-03-01T10:00:00Z"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_whose_snapshot_never_completed_is_recreated_with_a_new_snapshot() {
    let db = support::postgres().fresh_database("capture_resnap").await;
    let pg = connect(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let opts = options(&db, "resnap", dir.path());
    // A crash mid-snapshot leaves the slot (and publication) behind but no "complete" marker.
    pg.batch_execute(
        "CREATE TABLE events (id int PRIMARY KEY, n int NOT NULL); \
         INSERT INTO events SELECT g, 0 FROM generate_series(1, 25) g; \
         CREATE PUBLICATION dqetl_resnap FOR TABLE events",
    )
    .await
    .unwrap();
    pg.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&opts.slot],
    )
    .await
    .unwrap();
    let topic = unique("cdc-events");
    support::broker().create_topic(&topic, 1).await;
    let capture = Running::start(config_with(vec![events_spec(&topic)]), opts.clone());
    let messages = read_until(&topic, 1, |m| count_op(m, "load") == 25).await;
    let report = capture.stop().await;
    assert_eq!(report.snapshot_rows, 25);
    assert_eq!(ids_of(&messages), (1..=25).collect::<BTreeSet<_>>());
    let marker_path = dir.path().join(format!("{}.json", opts.slot));
    let marker: Value = serde_json::from_slice(&std::fs::read(marker_path).unwrap()).unwrap();
    assert_eq!(marker["complete"], true);
    drop_slot(&pg, &opts.slot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_lag_reports_the_confirmed_position_and_an_idle_slot_keeps_up() {
    let db = support::postgres().fresh_database("capture_lag").await;
    let pg = connect(&db).await;
    pg.batch_execute("CREATE TABLE events (id int PRIMARY KEY, n int NOT NULL)")
        .await
        .unwrap();
    let topic = unique("cdc-events");
    support::broker().create_topic(&topic, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&db, "lag", dir.path());
    let slot = opts.slot.clone();
    opts.status_interval = Duration::from_millis(200);
    let mut capture = Running::start(config_with(vec![events_spec(&topic)]), opts);
    capture.wait_until_streaming().await;
    insert_events(&pg, 1..=5).await;
    read_until(&topic, 1, |m| ids_of(m).len() == 5).await;
    let after_inserts: String = pg
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let lag = loop {
        let lag = capture::slot_lag(&db, &slot).await.unwrap();
        let confirmed = lag
            .confirmed_flush_lsn
            .as_deref()
            .map(parse_lsn)
            .unwrap_or(0);
        if confirmed >= parse_lsn(&after_inserts) || Instant::now() > deadline {
            break lag;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(lag.active);
    let confirmed = parse_lsn(lag.confirmed_flush_lsn.as_deref().unwrap());
    assert!(
        confirmed >= parse_lsn(&after_inserts),
        "acknowledged changes are confirmed to PostgreSQL"
    );

    // Idle: WAL written by a table capture does not publish is confirmed too, so the slot
    // does not hold it back.
    pg.batch_execute(
        "CREATE TABLE unrelated (n int); INSERT INTO unrelated SELECT generate_series(1, 1000)",
    )
    .await
    .unwrap();
    let after_unrelated: String = pg
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lag = capture::slot_lag(&db, &slot).await.unwrap();
        let confirmed = lag
            .confirmed_flush_lsn
            .as_deref()
            .map(parse_lsn)
            .unwrap_or(0);
        if confirmed >= parse_lsn(&after_unrelated) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "idle slot stuck at {confirmed:X}, WAL at {after_unrelated}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    capture.stop().await;
    let lag = capture::slot_lag(&db, &slot).await.unwrap();
    assert!(!lag.active);
    drop_slot(&pg, &slot).await;
    let missing = capture::slot_lag(&db, "dqetl_nosuchslot")
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("does not exist"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_reads_a_tls_only_database_with_verify_full() {
    let tls = support::tls_postgres();
    let name = unique("capture_tls");
    let admin = connect_tls(&tls.url("postgres", "sslmode=require")).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let ca = tls.ca_file().display().to_string();
    // Both of capture's connections (the catalog one and the walsender one) must verify the
    // server: plain TCP is refused by this cluster.
    let db = tls.url(&name, &format!("sslmode=verify-full&sslrootcert={ca}"));
    let pg = connect_tls(&db).await;
    pg.batch_execute(
        "CREATE TABLE events (id int PRIMARY KEY, n int NOT NULL); \
         INSERT INTO events SELECT g, 0 FROM generate_series(1, 3) g",
    )
    .await
    .unwrap();
    let topic = unique("cdc-events-tls");
    support::broker().create_topic(&topic, 1).await;
    let config = config_with(vec![events_spec(&topic)]);
    let dir = tempfile::tempdir().unwrap();
    let mut capture = Running::start(config, options(&db, "tls", dir.path()));
    capture.wait_until_streaming().await;
    insert_events(&pg, 4..=6).await;
    let messages = read_until(&topic, 1, |m| ids_of(m).len() == 6).await;
    capture.stop().await;
    drop_slot(&pg, &slot_name("tls")).await;

    assert_eq!(count_op(&messages, "load"), 3);
    assert_eq!(count_op(&messages, "insert"), 3);
}

/// A client of the TLS-only test cluster.
async fn connect_tls(url: &str) -> Client {
    let source = PgConfig::parse(url, "the test URL", &TlsSettings::default()).unwrap();
    let (client, connection) = source
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}", support::error_chain(&e)));
    tokio::spawn(connection);
    client
}

// ---------------------------------------------------------------------------------------------
// Capture in-process

struct Running {
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<CaptureReport, capture::CaptureError>>>,
    marker: std::path::PathBuf,
}

impl Running {
    fn start(config: ConfigSpec, options: CaptureOptions) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let marker = options.state_dir.join(format!("{}.json", options.slot));
        let handle = tokio::spawn(async move { capture::run(&config, &options, token).await });
        Running {
            shutdown,
            handle: Some(handle),
            marker,
        }
    }

    /// Waits until the snapshot is delivered: changes made from now on are streamed.
    async fn wait_until_streaming(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let complete = std::fs::read(&self.marker)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|marker| marker["complete"] == true);
            if complete {
                return;
            }
            if self.handle.as_ref().is_some_and(JoinHandle::is_finished) {
                let ended = self.handle.take().unwrap().await;
                panic!("capture ended before streaming: {ended:?}");
            }
            assert!(
                Instant::now() < deadline,
                "capture did not finish its snapshot within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGINT/SIGTERM: flush, confirm, return.
    async fn stop(self) -> CaptureReport {
        self.shutdown.cancel();
        tokio::time::timeout(
            Duration::from_secs(60),
            self.handle.expect("capture still running"),
        )
        .await
        .expect("capture stops within a minute")
        .expect("capture task did not panic")
        .expect("capture ends without error")
    }

    /// A crash: nothing is flushed or confirmed.
    async fn kill(self) {
        let handle = self.handle.expect("capture still running");
        handle.abort();
        let _ = handle.await;
    }
}

/// Slots are cluster-wide: unique per test and per run.
fn slot_name(name: &str) -> String {
    format!("dqetl_{name}_{}", std::process::id())
}

/// Slots hold WAL until dropped.
async fn drop_slot(pg: &Client, slot: &str) {
    pg.execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
}

fn options(db_url: &str, name: &str, state_dir: &std::path::Path) -> CaptureOptions {
    let mut opts = CaptureOptions::new(
        db_url.to_string(),
        slot_name(name),
        format!("dqetl_{name}"),
        support::broker().bootstrap(),
        state_dir.to_path_buf(),
    );
    opts.status_interval = Duration::from_millis(500);
    opts.max_backoff = Duration::from_secs(2);
    opts
}

// ---------------------------------------------------------------------------------------------
// Reading Kafka

#[derive(Debug, Clone)]
struct Msg {
    key: Option<String>,
    value: Value,
    partition: i32,
    /// The `dqetl-position` header.
    position: Option<String>,
}

impl Msg {
    fn op(&self) -> &str {
        self.value["metadata"]["operation"].as_str().unwrap_or("?")
    }

    fn id(&self) -> i64 {
        self.value["data"]["id"].as_i64().unwrap()
    }
}

/// Reads the whole topic again and again until `done` holds for what it holds (or 60 s pass).
async fn read_until(topic: &str, partitions: i32, done: impl Fn(&[Msg]) -> bool) -> Vec<Msg> {
    read_until_on(&support::broker().bootstrap(), topic, partitions, done).await
}

async fn read_until_on(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    done: impl Fn(&[Msg]) -> bool,
) -> Vec<Msg> {
    let topic = topic.to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (t, b) = (topic.clone(), bootstrap.to_string());
        let messages = tokio::task::spawn_blocking(move || read_all(&b, &t, partitions))
            .await
            .unwrap();
        if !messages.is_empty() && done(&messages) {
            return messages;
        }
        if Instant::now() > deadline {
            let ops: BTreeMap<String, usize> =
                messages.iter().fold(BTreeMap::new(), |mut acc, m| {
                    *acc.entry(m.op().to_string()).or_default() += 1;
                    acc
                });
            panic!(
                "{topic}: condition not met after 60 s; {} messages read ({ops:?})",
                messages.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every message currently in the topic, per partition in offset order. Reads until the
/// topic stays quiet for a moment instead of stopping at the high watermark: tansu 0.6's
/// watermark counts a multi-record batch as one record.
fn read_all(bootstrap: &str, topic: &str, partitions: i32) -> Vec<Msg> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("capture-test"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for partition in 0..partitions {
        tpl.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut by_partition: BTreeMap<i32, Vec<(i64, Msg)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_millis(1500) {
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = result.unwrap();
        quiet_since = Instant::now();
        let key = message
            .key()
            .map(|k| String::from_utf8(k.to_vec()).unwrap());
        let value: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        let position = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == capture::POSITION_HEADER)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        by_partition.entry(message.partition()).or_default().push((
            message.offset(),
            Msg {
                key,
                value,
                partition: message.partition(),
                position,
            },
        ));
    }
    by_partition
        .into_values()
        .flat_map(|mut msgs| {
            msgs.sort_by_key(|(offset, _)| *offset);
            msgs.into_iter().map(|(_, m)| m)
        })
        .collect()
}

/// A vehicles row in comparable form, whichever way the message spells its values.
#[derive(Debug, Clone, PartialEq)]
struct Vehicle {
    name: Option<String>,
    speed: Option<f64>,
    active: Option<String>,
    seen_at_micros: Option<i64>,
    version: i64,
}

impl Vehicle {
    fn from_data(data: &Value) -> Self {
        Vehicle {
            name: data["name"].as_str().map(str::to_string),
            speed: as_f64(&data["speed"]),
            active: data["active"].as_str().map(str::to_string),
            seen_at_micros: as_micros(&data["seen_at"]),
            version: data["version"].as_i64().unwrap(),
        }
    }
}

/// Applies the messages per key in order: the table they describe.
fn replay(messages: &[Msg]) -> BTreeMap<i64, Vehicle> {
    let mut state = BTreeMap::new();
    for m in messages {
        match m.op() {
            "delete" => {
                state.remove(&m.id());
            }
            _ => {
                state.insert(m.id(), Vehicle::from_data(&m.value["data"]));
            }
        }
    }
    state
}

/// A number, or a numeric string (exact decimals may travel as text).
fn as_f64(value: &Value) -> Option<f64> {
    value
        .as_f64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// An ISO 8601 or PostgreSQL-style timestamp (no zone means UTC), as epoch microseconds.
fn as_micros(value: &Value) -> Option<i64> {
    let text = value.as_str()?;
    if let Ok(ts) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(ts.timestamp_micros());
    }
    let text = text.replacen('T', " ", 1);
    chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|ts| ts.and_utc().timestamp_micros())
}

fn micros(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_micros()
}

fn count_op(messages: &[Msg], op: &str) -> usize {
    messages.iter().filter(|m| m.op() == op).count()
}

fn ids_of(messages: &[Msg]) -> BTreeSet<i64> {
    messages.iter().map(Msg::id).collect()
}

fn assert_dms_record(m: &Msg, table: &str, columns: &[&str]) {
    let meta = &m.value["metadata"];
    assert_eq!(meta["record-type"], "data");
    assert!(
        ["load", "insert", "update", "delete"].contains(&m.op()),
        "operation {}",
        m.op()
    );
    assert_eq!(meta["table-name"], table);
    assert_eq!(meta["schema-name"], "public");
    assert_eq!(meta["partition-key-type"], "primary-key");
    let ts = meta["timestamp"].as_str().unwrap();
    let iso_micros = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$").unwrap();
    assert!(iso_micros.is_match(ts), "timestamp {ts}");
    let keys: Vec<&str> = m.value["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, columns, "data holds every column");
}

// ---------------------------------------------------------------------------------------------
// The source database

async fn connect(url: &str) -> Client {
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config.application_name("capture-test-writer");
    let (client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// The vehicles table as it is now.
async fn table_state(pg: &Client) -> BTreeMap<i64, Vehicle> {
    let rows = pg
        .query(
            "SELECT id, name, speed::float8, active::text, \
                    (extract(epoch FROM seen_at) * 1000000)::int8, version FROM vehicles",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let id: i32 = r.get(0);
            let version: i32 = r.get(5);
            let vehicle = Vehicle {
                name: r.get(1),
                speed: r.get(2),
                active: r.get(3),
                seen_at_micros: r.get(4),
                version: i64::from(version),
            };
            (i64::from(id), vehicle)
        })
        .collect()
}

async fn insert_events(pg: &Client, ids: std::ops::RangeInclusive<i32>) {
    for id in ids {
        pg.execute("INSERT INTO events VALUES ($1, 1)", &[&id])
            .await
            .unwrap();
    }
}

fn spawn_inserts(db: String, ids: std::ops::RangeInclusive<i32>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let pg = connect(&db).await;
        for id in ids {
            pg.execute("INSERT INTO events VALUES ($1, 1)", &[&id])
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

fn random_text(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(rng.random_range(b'!'..=b'~')))
        .collect()
}

fn parse_lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Hand-built config

fn column(name: &str, column_type: ColumnType) -> ColumnSpec {
    ColumnSpec {
        name: name.into(),
        column_type,
        nullable: true,
        unique: false,
        default: None,
    }
}

fn table(name: &str, topic: &str, columns: Vec<ColumnSpec>) -> TableSpec {
    TableSpec {
        name: name.into(),
        topic: topic.into(),
        delta_path: None,
        primary_key: Some("id".into()),
        internal: false,
        columns,
        rules: vec![],
        transforms: vec![],
        checks: vec![],
        anomaly_checks: vec![],
        foreign_keys: vec![],
        indexes: vec![],
        scd2: Scd2Spec::default(),
        mask_pii_in_quarantine: true,
    }
}

fn vehicles_spec(topic: &str) -> TableSpec {
    table(
        "vehicles",
        topic,
        vec![
            column("id", ColumnType::Int),
            column("name", ColumnType::String),
            column(
                "speed",
                ColumnType::Decimal {
                    precision: 6,
                    scale: 2,
                },
            ),
            column("active", ColumnType::Boolean),
            column("seen_at", ColumnType::Timestamp),
            column("version", ColumnType::Int),
        ],
    )
}

fn events_spec(topic: &str) -> TableSpec {
    table(
        "events",
        topic,
        vec![column("id", ColumnType::Int), column("n", ColumnType::Int)],
    )
}

fn documents_spec(name: &str, topic: &str) -> TableSpec {
    table(
        name,
        topic,
        vec![
            column("id", ColumnType::Int),
            column("title", ColumnType::String),
            column("body", ColumnType::Text),
        ],
    )
}

fn readings_spec(topic: &str) -> TableSpec {
    table(
        "readings",
        topic,
        vec![
            column("id", ColumnType::Long),
            column("value", ColumnType::Int),
            column("ok", ColumnType::Boolean),
            column("at", ColumnType::Timestamp),
        ],
    )
}

fn config_with(tables: Vec<TableSpec>) -> ConfigSpec {
    ConfigSpec {
        settings: SettingsSpec {
            checkpoint_location: None,
            quarantine_path: None,
            delta_bucket: None,
            trigger_interval: Duration::from_secs(10),
            max_batch_records: 10_000,
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
