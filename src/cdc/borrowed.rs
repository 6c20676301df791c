//! The common DMS data record read without building a `serde_json::Value` tree: metadata and text
//! values are borrowed from the payload, and only the configured columns are kept, each coerced
//! to its column's type as it is read. Building a `Value` (a map and a `String` per field)
//! dominated decoding.
//!
//! This path only ever accepts: anything unusual (nested values, non-string or escaped metadata,
//! a repeated `data` or `metadata`, a value that does not coerce, any JSON error) makes [`parse`]
//! return None and the general decoder handles the message, so every malformed-record reason
//! comes from one place.

use std::borrow::Cow;

use smallvec::SmallVec;

use super::coerce::{Cell, JsonRef, coerce_number, coerce_number_into, coerce_ref};
use super::scan::{Scalar, Scanner, ends_plain_run, key_pattern};
use crate::config::spec::{ColumnType, TableSpec};

/// The metadata fields the decoder reads, each a string without escapes.
#[derive(Debug, Default)]
pub struct Metadata<'a> {
    pub record_type: Option<&'a str>,
    pub operation: Option<&'a str>,
    pub table_name: Option<&'a str>,
    pub timestamp: Option<&'a str>,
}

/// The cells of one row, one per configured column: on the stack for tables of up to 32 columns.
pub type Cells<'a> = SmallVec<[Option<Cell<'a>>; 32]>;

/// The keys of the configured columns whose names are spelled in JSON exactly as they read (no
/// quote, backslash or control character), as `"name":`. Those keys are matched in place,
/// without being read as strings first.
#[derive(Debug, Clone)]
pub struct ColumnKeys {
    patterns: Vec<Option<Box<[u8]>>>,
    /// The primary key's position among the columns.
    pub primary_key: Option<usize>,
}

impl ColumnKeys {
    pub fn new(table: &TableSpec) -> ColumnKeys {
        let plain = |name: &str| !name.bytes().any(ends_plain_run);
        ColumnKeys {
            patterns: table
                .columns
                .iter()
                .map(|c| plain(&c.name).then(|| key_pattern(&c.name)))
                .collect(),
            primary_key: table
                .primary_key
                .as_ref()
                .and_then(|key| table.column_index(key)),
        }
    }
}

/// A record as far as this path reads it; its values are in the buffer [`parse`] was given.
#[derive(Debug)]
pub struct Record<'a> {
    pub metadata: Metadata<'a>,
    /// Whether the record has `data` (then `cells[i]` is configured column `i`).
    pub has_data: bool,
}

/// Parses `text` as a DMS record of `table`, or None when the general decoder must look at it
/// (which includes text that is not UTF-8).
/// The row's values, coerced to their columns' types, go to `cells` (a buffer the caller keeps:
/// moving a row's values around was a visible cost). A value that does not coerce is left to the
/// general decoder too, which names it.
pub fn parse<'a>(
    table: &TableSpec,
    keys: &ColumnKeys,
    text: &'a [u8],
    cells: &mut Cells<'a>,
) -> Option<Record<'a>> {
    let mut scanner = Scanner::new(text);
    scanner.eat(b'{')?;
    let mut metadata = None;
    let mut has_data = false;
    let mut first = true;
    let mut next = 0;
    loop {
        match next_in_order(&mut scanner, &mut first, &ENVELOPE_ORDER, |p| p, next)? {
            Member::End => break,
            Member::Known(DATA) if !has_data => {
                read_row(table, keys, &mut scanner, cells)?;
                has_data = true;
                next = DATA + 1;
            }
            Member::Known(METADATA) if metadata.is_none() => {
                metadata = Some(read_metadata(&mut scanner)?);
                next = METADATA + 1;
            }
            // A repeated field: the general decoder's last-one-wins rules apply.
            Member::Known(_) => return None,
            Member::Other => scanner.skip_value()?,
        }
    }
    if !scanner.at_end() {
        return None;
    }
    Some(Record {
        metadata: metadata?,
        has_data,
    })
}

/// The envelope's fields in the order DMS and local capture write them, as key patterns.
const ENVELOPE_ORDER: [&[u8]; 2] = [b"\"data\":", b"\"metadata\":"];
const DATA: usize = 0;
const METADATA: usize = 1;

/// The metadata fields in the order DMS and local capture write them, as key patterns (see
/// [`key_pattern`]), with the field each one fills (None: skipped).
const METADATA_ORDER: [(&[u8], Option<MetadataField>); 7] = [
    (b"\"timestamp\":", Some(MetadataField::Timestamp)),
    (b"\"record-type\":", Some(MetadataField::RecordType)),
    (b"\"operation\":", Some(MetadataField::Operation)),
    (b"\"partition-key-type\":", None),
    (b"\"schema-name\":", None),
    (b"\"table-name\":", Some(MetadataField::TableName)),
    (b"\"transaction-id\":", None),
];

/// The name in a key pattern.
fn pattern_name(pattern: &[u8]) -> &[u8] {
    &pattern[1..pattern.len() - 2]
}

#[derive(Debug, Clone, Copy)]
enum MetadataField {
    RecordType,
    Operation,
    TableName,
    Timestamp,
}

