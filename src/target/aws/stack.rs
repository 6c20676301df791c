//! Creating, updating and deleting the stack. Every operation takes the template body as input (the
//! embedded template in production, a small one against moto) and waits for the stack with a
//! progress view fed by stack events.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use aws_sdk_cloudformation::types::{Capability, Parameter, Tag, TemplateStage};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::target::aws::assets;
use crate::target::aws::clients::AwsClients;
use crate::target::aws::error::{ApiResultExt, AwsError};
use crate::target::aws::naming::PROJECT_TAG;
use crate::target::aws::outputs::StackOutputs;
use crate::target::aws::progress::{
    Outcome, ProgressState, ProgressView, StackEvent, StackOperation, is_terminal_status,
};
use crate::target::aws::template;

/// CloudFormation's limit for an inline TemplateBody; larger templates go through S3.
pub const INLINE_TEMPLATE_LIMIT: usize = 51_200;

/// What the control plane needs to know about a template before sending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateInfo {
    pub parameters: BTreeSet<String>,
    /// Parameters whose value DescribeStacks masks (NoEcho): only UsePreviousValue keeps them.
    pub no_echo: BTreeSet<String>,
    pub resource_count: usize,
}

impl TemplateInfo {
    /// Reads parameter names and the number of resources from a YAML (or JSON) template.
    pub fn parse(body: &str) -> Result<Self, AwsError> {
        let iface = template::interface(body).map_err(AwsError::Template)?;
        let doc = template::parse_template(body).map_err(AwsError::Template)?;
        Ok(TemplateInfo {
            no_echo: iface
                .parameters
                .iter()
                .filter(|p| p.no_echo)
                .map(|p| p.name.clone())
                .collect(),
            parameters: iface.parameters.into_iter().map(|p| p.name).collect(),
            resource_count: doc
                .get("Resources")
                .and_then(|r| r.as_mapping())
                .map_or(0, |m| m.len()),
        })
    }
}

/// A parameter value sent with a create or update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    Value(String),
    /// Keep what the stack has (UsePreviousValue).
    UsePrevious,
}

/// The stack as DescribeStacks reports it.
#[derive(Debug, Clone, Serialize)]
pub struct StackInfo {
    pub stack_id: String,
    pub name: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub parameters: BTreeMap<String, String>,
    pub outputs: BTreeMap<String, String>,
    pub last_updated: Option<DateTime<Utc>>,
}

impl StackInfo {
    pub fn typed_outputs(&self) -> Result<StackOutputs, AwsError> {
        StackOutputs::from_map(&self.name, &self.outputs)
    }
}

/// What a create-or-update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ApplyOutcome {
    Created,
    Updated,
    /// The template and parameters equal what the stack runs ("No updates are to be performed").
    UpToDate,
}

/// A resource the delete left in place (DeletionPolicy Retain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetainedResource {
    pub logical_id: String,
    pub resource_type: String,
}

/// One resource of a stack (ListStackResources).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackResource {
    pub logical_id: String,
    pub physical_id: Option<String>,
    pub resource_type: String,
    pub status: String,
}

/// Runs stack operations and waits for them.
pub struct Stacks<'a> {
    clients: &'a AwsClients,
    /// Time between polls of the stack's status and events.
    pub poll: Duration,
    /// Templates larger than this go through the bootstrap bucket.
    pub inline_limit: usize,
    /// Draw no progress (JSON output).
    pub quiet: bool,
}

impl<'a> Stacks<'a> {
    pub fn new(clients: &'a AwsClients, quiet: bool) -> Self {
        Stacks {
            clients,
            poll: Duration::from_secs(5),
            inline_limit: INLINE_TEMPLATE_LIMIT,
            quiet,
        }
    }

