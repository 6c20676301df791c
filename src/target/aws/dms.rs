//! DMS: endpoint connection tests, starting or resuming the replication task by its status,
//! stopping it at teardown, and its statistics for status. DescribeTableStatistics (which moto
//! lacks) sits behind [`TableStatisticsApi`].

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_databasemigration::types::{Filter, StartReplicationTaskTypeValue};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::target::aws::clients::AwsClients;
use crate::target::aws::error::{ApiResultExt, AwsError};
use crate::target::aws::msk::read_recorded;

/// The outcome of one endpoint's connection test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionResult {
    pub endpoint_arn: String,
    /// `successful`, `failed`, or `testing` when the wait timed out.
    pub status: String,
    pub message: Option<String>,
}

impl ConnectionResult {
    pub fn succeeded(&self) -> bool {
        self.status == "successful"
    }
}

/// Tests the replication instance's connection to each endpoint and waits for the results.
/// A failed test is a result, not an error: the caller reports it and carries on.
pub async fn test_connections(
    clients: &AwsClients,
    instance_arn: &str,
    endpoint_arns: &[&str],
    poll: Duration,
    timeout: Duration,
) -> Result<Vec<ConnectionResult>, AwsError> {
    for endpoint in endpoint_arns {
        let result = clients
            .dms
            .test_connection()
            .replication_instance_arn(instance_arn)
            .endpoint_arn(*endpoint)
            .send()
            .await
            .api("dms", "TestConnection");
        match result {
            Ok(_) => {}
            // A test already running for this pair: wait for its result like ours.
            Err(e) if e.is_code("InvalidResourceStateFault") => {}
            Err(e) => return Err(e),
        }
    }
    let started = Instant::now();
    loop {
        let out = clients
            .dms
            .describe_connections()
            .filters(
                Filter::builder()
                    .name("endpoint-arn")
                    .set_values(Some(endpoint_arns.iter().map(|s| s.to_string()).collect()))
                    .build()?,
            )
            .send()
            .await
            .api("dms", "DescribeConnections")?;
        let results: Vec<ConnectionResult> = endpoint_arns
            .iter()
            .map(|arn| {
                let conn = out.connections().iter().find(|c| {
                    c.endpoint_arn() == Some(*arn)
                        && c.replication_instance_arn() == Some(instance_arn)
                });
                ConnectionResult {
                    endpoint_arn: arn.to_string(),
                    status: conn
                        .and_then(|c| c.status())
                        .unwrap_or("testing")
                        .to_string(),
                    message: conn
                        .and_then(|c| c.last_failure_message())
                        .map(str::to_string),
                }
            })
            .collect();
        let settled = results
            .iter()
            .all(|r| r.status == "successful" || r.status == "failed");
        if settled || started.elapsed() >= timeout {
            return Ok(results);
        }
        tokio::time::sleep(poll).await;
    }
}

/// The replication task as status and post-deploy see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskInfo {
    pub arn: String,
    pub status: String,
    pub stop_reason: Option<String>,
    pub last_failure: Option<String>,
    /// The task has run before (it has a start date), so it resumes rather than starts.
    pub has_run: bool,
    pub full_load_percent: Option<i32>,
    pub tables_loaded: Option<i32>,
    pub tables_errored: Option<i32>,
}

pub async fn describe_task(clients: &AwsClients, task_arn: &str) -> Result<TaskInfo, AwsError> {
    let out = clients
        .dms
        .describe_replication_tasks()
        .filters(
            Filter::builder()
                .name("replication-task-arn")
                .values(task_arn)
                .build()?,
        )
        .send()
        .await
        .api("dms", "DescribeReplicationTasks")?;
    let task = out
        .replication_tasks()
        .first()
        .ok_or_else(|| AwsError::Unexpected {
            what: format!("dms task {task_arn}"),
            detail: "DescribeReplicationTasks returned no task".into(),
        })?;
    let stats = task.replication_task_stats();
    Ok(TaskInfo {
        arn: task_arn.to_string(),
        status: task.status().unwrap_or("unknown").to_string(),
        stop_reason: task.stop_reason().map(str::to_string),
        last_failure: task.last_failure_message().map(str::to_string),
        has_run: task.replication_task_start_date().is_some()
            || stats.is_some_and(|s| s.start_date().is_some()),
        full_load_percent: stats.map(|s| s.full_load_progress_percent()),
        tables_loaded: stats.map(|s| s.tables_loaded()),
        tables_errored: stats.map(|s| s.tables_errored()),
    })
}