/// Only an object of plain strings for the fields read.
fn read_metadata<'a>(scanner: &mut Scanner<'a>) -> Option<Metadata<'a>> {
    scanner.eat(b'{')?;
    let mut metadata = Metadata::default();
    let mut next = 0;
    let mut first = true;
    loop {
        let field = match next_in_order(scanner, &mut first, &METADATA_ORDER, |(p, _)| p, next)? {
            Member::End => return Some(metadata),
            Member::Other => None,
            Member::Known(p) => {
                next = p + 1;
                METADATA_ORDER[p].1
            }
        };
        let Some(field) = field else {
            // These are strings and numbers: read in place, without the general skip's call.
            if scanner.scalar().is_none() {
                scanner.skip_value()?;
            }
            continue;
        };
        let slot = match field {
            MetadataField::RecordType => &mut metadata.record_type,
            MetadataField::Operation => &mut metadata.operation,
            MetadataField::TableName => &mut metadata.table_name,
            MetadataField::Timestamp => &mut metadata.timestamp,
        };
        if slot.is_some() {
            return None;
        }
        match scanner.scalar()? {
            Scalar::Text(Cow::Borrowed(text)) => *slot = Some(text),
            _ => return None,
        }
    }
}

/// The configured columns of `data`, coerced; a nested value in one of them is left to the
/// general decoder, which renders it.
fn read_row<'a>(
    table: &TableSpec,
    keys: &ColumnKeys,
    scanner: &mut Scanner<'a>,
    cells: &mut Cells<'a>,
) -> Option<()> {
    scanner.eat(b'{')?;
    let columns = &table.columns;
    cells.clear();
    cells.extend(std::iter::repeat_with(|| None).take(columns.len()));
    let mut next = 0;
    let mut first = true;
    loop {
        let expected = keys
            .patterns
            .get(next)
            .and_then(Option::as_deref)
            .map(|pattern| (next, pattern));
        match next_member(scanner, &mut first, expected, |key| table.column_index(key))? {
            Member::End => return Some(()),
            Member::Other => scanner.skip_value()?,
            // A repeated key overwrites, as in a parsed `Value` map.
            Member::Known(i) => {
                let column_type = columns[i].column_type;
                match scanner.scalar()? {
                    Scalar::Number(number) => {
                        coerce_number_into(&number, column_type, &mut cells[i])?
                    }
                    value => cells[i] = cell(value, column_type)?,
                }
                next = i + 1;
            }
        }
    }
}

/// The next key of an object, as a position in a list of known names.
enum Member {
    Known(usize),
    /// A key not in the list.
    Other,
    /// The object's `}`.
    End,
}

/// Reads the next key of an object (its `:` consumed). DMS and local capture write keys in a
/// fixed order, so the key expected next (its position and its pattern) is compared in place
/// first; any other key is read and looked up with `position`.
fn next_member(
    scanner: &mut Scanner<'_>,
    first: &mut bool,
    expected: Option<(usize, &[u8])>,
    position: impl FnOnce(&str) -> Option<usize>,
) -> Option<Member> {
    if let Some((at, pattern)) = expected
        && scanner.next_key_is(first, pattern)
    {
        return Some(Member::Known(at));
    }
    Some(match scanner.next_key(first)? {
        Some(key) => position(&key).map_or(Member::Other, Member::Known),
        None => Member::End,
    })
}

/// [`next_member`] for an object whose keys are written in the order of `order` (the key pattern
/// of each entry given by `pattern`), `next` being the position expected next.
fn next_in_order<T>(
    scanner: &mut Scanner<'_>,
    first: &mut bool,
    order: &[T],
    pattern: impl Fn(&T) -> &[u8],
    next: usize,
) -> Option<Member> {
    let expected = order.get(next).map(|entry| (next, pattern(entry)));
    let position = |key: &str| {
        order
            .iter()
            .position(|entry| pattern_name(pattern(entry)) == key.as_bytes())
    };
    next_member(scanner, first, expected, position)
}

