//! `dqetl post-deploy`: source tables, topics, capture, processor, sample data; optionally
//! generated traffic in the foreground. Each step prints its result and can be skipped.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{GlobalArgs, PostDeployArgs};
use crate::config::spec::ConfigSpec;
use crate::target::local::children::{Dqetl, GeneratorOutput, Traffic};
use crate::target::local::console::Console;
use crate::target::local::post_deploy::{PostDeployOptions, post_deploy};
use crate::target::local::stack::{self, StackDir};

use super::deploy::{not_on_aws, print_json_steps, runtime, stack_flag};

pub fn run(global: &GlobalArgs, args: &PostDeployArgs) -> anyhow::Result<ExitCode> {
    not_on_aws(global, "post-deploy")?;
    stack::check_stack_name(&global.stack_name)?;
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.bad_ratio),
        "--bad-ratio must be between 0 and 1, found {}",
        args.bad_ratio
    );
    let config = load_config(global)?;
    let ddl = ddl(&config);
    let dir = StackDir::for_stack(&global.stack_name);
    let dqetl = Dqetl::current(&global.config, &global.stack_name)?;
    let options = PostDeployOptions {
        skip_tables: args.skip_tables,
        skip_topics: args.skip_topics,
        skip_cdc: args.skip_cdc,
        skip_processor: args.skip_processor,
        skip_seed: args.skip_seed,
        partitions: args.partitions,
        traffic: Traffic {
            rate: args.rate,
            duration: args.duration,
            bad_ratio: args.bad_ratio,
            seed: args.seed.unwrap_or_else(rand::random),
        },
        generate: args.generate_data,
        generator_output: if global.json {
            GeneratorOutput::Stderr
        } else {
            GeneratorOutput::Terminal
        },
    };
    let mut console = Console::new(global.json);
    let result = runtime()?.block_on(post_deploy(
        &dqetl,
        &dir,
        &config,
        &ddl,
        &options,
        &mut console,
    ));
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            print_json_steps(global, &console, None);
            return Err(e).context(format!(
                "post-deploy of local stack `{}`",
                global.stack_name
            ));
        }
    };
    if global.json {
        print_json_steps(
            global,
            &console,
            Some(serde_json::json!({
                "seed_summary": report.seed_summary,
                "traffic_summary": report.traffic_summary,
            })),
        );
    } else {
        let flag = stack_flag(&global.stack_name);
        console.line(&format!(
            "\nnext: dqetl{flag} status    dqetl{flag} query \"SELECT count(*) FROM dq_metrics\"\n\
             logs: {}",
            dir.logs_dir().display()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn load_config(global: &GlobalArgs) -> anyhow::Result<ConfigSpec> {
    super::load_config(global)
}

pub(super) fn ddl(config: &ConfigSpec) -> String {
    crate::config::compile::ddl(config)
}
