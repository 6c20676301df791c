//! `dqetl --target aws post-deploy`: tables, topics, CDC, processor, query tables, sample data.

use anyhow::{Context, bail};

use crate::cli::GlobalArgs;
use crate::target::aws::clients::AwsClients;
use crate::target::aws::compiled::{CompiledConfig, command_error};
use crate::target::aws::post_deploy::{PostDeploy, PostDeployOptions, StepOutcome, Timing};
use crate::target::aws::stack::Stacks;

pub async fn run(global: &GlobalArgs, options: &PostDeployOptions) -> anyhow::Result<()> {
    let clients = AwsClients::from_environment(global.region.as_deref()).await?;
    let stack = &global.stack_name;
    let outputs = Stacks::new(&clients, global.json).outputs(stack).await?;
    let account = clients.account_id().await?.to_string();
    let config = CompiledConfig::load(&global.config, stack, &account).map_err(command_error)?;
    let quiet = global.json;
    let say = move |line: &str| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    let on_log = move |job: &str, line: &str| {
        if !quiet {
            println!("[{job}] {line}");
        }
    };
    let post = PostDeploy {
        clients: &clients,
        stack,
        outputs: &outputs,
        config: &config.spec,
        options,
        timing: Timing::default(),
    };
    let report = post
        .run(&say, &on_log)
        .await
        .with_context(|| format!("post-deploy of stack {stack}"))?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for s in &report.steps {
            let (mark, detail) = match &s.outcome {
                StepOutcome::Done(d) => ("ok     ", d),
                StepOutcome::Skipped(d) => ("skipped", d),
                StepOutcome::Pending(d) => ("pending", d),
                StepOutcome::Failed(d) => ("FAILED ", d),
            };
            println!("{mark} {:<24} {detail}", s.step);
        }
    }
    let failures = report.failures();
    if !failures.is_empty() {
        let names: Vec<&str> = failures.iter().map(|s| s.step.as_str()).collect();
        bail!(
            "post-deploy finished with {} failed step(s): {}",
            failures.len(),
            names.join(", ")
        );
    }
    Ok(())
}
