//! ECS: one-off jobs (the same image as the processor with another command: create the source
//! tables, sync topics, seed data) run as Fargate tasks in the private subnets, their CloudWatch
//! logs streamed to the terminal; and the processor service's scale.

use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ContainerOverride, LaunchType, NetworkConfiguration,
    TaskOverride,
};
use serde::Serialize;

use crate::target::aws::clients::AwsClients;
use crate::target::aws::error::{ApiResultExt, AwsError};
use crate::target::aws::outputs::StackOutputs;

/// The container name in both task definitions.
pub const CONTAINER: &str = "dqetl";

/// Who started a task, as ECS records it (`startedBy`).
const STARTED_BY: &str = "dqetl-post-deploy";

/// A job the jobs task definition runs: the dqetl command line inside the image, which reads the
/// config baked into it and the credentials ECS injects from Secrets Manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum JobCommand {
    /// `dqetl sql --ddl [--create-replication-slot NAME]`: create the source tables from the
    /// config (idempotent DDL) and the logical replication slot DMS reads.
    Sql {
        ddl: bool,
        replication_slot: Option<String>,
    },
    /// `dqetl topics sync`: create every configured topic (and DMS's fallback topic) if missing.
    SyncTopics,
    /// `dqetl generate-data --duration D`: the sample rows (good and deliberately bad), then
    /// change traffic for D (`0s`: the sample rows only).
    GenerateData { duration: Duration },
}

impl JobCommand {
    /// The command override for the container (the image's entrypoint is dqetl).
    pub fn argv(&self) -> Vec<String> {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            JobCommand::Sql {
                ddl,
                replication_slot,
            } => {
                let mut argv = v(&["sql"]);
                if *ddl {
                    argv.push("--ddl".into());
                }
                if let Some(slot) = replication_slot {
                    argv.extend(["--create-replication-slot".to_string(), slot.clone()]);
                }
                argv
            }
            JobCommand::SyncTopics => v(&["topics", "sync"]),
            JobCommand::GenerateData { duration } => v(&[
                "generate-data",
                "--duration",
                &humantime::format_duration(*duration).to_string(),
            ]),
        }
    }

    /// A short label for log lines.
    pub fn label(&self) -> &'static str {
        match self {
            JobCommand::Sql { .. } => "tables",
            JobCommand::SyncTopics => "topics",
            JobCommand::GenerateData { .. } => "data",
        }
    }
}

/// How a job task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobResult {
    pub label: String,
    pub task_arn: String,
    pub exit_code: Option<i32>,
    pub stopped_reason: Option<String>,
    pub log_lines: usize,
}

impl JobResult {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// Runs one-off tasks and follows them.
pub struct Jobs<'a> {
    pub clients: &'a AwsClients,
    pub outputs: &'a StackOutputs,
    pub poll: Duration,
    /// Longest wait for one task (a `generate` job waits its duration on top).
    pub timeout: Duration,
}

