//! The one integration test binary: each module is a scenario family against real services.

mod query_local;
mod sink_exactly_once;
mod sink_python_reader;
mod sink_scd2;
