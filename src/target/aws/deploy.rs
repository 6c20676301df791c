//! `deploy` on AWS, in order: bootstrap bucket → create or update the stack → push the image to the
//! stack's ECR repository → upload the config and compiled files → point the stack at the new image
//! digest. When the stack already exists its repository is known, so the image goes first and one
//! stack update carries everything. A rerun with nothing changed changes nothing and says so.
//!
//! No secret passes through here: the template has no password parameter (Secrets Manager generates
//! them), and the registry credentials stay in memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::target::aws::assets::{self, Upload};
use crate::target::aws::clients::AwsClients;
use crate::target::aws::compiled::{CONFIG_KEY, CompiledConfig};
use crate::target::aws::ecr;
use crate::target::aws::ecs;
use crate::target::aws::error::AwsError;
use crate::target::aws::iam;
use crate::target::aws::image::{self, AppFiles, ImageError, Platform, PushReport};
use crate::target::aws::naming;
use crate::target::aws::outputs::{StackOutputs, split_repository_uri};
use crate::target::aws::registry::{
    ImageReference, RegistryAuth, RegistryClient, registry_base_url,
};
use crate::target::aws::stack::{ApplyOutcome, ParamValue, Stacks};

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("building or pushing the processor image")]
    Image(#[from] ImageError),
    #[error("the image build task failed")]
    Join(#[from] tokio::task::JoinError),
}

impl From<crate::target::aws::registry::RegistryError> for DeployError {
    fn from(e: crate::target::aws::registry::RegistryError) -> Self {
        DeployError::Image(ImageError::Registry(e))
    }
}

/// Inputs of a deploy.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub stack: String,
    pub config_path: PathBuf,
    /// The template body (the embedded one unless overridden).
    pub template: String,
    /// The base image reference.
    pub base_image: String,
    /// The dqetl executable baked into the image.
    pub binary: PathBuf,
    /// Push to this registry instead of the repository's own host (a pull-through proxy or a
    /// test registry); the repository name stays the stack's.
    pub registry_endpoint: Option<String>,
    pub poll: Duration,
    pub inline_template_limit: usize,
    /// JSON output: no progress drawing.
    pub quiet: bool,
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub stack: String,
    pub bootstrap_bucket: String,
    pub bootstrap_bucket_created: bool,
    /// What happened to the stack, in order (a first deploy creates, then updates the image).
    pub stack_changes: Vec<ApplyOutcome>,
    pub image_uri: String,
    pub image: PushReport,
    pub assets: Vec<(String, Upload)>,
    pub outputs: StackOutputs,
}

impl DeployReport {
    /// True when the rerun found the stack, image and assets exactly as wanted.
    pub fn nothing_changed(&self) -> bool {
        !self.bootstrap_bucket_created
            && self
                .stack_changes
                .iter()
                .all(|c| *c == ApplyOutcome::UpToDate)
            && self.image.already_present
            && self.assets.iter().all(|(_, u)| *u == Upload::Unchanged)
    }
}

/// Runs a deploy. `say` receives one human line per step.
pub async fn deploy(
    clients: &AwsClients,
    opts: &DeployOptions,
    say: &(dyn Fn(&str) + Sync),
) -> Result<DeployReport, DeployError> {
    naming::validate_stack_name(&opts.stack)?;
    let account = clients.account_id().await?.to_string();
    let compiled = CompiledConfig::load(&opts.config_path, &opts.stack, &account)?;
    say(&format!(
        "config {} is valid: {} table(s)",
        opts.config_path.display(),
        compiled.spec.source_tables().count()
    ));

    // The image does not depend on the stack: build it first so a bad binary or an unreachable
    // base image stops the deploy before anything is created.
    let base_ref: ImageReference = opts.base_image.parse().map_err(ImageError::from)?;
    let files = AppFiles {
        binary: opts.binary.clone(),
        config_yaml: compiled.raw.clone(),
    };
    say(&format!(
        "building the image layer from {}",
        opts.binary.display()
    ));
    let layer = tokio::task::spawn_blocking(move || image::build_app_layer(&files)).await??;
    let ecr_auth = ecr::registry_auth(clients).await?;

    let bootstrap = naming::bootstrap_bucket(&opts.stack, &account, clients.region());
    let bootstrap_created = assets::ensure_bootstrap_bucket(clients, &bootstrap).await?;
    say(&format!(
        "bootstrap bucket {bootstrap} {}",
        if bootstrap_created {
            "created"
        } else {
            "ready"
        }
    ));

    let mut stacks = Stacks::new(clients, opts.quiet);
    stacks.poll = opts.poll;
    stacks.inline_limit = opts.inline_template_limit;
    let existing = stacks.describe(&opts.stack).await?;
    let mut params = BTreeMap::new();
    params.insert(
        "DMSTableMappings".to_string(),
        ParamValue::Value(compiled.dms_mappings.clone()),
    );
    params.insert(
        "ConfigS3Key".to_string(),
        ParamValue::Value(CONFIG_KEY.to_string()),
    );

    let usable = existing
        .as_ref()
        .filter(|s| s.status != "ROLLBACK_COMPLETE");
    let mut changes = Vec::new();
    let (outputs, pushed, uploads) = match usable.map(|s| s.typed_outputs()) {
        Some(Ok(outputs)) => {
            // Later deploys: CreateDMSVPCRole keeps its value (flipping it would drop the roles from
            // the stack), and the service keeps the scale post-deploy gave it.
            params.insert("CreateDMSVPCRole".to_string(), ParamValue::UsePrevious);
            params.insert(
                "ProcessorDesiredCount".to_string(),
                current_desired_count(clients, &outputs).await?,
            );
            let pushed = build_and_push(layer, &base_ref, &ecr_auth, &outputs, opts, say).await?;
            let uploads = upload_assets(clients, &outputs, &compiled, say).await?;
            params.insert(
                "ProcessorImageUri".to_string(),
                ParamValue::Value(image_uri(&outputs, &pushed)),
            );
            changes.push(
                stacks
                    .apply(&opts.stack, &opts.template, &params, Some(&bootstrap))
                    .await?,
            );
            (outputs, pushed, uploads)
        }
        _ => {
            let has_role = iam::role_exists(clients, iam::DMS_VPC_ROLE).await?;
            params.insert(
                "CreateDMSVPCRole".to_string(),
                ParamValue::Value((!has_role).to_string()),
            );
            // No image yet: the service starts at zero tasks; post-deploy scales it up.
            params.insert(
                "ProcessorDesiredCount".to_string(),
                ParamValue::Value("0".into()),
            );
            say(&format!("creating stack {}", opts.stack));
            changes.push(
                stacks
                    .apply(&opts.stack, &opts.template, &params, Some(&bootstrap))
                    .await?,
            );
            let outputs = stacks.outputs(&opts.stack).await?;
            let pushed = build_and_push(layer, &base_ref, &ecr_auth, &outputs, opts, say).await?;
            let uploads = upload_assets(clients, &outputs, &compiled, say).await?;
            params.insert("CreateDMSVPCRole".to_string(), ParamValue::UsePrevious);
            params.insert(
                "ProcessorImageUri".to_string(),
                ParamValue::Value(image_uri(&outputs, &pushed)),
            );
            say("pointing the stack at the pushed image");
            changes.push(
                stacks
                    .apply(&opts.stack, &opts.template, &params, Some(&bootstrap))
                    .await?,
            );
            (outputs, pushed, uploads)
        }
    };
    Ok(DeployReport {
        stack: opts.stack.clone(),
        bootstrap_bucket: bootstrap,
        bootstrap_bucket_created: bootstrap_created,
        stack_changes: changes,
        image_uri: image_uri(&outputs, &pushed),
        image: pushed,
        assets: uploads,
        outputs,
    })
}

