//! Test helpers: table specs built directly (not through config validation), DMS messages and
//! small accessors for batches.

use chrono::{DateTime, TimeZone, Utc};
use deltalake::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use serde_json::{Map, Value, json};

use crate::cdc::decode::{RawMessage, decode};
use crate::config::spec::{
    ColumnSpec, ColumnType, MetricCheckSpec, MetricKind, RuleKind, RuleSpec, Scd2Spec, Severity,
    TableSpec, TransformKind, TransformSpec,
};

use super::plan::DecodedBatch;

pub(crate) fn column(name: &str, column_type: ColumnType) -> ColumnSpec {
    ColumnSpec {
        name: name.into(),
        column_type,
        nullable: true,
        unique: false,
        default: None,
    }
}

/// A table keyed by `id` with the given columns, no rules, transforms or checks.
pub(crate) fn table(name: &str, columns: &[(&str, ColumnType)]) -> TableSpec {
    TableSpec {
        name: name.into(),
        topic: format!("cdc-{name}"),
        delta_path: None,
        primary_key: Some("id".into()),
        internal: false,
        columns: columns.iter().map(|(n, t)| column(n, *t)).collect(),
        rules: Vec::new(),
        transforms: Vec::new(),
        checks: Vec::new(),
        anomaly_checks: Vec::new(),
        foreign_keys: Vec::new(),
        indexes: Vec::new(),
        scd2: Scd2Spec::default(),
        mask_pii_in_quarantine: true,
    }
}

/// One column of every type.
pub(crate) fn all_types_table() -> TableSpec {
    table(
        "things",
        &[
            ("id", ColumnType::Int),
            ("name", ColumnType::String),
            ("big", ColumnType::Long),
            ("speed", ColumnType::Double),
            (
                "price",
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
            ("active", ColumnType::Boolean),
            ("seen_at", ColumnType::Timestamp),
            ("born_on", ColumnType::Date),
        ],
    )
}

/// The original's vehicle_telemetry table (tel_001–tel_005, round transforms, Deequ checks).
pub(crate) fn telemetry_table() -> TableSpec {
    let mut t = table(
        "vehicle_telemetry",
        &[
            ("id", ColumnType::Int),
            ("vehicle_id", ColumnType::Int),
            ("recorded_at", ColumnType::String),
            ("latitude", ColumnType::Double),
            ("longitude", ColumnType::Double),
            ("speed_kmh", ColumnType::Double),
            ("fuel_level_pct", ColumnType::Double),
            ("engine_status", ColumnType::String),
        ],
    );
    t.rules = vec![
        rule(
            "tel_001",
            "latitude",
            RuleKind::Range {
                min: Some(-90.0),
                max: Some(90.0),
            },
            Severity::Error,
        ),
        rule(
            "tel_002",
            "longitude",
            RuleKind::Range {
                min: Some(-180.0),
                max: Some(180.0),
            },
            Severity::Error,
        ),
        rule(
            "tel_003",
            "speed_kmh",
            RuleKind::Range {
                min: Some(0.0),
                max: Some(350.0),
            },
            Severity::Error,
        ),
        rule(
            "tel_004",
            "fuel_level_pct",
            RuleKind::Range {
                min: Some(0.0),
                max: Some(120.0),
            },
            Severity::Error,
        ),
        rule("tel_005", "vehicle_id", RuleKind::NotNull, Severity::Error),
    ];
    t.transforms = vec![
        transform(
            "tel_tx_001",
            "latitude",
            TransformKind::Round { decimals: 5 },
            1,
        ),
        transform(
            "tel_tx_002",
            "longitude",
            TransformKind::Round { decimals: 5 },
            2,
        ),
    ];
    t.checks = vec![
        check(MetricKind::Completeness, Some("vehicle_id"), Some(0.95)),
        check(MetricKind::Completeness, Some("latitude"), Some(0.90)),
        check(MetricKind::Uniqueness, Some("id"), Some(1.0)),
        check(MetricKind::Size, None, Some(1.0)),
    ];
    t
}

pub(crate) fn rule(id: &str, column: &str, kind: RuleKind, severity: Severity) -> RuleSpec {
    RuleSpec {
        id: id.into(),
        column: column.into(),
        kind,
        severity,
        allow_null: false,
    }
}

pub(crate) fn regex(pattern: &str) -> RuleKind {
    RuleKind::Regex {
        pattern: regex::Regex::new(pattern).unwrap_or_else(|e| panic!("test regex {pattern}: {e}")),
    }
}

pub(crate) fn transform(id: &str, column: &str, kind: TransformKind, order: i64) -> TransformSpec {
    TransformSpec {
        id: id.into(),
        column: column.into(),
        kind,
        order,
    }
}

pub(crate) fn check(
    kind: MetricKind,
    column: Option<&str>,
    threshold: Option<f64>,
) -> MetricCheckSpec {
    MetricCheckSpec {
        kind,
        column: column.map(str::to_owned),
        threshold,
        severity: Severity::Warning,
    }
}

pub(crate) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected a JSON object, got {other}"),
    }
}

