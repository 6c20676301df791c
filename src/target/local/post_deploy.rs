//! `post-deploy` of a local stack: source tables, topics, capture, processor, sample data.
//! Every step is idempotent (what exists is kept, what runs is left running) and skippable.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::spec::ConfigSpec;

use super::broker;
use super::children::{self, Dqetl, GeneratorOutput, Traffic, WorkerStart};
use super::console::{Reporter, StepResult};
use super::error::LocalError;
use super::kafka;
use super::lifecycle;
use super::stack::{self, LocalState, StackDir, Worker};
use super::summary::GeneratorRun;

/// Which steps run and how.
#[derive(Debug, Clone)]
pub struct PostDeployOptions {
    pub skip_tables: bool,
    pub skip_topics: bool,
    pub skip_cdc: bool,
    pub skip_processor: bool,
    pub skip_seed: bool,
    /// Partitions of new topics (overrides the config's `kafka.partitions`).
    pub partitions: Option<i32>,
    /// Rate, bad ratio and seed of the generator; `duration` is the foreground run's length.
    pub traffic: Traffic,
    /// Run the generator in the foreground for `traffic.duration` after seeding.
    pub generate: bool,
    pub generator_output: GeneratorOutput,
}

/// What post-deploy left behind for the caller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostDeployReport {
    /// The seed run's summary, when seeding ran.
    pub seed_summary: Option<PathBuf>,
    /// The foreground run's summary, when `--generate-data` ran.
    pub traffic_summary: Option<PathBuf>,
}

/// Loads the stack's state and checks that both services answer.
pub fn deployed_state(dir: &StackDir) -> Result<LocalState, LocalError> {
    let state = LocalState::load(dir)?.ok_or_else(|| LocalError::NotDeployed {
        stack: dir.stack().to_string(),
        state_file: dir.state_file(),
    })?;
    let up = lifecycle::services_up(dir, &state);
    let down = if !up.postgres {
        Some("PostgreSQL")
    } else if !up.broker {
        Some("the broker")
    } else {
        None
    };
    match down {
        Some(service) => Err(LocalError::ServiceDown {
            service,
            stack: dir.stack().to_string(),
        }),
        None => Ok(state),
    }
}

/// Runs every requested step in order; stops at the first failure.
pub async fn post_deploy(
    dqetl: &Dqetl,
    dir: &StackDir,
    config: &ConfigSpec,
    ddl: &str,
    options: &PostDeployOptions,
    reporter: &mut dyn Reporter,
) -> Result<PostDeployReport, LocalError> {
    let state = deployed_state(dir)?;
    let mut report = PostDeployReport::default();

    if options.skip_tables {
        reporter.end(&StepResult::skipped("tables", "--skip-tables"));
    } else {
        reporter.begin("tables", "creating source tables");
        let result = create_tables(&state, config, ddl)
            .await
            .inspect_err(|e| fail(reporter, "tables", e))?;
        reporter.end(&result);
    }

    if options.skip_topics {
        reporter.end(&StepResult::skipped("topics", "--skip-topics"));
    } else {
        reporter.begin("topics", "creating topics");
        let partitions = options.partitions.unwrap_or(config.kafka.partitions).max(1);
        let result = create_topics(&state, config, partitions)
            .await
            .inspect_err(|e| fail(reporter, "topics", e))?;
        reporter.end(&result);
    }

    if options.skip_cdc {
        reporter.end(&StepResult::skipped("capture", "--skip-cdc"));
    } else {
        reporter.begin("capture", "starting `dqetl capture`");
        let command = dqetl.command(dqetl.capture_args(&state, dir));
        let started = children::start_worker(dir, Worker::Capture, command)
            .inspect_err(|e| fail(reporter, "capture", e))?;
        reporter.end(&worker_result("capture", started, dir, Worker::Capture));
    }

    if options.skip_processor {
        reporter.end(&StepResult::skipped("process", "--skip-processor"));
    } else {
        reporter.begin("process", "starting `dqetl process`");
        let group = stack::consumer_group(config.kafka.consumer_group.as_deref(), dir.stack());
        let command = dqetl.command(dqetl.process_args(&state, dir, &group));
        let started = children::start_worker(dir, Worker::Process, command)
            .inspect_err(|e| fail(reporter, "process", e))?;
        reporter.end(&worker_result("process", started, dir, Worker::Process));
    }

    if options.skip_seed {
        reporter.end(&StepResult::skipped("seed", "--skip-seed"));
    } else {
        reporter.begin("seed", "writing sample rows (good and deliberately bad)");
        let seed = Traffic {
            duration: Duration::ZERO,
            ..options.traffic.clone()
        };
        let path = children::run_generator(dqetl, dir, &state, &seed, GeneratorOutput::Log)
            .inspect_err(|e| fail(reporter, "seed", e))?;
        let run = GeneratorRun::read(&path).inspect_err(|e| fail(reporter, "seed", e))?;
        reporter.end(&seed_result(&run));
        report.seed_summary = Some(path);
    }

    if options.generate {
        let traffic = &options.traffic;
        reporter.note(&format!(
            "generating change traffic for {} at {} rows/s (bad ratio {}, seed {}); Ctrl-C stops it early",
            humantime::format_duration(traffic.duration),
            traffic.rate,
            traffic.bad_ratio,
            traffic.seed
        ));
        let path = children::run_generator(dqetl, dir, &state, traffic, options.generator_output)
            .inspect_err(|e| fail(reporter, "generate", e))?;
        let run = GeneratorRun::read(&path).inspect_err(|e| fail(reporter, "generate", e))?;
        reporter.end(&StepResult::done(
            "generate",
            format!("wrote {} events (summary {})", run.events, path.display()),
        ));
        report.traffic_summary = Some(path);
    }
    Ok(report)
}

