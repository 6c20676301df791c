//! The only way the traffic touches the source database. Every write goes through here, so one
//! place keeps the promises:
//! - every statement's result is checked: an insert returns its key, an update or delete
//!   affects exactly one row, or the run stops with the table, the operation and the reason;
//! - writes run in small transactions; the ledger records a write only once its transaction
//!   has committed, so the summary says exactly what the database holds;
//! - a lost connection (a server restart or crash) is not the end of the run: the writer
//!   reconnects with backoff and logs it. A transaction lost before COMMIT is written again
//!   from its journal (same keys, same values); after a COMMIT whose reply was lost, the
//!   server is asked whether that transaction committed (`pg_xact_status`), so no write is
//!   lost, doubled or misreported;
//! - unique values are never repeated and rows referenced by others are never deleted;
//! - the pace (`--rate`), the budget (`--duration`) and Ctrl-C are checked before each write.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use indicatif::ProgressBar;
use rand::Rng;
use rand::rngs::SmallRng;
use tokio::sync::watch;
use tokio_postgres::types::ToSql;
use tokio_postgres::{SimpleQueryMessage, Statement};

use crate::config::spec::{ColumnType, RuleKind, Severity};

use super::catalog;
use super::check;
use super::connection::{self, Backoff, Connection, RECONNECT_PATIENCE, is_connection_loss};
use super::error::{DbRejection, GenerateError};
use super::ledger::{Ledger, LedgerEvent, Operation, RuleRef, TableLedger};
use super::plan::Plan;
use super::rate::TokenBucket;
use super::row::{Key, Row, Value};
use super::shape::{Refusal, TableShape};
use super::values::SampleContext;

/// Writes per transaction at most; the traffic also commits at the end of every step.
const TRANSACTION_WRITES: usize = 10;
/// How long a transaction whose COMMIT reply was lost may stay "in progress" (its session not
/// yet ended on the server) before that session is terminated to settle it.
const SETTLE_GRACE: Duration = Duration::from_secs(10);

/// Why the traffic stops.
#[derive(Debug)]
pub(crate) enum Halt {
    /// The requested number of events was written.
    Budget,
    /// Ctrl-C or the caller asked to stop.
    Interrupted,
    Failed(GenerateError),
}

impl From<GenerateError> for Halt {
    fn from(e: GenerateError) -> Self {
        Halt::Failed(e)
    }
}

pub(crate) type Step<T = ()> = Result<T, Halt>;

/// The keys of one table the traffic may still update or delete, in a stable order (choices
/// index into it, so the same seed makes the same choices).
#[derive(Debug, Default)]
struct Pool {
    keys: Vec<Key>,
    position: HashMap<Key, usize>,
    images: HashMap<Key, Row>,
}

impl Pool {
    fn add(&mut self, key: Key, row: Row) {
        self.position.insert(key.clone(), self.keys.len());
        self.keys.push(key.clone());
        self.images.insert(key, row);
    }

    fn remove(&mut self, key: &Key) -> Option<Row> {
        let at = self.position.remove(key)?;
        self.keys.swap_remove(at);
        if let Some(moved) = self.keys.get(at) {
            self.position.insert(moved.clone(), at);
        }
        self.images.remove(key)
    }
}

/// A write of the open transaction.
struct Staged {
    table: usize,
    key: Key,
    event: LedgerEvent,
    /// A traffic event (else a seed write).
    traffic: bool,
}

/// A statement of the open transaction, kept so that the transaction can be written again on a
/// new connection when the old one was lost before COMMIT.
struct Journaled {
    table: usize,
    operation: &'static str,
    sql: String,
    values: Vec<Option<String>>,
    /// For inserts, the key the statement must return; else it must affect exactly one row.
    returns: Option<String>,
    /// An insert's key that the database took from a sequence; written again explicitly, it
    /// must not be handed out by that sequence later.
    sequence_key: Option<i64>,
}

/// What a statement returned.
enum Reply {
    Key(String),
    Affected(u64),
}

/// How a statement failed.
enum Failure {
    /// The connection is gone, and with it the open transaction.
    Lost(tokio_postgres::Error),
    /// The database refused the statement.
    Rejected(tokio_postgres::Error),
    /// The database refused to open a transaction.
    BeginRejected(tokio_postgres::Error),
}

impl Failure {
    fn of(error: tokio_postgres::Error) -> Failure {
        if is_connection_loss(&error) {
            Failure::Lost(error)
        } else {
            Failure::Rejected(error)
        }
    }
}

/// Why writing the journal again failed.
enum ReplayFailure {
    Lost(tokio_postgres::Error),
    BeginRejected(tokio_postgres::Error),
    /// Journal entry `entry` did not do what it did the first time.
    Diverged {
        entry: usize,
        reason: String,
    },
}

/// Why the database could not be reached again.
enum Gone {
    Stopped,
    GaveUp {
        waited: Duration,
        rejection: Box<DbRejection>,
    },
}

