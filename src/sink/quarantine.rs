//! `<table>_quarantine`: rows that failed an error rule or could not be decoded, appended with
//! the batch's watermarks in one commit.

use std::collections::BTreeMap;

use deltalake::DeltaTable;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;

use super::error::Result;
use super::lake::{Lake, LakeTable};
use super::scd2::CommitOutcome;
use super::table::{delta_error, lake_commit_properties};
use super::watermarks::{
    TxnPlan, last_offsets, partitions, plan_transactions, recorded, row_partitions,
    rows_after_watermarks,
};
use crate::config::spec::TableSpec;
use crate::pipeline::plan::SourcePosition;
use crate::pipeline::schema::quarantine_schema;

impl Lake {
    /// Appends quarantine rows (schema `quarantine_schema(table)`) in one commit carrying `ends`
    /// as transaction actions. Rows at or below the table's recorded offset of their partition
    /// were written before and are left out, so a replay with other batch boundaries adds no
    /// duplicate. When no row is left nothing is committed (quarantine rows are a function of
    /// the events alone, so replaying those events yields no rows again) and a progress note
    /// records the offsets; call this for every batch, with no rows when there are none.
    pub async fn append_quarantine(
        &self,
        table: &TableSpec,
        rows: &RecordBatch,
        ends: &[SourcePosition],
        app_prefix: &str,
    ) -> Result<CommitOutcome> {
        let schema = quarantine_schema(table);
        let lake_table = LakeTable::Quarantine(table.name.clone());
        let name = lake_table.name();
        super::table::check_batch_schema(&name, "quarantine", &schema, rows)?;
        let ends = last_offsets(ends);
        let outcome = if rows.num_rows() == 0 {
            CommitOutcome::Unchanged { rows_unchanged: 0 }
        } else {
            let row_partitions = row_partitions(&name, rows)?;
            let mut lock = self.lock(lake_table.clone()).await;
            loop {
                let target = lock.latest_or_create(&schema).await?;
                match append_new_rows(target, &name, rows, &row_partitions, &ends, app_prefix).await
                {
                    Ok((committed, outcome)) => break lock.keep(committed, outcome),
                    Err(err) => lock.retry_or_fail(err).await?,
                }
            }
        };
        if let CommitOutcome::Unchanged { .. } = outcome {
            self.note_progress(&lake_table, app_prefix, &ends).await?;
        }
        Ok(outcome)
    }
}

async fn append_new_rows(
    target: DeltaTable,
    name: &str,
    rows: &RecordBatch,
    partitions_of_rows: &[(String, i32)],
    ends: &BTreeMap<(String, i32), i64>,
    app_prefix: &str,
) -> Result<(Option<DeltaTable>, CommitOutcome)> {
    let mut watched = partitions(ends);
    watched.extend_from_slice(partitions_of_rows);
    let seen = recorded(&target, name, app_prefix, &watched).await?;
    let txns = match plan_transactions(app_prefix, ends, &seen) {
        TxnPlan::Replay => return Ok((None, CommitOutcome::Replayed)),
        TxnPlan::Apply(txns) => txns,
    };
    let fresh = rows_after_watermarks(name, rows, &seen)?;
    let skipped = rows.num_rows() - fresh.num_rows();
    if fresh.num_rows() == 0 {
        return Ok((
            None,
            CommitOutcome::Unchanged {
                rows_unchanged: skipped,
            },
        ));
    }
    let written = fresh.num_rows();
    let committed = append(target, name, fresh, txns).await?;
    let version = committed.version().unwrap_or_default();
    let outcome = CommitOutcome::Committed {
        version,
        rows_inserted: written,
        rows_closed: 0,
        rows_unchanged: skipped,
    };
    Ok((Some(committed), outcome))
}

/// Appends rows in one commit that also carries the transaction actions.
pub(crate) async fn append(
    target: DeltaTable,
    name: &str,
    rows: RecordBatch,
    txns: Vec<Transaction>,
) -> Result<DeltaTable> {
    let location = target.table_url().to_string();
    target
        .write(vec![rows])
        .with_save_mode(SaveMode::Append)
        .with_commit_properties(lake_commit_properties(txns))
        .await
        .map_err(|source| delta_error(name, &location, "append", source))
}
