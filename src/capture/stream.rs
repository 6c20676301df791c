//! Streaming changes: pgoutput events from the slot → `insert`/`update`/`delete` records, and
//! standby status updates that confirm only what the broker acknowledged.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pg_walstream::{
    CancellationToken, ChangeEvent, ColumnValue, EventType, LogicalReplicationStream, RowData,
};
use serde_json::{Map, Value};
use tokio_postgres::Client;

use super::delivered::Position;
use super::emit::{Emitted, Emitter};
use super::error::{CaptureError, Result};
use super::source::{SourceTable, query_err, quote_ident};
use super::values;
use crate::pipeline::plan::Operation;

/// A table as the stream describes it (its Relation message): column names and type OIDs in
/// the order pgoutput sends tuples.
#[derive(Debug)]
struct Relation {
    schema: Arc<str>,
    table: Arc<str>,
    columns: Vec<(Arc<str>, u32)>,
}

#[derive(Debug, Clone, Copy)]
struct Txn {
    xid: u32,
    commit_ts: DateTime<Utc>,
    commit_lsn: u64,
}

/// The change being handled: its LSN, and how many records it already produced (a key change
/// produces two).
#[derive(Debug, Clone, Copy, Default)]
struct Change {
    lsn: u64,
    records: u32,
}

/// What a streaming session did, for the final report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StreamStats {
    pub changes: u64,
    /// Changes resent by PostgreSQL that the topics already held (not sent again).
    pub already_delivered: u64,
    /// Changes of published tables that are not in the config.
    pub skipped: u64,
}

pub(crate) struct ChangeStream<'a> {
    tables: &'a [SourceTable],
    /// A normal connection, to read a value the stream did not carry (see `fill_unchanged`).
    client: &'a Client,
    emitter: Emitter<'a>,
    relations: HashMap<u32, Arc<Relation>>,
    txn: Option<Txn>,
    change: Change,
    stats: StreamStats,
    logged_changes: u64,
    /// The last position confirmed to PostgreSQL, and when.
    last_confirmed: u64,
    last_status_at: Option<std::time::Instant>,
}

/// An unchanged position is still reported this often, so the server sees a live client.
const IDLE_STATUS_INTERVAL: Duration = Duration::from_secs(10);

impl<'a> ChangeStream<'a> {
    pub(crate) fn new(tables: &'a [SourceTable], client: &'a Client, emitter: Emitter<'a>) -> Self {
        ChangeStream {
            tables,
            client,
            emitter,
            relations: HashMap::new(),
            txn: None,
            change: Change::default(),
            stats: StreamStats::default(),
            logged_changes: 0,
            last_confirmed: 0,
            last_status_at: None,
        }
    }

