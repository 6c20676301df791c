//! One file per command: read its flags, call library code, render the result.

pub mod demo;
pub mod deploy;
pub mod post_deploy;
pub mod status;
pub mod teardown;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs a command and maps its outcome to dqetl's exit codes: 0 ok, 1 failure, 2 usage/config error.
pub fn run(cli: Cli) -> ExitCode {
    let Cli { global, command } = cli;
    let result: anyhow::Result<ExitCode> = match command {
        Command::Validate | Command::Config(_) | Command::Compile(_) => {
            let _ = global;
            Err(anyhow::anyhow!("not implemented yet"))
        }
        Command::Deploy => deploy::run(&global),
        Command::PostDeploy(args) => post_deploy::run(&global, &args),
        Command::Status => status::run(&global),
        Command::Teardown(args) => teardown::run(&global, &args),
        Command::Demo(args) => demo::run(&global, &args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
