//! `dqetl teardown [--force]`: stop what the stack started and delete `.dqetl/<stack>/`.
//! Without `--force` it asks for the stack name; without a terminal to ask on, it refuses.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{GlobalArgs, TeardownArgs};
use crate::target::local::console::Console;
use crate::target::local::lifecycle;
use crate::target::local::stack::{self, StackDir};

use super::deploy::{not_on_aws, print_json_steps};

pub fn run(global: &GlobalArgs, args: &TeardownArgs) -> anyhow::Result<ExitCode> {
    not_on_aws(global, "teardown")?;
    stack::check_stack_name(&global.stack_name)?;
    let dir = StackDir::for_stack(&global.stack_name);
    if !args.force && dir.exists() {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "refusing to tear down stack `{}` without confirmation: stdin is not a terminal; \
                 pass --force to stop its processes and delete {}",
                global.stack_name,
                dir.root().display()
            );
        }
        eprint!(
            "This stops every process of stack `{}` and deletes {} (database, topics, lake).\n\
             Type the stack name to confirm: ",
            global.stack_name,
            dir.root().display()
        );
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("reading the confirmation")?;
        if answer.trim() != global.stack_name {
            eprintln!("not confirmed; nothing was changed");
            return Ok(ExitCode::from(1));
        }
    }
    let mut console = Console::new(global.json);
    let result = lifecycle::teardown(&dir, &mut console);
    print_json_steps(global, &console, None);
    result.with_context(|| format!("tearing down local stack `{}`", global.stack_name))?;
    Ok(ExitCode::SUCCESS)
}
