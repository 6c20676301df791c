//! The validated, typed configuration that dqetl runs on. Built only by `validate`, so every
//! value here has already been checked (columns exist, regexes compile, min <= max, ...).

use std::fmt;
use std::time::Duration;

/// A column type of the config, with the original's aliases folded together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// string, varchar
    String,
    /// text (same as String downstream; VARCHAR vs TEXT in source DDL)
    Text,
    /// integer, int (32-bit)
    Int,
    /// long, bigint (64-bit)
    Long,
    /// double, float (64-bit)
    Double,
    /// real (32-bit in PostgreSQL; processed as 64-bit double)
    Real,
    Boolean,
    /// UTC timestamp, microseconds
    Timestamp,
    Date,
    Decimal {
        precision: u8,
        scale: i8,
    },
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::String => f.write_str("string"),
            ColumnType::Text => f.write_str("text"),
            ColumnType::Int => f.write_str("integer"),
            ColumnType::Long => f.write_str("long"),
            ColumnType::Double => f.write_str("double"),
            ColumnType::Real => f.write_str("real"),
            ColumnType::Boolean => f.write_str("boolean"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    pub name: String,
    pub column_type: ColumnType,
    pub nullable: bool,
    pub unique: bool,
    /// A literal default for DDL and for `default_value`-less inserts, as given.
    pub default: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The row is quarantined and not loaded.
    Error,
    /// The row is loaded; the failure is counted and logged.
    Warning,
}

#[derive(Debug, Clone)]
pub enum RuleKind {
    /// Inclusive bounds; either may be absent.
    Range {
        min: Option<f64>,
        max: Option<f64>,
    },
    /// Exact, case-sensitive membership.
    AllowedValues {
        values: Vec<String>,
    },
    /// Find semantics like Spark's rlike; anchors make it a full match.
    Regex {
        pattern: regex::Regex,
    },
    NotNull,
    /// Unique within the micro-batch: every copy of a duplicated value fails.
    Unique,
    /// Inclusive bounds on the character count.
    Length {
        min: Option<u64>,
        max: Option<u64>,
    },
}

