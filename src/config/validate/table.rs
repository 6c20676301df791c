//! One entry of `tables`: name, topic, schema, primary key, keys and indexes, SCD2 and quarantine
//! options; rules, transforms and checks are delegated to their own modules.

use std::collections::{HashMap, HashSet};

use crate::config::column_type::{ColumnTypeError, TYPE_NAMES};
use crate::config::diagnostics::did_you_mean;
use crate::config::model::{ColumnConfig, TableConfig};
use crate::config::spec::{
    ColumnSpec, ColumnType, ForeignKeySpec, HardDeletes, IndexSpec, Scd2Spec, TableSpec,
};
use crate::config::validate::checker::{Checker, ColumnSet, MAX_IDENTIFIER_LEN, is_identifier};
use crate::config::validate::{checks, rules, transforms};
use crate::pipeline::schema::{self as lake, METRICS_TABLE};

/// Columns dqetl adds to lake tables; a source column with one of these names would collide.
const RESERVED_COLUMNS: &[&str] = &[
    lake::OPERATION,
    lake::SOURCE_TS,
    lake::TOPIC,
    lake::PARTITION,
    lake::OFFSET,
    lake::EFFECTIVE_FROM,
    lake::EFFECTIVE_TO,
    lake::IS_CURRENT,
    lake::INGESTED_AT,
    lake::FAILED_RULES,
    lake::DQ_REASON,
    lake::RAW,
    lake::QUARANTINED_AT,
];

pub(crate) fn is_reserved_column(name: &str) -> bool {
    RESERVED_COLUMNS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
}

/// Kafka's topic name rule: ASCII letters, digits, `.`, `_` and `-`, at most 249 characters.
fn is_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
}

/// What other tables need to know about a table (foreign key targets), gathered before the
/// per-table checks run.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableFacts {
    pub name: Option<String>,
    pub internal: bool,
    /// None when the table has no usable schema.
    pub columns: Option<ColumnSet>,
    /// Columns a foreign key may reference: the primary key, `unique: true` columns and
    /// single-column unique indexes.
    pub unique_columns: HashSet<String>,
}

impl TableFacts {
    pub fn gather(t: &TableConfig) -> Self {
        let columns = t
            .schema
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|schema| ColumnSet {
                columns: schema
                    .iter()
                    .filter_map(|col| {
                        let name = col.name.clone()?;
                        let ty = col
                            .column_type
                            .as_deref()
                            .and_then(|ty| ty.parse::<ColumnType>().ok());
                        Some((name, ty))
                    })
                    .collect(),
            });
        let mut unique_columns: HashSet<String> = t.primary_key.iter().cloned().collect();
        for col in t.schema.iter().flatten() {
            if col.unique == Some(true)
                && let Some(name) = &col.name
            {
                unique_columns.insert(name.clone());
            }
        }
        for index in t.indexes.iter().flatten() {
            if index.unique == Some(true)
                && let Some([only]) = index.columns.as_deref()
            {
                unique_columns.insert(only.clone());
            }
        }
        TableFacts {
            name: t.name.clone(),
            internal: t.internal.unwrap_or(false),
            columns,
            unique_columns,
        }
    }
}

/// The resolved topic of a table: the configured one or `cdc-<name>`.
pub(crate) fn topic_of(t: &TableConfig) -> Option<String> {
    t.topic
        .clone()
        .or_else(|| t.name.as_ref().map(|n| format!("cdc-{n}")))
}

