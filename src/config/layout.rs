//! Where each lake table lives, per target. Configs keep the original's S3 `delta_path`s; the
//! local target ignores them and keeps every table under `.dqetl/<stack>/lake/`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::spec::ConfigSpec;
use crate::pipeline::schema::{METRICS_TABLE, quarantine_table_name};

/// Table locations as URLs or absolute paths (`s3://bucket/prefix/` or `/abs/dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeLayout {
    data_root: String,
    quarantine_root: String,
    /// Data tables whose config names an explicit `delta_path` (aws only).
    overrides: BTreeMap<String, String>,
}

impl LakeLayout {
    /// Every table (data, quarantine, metrics) under `<lake_dir>/<name>`.
    pub fn local(lake_dir: &Path) -> Self {
        let root = lake_dir.to_string_lossy().trim_end_matches('/').to_string();
        LakeLayout { data_root: root.clone(), quarantine_root: root, overrides: BTreeMap::new() }
    }

    /// Data and metrics in `s3://<stack>-delta-<account>/`, quarantine tables in
    /// `s3://<stack>-quarantine-<account>/`; a table's configured `s3://` `delta_path` wins.
    pub fn aws(config: &ConfigSpec, stack: &str, account: &str) -> Self {
        let overrides = config
            .source_tables()
            .filter_map(|t| {
                let p = t.delta_path.as_deref()?;
                p.starts_with("s3://").then(|| (t.name.clone(), p.trim_end_matches('/').to_string()))
            })
            .collect();
        LakeLayout {
            data_root: format!("s3://{stack}-delta-{account}"),
            quarantine_root: format!("s3://{stack}-quarantine-{account}"),
            overrides,
        }
    }

    /// Every table under one S3 root (an explicit `--lake s3://...`).
    pub fn aws_root(root: &str) -> Self {
        let root = root.trim_end_matches('/').to_string();
        LakeLayout { data_root: root.clone(), quarantine_root: root, overrides: BTreeMap::new() }
    }

    /// The location of a data table.
    pub fn data_table(&self, table: &str) -> String {
        self.overrides
            .get(table)
            .cloned()
            .unwrap_or_else(|| format!("{}/{table}", self.data_root))
    }

    /// The location of `<table>_quarantine`.
    pub fn quarantine_table(&self, table: &str) -> String {
        format!("{}/{}", self.quarantine_root, quarantine_table_name(table))
    }

    /// The location of `dq_metrics`.
    pub fn metrics_table(&self) -> String {
        format!("{}/{METRICS_TABLE}", self.data_root)
    }

    /// A folder for dqetl's own bookkeeping (e.g. cumulative metric states) next to the data.
    pub fn state_dir(&self) -> String {
        format!("{}/_dqetl", self.data_root)
    }
}
