//! What the demo shows once the pipeline caught up: a data-quality summary per table (from the
//! generator's summaries and the lake), the failed rules, the quarantine reasons, and the SQL
//! for a few current rows and for the SCD2 history of one key.

use serde::Serialize;

use crate::config::spec::{ConfigSpec, TableSpec};
use crate::pipeline::schema::{
    DQ_REASON, EFFECTIVE_FROM, EFFECTIVE_TO, FAILED_RULES, IS_CURRENT, OPERATION,
    quarantine_table_name, transformed_fields,
};

use super::children::{Dqetl, Row};
use super::error::LocalError;
use super::stack::StackDir;
use super::status::{self, LakeTableStatus, last_commit, number, quote_ident, quote_literal, text};
use super::summary::Expectations;

/// One table's data quality.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableQuality {
    pub table: String,
    /// Change events the generator wrote (inserts, updates, deletes).
    pub events: u64,
    /// Inserted and updated versions: what the rules checked.
    pub checked: u64,
    /// Current rows in the lake.
    pub current_rows: u64,
    /// Versions in the data table (current and closed).
    pub loaded_versions: u64,
    pub quarantined: u64,
    /// (checked − quarantined) ÷ checked.
    pub pass_rate: Option<f64>,
}

/// Quarantine rows per failed rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleFailures {
    pub table: String,
    pub rule: String,
    pub rows: u64,
}

/// A quarantine reason and how often it occurs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub table: String,
    pub reason: String,
    pub rows: u64,
}

/// The demo's data-quality summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualitySummary {
    pub tables: Vec<TableQuality>,
    pub failed_rules: Vec<RuleFailures>,
    pub top_reasons: Vec<Reason>,
}

/// Reads the summary from the lake (through `dqetl query --json`) and the generator's runs.
pub fn quality_summary(
    dqetl: &Dqetl,
    dir: &StackDir,
    config: &ConfigSpec,
    expectations: &Expectations,
) -> Result<QualitySummary, LocalError> {
    let lake: Vec<LakeTableStatus> = config
        .source_tables()
        .map(|t| LakeTableStatus {
            table: t.name.clone(),
            data: last_commit(&dir.lake_dir().join(&t.name)),
            quarantine: last_commit(&dir.lake_dir().join(quarantine_table_name(&t.name))),
        })
        .collect();
    let counts = match status::row_count_sql(&lake) {
        Some(sql) => dqetl.query_json(&sql)?,
        None => Vec::new(),
    };
    let tables = lake
        .iter()
        .map(|t| {
            let c = status::counts_of(&t.table, &counts);
            let expected = expectations
                .tables
                .get(&t.table)
                .cloned()
                .unwrap_or_default();
            let checked = expected.written.insert + expected.written.update;
            TableQuality {
                table: t.table.clone(),
                events: expected.written.total(),
                checked,
                current_rows: c.current_rows,
                loaded_versions: c.current_rows + c.history_rows,
                quarantined: c.quarantined_rows,
                pass_rate: (checked > 0)
                    .then(|| checked.saturating_sub(c.quarantined_rows) as f64 / checked as f64),
            }
        })
        .collect();

    let quarantined: Vec<&str> = lake
        .iter()
        .filter(|t| t.quarantine.is_some())
        .map(|t| t.table.as_str())
        .collect();
    let (failed_rules, top_reasons) = if quarantined.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let rules = dqetl.query_json(&failed_rules_sql(&quarantined))?;
        let reasons = dqetl.query_json(&top_reasons_sql(&quarantined, 8))?;
        (
            rules
                .iter()
                .map(|r| RuleFailures {
                    table: text(r, "table_name").unwrap_or_default(),
                    rule: text(r, "rule").unwrap_or_default(),
                    rows: number(r, "row_count"),
                })
                .collect(),
            reasons
                .iter()
                .map(|r| Reason {
                    table: text(r, "table_name").unwrap_or_default(),
                    reason: text(r, "reason").unwrap_or_default(),
                    rows: number(r, "row_count"),
                })
                .collect(),
        )
    };
    Ok(QualitySummary {
        tables,
        failed_rules,
        top_reasons,
    })
}

