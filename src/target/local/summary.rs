//! The generator's JSON summaries, read back: what each run wrote and what the lake must hold
//! for it. A stack keeps one file per run in `summaries/`; runs never touch each other's rows
//! (the generator leaves pre-existing rows alone), so the expectations of a stack are the sums
//! over its files.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::LocalError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Written {
    pub insert: u64,
    pub update: u64,
    pub delete: u64,
}

impl Written {
    pub fn total(&self) -> u64 {
        self.insert + self.update + self.delete
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SourceExpectation {
    pub live_keys: u64,
    pub deleted_keys: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct LakeExpectation {
    /// Keys with a current row (exact).
    pub current_rows: u64,
    /// Quarantine rows (exact).
    pub quarantined_rows: u64,
    /// Bounds of the data table's row count (versions collapse within a micro-batch).
    pub versions_min: u64,
    pub versions_max: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TableRun {
    pub table: String,
    pub written: Written,
    pub source: SourceExpectation,
    pub lake: LakeExpectation,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RuleRun {
    pub table: String,
    pub rule: String,
    pub severity: String,
    /// Written versions failing the rule.
    pub failures: u64,
    /// Quarantine rows listing the rule (exact).
    pub quarantined: u64,
}

/// One generator run's summary.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GeneratorRun {
    pub seed: u64,
    /// Traffic writes after the seed.
    pub events: u64,
    pub seed_writes: u64,
    pub tables: Vec<TableRun>,
    #[serde(default)]
    pub rules: Vec<RuleRun>,
}

impl GeneratorRun {
    pub fn read(path: &Path) -> Result<GeneratorRun, LocalError> {
        let text = fs::read_to_string(path).map_err(|source| LocalError::ReadSummary {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| LocalError::ParseSummary {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Rows written by this run (seed and traffic).
    pub fn rows_written(&self) -> u64 {
        self.tables.iter().map(|t| t.written.total()).sum()
    }
}

/// Expectations of one table summed over runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableTotals {
    pub written: Written,
    pub live_keys: u64,
    pub current_rows: u64,
    pub quarantined_rows: u64,
    pub versions_min: u64,
    pub versions_max: u64,
}

/// Every run of a stack, summed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    pub runs: Vec<PathBuf>,
    pub tables: BTreeMap<String, TableTotals>,
    /// (table, rule) → quarantine rows listing the rule.
    pub rule_quarantined: BTreeMap<(String, String), u64>,
    /// (table, rule) → written versions failing the rule.
    pub rule_failures: BTreeMap<(String, String), u64>,
}

impl Expectations {
    /// Sums every `*.json` summary in `dir` (none: empty expectations).
    pub fn from_dir(dir: &Path) -> Result<Expectations, LocalError> {
        let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(LocalError::ReadFile {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        files.sort();
        let mut totals = Expectations::default();
        for file in files {
            totals.add(&GeneratorRun::read(&file)?);
            totals.runs.push(file);
        }
        Ok(totals)
    }

    pub fn add(&mut self, run: &GeneratorRun) {
        for t in &run.tables {
            let e = self.tables.entry(t.table.clone()).or_default();
            e.written.insert += t.written.insert;
            e.written.update += t.written.update;
            e.written.delete += t.written.delete;
            e.live_keys += t.source.live_keys;
            e.current_rows += t.lake.current_rows;
            e.quarantined_rows += t.lake.quarantined_rows;
            e.versions_min += t.lake.versions_min;
            e.versions_max += t.lake.versions_max;
        }
        for r in &run.rules {
            let key = (r.table.clone(), r.rule.clone());
            *self.rule_quarantined.entry(key.clone()).or_default() += r.quarantined;
            *self.rule_failures.entry(key).or_default() += r.failures;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_json(current: u64, quarantined: u64, rule_q: u64) -> String {
        serde_json::json!({
            "mode": "vehicle", "seed": 1, "bad_ratio": 0.1, "events": 10, "seed_writes": 5,
            "stopped": "budget", "elapsed_seconds": 1.0, "notes": [],
            "tables": [{
                "table": "vehicles",
                "written": {"insert": 8, "update": 4, "delete": 1},
                "source": {"preexisting_rows": 0, "rows": 7, "live_keys": 7, "deleted_keys": 1},
                "lake": {"current_rows": current, "quarantined_rows": quarantined,
                         "quarantined_inserts": 1, "quarantined_updates": 1,
                         "versions_min": current, "versions_max": 11}
            }],
            "rules": [{"table": "vehicles", "rule": "veh_001", "kind": "regex", "column": "vin",
                       "severity": "error", "failures": rule_q, "quarantined": rule_q}]
        })
        .to_string()
    }

    #[test]
    fn the_runs_of_a_stack_add_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            Expectations::from_dir(&dir.path().join("none")).expect("empty"),
            Expectations::default()
        );
        fs::write(dir.path().join("1-seed.json"), run_json(6, 2, 2)).expect("write");
        fs::write(dir.path().join("2-traffic.json"), run_json(5, 3, 1)).expect("write");
        fs::write(dir.path().join("notes.txt"), "ignored").expect("write");
        let totals = Expectations::from_dir(dir.path()).expect("read");
        assert_eq!(totals.runs.len(), 2);
        let vehicles = &totals.tables["vehicles"];
        assert_eq!(vehicles.current_rows, 11);
        assert_eq!(vehicles.quarantined_rows, 5);
        assert_eq!(vehicles.written.total(), 26);
        assert_eq!((vehicles.versions_min, vehicles.versions_max), (11, 22));
        assert_eq!(
            totals.rule_quarantined[&("vehicles".to_string(), "veh_001".to_string())],
            3
        );
    }

    #[test]
    fn a_summary_of_another_shape_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("bad.json"), "{\"tables\": 3}").expect("write");
        let err = Expectations::from_dir(dir.path()).expect_err("bad");
        assert!(err.to_string().contains("bad.json"), "{err}");
    }
}
