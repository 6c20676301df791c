//! Stack progress: CloudFormation stack events folded into a state (pure, tested on recorded event
//! sequences) and a terminal view of it (a progress bar: resources done / total, the resource in
//! progress, elapsed time).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

/// One stack event, as DescribeStackEvents returns it (the field names match AWS's JSON, so
/// recorded `aws cloudformation describe-stack-events` output loads directly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StackEvent {
    pub event_id: String,
    pub stack_name: String,
    pub logical_resource_id: String,
    #[serde(default)]
    pub physical_resource_id: Option<String>,
    pub resource_type: String,
    pub timestamp: DateTime<Utc>,
    pub resource_status: String,
    #[serde(default)]
    pub resource_status_reason: Option<String>,
}

impl StackEvent {
    /// Events about the stack itself (rather than one of its resources).
    pub fn is_stack_event(&self) -> bool {
        self.resource_type == "AWS::CloudFormation::Stack"
            && self.logical_resource_id == self.stack_name
    }
}

/// The stack operation being watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StackOperation {
    Create,
    Update,
    Delete,
}

impl StackOperation {
    pub fn verb(&self) -> &'static str {
        match self {
            StackOperation::Create => "create",
            StackOperation::Update => "update",
            StackOperation::Delete => "delete",
        }
    }

    /// The stack status that means this operation succeeded.
    pub fn success_status(&self) -> &'static str {
        match self {
            StackOperation::Create => "CREATE_COMPLETE",
            StackOperation::Update => "UPDATE_COMPLETE",
            StackOperation::Delete => "DELETE_COMPLETE",
        }
    }
}

/// A stack status that no longer changes by itself.
pub fn is_terminal_status(status: &str) -> bool {
    !status.ends_with("_IN_PROGRESS")
        && (status.ends_with("_COMPLETE") || status.ends_with("_FAILED"))
}

/// A resource status that ends its part in the operation.
fn is_resource_settled(status: &str) -> bool {
    status.ends_with("_COMPLETE") || status.ends_with("_FAILED") || status.ends_with("_SKIPPED")
}

/// Where one resource stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceProgress {
    pub resource_type: String,
    pub status: String,
    pub reason: Option<String>,
}

/// A resource that failed, with CloudFormation's reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceFailure {
    pub logical_id: String,
    pub resource_type: String,
    pub status: String,
    pub reason: String,
}

impl ResourceFailure {
    /// Failures that only follow from another one ("Resource creation cancelled" when a sibling
    /// failed) are not the cause and are listed after the causes.
    pub fn is_consequence(&self) -> bool {
        let r = self.reason.to_ascii_lowercase();
        r.contains("resource creation cancelled")
            || r.contains("resource update cancelled")
            || r.contains("resource deletion cancelled")
    }
}

/// How the operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Outcome {
    Succeeded {
        status: String,
    },
    Failed {
        status: String,
        reason: Option<String>,
        rolled_back: bool,
    },
}

/// The progress of one stack operation, folded from its events in the order they happened.
#[derive(Debug, Clone)]
pub struct ProgressState {
    operation: StackOperation,
    stack_name: String,
    expected_total: Option<usize>,
    resources: BTreeMap<String, ResourceProgress>,
    current: Option<String>,
    stack_status: Option<String>,
    stack_reason: Option<String>,
    rollback_seen: bool,
    failures: Vec<ResourceFailure>,
}

impl ProgressState {
    /// `expected_total` is the number of resources the operation should touch when known
    /// (resources in the template for a create, in the stack for a delete).
    pub fn new(operation: StackOperation, stack_name: &str, expected_total: Option<usize>) -> Self {
        ProgressState {
            operation,
            stack_name: stack_name.to_string(),
            expected_total,
            resources: BTreeMap::new(),
            current: None,
            stack_status: None,
            stack_reason: None,
            rollback_seen: false,
            failures: Vec::new(),
        }
    }

