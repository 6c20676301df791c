//! The lake: every Delta table of one deployment, opened (or created) on first use and kept
//! open, one writer at a time per table within this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::transaction::TransactionError;
use deltalake::table::config::TablePropertiesExt as _;
use deltalake::{DeltaTable, DeltaTableError};

use super::error::{Result, SinkError};
use super::table::{delta_error, open_existing, open_or_create};
use crate::config::layout::LakeLayout;
use crate::pipeline::schema::{METRICS_TABLE, quarantine_table_name};

/// One table of the lake, by role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LakeTable {
    /// The SCD2 data table of a source table.
    Data(String),
    /// `<table>_quarantine` of a source table.
    Quarantine(String),
    /// `dq_metrics`, shared by every source table.
    Metrics,
}

impl LakeTable {
    /// The name the table is queried by.
    pub fn name(&self) -> String {
        match self {
            LakeTable::Data(t) => t.clone(),
            LakeTable::Quarantine(t) => quarantine_table_name(t),
            LakeTable::Metrics => METRICS_TABLE.to_string(),
        }
    }

    pub fn location(&self, layout: &LakeLayout) -> String {
        match self {
            LakeTable::Data(t) => layout.data_table(t),
            LakeTable::Quarantine(t) => layout.quarantine_table(t),
            LakeTable::Metrics => layout.metrics_table(),
        }
    }
}

/// The open state of one table; the async lock serialises this process's commits to it.
type Slot = Arc<tokio::sync::Mutex<Option<DeltaTable>>>;

/// Commit attempts per batch when other writers keep winning (delta-rs itself already retries
/// commits that do not conflict; these are for real conflicts, which need a fresh read).
const CONFLICT_ATTEMPTS: u32 = 8;

/// The Delta tables of one deployment.
///
/// Guarantee: every commit method applies its batch in one Delta commit that also records the
/// batch's Kafka end offsets as transaction actions, so the data and the consumer position
/// become durable together; a batch whose offsets are already recorded is not applied again.
pub struct Lake {
    layout: LakeLayout,
    storage_options: HashMap<String, String>,
    slots: Mutex<HashMap<String, Slot>>,
    /// Progress notes this process wrote or read, by state name (see `watermarks.rs`).
    pub(crate) notes: Mutex<HashMap<String, i64>>,
    /// The object store of the state directory, built on first use (see `state.rs`).
    pub(crate) state_store: OnceLock<Arc<dyn deltalake::logstore::object_store::ObjectStore>>,
    /// See [`Lake::with_splice_min_rows`].
    pub(crate) splice_min_rows: usize,
    /// Checkpoints being written in the background (see [`TableLock::keep`]).
    checkpoints: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Data files of at least one full row group are spliced when a commit closes versions in them.
const SPLICE_MIN_ROWS: usize = 32 * 1024;

impl Lake {
    /// `storage_options` are passed to the object store (`AWS_REGION`, `AWS_ENDPOINT_URL`, ...);
    /// empty for local tables.
    pub fn new(layout: LakeLayout, storage_options: HashMap<String, String>) -> Lake {
        Lake {
            layout,
            storage_options,
            slots: Mutex::new(HashMap::new()),
            notes: Mutex::new(HashMap::new()),
            state_store: OnceLock::new(),
            splice_min_rows: SPLICE_MIN_ROWS,
            checkpoints: Mutex::new(Vec::new()),
        }
    }

    /// When a commit closes versions held in a data file of at least `rows` rows (32,768 by
    /// default), the file is spliced: its column chunks are copied as they are, and only
    /// `_effective_to` and `_is_current` are encoded again. Smaller files are decoded and
    /// written again together with the batch's new versions, which compacts them.
    pub fn with_splice_min_rows(mut self, rows: usize) -> Lake {
        self.splice_min_rows = rows;
        self
    }

    pub fn layout(&self) -> &LakeLayout {
        &self.layout
    }

    pub(crate) fn storage_options(&self) -> &HashMap<String, String> {
        &self.storage_options
    }

    fn slot(&self, location: &str) -> Slot {
        // A poisoned lock only means another thread panicked while inserting; the map is intact.
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(location.to_string()).or_default().clone()
    }

    /// The latest state of a table, or `None` when it does not exist yet (nothing is created).
    pub(crate) async fn latest_existing(&self, table: &LakeTable) -> Result<Option<DeltaTable>> {
        let location = table.location(&self.layout);
        let slot = self.slot(&location);
        let mut cached = slot.lock().await;
        if let Some(t) = cached.as_mut() {
            t.update_incremental(None)
                .await
                .map_err(|source| delta_error(&table.name(), &location, "refresh", source))?;
            return Ok(Some(t.clone()));
        }
        let opened = open_existing(&table.name(), &location, &self.storage_options).await?;
        cached.clone_from(&opened);
        Ok(opened)
    }

    /// The current version of a table; `None` when it does not exist yet.
    pub async fn table_version(&self, table: &LakeTable) -> Result<Option<u64>> {
        Ok(self.latest_existing(table).await?.and_then(|t| t.version()))
    }

