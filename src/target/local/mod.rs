//! Local services: a private PostgreSQL cluster, the tansu broker and the background
//! processes that run them, all on 127.0.0.1. Used by `dqetl deploy --target local` and by the
//! integration-test harness.

pub mod broker;
pub mod ports;
pub mod postgres;
pub mod process;

pub use broker::{Broker, BrokerError, BrokerOptions, Storage, create_topics};
pub use postgres::{Durability, PostgresCluster, PostgresError};
pub use process::{ProcessError, SpawnOptions, StopOutcome};
