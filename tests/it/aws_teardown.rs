//! `teardown` against moto: every version and delete marker of every stack bucket goes (more than
//! one DeleteObjects batch), images go, the stack is deleted, the bootstrap bucket is removed, and
//! nothing is left behind. Emptying is checked on its own too, by listing the bucket afterwards.

use std::time::Duration;

use aws_sdk_ecr::types::ImageIdentifier;
use dqetl::target::aws::assets::{self, ensure_bootstrap_bucket};
use dqetl::target::aws::clients::AwsClients;
use dqetl::target::aws::naming::bootstrap_bucket;
use dqetl::target::aws::stack::Stacks;
use dqetl::target::aws::teardown::Teardown;
use futures::StreamExt;

use crate::aws_support::{ACCOUNT, Moto, REGION, create_minimal_stack, put};

/// Writes `keys` objects with `versions` versions each, then deletes every `marker_every`-th key
/// (a delete marker on top). Returns (versions, delete markers) written.
async fn fill_versioned(
    clients: &AwsClients,
    bucket: &str,
    keys: usize,
    versions: usize,
    marker_every: usize,
) -> (u64, u64) {
    // Keys are written concurrently, the versions of one key one after another: moto can lose
    // one of two versions of a key written at the same moment.
    futures::stream::iter(0..keys)
        .for_each_concurrent(16, |k| async move {
            let key = format!("t/part-{k:05}.parquet");
            for v in 0..versions {
                put(clients, bucket, &key, format!("v{v}").as_bytes()).await;
            }
        })
        .await;
    let markers: Vec<String> = (0..keys)
        .filter(|k| k % marker_every == 0)
        .map(|k| format!("t/part-{k:05}.parquet"))
        .collect();
    let n_markers = markers.len() as u64;
    futures::stream::iter(markers)
        .for_each_concurrent(16, |key| async move {
            clients
                .s3
                .delete_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .expect("delete marker");
        })
        .await;
    ((keys * versions) as u64, n_markers)
}

