//! `dqetl validate`: each broken config in tests/fixtures/config/ produces its specific error at
//! its exact line and key path; the shipped configs validate; exit codes and `--json` via the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use dqetl::config::{Diagnostic, LoadContext, LoadError, ValidationReport, load, validate};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(format!("{name}.yaml"))
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn ctx() -> LoadContext {
    LoadContext {
        stack_name: "it".into(),
        account_id: None,
    }
}

fn report_of(path: &Path) -> ValidationReport {
    let loaded =
        load(path, &ctx()).unwrap_or_else(|e| panic!("{} should load: {e}", path.display()));
    validate(&loaded)
}

fn listing(ds: &[Diagnostic]) -> String {
    ds.iter().map(|d| format!("\n  {d}")).collect()
}

/// The fixture holds one problem: exactly one error, at `line`, on `path`, containing `message`.
fn assert_single_error(name: &str, line: usize, path: &str, message: &str) {
    let report = report_of(&fixture(name));
    assert_eq!(
        report.errors.len(),
        1,
        "{name}: expected exactly one error, got:{}",
        listing(&report.errors)
    );
    let e = &report.errors[0];
    assert_eq!(e.path, path, "{name}: {e}");
    assert_eq!(e.line, line, "{name}: {e}");
    assert!(
        e.message.contains(message),
        "{name}: expected {message:?} in {e}"
    );
    assert!(e.file.ends_with(&format!("{name}.yaml")), "{name}: {e}");
    assert!(
        report.spec.is_none(),
        "{name}: an invalid config has no spec"
    );
}

macro_rules! broken_configs {
    ($($test:ident: $file:literal => line $line:literal, $path:literal, $message:literal;)*) => {
        $(
            #[test]
            fn $test() {
                assert_single_error($file, $line, $path, $message);
            }
        )*
    };
}

