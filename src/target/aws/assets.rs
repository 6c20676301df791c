//! S3 for the control plane: the bootstrap bucket that holds the template before the stack exists,
//! uploads that skip unchanged content, and emptying buckets down to the last object version and
//! delete marker (the original left versions and markers behind, so its stack deletion failed).

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration, Delete,
    ObjectIdentifier, PublicAccessBlockConfiguration, ServerSideEncryption,
    ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    Tag, Tagging, VersioningConfiguration,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::target::aws::clients::AwsClients;
use crate::target::aws::error::{ApiResultExt, AwsError};
use crate::target::aws::naming::PROJECT_TAG;

/// DeleteObjects takes at most this many keys per call.
pub const DELETE_BATCH: usize = 1000;

/// The user metadata key holding the SHA-256 of an uploaded object, so reruns skip unchanged files.
const SHA_METADATA: &str = "sha256";

/// Whether an upload wrote anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Upload {
    Uploaded,
    Unchanged,
}

/// Whether a bucket exists and is ours.
pub async fn bucket_exists(clients: &AwsClients, bucket: &str) -> Result<bool, AwsError> {
    match clients.s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(true),
        Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Ok(false),
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 403) => {
            Err(AwsError::BucketNotOwned {
                bucket: bucket.to_string(),
            })
        }
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
        Err(e) => Err(e).api("s3", "HeadBucket"),
    }
}

/// Creates the bootstrap bucket if needed and (re)applies its settings: versioned, encrypted,
/// public access blocked, TLS only, tagged. Safe to call on every deploy.
pub async fn ensure_bootstrap_bucket(clients: &AwsClients, bucket: &str) -> Result<bool, AwsError> {
    let created = if bucket_exists(clients, bucket).await? {
        false
    } else {
        let mut req = clients.s3.create_bucket().bucket(bucket);
        let region = clients.region();
        // us-east-1 is the one region that rejects an explicit location constraint.
        if region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        match req.send().await.api("s3", "CreateBucket") {
            Ok(_) => {}
            Err(e) if e.is_code("BucketAlreadyOwnedByYou") => {}
            Err(e) => return Err(e),
        }
        true
    };
    let s3 = &clients.s3;
    s3.put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .api("s3", "PutPublicAccessBlock")?;
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .api("s3", "PutBucketVersioning")?;
    let encryption = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(
                    ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(ServerSideEncryption::Aes256)
                        .build()?,
                )
                .build(),
        )
        .build()?;
    s3.put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(encryption)
        .send()
        .await
        .api("s3", "PutBucketEncryption")?;
    // A plain-HTTP endpoint (a local emulator) could never satisfy a TLS-only policy: every later
    // request to the bucket would be denied.
    if !clients
        .endpoint_override()
        .is_some_and(|u| u.starts_with("http://"))
    {
        s3.put_bucket_policy()
            .bucket(bucket)
            .policy(tls_only_policy(bucket))
            .send()
            .await
            .api("s3", "PutBucketPolicy")?;
    }
    s3.put_bucket_tagging()
        .bucket(bucket)
        .tagging(
            Tagging::builder()
                .tag_set(
                    Tag::builder()
                        .key(PROJECT_TAG.0)
                        .value(PROJECT_TAG.1)
                        .build()?,
                )
                .build()?,
        )
        .send()
        .await
        .api("s3", "PutBucketTagging")?;
    Ok(created)
}

/// Denies every request that does not use TLS.
fn tls_only_policy(bucket: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}
        }]
    })
    .to_string()
}

/// Uploads `body` unless the object already holds exactly these bytes.
pub async fn upload_if_changed(
    clients: &AwsClients,
    bucket: &str,
    key: &str,
    body: &[u8],
    content_type: &str,
) -> Result<Upload, AwsError> {
    let sha = hex::encode(Sha256::digest(body));
    match clients
        .s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
    {
        Ok(head) if head.metadata().and_then(|m| m.get(SHA_METADATA)) == Some(&sha) => {
            return Ok(Upload::Unchanged);
        }
        Ok(_) => {}
        Err(SdkError::ServiceError(e)) if e.err().is_not_found() => {}
        Err(e) => return Err(e).api("s3", "HeadObject"),
    }
    clients
        .s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .metadata(SHA_METADATA, sha)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .api("s3", "PutObject")?;
    Ok(Upload::Uploaded)
}

/// What emptying a bucket removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EmptiedBucket {
    pub versions: u64,
    pub delete_markers: u64,
    pub multipart_uploads: u64,
}

