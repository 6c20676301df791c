//! Row changes → DMS JSON, byte for byte what AWS DMS writes to Kafka with `MessageFormat: json`,
//! `IncludeNullAndEmpty: true` and before-images off. Local capture uses this, so the processor
//! cannot tell local capture and DMS apart.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Number, Value};

use crate::config::spec::{ColumnType, TableSpec};
use crate::pipeline::decimal::Decimal;
use crate::pipeline::plan::Operation;

use super::coerce::{parse_bool, parse_date_days, parse_double, parse_timestamp};

/// Encodes one row change. `row` holds the row image by column name, as typed JSON values or as
/// PostgreSQL's text output (pgoutput sends text); every configured column is written in config
/// order (null when absent), then any other columns of the image. Values are normalized the way
/// DMS writes them: integers and doubles as JSON numbers, decimals as exact strings, booleans as
/// `"true"`/`"false"`, timestamps as `"YYYY-MM-DD HH:MM:SS.ffffff"` (UTC), dates as `"YYYY-MM-DD"`.
/// A value that cannot be normalized is written as it came, so the processor quarantines it as
/// malformed rather than anything being lost here.
pub fn encode(
    table: &TableSpec,
    schema_name: &str,
    op: Operation,
    mut row: Map<String, Value>,
    commit_ts: DateTime<Utc>,
    transaction_id: Option<u64>,
) -> Vec<u8> {
    let mut data = Map::with_capacity(row.len().max(table.columns.len()));
    for column in &table.columns {
        let value = row.shift_remove(&column.name).unwrap_or(Value::Null);
        data.insert(column.name.clone(), normalize(value, column.column_type));
    }
    for (name, value) in row {
        data.insert(name, value);
    }

    let mut metadata = Map::with_capacity(7);
    metadata.insert("timestamp".into(), Value::String(dms_timestamp(commit_ts)));
    metadata.insert("record-type".into(), Value::String("data".into()));
    metadata.insert("operation".into(), Value::String(op.as_dms().into()));
    metadata.insert(
        "partition-key-type".into(),
        Value::String("primary-key".into()),
    );
    metadata.insert("schema-name".into(), Value::String(schema_name.into()));
    metadata.insert("table-name".into(), Value::String(table.name.clone()));
    if let Some(id) = transaction_id {
        metadata.insert("transaction-id".into(), Value::Number(id.into()));
    }

    let mut envelope = Map::with_capacity(2);
    envelope.insert("data".into(), Value::Object(data));
    envelope.insert("metadata".into(), Value::Object(metadata));
    Value::Object(envelope).to_string().into_bytes()
}

