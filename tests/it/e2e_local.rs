//! The CI smoke stage: the whole local pipeline through the built binary. Deploy, post-deploy
//! with 30 s of generated traffic, wait until capture and the processor caught up, then account
//! for every generated row in the lake: current rows and quarantine rows per table and
//! quarantine rows per rule exactly as the generator's summaries say, SCD2 invariants, a metric
//! row for every configured check. Teardown leaves no process and no folder.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dqetl::config::model::Config;
use dqetl::target::local::catchup::{CatchUp, wait_caught_up};
use dqetl::target::local::console::Silent;
use dqetl::target::local::stack::{consumer_group, slot_name};
use serde_json::Value;

use crate::local_stack::LocalStack;

/// Bounds the wait for capture and the processor after the generator stopped.
const CATCH_UP: Duration = Duration::from_secs(300);

/// A source table of the config: name, topic, key, and its configured metric checks
/// (Deequ's metric name, column).
struct SourceTable {
    name: String,
    topic: String,
    key: String,
    checks: Vec<(String, Option<String>)>,
}

fn source_tables(config: &Config) -> Vec<SourceTable> {
    config
        .tables
        .iter()
        .flatten()
        .filter(|t| !t.internal.unwrap_or(false))
        .map(|t| {
            let name = t.name.clone().expect("table name");
            SourceTable {
                topic: t.topic.clone().unwrap_or_else(|| format!("cdc-{name}")),
                key: t.primary_key.clone().expect("primary key"),
                checks: t
                    .deequ_checks
                    .iter()
                    .flatten()
                    .map(|c| {
                        let metric = c.metric.clone().expect("metric").to_ascii_lowercase();
                        (metric, c.column.clone())
                    })
                    .collect(),
                name,
            }
        })
        .collect()
}

/// What the lake must hold, summed over every generator summary of the stack.
#[derive(Debug, Default)]
struct Expected {
    current: BTreeMap<String, u64>,
    quarantined: BTreeMap<String, u64>,
    versions: BTreeMap<String, (u64, u64)>,
    rule_quarantined: BTreeMap<(String, String), u64>,
    rows_written: u64,
}

fn expected_from_summaries(stack: &LocalStack) -> Expected {
    let mut expected = Expected::default();
    let dir = stack.dir().summaries_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no summaries in {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "a seed and a traffic summary are expected: {files:?}"
    );
    let count = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"));
    for file in files {
        let summary: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("read"))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for t in summary["tables"].as_array().expect("tables") {
            let name = t["table"].as_str().expect("table").to_string();
            *expected.current.entry(name.clone()).or_default() += count(&t["lake"]["current_rows"]);
            *expected.quarantined.entry(name.clone()).or_default() +=
                count(&t["lake"]["quarantined_rows"]);
            let bounds = expected.versions.entry(name).or_default();
            bounds.0 += count(&t["lake"]["versions_min"]);
            bounds.1 += count(&t["lake"]["versions_max"]);
            for op in ["insert", "update", "delete"] {
                expected.rows_written += count(&t["written"][op]);
            }
        }
        for r in summary["rules"].as_array().expect("rules") {
            let key = (
                r["table"].as_str().expect("table").to_string(),
                r["rule"].as_str().expect("rule").to_string(),
            );
            *expected.rule_quarantined.entry(key).or_default() += count(&r["quarantined"]);
        }
    }
    expected
}

