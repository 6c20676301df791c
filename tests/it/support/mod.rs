// replaced on integration: the infra developer's harness (starts a private PostgreSQL cluster
// and a tansu broker). This stub only points the same API at services started by hand:
// DQETL_TEST_PG_PORT (PostgreSQL on 127.0.0.1, trust auth, wal_level=logical, user postgres)
// and DQETL_TEST_BOOTSTRAP (a Kafka-protocol broker).
#![allow(dead_code)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub struct TestPostgres {
    port: u16,
}

pub struct TestBroker {
    bootstrap: String,
}

pub fn postgres() -> &'static TestPostgres {
    static PG: OnceLock<TestPostgres> = OnceLock::new();
    PG.get_or_init(|| {
        let port = std::env::var("DQETL_TEST_PG_PORT")
            .expect("stub harness: set DQETL_TEST_PG_PORT")
            .parse()
            .expect("DQETL_TEST_PG_PORT is a port");
        TestPostgres { port }
    })
}

pub fn broker() -> &'static TestBroker {
    static BROKER: OnceLock<TestBroker> = OnceLock::new();
    BROKER.get_or_init(|| TestBroker {
        bootstrap: std::env::var("DQETL_TEST_BOOTSTRAP")
            .expect("stub harness: set DQETL_TEST_BOOTSTRAP"),
    })
}

impl TestPostgres {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub async fn fresh_database(&self, prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        self.url(&name)
    }
}

impl TestBroker {
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin.create_topics([&topic], &options).await.unwrap();
        for result in results {
            result.unwrap();
        }
    }
}