impl Jobs<'_> {
    /// Starts a job task in the private subnets (no public IP) with the job's command.
    pub async fn start(&self, job: &JobCommand) -> Result<String, AwsError> {
        let network = NetworkConfiguration::builder()
            .awsvpc_configuration(
                AwsVpcConfiguration::builder()
                    .set_subnets(Some(self.outputs.private_subnet_ids.clone()))
                    .security_groups(&self.outputs.jobs_security_group_id)
                    .assign_public_ip(AssignPublicIp::Disabled)
                    .build()?,
            )
            .build();
        let overrides = TaskOverride::builder()
            .container_overrides(
                ContainerOverride::builder()
                    .name(CONTAINER)
                    .set_command(Some(job.argv()))
                    .build(),
            )
            .build();
        let out = self
            .clients
            .ecs
            .run_task()
            .cluster(&self.outputs.ecs_cluster_name)
            .task_definition(&self.outputs.jobs_task_definition_arn)
            .launch_type(LaunchType::Fargate)
            .count(1)
            .network_configuration(network)
            .overrides(overrides)
            .started_by(STARTED_BY)
            .send()
            .await
            .api("ecs", "RunTask")?;
        if let Some(f) = out.failures().first() {
            return Err(AwsError::Unexpected {
                what: format!("ecs RunTask for job {}", job.label()),
                detail: format!(
                    "{} {}",
                    f.reason().unwrap_or("failed"),
                    f.detail().unwrap_or_default()
                ),
            });
        }
        out.tasks()
            .first()
            .and_then(|t| t.task_arn())
            .map(str::to_string)
            .ok_or_else(|| AwsError::Unexpected {
                what: format!("ecs RunTask for job {}", job.label()),
                detail: "no task in the answer".into(),
            })
    }

    /// Waits for a job task to stop, passing each new log line to `on_line`, and reports its exit.
    pub async fn follow(
        &self,
        job: &JobCommand,
        task_arn: &str,
        on_line: &(dyn Fn(&str, &str) + Sync),
    ) -> Result<JobResult, AwsError> {
        let stream = log_stream_name("jobs", task_arn);
        let mut logs = LogFollower::new(self.outputs.log_group_name.clone(), stream);
        let extra = match job {
            JobCommand::GenerateData { duration } => *duration,
            _ => Duration::ZERO,
        };
        let deadline = Instant::now() + self.timeout + extra;
        let label = job.label();
        let mut lines = 0;
        loop {
            let task = self.describe(task_arn).await?;
            for line in logs.poll(self.clients).await? {
                on_line(label, &line);
                lines += 1;
            }
            if task.last_status.as_deref() == Some("STOPPED") {
                // CloudWatch delivers the last lines a little after the task stops.
                for _ in 0..3 {
                    let tail = logs.poll(self.clients).await?;
                    if tail.is_empty() {
                        break;
                    }
                    for line in tail {
                        on_line(label, &line);
                        lines += 1;
                    }
                }
                return Ok(JobResult {
                    label: label.to_string(),
                    task_arn: task_arn.to_string(),
                    exit_code: task.exit_code,
                    stopped_reason: task.stopped_reason,
                    log_lines: lines,
                });
            }
            if Instant::now() >= deadline {
                return Err(AwsError::Timeout {
                    what: format!("job {label} ({task_arn})"),
                    waited: self.timeout + extra,
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Starts a job and follows it to its end.
    pub async fn run(
        &self,
        job: &JobCommand,
        on_line: &(dyn Fn(&str, &str) + Sync),
    ) -> Result<JobResult, AwsError> {
        let arn = self.start(job).await?;
        self.follow(job, &arn, on_line).await
    }

    async fn describe(&self, task_arn: &str) -> Result<TaskState, AwsError> {
        let out = self
            .clients
            .ecs
            .describe_tasks()
            .cluster(&self.outputs.ecs_cluster_name)
            .tasks(task_arn)
            .send()
            .await
            .api("ecs", "DescribeTasks")?;
        let task = out.tasks().first().ok_or_else(|| AwsError::Unexpected {
            what: format!("ecs task {task_arn}"),
            detail: "DescribeTasks returned no task".into(),
        })?;
        // The jobs task definition has one container, `dqetl`; a nameless single container is
        // that one (moto drops container names when CloudFormation updates a task definition).
        let containers = task.containers();
        let container =
            containers
                .iter()
                .find(|c| c.name() == Some(CONTAINER))
                .or(if containers.len() == 1 {
                    containers.first()
                } else {
                    None
                });
        Ok(TaskState {
            last_status: task.last_status().map(str::to_string),
            exit_code: container.and_then(|c| c.exit_code()),
            stopped_reason: task
                .stopped_reason()
                .map(str::to_string)
                .filter(|r| !r.is_empty())
                .or_else(|| container.and_then(|c| c.reason()).map(str::to_string)),
        })
    }
}

struct TaskState {
    last_status: Option<String>,
    exit_code: Option<i32>,
    stopped_reason: Option<String>,
}

/// The awslogs stream of a task: `<prefix>/<container>/<task id>`.
pub fn log_stream_name(prefix: &str, task_arn: &str) -> String {
    let task_id = task_arn.rsplit('/').next().unwrap_or(task_arn);
    format!("{prefix}/{CONTAINER}/{task_id}")
}

/// Reads a log stream from its start, a page at a time, remembering where it stopped.
pub struct LogFollower {
    group: String,
    stream: String,
    token: Option<String>,
}

impl LogFollower {
    pub fn new(group: String, stream: String) -> Self {
        LogFollower {
            group,
            stream,
            token: None,
        }
    }

    /// The lines that arrived since the last poll (none while the stream does not exist yet).
    pub async fn poll(&mut self, clients: &AwsClients) -> Result<Vec<String>, AwsError> {
        let mut lines = Vec::new();
        loop {
            let result = clients
                .logs
                .get_log_events()
                .log_group_name(&self.group)
                .log_stream_name(&self.stream)
                .start_from_head(true)
                .set_next_token(self.token.clone())
                .send()
                .await
                .api("logs", "GetLogEvents");
            let out = match result {
                Ok(out) => out,
                Err(e) if e.is_code("ResourceNotFoundException") => return Ok(lines),
                Err(e) => return Err(e),
            };
            let page: Vec<String> = out
                .events()
                .iter()
                .filter_map(|e| e.message().map(str::to_string))
                .collect();
            let next = out.next_forward_token().map(str::to_string);
            // The same forward token back means the end of the stream for now.
            let at_end = next.is_none() || next == self.token;
            self.token = next.or(self.token.take());
            let empty = page.is_empty();
            lines.extend(page);
            if at_end || empty {
                return Ok(lines);
            }
        }
    }
}

/// Running and desired counts of the processor service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ServiceCounts {
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
}

/// The service's counts; None when it does not exist (or is inactive).
pub async fn service_counts(
    clients: &AwsClients,
    cluster: &str,
    service: &str,
) -> Result<Option<ServiceCounts>, AwsError> {
    let result = clients
        .ecs
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .api("ecs", "DescribeServices");
    let out = match result {
        Ok(out) => out,
        Err(e) if e.is_code("ClusterNotFoundException") => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(out
        .services()
        .iter()
        .find(|s| s.status() != Some("INACTIVE"))
        .map(|s| ServiceCounts {
            desired: s.desired_count(),
            running: s.running_count(),
            pending: s.pending_count(),
        }))
}

/// Sets the service's desired count.
pub async fn scale_service(
    clients: &AwsClients,
    cluster: &str,
    service: &str,
    desired: i32,
) -> Result<(), AwsError> {
    clients
        .ecs
        .update_service()
        .cluster(cluster)
        .service(service)
        .desired_count(desired)
        .send()
        .await
        .api("ecs", "UpdateService")?;
    Ok(())
}

/// Stops every running task of the cluster (service tasks and jobs); returns how many.
pub async fn stop_all_tasks(
    clients: &AwsClients,
    cluster: &str,
    reason: &str,
) -> Result<usize, AwsError> {
    let mut arns = Vec::new();
    let mut token = None;
    loop {
        let result = clients
            .ecs
            .list_tasks()
            .cluster(cluster)
            .set_next_token(token)
            .send()
            .await
            .api("ecs", "ListTasks");
        let out = match result {
            Ok(out) => out,
            Err(e) if e.is_code("ClusterNotFoundException") => return Ok(0),
            Err(e) => return Err(e),
        };
        arns.extend(out.task_arns().iter().cloned());
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    for arn in &arns {
        clients
            .ecs
            .stop_task()
            .cluster(cluster)
            .task(arn)
            .reason(reason)
            .send()
            .await
            .api("ecs", "StopTask")?;
    }
    Ok(arns.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_commands_are_dqetl_command_lines() {
        let sql = JobCommand::Sql {
            ddl: true,
            replication_slot: Some("dqetl_fleet".into()),
        };
        assert_eq!(
            sql.argv(),
            vec!["sql", "--ddl", "--create-replication-slot", "dqetl_fleet"]
        );
        assert_eq!(
            JobCommand::Sql {
                ddl: true,
                replication_slot: None
            }
            .argv(),
            vec!["sql", "--ddl"]
        );
        assert_eq!(JobCommand::SyncTopics.argv(), vec!["topics", "sync"]);
        assert_eq!(
            JobCommand::GenerateData {
                duration: Duration::ZERO
            }
            .argv(),
            vec!["generate-data", "--duration", "0s"]
        );
        assert_eq!(
            JobCommand::GenerateData {
                duration: Duration::from_secs(600)
            }
            .argv(),
            vec!["generate-data", "--duration", "10m"]
        );
    }

    #[test]
    fn log_streams_follow_the_awslogs_naming() {
        assert_eq!(
            log_stream_name(
                "jobs",
                "arn:aws:ecs:us-east-1:123456789012:task/fleet-cluster/0a1b2c"
            ),
            "jobs/dqetl/0a1b2c"
        );
    }
}