/// Quarantine rows per (table, failed rule), most frequent first.
pub fn failed_rules_sql(quarantine_of: &[&str]) -> String {
    let parts: Vec<String> = quarantine_of
        .iter()
        .map(|t| {
            format!(
                "SELECT {} AS table_name, unnest({}) AS rule FROM {}",
                quote_literal(t),
                quote_ident(FAILED_RULES),
                quote_ident(&quarantine_table_name(t))
            )
        })
        .collect();
    format!(
        "SELECT table_name, rule, count(*) AS row_count FROM ({}) failed \
         GROUP BY table_name, rule ORDER BY row_count DESC, table_name, rule",
        parts.join(" UNION ALL ")
    )
}

/// The `limit` most frequent `_dq_reason`s over the given tables' quarantine.
pub fn top_reasons_sql(quarantine_of: &[&str], limit: usize) -> String {
    let parts: Vec<String> = quarantine_of
        .iter()
        .map(|t| {
            format!(
                "SELECT {} AS table_name, {} AS reason FROM {}",
                quote_literal(t),
                quote_ident(DQ_REASON),
                quote_ident(&quarantine_table_name(t))
            )
        })
        .collect();
    format!(
        "SELECT table_name, reason, count(*) AS row_count FROM ({}) reasons \
         GROUP BY table_name, reason ORDER BY row_count DESC, table_name, reason LIMIT {limit}",
        parts.join(" UNION ALL ")
    )
}

/// The table the demo shows rows and history of: `vehicles` when configured, else the first
/// source table with a primary key.
pub fn showcase_table(config: &ConfigSpec) -> Option<&TableSpec> {
    config
        .source_tables()
        .find(|t| t.name == "vehicles" && t.primary_key.is_some())
        .or_else(|| config.source_tables().find(|t| t.primary_key.is_some()))
}

/// Lake column names of a table (after renames): the key first, then a `status` column when
/// there is one (it is what updates change), then others, at most `max` in all.
pub fn showcase_columns(table: &TableSpec, max: usize) -> Vec<String> {
    let fields: Vec<String> = transformed_fields(table)
        .iter()
        .map(|f| f.name().clone())
        .collect();
    // The key's lake name: renamed like any column.
    let key_index = table
        .primary_key
        .as_deref()
        .and_then(|pk| table.column_index(pk));
    let mut columns: Vec<String> = key_index
        .and_then(|i| fields.get(i).cloned())
        .into_iter()
        .collect();
    if let Some(status) = fields.iter().find(|f| f.as_str() == "status") {
        columns.push(status.clone());
    }
    for field in &fields {
        if columns.len() >= max {
            break;
        }
        if !columns.contains(field) {
            columns.push(field.clone());
        }
    }
    columns
}

/// A few current rows of the showcase table.
pub fn current_rows_sql(table: &TableSpec, limit: usize) -> String {
    let columns = showcase_columns(table, 6);
    let list: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    format!(
        "SELECT {} FROM {} WHERE {} ORDER BY {} LIMIT {limit}",
        list.join(", "),
        quote_ident(&table.name),
        quote_ident(IS_CURRENT),
        list.first().cloned().unwrap_or_else(|| "1".into())
    )
}

/// The key with the most versions (ties: the smallest key).
pub fn busiest_key_sql(table: &TableSpec) -> Option<String> {
    let key = showcase_columns(table, 1).into_iter().next()?;
    Some(format!(
        "SELECT {k} AS key_value, count(*) AS versions FROM {t} GROUP BY {k} ORDER BY versions DESC, key_value LIMIT 1",
        k = quote_ident(&key),
        t = quote_ident(&table.name)
    ))
}

