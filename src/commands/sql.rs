//! `dqetl sql`: create the source tables (and the DMS replication slot) in the source database.
//! Run by post-deploy as a one-off job inside the VPC on aws; works against any PostgreSQL.

use anyhow::Context;
use clap::Args;

use crate::cli::GlobalArgs;

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// Create the source tables, foreign keys and indexes compiled from the config (idempotent).
    #[arg(long)]
    pub ddl: bool,
    /// Also create this logical replication slot (test_decoding, as DMS uses) unless it exists.
    #[arg(long)]
    pub create_replication_slot: Option<String>,
}

/// The source database from the environment: `DQETL_PG_URL`, or `DQETL_PG_HOST`, `DQETL_PG_PORT`,
/// `DQETL_PG_DATABASE`, `DQETL_PG_USER` and `DQETL_PG_PASSWORD` (injected by ECS from Secrets
/// Manager), so a password never appears in argv.
pub fn pg_config_from_env() -> anyhow::Result<tokio_postgres::Config> {
    if let Ok(url) = std::env::var("DQETL_PG_URL") {
        return url
            .parse()
            .context("DQETL_PG_URL is not a valid PostgreSQL connection string");
    }
    let host =
        std::env::var("DQETL_PG_HOST").context("neither DQETL_PG_URL nor DQETL_PG_HOST is set")?;
    let mut config = tokio_postgres::Config::new();
    config.host(&host);
    if let Ok(port) = std::env::var("DQETL_PG_PORT") {
        config.port(
            port.parse()
                .with_context(|| format!("DQETL_PG_PORT is not a port: {port:?}"))?,
        );
    }
    config.dbname(
        std::env::var("DQETL_PG_DATABASE")
            .as_deref()
            .unwrap_or("postgres"),
    );
    config.user(
        std::env::var("DQETL_PG_USER")
            .as_deref()
            .unwrap_or("postgres"),
    );
    if let Ok(password) = std::env::var("DQETL_PG_PASSWORD") {
        config.password(password);
    }
    Ok(config)
}

pub async fn run(global: &GlobalArgs, args: SqlArgs) -> anyhow::Result<()> {
    if !args.ddl && args.create_replication_slot.is_none() {
        anyhow::bail!("nothing to do: pass --ddl and/or --create-replication-slot NAME");
    }
    let spec = super::load_config(global)?;
    let config = pg_config_from_env()?;
    let (mut client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to the source database")?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "source database connection ended");
        }
    });
    if args.ddl {
        let ddl = crate::config::compile::ddl(&spec);
        let tx = client.transaction().await?;
        tx.batch_execute(&ddl)
            .await
            .context("creating the source tables")?;
        tx.commit().await?;
        println!(
            "source tables: {} created or already there",
            spec.source_tables().count()
        );
    }
    if let Some(slot) = &args.create_replication_slot {
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                &[slot],
            )
            .await
            .context("reading replication slots")?
            .is_some();
        if exists {
            println!("replication slot {slot}: already there");
        } else {
            client
                .execute(
                    "SELECT pg_create_logical_replication_slot($1, 'test_decoding')",
                    &[slot],
                )
                .await
                .with_context(|| format!("creating replication slot {slot}"))?;
            println!("replication slot {slot}: created");
        }
    }
    Ok(())
}
