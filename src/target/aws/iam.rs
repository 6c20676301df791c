//! The one IAM question deploy asks: does the account already have `dms-vpc-role`? DMS needs that
//! role under exactly this name once per account; the template creates it only when asked
//! (parameter CreateDMSVPCRole). One signed Query API call, so dqetl need not build the whole IAM SDK.

use std::time::SystemTime;

use aws_sdk_sts::config::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use crate::target::aws::clients::AwsClients;
use crate::target::aws::error::AwsError;

/// The role DMS looks up by name.
pub const DMS_VPC_ROLE: &str = "dms-vpc-role";

const IAM_ENDPOINT: &str = "https://iam.amazonaws.com/";

/// True when the account has an IAM role of this name (IAM GetRole).
pub async fn role_exists(clients: &AwsClients, role: &str) -> Result<bool, AwsError> {
    let iam_err = |detail: String| AwsError::Iam {
        operation: "GetRole",
        detail,
        source: None,
    };
    let provider = clients
        .sdk_config()
        .credentials_provider()
        .ok_or_else(|| iam_err("no AWS credentials configured".into()))?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|e| AwsError::Iam {
            operation: "GetRole",
            detail: "could not load AWS credentials".into(),
            source: Some(Box::new(e)),
        })?;
    let url = match clients.endpoint_override() {
        Some(u) => format!("{}/", u.trim_end_matches('/')),
        None => IAM_ENDPOINT.to_string(),
    };
    let body = format!(
        "Action=GetRole&RoleName={}&Version=2010-05-08",
        form_encode(role)
    );
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";

    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        // IAM is global; its signing region is us-east-1 in the aws partition.
        .region("us-east-1")
        .name("iam")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| AwsError::Iam {
            operation: "GetRole",
            detail: "signing".into(),
            source: Some(Box::new(e)),
        })?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        [("content-type", content_type)].into_iter(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .map_err(|e| AwsError::Iam {
        operation: "GetRole",
        detail: "signing".into(),
        source: Some(Box::new(e)),
    })?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| AwsError::Iam {
            operation: "GetRole",
            detail: "signing".into(),
            source: Some(Box::new(e)),
        })?
        .into_parts();

    let mut request = reqwest::Client::new()
        .post(&url)
        .header("content-type", content_type)
        .body(body);
    for (name, value) in instructions.headers() {
        request = request.header(name, value);
    }
    let response = request.send().await.map_err(|e| AwsError::Iam {
        operation: "GetRole",
        detail: format!("request to {url} failed"),
        source: Some(Box::new(e)),
    })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(true)
    } else if status.as_u16() == 404 || text.contains("NoSuchEntity") {
        Ok(false)
    } else {
        Err(iam_err(format!(
            "{status}: {}",
            text.chars().take(300).collect::<String>()
        )))
    }
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_form_encoded() {
        assert_eq!(form_encode("dms-vpc-role"), "dms-vpc-role");
        assert_eq!(form_encode("a+b@c"), "a%2Bb%40c");
    }
}