fn query(stack: &LocalStack, sql: &str) -> Vec<serde_json::Map<String, Value>> {
    let out = stack.ok(&["query", "--json", sql]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("query --json output ({e}): {out}"))
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn number(row: &serde_json::Map<String, Value>, key: &str) -> u64 {
    row.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no count `{key}` in {row:?}"))
}

fn table_exists(stack: &LocalStack, table: &str) -> bool {
    stack
        .dir()
        .lake_dir()
        .join(table)
        .join("_delta_log")
        .is_dir()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_generated_row_is_accounted_for_in_the_lake() {
    let stack = LocalStack::new("e2e");
    stack.ok(&["deploy"]);
    let post = stack.ok(&[
        "post-deploy",
        "--generate-data",
        "--duration",
        "30s",
        "--rate",
        "40",
        "--seed",
        "20261125",
    ]);
    for step in ["tables", "topics", "capture", "process", "seed", "generate"] {
        assert!(
            post.lines()
                .any(|l| l.starts_with("+ ") && l[2..].starts_with(step)),
            "post-deploy did not do `{step}`:\n{post}"
        );
    }

    assert_lake_accounts_for_every_generated_row(&stack).await;

    let pids: Vec<u32> = service_pids(&stack).into_values().collect();
    assert!(
        pids.len() >= 4,
        "postgres, broker, capture and process run: {pids:?}"
    );
    stack.teardown_leaves_nothing(&pids);
}

/// Waits until capture and the processor caught up with the source, then checks the lake
/// against the sum of every generator summary of the stack: current and quarantine rows per
/// table and quarantine rows per rule exactly, versions within their bounds, the SCD2
/// invariants, and a `dq_metrics` row for every configured check.
pub async fn assert_lake_accounts_for_every_generated_row(stack: &LocalStack) {
    let config: Config = serde_yaml_ng::from_str(
        &std::fs::read_to_string(LocalStack::config()).expect("read config"),
    )
    .expect("parse config");
    let tables = source_tables(&config);

    let state = stack.state();
    let group = consumer_group(
        config
            .kafka
            .as_ref()
            .and_then(|k| k.consumer_group.as_deref()),
        &stack.name,
    );
    let target = CatchUp {
        slot: slot_name(&stack.name),
        group,
        topics: tables.iter().map(|t| t.topic.clone()).collect(),
        timeout: CATCH_UP,
    };
    wait_caught_up(&stack.dir(), &state, &target, &mut Silent)
        .await
        .unwrap_or_else(|e| panic!("the pipeline did not catch up: {e}"));

    let expected = expected_from_summaries(stack);
    assert!(expected.rows_written > 0, "the generator wrote nothing");

    // Current rows, versions and the SCD2 invariants of every data table, in one query.
    let mut parts = Vec::new();
    for t in &tables {
        assert!(
            table_exists(stack, &t.name),
            "data table {} was never created",
            t.name
        );
        let (name, key) = (ident(&t.name), ident(&t.key));
        let label = literal(&t.name);
        parts.push(format!(
            "SELECT {label} AS table_name, 'current' AS measure, count(*) AS n FROM {name} WHERE \"_is_current\""
        ));
        parts.push(format!(
            "SELECT {label} AS table_name, 'versions' AS measure, count(*) AS n FROM {name}"
        ));
        parts.push(format!(
            "SELECT {label} AS table_name, 'keys_with_several_current' AS measure, count(*) AS n \
             FROM (SELECT {key} FROM {name} WHERE \"_is_current\" GROUP BY {key} HAVING count(*) > 1) several"
        ));
        parts.push(format!(
            "SELECT {label} AS table_name, 'overlapping_versions' AS measure, count(*) AS n \
             FROM (SELECT \"_effective_to\" AS valid_to, \
                          lead(\"_effective_from\") OVER (PARTITION BY {key} ORDER BY \"_effective_from\", \"_ingested_at\") AS next_from \
                   FROM {name}) ordered \
             WHERE next_from IS NOT NULL AND (valid_to IS NULL OR valid_to > next_from)"
        ));
        parts.push(format!(
            "SELECT {label} AS table_name, 'closed_current_or_open_history' AS measure, count(*) AS n FROM {name} \
             WHERE (\"_is_current\" AND \"_effective_to\" IS NOT NULL) \
                OR (NOT \"_is_current\" AND (\"_effective_to\" IS NULL OR \"_effective_to\" < \"_effective_from\"))"
        ));
    }
    let measures: BTreeMap<(String, String), u64> = query(stack, &parts.join(" UNION ALL "))
        .iter()
        .map(|row| {
            (
                (
                    row["table_name"].as_str().expect("table").to_string(),
                    row["measure"].as_str().expect("measure").to_string(),
                ),
                number(row, "n"),
            )
        })
        .collect();
    for t in &tables {
        let m = |measure: &str| measures[&(t.name.clone(), measure.to_string())];
        assert_eq!(
            m("current"),
            expected.current.get(&t.name).copied().unwrap_or(0),
            "current rows of {}",
            t.name
        );
        let (min, max) = expected.versions.get(&t.name).copied().unwrap_or((0, 0));
        assert!(
            (min..=max).contains(&m("versions")),
            "{} holds {} versions, expected between {min} and {max}",
            t.name,
            m("versions")
        );
        assert_eq!(
            m("keys_with_several_current"),
            0,
            "{}: one current row per key",
            t.name
        );
        assert_eq!(
            m("overlapping_versions"),
            0,
            "{}: history intervals overlap",
            t.name
        );
        assert_eq!(
            m("closed_current_or_open_history"),
            0,
            "{}: current rows are open, history rows closed after they start",
            t.name
        );
    }

    // Quarantine rows per table and per rule.
    let quarantined: Vec<&SourceTable> = tables
        .iter()
        .filter(|t| table_exists(stack, &format!("{}_quarantine", t.name)))
        .collect();
    let mut actual_rules: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut actual_tables: BTreeMap<String, u64> = BTreeMap::new();
    if !quarantined.is_empty() {
        let totals: Vec<String> = quarantined
            .iter()
            .map(|t| {
                format!(
                    "SELECT {} AS table_name, count(*) AS n FROM {}",
                    literal(&t.name),
                    ident(&format!("{}_quarantine", t.name))
                )
            })
            .collect();
        for row in query(stack, &totals.join(" UNION ALL ")) {
            actual_tables.insert(
                row["table_name"].as_str().expect("t").into(),
                number(&row, "n"),
            );
        }
        let per_rule: Vec<String> = quarantined
            .iter()
            .map(|t| {
                format!(
                    "SELECT {} AS table_name, unnest(\"_failed_rules\") AS rule FROM {}",
                    literal(&t.name),
                    ident(&format!("{}_quarantine", t.name))
                )
            })
            .collect();
        let sql = format!(
            "SELECT table_name, rule, count(*) AS n FROM ({}) failed GROUP BY table_name, rule",
            per_rule.join(" UNION ALL ")
        );
        for row in query(stack, &sql) {
            actual_rules.insert(
                (
                    row["table_name"].as_str().expect("t").into(),
                    row["rule"].as_str().expect("rule").into(),
                ),
                number(&row, "n"),
            );
        }
    }
    for t in &tables {
        assert_eq!(
            actual_tables.get(&t.name).copied().unwrap_or(0),
            expected.quarantined.get(&t.name).copied().unwrap_or(0),
            "quarantine rows of {}",
            t.name
        );
    }
    let rules: BTreeSet<&(String, String)> = expected
        .rule_quarantined
        .keys()
        .chain(actual_rules.keys())
        .collect();
    for rule in rules {
        assert_eq!(
            actual_rules.get(rule).copied().unwrap_or(0),
            expected.rule_quarantined.get(rule).copied().unwrap_or(0),
            "quarantine rows listing rule {} of {}",
            rule.1,
            rule.0
        );
    }
    assert!(
        expected.quarantined.values().sum::<u64>() > 0,
        "the generator wrote no deliberately bad row"
    );

    // A metric row for every configured check.
    assert!(
        table_exists(stack, "dq_metrics"),
        "dq_metrics was never created"
    );
    let metrics: BTreeSet<(String, String, Option<String>)> = query(
        stack,
        "SELECT DISTINCT table_name, metric_name, column_name FROM dq_metrics",
    )
    .iter()
    .map(|row| {
        (
            row["table_name"].as_str().expect("table").to_string(),
            row["metric_name"]
                .as_str()
                .expect("metric")
                .to_ascii_lowercase(),
            row.get("column_name")
                .and_then(Value::as_str)
                .map(str::to_string),
        )
    })
    .collect();
    for t in &tables {
        for (metric, column) in &t.checks {
            assert!(
                metrics.contains(&(t.name.clone(), metric.clone(), column.clone())),
                "no dq_metrics row for {metric}({column:?}) of {}; rows: {metrics:?}",
                t.name
            );
        }
    }
}

/// The pid of every service of the stack that runs now, by service name (`status --json`).
pub fn service_pids(stack: &LocalStack) -> BTreeMap<String, u32> {
    let output = stack.run(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    status["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| {
            let pid = u32::try_from(s["pid"].as_u64()?).ok()?;
            Some((s["name"].as_str()?.to_string(), pid))
        })
        .collect()
}
