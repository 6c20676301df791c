//! The common DMS data record read without building a `serde_json::Value` tree: metadata and row
//! values are borrowed from the payload and only the configured columns are kept. Building a
//! `Value` (a map and a `String` per field) dominated decoding.
//!
//! This path only ever accepts: anything unusual (nested values, non-string metadata, escaped
//! keys, a repeated `data` or `metadata`, any JSON error) makes [`parse`] return None and the
//! general decoder handles the message, so every malformed-record reason comes from one place.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Number;
use smallvec::SmallVec;

use super::coerce::JsonRef;
use crate::config::spec::TableSpec;

/// A non-null scalar value of `data`, borrowed unless the JSON string had escapes.
#[derive(Debug)]
pub enum Scalar<'a> {
    Bool(bool),
    Number(Number),
    Text(Cow<'a, str>),
}

impl Scalar<'_> {
    /// The value as the coercion takes it.
    pub fn as_json(&self) -> JsonRef<'_> {
        match self {
            Scalar::Bool(b) => JsonRef::Bool(*b),
            Scalar::Number(n) => JsonRef::Number(n),
            Scalar::Text(s) => JsonRef::Text(s),
        }
    }
}

/// The metadata fields the decoder reads, each a string without escapes.
#[derive(Debug, Default)]
pub struct Metadata<'a> {
    pub record_type: Option<&'a str>,
    pub operation: Option<&'a str>,
    pub table_name: Option<&'a str>,
    pub timestamp: Option<&'a str>,
}

/// The values of one row, one per configured column: on the stack for up to 32 columns.
pub type Values<'a> = SmallVec<[Option<Scalar<'a>>; 32]>;

/// A record as far as this path reads it; its values are in the buffer [`parse`] was given.
#[derive(Debug)]
pub struct Record<'a> {
    pub metadata: Metadata<'a>,
    /// Whether the record has `data` (then `values[i]` is configured column `i`; None: null or
    /// absent).
    pub has_data: bool,
}

/// Parses `text` as a DMS record of `table`, or None when the general decoder must look at it.
/// The row's values go to `values` (a buffer the caller keeps: moving a row's values around was
/// a visible cost).
pub fn parse<'a>(table: &TableSpec, text: &'a str, values: &mut Values<'a>) -> Option<Record<'a>> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let record = RecordSeed { table, values }
        .deserialize(&mut deserializer)
        .ok()?;
    deserializer.end().ok()?;
    Some(record)
}

struct RecordSeed<'t, 'v, 'de> {
    table: &'t TableSpec,
    values: &'v mut Values<'de>,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_, '_, 'de> {
    type Value = Record<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_, '_, 'de> {
    type Value = Record<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a DMS record object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut metadata = None;
        let mut has_data = false;
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "metadata" if metadata.is_none() => {
                    metadata = Some(map.next_value_seed(MetadataSeed)?);
                }
                "data" if !has_data => {
                    map.next_value_seed(RowSeed {
                        table: self.table,
                        values: &mut *self.values,
                    })?;
                    has_data = true;
                }
                // A repeated field: the general decoder's last-one-wins rules apply.
                "metadata" | "data" => return Err(de::Error::custom("repeated field")),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Record {
            metadata: metadata.ok_or_else(|| de::Error::custom("no metadata"))?,
            has_data,
        })
    }
}

/// Only an object: a derived struct would also take a JSON array positionally.
struct MetadataSeed;

impl<'de> DeserializeSeed<'de> for MetadataSeed {
    type Value = Metadata<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed {
    type Value = Metadata<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a 'metadata' object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut metadata = Metadata::default();
        while let Some(key) = map.next_key::<&'de str>()? {
            let field = match key {
                "record-type" => &mut metadata.record_type,
                "operation" => &mut metadata.operation,
                "table-name" => &mut metadata.table_name,
                "timestamp" => &mut metadata.timestamp,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if field.is_some() {
                return Err(de::Error::custom("repeated metadata field"));
            }
            *field = Some(map.next_value()?);
        }
        Ok(metadata)
    }
}

struct RowSeed<'t, 'v, 'de> {
    table: &'t TableSpec,
    values: &'v mut Values<'de>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a 'data' object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let values = self.values;
        values.clear();
        values.resize_with(self.table.columns.len(), || None);
        let columns = &self.table.columns;
        // DMS and local capture write the columns in table order: try the next one first.
        let mut next = 0;
        while let Some(key) = map.next_key::<&'de str>()? {
            let index = match columns.get(next) {
                Some(column) if column.name == key => Some(next),
                _ => self.table.column_index(key),
            };
            if let Some(i) = index {
                next = i + 1;
            }
            match index {
                // A repeated key overwrites, as in a parsed `Value` map.
                Some(i) => values[i] = map.next_value::<Nullable>()?.0,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A scalar or null; arrays and objects are refused (the general decoder renders them).
struct Nullable<'a>(Option<Scalar<'a>>);

impl<'de> Deserialize<'de> for Nullable<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Nullable<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON scalar")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Nullable(None))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Nullable(Some(Scalar::Bool(v))))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Nullable(Some(Scalar::Number(v.into()))))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Nullable(Some(Scalar::Number(v.into()))))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Number::from_f64(v)
            .map(|n| Nullable(Some(Scalar::Number(n))))
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Nullable(Some(Scalar::Text(Cow::Borrowed(v)))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Nullable(Some(Scalar::Text(Cow::Owned(v.to_owned())))))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Nullable(Some(Scalar::Text(Cow::Owned(v)))))
    }
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
        assert!(matches!(&values[0], Some(Scalar::Number(n)) if n.as_i64() == Some(7)));
        assert!(matches!(&values[1], Some(Scalar::Text(Cow::Owned(s))) if s == "a\"b"));
        assert!(values[2].is_none());
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
            r#"{"data":{"i\u0064":1},"metadata":{}}"#,
            r#"{"data":{"id":1},"metadata":["data","insert","t","2026-11-25"]}"#,
            r#"{"data":{"id":1},"metadata":{"operation":"insert","operation":"update"}}"#,
        ] {
            assert!(parse(&t, text, &mut Values::new()).is_none(), "{text}");
        }
    }
}
