//! ECR: registry credentials for the image push, and deleting images at teardown.

use aws_sdk_ecr::types::ImageIdentifier;
use base64::Engine;

use crate::target::aws::clients::AwsClients;
use crate::target::aws::error::{ApiResultExt, AwsError};
use crate::target::aws::registry::{RegistryAuth, Secret};

/// BatchDeleteImage takes at most this many image ids per call.
const DELETE_BATCH: usize = 100;

/// Basic-auth credentials for the account's registry (GetAuthorizationToken: base64
/// `user:password`, valid 12 hours). They stay in memory only.
pub async fn registry_auth(clients: &AwsClients) -> Result<RegistryAuth, AwsError> {
    let out = clients
        .ecr
        .get_authorization_token()
        .send()
        .await
        .api("ecr", "GetAuthorizationToken")?;
    let token = out
        .authorization_data()
        .first()
        .and_then(|d| d.authorization_token())
        .ok_or(AwsError::BadEcrToken)?;
    decode_token(token)
}

fn decode_token(token: &str) -> Result<RegistryAuth, AwsError> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| AwsError::BadEcrToken)?;
    let text = String::from_utf8(decoded).map_err(|_| AwsError::BadEcrToken)?;
    let (user, password) = text.split_once(':').ok_or(AwsError::BadEcrToken)?;
    Ok(RegistryAuth::Basic {
        username: user.to_string(),
        password: Secret::new(password.to_string()),
    })
}

/// Deletes every image of a repository; a missing repository has none. Returns how many went.
pub async fn delete_all_images(clients: &AwsClients, repository: &str) -> Result<usize, AwsError> {
    let mut ids = Vec::new();
    let mut token = None;
    loop {
        let result = clients
            .ecr
            .list_images()
            .repository_name(repository)
            .set_next_token(token)
            .send()
            .await
            .api("ecr", "ListImages");
        let out = match result {
            Ok(out) => out,
            Err(e) if e.is_code("RepositoryNotFoundException") => return Ok(0),
            Err(e) => return Err(e),
        };
        ids.extend(out.image_ids().iter().cloned());
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    // One manifest can carry several tags; delete each digest once.
    let mut digests: Vec<String> = ids
        .iter()
        .filter_map(|i| i.image_digest().map(str::to_string))
        .collect();
    digests.sort();
    digests.dedup();
    let mut unique: Vec<ImageIdentifier> = digests
        .iter()
        .map(|d| ImageIdentifier::builder().image_digest(d).build())
        .collect();
    unique.extend(ids.iter().filter(|i| i.image_digest().is_none()).cloned());
    let mut deleted = 0;
    for chunk in unique.chunks(DELETE_BATCH) {
        let out = clients
            .ecr
            .batch_delete_image()
            .repository_name(repository)
            .set_image_ids(Some(chunk.to_vec()))
            .send()
            .await
            .api("ecr", "BatchDeleteImage")?;
        deleted += out.image_ids().len();
        if let Some(f) = out.failures().first() {
            return Err(AwsError::Unexpected {
                what: format!("ecr BatchDeleteImage in {repository}"),
                detail: format!(
                    "{} image(s) not deleted; first: {:?} {}",
                    out.failures().len(),
                    f.failure_code(),
                    f.failure_reason().unwrap_or_default()
                ),
            });
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_user_and_password_from_the_token() {
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:pa:ss");
        match decode_token(&token).unwrap() {
            RegistryAuth::Basic { username, password } => {
                assert_eq!(username, "AWS");
                assert!(!format!("{password:?}").contains("pa:ss"));
            }
            RegistryAuth::Anonymous => panic!("expected basic auth"),
        }
        assert!(matches!(
            decode_token("not base64!"),
            Err(AwsError::BadEcrToken)
        ));
        let no_colon = base64::engine::general_purpose::STANDARD.encode("nocolon");
        assert!(matches!(
            decode_token(&no_colon),
            Err(AwsError::BadEcrToken)
        ));
    }
}