broken_configs! {
    range_min_must_be_a_number: "range_min_not_number" => line 11, "tables[0].dq_rules[0].params.min", "expected a number, found \"abc\"";
    range_min_must_not_exceed_max: "range_min_above_max" => line 11, "tables[0].dq_rules[0].params.min", "min (10) is greater than max (1)";
    range_needs_a_numeric_column: "range_on_string_column" => line 11, "tables[0].dq_rules[0].column", "a range rule needs a numeric column";
    length_bounds_are_non_negative_integers: "length_negative" => line 11, "tables[0].dq_rules[0].params.min", "expected a non-negative integer, found -1";
    allowed_values_must_not_be_empty: "allowed_values_empty" => line 11, "tables[0].dq_rules[0].params.values", "`values` is empty";
    regex_pattern_must_compile: "regex_invalid" => line 11, "tables[0].dq_rules[0].params.pattern", "invalid regular expression \"^(abc\"";
    severity_is_case_sensitive: "severity_uppercase" => line 11, "tables[0].dq_rules[0].severity", "severity must be `error` or `warning`, found \"ERROR\"";
    unknown_rule_types_are_errors: "unknown_rule_type" => line 11, "tables[0].dq_rules[0].type", "Unknown DQ rule type: between";
    rule_columns_must_exist: "rule_column_missing" => line 11, "tables[0].dq_rules[0].column", "column 'amout' not in schema of table 'orders'";
    rule_ids_are_unique: "duplicate_rule_id" => line 12, "tables[0].dq_rules[1].id", "Duplicate rule ID: r1";
    cast_reads_target_type_not_to_type: "cast_to_type" => line 12, "tables[0].transforms[0].params.to_type", "a cast transform needs `target_type`";
    cast_target_type_must_be_known: "cast_unknown_type" => line 12, "tables[0].transforms[0].params.target_type", "invalid target_type: unknown type 'money'";
    mask_pii_needs_a_string_column: "mask_pii_number" => line 12, "tables[0].transforms[0].column", "`mask_pii` needs a string column";
    round_decimals_are_non_negative: "round_negative" => line 12, "tables[0].transforms[0].params.decimals", "expected a non-negative integer, found -1";
    rename_needs_an_identifier: "rename_invalid_name" => line 12, "tables[0].transforms[0].params.new_name", "invalid column name \"order-status\"";
    default_value_needs_a_value: "default_value_missing" => line 12, "tables[0].transforms[0].params.value", "needs `value`";
    unknown_transform_types_are_errors: "unknown_transform" => line 12, "tables[0].transforms[0].type", "Unknown transform type: capitalize";
    unknown_metrics_are_errors: "unknown_metric" => line 13, "tables[0].deequ_checks[0].metric", "Unknown Deequ metric: completness";
    fraction_thresholds_lie_between_0_and_1: "threshold_above_one" => line 13, "tables[0].deequ_checks[0].threshold", "between 0 and 1, found 1.5";
    compliance_needs_a_pattern_or_expression: "compliance_without_predicate" => line 13, "tables[0].deequ_checks[0]", "needs `pattern`";
    check_columns_must_exist: "check_column_missing" => line 13, "tables[0].deequ_checks[0].column", "column 'ident' not in schema";
    schema_types_are_a_known_set: "invalid_type" => line 9, "tables[0].schema[3].type", "Invalid schema type 'uuid' for column 'email'";
    decimal_precision_is_at_most_38: "decimal_precision" => line 7, "tables[0].schema[1].type", "precision must be between 1 and 38, found 40";
    columns_need_a_type: "missing_type" => line 9, "tables[0].schema[3].type", "Column 'email' is missing a type";
    column_names_are_unique: "duplicate_column" => line 9, "tables[0].schema[3].name", "Duplicate column name: status";
    source_tables_need_a_primary_key: "primary_key_missing" => line 3, "tables[0].primary_key", "Primary key is required for non-internal tables";
    primary_key_must_be_in_the_schema: "primary_key_not_in_schema" => line 4, "tables[0].primary_key", "Primary key 'order_id' not found in schema";
    table_names_are_identifiers: "table_name_invalid" => line 3, "tables[0].name", "invalid table name \"order-items\"";
    topics_are_unique_including_defaults: "duplicate_topic" => line 14, "tables[1].topic", "Duplicate topic: cdc-orders";
    table_names_are_unique: "duplicate_table" => line 13, "tables[1].name", "Duplicate table name: orders";
    trigger_interval_must_parse: "trigger_interval_invalid" => line 3, "settings.trigger_interval", "invalid trigger_interval \"soon\"";
    unset_environment_placeholders_are_errors: "env_placeholder_unset" => line 3, "settings.quarantine_path", "`DQETL_TEST_SURELY_UNSET` is not set";
    foreign_key_targets_must_exist: "fk_target_missing" => line 14, "tables[0].foreign_keys[0].references.table", "foreign key target table 'customer'";
    foreign_key_target_columns_must_exist: "fk_target_column_missing" => line 14, "tables[0].foreign_keys[0].references.column", "column 'uid' not in schema of table 'customers'";
    foreign_key_targets_must_be_unique: "fk_target_not_unique" => line 14, "tables[0].foreign_keys[0].references.column", "neither the primary key nor unique";
    index_columns_must_exist: "index_column_missing" => line 14, "tables[0].indexes[0].columns[1]", "column 'created_at' not in schema";
    hard_deletes_is_close_or_tombstone: "hard_deletes_invalid" => line 13, "tables[0].scd2.hard_deletes", "hard_deletes must be `close` or `tombstone`, found \"purge\"";
    sequence_by_must_be_a_column: "sequence_by_missing" => line 13, "tables[0].scd2.sequence_by", "column 'version' not in schema";
    anomaly_strategies_are_known: "anomaly_strategy_unknown" => line 15, "tables[0].anomaly_checks[0].strategy", "unknown anomaly strategy \"zscore\"";
    lake_columns_are_reserved: "reserved_column" => line 9, "tables[0].schema[3].name", "column name `_operation` is reserved";
    the_tables_section_is_required: "missing_tables" => line 2, "tables", "Missing required 'tables' section";
    foreign_keys_must_not_form_a_cycle: "fk_cycle" => line 9, "tables[0].foreign_keys[0]", "foreign keys form a cycle among a, b";
}

#[test]
fn hints_point_at_the_likely_fix() {
    let hint_of = |name: &str| {
        report_of(&fixture(name)).errors[0]
            .hint
            .clone()
            .unwrap_or_default()
    };
    assert!(hint_of("rule_column_missing").contains("did you mean `amount`?"));
    assert!(hint_of("unknown_metric").contains("did you mean `completeness`?"));
    assert!(hint_of("severity_uppercase").contains("case-sensitive: write `error`"));
    assert!(hint_of("cast_to_type").contains("did you mean `target_type`?"));
}

#[test]
fn every_error_in_a_file_is_reported_not_just_the_first() {
    let report = report_of(&fixture("five_errors"));
    let found: Vec<(usize, &str)> = report
        .errors
        .iter()
        .map(|e| (e.line, e.path.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            (3, "settings.trigger_interval"),
            (6, "tables[0].primary_key"),
            (9, "tables[0].schema[1].type"),
            (11, "tables[0].dq_rules[0].params.min"),
            (12, "tables[0].dq_rules[1].column"),
        ],
        "{}",
        listing(&report.errors)
    );
}