/// Pace, budget and interruption.
struct Gate {
    limiter: Option<TokenBucket>,
    budget: Option<u64>,
    /// Traffic writes let through, committed or not (what the budget counts).
    issued: u64,
    /// Committed traffic writes and seed writes.
    events: u64,
    seed_writes: u64,
    counting: bool,
    stop: watch::Receiver<bool>,
    progress: ProgressBar,
}

pub(crate) struct Writer {
    source: crate::pg::PgConfig,
    connection: Connection,
    plan: Arc<Plan>,
    statements: HashMap<String, Statement>,
    /// Per table: whether updates and deletes may follow (then row images are kept).
    retained: Vec<bool>,
    pools: Vec<Pool>,
    /// Values used per (table, column) for unique columns and columns under a `unique` rule.
    taken: HashMap<(usize, usize), HashSet<String>>,
    /// Rows pointing at each (parent table, key), through declared or implied foreign keys.
    references: HashMap<(usize, Key), u32>,
    /// Parent keys by the value of a referenced non-key column: (table, column, value) → key.
    referenced_values: HashMap<(usize, usize, String), Key>,
    ledger: Ledger,
    /// Writes of the open transaction, recorded in the ledger at COMMIT.
    staged: Vec<Staged>,
    /// Statements of the open transaction, in order.
    journal: Vec<Journaled>,
    /// The open transaction's id (`pg_current_xact_id`), to ask after a lost COMMIT reply.
    xid: Option<String>,
    /// Times the connection was lost during the run.
    connection_losses: u64,
    in_transaction: bool,
    transaction_writes: usize,
    gate: Gate,
    seq: u64,
}

/// How a run is paced and bounded.
pub(crate) struct Pace {
    pub rate: Option<f64>,
    pub events: Option<u64>,
    pub stop: watch::Receiver<bool>,
    pub progress: ProgressBar,
}

impl Writer {
    /// Reads what the database already holds (row counts, used unique values) and opens the ledger.
    pub(crate) async fn new(
        connection: Connection,
        source: crate::pg::PgConfig,
        plan: Arc<Plan>,
        retained: Vec<bool>,
        pace: Pace,
    ) -> Result<Writer, GenerateError> {
        let client = &connection.client;
        let mut taken = HashMap::new();
        let mut ledger_tables = Vec::with_capacity(plan.tables.len());
        for (t, table) in plan.tables.iter().enumerate() {
            for c in 0..table.columns.len() {
                let col = &table.columns[c];
                let unique_rule = table
                    .rules_on(c)
                    .any(|r| matches!(table.rules[r].kind, RuleKind::Unique));
                if (col.unique || unique_rule) && !col.generated {
                    taken.insert((t, c), catalog::used_values(client, table, c).await?);
                }
            }
            let rules = table
                .rules
                .iter()
                .map(|r| RuleRef {
                    id: r.id.clone(),
                    column: r.column.clone(),
                    severity: r.severity,
                })
                .collect();
            ledger_tables.push(TableLedger::new(
                table.name.clone(),
                rules,
                catalog::row_count(client, table).await?,
            ));
        }
        let tables = plan.tables.len();
        Ok(Writer {
            source,
            connection,
            plan,
            statements: HashMap::new(),
            retained,
            pools: (0..tables).map(|_| Pool::default()).collect(),
            taken,
            references: HashMap::new(),
            referenced_values: HashMap::new(),
            ledger: Ledger::new(ledger_tables),
            staged: Vec::new(),
            journal: Vec::new(),
            xid: None,
            connection_losses: 0,
            in_transaction: false,
            transaction_writes: 0,
            gate: Gate {
                limiter: pace.rate.map(|r| TokenBucket::new(r, Instant::now())),
                budget: pace.events,
                issued: 0,
                events: 0,
                seed_writes: 0,
                counting: false,
                stop: pace.stop,
                progress: pace.progress,
            },
            seq: 0,
        })
    }

    /// From now on writes are traffic events: paced and counted against the budget.
    pub(crate) fn start_counting(&mut self) {
        self.gate.counting = true;
    }

    pub(crate) fn events(&self) -> u64 {
        self.gate.events
    }

    pub(crate) fn seed_writes(&self) -> u64 {
        self.gate.seed_writes
    }

    pub(crate) fn connection_losses(&self) -> u64 {
        self.connection_losses
    }

    pub(crate) fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub(crate) fn into_ledger(self) -> Ledger {
        self.ledger
    }

    // ----- what the traffic may read -----

    /// Keys of `table` the traffic may still update or delete.
    pub(crate) fn live(&self, table: usize) -> &[Key] {
        &self.pools[table].keys
    }

    pub(crate) fn image(&self, table: usize, key: &Key) -> Option<&Row> {
        self.pools[table].images.get(key)
    }

    pub(crate) fn is_referenced(&self, table: usize, key: &Key) -> bool {
        self.references
            .get(&(table, key.clone()))
            .is_some_and(|&n| n > 0)
    }

