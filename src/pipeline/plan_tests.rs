//! Scenario tests of `plan`: given these CDC events, the plan holds these changes, quarantine
//! rows, metrics and counts.

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{AsArray, RecordBatch};
use deltalake::arrow::datatypes::TimestampMicrosecondType;
use serde_json::{Value, json};

use super::anomaly::SCOPE_ANOMALY;
use super::metrics::{RULE_FAILURE_RATE, SCOPE_BATCH, SCOPE_CUMULATIVE, TableMetricState};
use super::plan::{BatchPlan, DecodedBatch, MetricRow};
use super::testing::*;
use crate::config::spec::{
    AnomalyCheckSpec, AnomalyStrategy, ColumnType, CompliancePredicate, MetricKind, RuleKind,
    Severity, TableSpec, TransformKind,
};

fn now() -> DateTime<Utc> {
    ts(3600)
}

fn plan_decoded(
    table: &TableSpec,
    decoded: &DecodedBatch,
    state: &mut TableMetricState,
) -> BatchPlan {
    let plan =
        super::plan(table, decoded, state, now()).unwrap_or_else(|e| panic!("plan failed: {e}"));
    state.merge(plan.metric_state.clone());
    plan
}

fn run(table: &TableSpec, payloads: &[Vec<u8>]) -> BatchPlan {
    plan_decoded(
        table,
        &decode_payloads(table, payloads),
        &mut TableMetricState::default(),
    )
}

/// The plan's changes as a batch of their own.
fn changes(plan: &BatchPlan) -> RecordBatch {
    plan.changes
        .to_batch()
        .unwrap_or_else(|e| panic!("picking the changes: {e}"))
}

fn telemetry(id: i32, latitude: Value, speed: Value, vehicle_id: Value) -> Value {
    json!({"id": id, "vehicle_id": vehicle_id, "recorded_at": "2026-11-25 14:00:00", "latitude": latitude,
           "longitude": -74.0059, "speed_kmh": speed, "fuel_level_pct": 50.0, "engine_status": "running"})
}

fn good(id: i32) -> Value {
    telemetry(id, json!(40.7127753), json!(42.0), json!(7))
}

fn assert_accounted(plan: &BatchPlan) {
    let s = &plan.stats;
    assert_eq!(
        s.events,
        s.loaded + s.deletes + s.quarantined + s.control_records,
        "every event accounted for: {s:?}"
    );
}

fn metric<'m>(plan: &'m BatchPlan, scope: &str, name: &str, column: Option<&str>) -> &'m MetricRow {
    plan.metrics
        .iter()
        .find(|m| m.scope == scope && m.metric_name == name && m.column_name.as_deref() == column)
        .unwrap_or_else(|| panic!("no {scope} {name}({column:?}) in {:#?}", plan.metrics))
}

#[test]
fn valid_rows_are_loaded_with_transforms_applied() {
    let table = telemetry_table();
    let plan = run(&table, &[dms(&table, "insert", good(1), 0)]);
    assert_eq!(plan.quarantine.num_rows(), 0);
    assert_eq!(ints(&changes(&plan), "id"), [Some(1)]);
    assert_eq!(doubles(&changes(&plan), "latitude"), [Some(40.71278)]);
    assert_eq!(doubles(&changes(&plan), "longitude"), [Some(-74.0059)]);
    assert_eq!(
        strings(&changes(&plan), "_operation"),
        [Some("INSERT".into())]
    );
    assert_eq!(
        plan.changes.batch.schema(),
        super::schema::changes_schema(&table)
    );
    assert_eq!(plan.stats.loaded, 1);
    assert_accounted(&plan);
}

#[test]
fn a_quarantined_row_lists_every_rule_it_failed_with_reasons() {
    let table = telemetry_table();
    let plan = run(
        &table,
        &[dms(
            &table,
            "insert",
            telemetry(1, json!(123.4), json!(400), Value::Null),
            0,
        )],
    );
    assert_eq!(plan.changes.len(), 0);
    let q = &plan.quarantine;
    assert_eq!(q.num_rows(), 1);
    assert_eq!(failed_rules(q), [vec!["tel_001", "tel_003", "tel_005"]]);
    assert_eq!(
        strings(q, "_dq_reason"),
        [Some(
            "tel_001 range: latitude=123.4 not in [-90, 90]; tel_003 range: speed_kmh=400 not in [0, 350]; \
             tel_005 not_null: vehicle_id is null"
                .into()
        )]
    );
    assert_eq!(
        doubles(q, "latitude"),
        [Some(123.4)],
        "quarantine keeps the raw (untransformed) value"
    );
    assert_eq!(strings(q, "_operation"), [Some("INSERT".into())]);
    assert_eq!(strings(q, "_raw"), [None]);
    assert_eq!(strings(q, "_topic"), [Some("cdc-vehicle_telemetry".into())]);
    assert_eq!(longs(q, "_offset"), [Some(0)]);
    let at = col(q, "_quarantined_at").as_primitive::<TimestampMicrosecondType>();
    assert_eq!(at.value(0), now().timestamp_micros());
    assert_eq!(q.schema(), super::schema::quarantine_schema(&table));
    assert_eq!(plan.stats.rule_failures.get("tel_001"), Some(&1));
    assert_accounted(&plan);
}

