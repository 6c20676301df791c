//! `dqetl sql`: create the source tables (and the DMS replication slot) in the source database.
//! Run by post-deploy as a one-off job inside the VPC on aws; works against any PostgreSQL.

use anyhow::Context;
use clap::Args;

use crate::cli::GlobalArgs;
use crate::pg::PgConfig;

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// Create the source tables, foreign keys and indexes compiled from the config (idempotent).
    #[arg(long)]
    pub ddl: bool,
    /// Also create this logical replication slot (test_decoding, as DMS uses) unless it exists.
    #[arg(long)]
    pub create_replication_slot: Option<String>,
}

pub async fn run(global: &GlobalArgs, args: SqlArgs) -> anyhow::Result<()> {
    if !args.ddl && args.create_replication_slot.is_none() {
        anyhow::bail!("nothing to do: pass --ddl and/or --create-replication-slot NAME");
    }
    let spec = super::load_config(global)?;
    // The jobs task passes the database as DQETL_PG_* parts (the password from Secrets
    // Manager) and DQETL_PG_SSLMODE=require, as RDS refuses plain connections.
    let source = PgConfig::from_env(None)?;
    let (mut client, connection) = source
        .connect()
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
