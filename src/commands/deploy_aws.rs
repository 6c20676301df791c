//! `dqetl --target aws deploy`: build and push the processor image, upload the config, and create
//! or update the stack, with progress fed by stack events.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::cli::GlobalArgs;
use crate::target::aws::clients::AwsClients;
use crate::target::aws::compiled::command_error;
use crate::target::aws::deploy::{self, DeployError, DeployOptions};
use crate::target::aws::image::DEFAULT_BASE_IMAGE;
use crate::target::aws::stack::{ApplyOutcome, INLINE_TEMPLATE_LIMIT};
use crate::target::aws::template::TEMPLATE;

/// Flags of `deploy` that only the aws target reads.
#[derive(Debug, Clone, Default)]
pub struct DeployAwsArgs {
    /// Base image of the processor image (default: Debian 12 slim from ECR Public).
    pub base_image: Option<String>,
    /// A CloudFormation template to deploy instead of the embedded one.
    pub template: Option<PathBuf>,
    /// Push the image to this registry endpoint instead of the ECR host (proxy, tests).
    pub registry_endpoint: Option<String>,
}

pub async fn run(global: &GlobalArgs, args: &DeployAwsArgs) -> anyhow::Result<()> {
    let clients = AwsClients::from_environment(global.region.as_deref()).await?;
    let template = match &args.template {
        Some(path) => deploy::read_template(path)?,
        None => TEMPLATE.to_string(),
    };
    let binary =
        deploy::current_binary().context("locating the running dqetl executable for the image")?;
    let opts = DeployOptions {
        stack: global.stack_name.clone(),
        config_path: global.config.clone(),
        template,
        base_image: args
            .base_image
            .clone()
            .unwrap_or_else(|| DEFAULT_BASE_IMAGE.to_string()),
        binary,
        registry_endpoint: args.registry_endpoint.clone(),
        poll: Duration::from_secs(5),
        inline_template_limit: INLINE_TEMPLATE_LIMIT,
        quiet: global.json,
    };
    let quiet = global.json;
    let say = move |line: &str| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    let report = deploy::deploy(&clients, &opts, &say)
        .await
        .map_err(|e| match e {
            DeployError::Aws(e) => command_error(e),
            other => anyhow::Error::new(other),
        })
        .with_context(|| format!("deploying stack {}", opts.stack))?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if report.nothing_changed() {
        println!(
            "nothing changed: stack {} is up to date, image and config already deployed",
            report.stack
        );
    } else {
        for change in &report.stack_changes {
            match change {
                ApplyOutcome::Created => println!("stack {} created", report.stack),
                ApplyOutcome::Updated => println!("stack {} updated", report.stack),
                ApplyOutcome::UpToDate => println!("stack {} is up to date", report.stack),
            }
        }
    }
    println!("image: {}", report.image_uri);
    println!(
        "next: dqetl --target aws --stack-name {} post-deploy",
        report.stack
    );
    Ok(())
}