/// `<repository uri>@sha256:...`: tasks pin the exact image, so every new image rolls the service.
fn image_uri(outputs: &StackOutputs, pushed: &PushReport) -> String {
    format!("{}@{}", outputs.ecr_repository_uri, pushed.manifest_digest)
}

async fn current_desired_count(
    clients: &AwsClients,
    outputs: &StackOutputs,
) -> Result<ParamValue, AwsError> {
    Ok(
        match ecs::service_counts(
            clients,
            &outputs.ecs_cluster_name,
            &outputs.processor_service_name,
        )
        .await?
        {
            Some(c) => ParamValue::Value(c.desired.to_string()),
            None => ParamValue::UsePrevious,
        },
    )
}

/// Resolves the base image, assembles the image on it and pushes it to the stack's repository.
/// The base registry gets the ECR credentials only when it is the registry pushed to (a base in
/// the same private registry); ECR Public and Docker Hub hand out anonymous pull tokens.
async fn build_and_push(
    layer: image::Layer,
    base_ref: &ImageReference,
    ecr_auth: &RegistryAuth,
    outputs: &StackOutputs,
    opts: &DeployOptions,
    say: &(dyn Fn(&str) + Sync),
) -> Result<PushReport, DeployError> {
    let (host, repository) =
        split_repository_uri(&outputs.ecr_repository_uri).ok_or_else(|| AwsError::Unexpected {
            what: "stack output EcrRepositoryUri".into(),
            detail: format!(
                "{:?} is not <registry>/<repository>",
                outputs.ecr_repository_uri
            ),
        })?;
    let target_host = opts.registry_endpoint.as_deref().unwrap_or(host);
    let target = RegistryClient::new(target_host, ecr_auth.clone())?;
    let same_registry = registry_base_url(&base_ref.registry) == target.base_url();
    let base_auth = if same_registry {
        ecr_auth.clone()
    } else {
        RegistryAuth::Anonymous
    };
    let base_client = RegistryClient::new(&base_ref.registry, base_auth)?;
    say(&format!("resolving base image {base_ref}"));
    let base = image::resolve_base(&base_client, base_ref, &Platform::current()).await?;
    let image = image::assemble(&base, layer)?;
    say(&format!(
        "pushing image {} to {target_host}/{repository}",
        short_digest(&image.manifest_digest)
    ));
    let report = image::push(
        &image,
        &base_client,
        base_ref,
        &target,
        repository,
        |step| say(step),
    )
    .await?;
    say(&if report.already_present {
        format!(
            "image {} already in the registry",
            short_digest(&report.manifest_digest)
        )
    } else {
        format!(
            "pushed image {} ({} blob(s) uploaded)",
            report.tag, report.blobs_uploaded
        )
    });
    Ok(report)
}

async fn upload_assets(
    clients: &AwsClients,
    outputs: &StackOutputs,
    compiled: &CompiledConfig,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Vec<(String, Upload)>, AwsError> {
    let mut done = Vec::new();
    for (key, body, content_type) in compiled.assets() {
        let upload =
            assets::upload_if_changed(clients, &outputs.assets_bucket, key, &body, content_type)
                .await?;
        if upload == Upload::Uploaded {
            say(&format!("uploaded s3://{}/{key}", outputs.assets_bucket));
        }
        done.push((key.to_string(), upload));
    }
    Ok(done)
}

fn short_digest(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    &hex[..12.min(hex.len())]
}

/// The executable to bake into the image: the running dqetl.
pub fn current_binary() -> std::io::Result<PathBuf> {
    std::env::current_exe()
}

/// Reads a template override from a file.
pub fn read_template(path: &Path) -> Result<String, AwsError> {
    std::fs::read_to_string(path).map_err(|e| AwsError::Config {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}
