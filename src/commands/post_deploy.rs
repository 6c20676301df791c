//! `dqetl post-deploy`: source tables, topics, capture, processor, sample data; optionally
//! generated traffic in the foreground. Each step prints its result and can be skipped.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{GlobalArgs, PostDeployArgs};
use crate::config::spec::ConfigSpec;
use crate::target::local::children::{Dqetl, GeneratorOutput, Traffic};
use crate::target::local::console::Console;
use crate::target::local::post_deploy::{PostDeployOptions, post_deploy};
use crate::target::local::stack::{self, StackDir};

use super::deploy::{not_on_aws, print_json_steps, runtime, stack_flag};

pub fn run(global: &GlobalArgs, args: &PostDeployArgs) -> anyhow::Result<ExitCode> {
    not_on_aws(global, "post-deploy")?;
    stack::check_stack_name(&global.stack_name)?;
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.bad_ratio),
        "--bad-ratio must be between 0 and 1, found {}",
        args.bad_ratio
    );
    let config = load_config(global)?;
    let ddl = ddl(&config);
    let dir = StackDir::for_stack(&global.stack_name);
    let dqetl = Dqetl::current(&global.config, &global.stack_name)?;
    let options = PostDeployOptions {
        skip_tables: args.skip_tables,
        skip_topics: args.skip_topics,
        skip_cdc: args.skip_cdc,
        skip_processor: args.skip_processor,
        skip_seed: args.skip_seed,
        partitions: args.partitions,
        traffic: Traffic {
            rate: args.rate,
            duration: args.duration,
            bad_ratio: args.bad_ratio,
            seed: args.seed.unwrap_or_else(rand::random),
        },
        generate: args.generate_data,
        generator_output: if global.json {
            GeneratorOutput::Stderr
        } else {
            GeneratorOutput::Terminal
        },
    };
    let mut console = Console::new(global.json);
    let result = runtime()?.block_on(post_deploy(
        &dqetl,
        &dir,
        &config,
        &ddl,
        &options,
        &mut console,
    ));
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            print_json_steps(global, &console, None);
            return Err(e).context(format!(
                "post-deploy of local stack `{}`",
                global.stack_name
            ));
        }
    };
    if global.json {
        print_json_steps(
            global,
            &console,
            Some(serde_json::json!({
                "seed_summary": report.seed_summary,
                "traffic_summary": report.traffic_summary,
            })),
        );
    } else {
        let flag = stack_flag(&global.stack_name);
        console.line(&format!(
            "\nnext: dqetl{flag} status    dqetl{flag} query \"SELECT count(*) FROM dq_metrics\"\n\
             logs: {}",
            dir.logs_dir().display()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

// replaced on integration: `config::load_spec(path, &LoadContext { stack_name, account_id: None })`
// (validation with file positions) takes over. Until then this reads the YAML loosely: table
// names, topics, keys, columns, rule ids, checks, kafka partitions and consumer group.
pub(super) fn load_config(global: &GlobalArgs) -> anyhow::Result<ConfigSpec> {
    stub::load(&global.config)
}

// replaced on integration: `config::compile::ddl(&spec)`.
pub(super) fn ddl(config: &ConfigSpec) -> String {
    stub::ddl(config)
}

// replaced on integration (the whole module).
mod stub {
    use super::*;
    use crate::config::model::Config;
    use crate::config::spec::{
        ColumnSpec, ColumnType, CompliancePredicate, KafkaSpec, MetricCheckSpec, MetricKind,
        RuleKind, RuleSpec, Scd2Spec, SettingsSpec, Severity, TableSpec, TransformKind,
        TransformSpec,
    };

    pub(super) fn load(path: &Path) -> anyhow::Result<ConfigSpec> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let model: Config = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("parsing config {}", path.display()))?;
        let severity = |s: &Option<String>| match s.as_deref() {
            Some("warning") => Severity::Warning,
            _ => Severity::Error,
        };
        let mut tables = Vec::new();
        for t in model.tables.unwrap_or_default() {
            let Some(name) = t.name else { continue };
            let columns = t
                .schema
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| {
                    Some(ColumnSpec {
                        name: c.name?,
                        column_type: column_type(c.column_type.as_deref().unwrap_or("string")),
                        nullable: c.nullable.unwrap_or(true),
                        unique: c.unique.unwrap_or(false),
                        default: c.default,
                    })
                })
                .collect();
            let rules = t
                .dq_rules
                .unwrap_or_default()
                .into_iter()
                .filter_map(|r| {
                    Some(RuleSpec {
                        id: r.id?,
                        column: r.column?,
                        kind: RuleKind::NotNull,
                        severity: severity(&r.severity),
                        allow_null: r.allow_null.unwrap_or(false),
                    })
                })
                .collect();
            let mut transforms: Vec<TransformSpec> = t
                .transforms
                .unwrap_or_default()
                .into_iter()
                .filter_map(|x| {
                    let kind = match x.transform_type.as_deref()? {
                        "rename" => TransformKind::Rename {
                            new_name: x.params.as_ref()?.get("new_name")?.as_str()?.to_string(),
                        },
                        _ => TransformKind::Trim,
                    };
                    Some(TransformSpec {
                        id: x.id?,
                        column: x.column?,
                        kind,
                        order: x.order.unwrap_or(0),
                    })
                })
                .collect();
            transforms.sort_by_key(|x| x.order);
            let checks = t
                .deequ_checks
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| {
                    let kind = match c.metric?.to_ascii_lowercase().as_str() {
                        "size" => MetricKind::Size,
                        "completeness" => MetricKind::Completeness,
                        "uniqueness" => MetricKind::Uniqueness,
                        _ => MetricKind::Compliance {
                            name: c.name.clone().unwrap_or_default(),
                            predicate: CompliancePredicate::Expression(
                                c.expression.clone().unwrap_or_default(),
                            ),
                        },
                    };
                    Some(MetricCheckSpec {
                        kind,
                        column: c.column,
                        threshold: c.threshold.and_then(|v| v.as_f64()),
                        severity: severity(&c.severity),
                    })
                })
                .collect();
            tables.push(TableSpec {
                topic: t.topic.unwrap_or_else(|| format!("cdc-{name}")),
                name,
                delta_path: t.delta_path,
                primary_key: t.primary_key,
                internal: t.internal.unwrap_or(false),
                columns,
                rules,
                transforms,
                checks,
                anomaly_checks: Vec::new(),
                foreign_keys: Vec::new(),
                indexes: Vec::new(),
                scd2: Scd2Spec::default(),
                mask_pii_in_quarantine: true,
            });
        }
        let kafka = model.kafka.unwrap_or_default();
        Ok(ConfigSpec {
            settings: SettingsSpec {
                checkpoint_location: None,
                quarantine_path: None,
                delta_bucket: None,
                trigger_interval: std::time::Duration::from_secs(15),
                max_batch_records: 100_000,
                max_batch_bytes: 64 << 20,
            },
            kafka: KafkaSpec {
                bootstrap_servers: None,
                security_protocol: None,
                sasl_mechanism: None,
                sasl_username: None,
                partitions: kafka.partitions.unwrap_or(3),
                consumer_group: kafka.consumer_group,
            },
            schema_name: model
                .source_database
                .and_then(|s| s.schema_name)
                .unwrap_or_else(|| "public".to_string()),
            tables,
        })
    }

    fn column_type(text: &str) -> ColumnType {
        match text.to_ascii_lowercase().as_str() {
            "text" => ColumnType::Text,
            "integer" | "int" => ColumnType::Int,
            "long" | "bigint" => ColumnType::Long,
            "double" | "float" => ColumnType::Double,
            "real" => ColumnType::Real,
            "boolean" => ColumnType::Boolean,
            "timestamp" => ColumnType::Timestamp,
            "date" => ColumnType::Date,
            _ => ColumnType::String,
        }
    }

    pub(super) fn ddl(config: &ConfigSpec) -> String {
        let mut out = String::new();
        for table in config.source_tables() {
            let columns: Vec<String> = table
                .columns
                .iter()
                .map(|c| {
                    let is_pk = table.primary_key.as_deref() == Some(c.name.as_str());
                    let ty = match (c.column_type, is_pk) {
                        (ColumnType::Int, true) => "SERIAL PRIMARY KEY".to_string(),
                        (ColumnType::Long, true) => "BIGSERIAL PRIMARY KEY".to_string(),
                        (ColumnType::String, _) => "VARCHAR(255)".to_string(),
                        (ColumnType::Text, _) => "TEXT".to_string(),
                        (ColumnType::Int, _) => "INTEGER".to_string(),
                        (ColumnType::Long, _) => "BIGINT".to_string(),
                        (ColumnType::Double, _) => "DOUBLE PRECISION".to_string(),
                        (ColumnType::Real, _) => "REAL".to_string(),
                        (ColumnType::Boolean, _) => "BOOLEAN".to_string(),
                        (ColumnType::Timestamp, _) => "TIMESTAMP".to_string(),
                        (ColumnType::Date, _) => "DATE".to_string(),
                        (ColumnType::Decimal { precision, scale }, _) => {
                            format!("DECIMAL({precision},{scale})")
                        }
                    };
                    let mut def = format!("    \"{}\" {ty}", c.name);
                    if !is_pk && !c.nullable {
                        def.push_str(" NOT NULL");
                    }
                    if !is_pk && c.unique {
                        def.push_str(" UNIQUE");
                    }
                    def
                })
                .collect();
            out.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS \"{}\" (\n{}\n);\n",
                table.name,
                columns.join(",\n")
            ));
        }
        out
    }
}
