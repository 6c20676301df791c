//! The one integration-test binary: real PostgreSQL, tansu and Delta tables on disk.

mod support;

mod aws_template;
mod compile_ddl_postgres;
mod compile_golden;
mod config_validate;
mod harness;
mod process_bad_input;
mod process_crash;
mod process_model;
mod process_python;
mod process_scenarios;
mod query_local;
mod sink_exactly_once;
mod sink_python_reader;
mod sink_scd2;
