//! `dqetl generate-data`: change traffic into the source database, then the summary of what
//! was written and what the lake must hold.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use tokio::sync::watch;

use crate::cli::{GenerateDataArgs, GenerateMode, GlobalArgs};
use crate::generate::{self, GenerateError, GenerateOptions, Mode};
use crate::pg::{PgConfig, PgError};

/// Usage and config errors.
const USAGE: u8 = 2;

const NO_SOURCE: &str = "no source database: pass --pg-url or set DQETL_PG_URL, or set DQETL_PG_HOST \
     (with DQETL_PG_PORT, DQETL_PG_DATABASE, DQETL_PG_USER and DQETL_PG_PASSWORD)";

pub fn run(global: &GlobalArgs, args: GenerateDataArgs) -> anyhow::Result<ExitCode> {
    let spec = super::load_config(global)?;
    // --pg-url or DQETL_PG_URL, else the DQETL_PG_* parts the aws jobs task injects.
    let source = match PgConfig::from_env(args.pg_url.as_deref()) {
        Ok(source) => source,
        Err(PgError::NoSource) => return Ok(usage_error(NO_SOURCE)),
        Err(e) => return Ok(usage_error(&format!("{:#}", anyhow::Error::new(e)))),
    };
    let events = (f64::from(args.rate) * args.duration.as_secs_f64()).ceil() as u64;
    let options = GenerateOptions {
        source,
        mode: match args.mode {
            GenerateMode::Auto => Mode::Auto,
            GenerateMode::Vehicle => Mode::Vehicle,
            GenerateMode::Generic => Mode::Generic,
        },
        rate: Some(f64::from(args.rate)),
        events: Some(events),
        bad_ratio: args.bad_ratio,
        seed: args.seed.unwrap_or_else(rand::random),
        progress: !global.json && std::io::stderr().is_terminal(),
    };

    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let outcome = runtime.block_on(async {
        let (stop_tx, stop) = watch::channel(false);
        let ctrl_c = tokio::spawn(async move {
            super::shutdown_signal().await;
            eprintln!("stopping: committing the open transaction, then the summary");
            let _ = stop_tx.send(true);
        });
        let outcome = generate::run(&spec, &options, stop).await;
        // Later signals take their default action again.
        ctrl_c.abort();
        outcome
    });
    let report = match outcome {
        Ok(report) => report,
        Err(e @ (GenerateError::Option(_) | GenerateError::ModeMismatch { .. })) => {
            return Ok(usage_error(&e.to_string()));
        }
        Err(e) => return Err(e).context("generate-data could not start"),
    };

    let json = serde_json::to_string_pretty(&report.summary)
        .context("cannot render the summary as JSON")?;
    if let Some(path) = &args.summary_json {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write the summary to {}", path.display()))?;
    }
    if global.json {
        println!("{json}");
    } else {
        print!("{}", report.summary.render_text());
    }
    match report.failure {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => Err(anyhow::Error::new(e).context("generate-data stopped")),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(USAGE)
}
