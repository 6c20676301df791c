//! `dqetl capture`: local CDC, PostgreSQL → Kafka in DMS JSON, until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context;

use crate::capture::{self, CancellationToken, CaptureOptions, CaptureReport};
use crate::cli::{CaptureArgs, GlobalArgs, Target};
use crate::pg::{PgConfig, TlsSettings};

pub fn run(global: &GlobalArgs, args: &CaptureArgs) -> anyhow::Result<ExitCode> {
    if global.target == Target::Aws {
        return Ok(usage_error(
            "capture runs on the local target only; on aws, the DMS task captures changes",
        ));
    }
    let config = super::load_config(global)?;
    let Some(pg_url) = args.pg_url.clone() else {
        return Ok(usage_error(
            "no source database: pass --pg-url postgresql://USER@HOST:PORT/DB or set DQETL_PG_URL",
        ));
    };
    if let Err(message) = check_no_password(&pg_url) {
        return Ok(usage_error(&message));
    }
    let bootstrap = match &args.bootstrap {
        Some(flag) => flag.clone(),
        None => super::default_bootstrap(global, &config)?,
    };
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => super::local_stack_dir(global)?.join("capture"),
    };
    let default_name = default_name(&global.stack_name);
    let mut options = CaptureOptions::new(
        pg_url,
        args.slot.clone().unwrap_or_else(|| default_name.clone()),
        args.publication.clone().unwrap_or(default_name),
        bootstrap,
        state_dir,
    );
    options.tls = match TlsSettings::from_env() {
        Ok(tls) => tls,
        Err(e) => return Ok(usage_error(&e.to_string())),
    };

    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        let signals = tokio::spawn(async move {
            super::shutdown_signal().await;
            tracing::info!(
                "stopping capture: flushing and confirming what the broker acknowledged"
            );
            on_signal.cancel();
        });
        let outcome = capture::run(&config, &options, shutdown).await;
        signals.abort();
        outcome
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
fn check_no_password(url: &str) -> Result<(), String> {
    let parsed = PgConfig::parse(url, "--pg-url", &TlsSettings::default())
        .map_err(|e| format!("{:#}", anyhow::Error::new(e)))?;
    if parsed.tokio().get_password().is_some() {
        return Err(
            "--pg-url contains a password; remove it and set PGPASSWORD instead, so it stays out of the process list"
                .into(),
        );
    }
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

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
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
    fn a_password_in_the_url_is_refused_without_echoing_it() {
        let err = check_no_password("postgresql://app:s3cret@127.0.0.1:5432/etldb").unwrap_err();
        assert!(err.contains("PGPASSWORD"), "{err}");
        assert!(!err.contains("s3cret"));
        assert!(check_no_password("postgresql://app@127.0.0.1:5432/etldb").is_ok());
        let tls =
            "postgresql://app@127.0.0.1:5432/etldb?sslmode=verify-full&sslrootcert=/etc/ca.pem";
        assert!(check_no_password(tls).is_ok());
    }
}
