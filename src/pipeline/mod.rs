//! Pure Arrow transforms on one micro-batch of one table: rules, quarantine rows, transforms,
//! metrics and the SCD2 plan. No I/O here.

pub mod plan;
pub mod schema;
