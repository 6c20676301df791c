//! The data generator: realistic change traffic (inserts, updates, soft and hard deletes, DQ
//! violations) written to the source PostgreSQL database, and a summary of exactly what was
//! written and what the lake must therefore hold.
//!
//! Two traffics: `vehicle` (the default use case, after the original generator) and `generic`
//! (any config: values derived from the schema and rules). Both write only what the source DDL
//! accepts: a violation the database would refuse is never attempted, and the summary says which
//! rules cannot be violated through the database and why. A refused write is a hard error; a
//! lost connection is not: the writer reconnects and carries on without losing, doubling or
//! misreporting a write (see `writer`).

mod catalog;
mod check;
mod connection;
mod error;
mod generic;
mod ledger;
mod pattern;
mod plan;
mod rate;
mod row;
mod shape;
mod summary;
mod values;
mod vehicle;
mod writer;

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::watch;

use crate::config::spec::ConfigSpec;
use crate::pg::PgConfig;

pub use error::{DbRejection, GenerateError};
pub use ledger::{KeyHistory, Ledger, LedgerEvent, Operation, RuleRef, TableLedger};
pub use pattern::{Pattern, PatternError};
pub use row::{Decimal, Key, Value};
pub use shape::Refusal;
pub use summary::{
    LakeExpectation, OperationCounts, RuleSummary, SourceExpectation, StopReason, Summary,
    TableSummary,
};

use generic::GenericTraffic;
use plan::{Plan, TrafficMode};
use summary::RunFacts;
use vehicle::VehicleTraffic;
use writer::{Halt, Pace, Writer};

/// Steps in a row that may write nothing before the traffic is declared stuck.
const IDLE_STEPS: u32 = 10_000;

/// Which traffic to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `vehicle` when the config's source tables are the vehicle use case's, else `generic`.
    #[default]
    Auto,
    Vehicle,
    Generic,
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// The source database (its `Debug` output leaves out the password).
    pub source: PgConfig,
    pub mode: Mode,
    /// Events (row writes) per second; None writes as fast as the database takes them.
    pub rate: Option<f64>,
    /// Events after the seed; None runs until stopped. The seed is not counted.
    pub events: Option<u64>,
    /// Share of written rows that break a DQ rule, in [0, 1].
    pub bad_ratio: f64,
    /// Seeds every random choice: the same seed on an empty database writes the same traffic.
    pub seed: u64,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// The outcome of a run: its summary, the ledger it was derived from, and the error that
/// stopped it, if one did (the summary then covers what was committed before it).
#[derive(Debug)]
pub struct Report {
    pub summary: Summary,
    pub ledger: Ledger,
    pub failure: Option<GenerateError>,
}

