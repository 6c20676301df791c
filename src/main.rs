use std::process::ExitCode;

use clap::Parser;

/// jemalloc with the settings in `dqetl::allocator`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: dqetl::allocator::MallocConf = dqetl::allocator::MALLOC_CONF;

fn main() -> ExitCode {
    let cli = dqetl::cli::Cli::parse();
    init_logging();
    dqetl::commands::run(cli)
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`). The Delta kernel logs an ERROR
/// when it opens an empty table directory, which is normal on first use, so it is quieted; delta-rs
/// logs each commit and snapshot load at INFO, several lines per table and batch, which would bury
/// dqetl's own one line per batch, so it speaks from WARN up.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "info,buoyant_kernel=off,delta_kernel=off,deltalake_core=warn,pg_walstream=warn",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