/// What to do with the task, given its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StartDecision {
    /// First run: start-replication.
    Start,
    /// It ran before (stopped) or failed: resume-processing continues CDC from its checkpoint
    /// (start-replication is only valid for a task's first run).
    Resume,
    /// Already running or starting.
    Nothing,
    /// In a transition (creating, modifying, stopping, ...): wait and look again.
    Wait,
    /// A status dqetl does not act on (deleting, ...).
    Refuse,
}

pub fn decide_start(status: &str, has_run: bool) -> StartDecision {
    match status {
        "ready" => StartDecision::Start,
        "stopped" if has_run => StartDecision::Resume,
        "stopped" => StartDecision::Start,
        "failed" => StartDecision::Resume,
        "running" | "starting" | "resuming" => StartDecision::Nothing,
        "creating" | "modifying" | "stopping" | "moving" | "testing" => StartDecision::Wait,
        _ => StartDecision::Refuse,
    }
}

/// What start-or-resume did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StartOutcome {
    pub previous_status: String,
    pub decision: StartDecision,
    pub status_after: String,
}

/// Starts or resumes the replication task according to its status, waiting out transitions.
pub async fn start_or_resume(
    clients: &AwsClients,
    task_arn: &str,
    poll: Duration,
    timeout: Duration,
) -> Result<StartOutcome, AwsError> {
    let started = Instant::now();
    let mut task = describe_task(clients, task_arn).await?;
    let mut decision = decide_start(&task.status, task.has_run);
    while decision == StartDecision::Wait {
        if started.elapsed() >= timeout {
            return Err(AwsError::Timeout {
                what: format!("dms task to leave status {}", task.status),
                waited: timeout,
            });
        }
        tokio::time::sleep(poll).await;
        task = describe_task(clients, task_arn).await?;
        decision = decide_start(&task.status, task.has_run);
    }
    let kind = match decision {
        StartDecision::Start => Some(StartReplicationTaskTypeValue::StartReplication),
        StartDecision::Resume => Some(StartReplicationTaskTypeValue::ResumeProcessing),
        StartDecision::Refuse => {
            return Err(AwsError::Unexpected {
                what: format!("dms task {task_arn}"),
                detail: format!("status {} cannot be started or resumed", task.status),
            });
        }
        StartDecision::Nothing | StartDecision::Wait => None,
    };
    let mut status_after = task.status.clone();
    if let Some(kind) = kind {
        let out = clients
            .dms
            .start_replication_task()
            .replication_task_arn(task_arn)
            .start_replication_task_type(kind)
            .send()
            .await
            .api("dms", "StartReplicationTask")?;
        status_after = out
            .replication_task()
            .and_then(|t| t.status())
            .unwrap_or("starting")
            .to_string();
    }
    Ok(StartOutcome {
        previous_status: task.status,
        decision,
        status_after,
    })
}

/// Stops the task if it runs and waits until it has stopped (a running task blocks stack deletion).
/// Returns the status it found.
pub async fn stop_task(
    clients: &AwsClients,
    task_arn: &str,
    poll: Duration,
    timeout: Duration,
) -> Result<String, AwsError> {
    let task = match describe_task(clients, task_arn).await {
        Ok(t) => t,
        Err(e) if e.is_code("ResourceNotFoundFault") => return Ok("missing".into()),
        Err(e) => return Err(e),
    };
    if matches!(task.status.as_str(), "running" | "starting" | "resuming") {
        clients
            .dms
            .stop_replication_task()
            .replication_task_arn(task_arn)
            .send()
            .await
            .api("dms", "StopReplicationTask")?;
    } else if task.status != "stopping" {
        return Ok(task.status);
    }
    let started = Instant::now();
    loop {
        let now = describe_task(clients, task_arn).await?;
        if !matches!(
            now.status.as_str(),
            "running" | "starting" | "resuming" | "stopping"
        ) {
            return Ok(task.status);
        }
        if started.elapsed() >= timeout {
            return Err(AwsError::Timeout {
                what: "dms task to stop".into(),
                waited: timeout,
            });
        }
        tokio::time::sleep(poll).await;
    }
}

