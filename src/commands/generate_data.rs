//! `dqetl generate-data`: change traffic into the source database, then the summary of what
//! was written and what the lake must hold.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use tokio::sync::watch;

use crate::cli::{GenerateDataArgs, GenerateMode, GlobalArgs};
use crate::generate::{self, GenerateError, GenerateOptions, Mode};

/// Usage and config errors.
const USAGE: u8 = 2;

pub(crate) fn run(global: &GlobalArgs, args: GenerateDataArgs) -> anyhow::Result<ExitCode> {
    let spec = match stub_config::load(&global.config) {
        Ok(spec) => spec,
        Err(message) => return Ok(usage_error(&message)),
    };
    let Some(pg_url) = args.pg_url else {
        return Ok(usage_error(
            "no source database: pass --pg-url or set DQETL_PG_URL",
        ));
    };
    let events = (f64::from(args.rate) * args.duration.as_secs_f64()).ceil() as u64;
    let options = GenerateOptions {
        pg_url,
        mode: match args.mode {
            GenerateMode::Auto => Mode::Auto,
            GenerateMode::Vehicle => Mode::Vehicle,
            GenerateMode::Generic => Mode::Generic,
        },
        rate: Some(f64::from(args.rate)),
        events: Some(events),
        bad_ratio: args.bad_ratio,
        seed: args.seed.unwrap_or_else(rand::random),
        progress: !global.json && std::io::stderr().is_terminal(),
    };

    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let outcome = runtime.block_on(async {
        let (stop_tx, stop) = watch::channel(false);
        let ctrl_c = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping: committing the open transaction, then the summary");
                let _ = stop_tx.send(true);
            }
        });
        let outcome = generate::run(&spec, &options, stop).await;
        ctrl_c.abort();
        outcome
    });
    let report = match outcome {
        Ok(report) => report,
        Err(e @ (GenerateError::Option(_) | GenerateError::ModeMismatch { .. })) => {
            return Ok(usage_error(&e.to_string()));
        }
        Err(e) => return Err(e).context("generate-data could not start"),
    };

    let json = serde_json::to_string_pretty(&report.summary)
        .context("cannot render the summary as JSON")?;
    if let Some(path) = &args.summary_json {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write the summary to {}", path.display()))?;
    }
    if global.json {
        println!("{json}");
    } else {
        print!("{}", report.summary.render_text());
    }
    match report.failure {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => Err(anyhow::Error::new(e).context("generate-data stopped")),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(USAGE)
}

// replaced on integration: crate::config::load_spec (the validating loader). This stand-in
// reads the fields the generator uses and rejects what it does not understand.
mod stub_config {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::model::{Config, RuleConfig};
    use crate::config::spec::{
        ColumnSpec, ColumnType, ConfigSpec, ForeignKeySpec, HardDeletes, IndexSpec, KafkaSpec,
        RuleKind, RuleSpec, Scd2Spec, SettingsSpec, Severity, TableSpec,
    };

