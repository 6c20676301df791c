//! `post-deploy` on AWS: create the source tables and the replication slot, sync topics (ECS jobs,
//! in parallel), test the DMS connections and start or resume CDC, scale the processor up, seed
//! data, register the lake tables for Athena, and optionally keep generating data.
//!
//! A failing step is reported and the others still run (the original aborted the whole script on a
//! failed DMS connection test); the report says which steps failed.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::layout::LakeLayout;
use crate::config::spec::ConfigSpec;
use crate::error_chain::error_chain;
use crate::pipeline::schema::{METRICS_TABLE, quarantine_table_name};
use crate::target::aws::athena::{Athena, register_delta_table_sql};
use crate::target::aws::clients::AwsClients;
use crate::target::aws::dms::{self, StartDecision};
use crate::target::aws::ecs::{self, JobCommand, JobResult, Jobs};
use crate::target::aws::error::{ApiResultExt, AwsError};
use crate::target::aws::outputs::StackOutputs;

/// Which steps run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostDeployOptions {
    pub skip_tables: bool,
    pub skip_topics: bool,
    pub skip_cdc: bool,
    pub skip_processor: bool,
    /// Seed sample data (good and deliberately bad).
    pub generate_data: bool,
    /// After seeding, keep generating change traffic this long (with `generate_data`).
    pub duration: Option<Duration>,
}

/// Waits and polls; tests shrink them.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub poll: Duration,
    pub job_timeout: Duration,
    pub connection_timeout: Duration,
    /// How long to wait for the processor to create the Delta tables before registering them.
    pub tables_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            poll: Duration::from_secs(5),
            job_timeout: Duration::from_secs(15 * 60),
            connection_timeout: Duration::from_secs(5 * 60),
            tables_timeout: Duration::from_secs(5 * 60),
        }
    }
}

/// How one step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum StepOutcome {
    Done(String),
    Skipped(String),
    /// Not done yet for a reason that resolves itself (a table the processor has not created).
    Pending(String),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    pub step: String,
    #[serde(flatten)]
    pub outcome: StepOutcome,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PostDeployReport {
    pub steps: Vec<StepReport>,
    pub jobs: Vec<JobResult>,
}

impl PostDeployReport {
    pub fn failures(&self) -> Vec<&StepReport> {
        self.steps
            .iter()
            .filter(|s| matches!(s.outcome, StepOutcome::Failed(_)))
            .collect()
    }

    fn push(&mut self, step: &str, outcome: StepOutcome) {
        self.steps.push(StepReport {
            step: step.to_string(),
            outcome,
        });
    }
}

/// One post-deploy run.
pub struct PostDeploy<'a> {
    pub clients: &'a AwsClients,
    pub stack: &'a str,
    pub outputs: &'a StackOutputs,
    pub config: &'a ConfigSpec,
    pub options: &'a PostDeployOptions,
    pub timing: Timing,
}