/// Seeds the source tables, then writes traffic until `options.events` events are written or
/// `stop` turns true. Errors before the first write (connection, catalog, mode) are returned as
/// `Err`; a failure during the traffic ends the run with `Report::failure` set.
pub async fn run(
    spec: &ConfigSpec,
    options: &GenerateOptions,
    stop: watch::Receiver<bool>,
) -> Result<Report, GenerateError> {
    check_options(options)?;
    let started = Instant::now();
    let connection = connection::connect(&options.source)
        .await
        .map_err(|e| match e {
            connection::ConnectError::Refused(e) => GenerateError::Connect(e),
            timed_out => GenerateError::ConnectTimeout(timed_out.rejection()),
        })?;

    let mut catalogs = Vec::new();
    for table in spec.source_tables() {
        let columns = catalog::columns(&connection.client, &spec.schema_name, &table.name).await?;
        if columns.is_empty() {
            return Err(GenerateError::TableMissing {
                schema: spec.schema_name.clone(),
                table: table.name.clone(),
            });
        }
        catalogs.push(columns);
    }
    let plan = Arc::new(Plan::build(
        spec,
        &catalogs,
        options.mode,
        options.seed,
        Utc::now().naive_utc(),
    )?);
    let retained = match plan.mode {
        TrafficMode::Vehicle => VehicleTraffic::retained(&plan),
        TrafficMode::Generic => GenericTraffic::retained(&plan),
    };
    let progress = progress_bar(options);
    let pace = Pace {
        rate: options.rate,
        events: options.events,
        stop,
        progress: progress.clone(),
    };
    let mut writer = Writer::new(
        connection,
        options.source.clone(),
        Arc::clone(&plan),
        retained,
        pace,
    )
    .await?;

    let rng = SmallRng::seed_from_u64(options.seed);
    let mut traffic = match plan.mode {
        TrafficMode::Vehicle => Traffic::Vehicle(VehicleTraffic::new(
            Arc::clone(&plan),
            rng,
            options.bad_ratio,
        )),
        TrafficMode::Generic => Traffic::Generic(GenericTraffic::new(
            Arc::clone(&plan),
            rng,
            options.bad_ratio,
        )),
    };
    tracing::info!(
        mode = plan.mode.name(),
        seed = options.seed,
        "generating traffic"
    );
    // A seed-only run (`--duration 0s`, as post-deploy runs it) on tables that already hold rows
    // writes nothing, so re-running post-deploy does not seed again.
    let seed = !(options.events == Some(0)
        && writer
            .ledger()
            .tables()
            .iter()
            .any(|t| t.preexisting_rows > 0));
    if !seed {
        tracing::info!("the source tables already hold rows; not seeding again");
    }
    let halt = drive(&mut traffic, &mut writer, seed).await;
    let (stopped, failure) = match halt {
        Halt::Budget | Halt::Interrupted => {
            let reason = if matches!(halt, Halt::Budget) {
                StopReason::Budget
            } else {
                StopReason::Interrupted
            };
            // Every statement of the open transaction succeeded: keep them.
            match writer.commit().await {
                Ok(()) => (reason, None),
                Err(Halt::Failed(e)) => (StopReason::Error, Some(e)),
                Err(_) => (reason, None),
            }
        }
        Halt::Failed(e) => {
            writer.roll_back().await;
            (StopReason::Error, Some(e))
        }
    };
    progress.finish_and_clear();

    let mut notes = plan.notes.clone();
    if let Traffic::Vehicle(v) = &traffic {
        notes.extend(v.notes().iter().cloned());
    }
    let facts = RunFacts {
        seed: options.seed,
        bad_ratio: options.bad_ratio,
        events: writer.events(),
        seed_writes: writer.seed_writes(),
        connection_losses: writer.connection_losses(),
        stopped,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    };
    let mut summary = Summary::build(writer.ledger(), &plan, facts);
    summary.notes = notes;
    let ledger = writer.into_ledger();
    Ok(Report {
        summary,
        ledger,
        failure,
    })
}

enum Traffic {
    Vehicle(VehicleTraffic),
    Generic(GenericTraffic),
}

/// Seed (unless told not to), then steps until something halts the run. Each step's writes are committed together.
async fn drive(traffic: &mut Traffic, w: &mut Writer, seed: bool) -> Halt {
    let outcome: Result<(), Halt> = async {
        if seed {
            match traffic {
                Traffic::Vehicle(v) => v.seed(w).await?,
                Traffic::Generic(g) => g.seed(w).await?,
            }
        }
        w.commit().await?;
        w.start_counting();
        let mut idle = 0;
        loop {
            let wrote = match traffic {
                Traffic::Vehicle(v) => v.step(w).await?,
                Traffic::Generic(g) => g.step(w).await?,
            };
            w.commit().await?;
            idle = if wrote { 0 } else { idle + 1 };
            if idle >= IDLE_STEPS {
                return Err(Halt::Failed(GenerateError::Stuck(format!(
                    "{IDLE_STEPS} steps in a row found nothing to write"
                ))));
            }
            // Yield between steps so Ctrl-C and the connection task run even without a rate limit.
            tokio::task::yield_now().await;
        }
    }
    .await;
    match outcome {
        Err(halt) => halt,
        Ok(()) => Halt::Budget,
    }
}

fn check_options(options: &GenerateOptions) -> Result<(), GenerateError> {
    if !(0.0..=1.0).contains(&options.bad_ratio) {
        return Err(GenerateError::Option(format!(
            "--bad-ratio must be between 0 and 1, got {}",
            options.bad_ratio
        )));
    }
    if let Some(rate) = options.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(GenerateError::Option(format!(
            "--rate must be a positive number of events per second, got {rate}"
        )));
    }
    Ok(())
}

fn progress_bar(options: &GenerateOptions) -> ProgressBar {
    if !options.progress {
        return ProgressBar::hidden();
    }
    match options.events {
        Some(n) => {
            let bar = ProgressBar::new(n);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {pos}/{len} events ({per_sec}, eta {eta})",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message("generating");
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} generating: {pos} events ({per_sec})")
            {
                bar.set_style(style);
            }
            bar
        }
    }
}