#[test]
fn warning_rules_load_the_row_and_count_the_failure() {
    let mut table = telemetry_table();
    table.rules[2].severity = Severity::Warning; // tel_003 speed range
    let plan = run(
        &table,
        &[
            dms(
                &table,
                "insert",
                telemetry(1, json!(10.0), json!(400), json!(7)),
                0,
            ),
            dms(
                &table,
                "insert",
                telemetry(2, json!(95.0), json!(400), json!(7)),
                1,
            ),
        ],
    );
    assert_eq!(
        ints(&changes(&plan), "id"),
        [Some(1)],
        "the warning-only row is loaded"
    );
    assert_eq!(
        failed_rules(&plan.quarantine),
        [vec!["tel_001", "tel_003"]],
        "a quarantined row also lists its warnings"
    );
    assert_eq!(plan.stats.rule_failures.get("tel_003"), Some(&2));
    assert_eq!(plan.stats.rule_failures.get("tel_001"), Some(&1));
    assert_eq!((plan.stats.loaded, plan.stats.quarantined), (1, 1));
    assert_accounted(&plan);
}

#[test]
fn null_handling_follows_allow_null() {
    let mut table = telemetry_table();
    table.rules.push(rule(
        "st_001",
        "engine_status",
        RuleKind::AllowedValues {
            values: vec!["running".into()],
        },
        Severity::Error,
    ));
    let row = |id: i32| {
        let mut r = good(id);
        r["engine_status"] = Value::Null;
        r
    };
    let plan = run(&table, &[dms(&table, "insert", row(1), 0)]);
    assert_eq!(failed_rules(&plan.quarantine), [vec!["st_001"]]);
    assert_eq!(
        strings(&plan.quarantine, "_dq_reason"),
        [Some("st_001 allowed_values: engine_status is null".into())]
    );

    if let Some(r) = table.rules.last_mut() {
        r.allow_null = true;
    }
    let plan = run(&table, &[dms(&table, "insert", row(1), 0)]);
    assert_eq!(plan.quarantine.num_rows(), 0);
    assert_eq!(ints(&changes(&plan), "id"), [Some(1)]);
}

fn drivers_table() -> TableSpec {
    let mut t = table(
        "drivers",
        &[
            ("id", ColumnType::Int),
            ("employee_id", ColumnType::String),
            ("name", ColumnType::String),
            ("license_number", ColumnType::String),
            ("phone", ColumnType::String),
        ],
    );
    t.transforms = vec![
        transform(
            "drv_tx_001",
            "phone",
            TransformKind::MaskPii { visible_chars: 4 },
            1,
        ),
        transform(
            "drv_tx_002",
            "license_number",
            TransformKind::MaskPii { visible_chars: 4 },
            2,
        ),
    ];
    t.rules = vec![
        rule(
            "drv_001",
            "employee_id",
            regex("^DRV\\d{5}$"),
            Severity::Error,
        ),
        rule("drv_002", "name", RuleKind::NotNull, Severity::Error),
    ];
    t
}

fn driver(id: i32, employee_id: &str) -> Value {
    json!({"id": id, "employee_id": employee_id, "name": "Ann Lee", "license_number": "D1234567", "phone": "+15551234567"})
}

#[test]
fn pii_is_masked_in_the_lake_and_in_quarantine_unless_the_table_opts_out() {
    let mut table = drivers_table();
    let payloads = [
        dms(&table, "insert", driver(1, "DRV00001"), 0),
        dms(&table, "insert", driver(2, "BAD"), 1),
    ];
    let plan = run(&table, &payloads);
    assert_eq!(strings(&changes(&plan), "phone"), [Some("+155****".into())]);
    assert_eq!(
        strings(&changes(&plan), "license_number"),
        [Some("D123****".into())]
    );
    assert_eq!(
        strings(&plan.quarantine, "phone"),
        [Some("+155****".into())]
    );
    assert_eq!(
        strings(&plan.quarantine, "license_number"),
        [Some("D123****".into())]
    );
    assert_eq!(
        strings(&plan.quarantine, "name"),
        [Some("Ann Lee".into())],
        "non-PII columns stay as they came"
    );
    assert_eq!(
        strings(&plan.quarantine, "_dq_reason"),
        [Some(
            "drv_001 regex: employee_id=\"BAD\" does not match ^DRV\\d{5}$".into()
        )]
    );

    table.mask_pii_in_quarantine = false;
    let plan = run(&table, &payloads);
    assert_eq!(
        strings(&plan.quarantine, "phone"),
        [Some("+15551234567".into())]
    );
    assert_eq!(
        strings(&changes(&plan), "phone"),
        [Some("+155****".into())],
        "the lake is always masked"
    );
}

