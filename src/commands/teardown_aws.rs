//! `dqetl --target aws teardown [--force]`: delete everything the stack created.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cli::GlobalArgs;
use crate::target::aws::clients::AwsClients;
use crate::target::aws::teardown::Teardown;

pub async fn run(global: &GlobalArgs, force: bool) -> anyhow::Result<()> {
    let stack = &global.stack_name;
    if !force {
        eprint!(
            "This deletes stack {stack} and everything in it: every object version in its buckets, its images, \
             its database.\nType the stack name to confirm: "
        );
        std::io::stderr().flush().ok();
        let mut typed = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut typed)
            .context("reading the confirmation")?;
        if typed.trim() != stack {
            bail!("teardown cancelled: the typed name does not match {stack}");
        }
    }
    let clients = AwsClients::from_environment(global.region.as_deref()).await?;
    let quiet = global.json;
    let say = move |line: &str| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    let teardown = Teardown {
        clients: &clients,
        stack,
        poll: Duration::from_secs(5),
        dms_timeout: Duration::from_secs(600),
        quiet,
    };
    let report = teardown
        .run(&say)
        .await
        .with_context(|| format!("tearing down stack {stack}"))?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if report.stack_existed {
            println!("stack {stack} deleted");
        }
        for r in &report.retained {
            println!("retained by design: {} ({})", r.logical_id, r.resource_type);
        }
        for left in &report.left_behind {
            println!("left behind: {left}");
        }
    }
    if !report.left_behind.is_empty() {
        bail!(
            "teardown left {} thing(s) behind: {}",
            report.left_behind.len(),
            report.left_behind.join(", ")
        );
    }
    Ok(())
}
