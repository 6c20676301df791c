//! Compilation of a validated config into the artifacts other systems read: PostgreSQL DDL for
//! the source tables, DMS table mappings, and the lake catalog (table locations and column types).
//! Output is deterministic: the same config always gives byte-identical files.

mod catalog;
mod ddl;
mod dms;

pub use catalog::{CatalogError, catalog, lake_types};
pub use ddl::{ddl, quote_ident};
pub use dms::{dms_mappings, mapping_rule_name};

/// The file names `dqetl compile` writes.
pub const DDL_FILE: &str = "create_tables.sql";
pub const DMS_FILE: &str = "dms_table_mappings.json";
pub const CATALOG_FILE: &str = "catalog.json";

/// JSON as the original wrote it: 2-space indent, keys in insertion order, trailing newline.
pub fn to_pretty_json(value: &serde_json::Value) -> String {
    // Serializing a serde_json::Value to a String cannot fail (all keys are strings).
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}
