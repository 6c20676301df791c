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
    /// Benchmarks (not tests): measure this machine and print a table.
    #[command(subcommand)]
    Bench(crate::commands::bench::BenchCommand),
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
