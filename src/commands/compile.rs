//! `dqetl compile`: the source DDL, DMS table mappings and lake catalog, written to a directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::cli::{CompileArgs, GlobalArgs, Target};
use crate::commands::{load_context, print_stdout};
use crate::config::compile::{self, CATALOG_FILE, DDL_FILE, DMS_FILE, to_pretty_json};
use crate::config::layout::LakeLayout;
use crate::config::placeholders::LOCAL_ACCOUNT;
use crate::config::spec::ConfigSpec;
use crate::config::{ConfigError, load, validate};

/// The account placeholder kept verbatim in AWS locations when compiling without AWS access;
/// deploy substitutes the real account.
pub const ACCOUNT_PLACEHOLDER: &str = "${AWS_ACCOUNT_ID}";

pub fn run(global: &GlobalArgs, args: &CompileArgs) -> anyhow::Result<ExitCode> {
    let mut ctx = load_context(global);
    if global.target == Target::Aws && ctx.account_id.is_none() {
        ctx.account_id = Some(ACCOUNT_PLACEHOLDER.to_string());
    }
    let loaded = match load(&global.config, &ctx) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("error: {:#}", anyhow::Error::new(ConfigError::from(err)));
            return Ok(ExitCode::from(ConfigError::EXIT_CODE));
        }
    };
    let report = validate(&loaded);
    let Some(spec) = report.spec else {
        let err = ConfigError::Invalid {
            file: report.file,
            errors: report.errors,
        };
        eprintln!("error: {err}");
        return Ok(ExitCode::from(ConfigError::EXIT_CODE));
    };
    let layout = layout_for(global, &spec, ctx.account_id.as_deref())?;
    let written = write_all(&spec, &layout, &args.output)?;

    let tables = spec.source_tables().count();
    let fks: usize = spec.source_tables().map(|t| t.foreign_keys.len()).sum();
    let indexes: usize = spec.source_tables().map(|t| t.indexes.len()).sum();
    let lake_tables = tables * 2 + 1;
    if global.json {
        let out = json!({
            "output": args.output.display().to_string(),
            "files": written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "warnings": report.warnings.len(),
            "tables": tables,
            "dms_rules": tables * 2,
            "foreign_keys": fks,
            "indexes": indexes,
            "lake_tables": lake_tables,
        });
        print_stdout(&format!("{out}\n"))?;
    } else {
        let warnings = report.warnings.len();
        let target = target_name(global.target);
        let mut text = format!(
            "Validating config... OK (0 errors, {warnings} warnings)\n\
             Compiling DMS table mappings... {tables} tables → {} rules\n\
             Compiling PostgreSQL DDL... {tables} tables, {fks} foreign key(s), {indexes} index(es)\n\
             Compiling lake catalog... {lake_tables} tables ({target} target)\n\
             \nOutput:\n",
            tables * 2
        );
        for path in &written {
            text.push_str(&format!("  {}\n", path.display()));
        }
        print_stdout(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn target_name(target: Target) -> &'static str {
    match target {
        Target::Local => "local",
        Target::Aws => "aws",
    }
}

/// local: `<cwd>/.dqetl/<stack>/lake`; aws: the stack's buckets.
fn layout_for(
    global: &GlobalArgs,
    spec: &ConfigSpec,
    account: Option<&str>,
) -> anyhow::Result<LakeLayout> {
    Ok(match global.target {
        Target::Local => {
            let cwd = std::env::current_dir().context("cannot determine the current directory")?;
            LakeLayout::local(&cwd.join(".dqetl").join(&global.stack_name).join("lake"))
        }
        Target::Aws => LakeLayout::aws(spec, &global.stack_name, account.unwrap_or(LOCAL_ACCOUNT)),
    })
}

/// Writes the three artifacts; returns their paths in the order written.
pub fn write_all(
    spec: &ConfigSpec,
    layout: &LakeLayout,
    dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let catalog = compile::catalog(spec, layout)?;
    let files = [
        (DMS_FILE, to_pretty_json(&compile::dms_mappings(spec))),
        (DDL_FILE, compile::ddl(spec)),
        (CATALOG_FILE, to_pretty_json(&catalog)),
    ];
    let mut written = Vec::new();
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::write(&path, content)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
