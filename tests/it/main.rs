//! The one integration-test binary: real PostgreSQL, tansu and Delta tables on disk.

mod support;

mod aws_deploy;
mod aws_image;
mod aws_post_deploy;
mod aws_progress;
mod aws_query;
mod aws_secrets;
mod aws_status;
mod aws_support;
mod aws_teardown;
mod aws_template;
mod bench_process;
mod capture;
mod compile_ddl_postgres;
mod compile_golden;
mod config_validate;
mod e2e_faults;
mod e2e_local;
mod generate;
mod harness;
mod jobs_cli;
mod local_stack;
mod pg_tls;
mod process_bad_input;
mod process_crash;
mod process_group;
mod process_maintenance;
mod process_model;
mod process_python;
mod process_scenarios;
mod query_local;
mod sink_exactly_once;
mod sink_python_reader;
mod sink_scd2;
mod sink_splice;