    /// Whether the database would take `value` in `column`, other rows considered: the column's
    /// own constraints, unique values not yet used, declared foreign keys pointing at a row.
    pub(crate) fn accepts(
        &self,
        table: usize,
        column: usize,
        value: &Value,
    ) -> Result<(), Refusal> {
        let shape = &self.plan.tables[table];
        shape.accepts(column, value)?;
        if !self.fresh(table, column, value) {
            return Err(Refusal::Taken);
        }
        if let Some(fk) = shape
            .foreign_keys
            .iter()
            .find(|f| f.declared && f.column == column)
            && !value.is_null()
            && self
                .parent_key(fk.parent, fk.parent_column, value)
                .is_none()
        {
            let parent = &self.plan.tables[fk.parent];
            return Err(Refusal::NoParent {
                table: parent.name.clone(),
                column: parent.columns[fk.parent_column].name.clone(),
            });
        }
        Ok(())
    }

    fn fresh(&self, table: usize, column: usize, value: &Value) -> bool {
        match (self.taken.get(&(table, column)), value.sql_literal()) {
            (Some(used), Some(text)) => !used.contains(&text),
            _ => true,
        }
    }

    /// A value passing every rule on the column that the database takes; for a foreign-key
    /// column, the referenced value of a random live parent (NULL when there is none and the
    /// column allows it).
    pub(crate) fn valid_value(
        &mut self,
        table: usize,
        column: usize,
        rng: &mut SmallRng,
        now: NaiveDateTime,
    ) -> Step<Value> {
        let plan = Arc::clone(&self.plan);
        let shape = &plan.tables[table];
        if let Some(fk) = shape.foreign_keys.iter().find(|f| f.column == column) {
            let parents = &self.pools[fk.parent];
            if parents.keys.is_empty() {
                return if shape.columns[column].not_null {
                    Err(Halt::Failed(GenerateError::NoValue {
                        table: shape.name.clone(),
                        column: shape.columns[column].name.clone(),
                        reason: format!("no row of {} to reference", plan.tables[fk.parent].name),
                    }))
                } else {
                    Ok(Value::Null)
                };
            }
            let key = &parents.keys[rng.random_range(0..parents.keys.len())];
            return Ok(parents
                .images
                .get(key)
                .map(|r| r.get(fk.parent_column).clone())
                .unwrap_or(Value::Null));
        }
        let column_gen = &plan.gens[table][column];
        let mut ctx = SampleContext {
            rng,
            seq: self.seq,
            now,
        };
        let fresh = |v: &Value| self.fresh(table, column, v);
        let value = column_gen
            .valid(shape, column, &mut ctx, &fresh)
            .or_else(|| column_gen.fallback(shape, column, &mut ctx, &fresh));
        self.seq = ctx.seq + 1;
        match value {
            Some(v) => Ok(v),
            None if !shape.columns[column].not_null => Ok(Value::Null),
            None => Err(Halt::Failed(GenerateError::NoValue {
                table: shape.name.clone(),
                column: shape.columns[column].name.clone(),
                reason: "every value tried was refused by the source DDL or already used".into(),
            })),
        }
    }

    // ----- writes -----