/// Commit time `2026-11-25T14:00:00Z` plus `seconds`.
pub(crate) fn ts(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_795_615_200 + seconds, 0)
        .single()
        .unwrap_or_default()
}

/// A DMS data message for `table` as bytes.
pub(crate) fn dms(table: &TableSpec, operation: &str, data: Value, seconds: i64) -> Vec<u8> {
    json!({
        "data": data,
        "metadata": {
            "timestamp": crate::cdc::encode::dms_timestamp(ts(seconds)),
            "record-type": "data",
            "operation": operation,
            "partition-key-type": "primary-key",
            "schema-name": "public",
            "table-name": table.name,
            "transaction-id": 1000 + seconds,
        }
    })
    .to_string()
    .into_bytes()
}

/// Decodes payloads as if they arrived on partition 0 at offsets 0, 1, ...
pub(crate) fn decode_payloads(table: &TableSpec, payloads: &[Vec<u8>]) -> DecodedBatch {
    let messages: Vec<RawMessage> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| RawMessage {
            topic: &table.topic,
            partition: 0,
            offset: i as i64,
            key: None,
            payload: Some(p),
        })
        .collect();
    decode(table, &messages)
}

pub(crate) fn col<'b>(batch: &'b RecordBatch, name: &str) -> &'b ArrayRef {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", batch.schema()))
}

pub(crate) fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    col(batch, name)
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect()
}

pub(crate) fn ints(batch: &RecordBatch, name: &str) -> Vec<Option<i32>> {
    col(batch, name)
        .as_primitive::<Int32Type>()
        .iter()
        .collect()
}

pub(crate) fn longs(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    col(batch, name)
        .as_primitive::<Int64Type>()
        .iter()
        .collect()
}

pub(crate) fn doubles(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    col(batch, name)
        .as_primitive::<Float64Type>()
        .iter()
        .collect()
}

/// The `_failed_rules` lists of a quarantine batch.
pub(crate) fn failed_rules(batch: &RecordBatch) -> Vec<Vec<String>> {
    let lists = col(batch, super::schema::FAILED_RULES).as_list::<i32>();
    (0..lists.len())
        .map(|i| {
            lists
                .value(i)
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or_default().to_owned())
                .collect()
        })
        .collect()
}

/// Decodes payloads with explicit (partition, offset) positions, in the given arrival order.
pub(crate) fn decode_at(table: &TableSpec, messages: &[(i32, i64, Vec<u8>)]) -> DecodedBatch {
    let raw: Vec<RawMessage> = messages
        .iter()
        .map(|(partition, offset, payload)| RawMessage {
            topic: &table.topic,
            partition: *partition,
            offset: *offset,
            key: None,
            payload: Some(payload),
        })
        .collect();
    decode(table, &raw)
}