#[test]
fn a_valid_config_has_no_errors_no_warnings_and_a_spec() {
    let report = report_of(&fixture("valid_minimal"));
    assert!(report.errors.is_empty(), "{}", listing(&report.errors));
    assert!(report.warnings.is_empty(), "{}", listing(&report.warnings));
    let spec = report.spec.expect("valid config has a spec");
    let orders = spec.table("orders").expect("orders");
    assert_eq!(orders.topic, "cdc-orders", "topic defaults to cdc-<name>");
    assert_eq!(
        spec.settings.trigger_interval,
        std::time::Duration::from_secs(15)
    );
}

#[test]
fn unknown_keys_are_warnings_with_a_suggestion() {
    let report = report_of(&fixture("unknown_keys"));
    assert!(report.errors.is_empty(), "{}", listing(&report.errors));
    let unknown: Vec<(&str, Option<&str>)> = report
        .warnings
        .iter()
        .filter(|w| w.message.starts_with("unknown key"))
        .map(|w| (w.path.as_str(), w.hint.as_deref()))
        .collect();
    assert_eq!(
        unknown,
        vec![
            ("tables[0].partition_by", None),
            ("tables[0].dq_rule", Some("did you mean `dq_rules`?"))
        ]
    );
    let misspelt = report
        .warnings
        .iter()
        .find(|w| w.path == "tables[0].dq_rule")
        .expect("warned");
    assert_eq!(
        (misspelt.line, misspelt.column),
        (11, 5),
        "the warning points at the key"
    );
    // With `dq_rules` misspelt the table has no rules: the original's warning follows.
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.message == "No DQ rules defined for this table")
    );
}

#[test]
fn syntax_errors_are_load_errors_with_a_line() {
    let err = load(&fixture("syntax_error"), &ctx()).expect_err("not YAML");
    let LoadError::Syntax(d) = &err else {
        panic!("expected a syntax error: {err:?}")
    };
    assert!(d.message.starts_with("invalid YAML"), "{d}");
    assert!(d.line >= 3, "{d}");
}

#[test]
fn structural_errors_name_the_key_and_line() {
    assert_single_error(
        "structure_error",
        7,
        "tables[0].schema[1].nullable",
        "expected a boolean",
    );
}

#[test]
fn structural_errors_do_not_hide_the_other_errors() {
    let report = report_of(&fixture("structure_errors_with_others"));
    let found: Vec<(usize, &str)> = report
        .errors
        .iter()
        .map(|e| (e.line, e.path.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (7, "tables[0].schema[1].nullable"),
            (10, "tables[0].dq_rules[0].column"),
            (11, "tables[0].transforms")
        ],
        "{}",
        listing(&report.errors)
    );
    assert!(
        report.errors[2].message.contains("expected a sequence"),
        "{}",
        report.errors[2]
    );
    // `transforms` was set aside, so its absence does not add a "No transforms" warning.
    assert!(report.warnings.is_empty(), "{}", listing(&report.warnings));
}

/// The original's 10 warnings minus the 3 it gave the internal table, plus the two declared
/// dq_metrics types that differ from what is written.
#[test]
fn the_original_vehicle_config_validates_with_the_expected_warnings() {
    let report = report_of(&repo_file(
        "config/examples/vehicle-telemetry-original.yaml",
    ));
    assert!(report.errors.is_empty(), "{}", listing(&report.errors));
    let warnings: Vec<(&str, &str)> = report
        .warnings
        .iter()
        .map(|w| (w.path.as_str(), w.message.as_str()))
        .collect();
    assert_eq!(
        warnings,
        vec![
            ("tables[0].dq_rules", "No DQ rules defined for this table"),
            (
                "tables[0].transforms",
                "No transforms defined for this table"
            ),
            (
                "tables[0].deequ_checks",
                "No Deequ checks defined for this table"
            ),
            (
                "tables[1].deequ_checks",
                "No Deequ checks defined for this table"
            ),
            (
                "tables[3].deequ_checks",
                "No Deequ checks defined for this table"
            ),
            (
                "tables[4].transforms",
                "No transforms defined for this table"
            ),
            (
                "tables[4].deequ_checks",
                "No Deequ checks defined for this table"
            ),
            (
                "tables[5].schema[1].type",
                "`dq_metrics.batch_id` is declared integer but dqetl writes it as long (the declaration is ignored)"
            ),
            (
                "tables[5].schema[6].type",
                "`dq_metrics.passed` is declared string but dqetl writes it as boolean (the declaration is ignored)"
            ),
        ],
        "{}",
        listing(&report.warnings)
    );
    let spec = report.spec.expect("valid");
    assert_eq!(spec.source_tables().count(), 5);
    let vehicles = spec.table("vehicles").expect("vehicles");
    assert_eq!(
        vehicles.delta_path.as_deref(),
        Some("s3://it-delta-local/vehicles/"),
        "placeholders resolved"
    );
    let telemetry = spec.table("vehicle_telemetry").expect("telemetry");
    let size = telemetry
        .checks
        .iter()
        .find(|c| c.metric_name() == "Size")
        .expect("size check");
    assert_eq!(
        size.threshold,
        Some(1.0),
        "an int threshold is accepted for size"
    );
    assert!(
        spec.kafka.bootstrap_servers.is_none(),
        "PLACEHOLDER_BOOTSTRAP_SERVERS is left to the target"
    );
}

