//! The lake: every Delta table of one deployment, opened (or created) on first use and kept
//! open, one writer at a time per table within this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::transaction::TransactionError;
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
}

impl Lake {
    /// `storage_options` are passed to the object store (`AWS_REGION`, `AWS_ENDPOINT_URL`, ...);
    /// empty for local tables.
    pub fn new(layout: LakeLayout, storage_options: HashMap<String, String>) -> Lake {
        Lake {
            layout,
            storage_options,
            slots: Mutex::new(HashMap::new()),
        }
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

    /// The latest state of a table, creating it with `schema` on first use. The caller holds
    /// the slot lock for the whole read-decide-commit cycle.
    pub(crate) async fn latest_or_create(
        &self,
        cached: &mut Option<DeltaTable>,
        table: &LakeTable,
        schema: &SchemaRef,
    ) -> Result<DeltaTable> {
        let location = table.location(&self.layout);
        match cached {
            Some(t) => {
                t.update_incremental(None)
                    .await
                    .map_err(|source| delta_error(&table.name(), &location, "refresh", source))?;
                Ok(t.clone())
            }
            None => {
                let t =
                    open_or_create(&table.name(), &location, schema, &self.storage_options).await?;
                *cached = Some(t.clone());
                Ok(t)
            }
        }
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

    /// Runs one read-decide-commit cycle on a table under its lock, retrying from a fresh
    /// read when a concurrent writer's commit conflicts with ours.
    pub(crate) async fn commit_cycle<T, F>(
        &self,
        table: &LakeTable,
        schema: &SchemaRef,
        mut attempt: F,
    ) -> Result<T>
    where
        F: AsyncFnMut(DeltaTable) -> Result<(Option<DeltaTable>, T)>,
    {
        let location = table.location(&self.layout);
        let slot = self.slot(&location);
        let mut cached = slot.lock().await;
        let mut tries = 0;
        loop {
            tries += 1;
            let current = self.latest_or_create(&mut cached, table, schema).await?;
            match attempt(current).await {
                Ok((committed, outcome)) => {
                    if let Some(t) = committed {
                        *cached = Some(t);
                    }
                    return Ok(outcome);
                }
                Err(err) if err.is_commit_conflict() && tries < CONFLICT_ATTEMPTS => {
                    tracing::debug!(table = %table.name(), tries, "commit conflict; retrying on a fresh read");
                    tokio::time::sleep(backoff(tries)).await;
                }
                Err(err) => return Err(err),
            }
        }
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
