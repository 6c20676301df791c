//! Exactly what the generator committed to the source database: per table and key, the
//! sequence of operations and, for every written version, the rules it fails. Only committed
//! writes are recorded (the writer stages them until COMMIT succeeds).
//!
//! What the processor makes of it (DESIGN.md, processing semantics): a version failing an
//! `error` rule is quarantined and the key's previous version stays current; deletes bypass
//! rules and close the current row. So, whatever the micro-batching:
//! - a key is current in the lake iff it was not deleted and at least one of its versions
//!   passed every error rule;
//! - every version failing an error rule is one quarantine row.

use std::collections::HashMap;

use serde::Serialize;

use crate::config::spec::Severity;

use super::row::Key;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Insert,
    Update,
    Delete,
}

/// One committed write of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEvent {
    pub operation: Operation,
    /// Indexes into the table's rules of every rule the written row fails (empty for deletes).
    pub failed_rules: Vec<u16>,
    /// The row fails at least one `error` rule: the processor quarantines it.
    pub quarantined: bool,
}

/// Every committed write of one key, in commit order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyHistory {
    pub events: Vec<LedgerEvent>,
}

impl KeyHistory {
    /// The row is gone from the source database.
    pub fn deleted(&self) -> bool {
        self.events
            .last()
            .is_some_and(|e| e.operation == Operation::Delete)
    }

    /// At least one version reached the lake (passed every error rule).
    pub fn loaded(&self) -> bool {
        self.events
            .iter()
            .any(|e| e.operation != Operation::Delete && !e.quarantined)
    }

    /// The key has a current row in the lake once the processor has caught up.
    pub fn current_in_lake(&self) -> bool {
        !self.deleted() && self.loaded()
    }

    /// The write that produced the row now in the source database (None once deleted).
    pub fn source_version(&self) -> Option<&LedgerEvent> {
        if self.deleted() {
            None
        } else {
            self.events.last()
        }
    }
}

/// A rule as the ledger reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub id: String,
    pub column: String,
    pub severity: Severity,
}

/// The writes of one table.
#[derive(Debug, Clone)]
pub struct TableLedger {
    pub name: String,
    pub rules: Vec<RuleRef>,
    /// Rows the table held before the run (never touched by it).
    pub preexisting_rows: u64,
    keys: HashMap<Key, KeyHistory>,
}

impl TableLedger {
    pub(crate) fn new(name: String, rules: Vec<RuleRef>, preexisting_rows: u64) -> Self {
        TableLedger {
            name,
            rules,
            preexisting_rows,
            keys: HashMap::new(),
        }
    }

    pub fn key(&self, key: &Key) -> Option<&KeyHistory> {
        self.keys.get(key)
    }

    /// Every key written, in key order.
    pub fn keys(&self) -> Vec<(&Key, &KeyHistory)> {
        let mut keys: Vec<_> = self.keys.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        keys
    }

    /// Keys whose row the run left in the source database.
    pub fn source_keys(&self) -> Vec<&Key> {
        self.keys()
            .into_iter()
            .filter(|(_, h)| !h.deleted())
            .map(|(k, _)| k)
            .collect()
    }

    /// Keys with a current row in the lake once the processor has caught up.
    pub fn lake_current_keys(&self) -> Vec<&Key> {
        self.keys()
            .into_iter()
            .filter(|(_, h)| h.current_in_lake())
            .map(|(k, _)| k)
            .collect()
    }

    pub fn rule_index(&self, id: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.id == id)
    }

    pub(crate) fn histories(&self) -> impl Iterator<Item = &KeyHistory> {
        self.keys.values()
    }
}

/// The writes of every source table, in config order.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    tables: Vec<TableLedger>,
}

impl Ledger {
    pub(crate) fn new(tables: Vec<TableLedger>) -> Self {
        Ledger { tables }
    }

    pub fn tables(&self) -> &[TableLedger] {
        &self.tables
    }

    pub fn table(&self, name: &str) -> Option<&TableLedger> {
        self.tables.iter().find(|t| t.name == name)
    }

    pub(crate) fn record(&mut self, table: usize, key: Key, event: LedgerEvent) {
        if let Some(t) = self.tables.get_mut(table) {
            t.keys.entry(key).or_default().events.push(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(operation: Operation, quarantined: bool) -> LedgerEvent {
        LedgerEvent {
            operation,
            failed_rules: if quarantined { vec![0] } else { vec![] },
            quarantined,
        }
    }

    fn history(events: Vec<LedgerEvent>) -> KeyHistory {
        KeyHistory { events }
    }

    #[test]
    fn a_quarantined_update_leaves_the_previous_version_current() {
        let h = history(vec![
            write(Operation::Insert, false),
            write(Operation::Update, true),
        ]);
        assert!(h.current_in_lake());
        assert!(h.source_version().is_some_and(|e| e.quarantined));
    }

    #[test]
    fn a_key_never_valid_never_reaches_the_lake_until_a_valid_update() {
        let bad = history(vec![
            write(Operation::Insert, true),
            write(Operation::Update, true),
        ]);
        assert!(!bad.current_in_lake());
        let fixed = history(vec![
            write(Operation::Insert, true),
            write(Operation::Update, false),
        ]);
        assert!(fixed.current_in_lake());
    }

    #[test]
    fn a_delete_ends_the_key_in_source_and_lake() {
        let h = history(vec![
            write(Operation::Insert, false),
            write(Operation::Delete, false),
        ]);
        assert!(h.deleted() && h.loaded() && !h.current_in_lake());
        assert_eq!(h.source_version(), None);
    }
}
