//! Table upkeep between micro-batches, every `settings.maintenance_interval`: every table the
//! processor writes is compacted (each batch adds a small file to it; a data table's files are
//! gathered up to the size its SCD2 commits keep them at, see [`Lake::compact`]) and vacuumed,
//! so the files commits replace do not pile up on storage; and log entries past the log
//! retention are removed (batch commits leave that to maintenance: delta-rs lists the whole log
//! to do it).
//!
//! A failed step is logged and counted, never fatal: the batches matter more, and the next round
//! tries again.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::options::Maintenance;
use crate::config::spec::TableSpec;
use crate::error_chain::error_chain;
use crate::sink::{Lake, LakeTable, SinkError};

/// When the next round is due.
#[derive(Debug)]
pub(super) struct Schedule {
    every: Maintenance,
    next: Instant,
}

impl Schedule {
    /// The first round comes one interval after the start: a processor that restarts often does
    /// not redo it each time.
    pub fn new(every: Maintenance, now: Instant) -> Schedule {
        Schedule {
            every,
            next: now + every.interval,
        }
    }

    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    pub fn retention(&self) -> Duration {
        self.every.vacuum_retention
    }

    /// The next round comes one interval after this one ended (`now`).
    pub fn done(&mut self, now: Instant) {
        self.next = now + self.every.interval;
    }
}

/// What maintenance did over a run.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MaintenanceTotals {
    pub rounds: u64,
    /// Small files compaction replaced.
    pub files_compacted: u64,
    /// Files vacuum deleted.
    pub files_vacuumed: u64,
    /// Log entries past the tables' log retention that were deleted.
    pub log_entries_removed: u64,
    /// Steps that failed (each logged).
    pub failures: u64,
}

/// The tables a round keeps.
fn tables(specs: &[TableSpec]) -> Vec<LakeTable> {
    let mut tables = Vec::with_capacity(specs.len() * 2 + 1);
    for spec in specs {
        tables.push(LakeTable::Data(spec.name.clone()));
        tables.push(LakeTable::Quarantine(spec.name.clone()));
    }
    tables.push(LakeTable::Metrics);
    tables
}

/// One round over the tables of `specs`; adds what it did to `totals`.
pub(super) async fn round(
    lake: &Lake,
    specs: &[TableSpec],
    retention: Duration,
    totals: &mut MaintenanceTotals,
) {
    let started = Instant::now();
    let before = totals.clone();
    for table in tables(specs) {
        match lake.compact(table.clone()).await {
            Ok(done) => totals.files_compacted += done.map_or(0, |d| d.files_removed),
            Err(error) => failed(totals, &table, "compaction", error),
        }
        match lake.vacuum(table.clone(), retention).await {
            Ok(done) => totals.files_vacuumed += done.map_or(0, |d| d.files_deleted),
            Err(error) => failed(totals, &table, "vacuum", error),
        }
        match lake.clean_log(table.clone()).await {
            Ok(removed) => totals.log_entries_removed += removed as u64,
            Err(error) => failed(totals, &table, "log cleanup", error),
        }
    }
    totals.rounds += 1;
    tracing::info!(
        files_compacted = totals.files_compacted - before.files_compacted,
        files_vacuumed = totals.files_vacuumed - before.files_vacuumed,
        log_entries_removed = totals.log_entries_removed - before.log_entries_removed,
        failures = totals.failures - before.failures,
        retention = %humantime::format_duration(retention),
        took_ms = started.elapsed().as_millis() as u64,
        "table maintenance done"
    );
}

fn failed(totals: &mut MaintenanceTotals, table: &LakeTable, step: &str, error: SinkError) {
    totals.failures += 1;
    tracing::warn!(
        table = %table.name(), step, error = error_chain(&error),
        "table maintenance step failed; the next round tries again"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_is_due_one_interval_after_the_start_and_after_the_last_round() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut schedule = Schedule::new(
            Maintenance {
                interval: Duration::from_secs(60),
                vacuum_retention: Duration::from_secs(3600),
            },
            start,
        );
        assert!(!schedule.due(start));
        assert!(!schedule.due(at(59)));
        assert!(schedule.due(at(60)));
        // The round ran from 60 s to 90 s.
        schedule.done(at(90));
        assert!(
            !schedule.due(at(149)),
            "counted from the end of the last round"
        );
        assert!(schedule.due(at(150)));
        assert_eq!(schedule.retention(), Duration::from_secs(3600));
    }

    #[test]
    fn a_round_keeps_each_tables_data_and_quarantine_and_the_shared_metrics_once() {
        let spec = crate::stream::bench::telemetry_config(None).expect("shipped config");
        let found = tables(&spec.tables);
        assert_eq!(
            found,
            vec![
                LakeTable::Data("vehicle_telemetry".into()),
                LakeTable::Quarantine("vehicle_telemetry".into()),
                LakeTable::Metrics,
            ]
        );
    }
}