    /// Streams until `shutdown`, then waits (up to `drain`) for the broker to acknowledge what
    /// was sent and confirms it. Status updates go out every `status_interval`, idle or not.
    pub(crate) async fn run(
        mut self,
        stream: &mut LogicalReplicationStream,
        status_interval: Duration,
        drain: Duration,
        shutdown: &CancellationToken,
    ) -> Result<StreamStats> {
        // The stream is stopped by dropping its `next_event` future, never by cancelling this
        // token: cancelling ends the connection's read loop and could drop frames it already
        // buffered, while dropping the future between frames is safe (reads are cancel-safe
        // and a decoded frame is returned without another await).
        let never = CancellationToken::new();
        let mut status = tokio::time::interval(status_interval);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                err = self.emitter.tracker.failure() => return Err(err),
                _ = status.tick() => self.send_status(stream).await?,
                event = stream.next_event(&never) => {
                    let event = event.map_err(|source| CaptureError::Replication { doing: "reading changes", source })?;
                    self.handle(event).await?;
                }
            }
        }
        tracing::info!("capture stopping: waiting for the broker to acknowledge sent changes");
        match tokio::time::timeout(drain, self.emitter.tracker.barrier()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "some changes were not acknowledged; they will be sent again on restart")
            }
            Err(_) => {
                tracing::warn!(waited = ?drain, "the broker did not acknowledge every change in time; the rest will be sent again on restart")
            }
        }
        self.send_status(stream).await?;
        Ok(self.stats)
    }

    /// Confirms to PostgreSQL what the broker acknowledged. When nothing is in flight and no
    /// transaction is open, the position the server last reported (a keepalive's WAL end) is
    /// confirmed too: everything before it was delivered, and it lets the slot release WAL
    /// written by other tables and databases while ours are idle.
    async fn send_status(&mut self, stream: &mut LogicalReplicationStream) -> Result<()> {
        let tracker = &self.emitter.tracker;
        let mut confirm = tracker.acked_lsn();
        if self.txn.is_none() && tracker.drained() {
            confirm = confirm.max(stream.current_lsn());
        }
        let idle_due = self
            .last_status_at
            .is_none_or(|at| at.elapsed() >= IDLE_STATUS_INTERVAL);
        if confirm > self.last_confirmed || idle_due {
            if confirm > 0 {
                stream.shared_lsn_feedback.update_flushed_lsn(confirm);
                stream.shared_lsn_feedback.update_applied_lsn(confirm);
            }
            stream
                .send_feedback()
                .await
                .map_err(|source| CaptureError::Replication {
                    doing: "sending a status update",
                    source,
                })?;
            self.last_confirmed = self.last_confirmed.max(confirm);
            self.last_status_at = Some(std::time::Instant::now());
        }
        if self.stats.changes > self.logged_changes {
            tracing::info!(
                changes = self.stats.changes,
                already_delivered = self.stats.already_delivered,
                confirmed_lsn = %pg_walstream::format_lsn(self.last_confirmed),
                "changes captured"
            );
            self.logged_changes = self.stats.changes;
        }
        Ok(())
    }

    async fn handle(&mut self, event: ChangeEvent) -> Result<()> {
        self.change = Change {
            lsn: event.lsn.value(),
            records: 0,
        };
        match event.event_type {
            EventType::Begin {
                transaction_id,
                commit_timestamp,
                final_lsn,
            } => {
                self.txn = Some(Txn {
                    xid: transaction_id,
                    commit_ts: commit_timestamp,
                    commit_lsn: final_lsn.value(),
                });
            }
            EventType::Commit { end_lsn, .. } => {
                self.txn = None;
                self.emitter.tracker.commit(end_lsn.value()).await?;
            }
            EventType::Relation {
                relation_id,
                namespace,
                relation_name,
                columns,
                ..
            } => {
                let columns = columns.into_iter().map(|c| (c.name, c.type_id)).collect();
                self.relations.insert(
                    relation_id,
                    Arc::new(Relation {
                        schema: namespace,
                        table: relation_name,
                        columns,
                    }),
                );
            }
            EventType::Insert {
                relation_oid, data, ..
            } => {
                let Some((table, relation)) = self.resolve(relation_oid) else {
                    return Ok(());
                };
                let (row, _) = build_row(&relation.columns, &data, None);
                let key = key_text(&data, &table.key);
                self.emit(table, Operation::Insert, row, key.as_deref())
                    .await?;
            }
            EventType::Update {
                relation_oid,
                old_data,
                new_data,
                ..
            } => {
                let Some((table, relation)) = self.resolve(relation_oid) else {
                    return Ok(());
                };
                let key = key_text(&new_data, &table.key);
                if let Some(old) = &old_data {
                    // The key itself changed: the old key's row is gone, as if deleted.
                    let old_key = key_text(old, &table.key);
                    if old_key.is_some() && old_key != key {
                        let (row, _) = build_row(&relation.columns, old, None);
                        self.emit(table, Operation::Delete, row, old_key.as_deref())
                            .await?;
                    }
                }
                let (mut row, unchanged) =
                    build_row(&relation.columns, &new_data, old_data.as_ref());
                if !unchanged.is_empty() {
                    self.fill_unchanged(table, &relation, &mut row, &unchanged, key.as_deref())
                        .await?;
                }
                self.emit(table, Operation::Update, row, key.as_deref())
                    .await?;
            }
            EventType::Delete {
                relation_oid,
                old_data,
                ..
            } => {
                let Some((table, relation)) = self.resolve(relation_oid) else {
                    return Ok(());
                };
                // With the default replica identity only the key is sent; the rest stays null.
                let (row, _) = build_row(&relation.columns, &old_data, None);
                let key = key_text(&old_data, &table.key);
                self.emit(table, Operation::Delete, row, key.as_deref())
                    .await?;
            }
            EventType::Truncate { tables, .. } => {
                tracing::warn!(
                    tables = ?tables,
                    "TRUNCATE is not propagated (DMS does not either); the lake keeps the rows until a reload"
                );
            }
            EventType::Type { .. } | EventType::Origin { .. } | EventType::Message { .. } => {}
            other => {
                return Err(CaptureError::Protocol {
                    what: format!(
                        "{other:?} (streamed and two-phase transactions are not enabled)"
                    )
                    .chars()
                    .take(200)
                    .collect(),
                });
            }
        }
        Ok(())
    }

    fn resolve(&mut self, relation_oid: u32) -> Option<(&'a SourceTable, Arc<Relation>)> {
        let Some(relation) = self.relations.get(&relation_oid).cloned() else {
            tracing::warn!(
                relation_oid,
                "change for a relation the stream did not describe; skipped"
            );
            self.stats.skipped += 1;
            return None;
        };
        let tables = self.tables;
        let found = tables
            .iter()
            .find(|t| *t.schema == *relation.schema && *t.spec.name == *relation.table);
        match found {
            Some(table) => Some((table, relation)),
            None => {
                tracing::debug!(schema = %relation.schema, table = %relation.table, "change of a published table outside the config; skipped");
                self.stats.skipped += 1;
                None
            }
        }
    }

    async fn emit(
        &mut self,
        table: &SourceTable,
        op: Operation,
        row: Map<String, Value>,
        key: Option<&str>,
    ) -> Result<()> {
        let txn = self.txn.ok_or_else(|| CaptureError::Protocol {
            what: format!(
                "a {} of {} outside a transaction",
                op.as_dms(),
                table.spec.name
            ),
        })?;
        let position = Position {
            commit_lsn: txn.commit_lsn,
            lsn: self.change.lsn,
            index: self.change.records,
        };
        self.change.records += 1;
        let emitted = self
            .emitter
            .emit(
                table,
                op,
                row,
                key,
                txn.commit_ts,
                Some(u64::from(txn.xid)),
                Some(position),
            )
            .await?;
        match emitted {
            Emitted::Sent => self.stats.changes += 1,
            Emitted::AlreadyDelivered => self.stats.already_delivered += 1,
        }
        Ok(())
    }

    /// An out-of-line value the UPDATE did not touch arrives as "unchanged" with no data, and
    /// the old tuple only carries it with REPLICA IDENTITY FULL (set by setup where needed).
    /// For tables whose identity was chosen otherwise, the value is read from the table by key:
    /// it is unchanged by this update, so the current value is right unless a later change
    /// touched it (whose own record follows). Only when the row is gone by now is it unknown.
    async fn fill_unchanged(
        &mut self,
        table: &SourceTable,
        relation: &Relation,
        row: &mut Map<String, Value>,
        unchanged: &[usize],
        key: Option<&str>,
    ) -> Result<()> {
        let columns: Vec<&(Arc<str>, u32)> = unchanged
            .iter()
            .filter_map(|&i| relation.columns.get(i))
            .collect();
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_ref()).collect();
        tracing::debug!(table = %table.spec.name, columns = ?names, "reading unchanged large values by key");
        let current = match key {
            Some(key) => {
                let select = names
                    .iter()
                    .map(|n| format!("{}::text", quote_ident(n)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "SELECT {select} FROM {} WHERE {} = CAST($1::text AS {})",
                    table.qualified(),
                    quote_ident(&table.key),
                    table.key_type
                );
                self.client
                    .query_opt(sql.as_str(), &[&key])
                    .await
                    .map_err(query_err(format!(
                        "reading unchanged large values of {}",
                        table.qualified()
                    )))?
            }
            None => None,
        };
        match current {
            Some(found) => {
                for (i, (name, type_oid)) in columns.iter().enumerate() {
                    let text: Option<&str> = found.get(i);
                    row.insert(name.to_string(), values::to_json(*type_oid, text));
                }
            }
            None => tracing::warn!(
                table = %table.spec.name, columns = ?names,
                "an update left large values unchanged, the stream did not carry them and the row no longer exists; they are sent as null (set REPLICA IDENTITY FULL on the table to avoid this)"
            ),
        }
        Ok(())
    }
}

