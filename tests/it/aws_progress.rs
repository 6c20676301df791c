//! Stack progress on recorded CloudFormation event sequences (as `aws cloudformation
//! describe-stack-events` prints them, newest first): a create that succeeds, and one whose RDS
//! instance fails and rolls the stack back.

use dqetl::target::aws::progress::{Outcome, ProgressState, StackEvent, StackOperation};

use crate::aws_support::fixture;

/// The recorded events, oldest first (the order they are applied in).
fn recorded(name: &str) -> Vec<StackEvent> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Page {
        stack_events: Vec<StackEvent>,
    }
    let text = std::fs::read_to_string(fixture(name)).expect("fixture");
    let mut events = serde_json::from_str::<Page>(&text)
        .expect("recorded events parse")
        .stack_events;
    events.reverse();
    events
}

#[test]
fn a_successful_create_counts_every_resource_done_and_ends_complete() {
    let events = recorded("events-create-success.json");
    let resources: std::collections::BTreeSet<_> = events
        .iter()
        .filter(|e| !e.is_stack_event())
        .map(|e| e.logical_resource_id.clone())
        .collect();
    let mut state = ProgressState::new(StackOperation::Create, "fleet", Some(resources.len()));

    let mut seen_in_progress = Vec::new();
    let mut done_over_time = Vec::new();
    for e in &events {
        state.apply(e);
        if let Some((id, _)) = state.in_progress() {
            seen_in_progress.push(id.to_string());
        }
        done_over_time.push(state.done());
        if !(e.is_stack_event() && e.resource_status == "CREATE_COMPLETE") {
            assert_eq!(
                state.outcome(),
                None,
                "no outcome before the stack completes (at {})",
                e.event_id
            );
        }
    }
    assert!(
        done_over_time.windows(2).all(|w| w[0] <= w[1]),
        "progress never goes back on a create"
    );
    assert_eq!(state.done(), resources.len());
    assert_eq!(state.total(), resources.len());
    assert!(
        seen_in_progress.contains(&"RdsInstance".to_string()),
        "the long RDS create was shown in progress"
    );
    assert_eq!(
        state.in_progress(),
        None,
        "nothing is in progress at the end"
    );
    assert_eq!(
        state.outcome(),
        Some(Outcome::Succeeded {
            status: "CREATE_COMPLETE".into()
        })
    );
    assert!(state.failures().is_empty());
}

#[test]
fn a_failed_create_reports_the_failing_resources_with_reasons_and_the_rollback() {
    let events = recorded("events-create-rollback.json");
    let mut state = ProgressState::new(StackOperation::Create, "fleet", Some(6));
    let mut rolling_back_before_end = false;
    for e in &events {
        state.apply(e);
        if state.is_rolling_back() && state.outcome().is_none() {
            rolling_back_before_end = true;
            assert!(
                state.message().starts_with("rolling back"),
                "{}",
                state.message()
            );
        }
    }
    assert!(
        rolling_back_before_end,
        "the rollback phase is visible while it runs"
    );

    match state.outcome() {
        Some(Outcome::Failed {
            status,
            reason,
            rolled_back,
        }) => {
            assert_eq!(status, "ROLLBACK_COMPLETE");
            assert!(rolled_back);
            let reason = reason.unwrap_or_default();
            assert!(reason.contains("[MskCluster, RdsInstance]"), "{reason}");
        }
        other => panic!("expected a failed outcome, got {other:?}"),
    }

    let failures = state.failures();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(
        failures[0].logical_id, "RdsInstance",
        "the cause comes first"
    );
    assert!(
        failures[0]
            .reason
            .contains("Cannot find version 16.11 for postgres"),
        "{}",
        failures[0].reason
    );
    assert_eq!(failures[1].logical_id, "MskCluster");
    assert!(
        failures[1].is_consequence(),
        "a cancelled sibling is a consequence"
    );

    let report = state.failure_report();
    let rds = report.find(
        "RdsInstance (AWS::RDS::DBInstance) CREATE_FAILED: Resource handler returned message",
    );
    let msk =
        report.find("MskCluster (AWS::MSK::Cluster) CREATE_FAILED: Resource creation cancelled");
    assert!(rds.is_some() && msk.is_some() && rds < msk, "{report}");
    assert!(
        report.contains("stack fleet is ROLLBACK_COMPLETE"),
        "{report}"
    );
    assert!(report.contains("the create was rolled back"), "{report}");
}
