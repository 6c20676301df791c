//! Validation: the whole config is checked, every problem collected with its file position, and a
//! typed [`ConfigSpec`] built only when there is no error.
//!
//! It covers the original validator's checks (same wording where it had one) and what the
//! original missed: rule, transform and metric parameters, column references everywhere, foreign
//! key targets, identifiers, intervals, unknown keys.

mod checker;
mod checks;
mod rules;
mod settings;
mod table;
mod transforms;
mod unknown_keys;

use std::collections::HashMap;

use crate::config::diagnostics::Diagnostic;
use crate::config::fk_order::creation_order;
use crate::config::load::LoadedConfig;
use crate::config::spec::{ConfigSpec, TableSpec};

pub use checks::{ANOMALY_STRATEGIES, METRICS};
pub use rules::RULE_TYPES;
pub use settings::{
    DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_RECORDS, DEFAULT_PARTITIONS, DEFAULT_SCHEMA_NAME,
    DEFAULT_TRIGGER_INTERVAL, PLACEHOLDER_BOOTSTRAP_SERVERS, librdkafka_accepts, parse_interval,
};
pub use transforms::TRANSFORM_TYPES;

use checker::Checker;
use table::{TableFacts, topic_of};

/// The outcome of [`validate`]: every error and warning, and the typed config when valid.
#[derive(Debug, Clone)]
pub struct ValidationReport {
    pub file: String,
    /// In file order.
    pub errors: Vec<Diagnostic>,
    /// In file order.
    pub warnings: Vec<Diagnostic>,
    /// Some exactly when there are no errors.
    pub spec: Option<ConfigSpec>,
}

impl ValidationReport {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks a loaded config as a whole; never stops at the first problem.
pub fn validate(loaded: &LoadedConfig) -> ValidationReport {
    let mut c = Checker::new(loaded);
    unknown_keys::check(&mut c);
    let config = &loaded.config;
    let settings = settings::settings(&mut c, config.settings.as_ref());
    let kafka = settings::kafka(&mut c, config.kafka.as_ref());
    let schema_name = settings::schema_name(&mut c, config.source_database.as_ref());
    let tables = match &config.tables {
        None => {
            c.error("tables", "Missing required 'tables' section");
            None
        }
        Some(tables) => tables_of(&mut c, tables),
    };

    // Findings under a value of the wrong shape are consequences of that error, not news.
    let within_set_aside = |d: &Diagnostic| {
        loaded.set_aside.iter().any(|p| {
            d.path == *p
                || d.path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    };
    let mut errors: Vec<Diagnostic> = loaded.errors.clone();
    errors.extend(c.errors.into_iter().filter(|d| !within_set_aside(d)));
    let mut warnings: Vec<Diagnostic> = c
        .warnings
        .into_iter()
        .filter(|d| !within_set_aside(d))
        .collect();
    let by_position = |d: &Diagnostic| (d.line, d.column);
    errors.sort_by_key(by_position);
    warnings.sort_by_key(by_position);
    let spec = match (settings, kafka, schema_name, tables) {
        (Some(settings), Some(kafka), Some(schema_name), Some(tables)) if errors.is_empty() => {
            Some(ConfigSpec {
                settings,
                kafka,
                schema_name,
                tables,
            })
        }
        _ => None,
    };
    ValidationReport {
        file: loaded.file.clone(),
        errors,
        warnings,
        spec,
    }
}

fn tables_of(
    c: &mut Checker,
    tables: &[crate::config::model::TableConfig],
) -> Option<Vec<TableSpec>> {
    if tables.iter().all(|t| t.internal.unwrap_or(false)) {
        c.error(
            "tables",
            "no source tables: every table is internal or the list is empty",
        );
    }
    let facts: Vec<TableFacts> = tables.iter().map(TableFacts::gather).collect();
    duplicates(c, tables);
    let mut specs = Vec::new();
    let mut ok = true;
    for (i, t) in tables.iter().enumerate() {
        match table::table(c, i, t, &facts) {
            Some(spec) => specs.push(spec),
            None => ok = false,
        }
    }
    if ok {
        foreign_key_cycles(c, &specs);
    }
    ok.then_some(specs)
}

/// Table names and topics (defaulted ones too) must be unique.
fn duplicates(c: &mut Checker, tables: &[crate::config::model::TableConfig]) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut topics: HashMap<String, usize> = HashMap::new();
    for (i, t) in tables.iter().enumerate() {
        if let Some(name) = t.name.as_deref()
            && let Some(first) = names.insert(name, i)
        {
            c.error_hint(
                &format!("tables[{i}].name"),
                format!("Duplicate table name: {name}"),
                Some(format!("also the name of tables[{first}]")),
            );
        }
        if t.internal.unwrap_or(false) {
            continue;
        }
        if let Some(topic) = topic_of(t)
            && let Some(first) = topics.insert(topic.clone(), i)
        {
            let path = if t.topic.is_some() {
                format!("tables[{i}].topic")
            } else {
                format!("tables[{i}].name")
            };
            c.error_hint(
                &path,
                format!("Duplicate topic: {topic}"),
                Some(format!(
                    "tables[{first}] already uses it (a table without `topic` uses cdc-<name>)"
                )),
            );
        }
    }
}

/// Source tables are created in foreign-key order, which a cycle makes impossible.
fn foreign_key_cycles(c: &mut Checker, tables: &[TableSpec]) {
    let Err(stuck) = creation_order(tables) else {
        return;
    };
    let names: Vec<&str> = stuck.iter().map(|&i| tables[i].name.as_str()).collect();
    for &i in &stuck {
        let table = &tables[i];
        let Some(fk) = table
            .foreign_keys
            .iter()
            .position(|fk| names.contains(&fk.ref_table.as_str()))
        else {
            continue;
        };
        let path = format!(
            "tables[{}].foreign_keys[{fk}]",
            source_index(c, &table.name)
        );
        c.error(
            &path,
            format!(
                "foreign keys form a cycle among {}; the tables cannot be created in order",
                names.join(", ")
            ),
        );
        return;
    }
}

/// The position of a table in the file.
fn source_index(c: &Checker, name: &str) -> usize {
    c.loaded
        .config
        .tables
        .iter()
        .flatten()
        .position(|t| t.name.as_deref() == Some(name))
        .unwrap_or(0)
}