    /// Folds in one event (events must come oldest first).
    pub fn apply(&mut self, event: &StackEvent) {
        if event.logical_resource_id == self.stack_name
            && event.resource_type == "AWS::CloudFormation::Stack"
        {
            self.stack_status = Some(event.resource_status.clone());
            if event.resource_status.contains("ROLLBACK") {
                self.rollback_seen = true;
            }
            if event.resource_status_reason.is_some() {
                self.stack_reason = event.resource_status_reason.clone();
            }
            return;
        }
        let status = event.resource_status.clone();
        if status.ends_with("_FAILED") {
            self.failures.push(ResourceFailure {
                logical_id: event.logical_resource_id.clone(),
                resource_type: event.resource_type.clone(),
                status: status.clone(),
                reason: event
                    .resource_status_reason
                    .clone()
                    .unwrap_or_else(|| "no reason given".into()),
            });
        }
        if status.ends_with("_IN_PROGRESS") {
            self.current = Some(event.logical_resource_id.clone());
        } else if self.current.as_deref() == Some(event.logical_resource_id.as_str()) {
            // The resource in progress settled: show the latest other one still in progress.
            self.current = None;
        }
        self.resources.insert(
            event.logical_resource_id.clone(),
            ResourceProgress {
                resource_type: event.resource_type.clone(),
                status,
                reason: event.resource_status_reason.clone(),
            },
        );
        if self.current.is_none() {
            self.current = self
                .resources
                .iter()
                .find(|(_, r)| r.status.ends_with("_IN_PROGRESS"))
                .map(|(id, _)| id.clone());
        }
    }

    /// Records the stack's status as DescribeStacks reports it, for when its own event has not
    /// arrived (events and status are read separately).
    pub fn observe_stack_status(&mut self, status: &str, reason: Option<&str>) {
        if status.contains("ROLLBACK") {
            self.rollback_seen = true;
        }
        self.stack_status = Some(status.to_string());
        if reason.is_some() {
            self.stack_reason = reason.map(str::to_string);
        }
    }

    pub fn operation(&self) -> StackOperation {
        self.operation
    }

    /// Resources whose part in the operation has ended.
    pub fn done(&self) -> usize {
        self.resources
            .values()
            .filter(|r| is_resource_settled(&r.status))
            .count()
    }

    /// Resources the operation touches: the expected count, or more if more showed up.
    pub fn total(&self) -> usize {
        self.expected_total.unwrap_or(0).max(self.resources.len())
    }

    /// The resource being worked on, with its status.
    pub fn in_progress(&self) -> Option<(&str, &ResourceProgress)> {
        let id = self.current.as_deref()?;
        self.resources.get(id).map(|r| (id, r))
    }

    /// The stack's own latest status, once an event about it arrived.
    pub fn stack_status(&self) -> Option<&str> {
        self.stack_status.as_deref()
    }

    pub fn resource(&self, logical_id: &str) -> Option<&ResourceProgress> {
        self.resources.get(logical_id)
    }

    /// Every failed resource: causes first, then failures that only followed from them.
    pub fn failures(&self) -> Vec<&ResourceFailure> {
        let (consequences, causes): (Vec<_>, Vec<_>) =
            self.failures.iter().partition(|f| f.is_consequence());
        causes.into_iter().chain(consequences).collect()
    }

    /// Resources left in place on purpose (DeletionPolicy Retain) during a delete.
    pub fn retained(&self) -> Vec<(&str, &ResourceProgress)> {
        self.resources
            .iter()
            .filter(|(_, r)| r.status == "DELETE_SKIPPED")
            .map(|(id, r)| (id.as_str(), r))
            .collect()
    }

    /// True once the stack started rolling back.
    pub fn is_rolling_back(&self) -> bool {
        self.rollback_seen
    }

