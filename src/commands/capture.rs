//! `dqetl capture`: local CDC, PostgreSQL → Kafka in DMS JSON, until SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::capture::{self, CancellationToken, CaptureOptions, CaptureReport};
use crate::cli::{CaptureArgs, GlobalArgs, Target};
use crate::config::spec::ConfigSpec;

pub fn run(global: &GlobalArgs, args: &CaptureArgs) -> anyhow::Result<ExitCode> {
    if global.target == Target::Aws {
        bail!("capture runs on the local target only; on aws, the DMS task captures changes");
    }
    let config = load_spec(&global.config)?;
    let default_name = default_name(&global.stack_name);
    let pg_url = args.pg_url.clone().context(
        "no source database: pass --pg-url postgresql://USER@HOST:PORT/DB (or set DQETL_PG_URL)",
    )?;
    reject_password_in_url(&pg_url)?;
    let bootstrap = match (&args.bootstrap, &config.kafka.bootstrap_servers) {
        (Some(flag), _) => flag.clone(),
        (None, Some(configured)) => configured.clone(),
        (None, None) => bail!(
            "no Kafka broker: pass --bootstrap HOST:PORT (the config leaves kafka.bootstrap_servers to the target)"
        ),
    };
    let state_dir = args.state_dir.clone().unwrap_or_else(|| {
        PathBuf::from(".dqetl")
            .join(&global.stack_name)
            .join("capture")
    });
    let options = CaptureOptions::new(
        pg_url,
        args.slot.clone().unwrap_or_else(|| default_name.clone()),
        args.publication.clone().unwrap_or(default_name),
        bootstrap,
        state_dir,
    );

    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        spawn_signal_handler(shutdown.clone())?;
        capture::run(&config, &options, shutdown)
            .await
            .map_err(anyhow::Error::from)
    })?;
    render(&report, global.json);
    Ok(ExitCode::SUCCESS)
}

/// `dqetl_<stack>`, folded to what PostgreSQL accepts as a slot name.
fn default_name(stack: &str) -> String {
    let folded: String = stack
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("dqetl_{folded}")
}

/// Arguments are visible to every user of the machine: a password there would leak.
fn reject_password_in_url(url: &str) -> anyhow::Result<()> {
    let parsed: tokio_postgres::Config = url
        .parse()
        .context("--pg-url is not a valid PostgreSQL URL")?;
    if parsed.get_password().is_some() {
        bail!(
            "--pg-url contains a password; remove it and set PGPASSWORD instead, so it stays out of the process list"
        );
    }
    Ok(())
}

fn spawn_signal_handler(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received; stopping capture"),
            _ = terminate.recv() => tracing::info!("SIGTERM received; stopping capture"),
        }
        shutdown.cancel();
    });
    Ok(())
}

fn render(report: &CaptureReport, json: bool) {
    if json {
        let value = serde_json::json!({
            "snapshot_rows": report.snapshot_rows,
            "changes": report.changes,
            "skipped": report.skipped,
            "restarts": report.restarts,
        });
        println!("{value}");
    } else {
        println!(
            "capture stopped: {} snapshot rows and {} changes sent ({} restarts)",
            report.snapshot_rows, report.changes, report.restarts
        );
    }
}

// replaced on integration: crate::config::load_spec
fn load_spec(path: &Path) -> anyhow::Result<ConfigSpec> {
    bail!(
        "loading {} needs the config loader, which is not integrated yet",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_slot_name_is_a_valid_slot_name() {
        assert_eq!(default_name("dqetl"), "dqetl_dqetl");
        assert_eq!(default_name("My-Stack.2"), "dqetl_my_stack_2");
    }

    #[test]
    fn a_password_in_the_url_is_refused() {
        let err =
            reject_password_in_url("postgresql://app:s3cret@127.0.0.1:5432/etldb").unwrap_err();
        assert!(err.to_string().contains("PGPASSWORD"), "{err}");
        assert!(!err.to_string().contains("s3cret"));
        assert!(reject_password_in_url("postgresql://app@127.0.0.1:5432/etldb").is_ok());
    }
}
