//! `status` on AWS: the stack, CDC (DMS task state, per-table counters and the age of the last
//! applied change), the broker (MSK state and brokers), the processor service, and the last Delta
//! commit of every lake table. Each part that cannot be read says why; none stops the others.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::layout::LakeLayout;
use crate::config::spec::ConfigSpec;
use crate::error_chain::error_chain;
use crate::pipeline::schema::{METRICS_TABLE, quarantine_table_name};
use crate::target::aws::assets;
use crate::target::aws::clients::AwsClients;
use crate::target::aws::dms::{self, TableStatisticsApi, TableStats, TaskInfo};
use crate::target::aws::ecs::{self, ServiceCounts};
use crate::target::aws::error::AwsError;
use crate::target::aws::msk::{ClusterSummary, MskApi, scram_brokers};
use crate::target::aws::outputs::StackOutputs;
use crate::target::aws::post_deploy::split_s3_url;
use crate::target::aws::stack::Stacks;

/// A part of the status: its value, or why it could not be read.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part<T> {
    Ok(T),
    Unavailable(String),
}

impl<T> Part<T> {
    fn from(result: Result<T, AwsError>) -> Self {
        match result {
            Ok(v) => Part::Ok(v),
            Err(e) => Part::Unavailable(error_chain(&e)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StackStatus {
    pub name: String,
    pub status: String,
    pub reason: Option<String>,
    pub last_updated: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CdcStatus {
    pub task: TaskInfo,
    pub tables: Part<Vec<TableStats>>,
    /// Seconds since DMS last applied a change to any table (its tables' LastUpdateTime).
    pub last_change_age_secs: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokerStatus {
    pub cluster: ClusterSummary,
    pub scram_brokers: Option<String>,
    /// The stack output the tasks were given matches the brokers MSK reports now.
    pub matches_stack_output: bool,
}

/// The last commit of one lake table.
#[derive(Debug, Clone, Serialize)]
pub struct TableCommit {
    pub table: String,
    pub location: String,
    pub version: Option<u64>,
    pub committed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub stack: StackStatus,
    pub cdc: Part<CdcStatus>,
    pub broker: Part<BrokerStatus>,
    pub processor: Part<Option<ServiceCounts>>,
    pub tables: Vec<Part<TableCommit>>,
}

/// Gathers the status of a deployed stack.
pub async fn gather(
    clients: &AwsClients,
    stack: &str,
    config: &ConfigSpec,
    msk: &impl MskApi,
    table_stats: &impl TableStatisticsApi,
) -> Result<StatusReport, AwsError> {
    let stacks = Stacks::new(clients, true);
    let info = stacks
        .describe(stack)
        .await?
        .ok_or_else(|| AwsError::StackNotFound {
            stack: stack.to_string(),
        })?;
    let stack_status = StackStatus {
        name: info.name.clone(),
        status: info.status.clone(),
        reason: info.status_reason.clone(),
        last_updated: info.last_updated,
    };
    let outputs = info.typed_outputs()?;
    let cdc = Part::from(cdc_status(clients, &outputs, table_stats).await);
    let broker = Part::from(broker_status(msk, &outputs).await);
    let processor = Part::from(
        ecs::service_counts(
            clients,
            &outputs.ecs_cluster_name,
            &outputs.processor_service_name,
        )
        .await,
    );
    let account = clients.account_id().await?.to_string();
    let layout = LakeLayout::aws(config, stack, &account);
    let mut tables = Vec::new();
    let mut names: Vec<(String, String)> = Vec::new();
    for t in config.source_tables() {
        names.push((t.name.clone(), layout.data_table(&t.name)));
        names.push((
            quarantine_table_name(&t.name),
            layout.quarantine_table(&t.name),
        ));
    }
    names.push((METRICS_TABLE.to_string(), layout.metrics_table()));
    for (table, location) in names {
        tables.push(Part::from(last_commit(clients, &table, &location).await));
    }
    Ok(StatusReport {
        stack: stack_status,
        cdc,
        broker,
        processor,
        tables,
    })
}

async fn cdc_status(
    clients: &AwsClients,
    outputs: &StackOutputs,
    table_stats: &impl TableStatisticsApi,
) -> Result<CdcStatus, AwsError> {
    let task = dms::describe_task(clients, &outputs.dms_task_arn).await?;
    let tables = Part::from(table_stats.table_statistics(&outputs.dms_task_arn).await);
    let last_change_age_secs = match &tables {
        Part::Ok(t) => t
            .iter()
            .filter_map(|s| s.last_update)
            .max()
            .map(|t| (Utc::now() - t).num_seconds().max(0)),
        Part::Unavailable(_) => None,
    };
    Ok(CdcStatus {
        task,
        tables,
        last_change_age_secs,
    })
}

async fn broker_status(
    msk: &impl MskApi,
    outputs: &StackOutputs,
) -> Result<BrokerStatus, AwsError> {
    let cluster = msk.cluster(&outputs.msk_cluster_arn).await?;
    let brokers = msk.bootstrap_brokers(&outputs.msk_cluster_arn).await?;
    let scram = scram_brokers(&brokers).map(str::to_string);
    Ok(BrokerStatus {
        matches_stack_output: scram.as_deref() == Some(outputs.msk_bootstrap_servers.as_str()),
        cluster,
        scram_brokers: scram,
    })
}

/// The newest commit in a table's `_delta_log/`: from `_last_checkpoint` on, the highest
/// `<version>.json`, with its write time.
pub async fn last_commit(
    clients: &AwsClients,
    table: &str,
    location: &str,
) -> Result<TableCommit, AwsError> {
    let (bucket, prefix) = split_s3_url(location).ok_or_else(|| AwsError::Unexpected {
        what: format!("table {table}"),
        detail: format!("{location:?} is not an s3:// URL"),
    })?;
    let log = if prefix.is_empty() {
        "_delta_log/".to_string()
    } else {
        format!("{prefix}/_delta_log/")
    };
    let checkpoint =
        match assets::get_small_object(clients, bucket, &format!("{log}_last_checkpoint")).await {
            Ok(c) => c,
            Err(e) if e.is_code("NoSuchBucket") => None,
            Err(e) => return Err(e),
        };
    let start_after = checkpoint
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["version"].as_u64())
        .map(|v| format!("{log}{v:020}"));
    let keys = match assets::list_keys(clients, bucket, &log, start_after.as_deref()).await {
        Ok(k) => k,
        Err(e) if e.is_code("NoSuchBucket") => Vec::new(),
        Err(e) => return Err(e),
    };
    let newest = keys
        .iter()
        .filter_map(|(k, t)| commit_version(k.strip_prefix(log.as_str())?).map(|v| (v, *t)))
        .max_by_key(|(v, _)| *v);
    Ok(TableCommit {
        table: table.to_string(),
        location: location.to_string(),
        version: newest.map(|(v, _)| v),
        committed_at: newest.and_then(|(_, t)| t),
    })
}

/// The version of a Delta commit file name (`00000000000000000042.json` → 42).
pub fn commit_version(file: &str) -> Option<u64> {
    let digits = file.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_commit_files_have_versions() {
        assert_eq!(commit_version("00000000000000000042.json"), Some(42));
        assert_eq!(
            commit_version("00000000000000000010.checkpoint.parquet"),
            None
        );
        assert_eq!(commit_version("_last_checkpoint"), None);
        assert_eq!(commit_version("42.json"), None);
        assert_eq!(commit_version("00000000000000000042.crc"), None);
    }
}