pub(super) fn table(
    c: &mut Checker,
    i: usize,
    t: &TableConfig,
    all: &[TableFacts],
) -> Option<TableSpec> {
    let path = format!("tables[{i}]");
    let facts = &all[i];
    let internal = facts.internal;
    let name = table_name(c, &path, t, all);
    let table = name.clone().unwrap_or_else(|| "<unnamed>".into());

    let topic = topic_of(t).unwrap_or_default();
    if name.is_some() && !is_topic_name(&topic) {
        c.error(
            &format!("{path}.topic"),
            format!("invalid topic name {topic:?}: Kafka allows letters, digits, '.', '_' and '-' (at most 249)"),
        );
    }
    if let Some(delta_path) = &t.delta_path
        && !delta_path.starts_with("s3://")
    {
        c.warn(
            &format!("{path}.delta_path"),
            "delta_path is only read on the aws target, as an s3:// URL; this one is ignored",
        );
    }

    let columns = schema(c, &path, t, internal);
    let known = facts.columns.as_ref();
    let primary_key = primary_key(c, &path, t, internal, known);

    let rules = match &t.dq_rules {
        Some(list) => rules::rules(c, &path, &table, known, list),
        None => {
            if !internal {
                c.warn(
                    &format!("{path}.dq_rules"),
                    "No DQ rules defined for this table",
                );
            }
            Some(Vec::new())
        }
    };
    let transforms = match &t.transforms {
        Some(list) => transforms::transforms(c, &path, &table, known, list),
        None => {
            if !internal {
                c.warn(
                    &format!("{path}.transforms"),
                    "No transforms defined for this table",
                );
            }
            Some(Vec::new())
        }
    };
    let checks = match &t.deequ_checks {
        Some(list) => checks::deequ_checks(c, &path, &table, known, list),
        None => {
            if !internal {
                c.warn(
                    &format!("{path}.deequ_checks"),
                    "No Deequ checks defined for this table",
                );
            }
            Some(Vec::new())
        }
    };
    let anomaly_checks = match (&t.anomaly_checks, &checks) {
        (Some(list), Some(computed)) => {
            checks::anomaly_checks(c, &path, &table, known, list, computed)
        }
        (Some(list), None) => checks::anomaly_checks(c, &path, &table, known, list, &[]),
        (None, _) => Some(Vec::new()),
    };
    if internal {
        for (key, present) in [
            (
                "dq_rules",
                t.dq_rules.as_ref().is_some_and(|l| !l.is_empty()),
            ),
            (
                "transforms",
                t.transforms.as_ref().is_some_and(|l| !l.is_empty()),
            ),
            (
                "deequ_checks",
                t.deequ_checks.as_ref().is_some_and(|l| !l.is_empty()),
            ),
            (
                "anomaly_checks",
                t.anomaly_checks.as_ref().is_some_and(|l| !l.is_empty()),
            ),
        ] {
            if present {
                c.warn(
                    &format!("{path}.{key}"),
                    format!("{key} of an internal table are ignored (it has no CDC source)"),
                );
            }
        }
        if name.as_deref() == Some(METRICS_TABLE) {
            metrics_declaration(c, &path, t);
        } else if name.is_some() {
            c.warn(
                &format!("{path}.internal"),
                format!(
                    "the only internal table dqetl writes is `{METRICS_TABLE}`; this one is ignored"
                ),
            );
        }
    }
    let foreign_keys = foreign_keys(c, &path, &table, t, known, all);
    let indexes = indexes(c, &path, &table, t, known);
    let scd2 = scd2(c, &path, &table, t, known);
    let mask_pii_in_quarantine = t
        .quarantine
        .as_ref()
        .and_then(|q| q.mask_pii)
        .unwrap_or(true);

    Some(TableSpec {
        name: name?,
        topic,
        delta_path: t.delta_path.clone(),
        primary_key: primary_key?,
        internal,
        columns: columns?,
        rules: rules?,
        transforms: transforms?,
        checks: checks?,
        anomaly_checks: anomaly_checks?,
        foreign_keys: foreign_keys?,
        indexes: indexes?,
        scd2: scd2?,
        mask_pii_in_quarantine,
    })
}

fn table_name(c: &mut Checker, path: &str, t: &TableConfig, all: &[TableFacts]) -> Option<String> {
    let name_path = format!("{path}.name");
    let Some(name) = t.name.as_deref().filter(|n| !n.trim().is_empty()) else {
        c.error(&name_path, "Table name is required");
        return None;
    };
    let mut ok = true;
    if !is_identifier(name) {
        c.error(&name_path, format!("invalid table name {name:?}: expected letters, digits and _, not starting with a digit"));
        ok = false;
    } else if name.len() > MAX_IDENTIFIER_LEN {
        c.error(
            &name_path,
            format!(
                "table name is longer than {MAX_IDENTIFIER_LEN} characters (PostgreSQL's limit)"
            ),
        );
        ok = false;
    }
    let internal = t.internal.unwrap_or(false);
    if !internal && name == METRICS_TABLE {
        c.error_hint(
            &name_path,
            format!("`{METRICS_TABLE}` is the name of dqetl's metrics table"),
            Some("declare it with `internal: true`, or rename the source table".into()),
        );
        ok = false;
    }
    if !internal
        && let Some(base) = name.strip_suffix("_quarantine")
        && all
            .iter()
            .any(|f| !f.internal && f.name.as_deref() == Some(base))
    {
        c.error(
            &name_path,
            format!("`{name}` is the lake name of the quarantine table of `{base}`"),
        );
        ok = false;
    }
    ok.then(|| name.to_string())
}