/// Per-table DMS counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableStats {
    pub schema: String,
    pub table: String,
    pub inserts: i64,
    pub updates: i64,
    pub deletes: i64,
    pub full_load_rows: i64,
    pub state: Option<String>,
    pub last_update: Option<DateTime<Utc>>,
}

/// DescribeTableStatistics, behind a trait because moto does not implement it.
pub trait TableStatisticsApi {
    fn table_statistics(
        &self,
        task_arn: &str,
    ) -> impl Future<Output = Result<Vec<TableStats>, AwsError>> + Send;
}

/// DescribeTableStatistics through the SDK.
pub struct SdkTableStatistics<'a> {
    pub clients: &'a AwsClients,
}

impl TableStatisticsApi for SdkTableStatistics<'_> {
    async fn table_statistics(&self, task_arn: &str) -> Result<Vec<TableStats>, AwsError> {
        let mut stats = Vec::new();
        let mut marker = None;
        loop {
            let out = self
                .clients
                .dms
                .describe_table_statistics()
                .replication_task_arn(task_arn)
                .set_marker(marker)
                .send()
                .await
                .api("dms", "DescribeTableStatistics")?;
            for t in out.table_statistics() {
                stats.push(TableStats {
                    schema: t.schema_name().unwrap_or_default().to_string(),
                    table: t.table_name().unwrap_or_default().to_string(),
                    inserts: t.inserts(),
                    updates: t.updates(),
                    deletes: t.deletes(),
                    full_load_rows: t.full_load_rows(),
                    state: t.table_state().map(str::to_string),
                    last_update: t
                        .last_update_time()
                        .and_then(|d| DateTime::from_timestamp(d.secs(), d.subsec_nanos())),
                });
            }
            marker = out.marker().map(str::to_string);
            if marker.is_none() {
                return Ok(stats);
            }
        }
    }
}

/// Answers from a recorded `dms-describe-table-statistics.json` (AWS CLI output: times as epoch
/// seconds).
pub struct RecordedTableStatistics {
    pub path: PathBuf,
}

impl TableStatisticsApi for RecordedTableStatistics {
    async fn table_statistics(&self, _task_arn: &str) -> Result<Vec<TableStats>, AwsError> {
        let value = read_recorded(&self.path)?;
        let tables = value["TableStatistics"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(tables
            .iter()
            .map(|t| TableStats {
                schema: t["SchemaName"].as_str().unwrap_or_default().to_string(),
                table: t["TableName"].as_str().unwrap_or_default().to_string(),
                inserts: t["Inserts"].as_i64().unwrap_or(0),
                updates: t["Updates"].as_i64().unwrap_or(0),
                deletes: t["Deletes"].as_i64().unwrap_or(0),
                full_load_rows: t["FullLoadRows"].as_i64().unwrap_or(0),
                state: t["TableState"].as_str().map(str::to_string),
                last_update: t["LastUpdateTime"].as_f64().and_then(|s| {
                    DateTime::from_timestamp(
                        s.trunc() as i64,
                        ((s.fract() * 1e9) as u32).min(999_999_999),
                    )
                }),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_or_resume_follows_the_task_status() {
        assert_eq!(decide_start("ready", false), StartDecision::Start);
        assert_eq!(decide_start("stopped", false), StartDecision::Start);
        assert_eq!(decide_start("stopped", true), StartDecision::Resume);
        assert_eq!(decide_start("failed", true), StartDecision::Resume);
        assert_eq!(decide_start("running", true), StartDecision::Nothing);
        assert_eq!(decide_start("starting", false), StartDecision::Nothing);
        assert_eq!(decide_start("creating", false), StartDecision::Wait);
        assert_eq!(decide_start("stopping", true), StartDecision::Wait);
        assert_eq!(decide_start("deleting", true), StartDecision::Refuse);
    }
}
