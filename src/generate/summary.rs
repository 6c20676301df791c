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
    /// Times the connection to the database was lost and made again during the run; the
    /// counts above are exact all the same.
    pub connection_losses: u64,
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
    pub connection_losses: u64,
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
            connection_losses: run.connection_losses,
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
        if self.connection_losses > 0 {
            let _ = writeln!(
                out,
                "the connection to the database was lost {} time(s) and made again; every count below is exact",
                self.connection_losses
            );
        }
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
        let _ = writeln!(
            out,
            "(lake current and quarantined are exact once the processor has caught up; versions are bounds, \
             as versions of one key inside one micro-batch collapse)"
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spec::{ColumnType, HardDeletes, RuleKind};
    use crate::generate::Mode;
    use crate::generate::check::tests::rule;
    use crate::generate::ledger::{LedgerEvent, RuleRef, TableLedger};
    use crate::generate::row::Key;
    use crate::generate::shape::tests::{catalog_for, column, config, table};

    fn event(operation: Operation, failed_rules: Vec<u16>, quarantined: bool) -> LedgerEvent {
        LedgerEvent {
            operation,
            failed_rules,
            quarantined,
        }
    }

    /// A table with an error rule (0) and a warning rule (1), and a ledger of four keys:
    /// 1: valid insert, quarantined update        → current (its insert stays current)
    /// 2: insert failing both rules, delete       → deleted, never loaded
    /// 3: quarantined insert, valid update        → current (from the update)
    /// 4: valid insert, warned update, valid update, delete → deleted
    fn scenario(hard_deletes: HardDeletes) -> Summary {
        let mut t = table(
            "t",
            vec![
                column("id", ColumnType::Int, false),
                column("v", ColumnType::Double, true),
                column("w", ColumnType::String, true),
            ],
        );
        let mut warning = rule(
            "warn",
            "w",
            RuleKind::AllowedValues {
                values: vec!["a".into()],
            },
        );
        warning.severity = Severity::Warning;
        t.rules = vec![
            rule(
                "err",
                "v",
                RuleKind::Range {
                    min: Some(0.0),
                    max: Some(10.0),
                },
            ),
            warning,
        ];
        t.scd2.hard_deletes = hard_deletes;
        let spec = config(vec![t.clone()]);
        let plan = Plan::build(
            &spec,
            &[catalog_for(&t)],
            Mode::Generic,
            1,
            chrono::NaiveDateTime::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let rules = t
            .rules
            .iter()
            .map(|r| RuleRef {
                id: r.id.clone(),
                column: r.column.clone(),
                severity: r.severity,
            })
            .collect();
        let mut ledger = Ledger::new(vec![TableLedger::new("t".into(), rules, 5)]);
        use Operation::{Delete, Insert, Update};
        for (key, events) in [
            (
                1,
                vec![event(Insert, vec![], false), event(Update, vec![0], true)],
            ),
            (
                2,
                vec![
                    event(Insert, vec![0, 1], true),
                    event(Delete, vec![], false),
                ],
            ),
            (
                3,
                vec![event(Insert, vec![0], true), event(Update, vec![], false)],
            ),
            (
                4,
                vec![
                    event(Insert, vec![], false),
                    event(Update, vec![1], false),
                    event(Update, vec![], false),
                    event(Delete, vec![], false),
                ],
            ),
        ] {
            for e in events {
                ledger.record(0, Key::Int(key), e);
            }
        }
        let run = RunFacts {
            seed: 1,
            bad_ratio: 0.1,
            events: 9,
            seed_writes: 0,
            connection_losses: 0,
            stopped: StopReason::Budget,
            elapsed_seconds: 0.0,
        };
        Summary::build(&ledger, &plan, run)
    }

    #[test]
    fn expectations_follow_the_processor_semantics() {
        let s = scenario(HardDeletes::Close);
        let t = s.table("t").cloned().unwrap_or_else(|| panic!("no table"));
        assert_eq!(
            t.written,
            OperationCounts {
                insert: 4,
                update: 4,
                delete: 2
            }
        );
        assert_eq!(
            t.source,
            SourceExpectation {
                preexisting_rows: 5,
                rows: 7,
                live_keys: 2,
                deleted_keys: 2
            }
        );
        assert_eq!(t.lake.current_rows, 2);
        assert_eq!(
            (
                t.lake.quarantined_rows,
                t.lake.quarantined_inserts,
                t.lake.quarantined_updates
            ),
            (3, 2, 1)
        );
        // Loaded versions: key 1's insert, key 3's update, key 4's insert and two updates.
        assert_eq!((t.lake.versions_min, t.lake.versions_max), (2, 5));
        let err = s.rule("t", "err").cloned().unwrap_or_else(|| panic!("err"));
        assert_eq!((err.failures, err.quarantined), (3, 3));
        // The warning rule failed twice; only the row that also failed the error rule is quarantined.
        let warn = s
            .rule("t", "warn")
            .cloned()
            .unwrap_or_else(|| panic!("warn"));
        assert_eq!(
            (warn.failures, warn.quarantined, warn.severity),
            (2, 1, "warning")
        );
    }

    #[test]
    fn tombstones_raise_the_upper_bound_of_versions() {
        let t = scenario(HardDeletes::Tombstone).tables.remove(0);
        assert_eq!((t.lake.versions_min, t.lake.versions_max), (2, 7));
    }

    #[test]
    fn the_text_rendering_lists_tables_rules_and_notes() {
        let mut s = scenario(HardDeletes::Close);
        s.notes.push("a note".into());
        let text = s.render_text();
        assert!(text.contains("generic traffic, seed 1"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("t ") && l.contains("2..5")),
            "{text}"
        );
        assert!(text.contains("  - a note"), "{text}");
    }
}
