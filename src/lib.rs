//! dqetl: a config-driven CDC streaming ETL pipeline with data quality.
//!
//! Data flows `cdc → pipeline → sink`; `stream` drives it; `target/{local,aws}` sit at the edge.
//! `pipeline` is pure (Arrow batches in, a plan out) and does no I/O.

pub mod allocator;
pub mod capture;
pub mod cdc;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error_chain;
pub mod generate;
pub mod pg;
pub mod pipeline;
pub mod query;
pub mod sink;
pub mod stream;
pub mod target;