    /// The outcome once the stack reached a terminal status, None while it is still working.
    pub fn outcome(&self) -> Option<Outcome> {
        let status = self.stack_status.as_deref()?;
        if !is_terminal_status(status) {
            return None;
        }
        if status == self.operation.success_status() && !self.rollback_seen {
            return Some(Outcome::Succeeded {
                status: status.to_string(),
            });
        }
        Some(Outcome::Failed {
            status: status.to_string(),
            reason: self.stack_reason.clone(),
            rolled_back: self.rollback_seen,
        })
    }

    /// A one-line summary for the progress bar's message.
    pub fn message(&self) -> String {
        let phase = if self.rollback_seen {
            "rolling back"
        } else {
            self.operation.verb()
        };
        match self.in_progress() {
            Some((id, r)) => format!("{phase}: {id} ({}) {}", r.resource_type, r.status),
            None => format!(
                "{phase}: {}",
                self.stack_status.as_deref().unwrap_or("waiting for events")
            ),
        }
    }

    /// The human report of a failed operation: the failing resources with their reasons, then the
    /// stack's final state.
    pub fn failure_report(&self) -> String {
        let mut lines = Vec::new();
        let failures = self.failures();
        if failures.is_empty() {
            lines.push("no resource reported a failure".to_string());
        }
        for f in failures {
            lines.push(format!(
                "  {} ({}) {}: {}",
                f.logical_id, f.resource_type, f.status, f.reason
            ));
        }
        let status = self.stack_status.as_deref().unwrap_or("unknown");
        let mut last = format!("stack {} is {status}", self.stack_name);
        if let Some(reason) = &self.stack_reason {
            last.push_str(&format!(" ({reason})"));
        }
        if self.rollback_seen {
            last.push_str(&format!(
                "; the {} was rolled back{}",
                self.operation.verb(),
                if status.ends_with("ROLLBACK_FAILED") {
                    " only partly"
                } else {
                    ""
                }
            ));
        }
        lines.push(last);
        lines.join("\n")
    }
}

/// The terminal view of a [`ProgressState`]: a bar on a terminal, plain lines otherwise, nothing
/// in JSON mode.
pub struct ProgressView {
    bar: ProgressBar,
    plain: bool,
}

impl ProgressView {
    /// `quiet` (JSON output) draws nothing; a non-terminal stderr gets one line per settled resource.
    pub fn new(title: &str, quiet: bool) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        let style = ProgressStyle::with_template(
            "{spinner} {prefix} [{bar:30}] {pos}/{len} {elapsed_precise} {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(title.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        let plain = !quiet && bar.is_hidden();
        ProgressView { bar, plain }
    }

    /// Shows the state; `settled` are the events of this poll, printed as lines above the bar.
    pub fn show(&self, state: &ProgressState, new_events: &[StackEvent]) {
        for e in new_events {
            // A line per settled resource; of the in-progress events only the stack's own (a
            // rollback starting, with its reason) are news.
            if e.resource_status.ends_with("_IN_PROGRESS") && !e.is_stack_event() {
                continue;
            }
            let mut line = format!(
                "{:<28} {} ({})",
                e.resource_status, e.logical_resource_id, e.resource_type
            );
            if let Some(reason) = &e.resource_status_reason {
                line.push_str(&format!(": {reason}"));
            }
            self.line(&line);
        }
        self.bar.set_length(state.total() as u64);
        self.bar.set_position(state.done() as u64);
        self.bar.set_message(state.message());
    }

