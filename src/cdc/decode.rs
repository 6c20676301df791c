//! Kafka messages of one table in DMS JSON → typed Arrow rows. Every message ends up somewhere:
//! a row, a control-record count, or a [`MalformedRecord`] with a reason that says what was wrong.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int32Builder,
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::record_batch::RecordBatch;
use serde_json::{Map, Value};

use crate::config::spec::{ColumnType, TableSpec};
use crate::pipeline::pii::PiiMasks;
use crate::pipeline::plan::{DecodedBatch, MalformedRecord, Operation, SourcePosition};
use crate::pipeline::schema::decoded_schema;

use super::borrowed::{self, Cells, ColumnKeys};
use super::coerce::{Cell, CoerceError, coerce, parse_timestamp_micros};

/// One Kafka message as the consumer hands it over.
#[derive(Debug, Clone)]
pub struct RawMessage<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// DMS keys by primary key; the row's key is read from `data`, so this is informational.
    pub key: Option<&'a [u8]>,
    /// None for a Kafka tombstone.
    pub payload: Option<&'a [u8]>,
}

impl RawMessage<'_> {
    pub fn position(&self) -> SourcePosition {
        SourcePosition {
            topic: self.topic.to_owned(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// Payloads above this are quarantined undecoded (Kafka's default `message.max.bytes` is about
/// 1 MiB, so larger ones only arrive from a broker configured beyond it).
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// `_raw` of a malformed record keeps at most this many bytes of the payload.
pub const MAX_RAW_BYTES: usize = 64 * 1024;

/// Decodes the messages of one table, keeping their order.
pub fn decode(table: &TableSpec, messages: &[RawMessage]) -> DecodedBatch {
    decode_with_limit(table, messages, MAX_PAYLOAD_BYTES)
}

/// [`decode`] with an explicit payload size limit.
pub fn decode_with_limit(
    table: &TableSpec,
    messages: &[RawMessage],
    max_payload_bytes: usize,
) -> DecodedBatch {
    let mut decoder = Decoder::with_limit(table, messages.len(), max_payload_bytes);
    for message in messages {
        decoder.push(message);
    }
    match decoder.finish() {
        Ok(decoded) => decoded,
        // Unreachable in practice (the decoder checks up front that Arrow can hold the table's
        // columns); the messages are still accounted for, as malformed.
        Err(error) => {
            let mut decoder = Decoder::with_limit(table, 0, max_payload_bytes);
            decoder.unbuildable = Some(error);
            for message in messages {
                decoder.push(message);
            }
            decoder.without_rows()
        }
    }
}

/// Decodes a table's messages one at a time into Arrow builders, so that a micro-batch holds
/// decoded columns (about 150 bytes a row) rather than the payloads (500 bytes and more).
pub struct Decoder {
    table: TableSpec,
    max_payload_bytes: usize,
    masks: PiiMasks,
    keys: ColumnKeys,
    columns: Vec<ColumnBuilder>,
    meta: MetaBuilders,
    malformed: Vec<MalformedRecord>,
    control_records: u64,
    /// Why Arrow cannot hold the table's columns (validation prevents it): every message is
    /// then malformed with this reason, as it arrives.
    unbuildable: Option<String>,
}

impl Decoder {
    /// A decoder for about `capacity` messages of `table`.
    pub fn new(table: &TableSpec, capacity: usize) -> Decoder {
        Decoder::with_limit(table, capacity, MAX_PAYLOAD_BYTES)
    }

    /// [`Decoder::new`] with an explicit payload size limit.
    pub fn with_limit(table: &TableSpec, capacity: usize, max_payload_bytes: usize) -> Decoder {
        // An empty batch fails exactly where a full one would: the column types alone decide.
        let unbuildable = build(table, builders(table, 0), MetaBuilders::new(0)).err();
        Decoder {
            table: table.clone(),
            max_payload_bytes,
            masks: PiiMasks::for_quarantine(table),
            keys: ColumnKeys::new(table),
            columns: builders(table, capacity),
            meta: MetaBuilders::new(capacity),
            malformed: Vec::new(),
            control_records: 0,
            unbuildable,
        }
    }

    /// Decodes one message into a row, a control-record count or a malformed record.
    pub fn push(&mut self, message: &RawMessage) {
        let table = &self.table;
        let mut cells: Cells = Cells::new();
        let outcome = decode_one(
            table,
            message,
            self.max_payload_bytes,
            &self.masks,
            &self.keys,
            &mut cells,
        );
        if let Some(error) = &self.unbuildable {
            let operation = match outcome {
                Outcome::Control => {
                    self.control_records += 1;
                    return;
                }
                Outcome::Row { operation, .. } => Some(operation),
                Outcome::Malformed { operation, .. } => operation,
            };
            self.malformed
                .push(unbuildable(table, message, operation, error));
            return;
        }
        match outcome {
            Outcome::Control => self.control_records += 1,
            Outcome::Row {
                operation,
                source_ts_micros,
            } => {
                for (builder, cell) in self.columns.iter_mut().zip(cells.drain(..)) {
                    builder.append(cell);
                }
                self.meta.append(message, operation, source_ts_micros);
            }
            Outcome::Malformed {
                reason,
                operation,
                raw,
            } => self.malformed.push(MalformedRecord {
                position: message.position(),
                raw: raw.unwrap_or_else(|| raw_text(message.payload.unwrap_or_default())),
                reason,
                operation,
            }),
        }
    }

    /// The decoded batch, in push order.
    pub fn finish(self) -> Result<DecodedBatch, String> {
        if self.unbuildable.is_some() {
            return Ok(self.without_rows());
        }
        let rows = build(&self.table, self.columns, self.meta)?;
        Ok(DecodedBatch {
            rows,
            malformed: self.malformed,
            control_records: self.control_records,
        })
    }

    /// The malformed and control records only (every row became malformed).
    fn without_rows(self) -> DecodedBatch {
        DecodedBatch {
            rows: RecordBatch::new_empty(decoded_schema(&self.table)),
            malformed: self.malformed,
            control_records: self.control_records,
        }
    }
}

fn builders(table: &TableSpec, capacity: usize) -> Vec<ColumnBuilder> {
    table
        .columns
        .iter()
        .map(|c| ColumnBuilder::new(c.column_type, capacity))
        .collect()
}

fn build(
    table: &TableSpec,
    columns: Vec<ColumnBuilder>,
    meta: MetaBuilders,
) -> Result<RecordBatch, String> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(table.columns.len() + 5);
    for builder in columns {
        arrays.push(builder.finish()?);
    }
    arrays.extend(meta.finish());
    RecordBatch::try_new(decoded_schema(table), arrays).map_err(|e| e.to_string())
}

/// A message of a table whose columns Arrow cannot hold, accounted for as malformed.
fn unbuildable(
    table: &TableSpec,
    message: &RawMessage,
    operation: Option<Operation>,
    error: &str,
) -> MalformedRecord {
    MalformedRecord {
        position: message.position(),
        raw: raw_text(message.payload.unwrap_or_default()),
        reason: format!(
            "malformed: table '{}' cannot be decoded into Arrow: {error}",
            table.name
        ),
        operation,
    }
}

enum Outcome {
    /// The cells were left in the `cells` buffer, one per configured column.
    Row {
        operation: Operation,
        source_ts_micros: i64,
    },
    Control,
    Malformed {
        reason: String,
        operation: Option<Operation>,
        /// The payload text to keep when it differs from the plain payload (PII masked).
        raw: Option<String>,
    },
}

fn malformed(reason: impl Into<String>) -> Outcome {
    Outcome::Malformed {
        reason: format!("malformed: {}", reason.into()),
        operation: None,
        raw: None,
    }
}

fn decode_one<'a>(
    table: &TableSpec,
    message: &RawMessage<'a>,
    max_payload_bytes: usize,
    masks: &PiiMasks,
    keys: &ColumnKeys,
    cells: &mut Cells<'a>,
) -> Outcome {
    cells.clear();
    let payload = match message.payload {
        None => return malformed("message has no value (a Kafka tombstone)"),
        Some([]) => return malformed("message value is empty"),
        Some(payload) => payload,
    };
    if payload.len() > max_payload_bytes {
        let reason = format!(
            "malformed: payload of {} bytes exceeds the limit of {max_payload_bytes} bytes",
            payload.len()
        );
        // Parsed only to mask PII in what is kept of it; the row itself is not decoded.
        let raw = if masks.is_empty() {
            None
        } else {
            std::str::from_utf8(payload)
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(text).ok())
                .and_then(|document| masked_raw(table, &document, masks))
        };
        return Outcome::Malformed {
            reason,
            operation: None,
            raw,
        };
    }
    // The fast path checks UTF-8 as it reads; what it leaves is checked whole here.
    if let Some(outcome) = decode_common(table, keys, payload, cells) {
        return outcome;
    }
    cells.clear();
    let text = match simdutf8::compat::from_utf8(payload) {
        Ok(text) => text,
        Err(e) => {
            return malformed(format!(
                "payload is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ));
        }
    };
    let document: Value = match serde_json::from_str(text) {
        Ok(document) => document,
        Err(e) if e.is_eof() => {
            return malformed(format!(
                "truncated JSON: input ends early at line {} column {}",
                e.line(),
                e.column()
            ));
        }
        Err(e) => return malformed(format!("not JSON: {e}")),
    };
    let outcome = decode_document(table, message.topic, &document, masks, cells);
    match outcome {
        Outcome::Malformed {
            reason,
            operation,
            raw: None,
        } if !masks.is_empty() => Outcome::Malformed {
            reason,
            operation,
            raw: masked_raw(table, &document, masks),
        },
        outcome => outcome,
    }
}

/// A well-formed data or control record through the borrowing parser; None leaves the message
/// to [`decode_document`], which also writes every malformed-record reason.
fn decode_common<'a>(
    table: &TableSpec,
    keys: &ColumnKeys,
    payload: &'a [u8],
    cells: &mut Cells<'a>,
) -> Option<Outcome> {
    let record = borrowed::parse(table, keys, payload, cells)?;
    let metadata = record.metadata;
    match metadata.record_type? {
        "data" => {}
        // A control record has no row: its cells are not left behind, as on the general path.
        "control" => {
            cells.clear();
            return Some(Outcome::Control);
        }
        _ => return None,
    }
    let operation = Operation::from_dms(metadata.operation?)?;
    if metadata.table_name? != table.name {
        return None;
    }
    let source_ts_micros = parse_timestamp_micros(metadata.timestamp?)?;
    if !record.has_data {
        return None;
    }
    if table.primary_key.is_some() {
        cells.get(keys.primary_key?)?.as_ref()?;
    }
    Some(Outcome::Row {
        operation,
        source_ts_micros,
    })
}

fn decode_document(
    table: &TableSpec,
    topic: &str,
    document: &Value,
    masks: &PiiMasks,
    cells: &mut Cells<'_>,
) -> Outcome {
    let Value::Object(envelope) = document else {
        return malformed(format!(
            "JSON is {}, expected an object with 'data' and 'metadata'",
            kind(document)
        ));
    };
    let metadata = match envelope.get("metadata") {
        Some(Value::Object(metadata)) => metadata,
        Some(other) => {
            return malformed(format!("'metadata' is {}, expected an object", kind(other)));
        }
        None => return malformed("no 'metadata' object"),
    };
    let record_type = match metadata_str(metadata, "record-type") {
        Ok(record_type) => record_type,
        Err(reason) => return malformed(reason),
    };
    match record_type {
        "data" => {}
        "control" => return Outcome::Control,
        other => return malformed(format!("unknown record-type {:?}", other)),
    }
    let operation = match metadata_str(metadata, "operation") {
        Ok(name) => match Operation::from_dms(name) {
            Some(operation) => operation,
            None => return malformed(format!("unknown operation {name:?}")),
        },
        Err(reason) => return malformed(reason),
    };
    let with_operation = |reason: String| Outcome::Malformed {
        reason: format!("malformed: {reason}"),
        operation: Some(operation),
        raw: None,
    };
    match metadata_str(metadata, "table-name") {
        Ok(name) if name == table.name => {}
        Ok(name) => {
            return with_operation(format!(
                "message for table '{name}' arrived on topic '{}' of table '{}'",
                topic, table.name
            ));
        }
        Err(reason) => return with_operation(reason),
    }
    let source_ts_micros = match metadata_str(metadata, "timestamp") {
        Ok(text) => match parse_timestamp_micros(text) {
            Some(micros) => micros,
            None => {
                return with_operation(format!(
                    "metadata timestamp {text:?} is not an ISO 8601 timestamp"
                ));
            }
        },
        Err(reason) => return with_operation(reason),
    };
    let data = match envelope.get("data") {
        Some(Value::Object(data)) => data,
        Some(other) => {
            return with_operation(format!("'data' is {}, expected an object", kind(other)));
        }
        None => return with_operation("no 'data' object in a data record".into()),
    };

    let mut problems = Vec::new();
    for column in &table.columns {
        match data.get(&column.name) {
            None | Some(Value::Null) => cells.push(None),
            Some(value) => match coerce(value, column.column_type) {
                Ok(cell) => cells.push(Some(cell.into_owned())),
                Err(e) => {
                    problems.push(format!(
                        "column '{}': {}",
                        column.name,
                        masked_error(masks, &column.name, value, e)
                    ));
                    cells.push(None);
                }
            },
        }
    }
    if let Some(key) = &table.primary_key {
        let key_present = table
            .column_index(key)
            .and_then(|i| cells.get(i))
            .is_some_and(|cell| cell.is_some());
        let key_failed = problems
            .iter()
            .any(|p| p.starts_with(&format!("column '{key}':")));
        if !key_present && !key_failed {
            problems.insert(0, format!("primary key column '{key}' is null or missing"));
        }
    }
    if !problems.is_empty() {
        cells.clear();
        return with_operation(problems.join("; "));
    }
    Outcome::Row {
        operation,
        source_ts_micros,
    }
}

/// The coercion error with the offending value masked when the column is PII.
fn masked_error(masks: &PiiMasks, column: &str, value: &Value, error: CoerceError) -> String {
    if !masks.masks(column) {
        return error.to_string();
    }
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let masked = Value::String(masks.apply(column, &text).into_owned()).to_string();
    CoerceError {
        found: masked,
        ..error
    }
    .to_string()
}

fn metadata_str<'m>(metadata: &'m Map<String, Value>, field: &str) -> Result<&'m str, String> {
    match metadata.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!(
            "metadata '{field}' is {}, expected a string",
            kind(other)
        )),
        None => Err(format!("metadata has no '{field}'")),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The payload re-serialized with the PII columns inside `data` masked; None when there is
