//! `deploy` against moto and a local registry: the first deploy creates the bootstrap bucket and the
//! stack (service at zero tasks), pushes the image with the ECR credentials, uploads the config and
//! points the stack at the image digest; a second deploy changes nothing and says so; a template
//! above the inline limit goes through the bootstrap bucket.

use std::path::PathBuf;
use std::time::Duration;

use dqetl::target::aws::assets::Upload;
use dqetl::target::aws::clients::AwsClients;
use dqetl::target::aws::deploy::{DeployOptions, DeployReport, deploy};
use dqetl::target::aws::ecs;
use dqetl::target::aws::stack::{ApplyOutcome, INLINE_TEMPLATE_LIMIT, Stacks};

use crate::aws_support::{
    ACCOUNT, ECR_PASSWORD, Moto, Registry, fixture, minimal_template, seed_base_image,
};

struct Setup {
    moto: Moto,
    registry: Registry,
    base: String,
    binary: PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let moto = Moto::start();
    let registry = Registry::start(Some(("AWS", ECR_PASSWORD)));
    let base = seed_base_image(&registry, Some(("AWS", ECR_PASSWORD))).await;
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("dqetl");
    std::fs::write(&binary, b"\x7fELF stand-in dqetl").unwrap();
    Setup {
        moto,
        registry,
        base,
        binary,
        _dir: dir,
    }
}

fn options(s: &Setup, stack: &str) -> DeployOptions {
    DeployOptions {
        stack: stack.into(),
        config_path: fixture("tables.yaml"),
        template: minimal_template(),
        base_image: s.base.clone(),
        binary: s.binary.clone(),
        registry_endpoint: Some(s.registry.host()),
        poll: Duration::from_millis(50),
        inline_template_limit: INLINE_TEMPLATE_LIMIT,
        quiet: true,
    }
}

async fn run(clients: &AwsClients, opts: &DeployOptions) -> DeployReport {
    let lines = std::sync::Mutex::new(Vec::new());
    let say = |l: &str| lines.lock().unwrap().push(l.to_string());
    match deploy(clients, opts, &say).await {
        Ok(r) => r,
        Err(e) => panic!(
            "deploy failed: {:#}\nsteps: {:?}",
            anyhow::Error::new(e),
            lines.lock().unwrap()
        ),
    }
}

