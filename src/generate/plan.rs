//! The plan of a run, fixed before the first write: which traffic, every source table as the
//! database holds it, how each column's values are made, and which rules the generator can
//! make fail through the database (and why not, for the others).

use chrono::NaiveDateTime;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::config::fk_order::creation_order;
use crate::config::spec::{ConfigSpec, RuleKind, TableSpec};

use super::error::GenerateError;
use super::shape::{CatalogColumn, ForeignKey, TableShape};
use super::values::{ColumnGen, SampleContext, violation_candidates};
use super::{Mode, vehicle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TrafficMode {
    Vehicle,
    Generic,
}

impl TrafficMode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            TrafficMode::Vehicle => "vehicle",
            TrafficMode::Generic => "generic",
        }
    }
}

pub(crate) struct Plan {
    pub mode: TrafficMode,
    /// The source tables (internal tables excluded), in config order.
    pub tables: Vec<TableShape>,
    /// Per table, per column.
    pub gens: Vec<Vec<ColumnGen>>,
    /// Per table, per rule: Ok when some violation the database accepts exists, else why not.
    pub rule_plans: Vec<Vec<Result<(), String>>>,
    /// Table indexes, every foreign-key parent before its children.
    pub creation_order: Vec<usize>,
    pub notes: Vec<String>,
}

impl Plan {
    /// `catalogs[i]` describes the i-th source table of `spec` as the database holds it.
    pub(crate) fn build(
        spec: &ConfigSpec,
        catalogs: &[Vec<CatalogColumn>],
        requested: Mode,
        seed: u64,
        now: NaiveDateTime,
    ) -> Result<Plan, GenerateError> {
        let sources: Vec<TableSpec> = spec.source_tables().cloned().collect();
        let mode = resolve_mode(&sources, requested)?;
        let index = |name: &str| sources.iter().position(|t| t.name == name);
        let mut tables = Vec::with_capacity(sources.len());
        for (table, catalog) in sources.iter().zip(catalogs) {
            tables.push(TableShape::build(
                table,
                &spec.schema_name,
                catalog,
                &index,
                &sources,
            )?);
        }
        let mut notes = Vec::new();
        if mode == TrafficMode::Vehicle {
            add_implied_links(&mut tables);
            let others: Vec<&str> = tables
                .iter()
                .map(|t| t.name.as_str())
                .filter(|n| !vehicle::TABLES.contains(n))
                .collect();
            if !others.is_empty() {
                notes.push(format!(
                    "vehicle traffic leaves tables {} untouched",
                    others.join(", ")
                ));
            }
        }
        // Validation rejects foreign-key cycles; should one slip through, keep config order.
        let creation_order =
            creation_order(&sources).unwrap_or_else(|_| (0..sources.len()).collect());
        // Planning draws from its own stream so that it never shifts the traffic's choices.
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x05ee_d0f9_1a4c);
        let gens: Vec<Vec<ColumnGen>> = tables
            .iter()
            .map(|t| {
                (0..t.columns.len())
                    .map(|c| ColumnGen::plan(t, c, &mut rng, now))
                    .collect()
            })
            .collect();
        for (t, table) in tables.iter().enumerate() {
            for (c, column_gen) in gens[t].iter().enumerate() {
                if let Some(why) = &column_gen.unsatisfiable {
                    notes.push(format!(
                        "{}.{}: {why}; rows written fail these rules",
                        table.name, table.columns[c].name
                    ));
                }
            }
        }
        let rule_plans = tables
            .iter()
            .enumerate()
            .map(|(t, table)| {
                (0..table.rules.len())
                    .map(|r| rule_plan(table, &tables, r, &gens[t], &mut rng, now))
                    .collect()
            })
            .collect();
        Ok(Plan {
            mode,
            tables,
            gens,
            rule_plans,
            creation_order,
            notes,
        })
    }

    pub(crate) fn table_index(&self, name: &str) -> Option<usize> {
        self.tables.iter().position(|t| t.name == name)
    }

    /// Whether vehicle traffic deliberately makes rule `rule` of `table` fail.
    pub(crate) fn vehicle_targets(&self, table: &str, rule: &str) -> bool {
        let Some(shape) = self.tables.iter().find(|t| t.name == table) else {
            return false;
        };
        let Some(r) = shape.rules.iter().position(|x| x.id == rule) else {
            return false;
        };
        let column = &shape.columns[shape.rule_columns[r]].name;
        vehicle::TARGETED_COLUMNS.contains(&(table, column.as_str()))
    }
}