/// The text of a column value as PostgreSQL printed it; `None` for NULL.
fn value_text(value: &ColumnValue) -> Option<Cow<'_, str>> {
    match value {
        ColumnValue::Null => None,
        ColumnValue::Text(bytes) | ColumnValue::Binary(bytes) => {
            Some(String::from_utf8_lossy(bytes))
        }
    }
}

/// The primary key's text form, the message key.
fn key_text(row: &RowData, key: &str) -> Option<String> {
    row.get(key).and_then(value_text).map(Cow::into_owned)
}

/// A full row image in relation column order. A column absent from `primary` (pgoutput's
/// "unchanged TOAST" or, for deletes, a non-key column) is taken from `fallback` (the old
/// tuple) when present there; otherwise it is null and its index is returned as unresolved.
fn build_row(
    columns: &[(Arc<str>, u32)],
    primary: &RowData,
    fallback: Option<&RowData>,
) -> (Map<String, Value>, Vec<usize>) {
    let mut row = Map::with_capacity(columns.len());
    let mut unresolved = Vec::new();
    for (i, (name, type_oid)) in columns.iter().enumerate() {
        let value = primary
            .get(name)
            .or_else(|| fallback.and_then(|old| old.get(name)));
        let json = match value {
            Some(value) => values::to_json(*type_oid, value_text(value).as_deref()),
            None => {
                unresolved.push(i);
                Value::Null
            }
        };
        row.insert(name.to_string(), json);
    }
    (row, unresolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::values::oid;
    use serde_json::json;

    fn columns() -> Vec<(Arc<str>, u32)> {
        vec![
            ("id".into(), oid::INT4),
            ("active".into(), oid::BOOL),
            ("body".into(), 25),
        ]
    }

    #[test]
    fn a_full_tuple_becomes_a_row_in_column_order() {
        let new = RowData::from_pairs(vec![
            ("body", ColumnValue::text("hello")),
            ("id", ColumnValue::text("7")),
            ("active", ColumnValue::text("t")),
        ]);
        let (row, unresolved) = build_row(&columns(), &new, None);
        let keys: Vec<&str> = row.keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "active", "body"]);
        assert_eq!(
            Value::Object(row),
            json!({"id": 7, "active": "true", "body": "hello"})
        );
        assert!(unresolved.is_empty());
    }

    #[test]
    fn an_unchanged_toast_value_is_taken_from_the_old_tuple() {
        // pgoutput leaves the unchanged column out of the new tuple.
        let new = RowData::from_pairs(vec![
            ("id", ColumnValue::text("7")),
            ("active", ColumnValue::text("f")),
        ]);
        let old = RowData::from_pairs(vec![
            ("id", ColumnValue::text("7")),
            ("active", ColumnValue::text("t")),
            ("body", ColumnValue::text("the big text")),
        ]);
        let (row, unresolved) = build_row(&columns(), &new, Some(&old));
        assert_eq!(
            Value::Object(row),
            json!({"id": 7, "active": "false", "body": "the big text"})
        );
        assert!(unresolved.is_empty());
    }

    #[test]
    fn a_value_in_neither_tuple_is_reported_unresolved() {
        let new = RowData::from_pairs(vec![
            ("id", ColumnValue::text("7")),
            ("active", ColumnValue::text("f")),
        ]);
        let old_key_only = RowData::from_pairs(vec![("id", ColumnValue::text("7"))]);
        let (row, unresolved) = build_row(&columns(), &new, Some(&old_key_only));
        assert_eq!(unresolved, vec![2]);
        assert_eq!(row["body"], Value::Null);
    }

    #[test]
    fn sql_null_is_not_confused_with_an_absent_value() {
        let new = RowData::from_pairs(vec![
            ("id", ColumnValue::text("7")),
            ("active", ColumnValue::Null),
            ("body", ColumnValue::Null),
        ]);
        let old = RowData::from_pairs(vec![("body", ColumnValue::text("stale"))]);
        let (row, unresolved) = build_row(&columns(), &new, Some(&old));
        assert_eq!(row["body"], Value::Null);
        assert_eq!(row["active"], Value::Null);
        assert!(unresolved.is_empty());
    }

    #[test]
    fn a_key_only_delete_keeps_the_key_and_nulls_the_rest() {
        let old = RowData::from_pairs(vec![("id", ColumnValue::text("42"))]);
        let (row, _) = build_row(&columns(), &old, None);
        assert_eq!(
            Value::Object(row),
            json!({"id": 42, "active": null, "body": null})
        );
        assert_eq!(key_text(&old, "id").as_deref(), Some("42"));
    }
}
