// replaced on integration: `crate::cdc::encode::encode` (the DMS JSON encoder) takes its place.
//! A minimal stand-in for the DMS JSON encoder, with the same signature.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::cdc::envelope::{Envelope, Metadata};
use crate::config::spec::TableSpec;
use crate::pipeline::plan::Operation;

pub(crate) fn encode(
    table: &TableSpec,
    schema_name: &str,
    op: Operation,
    row: serde_json::Map<String, serde_json::Value>,
    commit_ts: DateTime<Utc>,
    transaction_id: Option<u64>,
) -> Vec<u8> {
    let envelope = Envelope {
        data: Some(row),
        metadata: Metadata {
            timestamp: commit_ts.to_rfc3339_opts(SecondsFormat::Micros, true),
            record_type: "data".into(),
            operation: op.as_dms().into(),
            partition_key_type: Some("primary-key".into()),
            schema_name: Some(schema_name.into()),
            table_name: Some(table.name.clone()),
            transaction_id: transaction_id.map(serde_json::Value::from),
        },
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}
