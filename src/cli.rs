//! The command line: clap definitions only. Each command's behaviour lives in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "dqetl",
    version,
    about = "Config-driven CDC streaming ETL with data quality: PostgreSQL → Kafka → DQ rules, quarantine, SCD2 → Delta Lake → SQL"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The pipeline config.
    #[arg(long, global = true, default_value = "config/tables.yaml", env = "DQETL_CONFIG")]
    pub config: PathBuf,
    /// Where the pipeline runs.
    #[arg(long, global = true, value_enum, default_value_t = Target::Local, env = "DQETL_TARGET")]
    pub target: Target,
    /// Name of the deployment; local state lives under `.dqetl/<stack-name>/`.
    #[arg(long, global = true, default_value = "dqetl", env = "DQETL_STACK_NAME")]
    pub stack_name: String,
    /// AWS region (aws target); defaults to the standard AWS configuration chain.
    #[arg(long, global = true, env = "AWS_REGION")]
    pub region: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Local,
    Aws,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the config; every problem names file, line, column and key.
    Validate,
    /// Config utilities.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write PostgreSQL DDL, DMS table mappings and the lake catalog from the config.
    Compile(CompileArgs),
    /// SQL over the Delta tables (data, `<table>_quarantine`, `dq_metrics`).
    Query(QueryArgs),
    /// Run the streaming processor: Kafka → DQ rules → quarantine → transforms → SCD2 → Delta.
    Process(crate::commands::process::ProcessArgs),
    /// Write realistic change traffic into the source database: inserts, updates, soft and hard
    /// deletes, and DQ violations; then print what the lake must hold.
    GenerateData(GenerateDataArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the JSON Schema of tables.yaml.
    Schema,
}

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// Output directory.
    #[arg(long, short, default_value = "build")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// One SQL statement, e.g. "SELECT * FROM vehicles WHERE _is_current".
    pub sql: String,
}

#[derive(Debug, Args)]
pub struct GenerateDataArgs {
    /// Events (row writes) per second.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,
    /// How long to generate (e.g. `90s`, `10m`): rate × duration events follow the seed. `0` seeds only.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Share of written rows that break a DQ rule, between 0 and 1.
    #[arg(long, default_value_t = 0.08)]
    pub bad_ratio: f64,
    /// Seed of every random choice; the same seed on empty tables writes the same traffic.
    /// Random by default (the summary prints it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Which traffic: the vehicle use case's, or values derived from any config's schema and rules.
    #[arg(long, value_enum, default_value_t = GenerateMode::Auto)]
    pub mode: GenerateMode,
    /// The source database; prefer the environment variable, which keeps a password out of the process list.
    #[arg(long, env = "DQETL_PG_URL", hide_env_values = true)]
    pub pg_url: Option<String>,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenerateMode {
    /// `vehicle` when the config's tables are the vehicle use case's, else `generic`.
    Auto,
    Vehicle,
    Generic,
}