/// DMS's `metadata.timestamp`: `2026-11-25T14:01:32.123456Z`.
pub fn dms_timestamp(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn normalize(value: Value, column_type: ColumnType) -> Value {
    if value.is_null() {
        return value;
    }
    let normalized = match (&value, column_type) {
        (_, ColumnType::String | ColumnType::Text) => Some(match &value {
            Value::String(_) => value.clone(),
            Value::Number(n) => Value::String(n.to_string()),
            Value::Bool(b) => Value::String(b.to_string()),
            other => Value::String(other.to_string()),
        }),
        (Value::Number(_), ColumnType::Int | ColumnType::Long) => Some(value.clone()),
        (Value::String(s), ColumnType::Int | ColumnType::Long) => s
            .trim()
            .parse::<i64>()
            .ok()
            .map(|i| Value::Number(i.into())),
        (Value::Number(_), ColumnType::Double | ColumnType::Real) => Some(value.clone()),
        // JSON has no NaN or infinities: those stay strings, as PostgreSQL spells them.
        (Value::String(s), ColumnType::Double | ColumnType::Real) => parse_double(s).map(|f| {
            Number::from_f64(f).map_or_else(|| Value::String(s.trim().to_owned()), Value::Number)
        }),
        (Value::Number(n), ColumnType::Decimal { .. }) => {
            Decimal::parse(&n.to_string()).map(|d| Value::String(d.to_string()))
        }
        (Value::String(s), ColumnType::Decimal { .. }) => {
            Decimal::parse(s.trim()).map(|_| Value::String(s.trim().to_owned()))
        }
        (Value::Bool(b), ColumnType::Boolean) => Some(Value::String(b.to_string())),
        (Value::String(s), ColumnType::Boolean) => {
            parse_bool(s).map(|b| Value::String(b.to_string()))
        }
        (Value::String(s), ColumnType::Timestamp) => parse_timestamp(s)
            .map(|ts| Value::String(ts.format("%Y-%m-%d %H:%M:%S%.6f").to_string())),
        (Value::String(s), ColumnType::Date) => parse_date_days(s).and_then(|days| {
            chrono::NaiveDate::from_num_days_from_ce_opt(days.checked_add(719_163)?)
                .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
        }),
        _ => None,
    };
    normalized.unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use deltalake::arrow::array::{
        Array, AsArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array,
        Int64Array, TimestampMicrosecondArray,
    };
    use serde_json::json;

    use super::*;
    use crate::cdc::decode::{RawMessage, decode};
    use crate::pipeline::testing::{all_types_table, object};

    fn commit_ts() -> DateTime<Utc> {
        Utc.timestamp_micros(1_795_615_292_123_456)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn writes_exactly_the_dms_envelope_with_every_configured_column() {
        let table = all_types_table();
        let bytes = encode(
            &table,
            "public",
            Operation::Update,
            object(json!({"id": 7, "name": "Ann", "active": true, "extra_column": "kept"})),
            commit_ts(),
            Some(8_012_023),
        );
        let text = String::from_utf8(bytes).unwrap_or_default();
        assert_eq!(
            text,
            concat!(
                r#"{"data":{"id":7,"name":"Ann","big":null,"speed":null,"price":null,"active":"true","seen_at":null,"#,
                r#""born_on":null,"extra_column":"kept"},"#,
                r#""metadata":{"timestamp":"2026-11-25T14:01:32.123456Z","record-type":"data","operation":"update","#,
                r#""partition-key-type":"primary-key","schema-name":"public","table-name":"things","transaction-id":8012023}}"#
            )
        );
    }

    #[test]
    fn load_records_carry_no_transaction_id() {
        let table = all_types_table();
        let bytes = encode(
            &table,
            "public",
            Operation::Load,
            object(json!({"id": 1})),
            commit_ts(),
            None,
        );
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(value["metadata"]["operation"], "load");
        assert!(value["metadata"].get("transaction-id").is_none());
    }

    #[test]
    fn normalizes_postgres_text_output_to_dms_value_forms() {
        let table = all_types_table();
        let row = object(json!({
            "id": "7", "name": 12, "big": "9000000000", "speed": "37.05", "price": "1234.50",
            "active": "t", "seen_at": "2026-11-25 16:01:32.123456+02", "born_on": "2026-11-25"
        }));
        let value: Value = serde_json::from_slice(&encode(
            &table,
            "public",
            Operation::Insert,
            row,
            commit_ts(),
            Some(1),
        ))
        .unwrap_or_default();
        assert_eq!(
            value["data"],
            json!({
                "id": 7, "name": "12", "big": 9_000_000_000_i64, "speed": 37.05, "price": "1234.50",
                "active": "true", "seen_at": "2026-11-25 14:01:32.123456", "born_on": "2026-11-25"
            })
        );
    }

    #[test]
    fn values_that_cannot_be_normalized_pass_through_for_the_processor_to_quarantine() {
        let table = all_types_table();
        let row = object(json!({"id": 1, "speed": "fast", "seen_at": "never", "active": "maybe"}));
        let value: Value = serde_json::from_slice(&encode(
            &table,
            "public",
            Operation::Insert,
            row,
            commit_ts(),
            Some(1),
        ))
        .unwrap_or_default();
        assert_eq!(value["data"]["speed"], "fast");
        assert_eq!(value["data"]["seen_at"], "never");
        assert_eq!(value["data"]["active"], "maybe");
    }

    #[test]
    fn encode_then_decode_round_trips_every_column_type() {
        let table = all_types_table();
        let row = object(json!({
            "id": 2_147_483_647, "name": "Zoë ✓", "big": -9_007_199_254_740_993_i64, "speed": 0.1,
            "price": "-0.05", "active": false, "seen_at": "2026-11-25T14:01:32.123456Z", "born_on": "1969-12-31"
        }));
        let bytes = encode(
            &table,
            "public",
            Operation::Insert,
            row,
            commit_ts(),
            Some(42),
        );
        let key = b"2147483647".to_vec();
        let messages = [RawMessage {
            topic: "cdc-things",
            partition: 2,
            offset: 99,
            key: Some(&key),
            payload: Some(&bytes),
        }];
        let decoded = decode(&table, &messages);
        assert!(decoded.malformed.is_empty(), "{:?}", decoded.malformed);
        let rows = &decoded.rows;
        assert_eq!(rows.num_rows(), 1);
        let col = |name: &str| {
            rows.column_by_name(name)
                .cloned()
                .unwrap_or_else(|| panic!("column {name}"))
        };
        assert_eq!(
            col("id")
                .as_any()
                .downcast_ref::<Int32Array>()
                .map(|a| a.value(0)),
            Some(2_147_483_647)
        );
        assert_eq!(col("name").as_string::<i32>().value(0), "Zoë ✓");
        assert_eq!(
            col("big")
                .as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.value(0)),
            Some(-9_007_199_254_740_993)
        );
        assert_eq!(
            col("speed")
                .as_any()
                .downcast_ref::<Float64Array>()
                .map(|a| a.value(0)),
            Some(0.1)
        );
        assert_eq!(
            col("price")
                .as_any()
                .downcast_ref::<Decimal128Array>()
                .map(|a| a.value(0)),
            Some(-5)
        );
        assert_eq!(
            col("active")
                .as_any()
                .downcast_ref::<BooleanArray>()
                .map(|a| a.value(0)),
            Some(false)
        );
        assert_eq!(
            col("seen_at")
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .map(|a| a.value(0)),
            Some(1_795_615_292_123_456)
        );
        assert_eq!(
            col("born_on")
                .as_any()
                .downcast_ref::<Date32Array>()
                .map(|a| a.value(0)),
            Some(-1)
        );
        assert_eq!(col("_operation").as_string::<i32>().value(0), "insert");
        assert_eq!(
            col("_source_ts")
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .map(|a| a.value(0)),
            Some(1_795_615_292_123_456)
        );
        assert_eq!(
            col("_partition")
                .as_any()
                .downcast_ref::<Int32Array>()
                .map(|a| a.value(0)),
            Some(2)
        );
        assert_eq!(
            col("_offset")
                .as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.value(0)),
            Some(99)
        );
    }

    #[test]
    fn a_key_only_delete_image_round_trips_with_nulls() {
        let table = all_types_table();
        let bytes = encode(
            &table,
            "public",
            Operation::Delete,
            object(json!({"id": 5})),
            commit_ts(),
            Some(3),
        );
        let messages = [RawMessage {
            topic: "cdc-things",
            partition: 0,
            offset: 0,
            key: None,
            payload: Some(&bytes),
        }];
        let decoded = decode(&table, &messages);
        assert_eq!(decoded.rows.num_rows(), 1);
        for name in [
            "name", "big", "speed", "price", "active", "seen_at", "born_on",
        ] {
            assert_eq!(
                decoded.rows.column_by_name(name).map(|c| c.null_count()),
                Some(1),
                "{name} should be null"
            );
        }
        assert_eq!(
            decoded
                .rows
                .column_by_name("_operation")
                .map(|c| c.as_string::<i32>().value(0).to_owned()),
            Some("delete".into())
        );
    }
}