#[derive(Debug, Clone)]
pub struct RuleSpec {
    pub id: String,
    pub column: String,
    pub kind: RuleKind,
    pub severity: Severity,
    /// NULL passes instead of failing.
    pub allow_null: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TransformKind {
    Trim,
    Lower,
    Upper,
    /// HALF_UP on the decimal string form of the value.
    Round {
        decimals: u32,
    },
    /// Keep the first `visible_chars` characters and append `****`.
    MaskPii {
        visible_chars: usize,
    },
    Cast {
        target_type: ColumnType,
    },
    DefaultValue {
        value: serde_json::Value,
    },
    Rename {
        new_name: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct TransformSpec {
    pub id: String,
    pub column: String,
    pub kind: TransformKind,
    pub order: i64,
}

#[derive(Debug, Clone)]
pub enum MetricKind {
    /// Row count.
    Size,
    /// Fraction of non-null values.
    Completeness,
    /// Fraction of rows whose value occurs exactly once (Deequ's definition).
    Uniqueness,
    /// Fraction of rows satisfying a predicate.
    Compliance {
        name: String,
        predicate: CompliancePredicate,
    },
}

#[derive(Debug, Clone)]
pub enum CompliancePredicate {
    /// `column RLIKE pattern`
    Pattern(regex::Regex),
    /// A SQL-like boolean expression over the row's columns, e.g. `speed_kmh >= 0 AND speed_kmh <= 350`.
    Expression(String),
}

#[derive(Debug, Clone)]
pub struct MetricCheckSpec {
    pub kind: MetricKind,
    /// None for size.
    pub column: Option<String>,
    /// Passes when value >= threshold; None always passes.
    pub threshold: Option<f64>,
    pub severity: Severity,
}

impl MetricCheckSpec {
    /// The metric name as written to `dq_metrics.metric_name` (Deequ's names).
    pub fn metric_name(&self) -> &'static str {
        match self.kind {
            MetricKind::Size => "Size",
            MetricKind::Completeness => "Completeness",
            MetricKind::Uniqueness => "Uniqueness",
            MetricKind::Compliance { .. } => "Compliance",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HardDeletes {
    /// A delete closes the current row.
    #[default]
    Close,
    /// A delete closes the current row and appends a tombstone version with `_operation = DELETE`.
    Tombstone,
}

#[derive(Debug, Clone, Default)]
pub struct Scd2Spec {
    pub sequence_by: Option<String>,
    pub hard_deletes: HardDeletes,
    pub track_intermediate: bool,
}

#[derive(Debug, Clone)]
pub enum AnomalyStrategy {
    RelativeRateOfChange {
        max_increase: Option<f64>,
        max_decrease: Option<f64>,
    },
    StdDev {
        k: f64,
    },
}

#[derive(Debug, Clone)]
pub struct AnomalyCheckSpec {
    pub metric: String,
    pub column: Option<String>,
    pub strategy: AnomalyStrategy,
    pub min_history: u64,
    pub severity: Severity,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForeignKeySpec {
    pub column: String,
    pub ref_table: String,
    pub ref_column: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    pub columns: Vec<String>,
    pub unique: bool,
}

#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: String,
    /// Always resolved: the configured topic or `cdc-<name>`.
    pub topic: String,
    /// As configured (after placeholder resolution); targets derive their own location when absent.
    pub delta_path: Option<String>,
    /// None only for internal tables.
    pub primary_key: Option<String>,
    pub internal: bool,
    pub columns: Vec<ColumnSpec>,
    pub rules: Vec<RuleSpec>,
    /// Sorted by `order`, stable (ties keep config order).
    pub transforms: Vec<TransformSpec>,
    pub checks: Vec<MetricCheckSpec>,
    pub anomaly_checks: Vec<AnomalyCheckSpec>,
    pub foreign_keys: Vec<ForeignKeySpec>,
    pub indexes: Vec<IndexSpec>,
    pub scd2: Scd2Spec,
    /// Mask PII columns in quarantine too (default true).
    pub mask_pii_in_quarantine: bool,
}

impl TableSpec {
    pub fn column(&self, name: &str) -> Option<&ColumnSpec> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct KafkaSpec {
    /// None when the config leaves it to the target (`PLACEHOLDER_BOOTSTRAP_SERVERS`).
    pub bootstrap_servers: Option<String>,
    pub security_protocol: Option<String>,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub partitions: i32,
    pub consumer_group: Option<String>,
    /// librdkafka properties of the processor's consumer, checked by librdkafka itself.
    pub consumer_options: Vec<(String, String)>,
    pub on_data_loss: OnDataLoss,
}

/// What the processor does when a partition's offsets were never delivered: the broker deleted
/// them (retention) before they were applied, or skipped them. Compacted topics and transactional
/// producers (commit markers) skip offsets by design and need `Warn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDataLoss {
    /// Stop before applying anything past the gap, naming it (Spark's `failOnDataLoss=true`).
    #[default]
    Fail,
    /// Log and count the gap, and go on.
    Warn,
}

#[derive(Debug, Clone)]
pub struct SettingsSpec {
    pub checkpoint_location: Option<String>,
    pub quarantine_path: Option<String>,
    pub delta_bucket: Option<String>,
    pub trigger_interval: Duration,
    pub max_batch_records: u64,
    pub max_batch_bytes: u64,
    /// How often the processor compacts and vacuums its tables; `None`: never.
    pub maintenance_interval: Option<Duration>,
    /// Files replaced longer ago than this are deleted by maintenance.
    pub vacuum_retention: Duration,
}

/// A validated config: what every command runs on.
#[derive(Debug, Clone)]
pub struct ConfigSpec {
    pub settings: SettingsSpec,
    pub kafka: KafkaSpec,
    pub schema_name: String,
    /// In config order, internal tables included.
    pub tables: Vec<TableSpec>,
}

impl ConfigSpec {
    pub fn table(&self, name: &str) -> Option<&TableSpec> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Tables that flow through CDC (everything but internal tables).
    pub fn source_tables(&self) -> impl Iterator<Item = &TableSpec> {
        self.tables.iter().filter(|t| !t.internal)
    }

    pub fn table_for_topic(&self, topic: &str) -> Option<&TableSpec> {
        self.source_tables().find(|t| t.topic == topic)
    }
}

use deltalake::arrow::datatypes::{DataType, TimeUnit};

impl ColumnType {
    /// The Arrow (and Delta) type a column of this type has in the lake.
    pub fn arrow_type(&self) -> DataType {
        match self {
            ColumnType::String | ColumnType::Text => DataType::Utf8,
            ColumnType::Int => DataType::Int32,
            ColumnType::Long => DataType::Int64,
            ColumnType::Double | ColumnType::Real => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Date => DataType::Date32,
            ColumnType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
        }
    }

    /// The Athena (Hive DDL) type of the same column.
    pub fn athena_type(&self) -> String {
        match self {
            ColumnType::String | ColumnType::Text => "STRING".into(),
            ColumnType::Int => "INT".into(),
            ColumnType::Long => "BIGINT".into(),
            ColumnType::Double | ColumnType::Real => "DOUBLE".into(),
            ColumnType::Boolean => "BOOLEAN".into(),
            ColumnType::Timestamp => "TIMESTAMP".into(),
            ColumnType::Date => "DATE".into(),
            ColumnType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
        }
    }
}
