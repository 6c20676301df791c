//! The health of every stage of a local stack: services, replication slot, consumer lag, the
//! last commit of each lake table, row counts, DQ pass rate and metric breaches.
//!
//! Each probe is independent: one that fails (a service down, a table not created yet) is
//! reported as such and the others still run.

use std::fs;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::spec::ConfigSpec;
use crate::pipeline::schema::{METRICS_TABLE, quarantine_table_name};

use super::children::{self, Dqetl, Row};
use super::error::LocalError;
use super::kafka::{self, TopicLag};
use super::lifecycle;
use super::ports;
use super::stack::{self, LocalState, StackDir, Worker};
use crate::error_chain::error_chain;

/// One probe's outcome: a value, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe<T> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl<T> Probe<T> {
    fn of(result: Result<T, LocalError>) -> Probe<T> {
        match result {
            Ok(value) => Probe {
                value: Some(value),
                error: None,
            },
            Err(e) => Probe::failed(error_chain(&e)),
        }
    }

    fn failed(error: impl Into<String>) -> Probe<T> {
        Probe {
            value: None,
            error: Some(error.into()),
        }
    }
}

/// One service or background process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub up: bool,
    pub pid: Option<u32>,
    pub port: Option<u16>,
}

/// The capture's replication slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotStatus {
    pub slot: String,
    pub exists: bool,
    pub active: bool,
    /// WAL the slot keeps on disk: current WAL position − restart_lsn.
    pub retained_wal_bytes: Option<i64>,
    /// WAL not yet confirmed by capture: current WAL position − confirmed_flush_lsn.
    pub unconfirmed_bytes: Option<i64>,
}

/// A Delta table's last commit, read from its `_delta_log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeltaCommit {
    pub version: u64,
    pub committed_at: DateTime<Utc>,
}

/// Row counts of a source table's lake tables.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowCounts {
    pub current_rows: u64,
    /// Closed versions (not current).
    pub history_rows: u64,
    pub quarantined_rows: u64,
    /// Loaded versions ÷ (loaded versions + quarantined rows); None before any row.
    pub pass_rate: Option<f64>,
}

/// One source table in the lake.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LakeTableStatus {
    pub table: String,
    /// None: the processor has not created the table yet.
    pub data: Option<DeltaCommit>,
    pub quarantine: Option<DeltaCommit>,
}

/// A metric whose latest batch value missed its threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricBreach {
    pub table: String,
    pub metric: String,
    pub column: Option<String>,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub batch_id: Option<i64>,
}

/// Everything `dqetl status` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub stack: String,
    pub folder: String,
    pub deployed: bool,
    pub services: Vec<ServiceStatus>,
    pub replication: Probe<SlotStatus>,
    pub consumer_group: String,
    pub topics: Probe<Vec<TopicLag>>,
    pub lake: Vec<LakeTableStatus>,
    pub metrics_table: Option<DeltaCommit>,
    /// Per source table, in config order.
    pub rows: Probe<Vec<(String, RowCounts)>>,
    pub breaches: Probe<Vec<MetricBreach>>,
}

impl StatusReport {
    /// True when PostgreSQL, the broker, capture and the processor all run.
    pub fn healthy(&self) -> bool {
        self.deployed
            && ["postgres", "broker", "capture", "process"]
                .iter()
                .all(|name| self.services.iter().any(|s| s.name == *name && s.up))
    }
}

/// Probes every stage of the stack.
pub async fn status(dqetl: &Dqetl, dir: &StackDir, config: &ConfigSpec) -> StatusReport {
    let state = LocalState::load(dir).ok().flatten();
    let group = stack::consumer_group(config.kafka.consumer_group.as_deref(), dir.stack());
    let lake = lake_tables(dir, config);
    let metrics_table = last_commit(&dir.lake_dir().join(METRICS_TABLE));
    let mut report = StatusReport {
        stack: dir.stack().to_string(),
        folder: dir.root().display().to_string(),
        deployed: state.is_some(),
        services: Vec::new(),
        replication: Probe::failed("not deployed"),
        consumer_group: group.clone(),
        topics: Probe::failed("not deployed"),
        rows: Probe::failed("no lake table yet"),
        breaches: Probe::failed("no dq_metrics table yet"),
        lake,
        metrics_table,
    };
    if report
        .lake
        .iter()
        .any(|t| t.data.is_some() || t.quarantine.is_some())
    {
        report.rows = Probe::of(row_counts(dqetl, &report.lake));
    }
    if report.metrics_table.is_some() {
        report.breaches = Probe::of(metric_breaches(dqetl));
    }
    let Some(state) = state else {
        return report;
    };

    let up = lifecycle::services_up(dir, &state);
    report.services.push(ServiceStatus {
        name: "postgres".into(),
        up: up.postgres,
        pid: lifecycle::postmaster_pid(dir),
        port: Some(state.postgres.port),
    });
    report.services.push(ServiceStatus {
        name: "broker".into(),
        up: up.broker,
        pid: lifecycle::broker_pid(dir),
        port: Some(state.broker.port),
    });
    for worker in [Worker::Capture, Worker::Process, Worker::Generator] {
        let pid = children::running_worker(dir, Some(&state), worker);
        // The generator only runs during `post-deploy --generate-data`; idle is not a problem.
        if worker == Worker::Generator && pid.is_none() {
            continue;
        }
        report.services.push(ServiceStatus {
            name: worker.name().into(),
            up: pid.is_some(),
            pid,
            port: None,
        });
    }

    report.replication = if up.postgres {
        Probe::of(slot_status(&state, &stack::slot_name(dir.stack())).await)
    } else {
        Probe::failed("PostgreSQL is down")
    };
    report.topics = if up.broker && ports::accepts_connections(state.broker.port) {
        let topics: Vec<String> = config.source_tables().map(|t| t.topic.clone()).collect();
        Probe::of(kafka::consumer_lag(
            &stack::bootstrap(&state),
            &group,
            &topics,
        ))
    } else {
        Probe::failed("the broker is down")
    };
    report
}