    /// Inserts `row` (generated key columns are left to the database) and returns its key.
    pub(crate) async fn insert(&mut self, table: usize, mut row: Row) -> Step<Key> {
        self.pass_gate().await?;
        let plan = Arc::clone(&self.plan);
        let shape = &plan.tables[table];
        let mut columns = Vec::new();
        for c in 0..shape.columns.len() {
            if shape.columns[c].generated {
                row.set(c, Value::Null);
                continue;
            }
            let value = self.conformed(shape, c, row.get(c).clone())?;
            self.accepts(table, c, &value)
                .map_err(|refusal| refused(shape, c, refusal))?;
            row.set(c, value);
            columns.push(c);
        }
        let names: Vec<&str> = columns
            .iter()
            .map(|&c| shape.columns[c].sql_name.as_str())
            .collect();
        let params: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, &c)| format!("${}::text::{}", i + 1, shape.columns[c].cast))
            .collect();
        let key_col = &shape.columns[shape.key];
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({}) RETURNING {}::text",
            shape.sql_name,
            names.join(", "),
            params.join(", "),
            key_col.sql_name
        );
        let values: Vec<Option<String>> =
            columns.iter().map(|&c| row.get(c).sql_literal()).collect();
        let key_text = match self.write(shape, "insert", &sql, &values, true).await? {
            Reply::Key(key) => key,
            Reply::Affected(affected) => return Err(row_count(shape, "insert", affected)),
        };
        self.journal.push(if key_col.generated {
            // Written again, the row must get the key it got the first time (the traffic and
            // the rows referencing it know it by that key), so the key is then given explicitly.
            let mut values = values;
            values.insert(0, Some(key_text.clone()));
            Journaled {
                table,
                operation: "insert",
                sql: format!(
                    "INSERT INTO {} ({}, {}) OVERRIDING SYSTEM VALUE VALUES ($1::text::{}, {}) RETURNING {}::text",
                    shape.sql_name,
                    key_col.sql_name,
                    names.join(", "),
                    key_col.cast,
                    (0..columns.len())
                        .map(|i| format!("${}::text::{}", i + 2, shape.columns[columns[i]].cast))
                        .collect::<Vec<_>>()
                        .join(", "),
                    key_col.sql_name
                ),
                values,
                returns: Some(key_text.clone()),
                sequence_key: key_text.parse().ok(),
            }
        } else {
            Journaled {
                table,
                operation: "insert",
                sql,
                values,
                returns: Some(key_text.clone()),
                sequence_key: None,
            }
        });
        let key = match key_col.column_type {
            ColumnType::Int | ColumnType::Long => key_text
                .parse()
                .map(Key::Int)
                .unwrap_or(Key::Text(key_text)),
            _ => Key::Text(key_text),
        };
        if key_col.generated {
            row.set(shape.key, key.to_value());
        }
        self.note_values(table, &key, None, &row);
        let event = written(shape, Operation::Insert, &row);
        if self.retained[table] {
            self.pools[table].add(key.clone(), row);
        }
        self.stage(table, key.clone(), event);
        self.after_write().await?;
        Ok(key)
    }

    /// Sets `changes` on the row of `key`; it must be a live key of a retained table.
    pub(crate) async fn update(
        &mut self,
        table: usize,
        key: &Key,
        changes: Vec<(usize, Value)>,
    ) -> Step {
        self.pass_gate().await?;
        let plan = Arc::clone(&self.plan);
        let shape = &plan.tables[table];
        let Some(old) = self.pools[table].images.get(key).cloned() else {
            return Err(Halt::Failed(GenerateError::Stuck(format!(
                "update of a key of '{}' the run does not hold",
                shape.name
            ))));
        };
        let mut new = old.clone();
        let mut columns = Vec::new();
        for (c, value) in changes {
            if c == shape.key || shape.columns[c].generated {
                continue;
            }
            let value = self.conformed(shape, c, value)?;
            if value != *old.get(c) {
                self.accepts(table, c, &value)
                    .map_err(|refusal| refused(shape, c, refusal))?;
            }
            new.set(c, value);
            if !columns.contains(&c) {
                columns.push(c);
            }
        }
        if columns.is_empty() {
            return Ok(());
        }
        let sets: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                format!(
                    "{} = ${}::text::{}",
                    shape.columns[c].sql_name,
                    i + 1,
                    shape.columns[c].cast
                )
            })
            .collect();
        let key_col = &shape.columns[shape.key];
        let sql = format!(
            "UPDATE {} SET {} WHERE {} = ${}::text::{}",
            shape.sql_name,
            sets.join(", "),
            key_col.sql_name,
            columns.len() + 1,
            key_col.cast
        );
        let mut values: Vec<Option<String>> =
            columns.iter().map(|&c| new.get(c).sql_literal()).collect();
        values.push(key.to_value().sql_literal());
        self.write_one_row(table, "update", sql, values).await?;
        self.note_values(table, key, Some(&old), &new);
        let event = written(shape, Operation::Update, &new);
        self.pools[table].images.insert(key.clone(), new);
        self.stage(table, key.clone(), event);
        self.after_write().await
    }

    /// Hard-deletes the row of `key`, which no row may reference.
    pub(crate) async fn delete(&mut self, table: usize, key: &Key) -> Step {
        self.pass_gate().await?;
        let plan = Arc::clone(&self.plan);
        let shape = &plan.tables[table];
        if self.is_referenced(table, key) {
            return Err(Halt::Failed(GenerateError::Stuck(format!(
                "delete of a referenced row of '{}'",
                shape.name
            ))));
        }
        let key_col = &shape.columns[shape.key];
        let sql = format!(
            "DELETE FROM {} WHERE {} = $1::text::{}",
            shape.sql_name, key_col.sql_name, key_col.cast
        );
        let values = vec![key.to_value().sql_literal()];
        self.write_one_row(table, "delete", sql, values).await?;
        if let Some(old) = self.pools[table].remove(key) {
            self.forget_links(table, &old);
        }
        self.stage(
            table,
            key.clone(),
            LedgerEvent {
                operation: Operation::Delete,
                failed_rules: vec![],
                quarantined: false,
            },
        );
        self.after_write().await
    }

    /// Commits the open transaction and records its writes in the ledger. When the reply to
    /// COMMIT is lost with the connection, the server is asked whether the transaction
    /// committed; if it did not, it is written again and committed on the new connection.
    pub(crate) async fn commit(&mut self) -> Step {
        if !self.in_transaction {
            return Ok(());
        }
        loop {
            match self.connection.client.batch_execute("COMMIT").await {
                Ok(()) => break,
                Err(e) if is_connection_loss(&e) => {
                    self.connection_losses += 1;
                    tracing::warn!(
                        error = %DbRejection::from_error(&e), writes = self.staged.len(),
                        "lost the connection to the source database during COMMIT; asking it whether the transaction committed"
                    );
                    if self.committed_after_loss().await? {
                        tracing::info!(writes = self.staged.len(), "the transaction had committed");
                        break;
                    }
                    tracing::info!(
                        writes = self.journal.len(),
                        "the transaction had not committed; writing it again"
                    );
                    self.rewrite().await?;
                }
                Err(e) => {
                    self.abandon();
                    return Err(Halt::Failed(GenerateError::Transaction {
                        statement: "COMMIT",
                        rejection: DbRejection::from_error(&e),
                    }));
                }
            }
        }
        self.in_transaction = false;
        self.transaction_writes = 0;
        self.journal.clear();
        self.xid = None;
        for Staged {
            table,
            key,
            event,
            traffic,
        } in self.staged.drain(..)
        {
            if traffic {
                self.gate.events += 1;
            } else {
                self.gate.seed_writes += 1;
            }
            self.ledger.record(table, key, event);
        }
        Ok(())
    }

    /// Abandons the open transaction after a failure: its writes never happened.
    pub(crate) async fn roll_back(&mut self) {
        if self.in_transaction {
            // The failure being reported matters more than a failed ROLLBACK on a broken connection.
            let _ = self.connection.client.batch_execute("ROLLBACK").await;
        }
        self.abandon();
    }

    // ----- internals -----

    async fn pass_gate(&mut self) -> Step {
        let gate = &mut self.gate;
        if *gate.stop.borrow() {
            return Err(Halt::Interrupted);
        }
        if !gate.counting {
            return Ok(());
        }
        if gate.budget.is_some_and(|b| gate.issued >= b) {
            return Err(Halt::Budget);
        }
        if let Some(limiter) = gate.limiter.as_mut() {
            tokio::select! {
                () = limiter.acquire() => {}
                () = stopped(&mut gate.stop) => return Err(Halt::Interrupted),
            }
        }
        gate.issued += 1;
        gate.progress.inc(1);
        Ok(())
    }

    fn stage(&mut self, table: usize, key: Key, event: LedgerEvent) {
        let traffic = self.gate.counting;
        self.staged.push(Staged {
            table,
            key,
            event,
            traffic,
        });
    }

    /// Opens a transaction unless one is open, and notes its id.
    async fn begin(&mut self) -> Result<(), Failure> {
        if self.in_transaction {
            return Ok(());
        }
        let messages = self
            .connection
            .client
            .simple_query("BEGIN; SELECT pg_current_xact_id()::text")
            .await
            .map_err(|e| match Failure::of(e) {
                Failure::Rejected(e) => Failure::BeginRejected(e),
                other => other,
            })?;
        self.xid = messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        });
        self.in_transaction = true;
        Ok(())
    }

    async fn after_write(&mut self) -> Step {
        self.transaction_writes += 1;
        if self.transaction_writes >= TRANSACTION_WRITES {
            self.commit().await?;
        }
        Ok(())
    }

    /// The statement prepared on the current connection.
    async fn prepared(&mut self, sql: &str) -> Result<Statement, Failure> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let statement = self
            .connection
            .client
            .prepare(sql)
            .await
            .map_err(Failure::of)?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Runs one write in the open transaction (opening one if needed). A lost connection is
    /// recovered and the write tried again; a refusal ends the run.
    async fn write(
        &mut self,
        shape: &TableShape,
        operation: &'static str,
        sql: &str,
        values: &[Option<String>],
        returns_key: bool,
    ) -> Step<Reply> {
        loop {
            match self.try_write(sql, values, returns_key).await {
                Ok(reply) => return Ok(reply),
                Err(Failure::Lost(e)) => self.recover(&e).await?,
                Err(Failure::Rejected(e)) => return Err(rejected(shape, operation, &e)),
                Err(Failure::BeginRejected(e)) => return Err(begin_rejected(&e)),
            }
        }
    }

    /// An update or delete that must affect exactly one row, journaled once it did.
    async fn write_one_row(
        &mut self,
        table: usize,
        operation: &'static str,
        sql: String,
        values: Vec<Option<String>>,
    ) -> Step {
        let plan = Arc::clone(&self.plan);
        let shape = &plan.tables[table];
        match self.write(shape, operation, &sql, &values, false).await? {
            Reply::Affected(1) => {}
            Reply::Affected(affected) => return Err(row_count(shape, operation, affected)),
            Reply::Key(_) => return Err(row_count(shape, operation, 0)),
        }
        self.journal.push(Journaled {
            table,
            operation,
            sql,
            values,
            returns: None,
            sequence_key: None,
        });
        Ok(())
    }

    async fn try_write(
        &mut self,
        sql: &str,
        values: &[Option<String>],
        returns_key: bool,
    ) -> Result<Reply, Failure> {
        let statement = self.prepared(sql).await?;
        self.begin().await?;
        let params = as_params(values);
        let client = &self.connection.client;
        if returns_key {
            let row = client
                .query_one(&statement, &params)
                .await
                .map_err(Failure::of)?;
            Ok(Reply::Key(row.try_get(0).map_err(Failure::Rejected)?))
        } else {
            let affected = client
                .execute(&statement, &params)
                .await
                .map_err(Failure::of)?;
            Ok(Reply::Affected(affected))
        }
    }

    /// After the connection was lost before COMMIT: the open transaction died with it (the
    /// server rolls back the transaction of a session that ends), so reconnect and write it
    /// again.
    async fn recover(&mut self, error: &tokio_postgres::Error) -> Step {
        self.connection_losses += 1;
        tracing::warn!(
            error = %DbRejection::from_error(error), writes = self.journal.len(),
            "lost the connection to the source database; reconnecting to write the open transaction again"
        );
        self.reconnect_or_halt().await?;
        self.rewrite().await
    }

    /// Writes the journal again in a new transaction, reconnecting as often as the connection
    /// is lost meanwhile.
    async fn rewrite(&mut self) -> Step {
        loop {
            match self.replay().await {
                Ok(()) => return Ok(()),
                Err(ReplayFailure::Lost(e)) => {
                    self.connection_losses += 1;
                    tracing::warn!(
                        error = %DbRejection::from_error(&e),
                        "lost the connection to the source database again; reconnecting"
                    );
                    self.reconnect_or_halt().await?;
                }
                Err(ReplayFailure::BeginRejected(e)) => {
                    self.abandon();
                    return Err(begin_rejected(&e));
                }
                Err(ReplayFailure::Diverged { entry, reason }) => {
                    return Err(self.replay_failed(entry, reason));
                }
            }
        }
    }

    /// Reconnects for a transaction known not to have committed: a stop request abandons it
    /// (its writes never happened), running out of patience fails the run.
    async fn reconnect_or_halt(&mut self) -> Step {
        match self.reconnect().await {
            Ok(()) => Ok(()),
            Err(Gone::Stopped) => {
                self.abandon();
                Err(Halt::Interrupted)
            }
            Err(Gone::GaveUp { waited, rejection }) => {
                self.abandon();
                Err(Halt::Failed(GenerateError::ConnectionLost {
                    waited,
                    rejection,
                }))
            }
        }
    }

    /// Runs the journal in a new transaction; each statement must do what it did before.
    async fn replay(&mut self) -> Result<(), ReplayFailure> {
        self.in_transaction = false;
        self.xid = None;
        if self.journal.is_empty() {
            return Ok(());
        }
        self.begin().await.map_err(|failure| match failure {
            Failure::Lost(e) => ReplayFailure::Lost(e),
            Failure::Rejected(e) | Failure::BeginRejected(e) => ReplayFailure::BeginRejected(e),
        })?;
        let journal = std::mem::take(&mut self.journal);
        let result = self.replay_statements(&journal).await;
        self.journal = journal;
        if let Ok(()) = &result {
            tracing::info!(
                writes = self.journal.len(),
                "wrote the interrupted transaction again"
            );
        }
        result
    }

    async fn replay_statements(&mut self, journal: &[Journaled]) -> Result<(), ReplayFailure> {
        for (entry, journaled) in journal.iter().enumerate() {
            let failed = |failure: Failure| match failure {
                Failure::Lost(e) => ReplayFailure::Lost(e),
                Failure::Rejected(e) | Failure::BeginRejected(e) => ReplayFailure::Diverged {
                    entry,
                    reason: DbRejection::from_error(&e).to_string(),
                },
            };
            let statement = self.prepared(&journaled.sql).await.map_err(failed)?;
            let params = as_params(&journaled.values);
            let client = &self.connection.client;
            let same = match &journaled.returns {
                Some(key) => {
                    let row = client
                        .query_one(&statement, &params)
                        .await
                        .map_err(|e| failed(Failure::of(e)))?;
                    row.try_get::<_, String>(0).ok().as_ref() == Some(key)
                }
                None => {
                    client
                        .execute(&statement, &params)
                        .await
                        .map_err(|e| failed(Failure::of(e)))?
                        == 1
                }
            };
            if !same {
                return Err(ReplayFailure::Diverged {
                    entry,
                    reason: "it did not change the row it changed the first time (someone else wrote to the table meanwhile)".into(),
                });
            }
        }
        self.advance_sequences(journal)
            .await
            .map_err(|failure| match failure {
                Failure::Lost(e) => ReplayFailure::Lost(e),
                Failure::Rejected(e) | Failure::BeginRejected(e) => ReplayFailure::Diverged {
                    entry: 0,
                    reason: format!(
                        "cannot move the key sequence past the keys written again: {}",
                        DbRejection::from_error(&e)
                    ),
                },
            })
    }

    /// Keys given explicitly on replay were first taken from a sequence by the lost
    /// transaction; after a crash the sequence may not remember handing them out, so it is
    /// moved past them.
    async fn advance_sequences(&mut self, journal: &[Journaled]) -> Result<(), Failure> {
        let mut highest: HashMap<usize, i64> = HashMap::new();
        for entry in journal {
            if let Some(key) = entry.sequence_key {
                let max = highest.entry(entry.table).or_insert(key);
                *max = (*max).max(key);
            }
        }
        let plan = Arc::clone(&self.plan);
        for (table, key) in highest {
            let shape = &plan.tables[table];
            let values = vec![
                Some(key.to_string()),
                Some(shape.sql_name.clone()),
                Some(shape.columns[shape.key].name.clone()),
            ];
            self.connection
                .client
                .execute(
                    "SELECT setval(s::regclass, $1::text::bigint) \
                     FROM pg_get_serial_sequence($2::text, $3::text) AS s \
                     WHERE s IS NOT NULL \
                       AND coalesce(pg_sequence_last_value(s::regclass), 0) < $1::text::bigint",
                    &as_params(&values),
                )
                .await
                .map_err(Failure::of)?;
        }
        Ok(())
    }

    /// After a COMMIT whose reply was lost: reconnects and asks the server whether the
    /// transaction committed. A session still holding it open past [`SETTLE_GRACE`] is
    /// terminated, which settles it.
    async fn committed_after_loss(&mut self) -> Step<bool> {
        let Some(xid) = self.xid.clone() else {
            return Err(self.commit_unknown("its transaction id is unknown".into()));
        };
        loop {
            match self.reconnect().await {
                Ok(()) => {}
                Err(Gone::Stopped) => {
                    return Err(self.commit_unknown("stopped before the database came back".into()));
                }
                Err(Gone::GaveUp { waited, rejection }) => {
                    return Err(self
                        .commit_unknown(format!("no connection within {waited:?}: {rejection}")));
                }
            }
            let asked = Instant::now();
            loop {
                let status = self
                    .connection
                    .client
                    .query_one("SELECT pg_xact_status($1::text::xid8)", &[&xid])
                    .await;
                let status = match status {
                    Ok(row) => row.try_get::<_, Option<String>>(0),
                    Err(e) if is_connection_loss(&e) => {
                        self.connection_losses += 1;
                        break;
                    }
                    Err(e) => Err(e),
                };
                match status {
                    Ok(Some(s)) if s == "committed" => return Ok(true),
                    Ok(Some(s)) if s == "aborted" => return Ok(false),
                    Ok(Some(_in_progress)) => {
                        if asked.elapsed() >= RECONNECT_PATIENCE {
                            return Err(self.commit_unknown(format!(
                                "still in progress after {:?}",
                                asked.elapsed()
                            )));
                        }
                        if asked.elapsed() >= SETTLE_GRACE {
                            self.terminate_session_of(&xid).await;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Ok(None) => {
                        return Err(self
                            .commit_unknown("the server no longer knows the transaction".into()));
                    }
                    Err(e) => {
                        return Err(self.commit_unknown(DbRejection::from_error(&e).to_string()));
                    }
                }
            }
        }
    }

    /// Ends the old session of transaction `xid` (an open transaction of a session whose client
    /// is gone ends only when the server notices).
    async fn terminate_session_of(&mut self, xid: &str) {
        // pg_stat_activity shows the 32-bit xid: the full id's low half.
        let Ok(full) = xid.parse::<u64>() else {
            return;
        };
        let short = (full & 0xffff_ffff).to_string();
        let result = self
            .connection
            .client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE backend_xid::text = $1::text AND pid <> pg_backend_pid()",
                &[&short],
            )
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %DbRejection::from_error(&e), "cannot end the session of the unsettled transaction");
        }
    }

    /// Replaces the lost connection, trying with backoff until [`RECONNECT_PATIENCE`] runs out
    /// or a stop is requested (after a failed attempt). The open transaction, if any, is gone
    /// with the old connection.
    async fn reconnect(&mut self) -> Result<(), Gone> {
        let started = Instant::now();
        let mut backoff = Backoff::new();
        loop {
            // One attempt even when a stop was requested: a reachable database settles the
            // open transaction at once.
            match connection::connect(&self.source).await {
                Ok(connection) => {
                    self.connection = connection;
                    self.statements.clear();
                    self.in_transaction = false;
                    tracing::info!(after = ?started.elapsed(), "reconnected to the source database");
                    return Ok(());
                }
                Err(e) => {
                    let rejection = e.rejection();
                    if *self.gate.stop.borrow() {
                        return Err(Gone::Stopped);
                    }
                    if started.elapsed() >= RECONNECT_PATIENCE {
                        return Err(Gone::GaveUp {
                            waited: started.elapsed(),
                            rejection,
                        });
                    }
                    let wait = backoff.next_wait();
                    tracing::warn!(error = %rejection, retry_in = ?wait, "cannot reach the source database yet");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stopped(&mut self.gate.stop) => return Err(Gone::Stopped),
                    }
                }
            }
        }
    }

    /// Forgets the open transaction: it did not commit, or cannot be known to have.
    fn abandon(&mut self) {
        self.in_transaction = false;
        self.transaction_writes = 0;
        self.staged.clear();
        self.journal.clear();
        self.xid = None;
    }

    fn commit_unknown(&mut self, reason: String) -> Halt {
        let writes = self.staged.len();
        self.abandon();
        Halt::Failed(GenerateError::CommitUnknown { writes, reason })
    }

    fn replay_failed(&mut self, entry: usize, reason: String) -> Halt {
        let (table, operation) = self
            .journal
            .get(entry)
            .map(|j| (self.plan.tables[j.table].name.clone(), j.operation))
            .unwrap_or_default();
        self.abandon();
        Halt::Failed(GenerateError::Replay {
            table,
            operation,
            reason,
        })
    }

    fn conformed(&self, shape: &TableShape, column: usize, value: Value) -> Step<Value> {
        shape
            .conform(column, value)
            .map_err(|refusal| refused(shape, column, refusal))
    }

    /// Bookkeeping after a write of `row` (replacing `old`, for updates): used unique values,
    /// references to parents, referenced values of this table.
    fn note_values(&mut self, table: usize, key: &Key, old: Option<&Row>, row: &Row) {
        let plan = Arc::clone(&self.plan);
        let shape = &plan.tables[table];
        for c in 0..shape.columns.len() {
            if let (Some(used), Some(text)) =
                (self.taken.get_mut(&(table, c)), row.get(c).sql_literal())
            {
                used.insert(text);
            }
        }
        if let Some(old) = old {
            self.forget_links(table, old);
        }
        for fk in &shape.foreign_keys {
            if let Some(parent) = self.parent_key(fk.parent, fk.parent_column, row.get(fk.column)) {
                *self.references.entry((fk.parent, parent)).or_default() += 1;
            }
        }
        let referencing = plan.tables.iter().flat_map(|t| &t.foreign_keys);
        for fk in referencing.filter(|f| f.parent == table && f.parent_column != shape.key) {
            if let Some(text) = row.get(fk.parent_column).sql_literal() {
                self.referenced_values
                    .insert((table, fk.parent_column, text), key.clone());
            }
        }
    }

    fn forget_links(&mut self, table: usize, old: &Row) {
        let plan = Arc::clone(&self.plan);
        for fk in &plan.tables[table].foreign_keys {
            if let Some(parent) = self.parent_key(fk.parent, fk.parent_column, old.get(fk.column))
                && let Some(n) = self.references.get_mut(&(fk.parent, parent))
            {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// The key of the live parent row holding `value` in `column`.
    fn parent_key(&self, parent: usize, column: usize, value: &Value) -> Option<Key> {
        let text = value.sql_literal()?;
        let key = if column == self.plan.tables[parent].key {
            let key = Key::from_value(value)?;
            // A key of the run that was deleted is gone; keys the run never wrote are not ours.
            if self.retained[parent] && !self.pools[parent].images.contains_key(&key) {
                return None;
            }
            key
        } else {
            self.referenced_values.get(&(parent, column, text))?.clone()
        };
        Some(key)
    }
}

/// A written version as the ledger keeps it: the rules it fails, and whether any is an error.
fn written(shape: &TableShape, operation: Operation, row: &Row) -> LedgerEvent {
    let mut failed_rules = Vec::new();
    let mut quarantined = false;
    for (r, rule) in shape.rules.iter().enumerate() {
        if check::fails(rule, row.get(shape.rule_columns[r])) {
            failed_rules.push(u16::try_from(r).unwrap_or(u16::MAX));
            quarantined |= rule.severity == Severity::Error;
        }
    }
    LedgerEvent {
        operation,
        failed_rules,
        quarantined,
    }
}

fn as_params(values: &[Option<String>]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

fn rejected(shape: &TableShape, operation: &'static str, error: &tokio_postgres::Error) -> Halt {
    Halt::Failed(GenerateError::Rejected {
        table: shape.name.clone(),
        operation,
        rejection: DbRejection::from_error(error),
    })
}

fn begin_rejected(error: &tokio_postgres::Error) -> Halt {
    Halt::Failed(GenerateError::Transaction {
        statement: "BEGIN",
        rejection: DbRejection::from_error(error),
    })
}

fn row_count(shape: &TableShape, operation: &'static str, affected: u64) -> Halt {
    Halt::Failed(GenerateError::RowCount {
        table: shape.name.clone(),
        operation,
        affected,
    })
}

fn refused(shape: &TableShape, column: usize, refusal: Refusal) -> Halt {
    Halt::Failed(GenerateError::Refused {
        table: shape.name.clone(),
        column: shape.columns[column].name.clone(),
        refusal,
    })
}

/// Resolves when a stop is requested; never, once nobody can request one.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}