#[test]
fn the_first_batch_keeps_inserts_loads_updates_and_deletes() {
    let table = telemetry_table();
    let plan = run(
        &table,
        &[
            dms(&table, "load", good(1), 0),
            dms(&table, "insert", good(2), 1),
            dms(&table, "update", good(3), 2),
            dms(&table, "delete", json!({"id": 4}), 3),
        ],
    );
    assert_eq!(
        ints(&changes(&plan), "id"),
        [Some(1), Some(2), Some(3), Some(4)]
    );
    assert_eq!(
        strings(&changes(&plan), "_operation"),
        [
            Some("INSERT".into()),
            Some("INSERT".into()),
            Some("UPDATE".into()),
            Some("DELETE".into())
        ]
    );
    assert_eq!((plan.stats.loaded, plan.stats.deletes), (3, 1));
    assert_accounted(&plan);
}

#[test]
fn of_two_updates_of_one_key_the_later_offset_wins() {
    let table = telemetry_table();
    // Arrival order in the batch differs from Kafka order: offset 8 is the later event.
    let decoded = decode_at(
        &table,
        &[
            (
                0,
                8,
                dms(
                    &table,
                    "update",
                    telemetry(1, json!(10.0), json!(80.0), json!(7)),
                    20,
                ),
            ),
            (
                0,
                5,
                dms(
                    &table,
                    "update",
                    telemetry(1, json!(10.0), json!(30.0), json!(7)),
                    10,
                ),
            ),
        ],
    );
    let plan = plan_decoded(&table, &decoded, &mut TableMetricState::default());
    assert_eq!(doubles(&changes(&plan), "speed_kmh"), [Some(80.0)]);
    let changes = changes(&plan);
    let effective = col(&changes, "_effective_from").as_primitive::<TimestampMicrosecondType>();
    assert_eq!(
        effective.value(0),
        ts(20).timestamp_micros(),
        "_effective_from is the source commit time"
    );
}

#[test]
fn track_intermediate_keeps_every_version() {
    let mut table = telemetry_table();
    table.scd2.track_intermediate = true;
    let plan = run(
        &table,
        &[
            dms(
                &table,
                "insert",
                telemetry(1, json!(1.0), json!(10.0), json!(7)),
                0,
            ),
            dms(
                &table,
                "update",
                telemetry(1, json!(2.0), json!(20.0), json!(7)),
                1,
            ),
        ],
    );
    assert_eq!(
        doubles(&changes(&plan), "speed_kmh"),
        [Some(10.0), Some(20.0)]
    );
    assert_eq!(
        strings(&changes(&plan), "_operation"),
        [Some("INSERT".into()), Some("UPDATE".into())]
    );
}

#[test]
fn insert_then_update_of_a_new_key_is_one_change_with_the_update() {
    let table = telemetry_table();
    let plan = run(
        &table,
        &[
            dms(
                &table,
                "insert",
                telemetry(5, json!(1.0), json!(10.0), json!(7)),
                0,
            ),
            dms(
                &table,
                "update",
                telemetry(5, json!(1.0), json!(12.5), json!(7)),
                30,
            ),
        ],
    );
    assert_eq!(ints(&changes(&plan), "id"), [Some(5)]);
    assert_eq!(doubles(&changes(&plan), "speed_kmh"), [Some(12.5)]);
    assert_eq!(
        strings(&changes(&plan), "_operation"),
        [Some("UPDATE".into())]
    );
    assert_eq!(
        plan.stats.loaded, 2,
        "both events passed; the plan keeps the last"
    );
}

#[test]
fn a_key_only_delete_bypasses_rules_and_closes_the_key() {
    let table = telemetry_table();
    let plan = run(
        &table,
        &[
            dms(&table, "insert", good(3), 0),
            dms(&table, "delete", json!({"id": 3}), 1),
        ],
    );
    assert_eq!(
        plan.quarantine.num_rows(),
        0,
        "tel_005 (not_null vehicle_id) does not judge deletes"
    );
    assert_eq!(ints(&changes(&plan), "id"), [Some(3)]);
    assert_eq!(
        strings(&changes(&plan), "_operation"),
        [Some("DELETE".into())]
    );
    assert_eq!(ints(&changes(&plan), "vehicle_id"), [None]);
    assert_eq!(plan.stats.deletes, 1);
    assert!(plan.stats.rule_failures.is_empty());
}

