//! The run's summary: what was written, and what the lake must hold once the processor has
//! caught up, in numbers that do not depend on how events fall into micro-batches.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::spec::Severity;

use super::ledger::{Ledger, Operation};
use super::plan::{Plan, TrafficMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The requested number of events was written.
    Budget,
    /// Ctrl-C (or the caller) asked to stop.
    Interrupted,
    /// A write failed; see the error printed after the summary.
    Error,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OperationCounts {
    pub insert: u64,
    pub update: u64,
    pub delete: u64,
}

/// The source table after the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceExpectation {
    /// Rows the table held before the run; the generator never touches them.
    pub preexisting_rows: u64,
    /// Rows the table holds now: pre-existing + inserted − deleted.
    pub rows: u64,
    /// Keys this run inserted and did not delete.
    pub live_keys: u64,
    /// Keys this run hard-deleted.
    pub deleted_keys: u64,
}

/// What the lake must hold for the rows this run wrote, once the processor has caught up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LakeExpectation {
    /// Keys with a current row: not deleted, and at least one version passed every error rule.
    /// Exact whatever the batching.
    pub current_rows: u64,
    /// Quarantine rows: inserted or updated versions failing at least one error rule. Exact.
    pub quarantined_rows: u64,
    pub quarantined_inserts: u64,
    pub quarantined_updates: u64,
    /// History rows (current and closed) are only bounded: versions of one key that land in
    /// one micro-batch collapse into one, and a key inserted and deleted inside one batch
    /// leaves none. `min` is `current_rows`; `max` counts every loaded version (plus one
    /// tombstone per deleted key when the table keeps tombstones).
    pub versions_min: u64,
    pub versions_max: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableSummary {
    pub table: String,
    /// Rows written per operation (seed included).
    pub written: OperationCounts,
    pub source: SourceExpectation,
    pub lake: LakeExpectation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleSummary {
    pub table: String,
    pub rule: String,
    pub kind: &'static str,
    pub column: String,
    pub severity: &'static str,
    /// Written versions (inserts and updates) failing the rule.
    pub failures: u64,
    /// Quarantine rows listing the rule: failing versions that also fail an error rule
    /// (for an error rule, all of its failures). A row failing several rules counts once per rule.
    pub quarantined: u64,
    /// Why the generator cannot make the rule fail through the source database, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_exercised: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub mode: &'static str,
    pub seed: u64,
    pub bad_ratio: f64,
    /// Traffic writes after the seed (what `--rate` and `--duration` count).
    pub events: u64,
    /// Writes of the initial seed.
    pub seed_writes: u64,
    pub stopped: StopReason,
    pub elapsed_seconds: f64,
    pub tables: Vec<TableSummary>,
    pub rules: Vec<RuleSummary>,
    pub notes: Vec<String>,
}

/// Facts about the run that the ledger does not hold.
pub(crate) struct RunFacts {
    pub seed: u64,
    pub bad_ratio: f64,
    pub events: u64,
    pub seed_writes: u64,
    pub stopped: StopReason,
    pub elapsed_seconds: f64,
}

impl Summary {
    /// Derives every expectation from the ledger: the same ledger always gives the same summary.
    pub(crate) fn build(ledger: &Ledger, plan: &Plan, run: RunFacts) -> Summary {
        let mut tables = Vec::new();
        let mut rules = Vec::new();
        for (t, table) in ledger.tables().iter().enumerate() {
            let shape = &plan.tables[t];
            let mut written = OperationCounts::default();
            let (mut live, mut deleted, mut current, mut loaded_versions) = (0, 0, 0, 0);
            let (mut q_inserts, mut q_updates) = (0, 0);
            let mut failures = vec![0u64; table.rules.len()];
            let mut quarantined_by_rule = vec![0u64; table.rules.len()];
            for history in table.histories() {
                if history.deleted() {
                    deleted += 1;
                } else {
                    live += 1;
                }
                if history.current_in_lake() {
                    current += 1;
                }
                for event in &history.events {
                    match event.operation {
                        Operation::Insert => written.insert += 1,
                        Operation::Update => written.update += 1,
                        Operation::Delete => written.delete += 1,
                    }
                    if event.operation == Operation::Delete {
                        continue;
                    }
                    if event.quarantined {
                        match event.operation {
                            Operation::Insert => q_inserts += 1,
                            _ => q_updates += 1,
                        }
                    } else {
                        loaded_versions += 1;
                    }
                    for &r in &event.failed_rules {
                        let r = usize::from(r);
                        failures[r] += 1;
                        if event.quarantined {
                            quarantined_by_rule[r] += 1;
                        }
                    }
                }
            }
            let tombstones = if shape.tombstone_deletes { deleted } else { 0 };
            tables.push(TableSummary {
                table: table.name.clone(),
                source: SourceExpectation {
                    preexisting_rows: table.preexisting_rows,
                    rows: table.preexisting_rows + live,
                    live_keys: live,
                    deleted_keys: deleted,
                },
                lake: LakeExpectation {
                    current_rows: current,
                    quarantined_rows: q_inserts + q_updates,
                    quarantined_inserts: q_inserts,
                    quarantined_updates: q_updates,
                    versions_min: current,
                    versions_max: loaded_versions + tombstones,
                },
                written,
            });
            for (r, rule) in table.rules.iter().enumerate() {
                let not_exercised = match (&plan.rule_plans[t][r], failures[r]) {
                    (Err(why), _) => Some(why.clone()),
                    (Ok(()), 0)
                        if plan.mode == TrafficMode::Vehicle
                            && !plan.vehicle_targets(&table.name, &rule.id) =>
                    {
                        Some("not targeted by the vehicle traffic".to_string())
                    }
                    _ => None,
                };
                rules.push(RuleSummary {
                    table: table.name.clone(),
                    rule: rule.id.clone(),
                    kind: shape.rule_kind(r),
                    column: rule.column.clone(),
                    severity: match rule.severity {
                        Severity::Error => "error",
                        Severity::Warning => "warning",
                    },
                    failures: failures[r],
                    quarantined: quarantined_by_rule[r],
                    not_exercised,
                });
            }
        }
        Summary {
            mode: plan.mode.name(),
            seed: run.seed,
            bad_ratio: run.bad_ratio,
            events: run.events,
            seed_writes: run.seed_writes,
            stopped: run.stopped,
            elapsed_seconds: run.elapsed_seconds,
            tables,
            rules,
            notes: plan.notes.clone(),
        }
    }

    pub fn table(&self, name: &str) -> Option<&TableSummary> {
        self.tables.iter().find(|t| t.table == name)
    }

    pub fn rule(&self, table: &str, rule: &str) -> Option<&RuleSummary> {
        self.rules
            .iter()
            .find(|r| r.table == table && r.rule == rule)
    }

    /// The summary for a terminal.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let stopped = match self.stopped {
            StopReason::Budget => "all events written",
            StopReason::Interrupted => "interrupted",
            StopReason::Error => "stopped by an error",
        };
        let _ = writeln!(
            out,
            "{} traffic, seed {}, bad ratio {}: {} seed writes + {} events in {:.1} s ({stopped})",
            self.mode,
            self.seed,
            self.bad_ratio,
            self.seed_writes,
            self.events,
            self.elapsed_seconds
        );
        let width = self
            .tables
            .iter()
            .map(|t| t.table.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(
            out,
            "\n{:<width$}  {:>7} {:>7} {:>7}  {:>9} {:>7} {:>7}  {:>12} {:>11} {:>11}",
            "table",
            "insert",
            "update",
            "delete",
            "src rows",
            "live",
            "deleted",
            "lake current",
            "quarantined",
            "versions"
        );
        for t in &self.tables {
            let _ = writeln!(
                out,
                "{:<width$}  {:>7} {:>7} {:>7}  {:>9} {:>7} {:>7}  {:>12} {:>11} {:>11}",
                t.table,
                t.written.insert,
                t.written.update,
                t.written.delete,
                t.source.rows,
                t.source.live_keys,
                t.source.deleted_keys,
                t.lake.current_rows,
                t.lake.quarantined_rows,
                format!("{}..{}", t.lake.versions_min, t.lake.versions_max),
            );
        }
        if !self.rules.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<12} {:<width$} {:<16} {:<8} {:>8} {:>11}",
                "rule", "table", "column", "severity", "failures", "quarantined"
            );
            for r in &self.rules {
                let _ = writeln!(
                    out,
                    "{:<12} {:<width$} {:<16} {:<8} {:>8} {:>11}",
                    r.rule, r.table, r.column, r.severity, r.failures, r.quarantined
                );
                if let Some(why) = &r.not_exercised {
                    let _ = writeln!(out, "{:<12} not exercised: {why}", "");
                }
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\nnotes:");
            for note in &self.notes {
                let _ = writeln!(out, "  - {note}");
            }
        }
        out
    }
}