fn schema(c: &mut Checker, path: &str, t: &TableConfig, internal: bool) -> Option<Vec<ColumnSpec>> {
    let schema_path = format!("{path}.schema");
    let columns = match &t.schema {
        None => {
            c.error(&schema_path, "Schema is required");
            return None;
        }
        Some(columns) if columns.is_empty() => {
            c.error(
                &schema_path,
                "Schema is required: the list of columns is empty",
            );
            return None;
        }
        Some(columns) => columns,
    };
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut specs = Vec::new();
    let mut ok = true;
    for (k, col) in columns.iter().enumerate() {
        let col_path = format!("{schema_path}[{k}]");
        match column(c, &col_path, col, internal, &mut seen) {
            Some(spec) => specs.push(spec),
            None => ok = false,
        }
    }
    ok.then_some(specs)
}

fn column(
    c: &mut Checker,
    path: &str,
    col: &ColumnConfig,
    internal: bool,
    seen: &mut HashMap<String, String>,
) -> Option<ColumnSpec> {
    let name_path = format!("{path}.name");
    let name = match col.name.as_deref() {
        None | Some("") => {
            c.error(&name_path, "column `name` is required");
            None
        }
        Some(name) if !is_identifier(name) => {
            c.error(&name_path, format!("invalid column name {name:?}: expected letters, digits and _, not starting with a digit"));
            None
        }
        Some(name) if name.len() > MAX_IDENTIFIER_LEN => {
            c.error(&name_path, format!("column name is longer than {MAX_IDENTIFIER_LEN} characters (PostgreSQL's limit)"));
            None
        }
        Some(name) if !internal && is_reserved_column(name) => {
            c.error(
                &name_path,
                format!("column name `{name}` is reserved: dqetl adds it to the lake tables"),
            );
            None
        }
        Some(name) => match seen.insert(name.to_ascii_lowercase(), name.to_string()) {
            Some(previous) if previous == name => {
                c.error(&name_path, format!("Duplicate column name: {name}"));
                None
            }
            Some(previous) => {
                c.error(
                    &name_path,
                    format!("column `{name}` differs from `{previous}` only in case; Delta column names are case-insensitive"),
                );
                None
            }
            None => Some(name.to_string()),
        },
    };
    let label = name
        .clone()
        .or_else(|| col.name.clone())
        .unwrap_or_else(|| "<unnamed>".into());
    let type_path = format!("{path}.type");
    let column_type = match col.column_type.as_deref() {
        None | Some("") => {
            c.error_hint(
                &type_path,
                format!("Column '{label}' is missing a type"),
                Some(format!("one of {}, decimal(p,s)", TYPE_NAMES.join(", "))),
            );
            None
        }
        Some(text) => match text.parse::<ColumnType>() {
            Ok(ty) => Some(ty),
            Err(e @ ColumnTypeError::Unknown(_)) => {
                let hint = did_you_mean(text, TYPE_NAMES.iter().copied())
                    .or_else(|| Some(format!("one of {}, decimal(p,s)", TYPE_NAMES.join(", "))));
                c.error_hint(
                    &type_path,
                    format!("Invalid schema type '{text}' for column '{label}': {e}"),
                    hint,
                );
                None
            }
            Err(e) => {
                c.error(
                    &type_path,
                    format!("Invalid schema type '{text}' for column '{label}': {e}"),
                );
                None
            }
        },
    };
    if let (Some(default), Some(ty)) = (&col.default, column_type)
        && let Err(expected) = transforms::literal_fits(default, ty)
    {
        let is_now = default
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("NOW()"));
        if !(is_now && matches!(ty, ColumnType::Timestamp | ColumnType::Date)) {
            c.error(
                &format!("{path}.default"),
                format!(
                    "default must be {expected} for a {ty} column, found {}",
                    super::checker::describe(default)
                ),
            );
            return None;
        }
    }
    Some(ColumnSpec {
        name: name?,
        column_type: column_type?,
        nullable: col.nullable.unwrap_or(true),
        unique: col.unique.unwrap_or(false),
        default: col.default.clone(),
    })
}