/// Deletes every object version and delete marker of a bucket (paginated ListObjectVersions,
/// DeleteObjects in chunks of 1000) and aborts unfinished multipart uploads. A missing bucket is
/// already empty. `on_progress` receives the running count of deleted entries.
pub async fn empty_bucket(
    clients: &AwsClients,
    bucket: &str,
    mut on_progress: impl FnMut(u64),
) -> Result<EmptiedBucket, AwsError> {
    let mut done = EmptiedBucket::default();
    if !bucket_exists(clients, bucket).await? {
        return Ok(done);
    }
    // A writer still running (a processor task stopping) can add objects behind the listing;
    // a few rounds until a listing comes back empty make the result certain.
    for _round in 0..5 {
        let before = done.versions + done.delete_markers;
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let page = clients
                .s3
                .list_object_versions()
                .bucket(bucket)
                .set_key_marker(key_marker.clone())
                .set_version_id_marker(version_marker.clone())
                .max_keys(DELETE_BATCH as i32)
                .send()
                .await
                .api("s3", "ListObjectVersions")?;
            let mut batch = Vec::new();
            for v in page.versions() {
                if let Some(key) = v.key() {
                    batch.push(
                        ObjectIdentifier::builder()
                            .key(key)
                            .set_version_id(v.version_id().map(str::to_string))
                            .build()?,
                    );
                    done.versions += 1;
                }
            }
            for m in page.delete_markers() {
                if let Some(key) = m.key() {
                    batch.push(
                        ObjectIdentifier::builder()
                            .key(key)
                            .set_version_id(m.version_id().map(str::to_string))
                            .build()?,
                    );
                    done.delete_markers += 1;
                }
            }
            for chunk in batch.chunks(DELETE_BATCH) {
                delete_objects(clients, bucket, chunk.to_vec()).await?;
            }
            on_progress(done.versions + done.delete_markers);
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        done.multipart_uploads += abort_multipart_uploads(clients, bucket).await?;
        if done.versions + done.delete_markers == before {
            break;
        }
    }
    Ok(done)
}

async fn delete_objects(
    clients: &AwsClients,
    bucket: &str,
    objects: Vec<ObjectIdentifier>,
) -> Result<(), AwsError> {
    let out = clients
        .s3
        .delete_objects()
        .bucket(bucket)
        .delete(
            Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()?,
        )
        .send()
        .await
        .api("s3", "DeleteObjects")?;
    let errors = out.errors();
    if let Some(first) = errors.first() {
        return Err(AwsError::DeleteObjects {
            bucket: bucket.to_string(),
            failed: errors.len(),
            first: format!(
                "{} (version {}): {} {}",
                first.key().unwrap_or("?"),
                first.version_id().unwrap_or("null"),
                first.code().unwrap_or("?"),
                first.message().unwrap_or("")
            ),
        });
    }
    Ok(())
}

async fn abort_multipart_uploads(clients: &AwsClients, bucket: &str) -> Result<u64, AwsError> {
    let mut aborted = 0;
    loop {
        let out = clients
            .s3
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .api("s3", "ListMultipartUploads")?;
        let uploads = out.uploads();
        if uploads.is_empty() {
            return Ok(aborted);
        }
        for u in uploads {
            if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                clients
                    .s3
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .api("s3", "AbortMultipartUpload")?;
                aborted += 1;
            }
        }
        if out.is_truncated() != Some(true) {
            return Ok(aborted);
        }
    }
}

/// Deletes an (empty) bucket; a missing bucket is fine.
pub async fn delete_bucket(clients: &AwsClients, bucket: &str) -> Result<(), AwsError> {
    match clients
        .s3
        .delete_bucket()
        .bucket(bucket)
        .send()
        .await
        .api("s3", "DeleteBucket")
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_code("NoSuchBucket") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Lists object keys under a prefix (all pages), with their last-modified times.
pub async fn list_keys(
    clients: &AwsClients,
    bucket: &str,
    prefix: &str,
    start_after: Option<&str>,
) -> Result<Vec<(String, Option<chrono::DateTime<chrono::Utc>>)>, AwsError> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let out = clients
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_string))
            .set_continuation_token(token)
            .send()
            .await
            .api("s3", "ListObjectsV2")?;
        for o in out.contents() {
            if let Some(k) = o.key() {
                let modified = o
                    .last_modified()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()));
                keys.push((k.to_string(), modified));
            }
        }
        token = out.next_continuation_token().map(str::to_string);
        if token.is_none() {
            return Ok(keys);
        }
    }
}

/// Reads a small object; None when it does not exist.
pub async fn get_small_object(
    clients: &AwsClients,
    bucket: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, AwsError> {
    match clients.s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => {
            let bytes = out.body.collect().await.map_err(|e| AwsError::Unexpected {
                what: format!("s3://{bucket}/{key}"),
                detail: e.to_string(),
            })?;
            Ok(Some(bytes.into_bytes().to_vec()))
        }
        Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => Ok(None),
        Err(e) => Err(e).api("s3", "GetObject"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_policy_denies_plain_http_on_the_bucket_and_its_objects() {
        let policy: serde_json::Value = serde_json::from_str(&tls_only_policy("b")).unwrap();
        let st = &policy["Statement"][0];
        assert_eq!(st["Effect"], "Deny");
        assert_eq!(st["Condition"]["Bool"]["aws:SecureTransport"], "false");
        assert_eq!(st["Resource"][0], "arn:aws:s3:::b");
        assert_eq!(st["Resource"][1], "arn:aws:s3:::b/*");
    }
}
