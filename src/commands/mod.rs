//! One file per command: read its flags, call library code, render the result.

pub mod compile;
pub mod config_schema;
pub mod query;
pub mod validate;

use std::process::ExitCode;

use crate::cli::{Cli, Command, ConfigCommand, GlobalArgs};
use crate::config::LoadContext;

/// Runs a command and maps its outcome to dqetl's exit codes: 0 ok, 1 failure, 2 usage/config error.
pub fn run(cli: Cli) -> ExitCode {
    let Cli { global, command } = cli;
    let result: anyhow::Result<ExitCode> = match command {
        Command::Validate => validate::run(&global),
        Command::Config(ConfigCommand::Schema) => config_schema::run(),
        Command::Compile(args) => compile::run(&global, &args),
        Command::Query(args) => query::run(&global, &args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Prints to stdout; a closed pipe (`dqetl config schema | head`) is not an error.
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Placeholder values for loading the config: the stack name, and no AWS account (commands that
/// know the account, on the aws target, set it themselves).
pub fn load_context(global: &GlobalArgs) -> LoadContext {
    LoadContext {
        stack_name: global.stack_name.clone(),
        account_id: None,
    }
}