/// Some(None) for an internal table, Some(Some(pk)) for a valid key, None (reported) otherwise.
fn primary_key(
    c: &mut Checker,
    path: &str,
    t: &TableConfig,
    internal: bool,
    columns: Option<&ColumnSet>,
) -> Option<Option<String>> {
    let pk_path = format!("{path}.primary_key");
    if internal {
        return Some(None);
    }
    let Some(pk) = t.primary_key.as_deref().filter(|pk| !pk.is_empty()) else {
        c.error(&pk_path, "Primary key is required for non-internal tables");
        return None;
    };
    let columns = columns?;
    if columns.get(pk).is_none() {
        c.error_hint(
            &pk_path,
            format!("Primary key '{pk}' not found in schema"),
            did_you_mean(pk, columns.names()),
        );
        return None;
    }
    Some(Some(pk.to_string()))
}

fn foreign_keys(
    c: &mut Checker,
    path: &str,
    table: &str,
    t: &TableConfig,
    own: Option<&ColumnSet>,
    all: &[TableFacts],
) -> Option<Vec<ForeignKeySpec>> {
    let mut specs = Vec::new();
    let mut ok = true;
    for (j, fk) in t.foreign_keys.iter().flatten().enumerate() {
        let fk_path = format!("{path}.foreign_keys[{j}]");
        let column = c.column_ref(
            &format!("{fk_path}.column"),
            fk.column.as_deref(),
            table,
            own,
        );
        let target = foreign_key_target(c, &fk_path, fk.references.as_ref(), all);
        match (column, target) {
            (Some(column), Some((target, target_column, target_type))) => {
                if let (Some(from), Some(to)) = (column.column_type, target_type)
                    && !key_types_compatible(from, to)
                {
                    c.error(
                        &format!("{fk_path}.column"),
                        format!("'{}' is {from} but {target}.{target_column} is {to}; a foreign key needs comparable types", column.name),
                    );
                    ok = false;
                    continue;
                }
                specs.push(ForeignKeySpec {
                    column: column.name,
                    ref_table: target,
                    ref_column: target_column,
                });
            }
            _ => ok = false,
        }
    }
    ok.then_some(specs)
}

/// PostgreSQL compares integer widths with each other; other types must match.
fn key_types_compatible(a: ColumnType, b: ColumnType) -> bool {
    let integer = |t: ColumnType| matches!(t, ColumnType::Int | ColumnType::Long);
    let text = |t: ColumnType| t.is_text();
    a == b || (integer(a) && integer(b)) || (text(a) && text(b))
}

fn foreign_key_target(
    c: &mut Checker,
    fk_path: &str,
    references: Option<&crate::config::model::ReferenceConfig>,
    all: &[TableFacts],
) -> Option<(String, String, Option<ColumnType>)> {
    let ref_path = format!("{fk_path}.references");
    let Some(references) = references else {
        c.error(
            &ref_path,
            "a foreign key needs `references: {table, column}`",
        );
        return None;
    };
    let table_path = format!("{ref_path}.table");
    let Some(target) = references.table.as_deref() else {
        c.error(&table_path, "`table` is required");
        return None;
    };
    let sources = all.iter().filter(|f| !f.internal);
    let Some(facts) = all
        .iter()
        .find(|f| !f.internal && f.name.as_deref() == Some(target))
    else {
        let hint = did_you_mean(target, sources.filter_map(|f| f.name.as_deref()));
        c.error_hint(
            &table_path,
            format!("foreign key target table '{target}' is not a source table of this config"),
            hint,
        );
        return None;
    };
    let column_path = format!("{ref_path}.column");
    let Some(column) = references.column.as_deref() else {
        c.error(&column_path, "`column` is required");
        return None;
    };
    let columns = facts.columns.as_ref()?;
    let Some(column_type) = columns.get(column) else {
        c.error_hint(
            &column_path,
            format!("column '{column}' not in schema of table '{target}'"),
            did_you_mean(column, columns.names()),
        );
        return None;
    };
    if !facts.unique_columns.contains(column) {
        c.error_hint(
            &column_path,
            format!("foreign key target {target}.{column} is neither the primary key nor unique"),
            Some(
                "PostgreSQL only references primary keys, `unique: true` columns or unique indexes"
                    .into(),
            ),
        );
        return None;
    }
    Some((target.to_string(), column.to_string(), column_type))
}

