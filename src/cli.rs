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
    /// SQL over the Delta tables (data, `<table>_quarantine`, `dq_metrics`).
    Query(QueryArgs),
    /// Run the streaming processor: Kafka → DQ rules → quarantine → transforms → SCD2 → Delta.
    Process(crate::commands::process::ProcessArgs),
    /// Create the source tables (and a DMS replication slot) in the source database.
    Sql(crate::commands::sql::SqlArgs),
    /// Kafka topics of the configured tables.
    #[command(subcommand)]
    Topics(crate::commands::topics::TopicsCommand),
    /// Write realistic change traffic into the source database: inserts, updates, soft and hard
    /// deletes, and DQ violations; then print what the lake must hold.
    GenerateData(GenerateDataArgs),
    /// Start the stack's services (local: PostgreSQL and the broker under `.dqetl/<stack>/`).
    Deploy(DeployArgs),
    /// Create source tables and topics, start CDC and the processor, seed sample data.
    PostDeploy(PostDeployArgs),
    /// Health of every stage: services, replication and consumer lag, lake commits, DQ.
    Status,
    /// Stop and delete everything the stack created.
    Teardown(TeardownArgs),
    /// The whole pipeline on this machine: deploy, load, generate, then show the results.
    Demo(DemoArgs),
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
    /// TLS: the URL's sslmode and sslrootcert, else DQETL_PG_SSLMODE and DQETL_PG_SSLROOTCERT.
    #[arg(long, value_name = "URL", env = "DQETL_PG_URL", hide_env_values = true)]
    pub pg_url: Option<String>,
    /// Where capture records that its initial snapshot completed [default: .dqetl/<stack>/capture].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
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
    /// Without it: DQETL_PG_HOST, DQETL_PG_PORT, DQETL_PG_DATABASE, DQETL_PG_USER, DQETL_PG_PASSWORD.
    /// TLS: the URL's sslmode and sslrootcert, else DQETL_PG_SSLMODE and DQETL_PG_SSLROOTCERT.
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

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Base image of the processor image (aws).
    #[arg(long, env = "DQETL_BASE_IMAGE")]
    pub base_image: Option<String>,
    /// Deploy this CloudFormation template instead of the embedded one (aws).
    #[arg(long, env = "DQETL_TEMPLATE")]
    pub template: Option<PathBuf>,
    /// Push the image to this registry endpoint instead of the ECR host (aws).
    #[arg(long, env = "DQETL_REGISTRY_ENDPOINT", hide = true)]
    pub registry_endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct PostDeployArgs {
    /// Do not create the source tables.
    #[arg(long)]
    pub skip_tables: bool,
    /// Do not create the topics.
    #[arg(long)]
    pub skip_topics: bool,
    /// Do not start change data capture.
    #[arg(long)]
    pub skip_cdc: bool,
    /// Do not start the processor.
    #[arg(long)]
    pub skip_processor: bool,
    /// Do not seed sample data.
    #[arg(long)]
    pub skip_seed: bool,
    /// After seeding, generate change traffic in the foreground for --duration.
    #[arg(long)]
    pub generate_data: bool,
    /// How long --generate-data runs (e.g. `60s`, `5m`).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Generated row writes per second.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,
    /// Share of generated rows that break a DQ rule, between 0 and 1.
    #[arg(long, default_value_t = 0.08)]
    pub bad_ratio: f64,
    /// Seed of the generator's random choices (random by default).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Partitions of new topics [default: the config's kafka.partitions, else 3].
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: Option<i32>,
}

#[derive(Debug, Args)]
pub struct TeardownArgs {
    /// Do not ask for confirmation.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long to generate change traffic (e.g. `30s`, `2m`).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Generated row writes per second.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,
    /// Share of generated rows that break a DQ rule, between 0 and 1.
    #[arg(long, default_value_t = 0.08)]
    pub bad_ratio: f64,
    /// How long to wait for the pipeline to catch up after generating.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub catch_up_timeout: std::time::Duration,
}