#[test]
fn quarantined_events_take_no_part_in_scd2() {
    let table = telemetry_table();
    let plan = run(
        &table,
        &[
            dms(
                &table,
                "insert",
                telemetry(1, json!(10.0), json!(1.0), json!(7)),
                0,
            ),
            dms(
                &table,
                "update",
                telemetry(1, json!(999.0), json!(1.0), json!(7)),
                1,
            ),
            dms(
                &table,
                "insert",
                telemetry(2, json!(999.0), json!(1.0), json!(7)),
                2,
            ),
        ],
    );
    assert_eq!(
        ints(&changes(&plan), "id"),
        [Some(1)],
        "key 2's only event was quarantined: no change"
    );
    assert_eq!(
        doubles(&changes(&plan), "latitude"),
        [Some(10.0)],
        "key 1 keeps its last good event"
    );
    assert_eq!(ints(&plan.quarantine, "id"), [Some(1), Some(2)]);
    assert_accounted(&plan);
}

#[test]
fn malformed_messages_become_quarantine_rows_with_their_raw_payload() {
    let table = telemetry_table();
    let mut bad_type = good(2);
    bad_type["speed_kmh"] = json!("abc");
    let plan = run(
        &table,
        &[
            dms(&table, "insert", good(1), 0),
            b"oops".to_vec(),
            dms(&table, "update", bad_type, 2),
        ],
    );
    let q = &plan.quarantine;
    assert_eq!(q.num_rows(), 2);
    assert_eq!(failed_rules(q), [vec!["malformed"], vec!["malformed"]]);
    assert_eq!(
        strings(q, "_dq_reason"),
        [
            Some("malformed: not JSON: expected value at line 1 column 1".into()),
            Some("malformed: column 'speed_kmh': expected double, found \"abc\"".into())
        ]
    );
    assert_eq!(strings(q, "_raw")[0].as_deref(), Some("oops"));
    assert_eq!(strings(q, "_operation"), [None, Some("UPDATE".into())]);
    assert_eq!(
        ints(q, "id"),
        [None, None],
        "malformed rows have no columns"
    );
    assert_eq!(longs(q, "_offset"), [Some(1), Some(2)]);
    assert_eq!(
        (
            plan.stats.malformed,
            plan.stats.quarantined,
            plan.stats.loaded
        ),
        (2, 2, 1)
    );
    assert_accounted(&plan);
}

#[test]
fn a_value_a_cast_cannot_convert_quarantines_its_row() {
    let mut table = table(
        "codes",
        &[("id", ColumnType::Int), ("code", ColumnType::String)],
    );
    table.transforms.push(transform(
        "cast_1",
        "code",
        TransformKind::Cast {
            target_type: ColumnType::Int,
        },
        1,
    ));
    let plan = run(
        &table,
        &[
            dms(&table, "insert", json!({"id": 1, "code": "17"}), 0),
            dms(&table, "insert", json!({"id": 2, "code": "x7"}), 1),
        ],
    );
    assert_eq!(ints(&changes(&plan), "code"), [Some(17)]);
    assert_eq!(failed_rules(&plan.quarantine), [vec!["cast_1"]]);
    assert_eq!(
        strings(&plan.quarantine, "_dq_reason"),
        [Some(
            "cast_1 cast: code=\"x7\" cannot be cast to integer".into()
        )]
    );
    assert_accounted(&plan);
}

#[test]
fn control_records_and_empty_batches_plan_nothing() {
    let table = telemetry_table();
    let control = json!({"metadata": {"timestamp": "2026-11-25T14:01:32Z", "record-type": "control", "operation": "create-table"}});
    let mut state = TableMetricState::default();
    let plan = plan_decoded(
        &table,
        &decode_payloads(&table, &[control.to_string().into_bytes()]),
        &mut state,
    );
    assert_eq!((plan.changes.len(), plan.quarantine.num_rows()), (0, 0));
    assert!(plan.metrics.is_empty(), "no data event, no metrics");
    assert_eq!(state, TableMetricState::default());
    assert_eq!(plan.stats.control_records, 1);
    assert_accounted(&plan);
}