impl PostDeploy<'_> {
    /// Runs the steps in order. `say` gets progress lines; `on_log` gets job log lines (job label,
    /// line).
    pub async fn run(
        &self,
        say: &(dyn Fn(&str) + Sync),
        on_log: &(dyn Fn(&str, &str) + Sync),
    ) -> Result<PostDeployReport, AwsError> {
        let mut report = PostDeployReport::default();
        let o = self.options;
        let jobs = Jobs {
            clients: self.clients,
            outputs: self.outputs,
            poll: self.timing.poll,
            timeout: self.timing.job_timeout,
        };

        // Source tables + replication slot, and topics: independent, so in parallel.
        let slot = if o.skip_cdc {
            None
        } else {
            self.outputs.dms_slot_name.clone()
        };
        let sql = (!o.skip_tables || slot.is_some()).then_some(JobCommand::Sql {
            ddl: !o.skip_tables,
            replication_slot: slot,
        });
        let topics = (!o.skip_topics).then_some(JobCommand::SyncTopics);
        for job in sql.iter().chain(topics.iter()) {
            say(&format!(
                "running job {}: dqetl {}",
                job.label(),
                job.argv().join(" ")
            ));
        }
        let (sql_result, topics_result) = futures::join!(
            run_optional(&jobs, sql.as_ref(), on_log),
            run_optional(&jobs, topics.as_ref(), on_log)
        );
        // With --skip-tables the SQL job only creates the replication slot.
        let sql_step = if o.skip_tables && sql.is_some() {
            "replication slot"
        } else {
            "tables"
        };
        record_job(&mut report, sql_step, sql_result, "--skip-tables");
        record_job(&mut report, "topics", topics_result, "--skip-topics");

        if o.skip_cdc {
            report.push("cdc", StepOutcome::Skipped("--skip-cdc".into()));
        } else {
            say("testing the DMS endpoint connections");
            let outcome = self.start_cdc().await;
            if let StepOutcome::Failed(msg) = &outcome {
                say(&format!("CDC not started: {msg}"));
            }
            report.push("cdc", outcome);
        }

        // Whether the processor started (or new data arrived) in this run, so the tables it
        // creates are worth waiting for before registering them.
        let mut expect_new_tables = o.generate_data;
        if o.skip_processor {
            report.push("processor", StepOutcome::Skipped("--skip-processor".into()));
        } else {
            let (outcome, started) = self.scale_processor().await;
            expect_new_tables |= started;
            report.push("processor", outcome);
        }

        // The sample rows (and, with --duration, traffic for that long) go in before the tables
        // are registered, so the tables they create are registered in this run.
        if o.generate_data {
            let duration = o.duration.unwrap_or(Duration::ZERO);
            say(&if duration.is_zero() {
                "seeding sample data".to_string()
            } else {
                format!(
                    "seeding sample data, then generating for {}",
                    humantime::format_duration(duration)
                )
            });
            let generated = jobs
                .run(&JobCommand::GenerateData { duration }, on_log)
                .await;
            record_job(&mut report, "data", Some(generated), "");
        }

        say("registering the lake tables for Athena");
        for (step, outcome) in self.register_tables(expect_new_tables).await {
            report.push(&step, outcome);
        }
        Ok(report)
    }

    async fn start_cdc(&self) -> StepOutcome {
        let out = self.outputs;
        let endpoints = [
            out.dms_source_endpoint_arn.as_str(),
            out.dms_target_endpoint_arn.as_str(),
        ];
        let tested = dms::test_connections(
            self.clients,
            &out.dms_replication_instance_arn,
            &endpoints,
            self.timing.poll,
            self.timing.connection_timeout,
        )
        .await;
        let results = match tested {
            Ok(r) => r,
            Err(e) => {
                return StepOutcome::Failed(format!("DMS connection test: {}", error_chain(&e)));
            }
        };
        let bad: Vec<String> = results
            .iter()
            .filter(|r| !r.succeeded())
            .map(|r| {
                let which = if r.endpoint_arn == out.dms_source_endpoint_arn {
                    "source (RDS)"
                } else {
                    "target (MSK)"
                };
                format!(
                    "{which} endpoint {}: {}",
                    r.status,
                    r.message.as_deref().unwrap_or("no message")
                )
            })
            .collect();
        if !bad.is_empty() {
            return StepOutcome::Failed(format!(
                "DMS cannot reach its endpoints: {}; fix them and rerun with --skip-tables --skip-topics",
                bad.join("; ")
            ));
        }
        match dms::start_or_resume(
            self.clients,
            &out.dms_task_arn,
            self.timing.poll,
            self.timing.connection_timeout,
        )
        .await
        {
            Ok(started) => StepOutcome::Done(match started.decision {
                StartDecision::Start => {
                    format!("replication started (was {})", started.previous_status)
                }
                StartDecision::Resume => {
                    format!("replication resumed (was {})", started.previous_status)
                }
                _ => format!("replication already {}", started.previous_status),
            }),
            Err(e) => StepOutcome::Failed(format!("starting the DMS task: {}", error_chain(&e))),
        }
    }

    /// Scales the processor to at least one task; true when it was at zero.
    async fn scale_processor(&self) -> (StepOutcome, bool) {
        let out = self.outputs;
        let counts = match ecs::service_counts(
            self.clients,
            &out.ecs_cluster_name,
            &out.processor_service_name,
        )
        .await
        {
            Ok(Some(c)) => c,
            Ok(None) => {
                let missing = format!("service {} not found", out.processor_service_name);
                return (StepOutcome::Failed(missing), false);
            }
            Err(e) => return (StepOutcome::Failed(error_chain(&e)), false),
        };
        if counts.desired >= 1 {
            let already = format!(
                "already at {} task(s), {} running",
                counts.desired, counts.running
            );
            return (StepOutcome::Done(already), false);
        }
        match ecs::scale_service(
            self.clients,
            &out.ecs_cluster_name,
            &out.processor_service_name,
            1,
        )
        .await
        {
            Ok(()) => (StepOutcome::Done("scaled from 0 to 1 task".into()), true),
            Err(e) => (StepOutcome::Failed(error_chain(&e)), false),
        }
    }

    /// Every lake table (data, quarantine, metrics) whose Delta log exists gets an Athena table;
    /// tables the processor has not created yet are pending, and a rerun registers them.
    async fn register_tables(&self, wait_for_processor: bool) -> Vec<(String, StepOutcome)> {
        let account = match self.clients.account_id().await {
            Ok(a) => a.to_string(),
            Err(e) => return vec![("query tables".into(), StepOutcome::Failed(error_chain(&e)))],
        };
        let layout = LakeLayout::aws(self.config, self.stack, &account);
        let mut tables: Vec<(String, String)> = Vec::new();
        for t in self.config.source_tables() {
            tables.push((t.name.clone(), layout.data_table(&t.name)));
            tables.push((
                quarantine_table_name(&t.name),
                layout.quarantine_table(&t.name),
            ));
        }
        tables.push((METRICS_TABLE.to_string(), layout.metrics_table()));

        let deadline = Instant::now()
            + if wait_for_processor {
                self.timing.tables_timeout
            } else {
                Duration::ZERO
            };
        let mut present = vec![false; tables.len()];
        let mut errors: Vec<Option<String>> = vec![None; tables.len()];
        loop {
            for (i, (_, location)) in tables.iter().enumerate() {
                if present[i] {
                    continue;
                }
                match delta_log_exists(self.clients, location).await {
                    Ok(found) => present[i] = found,
                    Err(e) => errors[i] = Some(error_chain(&e)),
                }
            }
            if present.iter().all(|p| *p) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(self.timing.poll).await;
        }
        let athena = Athena {
            clients: self.clients,
            workgroup: &self.outputs.athena_work_group,
            database: &self.outputs.glue_database,
            poll: self.timing.poll.min(Duration::from_secs(1)),
            timeout: self.timing.job_timeout,
        };
        let mut out = Vec::new();
        for (i, (name, location)) in tables.iter().enumerate() {
            let step = format!("query table {name}");
            if let Some(e) = &errors[i] {
                out.push((
                    step,
                    StepOutcome::Failed(format!("checking {location}: {e}")),
                ));
                continue;
            }
            if !present[i] {
                out.push((step, StepOutcome::Pending(format!("no Delta log at {location} yet; rerun post-deploy once the processor has written it"))));
                continue;
            }
            let sql = register_delta_table_sql(&self.outputs.glue_database, name, location);
            out.push((
                step,
                match athena.run(&sql, |_| {}).await {
                    Ok(_) => StepOutcome::Done(location.clone()),
                    Err(e) => StepOutcome::Failed(error_chain(&e)),
                },
            ));
        }
        out
    }
}

