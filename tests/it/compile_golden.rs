//! `dqetl compile` of config/tables.yaml, compared byte for byte with tests/golden/.
//!
//! The goldens use a fixed stack name (`golden`) and a fixed lake directory (`/lake`), so they do
//! not depend on the machine. After an intended change, regenerate them with
//! `DQETL_UPDATE_GOLDEN=1 cargo test --test it compile_golden` and review the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

use dqetl::config::compile::{self, to_pretty_json};
use dqetl::config::layout::LakeLayout;
use dqetl::config::spec::ConfigSpec;
use dqetl::config::{LoadContext, load_spec};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_spec() -> ConfigSpec {
    let ctx = LoadContext {
        stack_name: "golden".into(),
        account_id: None,
    };
    load_spec(&root().join("config/tables.yaml"), &ctx).unwrap_or_else(|e| panic!("{e}"))
}

fn golden(name: &str, actual: &str) {
    let path: PathBuf = root().join("tests/golden").join(name);
    if std::env::var_os("DQETL_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("create tests/golden");
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set DQETL_UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs from the compiled output:\n{actual}",
        path.display()
    );
}

#[test]
fn ddl_matches_the_golden_file() {
    golden("create_tables.sql", &compile::ddl(&shipped_spec()));
}

#[test]
fn dms_mappings_match_the_golden_file() {
    golden(
        "dms_table_mappings.json",
        &to_pretty_json(&compile::dms_mappings(&shipped_spec())),
    );
}

#[test]
fn local_catalog_matches_the_golden_file() {
    let spec = shipped_spec();
    let catalog =
        compile::catalog(&spec, &LakeLayout::local(Path::new("/lake"))).expect("every type maps");
    golden("catalog.local.json", &to_pretty_json(&catalog));
}

#[test]
fn compiling_twice_gives_identical_output() {
    let (a, b) = (shipped_spec(), shipped_spec());
    assert_eq!(compile::ddl(&a), compile::ddl(&b));
    assert_eq!(compile::dms_mappings(&a), compile::dms_mappings(&b));
}

#[test]
fn dms_rules_pair_a_selection_with_its_topic_mapping() {
    let rules = compile::dms_mappings(&shipped_spec())["rules"]
        .as_array()
        .cloned()
        .expect("rules");
    assert_eq!(rules.len(), 10, "5 tables → 10 rules");
    let ids: Vec<&str> = rules.iter().filter_map(|r| r["rule-id"].as_str()).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]);
    assert_eq!(rules[4]["rule-name"], "select-vehicle_telemetry");
    assert_eq!(rules[5]["rule-name"], "VehicleTelemetryMapping");
    assert_eq!(rules[5]["kafka-target-topic"], "cdc-vehicle_telemetry");
}

#[test]
fn catalog_lists_data_quarantine_and_metrics_tables_with_athena_types() {
    let spec = shipped_spec();
    let catalog = compile::catalog(&spec, &LakeLayout::local(Path::new("/lake"))).expect("catalog");
    let tables = catalog["tables"].as_array().expect("tables");
    assert_eq!(tables.len(), 11, "5 data + 5 quarantine + dq_metrics");
    let metrics = tables.last().expect("metrics last");
    assert_eq!(
        (metrics["name"].as_str(), metrics["kind"].as_str()),
        (Some("dq_metrics"), Some("metrics"))
    );
    let column = |table: &serde_json::Value, name: &str| {
        table["columns"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name))
            .cloned()
            .expect(name)
    };
    assert_eq!(column(metrics, "batch_id")["athena_type"], "BIGINT");
    assert_eq!(column(metrics, "passed")["athena_type"], "BOOLEAN");
    let quarantine = tables
        .iter()
        .find(|t| t["name"] == "drivers_quarantine")
        .expect("drivers_quarantine");
    assert_eq!(quarantine["location"], "/lake/drivers_quarantine");
    assert_eq!(
        column(quarantine, "_failed_rules")["athena_type"],
        "ARRAY<STRING>"
    );
    let telemetry = tables
        .iter()
        .find(|t| t["name"] == "vehicle_telemetry")
        .expect("telemetry");
    assert_eq!(
        column(telemetry, "_effective_from")["athena_type"],
        "TIMESTAMP"
    );
    assert_eq!(column(telemetry, "latitude")["athena_type"], "DOUBLE");
    assert!(
        tables
            .iter()
            .flat_map(|t| t["columns"].as_array().cloned().unwrap_or_default())
            .all(|c| c["athena_type"].is_string()),
        "every column has an Athena type"
    );
}

#[test]
fn aws_catalog_puts_tables_in_the_stack_buckets() {
    let spec = shipped_spec();
    let catalog = compile::catalog(&spec, &LakeLayout::aws(&spec, "golden", "123456789012"))
        .expect("catalog");
    let location = |name: &str| {
        catalog["tables"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == name))
            .map(|t| t["location"].clone())
    };
    assert_eq!(
        location("vehicles"),
        Some("s3://golden-delta-123456789012/vehicles".into())
    );
    assert_eq!(
        location("vehicles_quarantine"),
        Some("s3://golden-quarantine-123456789012/vehicles_quarantine".into())
    );
    assert_eq!(
        location("dq_metrics"),
        Some("s3://golden-delta-123456789012/dq_metrics".into())
    );
}

#[test]
fn the_compile_command_writes_the_three_files() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_dqetl"))
        .current_dir(out_dir.path())
        .args(["compile", "--stack-name", "golden", "--config"])
        .arg(root().join("config/tables.yaml"))
        .arg("--output")
        .arg(out_dir.path().join("build"))
        .env("RUST_LOG", "off")
        .output()
        .expect("dqetl runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("5 tables → 10 rules"), "{stdout}");
    assert!(
        stdout.contains("5 tables, 0 foreign key(s), 0 index(es)"),
        "{stdout}"
    );
    let build = out_dir.path().join("build");
    let ddl = std::fs::read_to_string(build.join("create_tables.sql")).expect("ddl written");
    assert_eq!(ddl, compile::ddl(&shipped_spec()));
    let catalog: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(build.join("catalog.json")).expect("catalog written"),
    )
    .expect("JSON");
    let location = catalog["tables"][0]["location"]
        .as_str()
        .unwrap_or_default();
    assert!(
        location.starts_with('/'),
        "local locations are absolute: {location}"
    );
    assert!(
        location.ends_with("/.dqetl/golden/lake/vehicles"),
        "under the working directory: {location}"
    );
    assert!(build.join("dms_table_mappings.json").is_file());
}

#[test]
fn compile_refuses_an_invalid_config_with_exit_code_2() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_dqetl"))
        .args(["compile", "--config"])
        .arg(root().join("tests/fixtures/config/five_errors.yaml"))
        .arg("--output")
        .arg(out_dir.path())
        .env("RUST_LOG", "off")
        .output()
        .expect("dqetl runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("(5 errors)"), "{stderr}");
    assert!(
        !out_dir.path().join("create_tables.sql").exists(),
        "nothing is written"
    );
}