fn resolve_mode(sources: &[TableSpec], requested: Mode) -> Result<TrafficMode, GenerateError> {
    match requested {
        Mode::Generic => Ok(TrafficMode::Generic),
        Mode::Vehicle => vehicle::fits(sources)
            .map(|()| TrafficMode::Vehicle)
            .map_err(|reason| GenerateError::ModeMismatch { reason }),
        Mode::Auto => {
            let same_tables = sources.len() == vehicle::TABLES.len()
                && sources
                    .iter()
                    .all(|t| vehicle::TABLES.contains(&t.name.as_str()));
            Ok(if same_tables && vehicle::fits(sources).is_ok() {
                TrafficMode::Vehicle
            } else {
                TrafficMode::Generic
            })
        }
    }
}

/// The vehicle use case's references that its config does not declare as foreign keys:
/// the generator still never hard-deletes a vehicle or driver that a row points at.
fn add_implied_links(tables: &mut [TableShape]) {
    for (child, column, parent) in vehicle::IMPLIED_LINKS {
        let (Some(ci), Some(pi)) = (
            tables.iter().position(|t| t.name == *child),
            tables.iter().position(|t| t.name == *parent),
        ) else {
            continue;
        };
        let (Some(col), parent_key) = (tables[ci].column_index(column), tables[pi].key) else {
            continue;
        };
        if !tables[ci].foreign_keys.iter().any(|f| f.column == col) {
            tables[ci].foreign_keys.push(ForeignKey {
                column: col,
                parent: pi,
                parent_column: parent_key,
                declared: false,
            });
        }
    }
}

/// Whether rule `r` of `table` can be made to fail by a write the database accepts.
fn rule_plan(
    table: &TableShape,
    all: &[TableShape],
    r: usize,
    gens: &[ColumnGen],
    rng: &mut SmallRng,
    now: NaiveDateTime,
) -> Result<(), String> {
    let rule = &table.rules[r];
    let c = table.rule_columns[r];
    let col = &table.columns[c];
    let at = format!("{}.{}", table.name, col.name);
    let prefix = "cannot be violated through the database";
    if col.generated {
        return Err(format!("{prefix}: the database assigns {at} (SERIAL key)"));
    }
    let fk = table
        .foreign_keys
        .iter()
        .find(|f| f.declared && f.column == c);
    let mut ctx = SampleContext { rng, seq: 0, now };
    let valid = gens[c]
        .valid(table, c, &mut ctx, &|_| true)
        .or_else(|| gens[c].fallback(table, c, &mut ctx, &|_| true))
        .unwrap_or(super::row::Value::Null);
    let mut candidates = violation_candidates(table, r, &valid, ctx.rng);
    if fk.is_some() {
        candidates.retain(|v| v.is_null());
    }
    if !candidates.is_empty() {
        return Ok(());
    }
    Err(match (&rule.kind, fk) {
        (_, Some(fk)) => {
            let parent = &all[fk.parent];
            format!(
                "{prefix}: {at} is a foreign key to {}.{}, so only existing parent values are accepted{}",
                parent.name,
                parent.columns[fk.parent_column].name,
                if col.not_null {
                    ", and it is NOT NULL"
                } else {
                    ""
                }
            )
        }
        (RuleKind::NotNull, _) => format!("{prefix}: {at} is NOT NULL in the source DDL"),
        (RuleKind::Unique, _) => format!(
            "a value fails `unique` only when another key holds it in the same micro-batch, which depends on \
             batching, so the generator never repeats one; and NULL {}",
            if rule.allow_null {
                "passes the rule (allow_null)".to_string()
            } else {
                format!("is refused: {at} is NOT NULL")
            }
        ),
        _ => format!("{prefix}: no value breaking it fits {at} in the source DDL"),
    })
}
