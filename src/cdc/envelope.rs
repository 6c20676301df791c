//! One Kafka message per row change, as DMS writes it with `MessageFormat: json`,
//! `IncludeNullAndEmpty: true` and before-images off:
//! `{"data": {...}, "metadata": {"timestamp", "record-type", "operation", "partition-key-type",
//! "schema-name", "table-name", "transaction-id"}}`.

use serde::{Deserialize, Serialize};

/// The top-level message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The row image: full for load/insert/update; for delete, the replica-identity columns
    /// (the key with PostgreSQL's default identity), others null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    pub metadata: Metadata,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Source commit time, ISO 8601 with microseconds, e.g. `2026-11-25T14:01:32.123456Z`.
    pub timestamp: String,
    /// `data` or `control`.
    #[serde(rename = "record-type")]
    pub record_type: String,
    /// `load`, `insert`, `update`, `delete`; control records use `create-table`, `drop-table`, ...
    pub operation: String,
    #[serde(rename = "partition-key-type", default, skip_serializing_if = "Option::is_none")]
    pub partition_key_type: Option<String>,
    #[serde(rename = "schema-name", default, skip_serializing_if = "Option::is_none")]
    pub schema_name: Option<String>,
    #[serde(rename = "table-name", default, skip_serializing_if = "Option::is_none")]
    pub table_name: Option<String>,
    /// DMS writes the source transaction id (a number for PostgreSQL's xid) on CDC records.
    #[serde(rename = "transaction-id", default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<serde_json::Value>,
}
