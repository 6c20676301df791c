//! `dqetl status`: one table with the health of every stage of the stack. Exit code 0 when
//! PostgreSQL, the broker, capture and the processor all run, 1 otherwise.

use std::process::ExitCode;

use chrono::Utc;

use crate::cli::GlobalArgs;
use crate::target::local::children::Dqetl;
use crate::target::local::lifecycle::human_bytes;
use crate::target::local::stack::{self, StackDir};
use crate::target::local::status::{DeltaCommit, StatusReport, status};

use super::deploy::{not_on_aws, runtime, stack_flag};
use super::post_deploy::load_config;

pub fn run(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    not_on_aws(global, "status")?;
    stack::check_stack_name(&global.stack_name)?;
    let config = load_config(global)?;
    let dir = StackDir::for_stack(&global.stack_name);
    let dqetl = Dqetl::current(&global.config, &global.stack_name)?;
    let report = runtime()?.block_on(status(&dqetl, &dir, &config));
    if global.json {
        println!("{:#}", serde_json::to_value(&report)?);
    } else {
        print!("{}", render(&report, &global.stack_name));
    }
    Ok(if report.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The report as one aligned table: component, state, detail.
pub fn render(report: &StatusReport, stack: &str) -> String {
    if !report.deployed {
        return format!(
            "stack `{}` is not deployed here ({} has no state.json); run `dqetl{} deploy`\n",
            report.stack,
            report.folder,
            stack_flag(stack)
        );
    }
    let mut rows: Vec<[String; 3]> = Vec::new();
    for service in &report.services {
        let mut detail = Vec::new();
        if let Some(port) = service.port {
            detail.push(format!("127.0.0.1:{port}"));
        }
        if let Some(pid) = service.pid {
            detail.push(format!("pid {pid}"));
        }
        if !service.up {
            detail.push("not running".into());
        }
        rows.push([
            service.name.clone(),
            if service.up { "up" } else { "DOWN" }.into(),
            detail.join(", "),
        ]);
    }
    match (&report.replication.value, &report.replication.error) {
        (Some(slot), _) if slot.exists => rows.push([
            format!("slot {}", slot.slot),
            if slot.active { "active" } else { "inactive" }.into(),
            format!(
                "retains {} of WAL, {} not yet confirmed",
                human_bytes(clamp(slot.retained_wal_bytes)),
                human_bytes(clamp(slot.unconfirmed_bytes))
            ),
        ]),
        (Some(slot), _) => rows.push([
            format!("slot {}", slot.slot),
            "missing".into(),
            "capture has not created it yet".into(),
        ]),
        (None, error) => rows.push(["slot".into(), "?".into(), error.clone().unwrap_or_default()]),
    }
    match (&report.topics.value, &report.topics.error) {
        (Some(topics), _) => {
            for topic in topics {
                rows.push(if topic.exists {
                    [
                        format!("topic {}", topic.topic),
                        format!("lag {}", topic.lag()),
                        format!(
                            "{} partitions, {} messages, group {}",
                            topic.partitions.len(),
                            topic.end_offsets(),
                            report.consumer_group
                        ),
                    ]
                } else {
                    [
                        format!("topic {}", topic.topic),
                        "missing".into(),
                        "run post-deploy".into(),
                    ]
                });
            }
        }
        (None, error) => rows.push([
            "topics".into(),
            "?".into(),
            error.clone().unwrap_or_default(),
        ]),
    }
    let counts = report.rows.value.as_deref().unwrap_or_default();
    for table in &report.lake {
        let Some(data) = &table.data else {
            rows.push([
                format!("table {}", table.table),
                "empty".into(),
                "no commit yet".into(),
            ]);
            continue;
        };
        let mut detail = vec![format!("committed {}", ago(data))];
        if let Some((_, c)) = counts.iter().find(|(name, _)| *name == table.table) {
            detail.push(format!(
                "{} current, {} history, {} quarantined",
                c.current_rows, c.history_rows, c.quarantined_rows
            ));
            if let Some(rate) = c.pass_rate {
                detail.push(format!("pass rate {:.1}%", rate * 100.0));
            }
        }
        rows.push([
            format!("table {}", table.table),
            format!("v{}", data.version),
            detail.join(", "),
        ]);
    }
    if let Some(error) = &report.rows.error
        && report.lake.iter().any(|t| t.data.is_some())
    {
        rows.push(["rows".into(), "?".into(), error.clone()]);
    }
    if let Some(metrics) = &report.metrics_table {
        rows.push([
            "table dq_metrics".into(),
            format!("v{}", metrics.version),
            format!("committed {}", ago(metrics)),
        ]);
    }
    match (&report.breaches.value, &report.breaches.error) {
        (Some(breaches), _) if breaches.is_empty() => rows.push([
            "metrics".into(),
            "ok".into(),
            "every metric meets its threshold in its latest batch".into(),
        ]),
        (Some(breaches), _) => {
            for b in breaches {
                let metric = match &b.column {
                    Some(column) => format!("{}({column})", b.metric),
                    None => b.metric.clone(),
                };
                rows.push([
                    format!("metric {}", b.table),
                    "BELOW".into(),
                    format!(
                        "{metric} = {} < {} (batch {})",
                        b.value.map(|v| format!("{v:.4}")).unwrap_or("null".into()),
                        b.threshold.map(|v| format!("{v}")).unwrap_or("-".into()),
                        b.batch_id.map(|v| v.to_string()).unwrap_or("-".into())
                    ),
                ]);
            }
        }
        (None, Some(error)) if report.metrics_table.is_some() => {
            rows.push(["metrics".into(), "?".into(), error.clone()]);
        }
        _ => {}
    }

    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (w0, w1) = (width(0).max(9), width(1).max(5));
    let mut out = format!(
        "stack `{}` ({})\n{:<w0$}  {:<w1$}  DETAIL\n",
        report.stack, report.folder, "COMPONENT", "STATE"
    );
    for [a, b, c] in rows {
        out.push_str(&format!("{a:<w0$}  {b:<w1$}  {c}\n"));
    }
    out
}

fn clamp(bytes: Option<i64>) -> u64 {
    bytes.and_then(|b| u64::try_from(b).ok()).unwrap_or(0)
}

fn ago(commit: &DeltaCommit) -> String {
    let seconds = (Utc::now() - commit.committed_at).num_seconds().max(0);
    let text = humantime::format_duration(std::time::Duration::from_secs(seconds as u64));
    format!("{text} ago")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::local::kafka::{PartitionLag, TopicLag};
    use crate::target::local::status::{
        LakeTableStatus, MetricBreach, Probe, RowCounts, ServiceStatus, SlotStatus,
    };

    fn probe<T>(value: T) -> Probe<T> {
        Probe {
            value: Some(value),
            error: None,
        }
    }

    #[test]
    fn the_table_shows_a_stopped_processor_its_lag_and_a_breached_metric() {
        let commit = DeltaCommit {
            version: 7,
            committed_at: Utc::now(),
        };
        let report = StatusReport {
            stack: "demo".into(),
            folder: "/w/.dqetl/demo".into(),
            deployed: true,
            services: vec![
                ServiceStatus {
                    name: "postgres".into(),
                    up: true,
                    pid: Some(10),
                    port: Some(5432),
                },
                ServiceStatus {
                    name: "process".into(),
                    up: false,
                    pid: None,
                    port: None,
                },
            ],
            replication: probe(SlotStatus {
                slot: "dqetl_demo".into(),
                exists: true,
                active: true,
                retained_wal_bytes: Some(2048),
                unconfirmed_bytes: Some(0),
            }),
            consumer_group: "dqetl-demo".into(),
            topics: probe(vec![TopicLag {
                topic: "cdc-vehicles".into(),
                exists: true,
                partitions: vec![PartitionLag {
                    partition: 0,
                    low: 0,
                    high: 12,
                    committed: Some(9),
                }],
            }]),
            lake: vec![LakeTableStatus {
                table: "vehicles".into(),
                data: Some(commit.clone()),
                quarantine: None,
            }],
            metrics_table: Some(commit),
            rows: probe(vec![(
                "vehicles".into(),
                RowCounts {
                    current_rows: 30,
                    history_rows: 4,
                    quarantined_rows: 2,
                    pass_rate: Some(0.75),
                },
            )]),
            breaches: probe(vec![MetricBreach {
                table: "vehicle_telemetry".into(),
                metric: "Completeness".into(),
                column: Some("latitude".into()),
                value: Some(0.8),
                threshold: Some(0.9),
                batch_id: Some(3),
            }]),
        };
        assert!(!report.healthy());
        let text = render(&report, "demo");
        let line = |start: &str| {
            text.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no `{start}` line in:\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(line("process"), "process DOWN not running");
        assert_eq!(
            line("slot"),
            "slot dqetl_demo active retains 2.0 KiB of WAL, 0 B not yet confirmed"
        );
        assert!(
            line("topic cdc-vehicles")
                .starts_with("topic cdc-vehicles lag 3 1 partitions, 12 messages")
        );
        assert!(
            line("table vehicles").contains("v7")
                && line("table vehicles")
                    .contains("30 current, 4 history, 2 quarantined, pass rate 75.0%"),
            "{text}"
        );
        assert_eq!(
            line("metric vehicle_telemetry"),
            "metric vehicle_telemetry BELOW Completeness(latitude) = 0.8000 < 0.9 (batch 3)"
        );
    }
}