#[tokio::test]
async fn a_first_deploy_creates_everything_and_a_second_changes_nothing() {
    let s = setup().await;
    let clients = s.moto.clients().await;
    let stack = "fleet-it";
    let opts = options(&s, stack);

    let first = run(&clients, &opts).await;
    assert_eq!(
        first.stack_changes,
        vec![ApplyOutcome::Created, ApplyOutcome::Updated]
    );
    assert!(first.bootstrap_bucket_created);
    assert_eq!(
        first.bootstrap_bucket,
        format!("{stack}-cfn-{ACCOUNT}-us-east-1")
    );
    assert!(!first.nothing_changed());

    // Outputs were read into the typed struct.
    assert_eq!(
        first.outputs.delta_bucket,
        format!("{stack}-delta-{ACCOUNT}")
    );
    assert_eq!(
        first.outputs.ecr_repository_uri,
        format!("{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{stack}-dqetl")
    );
    assert_eq!(first.outputs.private_subnet_ids.len(), 2);

    // The stack runs the pushed digest; the service was created at zero tasks.
    let info = Stacks::new(&clients, true)
        .describe(stack)
        .await
        .unwrap()
        .expect("stack exists");
    assert_eq!(info.status, "UPDATE_COMPLETE");
    assert_eq!(info.parameters["ProcessorImageUri"], first.image_uri);
    assert!(first.image_uri.ends_with(&first.image.manifest_digest));
    assert_eq!(info.parameters["ProcessorDesiredCount"], "0");
    assert_eq!(
        info.parameters["CreateDMSVPCRole"], "true",
        "moto's account has no dms-vpc-role yet"
    );
    let mappings: serde_json::Value =
        serde_json::from_str(&info.parameters["DMSTableMappings"]).unwrap();
    assert!(
        mappings["rules"].as_array().is_some_and(|r| !r.is_empty()),
        "compiled mappings were passed"
    );
    let counts = ecs::service_counts(
        &clients,
        &first.outputs.ecs_cluster_name,
        &first.outputs.processor_service_name,
    )
    .await
    .unwrap()
    .expect("service");
    assert_eq!(counts.desired, 0);

    // The image is in the registry under the stack's repository.
    let manifest = reqwest::Client::new()
        .get(format!(
            "http://{}/v2/{stack}-dqetl/manifests/{}",
            s.registry.host(),
            first.image.manifest_digest
        ))
        .basic_auth("AWS", Some(ECR_PASSWORD))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status().as_u16(), 200);

    // The config and the compiled files are in the assets bucket; the config byte for byte.
    let keys: Vec<&str> = first.assets.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "config/tables.yaml",
            "config/compiled/create_tables.sql",
            "config/compiled/dms_table_mappings.json"
        ]
    );
    assert!(first.assets.iter().all(|(_, u)| *u == Upload::Uploaded));
    let config = clients
        .s3
        .get_object()
        .bucket(&first.outputs.assets_bucket)
        .key("config/tables.yaml")
        .send()
        .await
        .unwrap();
    let body = config.body.collect().await.unwrap().into_bytes();
    assert_eq!(
        body.as_ref(),
        std::fs::read(fixture("tables.yaml")).unwrap().as_slice()
    );

    // The bootstrap bucket is versioned, encrypted and closed to the public.
    // Versioned: an object written twice keeps both versions (moto's GetBucketVersioning answer
    // does not parse in the SDK, so this checks the behaviour instead).
    let bucket = &first.bootstrap_bucket;
    crate::aws_support::put(&clients, bucket, "probe", b"one").await;
    crate::aws_support::put(&clients, bucket, "probe", b"two").await;
    let versions = clients
        .s3
        .list_object_versions()
        .bucket(bucket)
        .prefix("probe")
        .send()
        .await
        .unwrap();
    assert_eq!(
        versions.versions().len(),
        2,
        "the bootstrap bucket keeps versions"
    );
    let pab = clients
        .s3
        .get_public_access_block()
        .bucket(&first.bootstrap_bucket)
        .send()
        .await
        .unwrap();
    let pab = pab
        .public_access_block_configuration()
        .expect("public access block");
    assert_eq!(
        (
            pab.block_public_acls(),
            pab.ignore_public_acls(),
            pab.block_public_policy(),
            pab.restrict_public_buckets()
        ),
        (Some(true), Some(true), Some(true), Some(true))
    );
    let enc = clients
        .s3
        .get_bucket_encryption()
        .bucket(&first.bootstrap_bucket)
        .send()
        .await
        .unwrap();
    assert!(
        enc.server_side_encryption_configuration()
            .is_some_and(|c| !c.rules().is_empty())
    );

    // A rerun with nothing changed.
    let second = run(&clients, &opts).await;
    assert_eq!(second.stack_changes, vec![ApplyOutcome::UpToDate]);
    assert!(second.image.already_present);
    assert_eq!(second.image.manifest_digest, first.image.manifest_digest);
    assert!(second.nothing_changed(), "{second:?}");

    // Once post-deploy scaled the service, a deploy keeps its scale (the template would reset it).
    ecs::scale_service(
        &clients,
        &first.outputs.ecs_cluster_name,
        &first.outputs.processor_service_name,
        2,
    )
    .await
    .unwrap();
    let mut changed = opts.clone();
    let edited = s._dir.path().join("tables.yaml");
    std::fs::write(
        &edited,
        std::fs::read_to_string(fixture("tables.yaml"))
            .unwrap()
            .replace("10 seconds", "20 seconds"),
    )
    .unwrap();
    changed.config_path = edited;
    let third = run(&clients, &changed).await;
    assert_eq!(
        third.stack_changes,
        vec![ApplyOutcome::Updated],
        "a new config is a new image digest"
    );
    assert_ne!(third.image.manifest_digest, first.image.manifest_digest);
    let info = Stacks::new(&clients, true)
        .describe(stack)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.parameters["ProcessorDesiredCount"], "2");
    assert_eq!(info.parameters["ProcessorImageUri"], third.image_uri);
    assert_eq!(
        info.parameters["CreateDMSVPCRole"], "true",
        "kept from the first deploy"
    );
}

#[tokio::test]
async fn a_template_above_the_inline_limit_is_uploaded_to_the_bootstrap_bucket() {
    let s = setup().await;
    let clients = s.moto.clients().await;
    let mut opts = options(&s, "big-template");
    opts.inline_template_limit = 1000; // the minimal template is larger than this
    let report = run(&clients, &opts).await;
    assert_eq!(
        report.stack_changes,
        vec![ApplyOutcome::Created, ApplyOutcome::Updated]
    );
    let listed = clients
        .s3
        .list_objects_v2()
        .bucket(&report.bootstrap_bucket)
        .prefix("templates/")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].ends_with(".yaml"));
}

#[tokio::test]
async fn an_invalid_stack_name_stops_before_anything_is_created() {
    let s = setup().await;
    let clients = s.moto.clients().await;
    let opts = options(&s, "Fleet_Prod");
    let err = deploy(&clients, &opts, &|_| {}).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid stack name \"Fleet_Prod\""),
        "{err}"
    );
    let buckets = clients.s3.list_buckets().send().await.unwrap();
    assert!(buckets.buckets().is_empty(), "nothing was created");
}
