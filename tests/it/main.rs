//! The one integration-test binary: real PostgreSQL, tansu and Delta tables on disk.

mod support;

mod compile_ddl_postgres;
mod compile_golden;
mod config_validate;
