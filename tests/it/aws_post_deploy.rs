//! `post-deploy` against moto: the jobs run as Fargate tasks of the jobs task definition in the
//! private subnets with the right command overrides (read back with DescribeTasks), DMS is
//! connection-tested and started, the processor scales up, and the lake tables whose Delta log
//! exists are registered in Athena as native Delta tables. A failing DMS step is reported while the
//! other steps still run.

use std::collections::BTreeSet;
use std::time::Duration;

use dqetl::config::spec::ConfigSpec;
use dqetl::config::{LoadContext, load_spec};
use dqetl::target::aws::clients::AwsClients;
use dqetl::target::aws::ecs;
use dqetl::target::aws::outputs::StackOutputs;
use dqetl::target::aws::post_deploy::{
    PostDeploy, PostDeployOptions, PostDeployReport, StepOutcome, Timing,
};

use crate::aws_support::{ACCOUNT, Moto, create_dms, create_minimal_stack, fixture, put};

fn config(stack: &str) -> ConfigSpec {
    let ctx = LoadContext {
        stack_name: stack.into(),
        account_id: Some(ACCOUNT.into()),
    };
    load_spec(&fixture("tables.yaml"), &ctx).expect("the test config is valid")
}

fn timing() -> Timing {
    Timing {
        poll: Duration::from_millis(20),
        job_timeout: Duration::from_secs(30),
        connection_timeout: Duration::from_secs(10),
        tables_timeout: Duration::from_millis(200),
    }
}

async fn post_deploy(
    clients: &AwsClients,
    stack: &str,
    outputs: &StackOutputs,
    options: &PostDeployOptions,
) -> PostDeployReport {
    let spec = config(stack);
    let post = PostDeploy {
        clients,
        stack,
        outputs,
        config: &spec,
        options,
        timing: timing(),
    };
    post.run(&|_| {}, &|_, _| {})
        .await
        .expect("post-deploy runs")
}

fn outcome<'a>(report: &'a PostDeployReport, step: &str) -> &'a StepOutcome {
    &report
        .steps
        .iter()
        .find(|s| s.step == step)
        .unwrap_or_else(|| panic!("no step {step}: {report:?}"))
        .outcome
}

/// The command overrides of every task started in the cluster, with their network settings.
async fn started_tasks(
    clients: &AwsClients,
    outputs: &StackOutputs,
) -> Vec<(Vec<String>, String, Vec<String>)> {
    let arns = clients
        .ecs
        .list_tasks()
        .cluster(&outputs.ecs_cluster_name)
        .send()
        .await
        .unwrap()
        .task_arns()
        .to_vec();
    if arns.is_empty() {
        return Vec::new();
    }
    let described = clients
        .ecs
        .describe_tasks()
        .cluster(&outputs.ecs_cluster_name)
        .set_tasks(Some(arns))
        .send()
        .await
        .unwrap();
    described
        .tasks()
        .iter()
        .map(|t| {
            let command = t
                .overrides()
                .and_then(|o| {
                    o.container_overrides()
                        .iter()
                        .find(|c| c.name() == Some(ecs::CONTAINER))
                })
                .map(|c| c.command().to_vec())
                .unwrap_or_default();
            let subnets = t
                .attachments()
                .iter()
                .flat_map(|a| a.details())
                .filter(|d| d.name() == Some("subnetId"))
                .filter_map(|d| d.value().map(str::to_string))
                .collect();
            (
                command,
                t.task_definition_arn().unwrap_or_default().to_string(),
                subnets,
            )
        })
        .collect()
}

async fn athena_queries(clients: &AwsClients) -> Vec<String> {
    let ids = clients
        .athena
        .list_query_executions()
        .send()
        .await
        .unwrap()
        .query_execution_ids()
        .to_vec();
    let mut queries = Vec::new();
    for id in ids {
        let q = clients
            .athena
            .get_query_execution()
            .query_execution_id(id)
            .send()
            .await
            .unwrap();
        queries.push(
            q.query_execution()
                .and_then(|e| e.query())
                .unwrap_or_default()
                .to_string(),
        );
    }
    queries.sort();
    queries
}

