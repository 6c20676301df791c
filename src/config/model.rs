//! The `tables.yaml` file as written: the original project's format plus optional dqetl keys.
//!
//! This model is deliberately loose (free-form `params`, kinds as strings) so that loading never
//! stops at the first mistake: `validate` checks it as a whole and turns it into the typed
//! [`crate::config::spec`] model that the rest of dqetl runs on.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A free-form YAML value (rule and transform parameters, defaults).
pub type Value = serde_json::Value;

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Config {
    /// Lake locations and the micro-batch trigger.
    #[serde(default)]
    pub settings: Option<Settings>,
    /// Broker connection; `PLACEHOLDER_BOOTSTRAP_SERVERS` is resolved per target.
    #[serde(default)]
    pub kafka: Option<KafkaSettings>,
    /// The source database (only `schema_name` is used; defaults to `public`).
    #[serde(default)]
    pub source_database: Option<SourceDatabase>,
    /// Source tables, plus internal tables such as `dq_metrics`.
    #[serde(default)]
    pub tables: Option<Vec<TableConfig>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Settings {
    pub checkpoint_location: Option<String>,
    pub quarantine_path: Option<String>,
    pub delta_bucket: Option<String>,
    /// Micro-batch interval, e.g. "15 seconds", "500ms".
    pub trigger_interval: Option<String>,
    /// dqetl: upper bound of records per micro-batch (default 100000).
    pub max_batch_records: Option<u64>,
    /// dqetl: upper bound of payload bytes per micro-batch (default 64 MiB).
    pub max_batch_bytes: Option<u64>,
    /// dqetl: how often `dqetl process` compacts and vacuums the tables it writes, e.g.
    /// "1 hour" (the default); 0 turns it off.
    pub maintenance_interval: Option<Value>,
    /// dqetl: how long files a commit replaced stay on storage for readers of older versions
    /// before maintenance deletes them (default "7 days").
    pub vacuum_retention: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct KafkaSettings {
    pub bootstrap_servers: Option<String>,
    pub security_protocol: Option<String>,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    /// dqetl: partitions per topic when topics are created (default 3).
    pub partitions: Option<i32>,
    /// dqetl: consumer group of the processor (default `dqetl-<stack>`).
    pub consumer_group: Option<String>,
    /// dqetl: librdkafka properties of the processor's consumer, over dqetl's own settings
    /// (e.g. `fetch.wait.max.ms: 25`).
    pub consumer_options: Option<BTreeMap<String, Value>>,
    /// dqetl: what the processor does when a partition's offsets were never delivered (deleted by
    /// the topic's retention before they were applied): `fail` (default) or `warn`.
    pub on_data_loss: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct SourceDatabase {
    pub engine: Option<String>,
    pub schema_name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct TableConfig {
    pub name: Option<String>,
    /// Kafka topic; defaults to `cdc-<name>` everywhere.
    pub topic: Option<String>,
    pub delta_path: Option<String>,
    /// One column; `null` for internal tables.
    pub primary_key: Option<String>,
    #[serde(default)]
    pub internal: Option<bool>,
    pub schema: Option<Vec<ColumnConfig>>,
    pub dq_rules: Option<Vec<RuleConfig>>,
    pub transforms: Option<Vec<TransformConfig>>,
    pub deequ_checks: Option<Vec<DeequCheckConfig>>,
    pub foreign_keys: Option<Vec<ForeignKeyConfig>>,
    pub indexes: Option<Vec<IndexConfig>>,
    /// dqetl: SCD Type 2 options.
    pub scd2: Option<Scd2Config>,
    /// dqetl: quarantine options.
    pub quarantine: Option<QuarantineConfig>,
    /// dqetl: anomaly checks on metric history.
    pub anomaly_checks: Option<Vec<AnomalyCheckConfig>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ColumnConfig {
    pub name: Option<String>,
    /// string varchar text integer int long bigint double float real timestamp date boolean decimal(p,s)
    #[serde(rename = "type")]
    pub column_type: Option<String>,
    pub nullable: Option<bool>,
    pub unique: Option<bool>,
    pub default: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct RuleConfig {
    pub id: Option<String>,
    /// range, allowed_values, regex, not_null, unique, length
    #[serde(rename = "type")]
    pub rule_type: Option<String>,
    pub column: Option<String>,
    #[serde(default)]
    pub params: Option<BTreeMap<String, Value>>,
    /// error (quarantine, the default) or warning (load and count)
    pub severity: Option<String>,
    /// dqetl: NULL passes this rule instead of failing it.
    pub allow_null: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct TransformConfig {
    pub id: Option<String>,
    /// trim, lower, upper, round, mask_pii, cast, default_value, rename
    #[serde(rename = "type")]
    pub transform_type: Option<String>,
    pub column: Option<String>,
    #[serde(default)]
    pub params: Option<BTreeMap<String, Value>>,
    pub order: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct DeequCheckConfig {
    /// size, completeness, uniqueness, compliance (case-insensitive)
    pub metric: Option<String>,
    pub column: Option<String>,
    /// Pass when value >= threshold; a number in [0,1] except for size.
    pub threshold: Option<Value>,
    pub severity: Option<String>,
    pub pattern: Option<String>,
    pub expression: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ForeignKeyConfig {
    pub column: Option<String>,
    pub references: Option<ReferenceConfig>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ReferenceConfig {
    pub table: Option<String>,
    pub column: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct IndexConfig {
    pub columns: Option<Vec<String>>,
    pub unique: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Scd2Config {
    /// Column that orders versions of one key (default: Kafka order).
    pub sequence_by: Option<String>,
    /// close (default) or tombstone
    pub hard_deletes: Option<String>,
    /// Keep every intermediate version of a key within one micro-batch as history.
    pub track_intermediate: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct QuarantineConfig {
    /// Apply mask_pii transforms to quarantined rows too (default true).
    pub mask_pii: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct AnomalyCheckConfig {
    /// Metric to watch, as written to dq_metrics (e.g. size, completeness).
    pub metric: Option<String>,
    pub column: Option<String>,
    /// relative_rate_of_change or stddev
    pub strategy: Option<String>,
    /// relative_rate_of_change: allowed ratio band, e.g. max_increase 2.0, max_decrease 0.5.
    pub max_increase: Option<f64>,
    pub max_decrease: Option<f64>,
    /// stddev: k in mean ± k·stddev.
    pub k: Option<f64>,
    /// Minimum history points before the check fires (default 5).
    pub min_history: Option<u64>,
    pub severity: Option<String>,
}
