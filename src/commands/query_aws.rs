//! `dqetl --target aws query SQL`: run SQL on Athena over the stack's Delta tables and print the
//! result as an aligned table (or JSON rows with --json).

use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::GlobalArgs;
use crate::target::aws::athena::{Athena, QueryResult};
use crate::target::aws::clients::AwsClients;
use crate::target::aws::stack::Stacks;

pub async fn run(global: &GlobalArgs, sql: &str) -> anyhow::Result<()> {
    let clients = AwsClients::from_environment(global.region.as_deref()).await?;
    let outputs = Stacks::new(&clients, true)
        .outputs(&global.stack_name)
        .await?;
    let athena = Athena {
        clients: &clients,
        workgroup: &outputs.athena_work_group,
        database: &outputs.glue_database,
        poll: Duration::from_millis(500),
        timeout: Duration::from_secs(30 * 60),
    };
    let target = if global.json {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let spinner = ProgressBar::with_draw_target(None, target);
    spinner.set_style(
        ProgressStyle::with_template("{spinner} athena {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    let result = athena
        .run(sql, |state| spinner.set_message(state.to_lowercase()))
        .await;
    spinner.finish_and_clear();
    let result = result.context("running the query on Athena")?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&json_rows(&result))?);
    } else {
        print!("{}", render_table(&result.columns, &result.rows));
        println!(
            "({} row{})",
            result.rows.len(),
            if result.rows.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// Rows as JSON objects keyed by column name (NULL as null).
pub fn json_rows(result: &QueryResult) -> Vec<serde_json::Map<String, serde_json::Value>> {
    result
        .rows
        .iter()
        .map(|row| {
            result
                .columns
                .iter()
                .zip(row.iter().chain(std::iter::repeat(&None)))
                .map(|(c, v)| {
                    (
                        c.clone(),
                        v.clone()
                            .map(serde_json::Value::String)
                            .unwrap_or(serde_json::Value::Null),
                    )
                })
                .collect()
        })
        .collect()
}

/// An aligned text table with a header rule; NULL shows as `NULL`.
pub fn render_table(columns: &[String], rows: &[Vec<Option<String>>]) -> String {
    let cell = |v: &Option<String>| v.clone().unwrap_or_else(|| "NULL".to_string());
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for row in rows {
        for (i, v) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell(v).chars().count());
            }
        }
    }
    let fmt_row = |values: Vec<String>| -> String {
        let cells: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v}{}", " ".repeat(w.saturating_sub(v.chars().count()))))
            .collect();
        format!("{}\n", cells.join(" | ").trim_end())
    };
    let mut out = fmt_row(columns.to_vec());
    out.push_str(&format!(
        "{}\n",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-")
    ));
    for row in rows {
        out.push_str(&fmt_row(
            (0..columns.len())
                .map(|i| row.get(i).map(cell).unwrap_or_default())
                .collect(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_an_aligned_table_with_nulls() {
        let columns = vec!["id".to_string(), "make".to_string()];
        let rows = vec![
            vec![Some("1".into()), Some("Volvo".into())],
            vec![Some("10".into()), None],
        ];
        assert_eq!(
            render_table(&columns, &rows),
            "id | make\n---+------\n1  | Volvo\n10 | NULL\n"
        );
    }

    #[test]
    fn json_rows_are_keyed_by_column() {
        let result = QueryResult {
            query_id: "q".into(),
            columns: vec!["id".into(), "make".into()],
            rows: vec![vec![Some("1".into()), None]],
            bytes_scanned: None,
        };
        let rows = json_rows(&result);
        assert_eq!(
            serde_json::Value::Object(rows[0].clone()),
            serde_json::json!({"id": "1", "make": null})
        );
    }
}