async fn count_versions(clients: &AwsClients, bucket: &str) -> (usize, usize) {
    let (mut versions, mut markers) = (0, 0);
    let (mut key_marker, mut version_marker) = (None, None);
    loop {
        let page = clients
            .s3
            .list_object_versions()
            .bucket(bucket)
            .set_key_marker(key_marker)
            .set_version_id_marker(version_marker)
            .send()
            .await
            .unwrap();
        versions += page.versions().len();
        markers += page.delete_markers().len();
        if page.is_truncated() != Some(true) {
            return (versions, markers);
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
    }
}

#[tokio::test]
async fn emptying_a_versioned_bucket_removes_every_version_and_delete_marker_across_pages() {
    let moto = Moto::start();
    let clients = moto.clients().await;
    let bucket = "emptied-versions";
    ensure_bootstrap_bucket(&clients, bucket).await.unwrap();
    let (versions, markers) = fill_versioned(&clients, bucket, 450, 3, 3).await;
    assert_eq!(
        count_versions(&clients, bucket).await,
        (versions as usize, markers as usize)
    );
    assert!(
        versions + markers > 1000,
        "more than one DeleteObjects batch"
    );

    let mut progress = Vec::new();
    let emptied = assets::empty_bucket(&clients, bucket, |n| progress.push(n))
        .await
        .unwrap();
    assert_eq!(
        (emptied.versions, emptied.delete_markers),
        (versions, markers)
    );
    assert!(
        progress.len() >= 2,
        "progress was reported per page: {progress:?}"
    );
    assert_eq!(
        count_versions(&clients, bucket).await,
        (0, 0),
        "nothing is left in the bucket"
    );
    assets::delete_bucket(&clients, bucket).await.unwrap();
    assert!(!assets::bucket_exists(&clients, bucket).await.unwrap());
}

#[tokio::test]
async fn teardown_empties_every_bucket_deletes_images_and_the_stack_and_leaves_nothing() {
    let moto = Moto::start();
    let clients = moto.clients().await;
    let stack = "fleet-down";
    let outputs = create_minimal_stack(&clients, stack).await;
    let bootstrap = bootstrap_bucket(stack, ACCOUNT, REGION);
    ensure_bootstrap_bucket(&clients, &bootstrap).await.unwrap();
    put(&clients, &bootstrap, "templates/abc.yaml", b"Resources: {}").await;

    // moto's CloudFormation ignores VersioningConfiguration; the real template's buckets are
    // versioned, so the test turns it on.
    for bucket in [
        &outputs.delta_bucket,
        &outputs.quarantine_bucket,
        &outputs.assets_bucket,
    ] {
        clients
            .s3
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    // The delta bucket: 1,200 versions and 134 delete markers; the quarantine bucket (which the
    // original never emptied) a few versions and markers too.
    let (delta_versions, delta_markers) =
        fill_versioned(&clients, &outputs.delta_bucket, 400, 3, 3).await;
    let (q_versions, q_markers) =
        fill_versioned(&clients, &outputs.quarantine_bucket, 5, 2, 1).await;
    put(
        &clients,
        &outputs.assets_bucket,
        "config/tables.yaml",
        b"tables: []",
    )
    .await;

    // An image in the stack's repository.
    let repo = outputs
        .ecr_repository_uri
        .split_once('/')
        .unwrap()
        .1
        .to_string();
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "a".repeat(64)), "size": 2},
        "layers": []});
    clients
        .ecr
        .put_image()
        .repository_name(&repo)
        .image_manifest(manifest.to_string())
        .image_tag("0.1.0-abc")
        .send()
        .await
        .unwrap();
    let listed = clients
        .ecr
        .list_images()
        .repository_name(&repo)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.image_ids().len(), 1);

    let lines = std::sync::Mutex::new(Vec::new());
    let teardown = Teardown {
        clients: &clients,
        stack,
        poll: Duration::from_millis(50),
        dms_timeout: Duration::from_secs(5),
        quiet: true,
    };
    let report = teardown
        .run(&|l: &str| lines.lock().unwrap().push(l.to_string()))
        .await
        .unwrap();

    assert!(report.stack_existed);
    let emptied = |b: &str| {
        report
            .buckets
            .iter()
            .find(|(name, _)| name == b)
            .map(|(_, e)| *e)
            .unwrap_or_else(|| panic!("{b} not emptied: {report:?}"))
    };
    let delta = emptied(&outputs.delta_bucket);
    assert_eq!(
        (delta.versions, delta.delete_markers),
        (delta_versions, delta_markers)
    );
    let quarantine = emptied(&outputs.quarantine_bucket);
    assert_eq!(
        (quarantine.versions, quarantine.delete_markers),
        (q_versions, q_markers)
    );
    assert_eq!(emptied(&outputs.assets_bucket).versions, 1);
    assert_eq!(emptied(&bootstrap).versions, 1);
    assert_eq!(report.images_deleted, 1);
    assert_eq!(
        report.services_scaled_down,
        vec![format!("{stack}-processor")]
    );
    assert!(
        report.left_behind.is_empty(),
        "{:?}\n{:?}",
        report.left_behind,
        lines.lock().unwrap()
    );

    assert!(
        Stacks::new(&clients, true)
            .describe(stack)
            .await
            .unwrap()
            .is_none(),
        "the stack is gone"
    );
    for bucket in [
        &outputs.delta_bucket,
        &outputs.quarantine_bucket,
        &outputs.assets_bucket,
        &bootstrap,
    ] {
        assert!(
            !assets::bucket_exists(&clients, bucket).await.unwrap(),
            "{bucket} is gone"
        );
    }
    let repo_left = clients
        .ecr
        .describe_images()
        .repository_name(&repo)
        .image_ids(ImageIdentifier::builder().image_tag("0.1.0-abc").build())
        .send()
        .await;
    assert!(
        repo_left.is_err(),
        "the image (and its repository) are gone"
    );

    // A second teardown finds nothing and succeeds.
    let again = teardown.run(&|_| {}).await.unwrap();
    assert!(!again.stack_existed);
    assert!(again.left_behind.is_empty());
}