    /// Prints a line above the bar (or plainly to stderr when there is no terminal).
    pub fn line(&self, line: &str) {
        if self.plain {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, logical: &str, ty: &str, status: &str, reason: Option<&str>) -> StackEvent {
        StackEvent {
            event_id: id.into(),
            stack_name: "s".into(),
            logical_resource_id: logical.into(),
            physical_resource_id: None,
            resource_type: ty.into(),
            timestamp: DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
            resource_status: status.into(),
            resource_status_reason: reason.map(str::to_string),
        }
    }

    #[test]
    fn counts_settled_resources_and_tracks_the_one_in_progress() {
        let mut p = ProgressState::new(StackOperation::Create, "s", Some(3));
        p.apply(&event(
            "1",
            "s",
            "AWS::CloudFormation::Stack",
            "CREATE_IN_PROGRESS",
            Some("User Initiated"),
        ));
        p.apply(&event(
            "2",
            "Bucket",
            "AWS::S3::Bucket",
            "CREATE_IN_PROGRESS",
            None,
        ));
        assert_eq!((p.done(), p.total()), (0, 3));
        assert_eq!(p.in_progress().map(|(id, _)| id), Some("Bucket"));
        p.apply(&event(
            "3",
            "Bucket",
            "AWS::S3::Bucket",
            "CREATE_COMPLETE",
            None,
        ));
        assert_eq!(p.done(), 1);
        assert_eq!(p.in_progress(), None);
        assert_eq!(p.outcome(), None, "the stack is still in progress");
        p.apply(&event(
            "4",
            "s",
            "AWS::CloudFormation::Stack",
            "CREATE_COMPLETE",
            None,
        ));
        assert_eq!(
            p.outcome(),
            Some(Outcome::Succeeded {
                status: "CREATE_COMPLETE".into()
            })
        );
    }

    #[test]
    fn an_update_that_rolled_back_is_a_failure_even_though_it_completed() {
        let mut p = ProgressState::new(StackOperation::Update, "s", None);
        p.apply(&event(
            "1",
            "Svc",
            "AWS::ECS::Service",
            "UPDATE_FAILED",
            Some("Invalid request"),
        ));
        p.apply(&event(
            "2",
            "s",
            "AWS::CloudFormation::Stack",
            "UPDATE_ROLLBACK_IN_PROGRESS",
            Some("failed"),
        ));
        p.apply(&event(
            "3",
            "s",
            "AWS::CloudFormation::Stack",
            "UPDATE_ROLLBACK_COMPLETE",
            None,
        ));
        match p.outcome() {
            Some(Outcome::Failed {
                status,
                rolled_back,
                ..
            }) => {
                assert_eq!(status, "UPDATE_ROLLBACK_COMPLETE");
                assert!(rolled_back);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            p.failure_report()
                .contains("Svc (AWS::ECS::Service) UPDATE_FAILED: Invalid request")
        );
    }

    #[test]
    fn a_delete_lists_the_resources_it_retained() {
        let mut p = ProgressState::new(StackOperation::Delete, "s", Some(2));
        p.apply(&event(
            "1",
            "s",
            "AWS::CloudFormation::Stack",
            "DELETE_IN_PROGRESS",
            Some("User Initiated"),
        ));
        p.apply(&event(
            "2",
            "DmsVpcRole",
            "AWS::IAM::Role",
            "DELETE_SKIPPED",
            None,
        ));
        p.apply(&event(
            "3",
            "Bucket",
            "AWS::S3::Bucket",
            "DELETE_COMPLETE",
            None,
        ));
        p.apply(&event(
            "4",
            "s",
            "AWS::CloudFormation::Stack",
            "DELETE_COMPLETE",
            None,
        ));
        assert_eq!(p.done(), 2, "a skipped delete is settled");
        let retained: Vec<&str> = p.retained().into_iter().map(|(id, _)| id).collect();
        assert_eq!(retained, ["DmsVpcRole"]);
        assert_eq!(
            p.outcome(),
            Some(Outcome::Succeeded {
                status: "DELETE_COMPLETE".into()
            })
        );
    }

    #[test]
    fn terminal_statuses() {
        for s in [
            "CREATE_COMPLETE",
            "ROLLBACK_COMPLETE",
            "UPDATE_ROLLBACK_FAILED",
            "DELETE_FAILED",
        ] {
            assert!(is_terminal_status(s), "{s}");
        }
        for s in [
            "CREATE_IN_PROGRESS",
            "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
            "REVIEW_IN_PROGRESS",
        ] {
            assert!(!is_terminal_status(s), "{s}");
        }
    }
}