    /// The stack by name or id, None when it does not exist (or was deleted).
    pub async fn describe(&self, name_or_id: &str) -> Result<Option<StackInfo>, AwsError> {
        let result = self
            .clients
            .cfn
            .describe_stacks()
            .stack_name(name_or_id)
            .send()
            .await;
        let out = match result.api("cloudformation", "DescribeStacks") {
            Ok(out) => out,
            Err(e) if is_missing_stack(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(stack) = out.stacks().first() else {
            return Ok(None);
        };
        let status = stack
            .stack_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if status == "DELETE_COMPLETE" && !name_or_id.starts_with("arn:") {
            return Ok(None);
        }
        Ok(Some(StackInfo {
            stack_id: stack.stack_id().unwrap_or_default().to_string(),
            name: stack.stack_name().unwrap_or_default().to_string(),
            status,
            status_reason: stack.stack_status_reason().map(str::to_string),
            parameters: stack
                .parameters()
                .iter()
                .filter_map(|p| {
                    Some((
                        p.parameter_key()?.to_string(),
                        p.parameter_value().unwrap_or_default().to_string(),
                    ))
                })
                .collect(),
            outputs: stack
                .outputs()
                .iter()
                .filter_map(|o| {
                    Some((
                        o.output_key()?.to_string(),
                        o.output_value().unwrap_or_default().to_string(),
                    ))
                })
                .collect(),
            last_updated: stack
                .last_updated_time()
                .or(stack.creation_time())
                .and_then(to_chrono),
        }))
    }

    /// The typed outputs of an existing stack.
    pub async fn outputs(&self, name: &str) -> Result<StackOutputs, AwsError> {
        match self.describe(name).await? {
            Some(info) => info.typed_outputs(),
            None => Err(AwsError::StackNotFound {
                stack: name.to_string(),
            }),
        }
    }

    /// Creates the stack, or updates it when it exists. `parameters` not declared by the template
    /// are dropped; on update, declared parameters not given keep their previous value.
    /// `template_bucket` receives templates above the inline limit.
    pub async fn apply(
        &self,
        name: &str,
        template: &str,
        parameters: &BTreeMap<String, ParamValue>,
        template_bucket: Option<&str>,
    ) -> Result<ApplyOutcome, AwsError> {
        let info = TemplateInfo::parse(template)?;
        let existing = self.describe(name).await?;
        let existing = match existing {
            Some(s) if s.status == "ROLLBACK_COMPLETE" => {
                // A first create that failed leaves a stack that can only be deleted.
                tracing::warn!(
                    stack = name,
                    "the stack's first create failed (ROLLBACK_COMPLETE); deleting it to create it again"
                );
                self.delete(name).await?;
                None
            }
            other => other,
        };
        if let Some(stack) = &existing {
            check_updatable(stack)?;
        }
        let source = self.template_source(template, template_bucket).await?;

        match existing {
            None => {
                let params: Vec<Parameter> = parameters
                    .iter()
                    .filter(|(k, _)| info.parameters.contains(*k))
                    .filter_map(|(k, v)| match v {
                        ParamValue::Value(v) => Some(
                            Parameter::builder()
                                .parameter_key(k)
                                .parameter_value(v)
                                .build(),
                        ),
                        ParamValue::UsePrevious => None,
                    })
                    .collect();
                let mut req = self
                    .clients
                    .cfn
                    .create_stack()
                    .stack_name(name)
                    .set_parameters(Some(params))
                    .capabilities(Capability::CapabilityIam)
                    .capabilities(Capability::CapabilityNamedIam)
                    .tags(
                        Tag::builder()
                            .key(PROJECT_TAG.0)
                            .value(PROJECT_TAG.1)
                            .build(),
                    );
                req = match &source {
                    TemplateSource::Body(b) => req.template_body(b),
                    TemplateSource::Url(u) => req.template_url(u),
                };
                let out = req.send().await.api("cloudformation", "CreateStack")?;
                let stack_id = out.stack_id().unwrap_or(name).to_string();
                self.wait(
                    &stack_id,
                    name,
                    StackOperation::Create,
                    None,
                    Some(info.resource_count),
                )
                .await?;
                Ok(ApplyOutcome::Created)
            }
            Some(stack) => {
                let mut params = Vec::new();
                let mut changed_params = false;
                for key in &info.parameters {
                    match parameters.get(key) {
                        Some(ParamValue::Value(v)) => {
                            changed_params |= stack.parameters.get(key) != Some(v);
                            params.push(
                                Parameter::builder()
                                    .parameter_key(key)
                                    .parameter_value(v)
                                    .build(),
                            );
                        }
                        // Keeping a value: pass it back as it is (moto honours UsePreviousValue only
                        // for parameters once passed explicitly); a masked NoEcho value can only be
                        // kept with UsePreviousValue.
                        Some(ParamValue::UsePrevious) | None if info.no_echo.contains(key) => {
                            params.push(
                                Parameter::builder()
                                    .parameter_key(key)
                                    .use_previous_value(true)
                                    .build(),
                            );
                        }
                        Some(ParamValue::UsePrevious) | None => match stack.parameters.get(key) {
                            Some(current) => params.push(
                                Parameter::builder()
                                    .parameter_key(key)
                                    .parameter_value(current)
                                    .build(),
                            ),
                            None => changed_params = true, // a new parameter takes its default
                        },
                    }
                }
                if !changed_params
                    && self.current_template(&stack.stack_id).await?.as_deref() == Some(template)
                {
                    return Ok(ApplyOutcome::UpToDate);
                }
                let since = self.latest_event_id(&stack.stack_id).await?;
                let mut req = self
                    .clients
                    .cfn
                    .update_stack()
                    .stack_name(&stack.stack_id)
                    .set_parameters(Some(params))
                    .capabilities(Capability::CapabilityIam)
                    .capabilities(Capability::CapabilityNamedIam)
                    .tags(
                        Tag::builder()
                            .key(PROJECT_TAG.0)
                            .value(PROJECT_TAG.1)
                            .build(),
                    );
                req = match &source {
                    TemplateSource::Body(b) => req.template_body(b),
                    TemplateSource::Url(u) => req.template_url(u),
                };
                match req.send().await.api("cloudformation", "UpdateStack") {
                    Ok(_) => {}
                    Err(e)
                        if e.api_message()
                            .is_some_and(|m| m.contains("No updates are to be performed")) =>
                    {
                        return Ok(ApplyOutcome::UpToDate);
                    }
                    Err(e) => return Err(e),
                }
                self.wait(&stack.stack_id, name, StackOperation::Update, since, None)
                    .await?;
                Ok(ApplyOutcome::Updated)
            }
        }
    }

    /// Deletes the stack and waits; returns the resources it retained. A missing stack is not an
    /// error (teardown is rerunnable): it returns None.
    pub async fn delete(&self, name: &str) -> Result<Option<Vec<RetainedResource>>, AwsError> {
        let Some(stack) = self.describe(name).await? else {
            return Ok(None);
        };
        let total = self.resources(&stack.stack_id).await?.len();
        let since = self.latest_event_id(&stack.stack_id).await?;
        self.clients
            .cfn
            .delete_stack()
            .stack_name(&stack.stack_id)
            .send()
            .await
            .api("cloudformation", "DeleteStack")?;
        let state = self
            .wait(
                &stack.stack_id,
                name,
                StackOperation::Delete,
                since,
                Some(total),
            )
            .await?;
        Ok(Some(
            state
                .retained()
                .into_iter()
                .map(|(id, r)| RetainedResource {
                    logical_id: id.to_string(),
                    resource_type: r.resource_type.clone(),
                })
                .collect(),
        ))
    }

    /// Every resource of the stack (all pages).
    pub async fn resources(&self, stack: &str) -> Result<Vec<StackResource>, AwsError> {
        let mut resources = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .clients
                .cfn
                .list_stack_resources()
                .stack_name(stack)
                .set_next_token(token)
                .send()
                .await
                .api("cloudformation", "ListStackResources")?;
            for r in out.stack_resource_summaries() {
                resources.push(StackResource {
                    logical_id: r.logical_resource_id().unwrap_or_default().to_string(),
                    physical_id: r.physical_resource_id().map(str::to_string),
                    resource_type: r.resource_type().unwrap_or_default().to_string(),
                    status: r
                        .resource_status()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                });
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(resources);
            }
        }
    }

    async fn template_source(
        &self,
        template: &str,
        bucket: Option<&str>,
    ) -> Result<TemplateSource, AwsError> {
        if template.len() <= self.inline_limit {
            return Ok(TemplateSource::Body(template.to_string()));
        }
        let Some(bucket) = bucket else {
            return Err(AwsError::Unexpected {
                what: "stack template".into(),
                detail: format!(
                    "the template has {} bytes, above the inline limit of {}, and no bucket was given for it",
                    template.len(),
                    self.inline_limit
                ),
            });
        };
        let key = format!(
            "templates/{}.yaml",
            hex::encode(Sha256::digest(template.as_bytes()))
        );
        assets::upload_if_changed(
            self.clients,
            bucket,
            &key,
            template.as_bytes(),
            "application/x-yaml",
        )
        .await?;
        Ok(TemplateSource::Url(format!(
            "https://{bucket}.s3.{}.amazonaws.com/{key}",
            self.clients.region()
        )))
    }

    async fn current_template(&self, stack_id: &str) -> Result<Option<String>, AwsError> {
        let out = self
            .clients
            .cfn
            .get_template()
            .stack_name(stack_id)
            .template_stage(TemplateStage::Original)
            .send()
            .await
            .api("cloudformation", "GetTemplate")?;
        Ok(out.template_body().map(str::to_string))
    }

    async fn latest_event_id(&self, stack_id: &str) -> Result<Option<String>, AwsError> {
        let out = self
            .clients
            .cfn
            .describe_stack_events()
            .stack_name(stack_id)
            .send()
            .await
            .api("cloudformation", "DescribeStackEvents")?;
        Ok(out
            .stack_events()
            .first()
            .and_then(|e| e.event_id())
            .map(str::to_string))
    }

    /// Events newer than those already seen, oldest first. `seen` grows with them.
    async fn new_events(
        &self,
        stack_id: &str,
        seen: &mut HashSet<String>,
    ) -> Result<Vec<StackEvent>, AwsError> {
        let mut fresh = Vec::new();
        let mut token = None;
        'pages: loop {
            let out = self
                .clients
                .cfn
                .describe_stack_events()
                .stack_name(stack_id)
                .set_next_token(token)
                .send()
                .await
                .api("cloudformation", "DescribeStackEvents")?;
            for e in out.stack_events() {
                let id = e.event_id().unwrap_or_default();
                if seen.contains(id) {
                    break 'pages;
                }
                fresh.push(from_sdk_event(e));
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        fresh.reverse();
        seen.extend(fresh.iter().map(|e| e.event_id.clone()));
        Ok(fresh)
    }

    /// Polls the stack until the operation ends; a failure carries the failing resources' reasons.
    async fn wait(
        &self,
        stack_id: &str,
        name: &str,
        operation: StackOperation,
        since_event: Option<String>,
        expected_total: Option<usize>,
    ) -> Result<ProgressState, AwsError> {
        let mut state = ProgressState::new(operation, name, expected_total);
        let view = ProgressView::new(&format!("{} stack {name}", operation.verb()), self.quiet);
        let mut seen: HashSet<String> = since_event.into_iter().collect();
        let result = loop {
            let status = self.describe(stack_id).await?;
            let events = self.new_events(stack_id, &mut seen).await?;
            for e in &events {
                state.apply(e);
            }
            view.show(&state, &events);
            let (status, reason) = match &status {
                Some(s) => (s.status.clone(), s.status_reason.clone()),
                // Gone entirely: only a finished delete does that.
                None => ("DELETE_COMPLETE".to_string(), None),
            };
            if is_terminal_status(&status) {
                state.observe_stack_status(&status, reason.as_deref());
                break state.outcome();
            }
            tokio::time::sleep(self.poll).await;
        };
        view.finish();
        match result {
            Some(Outcome::Succeeded { .. }) => Ok(state),
            Some(Outcome::Failed { status, .. }) => Err(AwsError::StackOperationFailed {
                stack: name.to_string(),
                operation: operation.verb(),
                status,
                report: state.failure_report(),
            }),
            None => Err(AwsError::Unexpected {
                what: format!("stack {name}"),
                detail: "reached a terminal status without an outcome".into(),
            }),
        }
    }
}

enum TemplateSource {
    Body(String),
    Url(String),
}

fn is_missing_stack(e: &AwsError) -> bool {
    e.is_code("ValidationError")
        && e.api_message()
            .is_some_and(|m| m.contains("does not exist"))
}

fn check_updatable(stack: &StackInfo) -> Result<(), AwsError> {
    let status = stack.status.as_str();
    if status.ends_with("_IN_PROGRESS") {
        return Err(AwsError::StackBusy {
            stack: stack.name.clone(),
            status: status.to_string(),
        });
    }
    let hint = match status {
        "UPDATE_ROLLBACK_FAILED" => {
            "continue the rollback (aws cloudformation continue-update-rollback) first"
        }
        "DELETE_FAILED" => "run dqetl --target aws teardown to finish deleting it",
        "ROLLBACK_FAILED" | "CREATE_FAILED" => {
            "delete it with dqetl --target aws teardown and deploy again"
        }
        _ => return Ok(()),
    };
    Err(AwsError::StackStuck {
        stack: stack.name.clone(),
        status: status.to_string(),
        hint,
    })
}

fn to_chrono(t: &aws_sdk_cloudformation::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos())
}

fn from_sdk_event(e: &aws_sdk_cloudformation::types::StackEvent) -> StackEvent {
    StackEvent {
        event_id: e.event_id().unwrap_or_default().to_string(),
        stack_name: e.stack_name().unwrap_or_default().to_string(),
        logical_resource_id: e.logical_resource_id().unwrap_or_default().to_string(),
        physical_resource_id: e.physical_resource_id().map(str::to_string),
        resource_type: e.resource_type().unwrap_or_default().to_string(),
        timestamp: e.timestamp().and_then(to_chrono).unwrap_or_default(),
        resource_status: e
            .resource_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        resource_status_reason: e.resource_status_reason().map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_info_reads_parameters_and_counts_resources_through_short_form_tags() {
        let body = r#"
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  ProcessorImageUri: {Type: String, Default: ""}
  MultiAZ: {Type: String}
Conditions:
  UseLatest: !Equals [!Ref ProcessorImageUri, ""]
Resources:
  Bucket:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Sub "${AWS::StackName}-delta-${AWS::AccountId}"
  Repo:
    Type: AWS::ECR::Repository
Outputs:
  DeltaBucket: {Value: !Ref Bucket}
"#;
        let info = TemplateInfo::parse(body).unwrap();
        assert_eq!(
            info.parameters
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            vec!["MultiAZ", "ProcessorImageUri"]
        );
        assert_eq!(info.resource_count, 2);
    }

    #[test]
    fn a_broken_template_is_a_parse_error() {
        assert!(matches!(
            TemplateInfo::parse("Resources: [unclosed"),
            Err(AwsError::Template(_))
        ));
    }

    #[test]
    fn stacks_in_progress_or_stuck_cannot_be_updated() {
        let mut s = StackInfo {
            stack_id: "id".into(),
            name: "s".into(),
            status: "UPDATE_IN_PROGRESS".into(),
            status_reason: None,
            parameters: BTreeMap::new(),
            outputs: BTreeMap::new(),
            last_updated: None,
        };
        assert!(matches!(
            check_updatable(&s),
            Err(AwsError::StackBusy { .. })
        ));
        s.status = "UPDATE_ROLLBACK_FAILED".into();
        assert!(matches!(
            check_updatable(&s),
            Err(AwsError::StackStuck { .. })
        ));
        s.status = "UPDATE_ROLLBACK_COMPLETE".into();
        assert!(check_updatable(&s).is_ok());
    }
}
