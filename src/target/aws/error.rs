//! Errors of the AWS control plane. An AWS API failure keeps the SDK error as its source and names
//! the service, the operation and AWS's error code, so a user sees what failed without a debugger.

use std::error::Error as StdError;
use std::fmt;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("{service} {operation} failed{}", ErrorDetail { code: code.as_deref(), message: message.as_deref() })]
    Api {
        service: &'static str,
        operation: &'static str,
        code: Option<String>,
        message: Option<String>,
        #[source]
        source: BoxError,
    },
    #[error("no AWS region: pass --region or set AWS_REGION (or a region in the AWS config file)")]
    NoRegion,
    #[error(
        "invalid stack name {name:?}: {reason} (lowercase letters, digits and hyphens, starting with a letter, at most 39 characters, because bucket names derive from it)"
    )]
    InvalidStackName { name: String, reason: &'static str },
    #[error("stack {stack} does not exist (deploy it first: dqetl --target aws deploy)")]
    StackNotFound { stack: String },
    #[error("stack {stack} lacks the output(s) {}; was it deployed from dqetl's template?", names.join(", "))]
    MissingOutputs { stack: String, names: Vec<String> },
    #[error("stack {stack} is busy ({status}); wait until the running operation finishes")]
    StackBusy { stack: String, status: String },
    #[error("stack {stack} is in state {status} and cannot be updated: {hint}")]
    StackStuck {
        stack: String,
        status: String,
        hint: &'static str,
    },
    #[error("stack {stack}: {operation} ended in {status}\n{report}")]
    StackOperationFailed {
        stack: String,
        operation: &'static str,
        status: String,
        report: String,
    },
    #[error("reading the CloudFormation template")]
    Template(#[source] crate::target::aws::template::TemplateError),
    #[error("bucket {bucket} exists but belongs to another account or denies access")]
    BucketNotOwned { bucket: String },
    #[error("could not delete {failed} object version(s) from bucket {bucket}; first: {first}")]
    DeleteObjects {
        bucket: String,
        failed: usize,
        first: String,
    },
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        what: String,
        waited: std::time::Duration,
    },
    #[error("ECR returned an authorization token that is not base64 'user:password'")]
    BadEcrToken,
    #[error("{what}: unexpected response: {detail}")]
    Unexpected { what: String, detail: String },
    #[error("config {}", path.display())]
    Config {
        path: std::path::PathBuf,
        #[source]
        source: BoxError,
    },
    #[error("could not build an AWS request")]
    Build(#[from] aws_sdk_s3::error::BuildError),
    #[error("IAM {operation} failed: {detail}")]
    Iam {
        operation: &'static str,
        detail: String,
        #[source]
        source: Option<BoxError>,
    },
}

struct ErrorDetail<'a> {
    code: Option<&'a str>,
    message: Option<&'a str>,
}

impl fmt::Display for ErrorDetail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.message) {
            (Some(c), Some(m)) => write!(f, " ({c}: {m})"),
            (Some(c), None) => write!(f, " ({c})"),
            (None, Some(m)) => write!(f, " ({m})"),
            (None, None) => Ok(()),
        }
    }
}

impl AwsError {
    /// AWS's error code of an API failure (e.g. `ValidationError`, `NoSuchBucket`).
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// AWS's error message of an API failure.
    pub fn api_message(&self) -> Option<&str> {
        match self {
            AwsError::Api { message, .. } => message.as_deref(),
            _ => None,
        }
    }

    /// True when an API failure carries this code.
    pub fn is_code(&self, code: &str) -> bool {
        self.code() == Some(code)
    }
}

/// Turns an SDK result into an [`AwsError::Api`] naming the service and operation.
pub(crate) trait ApiResultExt<T> {
    fn api(self, service: &'static str, operation: &'static str) -> Result<T, AwsError>;
}

impl<T, E, R> ApiResultExt<T> for Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    fn api(self, service: &'static str, operation: &'static str) -> Result<T, AwsError> {
        self.map_err(|err| {
            let code = err.code().map(str::to_string);
            let message = err.message().map(str::to_string);
            AwsError::Api {
                service,
                operation,
                code,
                message,
                source: Box::new(err),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_message_names_service_operation_and_code() {
        let err = AwsError::Api {
            service: "cloudformation",
            operation: "UpdateStack",
            code: Some("ValidationError".into()),
            message: Some("No updates are to be performed.".into()),
            source: "inner".into(),
        };
        assert_eq!(
            err.to_string(),
            "cloudformation UpdateStack failed (ValidationError: No updates are to be performed.)"
        );
        assert!(err.is_code("ValidationError"));
    }

    #[test]
    fn missing_outputs_are_listed_by_name() {
        let err = AwsError::MissingOutputs {
            stack: "s".into(),
            names: vec!["DMSTaskArn".into(), "VpcId".into()],
        };
        assert!(err.to_string().contains("DMSTaskArn, VpcId"), "{err}");
    }
}
