//! Delta tables of the lake: create on first use, the SCD2 MERGE of data tables, quarantine and
//! metrics appends, and the transaction (txn) bookkeeping that makes every commit exactly-once.
//!
//! Guarantee: each commit writes one batch of one table and, in the same Delta commit, the last
//! Kafka offset of every partition the batch came from. A batch whose offsets are already
//! recorded is skipped, so replays after a crash or a rebalance neither lose nor duplicate rows.

mod error;
mod lake;
mod metrics;
mod quarantine;
mod scd2;
mod state;
mod table;
mod watermarks;

pub use error::{Result, SinkError};
pub use lake::{Lake, LakeTable};
pub use scd2::CommitOutcome;
pub use table::open_existing as open_table;
pub use watermarks::{Watermarks, app_id, rows_after_watermarks};
