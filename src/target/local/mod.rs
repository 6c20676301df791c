//! Local services: a private PostgreSQL cluster, the tansu broker and the background
//! processes that run them, all on 127.0.0.1. Used by `dqetl deploy --target local` and by the
//! integration-test harness.

pub mod broker;
pub mod catchup;
pub mod children;
pub mod console;
pub mod demo;
pub mod error;
pub mod kafka;
pub mod lifecycle;
pub mod owned;
pub mod ports;
pub mod post_deploy;
pub mod postgres;
pub mod process;
pub mod stack;
pub mod status;
pub mod summary;

pub use broker::{Broker, BrokerError, BrokerOptions, Storage, create_topics};
pub use postgres::{Durability, PostgresCluster, PostgresError};
pub use process::{ProcessError, SpawnOptions, StopOutcome};
