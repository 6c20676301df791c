//! `dqetl query SQL`: SQL over the lake's Delta tables (local target: DataFusion).

use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::cli::{GlobalArgs, QueryArgs, Target};
use crate::commands::{load_context, print_stdout};
use crate::config::layout::LakeLayout;
use crate::config::{ConfigError, load_spec};
use crate::query::local::LocalQuery;
use crate::query::render::{render_json, render_table};

pub fn run(global: &GlobalArgs, args: &QueryArgs) -> anyhow::Result<ExitCode> {
    let config = match load_spec(&global.config, &load_context(global)) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {:#}", anyhow::Error::new(err));
            return Ok(ExitCode::from(ConfigError::EXIT_CODE));
        }
    };
    let layout = match global.target {
        Target::Local => {
            let cwd = std::env::current_dir().context("reading the current directory")?;
            LakeLayout::local(&cwd.join(".dqetl").join(&global.stack_name).join("lake"))
        }
        Target::Aws => bail!(
            "queries on the aws target run on Athena, which is not wired up yet; use --target aws once deployed"
        ),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let batches = runtime.block_on(async {
        let session = LocalQuery::open(&layout, &config).await?;
        session.query(&args.sql).await
    })?;
    let rendered = if global.json {
        render_json(&batches)
    } else {
        render_table(&batches)
    };
    print_stdout(&format!("{}\n", rendered.context("rendering the result")?))?;
    Ok(ExitCode::SUCCESS)
}
