//! `dqetl validate`: every problem of the config with file, line, column and key.

use std::process::ExitCode;

use serde_json::json;

use crate::cli::GlobalArgs;
use crate::commands::{load_context, print_stdout};
use crate::config::{Diagnostic, LoadError, ValidationReport, load, validate};

/// Exit codes: 0 valid (warnings allowed), 1 errors, 2 file unreadable.
pub fn run(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let file = global.config.display().to_string();
    let report = match load(&global.config, &load_context(global)) {
        Ok(loaded) => validate(&loaded),
        Err(err @ LoadError::Read { .. }) => {
            if global.json {
                let out = json!({"file": file, "valid": false, "errors": [{"file": file, "line": null, "column": null, "path": null, "message": format!("{:#}", anyhow::Error::new(err)), "hint": null}], "warnings": []});
                println!("{out}");
            } else {
                eprintln!("error: {:#}", anyhow::Error::new(err));
            }
            return Ok(ExitCode::from(2));
        }
        Err(err) => {
            let errors = err.diagnostic().cloned().into_iter().collect();
            ValidationReport {
                file,
                errors,
                warnings: Vec::new(),
                spec: None,
            }
        }
    };
    if global.json {
        print_stdout(&format!("{}\n", render_json(&report)))?;
    } else {
        print_stdout(&render_human(&report))?;
    }
    Ok(ExitCode::from(if report.is_valid() { 0 } else { 1 }))
}

/// Warnings, then errors, then the summary line (the original's order).
pub fn render_human(report: &ValidationReport) -> String {
    let mut out = String::new();
    let (e, w) = (report.errors.len(), report.warnings.len());
    if w > 0 {
        out.push_str(&format!("Warnings ({w}):\n"));
        for d in &report.warnings {
            out.push_str(&format!("  warning: {d}\n"));
        }
        out.push('\n');
    }
    if e > 0 {
        out.push_str(&format!("Errors ({e}):\n"));
        for d in &report.errors {
            out.push_str(&format!("  error: {d}\n"));
        }
        out.push('\n');
        out.push_str(&format!("Validation failed ({e} errors, {w} warnings)\n"));
    } else {
        out.push_str(&format!("Validation passed (0 errors, {w} warnings)\n"));
    }
    out
}

pub fn render_json(report: &ValidationReport) -> serde_json::Value {
    let list = |ds: &[Diagnostic]| serde_json::to_value(ds).unwrap_or_default();
    json!({
        "file": report.file,
        "valid": report.is_valid(),
        "errors": list(&report.errors),
        "warnings": list(&report.warnings),
    })
}
