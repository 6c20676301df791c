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
    #[arg(
        long,
        global = true,
        default_value = "config/tables.yaml",
        env = "DQETL_CONFIG"
    )]
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
    /// Local CDC: initial snapshot + streaming changes, PostgreSQL → Kafka, in DMS JSON.
    Capture(CaptureArgs),
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
pub struct CaptureArgs {
    /// Logical replication slot [default: dqetl_<stack>].
    #[arg(long = "slot", value_name = "NAME")]
    pub slot: Option<String>,
    /// Publication over the configured tables, created or extended as needed [default: dqetl_<stack>].
    #[arg(long, value_name = "NAME")]
    pub publication: Option<String>,
    /// Kafka bootstrap servers [default: the config's kafka.bootstrap_servers].
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap: Option<String>,
    /// Source database URL, without a password (set PGPASSWORD if one is needed).
    #[arg(long, value_name = "URL", env = "DQETL_PG_URL")]
    pub pg_url: Option<String>,
    /// Where capture records that its initial snapshot completed [default: .dqetl/<stack>/capture].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}
