//! What flows between the stages of one micro-batch of one table: decoded events in, a plan out.
//! The sink applies a [`BatchPlan`] in one Delta commit per table; nothing here does I/O.

use deltalake::arrow::array::UInt32Array;
use deltalake::arrow::compute::take_record_batch;
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;

use super::metrics::TableMetricState;

/// The change kind of one CDC event, as DMS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A full-load (snapshot) row.
    Load,
    Insert,
    Update,
    Delete,
}

impl Operation {
    /// The value stored in `_operation` (the original's names: load is stored as INSERT).
    pub fn as_stored(&self) -> &'static str {
        match self {
            Operation::Load | Operation::Insert => "INSERT",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }

    pub fn from_dms(op: &str) -> Option<Operation> {
        match op {
            "load" => Some(Operation::Load),
            "insert" => Some(Operation::Insert),
            "update" => Some(Operation::Update),
            "delete" => Some(Operation::Delete),
            _ => None,
        }
    }

    pub fn as_dms(&self) -> &'static str {
        match self {
            Operation::Load => "load",
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

/// Where a record came from in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourcePosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A message that could not be decoded into a row. Never dropped: it becomes a quarantine row.
#[derive(Debug, Clone)]
pub struct MalformedRecord {
    pub position: SourcePosition,
    /// The payload as text (invalid UTF-8 replaced), truncated by the decoder if huge.
    pub raw: String,
    /// Starts with `malformed: `.
    pub reason: String,
    /// The operation, when the envelope was readable enough to tell.
    pub operation: Option<Operation>,
}

/// Events of one table decoded from one micro-batch, in Kafka order per partition.
#[derive(Debug, Clone)]
pub struct DecodedBatch {
    /// Data columns in config order with their configured types (see [`super::schema::decoded_schema`]),
    /// then `_operation` (Utf8, DMS name: load/insert/update/delete), `_source_ts` (Timestamp µs UTC,
    /// DMS `metadata.timestamp`), `_topic` (Utf8), `_partition` (Int32), `_offset` (Int64).
    pub rows: RecordBatch,
    pub malformed: Vec<MalformedRecord>,
    /// DMS control records (create-table, ...) skipped and counted.
    pub control_records: u64,
}

/// SCD2 changes: rows of a batch with schema [`super::schema::changes_schema`] (the data columns
/// after transforms, then `_operation`, stored form INSERT/UPDATE/DELETE, and `_effective_from`,
/// Timestamp µs UTC, the source commit time), picked in application order. The batch is the
/// decoded batch's columns, not a copy of the picked rows: a micro-batch's changes are most of
/// its rows, and a copy of them was held through the whole commit.
#[derive(Debug, Clone)]
pub struct Changes {
    pub batch: RecordBatch,
    /// The rows of `batch` that are changes, in application order; None when every row is one,
    /// in order.
    pub rows: Option<Vec<u32>>,
}

impl Changes {
    /// How many changes there are.
    pub fn len(&self) -> usize {
        self.rows
            .as_ref()
            .map_or(self.batch.num_rows(), |rows| rows.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The changes as a batch of their own (a copy of the picked rows).
    pub fn to_batch(&self) -> Result<RecordBatch, ArrowError> {
        picked_batch(&self.batch, self.rows.as_deref())
    }
}

/// Rows `rows` of `batch`, in that order, as a batch of their own; every row when `None`.
pub fn picked_batch(batch: &RecordBatch, rows: Option<&[u32]>) -> Result<RecordBatch, ArrowError> {
    match rows {
        None => Ok(batch.clone()),
        Some(rows) => take_record_batch(batch, &UInt32Array::from(rows.to_vec())),
    }
}

/// One metric value bound for `dq_metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub table_name: String,
    /// Deequ's name: Size, Completeness, Uniqueness, Compliance, or `RuleFailureRate` for a rule.
    pub metric_name: String,
    /// The column (or rule id for rule failure rates); None for Size.
    pub column_name: Option<String>,
    pub metric_value: f64,
    pub threshold: Option<f64>,
    pub passed: bool,
    /// `batch`, `cumulative` or `anomaly` (see [`super::anomaly`]).
    pub scope: &'static str,
}

/// Counts that describe what a micro-batch did, for logs, status and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchStats {
    pub events: u64,
    pub malformed: u64,
    pub control_records: u64,
    pub deletes: u64,
    /// Rows that passed every error rule and were handed to SCD2.
    pub loaded: u64,
    pub quarantined: u64,
    /// Failures per rule id (errors and warnings).
    pub rule_failures: std::collections::BTreeMap<String, u64>,
}

/// The outcome of the pure pipeline for one table and one micro-batch.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    pub table: String,
    /// SCD2 changes in application order. One per key (its last event) unless
    /// `track_intermediate`. Delete rows may hold only the key.
    pub changes: Changes,
    /// Rows for `<table>_quarantine`, schema [`super::schema::quarantine_schema`].
    pub quarantine: RecordBatch,
    pub metrics: Vec<MetricRow>,
    /// This batch's metric state: the cumulative metrics above already include it; the caller
    /// merges it into the table's cumulative state once the batch is applied.
    pub metric_state: TableMetricState,
    pub stats: BatchStats,
}
