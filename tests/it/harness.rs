//! The test services themselves: PostgreSQL stores rows, the broker keeps keyed messages and
//! consumer-group offsets, and a broker on SQLite storage keeps both across a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use dqetl::target::local::ports::free_port;
use dqetl::target::local::postgres::{CreateOutcome, InitOutcome, StartOutcome};
use dqetl::target::local::{
    Broker, BrokerOptions, Durability, PostgresCluster, SpawnOptions, StopOutcome, Storage,
    create_topics,
};
use nix::sys::signal::Signal;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::support::{self, error_chain, unique};

/// A message as the consumer saw it: where it sits and what it says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    partition: i32,
    offset: i64,
    key: String,
    value: String,
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn postgres_fresh_database_stores_and_returns_a_row() {
    let pg = support::postgres();
    let url = pg.fresh_database("harness").await;
    let other = pg.fresh_database("harness").await;
    assert_ne!(url, other, "every fresh database is a new one");
    assert!(
        url.starts_with(&format!(
            "postgres://postgres@127.0.0.1:{}/harness_",
            pg.port()
        )),
        "{url}"
    );

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE vehicles (id bigint PRIMARY KEY, plate text NOT NULL, speed numeric(6,2))")
        .await
        .expect("create table");
    let inserted = client
        .execute(
            "INSERT INTO vehicles (id, plate, speed) VALUES ($1, $2, 88.5)",
            &[&7_i64, &"AB-123"],
        )
        .await
        .expect("insert");
    assert_eq!(inserted, 1);

    let rows = client
        .query("SELECT id, plate, speed::text FROM vehicles", &[])
        .await
        .expect("select");
    let read: Vec<(i64, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(read, vec![(7, "AB-123".to_string(), "88.50".to_string())]);

    // Local CDC reads the write-ahead log, so the cluster must run with logical decoding.
    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(wal_level, "logical");
}

/// Stops a `pg_ctl`-started cluster even when the test fails, since it is not tied to us.
struct StopOnDrop(PostgresCluster);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

#[tokio::test]
async fn a_deployed_cluster_initialises_starts_and_stops_idempotently() {
    let dir = support::scratch_dir("pg-ctl");
    let port = free_port().expect("free port");
    let cluster = PostgresCluster::new(dir.join("pg"), port)
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)))
        .with_log_file(dir.join("logs/postgres.log"))
        .with_durability(Durability::UnsafeForTestsOnly);

    assert_eq!(cluster.init().expect("init"), InitOutcome::Created);
    assert_eq!(
        cluster.init().expect("init again"),
        InitOutcome::AlreadyInitialized
    );
    assert!(!cluster.is_running().expect("status"));

    let guard = StopOnDrop(cluster.clone());
    assert_eq!(cluster.start().expect("start"), StartOutcome::Started);
    assert_eq!(
        cluster.start().expect("start again"),
        StartOutcome::AlreadyRunning
    );
    assert!(cluster.is_ready());
    assert_eq!(
        cluster.create_database("orders").await.expect("create"),
        CreateOutcome::Created
    );
    assert_eq!(
        cluster
            .create_database("orders")
            .await
            .expect("create again"),
        CreateOutcome::AlreadyExists
    );
    let refused = cluster
        .create_database("orders; DROP")
        .await
        .expect_err("not a plain name");
    assert!(refused.to_string().contains("orders; DROP"), "{refused}");

    let (client, connection) =
        tokio_postgres::connect(&cluster.url("orders"), tokio_postgres::NoTls)
            .await
            .expect("connect");
    let connection = tokio::spawn(connection);
    let slots: String = client
        .query_one("SHOW max_replication_slots", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(slots, "10");
    drop(client);
    let _ = connection.await;

    assert_eq!(cluster.stop().expect("stop"), StopOutcome::Exited);
    assert!(!cluster.is_ready());
    assert_eq!(cluster.stop().expect("stop again"), StopOutcome::NotRunning);
    drop(guard);
    let log = std::fs::read_to_string(cluster.log_file()).expect("server log");
    assert!(log.contains("database system is shut down"), "{log}");
}

#[tokio::test]
async fn a_new_group_member_resumes_after_the_committed_offsets() {
    let broker = support::broker();
    let topic = unique("harness-orders");
    broker.create_topic(&topic, 3).await;
    let bootstrap = broker.bootstrap();

    let produced = produce_keyed(&bootstrap, &topic, 12).await;
    let partitions: BTreeSet<i32> = produced.iter().map(|m| m.partition).collect();
    assert!(
        partitions.len() > 1,
        "12 keys should spread over the 3 partitions, got {partitions:?}"
    );

    let group = unique("harness-group");
    let first = group_consumer(&bootstrap, &group, &topic);
    let consumed = receive(&first, 7).await;
    commit_positions(&first, &topic, &consumed);
    drop(first);

    let committed: BTreeSet<Seen> = consumed.iter().cloned().collect();
    let expected: BTreeSet<Seen> = produced
        .iter()
        .filter(|m| !committed.contains(*m))
        .cloned()
        .collect();
    let second = group_consumer(&bootstrap, &group, &topic);
    let resumed: BTreeSet<Seen> = receive(&second, expected.len()).await.into_iter().collect();
    assert_eq!(
        resumed, expected,
        "the new member must get exactly the messages the first one did not commit"
    );
}

