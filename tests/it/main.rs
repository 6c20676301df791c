//! The one integration test binary: each module is a scenario family against real services.

mod sink_scd2;