async fn run_optional(
    jobs: &Jobs<'_>,
    job: Option<&JobCommand>,
    on_log: &(dyn Fn(&str, &str) + Sync),
) -> Option<Result<JobResult, AwsError>> {
    match job {
        Some(job) => Some(jobs.run(job, on_log).await),
        None => None,
    }
}

fn record_job(
    report: &mut PostDeployReport,
    step: &str,
    result: Option<Result<JobResult, AwsError>>,
    skipped_by: &str,
) {
    match result {
        None => report.push(step, StepOutcome::Skipped(skipped_by.to_string())),
        Some(Err(e)) => report.push(step, StepOutcome::Failed(error_chain(&e))),
        Some(Ok(job)) => {
            let outcome = if job.succeeded() {
                StepOutcome::Done(format!("task {} exited 0", short_task(&job.task_arn)))
            } else {
                StepOutcome::Failed(format!(
                    "task {} exited {}{}",
                    short_task(&job.task_arn),
                    job.exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "without an exit code".into()),
                    job.stopped_reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ))
            };
            report.push(step, outcome);
            report.jobs.push(job);
        }
    }
}

fn short_task(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Splits `s3://bucket/prefix` into bucket and prefix (without a trailing slash).
pub fn split_s3_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, prefix.trim_end_matches('/')))
}

/// True when a Delta table exists at the location (its `_delta_log/` holds an object).
pub async fn delta_log_exists(clients: &AwsClients, location: &str) -> Result<bool, AwsError> {
    let (bucket, prefix) = split_s3_url(location).ok_or_else(|| AwsError::Unexpected {
        what: "lake table location".into(),
        detail: format!("{location:?} is not an s3:// URL"),
    })?;
    let out = clients
        .s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(format!(
            "{}_delta_log/",
            if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            }
        ))
        .max_keys(1)
        .send()
        .await;
    match out.api("s3", "ListObjectsV2") {
        Ok(out) => Ok(out.key_count().unwrap_or(0) > 0 || !out.contents().is_empty()),
        Err(e) if e.is_code("NoSuchBucket") => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_s3_urls() {
        assert_eq!(split_s3_url("s3://b/vehicles/"), Some(("b", "vehicles")));
        assert_eq!(split_s3_url("s3://b/a/b"), Some(("b", "a/b")));
        assert_eq!(split_s3_url("s3://b"), Some(("b", "")));
        assert_eq!(split_s3_url("/local/path"), None);
    }
}