fn metrics_table() -> TableSpec {
    let mut t = table(
        "m",
        &[
            ("id", ColumnType::Int),
            ("vehicle_id", ColumnType::Int),
            ("status", ColumnType::String),
        ],
    );
    t.checks = vec![
        check(MetricKind::Size, None, Some(1.0)),
        check(MetricKind::Completeness, Some("vehicle_id"), Some(0.9)),
        check(MetricKind::Uniqueness, Some("vehicle_id"), None),
        check(
            MetricKind::Compliance {
                name: "status_compliance".into(),
                predicate: CompliancePredicate::Pattern(
                    regex::Regex::new("^ok$").unwrap_or_else(|e| panic!("{e}")),
                ),
            },
            Some("status"),
            Some(0.5),
        ),
        check(
            MetricKind::Compliance {
                name: "vehicle_above_one".into(),
                predicate: CompliancePredicate::Expression(
                    "vehicle_id > 1 AND status <> 'bad'".into(),
                ),
            },
            None,
            None,
        ),
    ];
    t.rules = vec![rule(
        "warn_vid",
        "vehicle_id",
        RuleKind::NotNull,
        Severity::Warning,
    )];
    t
}

fn metric_events(
    table: &TableSpec,
    first_id: i32,
    rows: &[(Option<i32>, Option<&str>)],
) -> Vec<Vec<u8>> {
    rows.iter()
        .enumerate()
        .map(|(i, (vehicle, status))| {
            dms(
                table,
                "insert",
                json!({"id": first_id + i as i32, "vehicle_id": vehicle, "status": status}),
                i as i64,
            )
        })
        .collect()
}

#[test]
fn metrics_follow_deequ_definitions() {
    let table = metrics_table();
    let rows = [
        (Some(1), Some("ok")),
        (Some(1), Some("ok")),
        (Some(2), Some("bad")),
        (None, None),
        (Some(3), Some("ok")),
    ];
    let plan = run(&table, &metric_events(&table, 1, &rows));
    let size = metric(&plan, SCOPE_BATCH, "Size", None);
    assert_eq!(
        (size.metric_value, size.threshold, size.passed),
        (5.0, Some(1.0), true)
    );
    let completeness = metric(&plan, SCOPE_BATCH, "Completeness", Some("vehicle_id"));
    assert_eq!(
        (completeness.metric_value, completeness.passed),
        (0.8, false)
    );
    // Values 1, 1, 2, NULL, 3: exactly-once values are 2 and 3; NULL counts in the denominator.
    let uniqueness = metric(&plan, SCOPE_BATCH, "Uniqueness", Some("vehicle_id"));
    assert_eq!((uniqueness.metric_value, uniqueness.passed), (0.4, true));
    let pattern = metric(&plan, SCOPE_BATCH, "Compliance", Some("status_compliance"));
    assert_eq!(
        (pattern.metric_value, pattern.threshold, pattern.passed),
        (0.6, Some(0.5), true)
    );
    // vehicle_id > 1 AND status <> 'bad': only id 5 (3, ok); the NULL row counts as not compliant.
    let expression = metric(&plan, SCOPE_BATCH, "Compliance", Some("vehicle_above_one"));
    assert_eq!(expression.metric_value, 0.2);
    let failure_rate = metric(&plan, SCOPE_BATCH, RULE_FAILURE_RATE, Some("warn_vid"));
    assert_eq!(
        (
            failure_rate.metric_value,
            failure_rate.threshold,
            failure_rate.passed
        ),
        (0.2, None, true)
    );
    assert!(plan.metrics.iter().all(|m| m.table_name == "m"));
}

#[test]
fn cumulative_metrics_describe_every_batch_so_far() {
    let table = metrics_table();
    let mut state = TableMetricState::default();
    let first = plan_decoded(
        &table,
        &decode_payloads(
            &table,
            &metric_events(&table, 1, &[(Some(1), Some("ok")), (Some(2), Some("ok"))]),
        ),
        &mut state,
    );
    assert_eq!(
        metric(&first, SCOPE_CUMULATIVE, "Uniqueness", Some("vehicle_id")).metric_value,
        1.0
    );
    let second = plan_decoded(
        &table,
        &decode_payloads(
            &table,
            &metric_events(&table, 10, &[(Some(2), Some("bad")), (None, None)]),
        ),
        &mut state,
    );
    assert_eq!(
        metric(&second, SCOPE_BATCH, "Uniqueness", Some("vehicle_id")).metric_value,
        0.5
    );
    // All rows: 1, 2, 2, NULL → only 1 occurs once, over 4 rows.
    assert_eq!(
        metric(&second, SCOPE_CUMULATIVE, "Uniqueness", Some("vehicle_id")).metric_value,
        0.25
    );
    assert_eq!(
        metric(&second, SCOPE_CUMULATIVE, "Size", None).metric_value,
        4.0
    );
    assert_eq!(
        metric(
            &second,
            SCOPE_CUMULATIVE,
            "Completeness",
            Some("vehicle_id")
        )
        .metric_value,
        0.75
    );
    assert_eq!(
        metric(
            &second,
            SCOPE_CUMULATIVE,
            "Compliance",
            Some("status_compliance")
        )
        .metric_value,
        0.5
    );
}

