//! MSK behind a thin trait: moto has no GetBootstrapBrokers, so the real implementation calls the
//! SDK and tests use [`RecordedMsk`], which answers with responses recorded from AWS's documented
//! examples (tests/fixtures/aws/recorded/kafka-*.json).

use std::future::Future;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::target::aws::error::{ApiResultExt, AwsError};

/// The bootstrap broker strings of a cluster, per authentication mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapBrokers {
    #[serde(rename = "BootstrapBrokerString", default)]
    pub plaintext: Option<String>,
    #[serde(rename = "BootstrapBrokerStringTls", default)]
    pub tls: Option<String>,
    #[serde(rename = "BootstrapBrokerStringSaslScram", default)]
    pub sasl_scram: Option<String>,
    #[serde(rename = "BootstrapBrokerStringSaslIam", default)]
    pub sasl_iam: Option<String>,
}

/// What status shows about the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterSummary {
    pub state: String,
    pub kafka_version: Option<String>,
    pub broker_nodes: Option<i32>,
}

/// The MSK calls dqetl makes.
pub trait MskApi {
    fn bootstrap_brokers(
        &self,
        cluster_arn: &str,
    ) -> impl Future<Output = Result<BootstrapBrokers, AwsError>> + Send;
    fn cluster(
        &self,
        cluster_arn: &str,
    ) -> impl Future<Output = Result<ClusterSummary, AwsError>> + Send;
}

/// MSK through the AWS SDK.
pub struct SdkMsk {
    client: aws_sdk_kafka::Client,
}

impl SdkMsk {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        SdkMsk {
            client: aws_sdk_kafka::Client::new(sdk),
        }
    }
}

impl MskApi for SdkMsk {
    async fn bootstrap_brokers(&self, cluster_arn: &str) -> Result<BootstrapBrokers, AwsError> {
        let out = self
            .client
            .get_bootstrap_brokers()
            .cluster_arn(cluster_arn)
            .send()
            .await
            .api("kafka", "GetBootstrapBrokers")?;
        Ok(BootstrapBrokers {
            plaintext: out.bootstrap_broker_string().map(str::to_string),
            tls: out.bootstrap_broker_string_tls().map(str::to_string),
            sasl_scram: out.bootstrap_broker_string_sasl_scram().map(str::to_string),
            sasl_iam: out.bootstrap_broker_string_sasl_iam().map(str::to_string),
        })
    }

    async fn cluster(&self, cluster_arn: &str) -> Result<ClusterSummary, AwsError> {
        let out = self
            .client
            .describe_cluster()
            .cluster_arn(cluster_arn)
            .send()
            .await
            .api("kafka", "DescribeCluster")?;
        let info = out.cluster_info();
        Ok(ClusterSummary {
            state: info
                .and_then(|i| i.state())
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "UNKNOWN".into()),
            kafka_version: info
                .and_then(|i| i.current_broker_software_info())
                .and_then(|s| s.kafka_version())
                .map(str::to_string),
            broker_nodes: info.and_then(|i| i.number_of_broker_nodes()),
        })
    }
}

/// Answers from recorded responses: `kafka-get-bootstrap-brokers.json` and
/// `kafka-describe-cluster.json` (AWS CLI output format) in a directory.
pub struct RecordedMsk {
    dir: PathBuf,
}

impl RecordedMsk {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RecordedMsk { dir: dir.into() }
    }

    fn read(&self, name: &str) -> Result<serde_json::Value, AwsError> {
        read_recorded(&self.dir.join(name))
    }
}

pub(crate) fn read_recorded(path: &Path) -> Result<serde_json::Value, AwsError> {
    let text = std::fs::read_to_string(path).map_err(|e| AwsError::Unexpected {
        what: format!("recorded response {}", path.display()),
        detail: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| AwsError::Unexpected {
        what: format!("recorded response {}", path.display()),
        detail: e.to_string(),
    })
}

impl MskApi for RecordedMsk {
    async fn bootstrap_brokers(&self, _cluster_arn: &str) -> Result<BootstrapBrokers, AwsError> {
        let value = self.read("kafka-get-bootstrap-brokers.json")?;
        serde_json::from_value(value).map_err(|e| AwsError::Unexpected {
            what: "recorded GetBootstrapBrokers".into(),
            detail: e.to_string(),
        })
    }

    async fn cluster(&self, _cluster_arn: &str) -> Result<ClusterSummary, AwsError> {
        let value = self.read("kafka-describe-cluster.json")?;
        let info = &value["ClusterInfo"];
        Ok(ClusterSummary {
            state: info["State"].as_str().unwrap_or("UNKNOWN").to_string(),
            kafka_version: info["CurrentBrokerSoftwareInfo"]["KafkaVersion"]
                .as_str()
                .map(str::to_string),
            broker_nodes: info["NumberOfBrokerNodes"]
                .as_i64()
                .and_then(|n| i32::try_from(n).ok()),
        })
    }
}

/// The SASL/SCRAM broker string (port 9096), which the DMS target and the tasks use.
pub fn scram_brokers(brokers: &BootstrapBrokers) -> Option<&str> {
    brokers.sasl_scram.as_deref().filter(|s| !s.is_empty())
}
