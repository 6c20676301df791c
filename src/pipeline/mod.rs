//! Pure Arrow transforms on one micro-batch of one table: rules, quarantine rows, transforms,
//! metrics and the SCD2 plan. No I/O here.

pub mod anomaly;
pub mod batch;
pub mod decimal;
mod digest_set;
pub mod error;
pub mod metrics;
pub mod pii;
pub mod plan;
#[cfg(test)]
mod plan_tests;
pub mod quarantine;
pub mod reason;
pub mod rules;
pub mod scd2;
pub mod schema;
mod selection;
#[cfg(test)]
pub(crate) mod testing;
pub mod transforms;
pub(crate) mod values;

pub use batch::plan;
pub use error::PipelineError;
pub use metrics::TableMetricState;