#[test]
fn metrics_measure_each_key_once_and_never_deletes_or_quarantined_rows() {
    let table = telemetry_table();
    let plan = run(
        &table,
        &[
            dms(&table, "insert", good(1), 0),
            dms(&table, "update", good(1), 1),
            dms(&table, "update", good(1), 2),
            dms(&table, "insert", good(2), 3),
            dms(&table, "delete", json!({"id": 3}), 4),
            dms(
                &table,
                "insert",
                telemetry(4, json!(999.0), json!(1.0), Value::Null),
                5,
            ),
        ],
    );
    let uniqueness = metric(&plan, SCOPE_BATCH, "Uniqueness", Some("id"));
    assert_eq!(
        (uniqueness.metric_value, uniqueness.passed),
        (1.0, true),
        "three events of key 1 are not duplicates"
    );
    assert_eq!(metric(&plan, SCOPE_BATCH, "Size", None).metric_value, 2.0);
    assert_eq!(
        metric(&plan, SCOPE_BATCH, "Completeness", Some("vehicle_id")).metric_value,
        1.0
    );
    // tel_005 failed on 1 of the 5 insert/update events (the delete is not evaluated).
    assert_eq!(
        metric(&plan, SCOPE_BATCH, RULE_FAILURE_RATE, Some("tel_005")).metric_value,
        0.2
    );
}

#[test]
fn an_int_size_threshold_passes_and_fails() {
    let table = telemetry_table(); // size: 1, as the original's int threshold
    let plan = run(&table, &[dms(&table, "insert", good(1), 0)]);
    let size = metric(&plan, SCOPE_BATCH, "Size", None);
    assert_eq!(
        (size.metric_value, size.threshold, size.passed),
        (1.0, Some(1.0), true)
    );
    let plan = run(&table, &[dms(&table, "delete", json!({"id": 1}), 0)]);
    let size = metric(&plan, SCOPE_BATCH, "Size", None);
    assert_eq!((size.metric_value, size.passed), (0.0, false));
    assert!(
        plan.metrics.iter().all(|m| m.metric_name != "Completeness"),
        "ratios over zero rows have no value and are left out"
    );
}

#[test]
fn an_invalid_compliance_expression_is_a_clear_error() {
    let mut table = metrics_table();
    table.checks = vec![check(
        MetricKind::Compliance {
            name: "broken".into(),
            predicate: CompliancePredicate::Expression("no_such_column > 1".into()),
        },
        None,
        None,
    )];
    let decoded = decode_payloads(&table, &metric_events(&table, 1, &[(Some(1), Some("ok"))]));
    let error = super::plan(&table, &decoded, &TableMetricState::default(), now())
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some("table 'm': compliance check 'broken': expression \"no_such_column > 1\" is invalid")
    );
    assert!(
        super::metrics::check_compliance_expression(&table, "broken", "no_such_column > 1")
            .is_err()
    );
    assert!(
        super::metrics::check_compliance_expression(&table, "ok", "vehicle_id BETWEEN 1 AND 3")
            .is_ok()
    );
    assert!(super::metrics::check_compliance_expression(&table, "num", "vehicle_id + 1").is_err());
}

#[test]
fn a_batch_that_does_not_match_the_table_schema_is_refused() {
    let table = telemetry_table();
    let other = drivers_table();
    let decoded = decode_payloads(&other, &[dms(&other, "insert", driver(1, "DRV00001"), 0)]);
    let error = super::plan(&table, &decoded, &TableMetricState::default(), now())
        .err()
        .map(|e| e.to_string());
    assert!(error.is_some_and(|e| {
        e.starts_with("table 'vehicle_telemetry': the decoded batch does not match")
    }));
}

#[test]
fn delete_images_get_key_transforms_but_no_invented_defaults() {
    let mut table = table(
        "codes",
        &[("id", ColumnType::String), ("status", ColumnType::String)],
    );
    table.transforms = vec![
        transform("up", "id", TransformKind::Upper, 1),
        transform(
            "def",
            "status",
            TransformKind::DefaultValue {
                value: json!("new"),
            },
            2,
        ),
    ];
    let plan = run(
        &table,
        &[
            dms(&table, "insert", json!({"id": "ab", "status": null}), 0),
            dms(&table, "delete", json!({"id": "cd"}), 1),
        ],
    );
    assert_eq!(
        strings(&changes(&plan), "id"),
        [Some("AB".into()), Some("CD".into())],
        "the delete's key matches the stored key"
    );
    assert_eq!(
        strings(&changes(&plan), "status"),
        [Some("new".into()), None]
    );
}

mod properties {
    use std::collections::BTreeMap;

    use deltalake::arrow::array::{Int32Array, RecordBatch, StringArray};
    use deltalake::arrow::datatypes::Schema;
    use proptest::prelude::*;

