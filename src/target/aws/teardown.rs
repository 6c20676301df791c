//! `teardown` on AWS: stop what writes (processor service, running tasks, the DMS task), empty every
//! bucket of the stack down to the last version and delete marker, delete the ECR images, delete the
//! stack (with progress), remove the bootstrap bucket, and list anything left behind.
//!
//! Buckets, repositories, services and tasks come from the stack's own resource list, not from its
//! outputs or naming conventions (the original emptied only the buckets named in outputs, so its
//! stack deletion failed on the others). Every step tolerates what is already gone, so teardown
//! can be rerun after a partial failure.

use std::time::Duration;

use serde::Serialize;

use crate::target::aws::assets::{self, EmptiedBucket};
use crate::target::aws::clients::AwsClients;
use crate::target::aws::dms;
use crate::target::aws::ecr;
use crate::target::aws::ecs;
use crate::target::aws::error::AwsError;
use crate::target::aws::naming;
use crate::target::aws::stack::{RetainedResource, StackResource, Stacks};

/// What teardown did and what remains.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TeardownReport {
    pub stack: String,
    pub stack_existed: bool,
    pub services_scaled_down: Vec<String>,
    pub tasks_stopped: usize,
    pub dms_tasks: Vec<(String, String)>,
    pub buckets: Vec<(String, EmptiedBucket)>,
    pub images_deleted: usize,
    pub bootstrap_bucket: String,
    /// Resources the stack keeps on purpose (DeletionPolicy Retain), e.g. the account-wide DMS roles.
    pub retained: Vec<RetainedResource>,
    /// Things that should be gone but are not.
    pub left_behind: Vec<String>,
}

pub struct Teardown<'a> {
    pub clients: &'a AwsClients,
    pub stack: &'a str,
    pub poll: Duration,
    pub dms_timeout: Duration,
    pub quiet: bool,
}

impl Teardown<'_> {
    pub async fn run(&self, say: &(dyn Fn(&str) + Sync)) -> Result<TeardownReport, AwsError> {
        let account = self.clients.account_id().await?.to_string();
        let mut report = TeardownReport {
            stack: self.stack.to_string(),
            bootstrap_bucket: naming::bootstrap_bucket(self.stack, &account, self.clients.region()),
            ..Default::default()
        };
        let mut stacks = Stacks::new(self.clients, self.quiet);
        stacks.poll = self.poll;
        let stack = stacks.describe(self.stack).await?;
        let mut buckets = Vec::new();
        if let Some(stack) = &stack {
            report.stack_existed = true;
            let resources = stacks.resources(&stack.stack_id).await?;
            let of_type = |ty: &str| -> Vec<String> {
                resources
                    .iter()
                    .filter(|r: &&StackResource| {
                        r.resource_type == ty && !r.status.starts_with("DELETE_COMPLETE")
                    })
                    .filter_map(|r| r.physical_id.clone())
                    .collect()
            };
            let clusters = of_type("AWS::ECS::Cluster");
            for service in of_type("AWS::ECS::Service") {
                let Some(cluster) = service_cluster(&service).or_else(|| clusters.first().cloned())
                else {
                    continue;
                };
                let name = service.rsplit('/').next().unwrap_or(&service).to_string();
                match ecs::scale_service(self.clients, &cluster, &name, 0).await {
                    Ok(()) => {
                        say(&format!("scaled service {name} to 0"));
                        report.services_scaled_down.push(name);
                    }
                    Err(e)
                        if e.is_code("ServiceNotActiveException")
                            || e.is_code("ServiceNotFoundException") => {}
                    Err(e) => return Err(e),
                }
            }
            for cluster in &clusters {
                let stopped = ecs::stop_all_tasks(self.clients, cluster, "dqetl teardown").await?;
                if stopped > 0 {
                    say(&format!("stopped {stopped} task(s) in cluster {cluster}"));
                }
                report.tasks_stopped += stopped;
            }
            for task in of_type("AWS::DMS::ReplicationTask") {
                say("stopping the DMS replication task");
                let status =
                    dms::stop_task(self.clients, &task, self.poll, self.dms_timeout).await?;
                report.dms_tasks.push((task, status));
            }
            buckets = of_type("AWS::S3::Bucket");
            for bucket in &buckets {
                report
                    .buckets
                    .push((bucket.clone(), self.empty(bucket, say).await?));
            }
            for repo in of_type("AWS::ECR::Repository") {
                let deleted = ecr::delete_all_images(self.clients, &repo).await?;
                if deleted > 0 {
                    say(&format!(
                        "deleted {deleted} image(s) from repository {repo}"
                    ));
                }
                report.images_deleted += deleted;
            }
            say(&format!("deleting stack {}", self.stack));
            report.retained = stacks.delete(self.stack).await?.unwrap_or_default();
        } else {
            say(&format!("stack {} does not exist", self.stack));
        }

        let bootstrap = report.bootstrap_bucket.clone();
        if assets::bucket_exists(self.clients, &bootstrap).await? {
            report
                .buckets
                .push((bootstrap.clone(), self.empty(&bootstrap, say).await?));
            assets::delete_bucket(self.clients, &bootstrap).await?;
            say(&format!("deleted bootstrap bucket {bootstrap}"));
        }
        buckets.push(bootstrap);
        for bucket in &buckets {
            if assets::bucket_exists(self.clients, bucket).await? {
                report.left_behind.push(format!("bucket {bucket}"));
            }
        }
        if stacks.describe(self.stack).await?.is_some() {
            report.left_behind.push(format!("stack {}", self.stack));
        }
        Ok(report)
    }

    async fn empty(
        &self,
        bucket: &str,
        say: &(dyn Fn(&str) + Sync),
    ) -> Result<EmptiedBucket, AwsError> {
        let emptied = assets::empty_bucket(self.clients, bucket, |_| {}).await?;
        say(&format!(
            "emptied bucket {bucket}: {} version(s), {} delete marker(s){}",
            emptied.versions,
            emptied.delete_markers,
            if emptied.multipart_uploads > 0 {
                format!(", {} unfinished upload(s)", emptied.multipart_uploads)
            } else {
                String::new()
            }
        ));
        Ok(emptied)
    }
}

/// The cluster of a service ARN (`arn:aws:ecs:<region>:<account>:service/<cluster>/<service>`).
fn service_cluster(service_arn: &str) -> Option<String> {
    let resource = service_arn.strip_prefix("arn:")?.splitn(5, ':').nth(4)?;
    let mut parts = resource.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("service"), Some(cluster), Some(_)) => Some(cluster.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_comes_from_a_long_service_arn() {
        assert_eq!(
            service_cluster(
                "arn:aws:ecs:us-east-1:123456789012:service/fleet-cluster/fleet-processor"
            )
            .as_deref(),
            Some("fleet-cluster")
        );
        assert_eq!(
            service_cluster("arn:aws:ecs:us-east-1:123456789012:service/old-style"),
            None
        );
        assert_eq!(service_cluster("fleet-processor"), None);
    }
}