fn fail(reporter: &mut dyn Reporter, step: &str, error: &LocalError) {
    reporter.end(&StepResult::failed(step, error.to_string()));
}

fn worker_result(step: &str, started: WorkerStart, dir: &StackDir, worker: Worker) -> StepResult {
    let log = dir.worker_log(worker);
    match started {
        WorkerStart::Started { pid } => StepResult::done(
            step,
            format!(
                "started in the background (pid {pid}, log {})",
                log.display()
            ),
        ),
        WorkerStart::AlreadyRunning { pid } => {
            StepResult::unchanged(step, format!("already running (pid {pid})"))
        }
    }
}

fn seed_result(run: &GeneratorRun) -> StepResult {
    if run.rows_written() == 0 {
        return StepResult::unchanged("seed", "the tables already hold rows; nothing seeded");
    }
    let per_table: Vec<String> = run
        .tables
        .iter()
        .filter(|t| t.written.total() > 0)
        .map(|t| format!("{} {}", t.table, t.written.total()))
        .collect();
    let bad: u64 = run.tables.iter().map(|t| t.lake.quarantined_rows).sum();
    StepResult::done(
        "seed",
        format!(
            "wrote {} rows ({}), {bad} of them break an error rule",
            run.rows_written(),
            per_table.join(", ")
        ),
    )
}

/// Creates the source tables from the compiled DDL in one transaction (existing tables stay).
async fn create_tables(
    state: &LocalState,
    config: &ConfigSpec,
    ddl: &str,
) -> Result<StepResult, LocalError> {
    let url = stack::pg_url(state);
    let sql = |what: &str| {
        let url = url.clone();
        let what = what.to_string();
        move |source| LocalError::Sql { url, what, source }
    };
    let (mut client, connection) = crate::pg::connect_url(&url)
        .await
        .map_err(LocalError::connect(&url))?;
    let connection = tokio::spawn(connection);
    let wanted: Vec<String> = config.source_tables().map(|t| t.name.clone()).collect();
    let existing_before = existing_tables(&client, &config.schema_name, &wanted)
        .await
        .map_err(sql("cannot list tables"))?;
    let transaction = client
        .transaction()
        .await
        .map_err(sql("cannot begin a transaction"))?;
    // "relation exists, skipping" notices are expected on every run after the first.
    transaction
        .batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(sql("cannot set client_min_messages"))?;
    transaction
        .batch_execute(ddl)
        .await
        .map_err(sql("the compiled DDL failed (nothing was created)"))?;
    transaction
        .commit()
        .await
        .map_err(sql("cannot commit the DDL"))?;
    drop(client);
    let _ = connection.await;

    let created: Vec<&String> = wanted
        .iter()
        .filter(|t| !existing_before.contains(t))
        .collect();
    Ok(if created.is_empty() {
        StepResult::unchanged(
            "tables",
            format!(
                "all {} tables exist in schema {}",
                wanted.len(),
                config.schema_name
            ),
        )
    } else {
        StepResult::done(
            "tables",
            format!(
                "created {} ({} existed)",
                created
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                wanted.len() - created.len()
            ),
        )
    })
}

async fn existing_tables(
    client: &tokio_postgres::Client,
    schema: &str,
    names: &[String],
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 AND table_name = ANY($2)",
            &[&schema, &names],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Creates the configured topics that do not exist yet.
async fn create_topics(
    state: &LocalState,
    config: &ConfigSpec,
    partitions: i32,
) -> Result<StepResult, LocalError> {
    let bootstrap = stack::bootstrap(state);
    let existing = kafka::existing_topics(&bootstrap)?;
    let wanted: Vec<&str> = config.source_tables().map(|t| t.topic.as_str()).collect();
    let missing: Vec<(&str, i32)> = wanted
        .iter()
        .filter(|t| !existing.contains_key(**t))
        .map(|t| (*t, partitions))
        .collect();
    if missing.is_empty() {
        return Ok(StepResult::unchanged(
            "topics",
            format!("all {} topics exist", wanted.len()),
        ));
    }
    broker::create_topics(&bootstrap, &missing).await?;
    Ok(StepResult::done(
        "topics",
        format!(
            "created {} with {partitions} partition{} each ({} existed)",
            missing
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
                .join(", "),
            if partitions == 1 { "" } else { "s" },
            wanted.len() - missing.len()
        ),
    ))
}
