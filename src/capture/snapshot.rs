//! The initial snapshot: every row of every configured table as a `load` record, read through
//! the snapshot the replication slot exported when it was created. The slot streams exactly the
//! changes committed after that snapshot, so the two together have no gap and no overlap.

use chrono::{DateTime, Utc};
use futures::{StreamExt, pin_mut};
use pg_walstream::CancellationToken;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, IsolationLevel};

use super::emit::Emitter;
use super::error::Result;
use super::source::{SourceTable, query_err, quote_ident};
use super::values;
use crate::pipeline::plan::Operation;

/// How the copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyOutcome {
    /// Every row was handed to the producer (the caller still waits for the broker).
    Copied { rows: u64 },
    /// Shutdown was requested part-way; the snapshot stays incomplete and is redone.
    Interrupted,
}

/// Copies the tables as of `snapshot_name`. `load_ts` stamps every record: a time taken just
/// before the slot was created, so it is never later than a change the slot streams afterwards.
pub(crate) async fn copy_tables(
    client: &mut Client,
    snapshot_name: &str,
    tables: &[SourceTable],
    load_ts: DateTime<Utc>,
    emitter: &mut Emitter<'_>,
    shutdown: &CancellationToken,
) -> Result<CopyOutcome> {
    let txn = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(query_err("starting the snapshot transaction"))?;
    txn.batch_execute(&format!(
        "SET TRANSACTION SNAPSHOT '{}'",
        snapshot_name.replace('\'', "''")
    ))
    .await
    .map_err(query_err("importing the exported snapshot"))?;

    let mut total = 0u64;
    for table in tables {
        let select = table
            .columns
            .iter()
            .map(|c| format!("{}::text", quote_ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("SELECT {select} FROM {}", table.qualified());
        let no_params: [&(dyn ToSql + Sync); 0] = [];
        let rows = txn
            .query_raw(sql.as_str(), no_params)
            .await
            .map_err(query_err(format!(
                "reading {} for the snapshot",
                table.qualified()
            )))?;
        pin_mut!(rows);
        let key_index = table.columns.iter().position(|c| c.name == table.key);
        let mut count = 0u64;
        while let Some(row) = rows.next().await {
            if shutdown.is_cancelled() {
                tracing::info!(table = %table.spec.name, "snapshot interrupted by shutdown; it will be taken again");
                return Ok(CopyOutcome::Interrupted);
            }
            let row = row.map_err(query_err(format!(
                "reading {} for the snapshot",
                table.qualified()
            )))?;
            let mut data = serde_json::Map::with_capacity(table.columns.len());
            for (i, column) in table.columns.iter().enumerate() {
                let text: Option<&str> = row.get(i);
                data.insert(column.name.clone(), values::to_json(column.type_oid, text));
            }
            let key: Option<String> = key_index.and_then(|i| row.get::<_, Option<String>>(i));
            emitter
                .emit(
                    table,
                    Operation::Load,
                    data,
                    key.as_deref(),
                    load_ts,
                    None,
                    None,
                )
                .await?;
            count += 1;
        }
        tracing::info!(table = %table.spec.name, rows = count, topic = %table.spec.topic, "snapshot of table sent");
        total += count;
    }
    txn.commit()
        .await
        .map_err(query_err("ending the snapshot transaction"))?;
    Ok(CopyOutcome::Copied { rows: total })
}
