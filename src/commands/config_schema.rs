//! `dqetl config schema`: the JSON Schema of `tables.yaml`, generated from the config model, for
//! editors (e.g. `# yaml-language-server: $schema=...`).

use std::process::ExitCode;

use crate::commands::print_stdout;
use crate::config::model::Config;

pub fn run() -> anyhow::Result<ExitCode> {
    let schema = schemars::schema_for!(Config);
    print_stdout(&format!("{}\n", serde_json::to_string_pretty(&schema)?))?;
    Ok(ExitCode::SUCCESS)
}