/// Every version of one key, oldest first, with its validity interval.
pub fn history_sql(table: &TableSpec, key: &serde_json::Value) -> Option<String> {
    let columns = showcase_columns(table, 4);
    let key_column = columns.first()?;
    let literal = match key {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => quote_literal(s),
        _ => return None,
    };
    let mut list: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    for scd in [OPERATION, EFFECTIVE_FROM, EFFECTIVE_TO, IS_CURRENT] {
        list.push(quote_ident(scd));
    }
    Some(format!(
        "SELECT {} FROM {} WHERE {} = {literal} ORDER BY {}",
        list.join(", "),
        quote_ident(&table.name),
        quote_ident(key_column),
        quote_ident(EFFECTIVE_FROM)
    ))
}

/// The key of the first row of a `busiest_key_sql` result.
pub fn key_of(rows: &[Row]) -> Option<serde_json::Value> {
    rows.first()?.get("key_value").cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spec::{ColumnSpec, ColumnType, Scd2Spec, TransformKind, TransformSpec};

    fn vehicles() -> TableSpec {
        let column = |name: &str, column_type| ColumnSpec {
            name: name.into(),
            column_type,
            nullable: true,
            unique: false,
            default: None,
        };
        TableSpec {
            name: "vehicles".into(),
            topic: "cdc-vehicles".into(),
            delta_path: None,
            primary_key: Some("id".into()),
            internal: false,
            columns: vec![
                column("id", ColumnType::Int),
                column("vin", ColumnType::String),
                column("make", ColumnType::String),
                column("model", ColumnType::String),
                column("year", ColumnType::Int),
                column("status", ColumnType::String),
            ],
            rules: Vec::new(),
            transforms: vec![TransformSpec {
                id: "t1".into(),
                column: "make".into(),
                kind: TransformKind::Rename {
                    new_name: "manufacturer".into(),
                },
                order: 1,
            }],
            checks: Vec::new(),
            anomaly_checks: Vec::new(),
            foreign_keys: Vec::new(),
            indexes: Vec::new(),
            scd2: Scd2Spec::default(),
            mask_pii_in_quarantine: true,
        }
    }

    #[test]
    fn the_showcase_leads_with_the_key_and_status_and_uses_lake_names() {
        let table = vehicles();
        assert_eq!(
            showcase_columns(&table, 4),
            ["id", "status", "vin", "manufacturer"]
        );
        let history = history_sql(&table, &serde_json::json!(7)).expect("sql");
        assert_eq!(
            history,
            "SELECT \"id\", \"status\", \"vin\", \"manufacturer\", \"_operation\", \"_effective_from\", \
             \"_effective_to\", \"_is_current\" FROM \"vehicles\" WHERE \"id\" = 7 ORDER BY \"_effective_from\""
        );
        let by_text = history_sql(&table, &serde_json::json!("o'k")).expect("sql");
        assert!(by_text.contains("= 'o''k'"), "{by_text}");
        assert_eq!(history_sql(&table, &serde_json::json!(null)), None);
        assert!(
            current_rows_sql(&table, 5).ends_with("WHERE \"_is_current\" ORDER BY \"id\" LIMIT 5")
        );
    }

    #[test]
    fn quarantine_queries_span_every_given_table() {
        let sql = failed_rules_sql(&["vehicles", "alerts"]);
        assert!(
            sql.contains("unnest(\"_failed_rules\") AS rule FROM \"vehicles_quarantine\""),
            "{sql}"
        );
        assert!(sql.contains("UNION ALL SELECT 'alerts'"), "{sql}");
        let sql = top_reasons_sql(&["alerts"], 3);
        assert!(sql.ends_with("LIMIT 3"), "{sql}");
        assert!(
            sql.contains("\"_dq_reason\" AS reason FROM \"alerts_quarantine\""),
            "{sql}"
        );
    }
}
