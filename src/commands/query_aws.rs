//! `dqetl --target aws query SQL`: run SQL on Athena over the stack's Delta tables and print the
//! result exactly as a local query prints it (aligned table and row count, or JSON rows).

use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::GlobalArgs;
use crate::commands::print_stdout;
use crate::query::render::{render_json, render_table};
use crate::target::aws::athena::{Athena, QueryResult};
use crate::target::aws::clients::AwsClients;
use crate::target::aws::stack::Stacks;

pub async fn run(global: &GlobalArgs, sql: &str) -> anyhow::Result<()> {
    let clients = AwsClients::from_environment(global.region.as_deref()).await?;
    let outputs = Stacks::new(&clients, true)
        .outputs(&global.stack_name)
        .await?;
    let athena = Athena {
        clients: &clients,
        workgroup: &outputs.athena_work_group,
        database: &outputs.glue_database,
        poll: Duration::from_millis(500),
        timeout: Duration::from_secs(30 * 60),
    };
    let target = if global.json {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let spinner = ProgressBar::with_draw_target(None, target);
    spinner.set_style(
        ProgressStyle::with_template("{spinner} athena {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    let result = athena
        .run(sql, |state| spinner.set_message(state.to_lowercase()))
        .await;
    spinner.finish_and_clear();
    let result = result.context("running the query on Athena")?;
    print_stdout(&format!("{}\n", render(&result, global.json)?))
}

/// The result as the local query renders it.
pub fn render(result: &QueryResult, json: bool) -> anyhow::Result<String> {
    let batch = result
        .to_record_batch()
        .context("reading Athena's result")?;
    let batches = if batch.num_columns() == 0 {
        Vec::new()
    } else {
        vec![batch]
    };
    let rendered = if json {
        render_json(&batches)
    } else {
        render_table(&batches)
    };
    rendered.context("rendering the result")
}