    /// Writes a checkpoint of a table this process just committed to, in the background, when
    /// the commit's version is due for one: every `delta.checkpointInterval` (100) versions, at
    /// the versions delta-rs's own post-commit hook would choose (99, 199, ...). A failed
    /// checkpoint only makes readers replay more of the log, until the next one.
    fn checkpoint_if_due(&self, table: &LakeTable, committed: &DeltaTable) {
        let (Some(version), Ok(snapshot)) = (committed.version(), committed.snapshot()) else {
            return;
        };
        let interval = snapshot.table_config().checkpoint_interval().get();
        if !(version + 1).is_multiple_of(interval) {
            return;
        }
        let (committed, name) = (committed.clone(), table.name());
        let handle = tokio::spawn(async move {
            let started = std::time::Instant::now();
            match deltalake::checkpoints::create_checkpoint(&committed, None).await {
                Ok(()) => tracing::debug!(
                    table = %name, version, took_ms = started.elapsed().as_millis() as u64,
                    "checkpoint written"
                ),
                Err(error) => tracing::warn!(
                    table = %name, version, %error,
                    "writing a checkpoint failed; readers replay more of the log until the next one"
                ),
            }
        });
        let mut pending = self.checkpoints.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|h| !h.is_finished());
        pending.push(handle);
    }

    /// Waits for the checkpoints still being written in the background, so that a process that
    /// stops leaves them written.
    pub async fn settle(&self) {
        let pending =
            std::mem::take(&mut *self.checkpoints.lock().unwrap_or_else(|p| p.into_inner()));
        for handle in pending {
            if let Err(error) = handle.await {
                tracing::warn!(%error, "a checkpoint task ended abnormally");
            }
        }
    }

    /// Takes this process's lock on a table for one read-decide-commit cycle.
    pub(crate) async fn lock(&self, table: LakeTable) -> TableLock<'_> {
        let location = table.location(&self.layout);
        let cached = self.slot(&location).lock_owned().await;
        TableLock {
            lake: self,
            table,
            location,
            cached,
            tries: 0,
        }
    }
}

/// One writer's hold on a table: read the latest state, decide, commit; on a conflict with a
/// concurrent writer, read again and redo the decision.
///
/// ```text
/// let mut lock = lake.lock(table).await;
/// loop {
///     let target = lock.latest_or_create(&schema).await?;
///     match attempt(target).await {
///         Ok((committed, outcome)) => return Ok(lock.keep(committed, outcome)),
///         Err(err) => lock.retry_or_fail(err).await?,
///     }
/// }
/// ```
pub(crate) struct TableLock<'a> {
    lake: &'a Lake,
    table: LakeTable,
    location: String,
    cached: tokio::sync::OwnedMutexGuard<Option<DeltaTable>>,
    tries: u32,
}

impl TableLock<'_> {
    /// The latest state of the table, creating it with `schema` on first use.
    pub(crate) async fn latest_or_create(&mut self, schema: &SchemaRef) -> Result<DeltaTable> {
        let name = self.table.name();
        match self.cached.as_mut() {
            Some(t) => {
                t.update_incremental(None)
                    .await
                    .map_err(|source| delta_error(&name, &self.location, "refresh", source))?;
                Ok(t.clone())
            }
            None => {
                let t = open_or_create(&name, &self.location, schema, &self.lake.storage_options)
                    .await?;
                *self.cached = Some(t.clone());
                Ok(t)
            }
        }
    }

    /// The latest state of the table; `None` when it does not exist (nothing is created).
    pub(crate) async fn latest_existing(&mut self) -> Result<Option<DeltaTable>> {
        let name = self.table.name();
        if self.cached.is_none() {
            *self.cached = open_existing(&name, &self.location, &self.lake.storage_options).await?;
            return Ok(self.cached.clone());
        }
        if let Some(t) = self.cached.as_mut() {
            t.update_incremental(None)
                .await
                .map_err(|source| delta_error(&name, &self.location, "refresh", source))?;
        }
        Ok(self.cached.clone())
    }

    /// Keeps the state a commit produced and hands back the outcome; writes a checkpoint in
    /// the background when the commit's version is due for one. Commits through a lock leave
    /// checkpoints to this (see [`super::table::lake_commit_properties`]).
    pub(crate) fn keep<T>(&mut self, committed: Option<DeltaTable>, outcome: T) -> T {
        if let Some(t) = committed {
            // A maintenance step with nothing to do hands back the version it found.
            if t.version() != self.cached.as_ref().and_then(|c| c.version()) {
                self.lake.checkpoint_if_due(&self.table, &t);
            }
            *self.cached = Some(t);
        }
        outcome
    }

    /// After a failed attempt: waits and returns `Ok` when the failure was a conflict worth
    /// retrying on a fresh read, or returns the error.
    pub(crate) async fn retry_or_fail(&mut self, err: SinkError) -> Result<()> {
        self.tries += 1;
        if !err.is_commit_conflict() || self.tries >= CONFLICT_ATTEMPTS {
            return Err(err);
        }
        tracing::debug!(table = %self.table.name(), tries = self.tries, "commit conflict; retrying on a fresh read");
        tokio::time::sleep(backoff(self.tries)).await;
        Ok(())
    }
}

/// Randomised, growing pauses so that competing writers stop colliding.
fn backoff(tries: u32) -> Duration {
    let base = 50u64 << tries.min(6);
    Duration::from_millis(base + rand::random_range(0..base))
}

impl SinkError {
    /// A concurrent writer committed something our commit conflicts with: rerun on fresh data.
    pub fn is_commit_conflict(&self) -> bool {
        match self {
            SinkError::Delta { source, .. } => matches!(
                source.as_ref(),
                DeltaTableError::VersionAlreadyExists(_)
                    | DeltaTableError::Transaction {
                        source: TransactionError::CommitConflict(_)
                            | TransactionError::MaxCommitAttempts(_)
                    }
            ),
            _ => false,
        }
    }
}