/// The replication slot's retained and unconfirmed WAL.
pub async fn slot_status(state: &LocalState, slot: &str) -> Result<SlotStatus, LocalError> {
    let url = stack::pg_url(state);
    let sql = |what: &'static str| {
        let url = url.clone();
        move |source| LocalError::Sql {
            url,
            what: what.to_string(),
            source,
        }
    };
    let (client, connection) = crate::pg::connect_url(&url)
        .await
        .map_err(LocalError::connect(&url))?;
    let connection = tokio::spawn(connection);
    let row = client
        .query_opt(
            "SELECT active, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql("cannot read pg_replication_slots"))?;
    drop(client);
    let _ = connection.await;
    Ok(match row {
        Some(row) => SlotStatus {
            slot: slot.to_string(),
            exists: true,
            active: row.get(0),
            retained_wal_bytes: row.get(1),
            unconfirmed_bytes: row.get(2),
        },
        None => SlotStatus {
            slot: slot.to_string(),
            exists: false,
            active: false,
            retained_wal_bytes: None,
            unconfirmed_bytes: None,
        },
    })
}

fn lake_tables(dir: &StackDir, config: &ConfigSpec) -> Vec<LakeTableStatus> {
    config
        .source_tables()
        .map(|t| LakeTableStatus {
            table: t.name.clone(),
            data: last_commit(&dir.lake_dir().join(&t.name)),
            quarantine: last_commit(&dir.lake_dir().join(quarantine_table_name(&t.name))),
        })
        .collect()
}

/// The newest commit file `_delta_log/NNNNNNNNNNNNNNNNNNNN.json` of a Delta table and its
/// modification time; None when the table does not exist yet.
pub fn last_commit(table_dir: &Path) -> Option<DeltaCommit> {
    let log = table_dir.join("_delta_log");
    let newest = fs::read_dir(&log)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let version: u64 = name.to_str()?.strip_suffix(".json")?.parse().ok()?;
            Some((version, entry.path()))
        })
        .max_by_key(|(version, _)| *version)?;
    let modified = fs::metadata(&newest.1).and_then(|m| m.modified()).ok()?;
    Some(DeltaCommit {
        version: newest.0,
        committed_at: DateTime::<Utc>::from(modified),
    })
}

/// A SQL identifier for DataFusion, double-quoted (names keep their case).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The row-count query over the tables that exist (one `dqetl query` for all of them).
pub fn row_count_sql(lake: &[LakeTableStatus]) -> Option<String> {
    let mut parts = Vec::new();
    for t in lake {
        let name = quote_literal(&t.table);
        if t.data.is_some() {
            parts.push(format!(
                "SELECT {name} AS table_name, 'data' AS kind, \
                 count(*) FILTER (WHERE \"_is_current\") AS current_rows, \
                 count(*) FILTER (WHERE NOT \"_is_current\") AS history_rows, \
                 count(*) FILTER (WHERE upper(\"_operation\") <> 'DELETE') AS row_count \
                 FROM {}",
                quote_ident(&t.table)
            ));
        }
        if t.quarantine.is_some() {
            parts.push(format!(
                "SELECT {name} AS table_name, 'quarantine' AS kind, \
                 CAST(0 AS BIGINT) AS current_rows, CAST(0 AS BIGINT) AS history_rows, \
                 count(*) AS row_count FROM {}",
                quote_ident(&quarantine_table_name(&t.table))
            ));
        }
    }
    (!parts.is_empty()).then(|| parts.join(" UNION ALL "))
}

fn row_counts(
    dqetl: &Dqetl,
    lake: &[LakeTableStatus],
) -> Result<Vec<(String, RowCounts)>, LocalError> {
    let Some(sql) = row_count_sql(lake) else {
        return Ok(Vec::new());
    };
    let rows = dqetl.query_json(&sql)?;
    Ok(lake
        .iter()
        .map(|t| (t.table.clone(), counts_of(&t.table, &rows)))
        .collect())
}