#[test]
fn the_shipped_config_validates_and_is_target_neutral() {
    let report = report_of(&repo_file("config/tables.yaml"));
    assert!(report.errors.is_empty(), "{}", listing(&report.errors));
    assert_eq!(
        report.warnings.len(),
        7,
        "only the original's 'No … defined' warnings:{}",
        listing(&report.warnings)
    );
    assert!(
        report.warnings.iter().all(|w| w.message.starts_with("No ")),
        "{}",
        listing(&report.warnings)
    );
    let spec = report.spec.expect("valid");
    assert!(
        spec.tables.iter().all(|t| t.delta_path.is_none()),
        "locations come from the target"
    );
    assert!(spec.settings.delta_bucket.is_none() && spec.settings.quarantine_path.is_none());
    let drivers = spec.table("drivers").expect("drivers");
    let orders: Vec<i64> = drivers.transforms.iter().map(|t| t.order).collect();
    assert_eq!(orders, vec![1, 2]);
}

// ---- the binary: exit codes and output ----

fn dqetl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dqetl"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("dqetl runs")
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn validate_exits_0_for_a_valid_config_and_prints_the_summary() {
    let out = dqetl(&[
        "validate",
        "--config",
        &path_arg(&repo_file("config/tables.yaml")),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("Warnings (7):"), "{stdout}");
    assert!(
        stdout
            .trim_end()
            .ends_with("Validation passed (0 errors, 7 warnings)"),
        "{stdout}"
    );
}

#[test]
fn validate_exits_1_on_errors_and_lists_each_with_its_position() {
    let file = fixture("five_errors");
    let out = dqetl(&["validate", "--config", &path_arg(&file)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("{}:11:", file.display())),
        "{stdout}"
    );
    assert!(
        stdout
            .trim_end()
            .ends_with("Validation failed (5 errors, 0 warnings)"),
        "{stdout}"
    );
}

#[test]
fn validate_exits_1_on_a_syntax_error() {
    let out = dqetl(&["validate", "--config", &path_arg(&fixture("syntax_error"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("invalid YAML"));
}

#[test]
fn validate_exits_2_when_the_file_cannot_be_read() {
    let out = dqetl(&["validate", "--config", "/nonexistent/dqetl/tables.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read config file /nonexistent/dqetl/tables.yaml")
    );
}

#[test]
fn validate_json_lists_errors_with_positions() {
    let out = dqetl(&[
        "validate",
        "--json",
        "--config",
        &path_arg(&fixture("range_min_not_number")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["valid"], false);
    let error = &json["errors"][0];
    assert_eq!(error["line"], 11);
    assert_eq!(error["path"], "tables[0].dq_rules[0].params.min");
    assert!(error["column"].as_u64().is_some_and(|c| c > 1));
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("expected a number"))
    );
    assert!(error.get("hint").is_some());
    assert_eq!(json["warnings"].as_array().map(Vec::len), Some(0));
}

#[test]
fn config_schema_prints_a_json_schema_of_the_model() {
    let out = dqetl(&["config", "schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(schema["title"], "Config");
    assert!(schema["properties"]["tables"].is_object());
    let table = &schema["$defs"]["TableConfig"]["properties"];
    for key in [
        "name",
        "topic",
        "primary_key",
        "schema",
        "dq_rules",
        "transforms",
        "deequ_checks",
        "scd2",
        "anomaly_checks",
    ] {
        assert!(table.get(key).is_some(), "TableConfig has {key}");
    }
}
