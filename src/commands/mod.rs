//! One file per command: read its flags, call library code, render the result.

pub mod bench;
pub mod capture;
pub mod compile;
pub mod config_schema;
pub mod demo;
pub mod deploy;
pub mod deploy_aws;
pub mod generate_data;
pub mod post_deploy;
pub mod post_deploy_aws;
pub mod process;
pub mod query;
pub mod query_aws;
pub mod sql;
pub mod status;
pub mod status_aws;
pub mod teardown;
pub mod teardown_aws;
pub mod topics;
pub mod validate;

use std::process::ExitCode;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;

use crate::cli::{Cli, Command, ConfigCommand, GlobalArgs, Target};
use crate::config::spec::ConfigSpec;
use crate::config::{ConfigError, LoadContext, load_spec};

/// Runs a command and maps its outcome to dqetl's exit codes: 0 ok, 1 failure, 2 usage/config error.
pub fn run(cli: Cli) -> ExitCode {
    let Cli { global, command } = cli;
    let result: anyhow::Result<ExitCode> = match command {
        Command::Capture(args) => capture::run(&global, &args),
        Command::Validate => validate::run(&global),
        Command::Config(ConfigCommand::Schema) => config_schema::run(),
        Command::Compile(args) => compile::run(&global, &args),
        command @ (Command::Deploy(_)
        | Command::PostDeploy(_)
        | Command::Teardown(_)
        | Command::Status
        | Command::Query(_))
            if global.target == Target::Aws =>
        {
            run_aws(&global, command)
        }
        Command::Query(args) => query::run(&global, &args),
        Command::Process(args) => block_on(process::run(&global, args)),
        Command::Sql(args) => block_on(sql::run(&global, args)),
        Command::Topics(command) => block_on(topics::run(&global, command)),
        Command::GenerateData(args) => generate_data::run(&global, args),
        Command::Deploy(_) => deploy::run(&global),
        Command::PostDeploy(args) => post_deploy::run(&global, &args),
        Command::Status => status::run(&global),
        Command::Teardown(args) => teardown::run(&global, &args),
        Command::Demo(args) => demo::run(&global, &args),
        Command::Bench(command) => block_on(bench::run(&global, command)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            // A config that does not load or validate is a usage error.
            if err.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(ConfigError::EXIT_CODE)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Prints to stdout; a closed pipe (`dqetl config schema | head`) is not an error.
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Placeholder values for loading the config: the stack name, and no AWS account (commands that
/// know the account, on the aws target, set it themselves).
pub fn load_context(global: &GlobalArgs) -> LoadContext {
    LoadContext {
        stack_name: global.stack_name.clone(),
        account_id: None,
    }
}

/// Runs an async command on a fresh multi-threaded runtime.
fn block_on(
    command: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(command)?;
    Ok(ExitCode::SUCCESS)
}

/// Loads and validates the config; a failure maps to exit code 2.
pub fn load_config(global: &GlobalArgs) -> anyhow::Result<ConfigSpec> {
    Ok(load_spec(&global.config, &load_context(global))?)
}

/// `.dqetl/<stack>/` under the current directory: the local target's state.
pub fn local_stack_dir(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    Ok(cwd.join(".dqetl").join(&global.stack_name))
}

/// The broker to use when no `--bootstrap` is given: the config's, unless it leaves it to the target.
pub fn default_bootstrap(global: &GlobalArgs, spec: &ConfigSpec) -> anyhow::Result<String> {
    if let Some(b) = &spec.kafka.bootstrap_servers {
        return Ok(b.clone());
    }
    match global.target {
        Target::Local => anyhow::bail!(
            "no Kafka bootstrap servers: the config leaves them to the target; pass --bootstrap HOST:PORT \
             (the local stack's broker is in .dqetl/{}/state.json after `dqetl deploy`)",
            global.stack_name
        ),
        Target::Aws => anyhow::bail!(
            "no Kafka bootstrap servers: set DQETL_BOOTSTRAP (the ECS task definition sets it from the stack outputs)"
        ),
    }
}

/// Object-store options for the lake: nothing locally; the region on aws (credentials come from
/// the standard AWS chain, never from here).
pub fn storage_options(global: &GlobalArgs) -> HashMap<String, String> {
    let mut options = HashMap::new();
    if global.target == Target::Aws
        && let Some(region) = &global.region
    {
        options.insert("AWS_REGION".to_string(), region.clone());
    }
    options
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops this command");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The aws target's versions of the lifecycle commands and `query` (Athena).
fn run_aws(global: &GlobalArgs, command: Command) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        match command {
            Command::Deploy(a) => {
                let args = deploy_aws::DeployAwsArgs {
                    base_image: a.base_image,
                    template: a.template,
                    registry_endpoint: a.registry_endpoint,
                };
                deploy_aws::run(global, &args).await
            }
            Command::PostDeploy(a) => {
                let options = crate::target::aws::post_deploy::PostDeployOptions {
                    skip_tables: a.skip_tables,
                    skip_topics: a.skip_topics,
                    skip_cdc: a.skip_cdc,
                    skip_processor: a.skip_processor,
                    generate_data: a.generate_data,
                    duration: a.generate_data.then_some(a.duration),
                };
                post_deploy_aws::run(global, &options).await
            }
            Command::Teardown(a) => teardown_aws::run(global, a.force).await,
            Command::Status => status_aws::run(global).await,
            Command::Query(a) => query_aws::run(global, &a.sql).await,
            _ => Err(anyhow::anyhow!("not an aws command")),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