    pub(super) fn load(path: &Path) -> Result<ConfigSpec, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let config: Config =
            serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut tables = Vec::new();
        for (i, t) in config.tables.unwrap_or_default().into_iter().enumerate() {
            let name = t.name.ok_or_else(|| format!("tables[{i}]: missing name"))?;
            let at = |what: &str| format!("{}: table '{name}': {what}", path.display());
            let mut columns = Vec::new();
            for c in t.schema.unwrap_or_default() {
                let col_name = c.name.ok_or_else(|| at("a column has no name"))?;
                let ty = c.column_type.unwrap_or_default();
                columns.push(ColumnSpec {
                    column_type: column_type(&ty)
                        .ok_or_else(|| at(&format!("column '{col_name}': unknown type '{ty}'")))?,
                    name: col_name,
                    nullable: c.nullable.unwrap_or(true),
                    unique: c.unique.unwrap_or(false),
                    default: c.default,
                });
            }
            let rules = t
                .dq_rules
                .unwrap_or_default()
                .into_iter()
                .map(|r| rule(r).map_err(|e| at(&e)))
                .collect::<Result<_, _>>()?;
            let foreign_keys = t
                .foreign_keys
                .unwrap_or_default()
                .into_iter()
                .filter_map(|fk| {
                    let r = fk.references?;
                    Some(ForeignKeySpec {
                        column: fk.column?,
                        ref_table: r.table?,
                        ref_column: r.column?,
                    })
                })
                .collect();
            let indexes = t
                .indexes
                .unwrap_or_default()
                .into_iter()
                .map(|i| IndexSpec {
                    columns: i.columns.unwrap_or_default(),
                    unique: i.unique.unwrap_or(false),
                })
                .collect();
            let hard_deletes = match t.scd2.as_ref().and_then(|s| s.hard_deletes.as_deref()) {
                Some("tombstone") => HardDeletes::Tombstone,
                _ => HardDeletes::Close,
            };
            tables.push(TableSpec {
                topic: t.topic.unwrap_or_else(|| format!("cdc-{name}")),
                delta_path: t.delta_path,
                primary_key: t.primary_key,
                internal: t.internal.unwrap_or(false),
                columns,
                rules,
                transforms: vec![],
                checks: vec![],
                anomaly_checks: vec![],
                foreign_keys,
                indexes,
                scd2: Scd2Spec {
                    sequence_by: None,
                    hard_deletes,
                    track_intermediate: false,
                },
                mask_pii_in_quarantine: true,
                name,
            });
        }
        Ok(ConfigSpec {
            settings: SettingsSpec {
                checkpoint_location: None,
                quarantine_path: None,
                delta_bucket: None,
                trigger_interval: Duration::from_secs(15),
                max_batch_records: 100_000,
                max_batch_bytes: 64 << 20,
            },
            kafka: KafkaSpec {
                bootstrap_servers: None,
                security_protocol: None,
                sasl_mechanism: None,
                sasl_username: None,
                partitions: 3,
                consumer_group: None,
            },
            schema_name: config
                .source_database
                .and_then(|s| s.schema_name)
                .unwrap_or_else(|| "public".into()),
            tables,
        })
    }

    fn column_type(text: &str) -> Option<ColumnType> {
        let lower = text.trim().to_ascii_lowercase();
        Some(match lower.as_str() {
            "string" | "varchar" => ColumnType::String,
            "text" => ColumnType::Text,
            "integer" | "int" => ColumnType::Int,
            "long" | "bigint" => ColumnType::Long,
            "double" | "float" => ColumnType::Double,
            "real" => ColumnType::Real,
            "boolean" => ColumnType::Boolean,
            "timestamp" => ColumnType::Timestamp,
            "date" => ColumnType::Date,
            other => {
                let inner = other.strip_prefix("decimal(")?.strip_suffix(')')?;
                let (p, s) = inner.split_once(',')?;
                ColumnType::Decimal {
                    precision: p.trim().parse().ok()?,
                    scale: s.trim().parse().ok()?,
                }
            }
        })
    }

    fn rule(r: RuleConfig) -> Result<RuleSpec, String> {
        let id = r.id.unwrap_or_default();
        let params = r.params.unwrap_or_default();
        let number = |k: &str| params.get(k).and_then(|v| v.as_f64());
        let kind = match r.rule_type.as_deref() {
            Some("range") => RuleKind::Range {
                min: number("min"),
                max: number("max"),
            },
            Some("allowed_values") => RuleKind::AllowedValues {
                values: params
                    .get("values")
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .map(|v| {
                                v.as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| v.to_string())
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            Some("regex") => {
                let pattern = params
                    .get("pattern")
                    .and_then(|v| v.as_str())
                    .unwrap_or(".*");
                RuleKind::Regex {
                    pattern: regex::Regex::new(pattern).map_err(|e| format!("rule '{id}': {e}"))?,
                }
            }
            Some("not_null") => RuleKind::NotNull,
            Some("unique") => RuleKind::Unique,
            Some("length") => RuleKind::Length {
                min: number("min").map(|m| m as u64),
                max: number("max").map(|m| m as u64),
            },
            other => return Err(format!("rule '{id}': unknown type {other:?}")),
        };
        Ok(RuleSpec {
            column: r.column.ok_or_else(|| format!("rule '{id}': no column"))?,
            severity: if r.severity.as_deref() == Some("warning") {
                Severity::Warning
            } else {
                Severity::Error
            },
            allow_null: r.allow_null.unwrap_or(false),
            id,
            kind,
        })
    }
}
