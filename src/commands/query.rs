//! `dqetl query SQL`: SQL over the lake's Delta tables (local target: DataFusion).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::cli::{GlobalArgs, QueryArgs, Target};
use crate::config::layout::LakeLayout;
use crate::config::spec::ConfigSpec;
use crate::query::local::LocalQuery;
use crate::query::render::{render_json, render_table};

pub fn run(global: &GlobalArgs, args: &QueryArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&global.config)?;
    let layout = match global.target {
        Target::Local => {
            let cwd = std::env::current_dir().context("reading the current directory")?;
            LakeLayout::local(&cwd.join(".dqetl").join(&global.stack_name).join("lake"))
        }
        Target::Aws => bail!(
            "queries on the aws target run on Athena, which is not wired up yet; use --target aws once deployed"
        ),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let batches = runtime.block_on(async {
        let session = LocalQuery::open(&layout, &config).await?;
        session.query(&args.sql).await
    })?;
    let rendered = if global.json {
        render_json(&batches)
    } else {
        render_table(&batches)
    };
    println!("{}", rendered.context("rendering the result")?);
    Ok(ExitCode::SUCCESS)
}

// replaced on integration: `config::load_spec` (validation with file positions) takes over.
// Until then the query only needs the table names, which this reads loosely from the YAML.
fn load_config(path: &Path) -> anyhow::Result<ConfigSpec> {
    use crate::config::model::Config;
    use crate::config::spec::{KafkaSpec, Scd2Spec, SettingsSpec, TableSpec};

    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let model: Config = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("parsing config {}", path.display()))?;
    let tables = model
        .tables
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| {
            let name = t.name?;
            Some(TableSpec {
                topic: t.topic.unwrap_or_else(|| format!("cdc-{name}")),
                name,
                delta_path: t.delta_path,
                primary_key: t.primary_key,
                internal: t.internal.unwrap_or(false),
                columns: Vec::new(),
                rules: Vec::new(),
                transforms: Vec::new(),
                checks: Vec::new(),
                anomaly_checks: Vec::new(),
                foreign_keys: Vec::new(),
                indexes: Vec::new(),
                scd2: Scd2Spec::default(),
                mask_pii_in_quarantine: true,
            })
        })
        .collect();
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
            partitions: 3,
            consumer_group: None,
        },
        schema_name: "public".to_string(),
        tables,
    })
}