#[tokio::test]
async fn post_deploy_runs_the_jobs_starts_cdc_scales_the_processor_and_registers_tables() {
    let moto = Moto::start();
    let clients = moto.clients().await;
    let stack = "fleet-post";
    let outputs = create_minimal_stack(&clients, stack).await;
    create_dms(&clients, stack).await;
    // The processor has created two of the five lake tables so far.
    put(
        &clients,
        &outputs.delta_bucket,
        "vehicles/_delta_log/00000000000000000000.json",
        b"{}",
    )
    .await;
    put(
        &clients,
        &outputs.delta_bucket,
        "dq_metrics/_delta_log/00000000000000000000.json",
        b"{}",
    )
    .await;

    let report = post_deploy(&clients, stack, &outputs, &PostDeployOptions::default()).await;

    // Jobs: the tables job creates the slot DMS reads, topics are synced; both ran to exit 0.
    let tasks = started_tasks(&clients, &outputs).await;
    let commands: BTreeSet<Vec<String>> = tasks.iter().map(|(c, _, _)| c.clone()).collect();
    let expected: BTreeSet<Vec<String>> = [
        vec![
            "sql",
            "--ddl",
            "--create-replication-slot",
            "dqetl_fleet_post",
        ],
        vec!["topics", "sync"],
    ]
    .into_iter()
    .map(|c| c.into_iter().map(str::to_string).collect())
    .collect();
    assert_eq!(commands, expected);
    // (moto's CloudFormation drops NetworkMode, so its tasks carry no ENI attachment to read the
    // subnet back from; the network configuration comes from the stack outputs.)
    for (_, task_definition, _) in &tasks {
        assert_eq!(
            task_definition, &outputs.jobs_task_definition_arn,
            "jobs run the jobs task definition"
        );
    }
    assert!(
        matches!(outcome(&report, "tables"), StepOutcome::Done(_)),
        "{report:?}"
    );
    assert!(
        matches!(outcome(&report, "topics"), StepOutcome::Done(_)),
        "{report:?}"
    );
    assert_eq!(report.jobs.len(), 2);
    assert!(report.jobs.iter().all(|j| j.exit_code == Some(0)));

    // CDC: both endpoints were tested, the task started.
    let connections = clients.dms.describe_connections().send().await.unwrap();
    let tested: BTreeSet<&str> = connections
        .connections()
        .iter()
        .filter_map(|c| c.endpoint_arn())
        .collect();
    assert_eq!(
        tested,
        BTreeSet::from([
            outputs.dms_source_endpoint_arn.as_str(),
            outputs.dms_target_endpoint_arn.as_str()
        ]),
        "{report:?}"
    );
    let task = dqetl::target::aws::dms::describe_task(&clients, &outputs.dms_task_arn)
        .await
        .unwrap();
    assert_eq!(task.status, "running");
    assert!(
        matches!(outcome(&report, "cdc"), StepOutcome::Done(d) if d.starts_with("replication started")),
        "{report:?}"
    );

    // The processor went from 0 to 1 task.
    let counts = ecs::service_counts(
        &clients,
        &outputs.ecs_cluster_name,
        &outputs.processor_service_name,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(counts.desired, 1);

    // Athena: the two existing tables are registered as native Delta tables; the other three wait.
    let db = "fleet_post_db";
    assert_eq!(
        athena_queries(&clients).await,
        vec![
            format!(
                "CREATE EXTERNAL TABLE IF NOT EXISTS `{db}`.`dq_metrics` LOCATION 's3://{stack}-delta-{ACCOUNT}/dq_metrics/' TBLPROPERTIES ('table_type'='DELTA')"
            ),
            format!(
                "CREATE EXTERNAL TABLE IF NOT EXISTS `{db}`.`vehicles` LOCATION 's3://{stack}-delta-{ACCOUNT}/vehicles/' TBLPROPERTIES ('table_type'='DELTA')"
            ),
        ]
    );
    for pending in ["vehicles_quarantine", "drivers", "drivers_quarantine"] {
        assert!(
            matches!(
                outcome(&report, &format!("query table {pending}")),
                StepOutcome::Pending(_)
            ),
            "{report:?}"
        );
    }
    assert!(report.failures().is_empty(), "{report:?}");

    // A rerun: DMS already runs, the processor is already up, registration is idempotent SQL.
    let again = post_deploy(
        &clients,
        stack,
        &outputs,
        &PostDeployOptions {
            skip_tables: true,
            skip_topics: true,
            ..Default::default()
        },
    )
    .await;
    assert!(
        matches!(outcome(&again, "cdc"), StepOutcome::Done(d) if d.contains("already running")),
        "{again:?}"
    );
    assert!(
        matches!(outcome(&again, "processor"), StepOutcome::Done(d) if d.contains("already at 1")),
        "{again:?}"
    );
    assert!(
        matches!(outcome(&again, "topics"), StepOutcome::Skipped(_)),
        "{again:?}"
    );
    // The slot job runs again (it is idempotent); no table or topic job does.
    assert!(
        matches!(outcome(&again, "replication slot"), StepOutcome::Done(_)),
        "{again:?}"
    );
    let tasks = started_tasks(&clients, &outputs).await;
    assert_eq!(tasks.len(), 3, "{tasks:?}");
}

#[tokio::test]
async fn a_failing_dms_step_is_reported_and_the_other_steps_still_run() {
    let moto = Moto::start();
    let clients = moto.clients().await;
    let stack = "fleet-nodms";
    let outputs = create_minimal_stack(&clients, stack).await;
    // No DMS resources: the connection test cannot find the replication instance.
    put(
        &clients,
        &outputs.delta_bucket,
        "vehicles/_delta_log/00000000000000000000.json",
        b"{}",
    )
    .await;

    let options = PostDeployOptions {
        skip_tables: true,
        skip_topics: true,
        generate_data: true,
        ..Default::default()
    };
    let report = post_deploy(&clients, stack, &outputs, &options).await;

    match outcome(&report, "cdc") {
        StepOutcome::Failed(msg) => assert!(
            msg.contains("TestConnection") && msg.contains("ResourceNotFoundFault"),
            "{msg}"
        ),
        other => panic!("expected the cdc step to fail, got {other:?}"),
    }
    assert_eq!(report.failures().len(), 1, "{report:?}");
    let counts = ecs::service_counts(
        &clients,
        &outputs.ecs_cluster_name,
        &outputs.processor_service_name,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(counts.desired, 1, "the processor still scaled up");
    let tasks = started_tasks(&clients, &outputs).await;
    let commands: BTreeSet<Vec<String>> = tasks.into_iter().map(|(c, _, _)| c).collect();
    let expected: BTreeSet<Vec<String>> = [
        // --skip-tables without --skip-cdc still creates the replication slot.
        vec!["sql", "--create-replication-slot", "dqetl_fleet_nodms"],
        vec!["generate-data", "--duration", "0s"],
    ]
    .into_iter()
    .map(|c| c.into_iter().map(str::to_string).collect())
    .collect();
    assert_eq!(commands, expected, "the slot and data jobs still ran");
    assert!(
        matches!(outcome(&report, "replication slot"), StepOutcome::Done(_)),
        "{report:?}"
    );
    assert!(
        matches!(outcome(&report, "data"), StepOutcome::Done(_)),
        "{report:?}"
    );
    assert!(
        matches!(
            outcome(&report, "query table vehicles"),
            StepOutcome::Done(_)
        ),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_jobs_log_lines_are_streamed_in_order_as_they_arrive() {
    let moto = Moto::start();
    let clients = moto.clients().await;
    let stack = "fleet-logs";
    let outputs = create_minimal_stack(&clients, stack).await;
    let jobs = ecs::Jobs {
        clients: &clients,
        outputs: &outputs,
        poll: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
    };
    let job = ecs::JobCommand::SyncTopics;
    let arn = jobs.start(&job).await.unwrap();

    // What the awslogs driver writes for this task.
    let stream = ecs::log_stream_name("jobs", &arn);
    assert!(stream.starts_with("jobs/dqetl/"), "{stream}");
    clients
        .logs
        .create_log_stream()
        .log_group_name(&outputs.log_group_name)
        .log_stream_name(&stream)
        .send()
        .await
        .unwrap();
    let put_lines = |lines: &[&str], t0: i64| {
        let events: Vec<_> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                    .timestamp(t0 + i as i64)
                    .message(*l)
                    .build()
                    .unwrap()
            })
            .collect();
        clients
            .logs
            .put_log_events()
            .log_group_name(&outputs.log_group_name)
            .log_stream_name(&stream)
            .set_log_events(Some(events))
            .send()
    };
    let now = chrono::Utc::now().timestamp_millis();
    put_lines(
        &["created topic cdc-vehicles", "created topic cdc-drivers"],
        now,
    )
    .await
    .unwrap();

    let mut follower = ecs::LogFollower::new(outputs.log_group_name.clone(), stream.clone());
    assert_eq!(
        follower.poll(&clients).await.unwrap(),
        ["created topic cdc-vehicles", "created topic cdc-drivers"]
    );
    assert!(
        follower.poll(&clients).await.unwrap().is_empty(),
        "nothing new, nothing repeated"
    );
    put_lines(&["topic cdc-default exists"], now + 10)
        .await
        .unwrap();
    assert_eq!(
        follower.poll(&clients).await.unwrap(),
        ["topic cdc-default exists"]
    );

    // Following the task to its end prints every line once, labelled by the job.
    let seen = std::sync::Mutex::new(Vec::new());
    let result = jobs
        .follow(&job, &arn, &|label, line| {
            seen.lock().unwrap().push(format!("[{label}] {line}"))
        })
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "[topics] created topic cdc-vehicles",
            "[topics] created topic cdc-drivers",
            "[topics] topic cdc-default exists"
        ]
    );
    assert_eq!(result.log_lines, 3);
    assert_eq!(result.exit_code, Some(0));
    assert!(result.succeeded());
}
