//! The stack's outputs, typed. Every later step (image push, jobs, DMS, Athena, teardown) works from
//! these names instead of guessing them from naming conventions (the original's bug 6.1-16).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::target::aws::error::AwsError;

/// The outputs of dqetl's template that the control plane uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackOutputs {
    pub vpc_id: String,
    pub private_subnet_ids: Vec<String>,
    pub processor_security_group_id: String,
    pub jobs_security_group_id: String,
    pub rds_endpoint: String,
    pub rds_secret_arn: String,
    pub msk_cluster_arn: String,
    pub msk_bootstrap_servers: String,
    pub msk_scram_secret_arn: String,
    pub delta_bucket: String,
    pub quarantine_bucket: String,
    pub assets_bucket: String,
    pub glue_database: String,
    pub athena_work_group: String,
    pub ecr_repository_uri: String,
    pub ecs_cluster_name: String,
    pub processor_service_name: String,
    pub processor_task_definition_arn: String,
    pub jobs_task_definition_arn: String,
    pub dms_task_arn: String,
    pub dms_source_endpoint_arn: String,
    pub dms_target_endpoint_arn: String,
    pub dms_replication_instance_arn: String,
    pub kms_key_arn: String,
    pub log_group_name: String,
    /// The logical replication slot DMS reads; optional so older stacks still load.
    pub dms_slot_name: Option<String>,
}

/// The outputs [`StackOutputs::from_map`] requires: the template must declare each of them.
pub const REQUIRED_OUTPUTS: &[&str] = &[
    "VpcId",
    "PrivateSubnetIds",
    "ProcessorSecurityGroupId",
    "JobsSecurityGroupId",
    "RDSEndpoint",
    "RDSSecretArn",
    "MSKClusterArn",
    "MSKBootstrapServers",
    "MSKScramSecretArn",
    "DeltaBucket",
    "QuarantineBucket",
    "AssetsBucket",
    "GlueDatabase",
    "AthenaWorkGroup",
    "EcrRepositoryUri",
    "EcsClusterName",
    "ProcessorServiceName",
    "ProcessorTaskDefinitionArn",
    "JobsTaskDefinitionArn",
    "DMSTaskArn",
    "DMSSourceEndpointArn",
    "DMSTargetEndpointArn",
    "DMSReplicationInstanceArn",
    "KmsKeyArn",
    "LogGroupName",
];

impl StackOutputs {
    /// Reads the typed outputs from a stack's output map; every missing output is named.
    pub fn from_map(stack: &str, outputs: &BTreeMap<String, String>) -> Result<Self, AwsError> {
        let mut missing = Vec::new();
        let mut take = |name: &str| match outputs.get(name) {
            Some(v) => v.clone(),
            None => {
                missing.push(name.to_string());
                String::new()
            }
        };
        let parsed = StackOutputs {
            vpc_id: take("VpcId"),
            private_subnet_ids: split_list(&take("PrivateSubnetIds")),
            processor_security_group_id: take("ProcessorSecurityGroupId"),
            jobs_security_group_id: take("JobsSecurityGroupId"),
            rds_endpoint: take("RDSEndpoint"),
            rds_secret_arn: take("RDSSecretArn"),
            msk_cluster_arn: take("MSKClusterArn"),
            msk_bootstrap_servers: take("MSKBootstrapServers"),
            msk_scram_secret_arn: take("MSKScramSecretArn"),
            delta_bucket: take("DeltaBucket"),
            quarantine_bucket: take("QuarantineBucket"),
            assets_bucket: take("AssetsBucket"),
            glue_database: take("GlueDatabase"),
            athena_work_group: take("AthenaWorkGroup"),
            ecr_repository_uri: take("EcrRepositoryUri"),
            ecs_cluster_name: take("EcsClusterName"),
            processor_service_name: take("ProcessorServiceName"),
            processor_task_definition_arn: take("ProcessorTaskDefinitionArn"),
            jobs_task_definition_arn: take("JobsTaskDefinitionArn"),
            dms_task_arn: take("DMSTaskArn"),
            dms_source_endpoint_arn: take("DMSSourceEndpointArn"),
            dms_target_endpoint_arn: take("DMSTargetEndpointArn"),
            dms_replication_instance_arn: take("DMSReplicationInstanceArn"),
            kms_key_arn: take("KmsKeyArn"),
            log_group_name: take("LogGroupName"),
            dms_slot_name: outputs.get("DMSSlotName").cloned(),
        };
        if missing.is_empty() {
            Ok(parsed)
        } else {
            Err(AwsError::MissingOutputs {
                stack: stack.to_string(),
                names: missing,
            })
        }
    }

    /// The buckets the stack owns and the processor writes to.
    pub fn buckets(&self) -> [&str; 3] {
        [
            &self.delta_bucket,
            &self.quarantine_bucket,
            &self.assets_bucket,
        ]
    }
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A registry host and repository name from an ECR repository URI
/// (`<account>.dkr.ecr.<region>.amazonaws.com/<name>`).
pub fn split_repository_uri(uri: &str) -> Option<(&str, &str)> {
    let (host, repo) = uri.split_once('/')?;
    (!host.is_empty() && !repo.is_empty()).then_some((host, repo))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_outputs() -> BTreeMap<String, String> {
        REQUIRED_OUTPUTS
            .iter()
            .map(|k| match *k {
                "PrivateSubnetIds" => (k.to_string(), "subnet-a, subnet-b".to_string()),
                _ => (k.to_string(), format!("value-of-{k}")),
            })
            .collect()
    }

    #[test]
    fn every_required_output_is_needed() {
        for name in REQUIRED_OUTPUTS {
            let mut map = all_outputs();
            map.remove(*name);
            match StackOutputs::from_map("s", &map) {
                Err(AwsError::MissingOutputs { names, .. }) => assert_eq!(names, vec![*name]),
                other => panic!("without {name}: {other:?}"),
            }
        }
    }

    #[test]
    fn reads_every_output_and_splits_the_subnet_list() {
        let out = StackOutputs::from_map("s", &all_outputs()).unwrap();
        assert_eq!(out.private_subnet_ids, vec!["subnet-a", "subnet-b"]);
        assert_eq!(out.dms_task_arn, "value-of-DMSTaskArn");
        assert_eq!(
            out.buckets(),
            [
                "value-of-DeltaBucket",
                "value-of-QuarantineBucket",
                "value-of-AssetsBucket"
            ]
        );
        assert_eq!(out.dms_slot_name, None);
    }

    #[test]
    fn missing_outputs_are_all_named() {
        let mut map = all_outputs();
        map.remove("DMSTaskArn");
        map.remove("LogGroupName");
        let err = StackOutputs::from_map("fleet", &map).unwrap_err();
        match err {
            AwsError::MissingOutputs { stack, names } => {
                assert_eq!(stack, "fleet");
                assert_eq!(names, vec!["DMSTaskArn", "LogGroupName"]);
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn repository_uri_splits_into_registry_and_name() {
        assert_eq!(
            split_repository_uri("123456789012.dkr.ecr.us-east-1.amazonaws.com/fleet-dqetl"),
            Some((
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "fleet-dqetl"
            ))
        );
        assert_eq!(split_repository_uri("nohost"), None);
    }
}