#[tokio::test]
async fn a_broker_on_sqlite_keeps_topics_messages_and_group_offsets_across_a_restart() {
    let work_dir = support::scratch_dir("sqlite-broker").join("broker");
    let storage = Storage::Sqlite(PathBuf::from("data/tansu.db"));
    let port = free_port().expect("free port");
    // Tied to this test's thread: a failing test does not leave the broker running.
    let options = BrokerOptions {
        spawn: SpawnOptions {
            die_with_parent: Some(Signal::SIGKILL),
            ..SpawnOptions::default()
        },
        ..BrokerOptions::default()
    };
    let start = || {
        Broker::start_with(&work_dir, port, storage.clone(), &options)
            .unwrap_or_else(|e| panic!("start broker: {}", error_chain(&e)))
    };

    let broker = start();
    let topic = unique("harness-durable");
    create_topics(&broker.bootstrap(), &[(&topic, 2)])
        .await
        .expect("create topic");
    let produced = produce_keyed(&broker.bootstrap(), &topic, 6).await;
    let group = unique("harness-durable-group");
    let consumer = group_consumer(&broker.bootstrap(), &group, &topic);
    let consumed = receive(&consumer, 3).await;
    let committed = commit_positions(&consumer, &topic, &consumed);
    drop(consumer);
    assert_eq!(
        broker.stop().expect("stop"),
        StopOutcome::Exited,
        "tansu shuts down on SIGTERM"
    );
    assert!(
        work_dir.join("data/tansu.db").is_file(),
        "the SQLite file is inside the work folder"
    );

    let broker = start();
    let bootstrap = broker.bootstrap();

    let reader = group_consumer(&bootstrap, &unique("harness-reader"), &topic);
    let metadata = reader.fetch_metadata(Some(&topic), WAIT).expect("metadata");
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len());
    assert_eq!(partitions, Some(2), "the topic and its partitions survive");
    let all: BTreeSet<Seen> = receive(&reader, produced.len()).await.into_iter().collect();
    assert_eq!(
        all,
        produced.iter().cloned().collect(),
        "every message survives"
    );
    drop(reader);

    let member = group_consumer(&bootstrap, &group, &topic);
    let mut assigned = TopicPartitionList::new();
    for partition in 0..2 {
        assigned.add_partition(&topic, partition);
    }
    let stored = member
        .committed_offsets(assigned, WAIT)
        .expect("committed offsets");
    let stored: BTreeMap<i32, i64> = stored
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    assert_eq!(stored, committed, "the group's committed offsets survive");

    let consumed: BTreeSet<Seen> = consumed.into_iter().collect();
    let expected: BTreeSet<Seen> = produced
        .iter()
        .filter(|m| !consumed.contains(*m))
        .cloned()
        .collect();
    let resumed: BTreeSet<Seen> = receive(&member, expected.len()).await.into_iter().collect();
    assert_eq!(
        resumed, expected,
        "the group resumes after its committed offsets"
    );
    drop(member);
    broker.stop().expect("stop");
}

/// Produces `count` keyed messages and returns where each landed.
async fn produce_keyed(bootstrap: &str, topic: &str, count: usize) -> Vec<Seen> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let mut produced = Vec::with_capacity(count);
    for i in 0..count {
        let key = format!("vehicle-{i}");
        let value = format!("{{\"id\":{i}}}");
        let record = FutureRecord::to(topic).key(&key).payload(&value);
        let delivery = producer
            .send(record, WAIT)
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {key}: {e}"));
        produced.push(Seen {
            partition: delivery.partition,
            offset: delivery.offset,
            key,
            value,
        });
    }
    produced
}

fn group_consumer(bootstrap: &str, group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Receives exactly `count` messages (in arrival order), failing after [`WAIT`].
async fn receive(consumer: &StreamConsumer, count: usize) -> Vec<Seen> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        let message = tokio::time::timeout(WAIT, consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {count} messages arrived within {WAIT:?}: {seen:?}",
                    seen.len()
                )
            })
            .expect("consume");
        let text =
            |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
        seen.push(Seen {
            partition: message.partition(),
            offset: message.offset(),
            key: text(message.key()),
            value: text(message.payload()),
        });
    }
    seen
}

/// Commits, synchronously, the position after the last consumed message of each partition;
/// returns the committed offsets.
fn commit_positions(
    consumer: &StreamConsumer,
    topic: &str,
    consumed: &[Seen],
) -> BTreeMap<i32, i64> {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for message in consumed {
        let position = next.entry(message.partition).or_insert(0);
        *position = (*position).max(message.offset + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for (partition, offset) in &next {
        offsets
            .add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .expect("offset");
    }
    consumer.commit(&offsets, CommitMode::Sync).expect("commit");
    next
}