/// nothing to mask.
fn masked_raw(table: &TableSpec, document: &Value, masks: &PiiMasks) -> Option<String> {
    let data = document.get("data")?.as_object()?;
    if !table
        .columns
        .iter()
        .any(|c| masks.masks(&c.name) && data.get(&c.name).is_some_and(|v| !v.is_null()))
    {
        return None;
    }
    let mut masked = document.clone();
    if let Some(Value::Object(data)) = masked.get_mut("data") {
        for (name, value) in data.iter_mut() {
            if masks.masks(name) && !value.is_null() {
                let text = match &*value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                *value = Value::String(masks.apply(name, &text).into_owned());
            }
        }
    }
    Some(truncate_raw(masked.to_string()))
}

/// The payload as text: invalid UTF-8 replaced, at most [`MAX_RAW_BYTES`] kept.
fn raw_text(payload: &[u8]) -> String {
    if payload.len() > MAX_RAW_BYTES {
        let mut text = String::from_utf8_lossy(&payload[..MAX_RAW_BYTES]).into_owned();
        // The cut may split a character; the lossy conversion marks it with U+FFFD.
        text.push_str(&format!(
            "… [truncated: {} of {} bytes kept]",
            MAX_RAW_BYTES,
            payload.len()
        ));
        text
    } else {
        String::from_utf8_lossy(payload).into_owned()
    }
}

