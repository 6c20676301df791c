// replaced on integration
//! Stub of the integration-test service harness (the real one starts PostgreSQL and tansu).
//! Only the API is here so tests written against it compile; every call panics.
#![allow(dead_code)]

pub struct TestPostgres;

impl TestPostgres {
    pub fn port(&self) -> u16 {
        unimplemented!("test service harness: replaced on integration")
    }

    pub fn url(&self, _db: &str) -> String {
        unimplemented!("test service harness: replaced on integration")
    }

    pub async fn fresh_database(&self, _prefix: &str) -> String {
        unimplemented!("test service harness: replaced on integration")
    }
}

pub struct TestBroker;

impl TestBroker {
    pub fn bootstrap(&self) -> String {
        unimplemented!("test service harness: replaced on integration")
    }

    pub async fn create_topic(&self, _name: &str, _partitions: i32) {
        unimplemented!("test service harness: replaced on integration")
    }
}

pub fn postgres() -> &'static TestPostgres {
    &TestPostgres
}

pub fn broker() -> &'static TestBroker {
    &TestBroker
}
