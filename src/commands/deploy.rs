//! `dqetl deploy`: start the stack's services (local: PostgreSQL and tansu under
//! `.dqetl/<stack>/`). Idempotent: what runs is reported and left alone.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{GlobalArgs, Target};
use crate::target::local::console::Console;
use crate::target::local::lifecycle;
use crate::target::local::stack::{self, StackDir};

pub fn run(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    not_on_aws(global, "deploy")?;
    stack::check_stack_name(&global.stack_name)?;
    let dir = StackDir::for_stack(&global.stack_name);
    let mut console = Console::new(global.json);
    let runtime = runtime()?;
    let state = runtime.block_on(lifecycle::deploy(&dir, &mut console));
    let state = match state {
        Ok(state) => state,
        Err(e) => {
            print_json_steps(global, &console, None);
            return Err(e).context(format!("deploying local stack `{}`", global.stack_name));
        }
    };
    if global.json {
        print_json_steps(
            global,
            &console,
            Some(serde_json::json!({
                "pg_url": stack::pg_url(&state),
                "bootstrap": stack::bootstrap(&state),
                "state_file": dir.state_file(),
            })),
        );
    } else {
        console.line(&format!(
            "\nstack `{}` is up: PostgreSQL {}  Kafka {}\nnext: dqetl{} post-deploy",
            state.stack,
            stack::pg_url(&state),
            stack::bootstrap(&state),
            stack_flag(&global.stack_name)
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// The commands of this family are local-only for now.
pub(super) fn not_on_aws(global: &GlobalArgs, command: &str) -> anyhow::Result<()> {
    if global.target == Target::Aws {
        anyhow::bail!(
            "`dqetl {command} --target aws` is not wired yet; `--target local` (the default) runs the stack on this machine"
        );
    }
    Ok(())
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

/// ` --stack-name S` when S is not the default, for hints the user can paste.
pub(super) fn stack_flag(stack: &str) -> String {
    if stack == "dqetl" {
        String::new()
    } else {
        format!(" --stack-name {stack}")
    }
}

/// `{"stack": .., "steps": [..], ...extra}` on stdout, in `--json` mode.
pub(super) fn print_json_steps(
    global: &GlobalArgs,
    console: &Console,
    extra: Option<serde_json::Value>,
) {
    if !global.json {
        return;
    }
    let mut out = serde_json::json!({
        "stack": global.stack_name,
        "steps": console.steps(),
    });
    if let (Some(serde_json::Value::Object(extra)), Some(map)) = (extra, out.as_object_mut()) {
        map.extend(extra);
    }
    println!("{out:#}");
}
