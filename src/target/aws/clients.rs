//! One set of AWS service clients built from one SDK configuration. Commands build it from the
//! standard chain (env, profile, `AWS_ENDPOINT_URL`); tests build it pointing at a moto server.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use tokio::sync::OnceCell;

use crate::target::aws::error::{ApiResultExt, AwsError};

/// The AWS clients of the control plane, plus the caller's account (looked up once).
#[derive(Debug, Clone)]
pub struct AwsClients {
    sdk: SdkConfig,
    pub cfn: aws_sdk_cloudformation::Client,
    pub s3: aws_sdk_s3::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub dms: aws_sdk_databasemigration::Client,
    pub athena: aws_sdk_athena::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub sts: aws_sdk_sts::Client,
    account: OnceCell<String>,
}

impl AwsClients {
    /// Clients from the standard AWS configuration chain; `region` overrides the configured one.
    pub async fn from_environment(region: Option<&str>) -> Result<Self, AwsError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(r) = region {
            loader = loader.region(Region::new(r.to_string()));
        }
        Self::new(loader.load().await)
    }

    /// Clients from an explicit SDK configuration (which must name a region).
    pub fn new(sdk: SdkConfig) -> Result<Self, AwsError> {
        if sdk.region().is_none() {
            return Err(AwsError::NoRegion);
        }
        // An endpoint override (moto, LocalStack, a VPC endpoint by IP) cannot serve virtual-hosted
        // bucket names, so S3 switches to path-style addressing then.
        let s3_config = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(sdk.endpoint_url().is_some())
            .build();
        Ok(AwsClients {
            cfn: aws_sdk_cloudformation::Client::new(&sdk),
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            ecr: aws_sdk_ecr::Client::new(&sdk),
            ecs: aws_sdk_ecs::Client::new(&sdk),
            dms: aws_sdk_databasemigration::Client::new(&sdk),
            athena: aws_sdk_athena::Client::new(&sdk),
            logs: aws_sdk_cloudwatchlogs::Client::new(&sdk),
            sts: aws_sdk_sts::Client::new(&sdk),
            account: OnceCell::new(),
            sdk,
        })
    }

    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk
    }

    /// The region every client talks to.
    pub fn region(&self) -> &str {
        // `new` refuses a configuration without a region.
        self.sdk.region().map(Region::as_ref).unwrap_or_default()
    }

    /// The endpoint override, when one is configured (tests, private endpoints).
    pub fn endpoint_override(&self) -> Option<&str> {
        self.sdk.endpoint_url()
    }

    /// The account of the caller's credentials (STS GetCallerIdentity, asked once).
    pub async fn account_id(&self) -> Result<&str, AwsError> {
        let account = self
            .account
            .get_or_try_init(|| async {
                let out = self
                    .sts
                    .get_caller_identity()
                    .send()
                    .await
                    .api("sts", "GetCallerIdentity")?;
                out.account.ok_or_else(|| AwsError::Unexpected {
                    what: "sts GetCallerIdentity".into(),
                    detail: "no account in the response".into(),
                })
            })
            .await?;
        Ok(account.as_str())
    }
}
