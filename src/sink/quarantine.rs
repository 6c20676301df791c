//! `<table>_quarantine`: rows that failed an error rule or could not be decoded, appended with
//! the batch's watermarks in one commit.

use deltalake::DeltaTable;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;

use super::error::{Result, SinkError};
use super::lake::{Lake, LakeTable};
use super::scd2::CommitOutcome;
use super::table::delta_error;
use super::watermarks::{
    TxnPlan, last_offsets, plan_transactions, recorded, rows_after_watermarks,
};
use crate::config::spec::TableSpec;
use crate::pipeline::plan::SourcePosition;
use crate::pipeline::schema::quarantine_schema;

impl Lake {
    /// Appends quarantine rows (schema `quarantine_schema(table)`) in one commit carrying `ends`
    /// as transaction actions. Rows at or below the table's recorded offset of their partition
    /// were written before and are left out, so a replay with other batch boundaries adds no
    /// duplicate. When no row is left nothing is committed: quarantine rows are a function of
    /// the events alone, so replaying those events yields no rows again.
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
        if rows.num_rows() == 0 {
            return Ok(CommitOutcome::Unchanged { rows_unchanged: 0 });
        }
        let ends = last_offsets(ends);
        self.commit_cycle(&lake_table, &schema, async |target: DeltaTable| {
            let partitions = rows_partitions(&name, rows)?;
            let seen = recorded(
                &target,
                &name,
                app_prefix,
                ends.keys().chain(partitions.iter()),
            )
            .await?;
            let txns = match plan_transactions(app_prefix, &ends, &seen) {
                TxnPlan::Replay => return Ok((None, CommitOutcome::Replayed)),
                TxnPlan::Apply(txns) => txns,
            };
            let fresh = rows_after_watermarks(&name, rows, &seen)?;
            let skipped = rows.num_rows() - fresh.num_rows();
            if fresh.num_rows() == 0 {
                return Ok((
                    None,
                    CommitOutcome::Unchanged {
                        rows_unchanged: skipped,
                    },
                ));
            }
            let location = target.table_url().to_string();
            let written = fresh.num_rows();
            let committed = target
                .write(vec![fresh])
                .with_save_mode(SaveMode::Append)
                .with_commit_properties(
                    CommitProperties::default().with_application_transactions(txns),
                )
                .await
                .map_err(|source| delta_error(&name, &location, "append", source))?;
            let version = committed.version().unwrap_or_default();
            Ok((
                Some(committed),
                CommitOutcome::Committed {
                    version,
                    rows_inserted: written,
                    rows_closed: 0,
                    rows_unchanged: skipped,
                },
            ))
        })
        .await
    }
}

/// The partitions the rows come from (a row may come from a partition `ends` does not name).
fn rows_partitions(table: &str, rows: &RecordBatch) -> Result<Vec<(String, i32)>> {
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::Int32Type;

    use crate::pipeline::schema::{PARTITION, TOPIC};
    let missing = |name: &str| SinkError::BatchSchema {
        table: table.to_string(),
        what: "quarantine",
        detail: format!("column `{name}` is missing or mistyped"),
    };
    let topics = rows
        .column_by_name(TOPIC)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| missing(TOPIC))?;
    let partitions = rows
        .column_by_name(PARTITION)
        .and_then(|c| c.as_primitive_opt::<Int32Type>())
        .ok_or_else(|| missing(PARTITION))?;
    let mut found: Vec<(String, i32)> = (0..rows.num_rows())
        .filter(|&i| topics.is_valid(i) && partitions.is_valid(i))
        .map(|i| (topics.value(i).to_string(), partitions.value(i)))
        .collect();
    found.sort();
    found.dedup();
    Ok(found)
}