/// Folds the rows of [`row_count_sql`] for one table.
pub fn counts_of(table: &str, rows: &[Row]) -> RowCounts {
    let mut counts = RowCounts {
        current_rows: 0,
        history_rows: 0,
        quarantined_rows: 0,
        pass_rate: None,
    };
    let mut loaded = 0;
    for row in rows
        .iter()
        .filter(|r| text(r, "table_name").as_deref() == Some(table))
    {
        match text(row, "kind").as_deref() {
            Some("data") => {
                counts.current_rows = number(row, "current_rows");
                counts.history_rows = number(row, "history_rows");
                loaded = number(row, "row_count");
            }
            Some("quarantine") => counts.quarantined_rows = number(row, "row_count"),
            _ => {}
        }
    }
    let checked = loaded + counts.quarantined_rows;
    if checked > 0 {
        counts.pass_rate = Some(loaded as f64 / checked as f64);
    }
    counts
}

/// The latest batch value of each metric that missed its threshold.
pub const BREACHES_SQL: &str = "SELECT table_name, metric_name, column_name, metric_value, threshold, batch_id \
     FROM (SELECT table_name, metric_name, column_name, metric_value, threshold, passed, batch_id, \
                  row_number() OVER (PARTITION BY table_name, metric_name, column_name \
                                     ORDER BY batch_id DESC, \"timestamp\" DESC) AS rn \
           FROM dq_metrics WHERE scope = 'batch') latest \
     WHERE rn = 1 AND NOT passed \
     ORDER BY table_name, metric_name, column_name";

fn metric_breaches(dqetl: &Dqetl) -> Result<Vec<MetricBreach>, LocalError> {
    Ok(dqetl
        .query_json(BREACHES_SQL)?
        .iter()
        .map(|row| MetricBreach {
            table: text(row, "table_name").unwrap_or_default(),
            metric: text(row, "metric_name").unwrap_or_default(),
            column: text(row, "column_name"),
            value: row.get("metric_value").and_then(|v| v.as_f64()),
            threshold: row.get("threshold").and_then(|v| v.as_f64()),
            batch_id: row.get("batch_id").and_then(|v| v.as_i64()),
        })
        .collect())
}

/// A string field of a JSON row.
pub fn text(row: &Row, key: &str) -> Option<String> {
    match row.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// A count field of a JSON row (0 when absent or null).
pub fn number(row: &Row, key: &str) -> u64 {
    match row.get(key) {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_commit_is_the_highest_numbered_log_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = dir.path().join("vehicles");
        assert_eq!(last_commit(&table), None);
        let log = table.join("_delta_log");
        fs::create_dir_all(&log).expect("dirs");
        for name in [
            "00000000000000000000.json",
            "00000000000000000009.json",
            "00000000000000000010.json",
            "00000000000000000010.checkpoint.parquet",
            "_last_checkpoint",
        ] {
            fs::write(log.join(name), "{}").expect("write");
        }
        let commit = last_commit(&table).expect("a commit");
        assert_eq!(commit.version, 10);
        let age = Utc::now() - commit.committed_at;
        assert!(age.num_seconds().abs() < 60, "{age}");
    }

    #[test]
    fn row_counts_fold_data_and_quarantine_rows_per_table() {
        let rows: Vec<Row> = serde_json::from_value(serde_json::json!([
            {"table_name": "vehicles", "kind": "data", "current_rows": 40, "history_rows": 12, "row_count": 52},
            {"table_name": "vehicles", "kind": "quarantine", "current_rows": 0, "history_rows": 0, "row_count": 4},
            {"table_name": "drivers", "kind": "data", "current_rows": 10, "history_rows": 0, "row_count": 10}
        ]))
        .expect("rows");
        let vehicles = counts_of("vehicles", &rows);
        assert_eq!(
            (
                vehicles.current_rows,
                vehicles.history_rows,
                vehicles.quarantined_rows
            ),
            (40, 12, 4)
        );
        let rate = vehicles.pass_rate.expect("rate");
        assert!((rate - 52.0 / 56.0).abs() < 1e-9, "{rate}");
        assert_eq!(counts_of("drivers", &rows).pass_rate, Some(1.0));
        assert_eq!(counts_of("alerts", &rows).pass_rate, None);
    }

    #[test]
    fn the_count_query_covers_only_tables_that_exist() {
        let commit = Some(DeltaCommit {
            version: 1,
            committed_at: Utc::now(),
        });
        let lake = vec![
            LakeTableStatus {
                table: "vehicles".into(),
                data: commit.clone(),
                quarantine: None,
            },
            LakeTableStatus {
                table: "alerts".into(),
                data: None,
                quarantine: commit,
            },
            LakeTableStatus {
                table: "drivers".into(),
                data: None,
                quarantine: None,
            },
        ];
        let sql = row_count_sql(&lake).expect("sql");
        assert!(sql.contains("FROM \"vehicles\""), "{sql}");
        assert!(sql.contains("FROM \"alerts_quarantine\""), "{sql}");
        assert!(!sql.contains("\"vehicles_quarantine\""), "{sql}");
        assert!(!sql.contains("drivers"), "{sql}");
        assert_eq!(row_count_sql(&lake[2..]), None);
    }
}