    use super::*;
    use crate::pipeline::metrics::{Merged, measure, metric_rows};
    use crate::pipeline::schema::source_fields;

    fn measured_batch(
        table: &TableSpec,
        rows: &[(Option<i32>, Option<String>)],
        first_id: i32,
    ) -> RecordBatch {
        let ids = Int32Array::from(
            (0..rows.len() as i32)
                .map(|i| first_id + i)
                .collect::<Vec<_>>(),
        );
        let vehicles = Int32Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
        let statuses = StringArray::from(rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>());
        RecordBatch::try_new(
            std::sync::Arc::new(Schema::new(source_fields(table))),
            vec![
                std::sync::Arc::new(ids),
                std::sync::Arc::new(vehicles),
                std::sync::Arc::new(statuses),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn rows_strategy() -> impl Strategy<Value = Vec<(Option<i32>, Option<String>)>> {
        proptest::collection::vec(
            (
                proptest::option::of(0..6_i32),
                proptest::option::of(prop_oneof![Just("ok".to_owned()), Just("bad".to_owned())]),
            ),
            0..25,
        )
    }

    proptest! {
        #[test]
        fn merged_states_equal_the_state_of_the_concatenated_batches(a in rows_strategy(), b in rows_strategy()) {
            let table = metrics_table();
            let mut merged = measure(&table, &measured_batch(&table, &a, 0), &[]).unwrap_or_else(|e| panic!("{e}"));
            let second = measure(&table, &measured_batch(&table, &b, 100), &[]).unwrap_or_else(|e| panic!("{e}"));
            let viewed = metric_rows(&table, &Merged { cumulative: &merged, batch: &second }, SCOPE_CUMULATIVE);
            merged.merge(second);
            let all: Vec<_> = a.iter().chain(b.iter()).cloned().collect();
            let whole = measure(&table, &measured_batch(&table, &all, 0), &[]).unwrap_or_else(|e| panic!("{e}"));
            prop_assert_eq!(&merged, &whole);
            prop_assert_eq!(metric_rows(&table, &merged, SCOPE_CUMULATIVE), metric_rows(&table, &whole, SCOPE_CUMULATIVE));
            // The cumulative rows of a batch are read without merging: the same values.
            prop_assert_eq!(viewed, metric_rows(&table, &whole, SCOPE_CUMULATIVE));
            let json = serde_json::to_string(&merged).unwrap_or_default();
            let restored: TableMetricState = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
            prop_assert_eq!(restored, merged);
        }
    }

    #[derive(Debug, Clone)]
    enum Event {
        Upsert(&'static str, i32),
        Delete,
    }

    fn event_strategy() -> impl Strategy<Value = (i32, Event)> {
        (
            0..5_i32,
            prop_oneof![
                (0..1000_i32).prop_map(|v| Event::Upsert("insert", v)),
                (0..1000_i32).prop_map(|v| Event::Upsert("update", v)),
                Just(Event::Delete),
            ],
        )
    }

    /// The lake as a map key → value, after applying a plan's changes in order.
    fn apply(lake: &mut BTreeMap<i32, i32>, plan: &BatchPlan) {
        let changes = changes(plan);
        let ids = ints(&changes, "id");
        let values = ints(&changes, "v");
        let ops = strings(&changes, "_operation");
        for ((id, value), op) in ids.into_iter().zip(values).zip(ops) {
            let id = id.unwrap_or_else(|| panic!("changes always have a key"));
            match op.as_deref() {
                Some("DELETE") => {
                    lake.remove(&id);
                }
                _ => {
                    lake.insert(
                        id,
                        value.unwrap_or_else(|| panic!("upserts carry their value")),
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn last_event_per_key_matches_a_sequential_model(
            events in proptest::collection::vec(event_strategy(), 0..60),
            cuts in proptest::collection::vec(0..60_usize, 0..6),
            track_intermediate in any::<bool>(),
        ) {
            let mut table = table("kv", &[("id", ColumnType::Int), ("v", ColumnType::Int)]);
            table.scd2.track_intermediate = track_intermediate;
            // The model applies events one by one.
            let mut model = BTreeMap::new();
            for (key, event) in &events {
                match event {
                    Event::Upsert(_, v) => { model.insert(*key, *v); }
                    Event::Delete => { model.remove(key); }
                }
            }
            // The pipeline sees them in batches; each key lives in partition key % 3 and the
            // messages of a batch arrive grouped by partition, not in global order.
            let mut bounds: Vec<usize> = cuts.into_iter().filter(|&c| c < events.len()).collect();
            bounds.push(0);
            bounds.push(events.len());
            bounds.sort_unstable();
            bounds.dedup();
            let mut lake = BTreeMap::new();
            let mut state = TableMetricState::default();
            for window in bounds.windows(2) {
                let mut messages: Vec<(i32, i64, Vec<u8>)> = (window[0]..window[1])
                    .map(|i| {
                        let (key, event) = &events[i];
                        let payload = match event {
                            Event::Upsert(op, v) => dms(&table, op, json!({"id": key, "v": v}), i as i64),
                            Event::Delete => dms(&table, "delete", json!({"id": key}), i as i64),
                        };
                        (key % 3, i as i64, payload)
                    })
                    .collect();
                messages.sort_by_key(|(partition, offset, _)| (-partition, *offset));
                let plan = plan_decoded(&table, &decode_at(&table, &messages), &mut state);
                let keys = ints(&changes(&plan), "id");
                let distinct: std::collections::BTreeSet<_> = keys.iter().collect();
                if track_intermediate {
                    prop_assert_eq!(keys.len(), window[1] - window[0]);
                } else {
                    prop_assert_eq!(distinct.len(), keys.len(), "at most one change per key");
                }
                assert_accounted(&plan);
                apply(&mut lake, &plan);
            }
            prop_assert_eq!(lake, model);
        }
    }
}

/// (metric, value, threshold, passed) of each row.
fn judged(rows: Vec<MetricRow>) -> Vec<(String, f64, Option<f64>, bool)> {
    rows.into_iter()
        .map(|m| (m.metric_name, m.metric_value, m.threshold, m.passed))
        .collect()
}

#[test]
fn anomaly_checks_judge_each_batch_against_the_batches_before_it() {
    let mut table = metrics_table();
    table.anomaly_checks = vec![
        AnomalyCheckSpec {
            metric: "Size".into(),
            column: None,
            strategy: AnomalyStrategy::RelativeRateOfChange {
                max_increase: Some(2.0),
                max_decrease: Some(0.5),
            },
            min_history: 2,
            severity: Severity::Warning,
        },
        AnomalyCheckSpec {
            metric: "Completeness".into(),
            column: Some("vehicle_id".into()),
            strategy: AnomalyStrategy::StdDev { k: 1.0 },
            min_history: 2,
            severity: Severity::Error,
        },
    ];
    let mut state = TableMetricState::default();
    let mut next_id = 1;
    let mut batch = |state: &mut TableMetricState, rows: &[(Option<i32>, Option<&str>)]| {
        let plan = plan_decoded(
            &table,
            &decode_payloads(&table, &metric_events(&table, next_id, rows)),
            state,
        );
        next_id += rows.len() as i32;
        plan.metrics
            .into_iter()
            .filter(|m| m.scope == SCOPE_ANOMALY)
            .collect::<Vec<_>>()
    };
    let full = (Some(1), Some("ok"));
    let half = [full, full, (None, None), (None, None)];
    // Sizes 4, 4: too little history for either check (min_history 2).
    assert_eq!(batch(&mut state, &half), []);
    assert_eq!(batch(&mut state, &half), []);
    // Size 8 = 2 × 4 (allowed); completeness 0.5 after 0.5, 0.5 (deviation 0, inside).
    let third = batch(&mut state, &[half, half].concat());
    assert_eq!(
        third,
        [
            MetricRow {
                table_name: "m".into(),
                metric_name: "Size".into(),
                column_name: None,
                metric_value: 8.0,
                threshold: Some(8.0),
                passed: true,
                scope: SCOPE_ANOMALY,
            },
            MetricRow {
                table_name: "m".into(),
                metric_name: "Completeness".into(),
                column_name: Some("vehicle_id".into()),
                metric_value: 0.5,
                threshold: Some(0.5),
                passed: true,
                scope: SCOPE_ANOMALY,
            },
        ]
    );
    // Saved and reloaded as the progress blob keeps it, the history goes on where it was.
    let saved = serde_json::to_string(&state).unwrap_or_else(|e| panic!("{e}"));
    let mut state: TableMetricState =
        serde_json::from_str(&saved).unwrap_or_else(|e| panic!("{e}"));
    // Size 17 > 2 × 8: anomalous; completeness 1.0 outside 0.5 ± 0: anomalous too.
    let fourth = batch(&mut state, &[full; 17]);
    assert_eq!(
        judged(fourth),
        [
            ("Size".to_string(), 17.0, Some(16.0), false),
            ("Completeness".to_string(), 1.0, Some(0.5), false)
        ]
    );
    // The anomalous completeness stays out of the band; the size compares with 17 now.
    let fifth = batch(&mut state, &[half; 3].concat());
    assert_eq!(
        judged(fifth),
        [
            ("Size".to_string(), 12.0, Some(8.5), true),
            ("Completeness".to_string(), 0.5, Some(0.5), true)
        ]
    );
}
