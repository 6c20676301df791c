//! The common DMS data record read without building a `serde_json::Value` tree: metadata and row
//! values are borrowed from the payload and only the configured columns are kept. Building a
//! `Value` (a map and a `String` per field) dominated decoding.
//!
//! This path only ever accepts: anything unusual (nested values, non-string or escaped metadata,
//! a repeated `data` or `metadata`, any JSON error) makes [`parse`] return None and the
//! general decoder handles the message, so every malformed-record reason comes from one place.

use std::borrow::Cow;

use smallvec::SmallVec;

use super::scan::{Scalar, Scanner};
use crate::config::spec::TableSpec;

/// The metadata fields the decoder reads, each a string without escapes.
#[derive(Debug, Default)]
pub struct Metadata<'a> {
    pub record_type: Option<&'a str>,
    pub operation: Option<&'a str>,
    pub table_name: Option<&'a str>,
    pub timestamp: Option<&'a str>,
}

/// The values of one row, one per configured column (null when absent): on the stack for up to
/// 32 columns.
pub type Values<'a> = SmallVec<[Scalar<'a>; 32]>;

/// A record as far as this path reads it; its values are in the buffer [`parse`] was given.
#[derive(Debug)]
pub struct Record<'a> {
    pub metadata: Metadata<'a>,
    /// Whether the record has `data` (then `values[i]` is configured column `i`).
    pub has_data: bool,
}

/// Parses `text` as a DMS record of `table`, or None when the general decoder must look at it.
/// The row's values go to `values` (a buffer the caller keeps: moving a row's values around was
/// a visible cost).
pub fn parse<'a>(table: &TableSpec, text: &'a str, values: &mut Values<'a>) -> Option<Record<'a>> {
    let mut scanner = Scanner::new(text);
    scanner.eat(b'{')?;
    let mut metadata = None;
    let mut has_data = false;
    let mut first = true;
    while let Some(key) = scanner.next_key(&mut first)? {
        match &*key {
            "metadata" if metadata.is_none() => metadata = Some(read_metadata(&mut scanner)?),
            "data" if !has_data => {
                read_row(table, &mut scanner, values)?;
                has_data = true;
            }
            // A repeated field: the general decoder's last-one-wins rules apply.
            "metadata" | "data" => return None,
            _ => scanner.skip_value()?,
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

/// Only an object of plain strings for the fields read.
fn read_metadata<'a>(scanner: &mut Scanner<'a>) -> Option<Metadata<'a>> {
    scanner.eat(b'{')?;
    let mut metadata = Metadata::default();
    let mut first = true;
    while let Some(key) = scanner.next_key(&mut first)? {
        let field = match &*key {
            "record-type" => &mut metadata.record_type,
            "operation" => &mut metadata.operation,
            "table-name" => &mut metadata.table_name,
            "timestamp" => &mut metadata.timestamp,
            _ => {
                scanner.skip_value()?;
                continue;
            }
        };
        if field.is_some() {
            return None;
        }
        match scanner.scalar()? {
            Scalar::Text(Cow::Borrowed(text)) => *field = Some(text),
            _ => return None,
        }
    }
    Some(metadata)
}

/// The configured columns of `data`; a nested value in one of them is left to the general
/// decoder, which renders it.
fn read_row<'a>(
    table: &TableSpec,
    scanner: &mut Scanner<'a>,
    values: &mut Values<'a>,
) -> Option<()> {
    scanner.eat(b'{')?;
    values.clear();
    values.resize(table.columns.len(), Scalar::Null);
    let columns = &table.columns;
    // DMS and local capture write the columns in table order: try the next one first.
    let mut next = 0;
    let mut first = true;
    while let Some(key) = scanner.next_key(&mut first)? {
        let index = match columns.get(next) {
            Some(column) if column.name == *key => Some(next),
            _ => table.column_index(&key),
        };
        match index {
            // A repeated key overwrites, as in a parsed `Value` map.
            Some(i) => {
                values[i] = scanner.scalar()?;
                next = i + 1;
            }
            None => scanner.skip_value()?,
        }
    }
    Some(())
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

    #[test]
    fn reads_configured_columns_and_metadata_borrowed() {
        let text = r#"{"data":{"id":7,"name":"a\"b","extra":[1,2],"speed":null},
            "metadata":{"timestamp":"2026-11-25T10:00:00Z","record-type":"data",
            "operation":"insert","table-name":"t","transaction-id":12}}"#;
        let mut values = Values::new();
        let record = parse(&table(), text, &mut values).expect("common record");
        assert_eq!(record.metadata.operation, Some("insert"));
        assert_eq!(record.metadata.table_name, Some("t"));
        assert!(record.has_data);
        assert_eq!(values[0], Scalar::Number("7"));
        assert_eq!(values[1], Scalar::Text(Cow::Owned("a\"b".into())));
        assert_eq!(values[2], Scalar::Null);
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
        ] {
            assert!(parse(&t, text, &mut Values::new()).is_none(), "{text}");
        }
    }

    #[test]
    fn matches_escaped_column_names_by_their_text() {
        let text = r#"{"data":{"i\u0064":3},"metadata":{}}"#;
        let mut values = Values::new();
        assert!(parse(&table(), text, &mut values).is_some());
        assert_eq!(values[0], Scalar::Number("3"));
    }
}
