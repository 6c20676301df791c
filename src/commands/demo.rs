//! `dqetl demo`: the whole pipeline on this machine. Deploys the local stack, loads it, generates
//! change traffic, waits until the lake caught up, then shows what happened: the data-quality
//! summary, current rows, the SCD2 history of one key and the quarantine reasons. Re-running
//! resumes: what exists and runs is kept.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{DemoArgs, GlobalArgs};
use crate::target::local::catchup::{CatchUp, wait_caught_up};
use crate::target::local::children::{Dqetl, GeneratorOutput, Traffic};
use crate::target::local::console::Console;
use crate::target::local::demo::{
    QualitySummary, busiest_key_sql, current_rows_sql, history_sql, key_of, quality_summary,
    showcase_table,
};
use crate::target::local::lifecycle;
use crate::target::local::post_deploy::{PostDeployOptions, post_deploy};
use crate::target::local::stack::{self, StackDir};
use crate::target::local::summary::Expectations;

use super::deploy::{not_on_aws, print_json_steps, runtime, stack_flag};
use super::post_deploy::{ddl, load_config};

pub fn run(global: &GlobalArgs, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    not_on_aws(global, "demo")?;
    stack::check_stack_name(&global.stack_name)?;
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.bad_ratio),
        "--bad-ratio must be between 0 and 1, found {}",
        args.bad_ratio
    );
    lifecycle::check_binaries().context("checking the setup")?;
    let config = load_config(global)?;
    let ddl = ddl(&config);
    let dir = StackDir::for_stack(&global.stack_name);
    let dqetl = Dqetl::current(&global.config, &global.stack_name)?;
    let mut console = Console::new(global.json);
    let runtime = runtime()?;

    let result = runtime.block_on(async {
        console.line("== deploy: local services");
        lifecycle::deploy(&dir, &mut console)
            .await
            .context("deploying the local stack")?;

        console.line("\n== post-deploy: tables, topics, capture, processor, sample data");
        let options = PostDeployOptions {
            skip_tables: false,
            skip_topics: false,
            skip_cdc: false,
            skip_processor: false,
            skip_seed: false,
            partitions: None,
            traffic: Traffic {
                rate: args.rate,
                duration: args.duration,
                bad_ratio: args.bad_ratio,
                seed: rand::random(),
            },
            generate: !args.duration.is_zero(),
            generator_output: if global.json {
                GeneratorOutput::Stderr
            } else {
                GeneratorOutput::Terminal
            },
        };
        post_deploy(&dqetl, &dir, &config, &ddl, &options, &mut console)
            .await
            .context("post-deploy")?;

        console.line("\n== waiting for the pipeline to catch up");
        let state = stack::LocalState::load(&dir)?
            .context("the stack's state.json disappeared while the demo ran")?;
        let target = CatchUp {
            slot: stack::slot_name(dir.stack()),
            group: stack::consumer_group(config.kafka.consumer_group.as_deref(), dir.stack()),
            topics: config.source_tables().map(|t| t.topic.clone()).collect(),
            timeout: args.catch_up_timeout,
        };
        wait_caught_up(&dir, &state, &target, &mut console)
            .await
            .context("waiting for the pipeline to catch up")?;
        anyhow::Ok(())
    });
    if let Err(e) = result {
        print_json_steps(global, &console, None);
        return Err(e).context(format!(
            "demo of local stack `{}` (the stack keeps running; `dqetl{} status` shows where it stands, \
             `dqetl{} teardown` removes it)",
            global.stack_name,
            stack_flag(&global.stack_name),
            stack_flag(&global.stack_name)
        ));
    }

    let expectations = Expectations::from_dir(&dir.summaries_dir())?;
    let quality = quality_summary(&dqetl, &dir, &config, &expectations)
        .context("reading the data-quality summary from the lake")?;
    if global.json {
        print_json_steps(
            global,
            &console,
            Some(serde_json::json!({ "quality": quality })),
        );
        return Ok(ExitCode::SUCCESS);
    }
    drop(console);

    println!("\n== data quality");
    print!("{}", render_quality(&quality));
    if let Some(table) = showcase_table(&config) {
        println!("\n== current rows of {} (a few)", table.name);
        show(dqetl.query_print(&current_rows_sql(table, 5)));
        let key = busiest_key_sql(table)
            .map(|sql| dqetl.query_json(&sql))
            .transpose()
            .ok()
            .flatten()
            .and_then(|rows| key_of(&rows));
        if let Some(sql) = key.as_ref().and_then(|k| history_sql(table, k)) {
            println!(
                "\n== SCD2 history of {} {} (every version, with its validity interval)",
                table.name,
                key.as_ref().map(|k| k.to_string()).unwrap_or_default()
            );
            show(dqetl.query_print(&sql));
        }
    }
    if !quality.top_reasons.is_empty() {
        println!("\n== top quarantine reasons (_dq_reason)");
        for reason in &quality.top_reasons {
            println!("{:>6}  {}: {}", reason.rows, reason.table, reason.reason);
        }
    }
    let flag = stack_flag(&global.stack_name);
    println!(
        "\n== go further\n\
         dqetl{flag} query \"SELECT * FROM vehicles WHERE _is_current LIMIT 10\"\n\
         dqetl{flag} query \"SELECT _dq_reason, count(*) FROM vehicle_telemetry_quarantine GROUP BY 1\"\n\
         dqetl{flag} query \"SELECT * FROM dq_metrics ORDER BY timestamp DESC LIMIT 20\"\n\
         dqetl{flag} post-deploy --generate-data --duration 2m   # more traffic\n\
         dqetl{flag} status                                      # every stage's health\n\
         dqetl{flag} teardown                                    # stop and delete everything\n\
         logs: {}",
        dir.logs_dir().display()
    );
    Ok(ExitCode::SUCCESS)
}

fn show(result: Result<(), crate::target::local::error::LocalError>) {
    if let Err(e) = result {
        println!("(not available: {e})");
    }
}

/// The per-table summary and the failed rules, as aligned text.
pub fn render_quality(quality: &QualitySummary) -> String {
    let mut out = format!(
        "{:<22} {:>8} {:>8} {:>8} {:>9} {:>11} {:>9}\n",
        "TABLE", "EVENTS", "CHECKED", "CURRENT", "VERSIONS", "QUARANTINED", "PASS RATE"
    );
    for t in &quality.tables {
        out.push_str(&format!(
            "{:<22} {:>8} {:>8} {:>8} {:>9} {:>11} {:>9}\n",
            t.table,
            t.events,
            t.checked,
            t.current_rows,
            t.loaded_versions,
            t.quarantined,
            t.pass_rate
                .map(|r| format!("{:.1}%", r * 100.0))
                .unwrap_or_else(|| "-".into())
        ));
    }
    if !quality.failed_rules.is_empty() {
        out.push_str("\nfailed rules (quarantine rows listing the rule):\n");
        for rule in &quality.failed_rules {
            out.push_str(&format!("{:>6}  {} {}\n", rule.rows, rule.table, rule.rule));
        }
    }
    out
}
