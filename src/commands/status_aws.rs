//! `dqetl --target aws status`: stack, CDC, broker, processor and the last commit per table.

use anyhow::Context;

use crate::cli::GlobalArgs;
use crate::target::aws::clients::AwsClients;
use crate::target::aws::compiled::{CompiledConfig, command_error};
use crate::target::aws::dms::SdkTableStatistics;
use crate::target::aws::msk::SdkMsk;
use crate::target::aws::status::{self, Part, StatusReport};

pub async fn run(global: &GlobalArgs) -> anyhow::Result<()> {
    let clients = AwsClients::from_environment(global.region.as_deref()).await?;
    let stack = &global.stack_name;
    let account = clients.account_id().await?.to_string();
    let config = CompiledConfig::load(&global.config, stack, &account).map_err(command_error)?;
    let msk = SdkMsk::new(clients.sdk_config());
    let stats = SdkTableStatistics { clients: &clients };
    let report = status::gather(&clients, stack, &config.spec, &msk, &stats)
        .await
        .with_context(|| format!("status of stack {stack}"))?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// The human status: one block per stage.
pub fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "stack      {} {}{}",
        r.stack.name,
        r.stack.status,
        r.stack
            .reason
            .as_deref()
            .map(|x| format!(" ({x})"))
            .unwrap_or_default()
    ));
    match &r.cdc {
        Part::Ok(c) => {
            let mut s = format!("cdc        DMS task {}", c.task.status);
            if let Some(p) = c.task.full_load_percent {
                s.push_str(&format!(", full load {p}%"));
            }
            if let Some(age) = c.last_change_age_secs {
                s.push_str(&format!(", last change applied {age}s ago"));
            }
            if let Some(reason) = c
                .task
                .last_failure
                .as_deref()
                .or(c.task.stop_reason.as_deref())
            {
                s.push_str(&format!(" ({reason})"));
            }
            line(s);
            match &c.tables {
                Part::Ok(tables) => {
                    for t in tables {
                        line(format!(
                            "             {}.{}: {} loaded, {} inserts, {} updates, {} deletes{}",
                            t.schema,
                            t.table,
                            t.full_load_rows,
                            t.inserts,
                            t.updates,
                            t.deletes,
                            t.state
                                .as_deref()
                                .map(|s| format!(" ({s})"))
                                .unwrap_or_default()
                        ));
                    }
                }
                Part::Unavailable(e) => {
                    line(format!("             table statistics unavailable: {e}"))
                }
            }
        }
        Part::Unavailable(e) => line(format!("cdc        unavailable: {e}")),
    }
    match &r.broker {
        Part::Ok(b) => line(format!(
            "broker     MSK {}{}{}",
            b.cluster.state,
            b.cluster
                .kafka_version
                .as_deref()
                .map(|v| format!(", Kafka {v}"))
                .unwrap_or_default(),
            if b.matches_stack_output {
                ""
            } else {
                ", brokers differ from the stack output (redeploy)"
            }
        )),
        Part::Unavailable(e) => line(format!("broker     unavailable: {e}")),
    }
    match &r.processor {
        Part::Ok(Some(c)) => line(format!(
            "processor  {} running, {} desired, {} pending",
            c.running, c.desired, c.pending
        )),
        Part::Ok(None) => line("processor  service not found".to_string()),
        Part::Unavailable(e) => line(format!("processor  unavailable: {e}")),
    }
    for t in &r.tables {
        match t {
            Part::Ok(c) => line(match (c.version, c.committed_at) {
                (Some(v), Some(at)) => format!(
                    "table      {:<32} version {v}, committed {}",
                    c.table,
                    at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                (Some(v), None) => format!("table      {:<32} version {v}", c.table),
                _ => format!("table      {:<32} no commits yet", c.table),
            }),
            Part::Unavailable(e) => line(format!("table      unavailable: {e}")),
        }
    }
    out
}