/// A scalar coerced to a column's type: `Some(None)` for null, None when it does not coerce.
fn cell(value: Scalar<'_>, column_type: ColumnType) -> Option<Option<Cell<'_>>> {
    Some(match value {
        Scalar::Null => None,
        // Text into a text column: the borrowed string itself, no copy.
        Scalar::Text(text) if matches!(column_type, ColumnType::String | ColumnType::Text) => {
            Some(Cell::Text(text))
        }
        Scalar::Text(text) => Some(
            coerce_ref(JsonRef::Text(&text), column_type)
                .ok()?
                .into_owned(),
        ),
        Scalar::Bool(b) => Some(coerce_ref(JsonRef::Bool(b), column_type).ok()?.into_owned()),
        Scalar::Number(number) => Some(coerce_number(&number, column_type)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spec::ColumnType;
    use crate::pipeline::testing;

    fn table() -> TableSpec {
        testing::table(
            "t",
            &[
                ("id", ColumnType::Int),
                ("name", ColumnType::String),
                ("speed", ColumnType::Double),
            ],
        )
    }

    fn read<'a>(table: &TableSpec, text: &'a str) -> Option<(Record<'a>, Cells<'a>)> {
        let mut cells = Cells::new();
        let record = parse(table, &ColumnKeys::new(table), text.as_bytes(), &mut cells)?;
        Some((record, cells))
    }

    #[test]
    fn reads_configured_columns_coerced_and_metadata_borrowed() {
        let text = r#"{"data":{"id":7,"name":"a\"b","extra":[1,2],"speed":null},
            "metadata":{"timestamp":"2026-11-25T10:00:00Z","record-type":"data",
            "operation":"insert","table-name":"t","transaction-id":12}}"#;
        let (record, cells) = read(&table(), text).expect("common record");
        assert_eq!(record.metadata.operation, Some("insert"));
        assert_eq!(record.metadata.table_name, Some("t"));
        assert!(record.has_data);
        assert_eq!(cells[0], Some(Cell::Int(7)));
        assert_eq!(cells[1], Some(Cell::Text(Cow::Owned("a\"b".into()))));
        assert_eq!(cells[2], None);
    }

    #[test]
    fn finds_columns_in_any_order_and_spacing() {
        let t = table();
        for text in [
            r#"{"data":{"speed":2.5,"name":"n","id":1},"metadata":{}}"#,
            r#"{"data": { "id" : 1 , "ids":9, "name" :"n","speed":2.5 },"metadata":{}}"#,
            r#"{"data":{"i":0,"id":1,"name":"x","name":"n","speed":"2.5"},"metadata":{}}"#,
        ] {
            let (_, cells) = read(&t, text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(
                cells.as_slice(),
                [
                    Some(Cell::Int(1)),
                    Some(Cell::Text(Cow::Borrowed("n"))),
                    Some(Cell::Double(2.5))
                ],
                "{text}"
            );
        }
    }

    #[test]
    fn reads_metadata_in_any_order() {
        let t = table();
        for metadata in [
            r#"{"timestamp":"ts","record-type":"data","operation":"update","partition-key-type":"primary-key","schema-name":"public","table-name":"t","transaction-id":7}"#,
            r#"{ "table-name" : "t", "extra": {"a": [1]}, "operation":"update","timestamp":"ts","record-type":"data"}"#,
            r#"{"record-type":"data","timestamp":"ts","schema-name":"s","operation":"update","table-name":"t"}"#,
        ] {
            let text = format!(r#"{{"data":{{"id":1}},"metadata":{metadata}}}"#);
            let (record, _) = read(&t, &text).unwrap_or_else(|| panic!("{text}"));
            let m = record.metadata;
            assert_eq!(
                (m.timestamp, m.record_type, m.operation, m.table_name),
                (Some("ts"), Some("data"), Some("update"), Some("t")),
                "{metadata}"
            );
        }
        let repeated = r#"{"data":{"id":1},"metadata":{"timestamp":"a","record-type":"data","timestamp":"b"}}"#;
        assert!(read(&t, repeated).is_none());
    }

    #[test]
    fn matches_names_that_need_escapes_by_their_text() {
        let t = testing::table(
            "t",
            &[("we\"ird", ColumnType::Int), ("id", ColumnType::Int)],
        );
        let text = r#"{"data":{"we\"ird":3,"id":4},"metadata":{}}"#;
        let (_, cells) = read(&t, text).expect("common record");
        assert_eq!(cells.as_slice(), [Some(Cell::Int(3)), Some(Cell::Int(4))]);
    }

    #[test]
    fn leaves_unusual_records_to_the_general_decoder() {
        let t = table();
        for text in [
            r#"{"data":{"id":{"nested":1}},"metadata":{"record-type":"data"}}"#,
            r#"{"data":{"id":1},"metadata":{"record-type":5}}"#,
            r#"{"data":{"id":1},"data":{"id":2},"metadata":{}}"#,
            r#"{"data":{"id":1}}"#,
            r#"{"data":{"id":1},"metadata":{}} trailing"#,
            r#"[1,2]"#,
            r#"{"data":{"id":1},"metadata":{"operation":"ins\u0065rt"}}"#,
            r#"{"data":{"id":1},"metadata":["data","insert","t","2026-11-25"]}"#,
            r#"{"data":{"id":1},"metadata":{"operation":"insert","operation":"update"}}"#,
            // A value that does not coerce: the general decoder names it.
            r#"{"data":{"id":"abc"},"metadata":{}}"#,
            r#"{"data":{"id":1.5},"metadata":{}}"#,
            r#"{"data":{"id" 1},"metadata":{}}"#,
            r#"{"data":{"id":1,,"name":"n"},"metadata":{}}"#,
            r#"{"data":{"id":1"name":"n"},"metadata":{}}"#,
        ] {
            assert!(read(&t, text).is_none(), "{text}");
        }
    }

    #[test]
    fn matches_escaped_column_names_by_their_text() {
        let text = r#"{"data":{"i\u0064":3},"metadata":{}}"#;
        let (_, cells) = read(&table(), text).expect("common record");
        assert_eq!(cells[0], Some(Cell::Int(3)));
    }
}