fn truncate_raw(text: String) -> String {
    if text.len() <= MAX_RAW_BYTES {
        return text;
    }
    let mut cut = MAX_RAW_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}… [truncated: {} of {} bytes kept]",
        &text[..cut],
        cut,
        text.len()
    )
}

/// An Arrow builder for one configured column.
enum ColumnBuilder {
    Text(StringBuilder),
    Int(Int32Builder),
    Long(Int64Builder),
    Double(Float64Builder),
    Boolean(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Date(Date32Builder),
    Decimal(Decimal128Builder, u8, i8),
}

impl ColumnBuilder {
    fn new(column_type: ColumnType, capacity: usize) -> ColumnBuilder {
        match column_type {
            ColumnType::String | ColumnType::Text => {
                ColumnBuilder::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            ColumnType::Int => ColumnBuilder::Int(Int32Builder::with_capacity(capacity)),
            ColumnType::Long => ColumnBuilder::Long(Int64Builder::with_capacity(capacity)),
            ColumnType::Double | ColumnType::Real => {
                ColumnBuilder::Double(Float64Builder::with_capacity(capacity))
            }
            ColumnType::Boolean => ColumnBuilder::Boolean(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Timestamp => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
            ColumnType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(capacity)),
            ColumnType::Decimal { precision, scale } => {
                ColumnBuilder::Decimal(Decimal128Builder::with_capacity(capacity), precision, scale)
            }
        }
    }

    /// Appends a cell coerced for this column's type (so the variants always agree).
    fn append(&mut self, cell: Option<Cell>) {
        match (self, cell) {
            (ColumnBuilder::Text(b), Some(Cell::Text(v))) => b.append_value(v),
            (ColumnBuilder::Int(b), Some(Cell::Int(v))) => b.append_value(v),
            (ColumnBuilder::Long(b), Some(Cell::Long(v))) => b.append_value(v),
            (ColumnBuilder::Double(b), Some(Cell::Double(v))) => b.append_value(v),
            (ColumnBuilder::Boolean(b), Some(Cell::Boolean(v))) => b.append_value(v),
            (ColumnBuilder::Timestamp(b), Some(Cell::TimestampMicros(v))) => b.append_value(v),
            (ColumnBuilder::Date(b), Some(Cell::Date(v))) => b.append_value(v),
            (ColumnBuilder::Decimal(b, _, _), Some(Cell::Decimal(v))) => b.append_value(v),
            (builder, _) => builder.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Text(b) => b.append_null(),
            ColumnBuilder::Int(b) => b.append_null(),
            ColumnBuilder::Long(b) => b.append_null(),
            ColumnBuilder::Double(b) => b.append_null(),
            ColumnBuilder::Boolean(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Decimal(b, _, _) => b.append_null(),
        }
    }

    fn finish(self) -> Result<ArrayRef, String> {
        Ok(match self {
            ColumnBuilder::Text(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Int(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Long(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Double(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Boolean(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(mut b) => Arc::new(b.finish().with_timezone("UTC")),
            ColumnBuilder::Date(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(mut b, precision, scale) => Arc::new(
                b.finish()
                    .with_precision_and_scale(precision, scale)
                    .map_err(|e| e.to_string())?,
            ),
        })
    }
}

/// Builders of the CDC metadata columns of a decoded batch.
struct MetaBuilders {
    operation: StringBuilder,
    source_ts: TimestampMicrosecondBuilder,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
}

impl MetaBuilders {
    fn new(capacity: usize) -> MetaBuilders {
        MetaBuilders {
            operation: StringBuilder::with_capacity(capacity, capacity * 6),
            source_ts: TimestampMicrosecondBuilder::with_capacity(capacity),
            topic: StringBuilder::with_capacity(capacity, capacity * 16),
            partition: Int32Builder::with_capacity(capacity),
            offset: Int64Builder::with_capacity(capacity),
        }
    }

    fn append(&mut self, message: &RawMessage, operation: Operation, source_ts_micros: i64) {
        self.operation.append_value(operation.as_dms());
        self.source_ts.append_value(source_ts_micros);
        self.topic.append_value(message.topic);
        self.partition.append_value(message.partition);
        self.offset.append_value(message.offset);
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.operation.finish()),
            Arc::new(self.source_ts.finish().with_timezone("UTC")),
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use deltalake::arrow::array::{Array, AsArray};
    use proptest::prelude::{Just, Strategy, any, prop, prop_oneof};
    use serde_json::json;

    use super::*;
    use crate::config::spec::TransformKind;
    use crate::pipeline::testing::{
        col, decode_payloads, dms, doubles, ints, strings, telemetry_table, transform,
    };

    /// What the general decoder makes of `text`, for comparison with the borrowing path.
    fn general<'a>(table: &TableSpec, text: &str) -> (String, Cells<'a>) {
        let mut cells = Cells::new();
        let outcome = match serde_json::from_str::<Value>(text) {
            Ok(document) => decode_document(
                table,
                &table.topic,
                &document,
                &PiiMasks::for_quarantine(table),
                &mut cells,
            ),
            Err(e) => malformed(e.to_string()),
        };
        (outcome_label(&outcome), cells)
    }

    fn outcome_label(outcome: &Outcome) -> String {
        match outcome {
            Outcome::Row {
                operation,
                source_ts_micros,
            } => format!("row {} at {source_ts_micros}", operation.as_dms()),
            Outcome::Control => "control".into(),
            Outcome::Malformed { reason, .. } => format!("malformed: {reason}"),
        }
    }

    fn json_scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e12_f64..1e12).prop_map(Value::from),
            "[ -~]{0,12}".prop_map(Value::from),
            "-?[0-9]{1,8}(\\.[0-9]{1,3})?".prop_map(Value::from),
            prop::sample::select(vec![
                "true",
                "F",
                "2026-11-25",
                "2026-11-25 14:00:00.123456789+02",
                "2026-11-25T14:00:00Z",
                "NaN",
                "1e5",
                " 7 ",
                "a\"b\\c\u{e9}",
            ])
            .prop_map(Value::from),
            Just(json!([1, {"a": 2}])),
        ]
    }

    proptest::proptest! {
        /// Wherever the borrowing path answers, it answers exactly what the general decoder does.
        #[test]
        fn the_borrowing_path_agrees_with_the_general_decoder(
            values in proptest::collection::vec(json_scalar(), 8),
            operation in prop::sample::select(vec!["load", "insert", "update", "delete", "merge"]),
            record_type in prop::sample::select(vec!["data", "control", "other"]),
            other_table in any::<bool>(),
        ) {
            let table = crate::pipeline::testing::all_types_table();
            let data: Map<String, Value> =
                table.columns.iter().map(|c| c.name.clone()).zip(values).collect();
            let text = json!({
                "data": data,
                "metadata": {
                    "timestamp": "2026-11-25T10:00:00.5Z",
                    "record-type": record_type,
                    "operation": operation,
                    "table-name": if other_table { "elsewhere" } else { "things" },
                }
            })
            .to_string();
            let mut cells = Cells::new();
            if let Some(outcome) = decode_common(&table, &ColumnKeys::new(&table), text.as_bytes(), &mut cells) {
                proptest::prop_assert_eq!((outcome_label(&outcome), cells), general(&table, &text), "{}", text);
            }
        }
    }

    /// Values every column of `all_types_table` accepts, in the spellings DMS uses.
    fn valid_row() -> impl Strategy<Value = Vec<Value>> {
        let nullable = |s: proptest::strategy::BoxedStrategy<Value>| prop_oneof![1 => Just(Value::Null), 4 => s];
        (
            any::<i32>().prop_map(Value::from),
            nullable("[ -~]{0,12}".prop_map(Value::from).boxed()),
            nullable(any::<i64>().prop_map(Value::from).boxed()),
            nullable(prop_oneof![(-1e9_f64..1e9).prop_map(Value::from), "-?[0-9]{1,6}\\.[0-9]{1,4}".prop_map(Value::from)].boxed()),
            nullable(prop_oneof![(-99_999_i64..99_999).prop_map(Value::from), "-?[0-9]{1,8}\\.[0-9]{2}".prop_map(Value::from)].boxed()),
            nullable(prop_oneof![any::<bool>().prop_map(Value::from), prop::sample::select(vec!["t", "false", "1"]).prop_map(Value::from)].boxed()),
            nullable("20[0-9]{2}-0[1-9]-[0-2][1-8][T ][01][0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]0[0-9]:?[0-5][0-9])?".prop_map(Value::from).boxed()),
            nullable("19[0-9]{2}-1[0-2]-[0-2][1-8]".prop_map(Value::from).boxed()),
        )
            .prop_map(|(a, b, c, d, e, f, g, h)| vec![a, b, c, d, e, f, g, h])
    }

    proptest::proptest! {
        #[test]
        fn the_borrowing_path_takes_every_valid_row_and_agrees(values in valid_row()) {
            let table = crate::pipeline::testing::all_types_table();
            let data: Map<String, Value> =
                table.columns.iter().map(|c| c.name.clone()).zip(values).collect();
            let text = String::from_utf8(dms(&table, "insert", Value::Object(data), 9)).expect("utf-8");
            let mut cells = Cells::new();
            let outcome = decode_common(&table, &ColumnKeys::new(&table), text.as_bytes(), &mut cells);
            proptest::prop_assert!(outcome.is_some(), "not taken: {}", text);
            let outcome = outcome.expect("checked");
            proptest::prop_assert_eq!((outcome_label(&outcome), cells), general(&table, &text), "{}", text);
        }
    }

    #[test]
    fn number_text_is_coerced_as_the_general_decoder_coerces_the_parsed_number() {
        let table = crate::pipeline::testing::all_types_table();
        let metadata = r#""metadata":{"timestamp":"2026-11-25T10:00:00Z","record-type":"data","operation":"insert","table-name":"things"}"#;
        let numbers = [
            "0",
            "-0",
            "7",
            "-12",
            "5.0",
            "0.1",
            "1e2",
            "1E-2",
            "2.5e+3",
            "1e400",
            "-1e400",
            "2147483648",
            "-2147483649",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551616",
            "12345678901234567890123",
            "0.30000000000000004",
            "1.7976931348623157e308",
            "4.9e-324",
            "123.456",
            "99999999.99",
            "100000000.00",
        ];
        let mut taken = 0;
        // For `id` the key appears twice and the second wins, on both paths.
        for column in &table.columns {
            for number in numbers {
                let text = format!(
                    r#"{{"data":{{"id":1,"{}":{number}}},{metadata}}}"#,
                    column.name
                );
                let mut cells = Cells::new();
                if let Some(outcome) = decode_common(
                    &table,
                    &ColumnKeys::new(&table),
                    text.as_bytes(),
                    &mut cells,
                ) {
                    taken += 1;
                    assert_eq!(
                        (outcome_label(&outcome), cells),
                        general(&table, &text),
                        "{text}"
                    );
                }
            }
        }
        // Integers into integer columns and numbers into doubles read straight from the text.
        assert!(taken >= 30, "the fast path took only {taken} records");
    }

    #[test]
    fn the_borrowing_path_takes_the_common_records() {
        let table = telemetry_table();
        let text = String::from_utf8(dms(&table, "update", good(3), 5)).expect("utf-8");
        let mut cells = Cells::new();
        let outcome = decode_common(
            &table,
            &ColumnKeys::new(&table),
            text.as_bytes(),
            &mut cells,
        )
        .expect("common record");
        assert_eq!((outcome_label(&outcome), cells), general(&table, &text));
    }

    fn good(id: i32) -> Value {
        json!({"id": id, "vehicle_id": 7, "recorded_at": "2026-11-25 14:00:00", "latitude": 40.7127753,
               "longitude": -74.0059, "speed_kmh": 42.5, "fuel_level_pct": 80, "engine_status": "running"})
    }

    /// Decodes one payload among good ones and returns its malformed record.
    fn only_malformed(payload: Vec<u8>) -> MalformedRecord {
        let table = telemetry_table();
        let decoded = decode_payloads(
            &table,
            &[
                dms(&table, "insert", good(1), 0),
                payload,
                dms(&table, "insert", good(2), 1),
            ],
        );
        assert_eq!(
            decoded.rows.num_rows(),
            2,
            "the good messages around it still decode"
        );
        assert_eq!(decoded.malformed.len(), 1);
        let record = decoded.malformed[0].clone();
        assert_eq!(
            record.position.offset, 1,
            "the malformed record keeps its Kafka position"
        );
        assert!(
            record.reason.starts_with("malformed: "),
            "{}",
            record.reason
        );
        record
    }

    fn with_metadata(metadata: Value, data: Option<Value>) -> Vec<u8> {
        let mut envelope = json!({ "metadata": metadata });
        if let Some(data) = data {
            envelope["data"] = data;
        }
        envelope.to_string().into_bytes()
    }

    fn metadata(operation: &str) -> Value {
        json!({"timestamp": "2026-11-25T14:01:32.123456Z", "record-type": "data", "operation": operation,
               "partition-key-type": "primary-key", "schema-name": "public", "table-name": "vehicle_telemetry"})
    }

    #[test]
    fn data_records_become_typed_rows_with_their_cdc_metadata() {
        let table = telemetry_table();
        let decoded = decode_payloads(
            &table,
            &[
                dms(&table, "load", good(1), 0),
                dms(
                    &table,
                    "update",
                    json!({"id": "2", "latitude": "45.5", "unknown_column": 1}),
                    60,
                ),
            ],
        );
        assert!(decoded.malformed.is_empty(), "{:?}", decoded.malformed);
        let rows = &decoded.rows;
        assert_eq!(ints(rows, "id"), [Some(1), Some(2)]);
        assert_eq!(doubles(rows, "latitude"), [Some(40.7127753), Some(45.5)]);
        assert_eq!(
            doubles(rows, "fuel_level_pct"),
            [Some(80.0), None],
            "missing columns are NULL"
        );
        assert_eq!(
            strings(rows, "_operation"),
            [Some("load".into()), Some("update".into())]
        );
        assert_eq!(
            strings(rows, "_topic"),
            vec![Some("cdc-vehicle_telemetry".to_owned()); 2]
        );
        let source_ts = col(rows, "_source_ts")
            .as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(source_ts.value(1) - source_ts.value(0), 60_000_000);
        assert_eq!(rows.schema(), decoded_schema(&table));
    }

    #[test]
    fn control_records_are_counted_not_rows() {
        let table = telemetry_table();
        let control = json!({"control": {"table-def": {}}, "metadata": {"timestamp": "2026-11-25T14:01:32.123456Z",
            "record-type": "control", "operation": "create-table", "table-name": "vehicle_telemetry"}});
        let decoded = decode_payloads(
            &table,
            &[
                control.to_string().into_bytes(),
                dms(&table, "insert", good(1), 0),
            ],
        );
        assert_eq!(
            (
                decoded.rows.num_rows(),
                decoded.malformed.len(),
                decoded.control_records
            ),
            (1, 0, 1)
        );
    }

    #[test]
    fn a_value_that_cannot_be_coerced_makes_the_record_malformed_never_null() {
        let mut data = good(1);
        data["speed_kmh"] = json!("abc");
        let record = only_malformed(dms(&telemetry_table(), "insert", data, 0));
        assert_eq!(
            record.reason,
            "malformed: column 'speed_kmh': expected double, found \"abc\""
        );
        assert_eq!(record.operation, Some(Operation::Insert));
        assert!(
            record.raw.contains("\"speed_kmh\":\"abc\""),
            "{}",
            record.raw
        );
    }

    #[test]
    fn every_bad_value_of_a_record_is_named() {
        let mut data = good(1);
        data["speed_kmh"] = json!("abc");
        data["vehicle_id"] = json!(1.5);
        let record = only_malformed(dms(&telemetry_table(), "insert", data, 0));
        assert_eq!(
            record.reason,
            "malformed: column 'vehicle_id': expected integer, found 1.5 (not a whole number); \
             column 'speed_kmh': expected double, found \"abc\""
        );
    }

    #[test]
    fn bad_envelopes_are_malformed_with_a_reason_each() {
        let table = telemetry_table();
        let mut huge = good(1);
        huge["engine_status"] = json!("x".repeat(100));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"hello".to_vec(),
                "malformed: not JSON: expected value at line 1 column 1",
            ),
            (
                br#"{"data": {"id": 1}, "metadata": {"#.to_vec(),
                "malformed: truncated JSON: input ends early at line 1 column 33",
            ),
            (
                b"[1, 2]".to_vec(),
                "malformed: JSON is an array, expected an object with 'data' and 'metadata'",
            ),
            (
                json!({"data": good(1)}).to_string().into_bytes(),
                "malformed: no 'metadata' object",
            ),
            (
                with_metadata(metadata("insert"), None),
                "malformed: no 'data' object in a data record",
            ),
            (
                with_metadata(metadata("insert"), Some(json!("x"))),
                "malformed: 'data' is a string, expected an object",
            ),
            (
                with_metadata(metadata("truncate"), Some(good(1))),
                "malformed: unknown operation \"truncate\"",
            ),
            (
                with_metadata(
                    json!({"timestamp": "2026-11-25T14:01:32Z", "operation": "insert", "table-name": "vehicle_telemetry"}),
                    Some(good(1)),
                ),
                "malformed: metadata has no 'record-type'",
            ),
            (
                with_metadata(
                    json!({"timestamp": "2026-11-25T14:01:32Z", "record-type": "log", "operation": "insert"}),
                    Some(good(1)),
                ),
                "malformed: unknown record-type \"log\"",
            ),
            (
                with_metadata(
                    json!({"record-type": "data", "operation": "insert", "table-name": "vehicle_telemetry"}),
                    Some(good(1)),
                ),
                "malformed: metadata has no 'timestamp'",
            ),
            (
                with_metadata(
                    json!({"timestamp": "yesterday", "record-type": "data", "operation": "insert", "table-name": "vehicle_telemetry"}),
                    Some(good(1)),
                ),
                "malformed: metadata timestamp \"yesterday\" is not an ISO 8601 timestamp",
            ),
            (
                with_metadata(
                    json!({"timestamp": "2026-11-25T14:01:32Z", "record-type": "data", "operation": "insert"}),
                    Some(good(1)),
                ),
                "malformed: metadata has no 'table-name'",
            ),
            (
                with_metadata(
                    json!({"timestamp": "2026-11-25T14:01:32Z", "record-type": "data", "operation": "insert", "table-name": "alerts"}),
                    Some(good(1)),
                ),
                "malformed: message for table 'alerts' arrived on topic 'cdc-vehicle_telemetry' of table 'vehicle_telemetry'",
            ),
            (
                with_metadata(metadata("insert"), Some(json!({"vehicle_id": 1}))),
                "malformed: primary key column 'id' is null or missing",
            ),
        ];
        let payloads: Vec<Vec<u8>> = cases.iter().map(|(p, _)| p.clone()).collect();
        let decoded = decode_payloads(&table, &payloads);
        assert_eq!(decoded.rows.num_rows(), 0);
        let reasons: Vec<&str> = decoded
            .malformed
            .iter()
            .map(|m| m.reason.as_str())
            .collect();
        let expected: Vec<&str> = cases.iter().map(|(_, r)| *r).collect();
        assert_eq!(reasons, expected);
        let offsets: Vec<i64> = decoded
            .malformed
            .iter()
            .map(|m| m.position.offset)
            .collect();
        assert_eq!(offsets, (0..cases.len() as i64).collect::<Vec<_>>());
        assert_eq!(decoded.malformed[0].raw, "hello");
    }

    #[test]
    fn empty_and_absent_values_are_malformed() {
        let table = telemetry_table();
        let messages = [
            RawMessage {
                topic: &table.topic,
                partition: 1,
                offset: 10,
                key: Some(b"1"),
                payload: None,
            },
            RawMessage {
                topic: &table.topic,
                partition: 1,
                offset: 11,
                key: None,
                payload: Some(b""),
            },
        ];
        let decoded = decode(&table, &messages);
        let reasons: Vec<&str> = decoded
            .malformed
            .iter()
            .map(|m| m.reason.as_str())
            .collect();
        assert_eq!(
            reasons,
            [
                "malformed: message has no value (a Kafka tombstone)",
                "malformed: message value is empty"
            ]
        );
        assert!(
            decoded
                .malformed
                .iter()
                .all(|m| m.raw.is_empty() && m.position.partition == 1)
        );
    }

    #[test]
    fn invalid_utf8_is_malformed_and_raw_keeps_the_lossy_text() {
        let mut payload = dms(&telemetry_table(), "insert", good(1), 0);
        payload.insert(20, 0xff);
        let record = only_malformed(payload);
        assert_eq!(
            record.reason,
            "malformed: payload is not valid UTF-8 (invalid byte at offset 20)"
        );
        assert!(record.raw.contains('\u{fffd}'), "{}", record.raw);
    }

    #[test]
    fn oversized_payloads_are_quarantined_with_a_truncated_raw() {
        let table = telemetry_table();
        let mut data = good(1);
        data["engine_status"] = json!("y".repeat(200 * 1024));
        let payload = dms(&table, "insert", data, 0);
        let decoded = decode_with_limit(
            &table,
            &[RawMessage {
                topic: &table.topic,
                partition: 0,
                offset: 5,
                key: None,
                payload: Some(&payload),
            }],
            100 * 1024,
        );
        assert_eq!(decoded.malformed.len(), 1);
        let record = &decoded.malformed[0];
        assert_eq!(
            record.reason,
            format!(
                "malformed: payload of {} bytes exceeds the limit of 102400 bytes",
                payload.len()
            )
        );
        assert!(record.raw.len() < MAX_RAW_BYTES + 100);
        assert!(
            record.raw.ends_with(&format!(
                "… [truncated: 65536 of {} bytes kept]",
                payload.len()
            )),
            "{}",
            &record.raw[record.raw.len() - 60..]
        );
    }

    #[test]
    fn a_key_only_delete_decodes_but_a_delete_needs_its_key_and_sane_values() {
        let table = telemetry_table();
        let decoded = decode_payloads(
            &table,
            &[
                dms(&table, "delete", json!({"id": 9}), 0),
                dms(&table, "delete", json!({"latitude": 1.0}), 1),
                dms(&table, "delete", json!({"id": 9, "speed_kmh": "fast"}), 2),
            ],
        );
        assert_eq!(ints(&decoded.rows, "id"), [Some(9)]);
        assert_eq!(
            decoded
                .rows
                .column_by_name("latitude")
                .map(|c| c.null_count()),
            Some(1)
        );
        let reasons: Vec<&str> = decoded
            .malformed
            .iter()
            .map(|m| m.reason.as_str())
            .collect();
        assert_eq!(
            reasons,
            [
                "malformed: primary key column 'id' is null or missing",
                "malformed: column 'speed_kmh': expected double, found \"fast\""
            ]
        );
        assert!(
            decoded
                .malformed
                .iter()
                .all(|m| m.operation == Some(Operation::Delete))
        );
    }

    #[test]
    fn pii_is_masked_in_the_reason_and_raw_of_malformed_records() {
        let mut table = crate::pipeline::testing::table(
            "drivers",
            &[
                ("id", ColumnType::Int),
                ("phone", ColumnType::Int),
                ("name", ColumnType::String),
            ],
        );
        table.transforms.push(transform(
            "tx",
            "phone",
            TransformKind::MaskPii { visible_chars: 4 },
            1,
        ));
        let payload = dms(
            &table,
            "insert",
            json!({"id": 1, "phone": "(555) 123-4567", "name": "Ann"}),
            0,
        );
        let decoded = decode_payloads(&table, std::slice::from_ref(&payload));
        let record = &decoded.malformed[0];
        assert_eq!(
            record.reason,
            "malformed: column 'phone': expected integer, found \"(555****\""
        );
        assert!(!record.raw.contains("123-4567"), "{}", record.raw);
        assert!(
            record.raw.contains("\"phone\":\"(555****\"")
                && record.raw.contains("\"name\":\"Ann\""),
            "{}",
            record.raw
        );

        table.mask_pii_in_quarantine = false;
        let decoded = decode_payloads(&table, &[payload]);
        assert!(decoded.malformed[0].raw.contains("(555) 123-4567"));
    }

    #[test]
    fn nothing_is_lost_rows_plus_malformed_plus_control_is_the_input() {
        let table = telemetry_table();
        let control = json!({"metadata": {"timestamp": "2026-11-25T14:01:32Z", "record-type": "control", "operation": "drop-table"}});
        let payloads = vec![
            dms(&table, "insert", good(1), 0),
            b"{".to_vec(),
            control.to_string().into_bytes(),
            dms(&table, "delete", json!({"id": 1}), 1),
            dms(&table, "update", json!({"id": "x"}), 2),
            Vec::new(),
        ];
        let decoded = decode_payloads(&table, &payloads);
        let total =
            decoded.rows.num_rows() + decoded.malformed.len() + decoded.control_records as usize;
        assert_eq!(total, payloads.len());
        assert_eq!(
            (
                decoded.rows.num_rows(),
                decoded.malformed.len(),
                decoded.control_records
            ),
            (2, 3, 1)
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic_and_are_accounted_for(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20)) {
                let table = telemetry_table();
                let decoded = decode_payloads(&table, &payloads);
                prop_assert_eq!(decoded.rows.num_rows() + decoded.malformed.len() + decoded.control_records as usize, payloads.len());
                prop_assert!(decoded.malformed.iter().all(|m| m.reason.starts_with("malformed: ")));
            }

            #[test]
            fn damaged_messages_are_malformed_never_lost(cut in 0_usize..400, flip in 0_usize..400, byte in any::<u8>()) {
                let table = telemetry_table();
                let mut damaged = dms(&table, "update", good(3), 0);
                if flip < damaged.len() {
                    damaged[flip] = byte;
                }
                damaged.truncate(cut.max(1));
                let decoded = decode_payloads(&table, &[damaged, dms(&table, "insert", good(4), 1)]);
                prop_assert_eq!(decoded.rows.num_rows() + decoded.malformed.len() + decoded.control_records as usize, 2);
                prop_assert!(decoded.rows.num_rows() >= 1);
            }
        }
    }
}
