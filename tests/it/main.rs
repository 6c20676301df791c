//! The one integration-test binary: real PostgreSQL, tansu and Delta tables on disk.

mod support;

mod aws_template;
mod e2e_local;
mod harness;
mod local_stack;
