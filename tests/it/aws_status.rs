//! `status` against moto plus recorded answers for what moto lacks (MSK, DMS table statistics):
//! stack state, DMS task and per-table counters, broker state and brokers, processor counts, and
//! the last Delta commit of every lake table read from `_delta_log/`.

use dqetl::config::spec::ConfigSpec;
use dqetl::config::{LoadContext, load_spec};
use dqetl::target::aws::dms::{self, RecordedTableStatistics, SdkTableStatistics};
use dqetl::target::aws::ecs;
use dqetl::target::aws::msk::RecordedMsk;
use dqetl::target::aws::status::{Part, TableCommit, gather};
use std::time::Duration;

use crate::aws_support::{ACCOUNT, Moto, create_dms, create_minimal_stack, fixture, put};

fn config(stack: &str) -> ConfigSpec {
    let ctx = LoadContext {
        stack_name: stack.into(),
        account_id: Some(ACCOUNT.into()),
    };
    load_spec(&fixture("tables.yaml"), &ctx).expect("valid config")
}

fn commit<'a>(tables: &'a [Part<TableCommit>], name: &str) -> &'a TableCommit {
    tables
        .iter()
        .find_map(|p| match p {
            Part::Ok(c) if c.table == name => Some(c),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no commit entry for {name}: {tables:?}"))
}

#[tokio::test]
async fn status_reports_every_stage_and_the_last_commit_per_table() {
    let moto = Moto::start();
    let clients = moto.clients().await;
    let stack = "fleet-status";
    let outputs = create_minimal_stack(&clients, stack).await;
    create_dms(&clients, stack).await;
    dms::start_or_resume(
        &clients,
        &outputs.dms_task_arn,
        Duration::from_millis(20),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    ecs::scale_service(
        &clients,
        &outputs.ecs_cluster_name,
        &outputs.processor_service_name,
        1,
    )
    .await
    .unwrap();

    // vehicles: three commits and a checkpoint at version 1; dq_metrics: one commit; drivers: none.
    let log = "vehicles/_delta_log";
    for v in 0..3 {
        put(
            &clients,
            &outputs.delta_bucket,
            &format!("{log}/{v:020}.json"),
            b"{}",
        )
        .await;
    }
    put(
        &clients,
        &outputs.delta_bucket,
        &format!("{log}/{:020}.checkpoint.parquet", 1),
        b"PAR1",
    )
    .await;
    put(
        &clients,
        &outputs.delta_bucket,
        &format!("{log}/_last_checkpoint"),
        br#"{"version":1,"size":4}"#,
    )
    .await;
    put(
        &clients,
        &outputs.delta_bucket,
        "dq_metrics/_delta_log/00000000000000000000.json",
        b"{}",
    )
    .await;

    let msk = RecordedMsk::new(fixture("recorded"));
    let stats = RecordedTableStatistics {
        path: fixture("recorded/dms-describe-table-statistics.json"),
    };
    let report = gather(&clients, stack, &config(stack), &msk, &stats)
        .await
        .unwrap();

    assert_eq!(report.stack.status, "CREATE_COMPLETE");
    let Part::Ok(cdc) = &report.cdc else {
        panic!("cdc unavailable: {:?}", report.cdc)
    };
    assert_eq!(cdc.task.status, "running");
    let Part::Ok(tables) = &cdc.tables else {
        panic!("{:?}", cdc.tables)
    };
    assert_eq!(
        tables.iter().map(|t| t.table.as_str()).collect::<Vec<_>>(),
        ["region", "nation"]
    );
    assert_eq!(tables[1].full_load_rows, 25);
    // The newest LastUpdateTime of the recorded tables is 1550788639 (2019-02-21T22:37:19Z).
    let expected_age = chrono::Utc::now().timestamp() - 1_550_788_639;
    let age = cdc.last_change_age_secs.expect("age of the last change");
    assert!((age - expected_age).abs() <= 5, "{age} vs {expected_age}");

    let Part::Ok(broker) = &report.broker else {
        panic!("{:?}", report.broker)
    };
    assert_eq!(broker.cluster.state, "ACTIVE");
    assert_eq!(broker.cluster.kafka_version.as_deref(), Some("2.2.1"));
    assert!(
        broker.matches_stack_output,
        "the stack's broker string is what MSK reports"
    );

    let Part::Ok(Some(processor)) = &report.processor else {
        panic!("{:?}", report.processor)
    };
    assert_eq!(processor.desired, 1);

    let vehicles = commit(&report.tables, "vehicles");
    assert_eq!(vehicles.version, Some(2));
    assert!(vehicles.committed_at.is_some());
    assert_eq!(
        vehicles.location,
        format!("s3://{stack}-delta-{ACCOUNT}/vehicles")
    );
    assert_eq!(commit(&report.tables, "dq_metrics").version, Some(0));
    assert_eq!(commit(&report.tables, "drivers").version, None);
    assert_eq!(commit(&report.tables, "drivers_quarantine").version, None);

    let text = dqetl::commands::status_aws::render(&report);
    assert!(text.contains("cdc        DMS task running"), "{text}");
    assert!(
        text.contains("broker     MSK ACTIVE, Kafka 2.2.1"),
        "{text}"
    );
    assert!(text.contains("processor  "), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("vehicles ") && l.contains("version 2, committed")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("drivers ") && l.contains("no commits yet")),
        "{text}"
    );
}

#[tokio::test]
async fn a_call_moto_lacks_makes_its_part_unavailable_without_failing_status() {
    let moto = Moto::start();
    let clients = moto.clients().await;
    let stack = "fleet-partial";
    create_minimal_stack(&clients, stack).await;
    create_dms(&clients, stack).await;
    let msk = RecordedMsk::new(fixture("recorded"));
    let stats = SdkTableStatistics { clients: &clients };
    let report = gather(&clients, stack, &config(stack), &msk, &stats)
        .await
        .unwrap();
    let Part::Ok(cdc) = &report.cdc else {
        panic!("{:?}", report.cdc)
    };
    assert_eq!(cdc.task.status, "ready");
    match &cdc.tables {
        Part::Unavailable(why) => assert!(why.contains("DescribeTableStatistics"), "{why}"),
        Part::Ok(t) => panic!("moto has no DescribeTableStatistics, yet got {t:?}"),
    }
    assert_eq!(cdc.last_change_age_secs, None);
}

#[tokio::test]
async fn status_of_a_missing_stack_says_so() {
    let moto = Moto::start();
    let clients = moto.clients().await;
    let msk = RecordedMsk::new(fixture("recorded"));
    let stats = SdkTableStatistics { clients: &clients };
    let err = gather(
        &clients,
        "nothing-here",
        &config("nothing-here"),
        &msk,
        &stats,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("stack nothing-here does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn the_sdk_msk_client_reads_a_cluster_and_get_bootstrap_brokers_is_proven_only_by_recordings()
{
    use aws_sdk_kafka::types::BrokerNodeGroupInfo;
    use dqetl::target::aws::msk::{MskApi, SdkMsk};
    let moto = Moto::start();
    let sdk = moto.sdk().await;
    let created = aws_sdk_kafka::Client::new(&sdk)
        .create_cluster()
        .cluster_name("fleet-msk")
        .kafka_version("3.5.1")
        .number_of_broker_nodes(2)
        .broker_node_group_info(
            BrokerNodeGroupInfo::builder()
                .instance_type("kafka.t3.small")
                .client_subnets("subnet-1")
                .client_subnets("subnet-2")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let arn = created.cluster_arn().unwrap();

    let msk = SdkMsk::new(&sdk);
    let cluster = msk.cluster(arn).await.unwrap();
    assert_eq!(cluster.state, "CREATING");
    assert_eq!(cluster.kafka_version.as_deref(), Some("3.5.1"));
    assert_eq!(cluster.broker_nodes, Some(2));

    // moto has no GetBootstrapBrokers: the SDK call fails there, and the recorded answer stands in.
    let err = msk.bootstrap_brokers(arn).await.unwrap_err();
    assert!(
        err.to_string().contains("kafka GetBootstrapBrokers failed"),
        "{err}"
    );
    let recorded = RecordedMsk::new(fixture("recorded"))
        .bootstrap_brokers(arn)
        .await
        .unwrap();
    assert!(
        recorded
            .sasl_scram
            .as_deref()
            .is_some_and(|s| s.split(',').all(|b| b.ends_with(":9096"))),
        "{recorded:?}"
    );
}
