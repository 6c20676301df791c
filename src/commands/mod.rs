//! One file per command: read its flags, call library code, render the result.

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub mod capture;

/// Runs a command and maps its outcome to dqetl's exit codes: 0 ok, 1 failure, 2 usage/config error.
pub fn run(cli: Cli) -> ExitCode {
    let Cli { global, command } = cli;
    let result: anyhow::Result<ExitCode> = match command {
        Command::Capture(args) => capture::run(&global, &args),
        Command::Validate | Command::Config(_) | Command::Compile(_) => {
            let _ = global;
            Err(anyhow::anyhow!("not implemented yet"))
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