fn indexes(
    c: &mut Checker,
    path: &str,
    table: &str,
    t: &TableConfig,
    columns: Option<&ColumnSet>,
) -> Option<Vec<IndexSpec>> {
    let mut specs = Vec::new();
    let mut seen = HashSet::new();
    let mut ok = true;
    for (j, index) in t.indexes.iter().flatten().enumerate() {
        let index_path = format!("{path}.indexes[{j}]");
        let names = match index.columns.as_deref() {
            None | Some([]) => {
                c.error(
                    &format!("{index_path}.columns"),
                    "an index needs a non-empty list of `columns`",
                );
                ok = false;
                continue;
            }
            Some(names) => names,
        };
        let mut valid = true;
        for (k, name) in names.iter().enumerate() {
            valid &= c
                .column_ref(
                    &format!("{index_path}.columns[{k}]"),
                    Some(name),
                    table,
                    columns,
                )
                .is_some();
        }
        if !seen.insert(names.to_vec()) {
            c.error(
                &format!("{index_path}.columns"),
                format!("Duplicate index on ({})", names.join(", ")),
            );
            valid = false;
        }
        if valid {
            specs.push(IndexSpec {
                columns: names.to_vec(),
                unique: index.unique.unwrap_or(false),
            });
        } else {
            ok = false;
        }
    }
    ok.then_some(specs)
}

fn scd2(
    c: &mut Checker,
    path: &str,
    table: &str,
    t: &TableConfig,
    columns: Option<&ColumnSet>,
) -> Option<Scd2Spec> {
    let Some(scd2) = &t.scd2 else {
        return Some(Scd2Spec::default());
    };
    let scd2_path = format!("{path}.scd2");
    let sequence_by = match scd2.sequence_by.as_deref() {
        None => Some(None),
        Some(col) => c
            .column_ref(
                &format!("{scd2_path}.sequence_by"),
                Some(col),
                table,
                columns,
            )
            .map(|r| Some(r.name)),
    };
    let hard_deletes = match scd2.hard_deletes.as_deref() {
        None | Some("close") => Some(HardDeletes::Close),
        Some("tombstone") => Some(HardDeletes::Tombstone),
        Some(other) => {
            c.error_hint(
                &format!("{scd2_path}.hard_deletes"),
                format!("hard_deletes must be `close` or `tombstone`, found {other:?}"),
                did_you_mean(other, ["close", "tombstone"]),
            );
            None
        }
    };
    Some(Scd2Spec {
        sequence_by: sequence_by?,
        hard_deletes: hard_deletes?,
        track_intermediate: scd2.track_intermediate.unwrap_or(false),
    })
}

/// The declared `dq_metrics` schema is informational: dqetl writes its own fixed schema, so
/// differences are warnings (the original declared `batch_id integer` and `passed string` but
/// wrote long and boolean).
fn metrics_declaration(c: &mut Checker, path: &str, t: &TableConfig) {
    let actual = lake::metrics_schema();
    for (k, col) in t.schema.iter().flatten().enumerate() {
        let (Some(name), Some(declared)) = (col.name.as_deref(), col.column_type.as_deref()) else {
            continue;
        };
        let col_path = format!("{path}.schema[{k}]");
        let Ok(field) = actual.field_with_name(name) else {
            let written: Vec<&str> = actual.fields().iter().map(|f| f.name().as_str()).collect();
            c.warn_hint(
                &format!("{col_path}.name"),
                format!("`{METRICS_TABLE}` has no column `{name}`; the declaration is ignored"),
                Some(format!("dqetl writes {}", written.join(", "))),
            );
            continue;
        };
        let Ok(declared_type) = declared.parse::<ColumnType>() else {
            continue;
        };
        if declared_type.arrow_type() != *field.data_type() {
            c.warn(
                &format!("{col_path}.type"),
                format!(
                    "`{METRICS_TABLE}.{name}` is declared {declared_type} but dqetl writes it as {} (the declaration is ignored)",
                    lake_type_name(field.data_type())
                ),
            );
        }
    }
}

fn lake_type_name(ty: &deltalake::arrow::datatypes::DataType) -> String {
    use deltalake::arrow::datatypes::DataType;
    match ty {
        DataType::Int64 => "long".into(),
        DataType::Int32 => "integer".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Utf8 => "string".into(),
        DataType::Float64 => "double".into(),
        DataType::Timestamp(..) => "timestamp".into(),
        other => other.to_string(),
    }
}
