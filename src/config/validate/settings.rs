//! The sections around the tables: `settings`, `kafka`, `source_database`.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

use crate::config::diagnostics::did_you_mean;
use crate::config::model::{KafkaSettings, Settings, SourceDatabase, Value};
use crate::config::spec::{KafkaSpec, OnDataLoss, SettingsSpec};
use crate::config::validate::checker::{Checker, MAX_IDENTIFIER_LEN, describe, is_identifier};

pub const DEFAULT_TRIGGER_INTERVAL: Duration = Duration::from_secs(15);
pub const DEFAULT_MAX_BATCH_RECORDS: u64 = 100_000;
pub const DEFAULT_MAX_BATCH_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);
/// Delta's own default (`delta.deletedFileRetentionDuration`): a week of time travel.
pub const DEFAULT_VACUUM_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_PARTITIONS: i32 = 3;
pub const DEFAULT_SCHEMA_NAME: &str = "public";
/// The original's marker for "the target fills in the brokers" (MSK lookup on AWS, the local broker).
pub const PLACEHOLDER_BOOTSTRAP_SERVERS: &str = "PLACEHOLDER_BOOTSTRAP_SERVERS";

const SECURITY_PROTOCOLS: &[&str] = &["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];
const SASL_MECHANISMS: &[&str] = &[
    "PLAIN",
    "SCRAM-SHA-256",
    "SCRAM-SHA-512",
    "OAUTHBEARER",
    "GSSAPI",
];

/// Settings paths are optional in dqetl: the target's lake layout decides where tables live.
pub(super) fn settings(c: &mut Checker, settings: Option<&Settings>) -> Option<SettingsSpec> {
    let default = Settings::default();
    let s = settings.unwrap_or(&default);
    let trigger_interval = match s.trigger_interval.as_deref() {
        None => Some(DEFAULT_TRIGGER_INTERVAL),
        Some(text) => match parse_interval(text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                c.error(
                    "settings.trigger_interval",
                    "trigger_interval must be longer than zero",
                );
                None
            }
            Err(e) => {
                c.error_hint(
                    "settings.trigger_interval",
                    format!("invalid trigger_interval {text:?}: {e}"),
                    Some("write a duration such as \"15 seconds\", \"10s\" or \"500ms\"".into()),
                );
                None
            }
        },
    };
    let max_batch_records = positive(
        c,
        "settings.max_batch_records",
        s.max_batch_records,
        DEFAULT_MAX_BATCH_RECORDS,
    );
    let max_batch_bytes = positive(
        c,
        "settings.max_batch_bytes",
        s.max_batch_bytes,
        DEFAULT_MAX_BATCH_BYTES,
    );
    // Zero turns maintenance off.
    let maintenance_interval = duration(
        c,
        "settings.maintenance_interval",
        s.maintenance_interval.as_ref(),
        DEFAULT_MAINTENANCE_INTERVAL,
    )
    .map(|d| (!d.is_zero()).then_some(d));
    let vacuum_retention = match duration(
        c,
        "settings.vacuum_retention",
        s.vacuum_retention.as_ref(),
        DEFAULT_VACUUM_RETENTION,
    ) {
        Some(d) if d.is_zero() => {
            c.error_hint(
                "settings.vacuum_retention",
                "vacuum_retention must be longer than zero: a query reading the table while \
                 maintenance runs could lose the files it reads",
                Some("write a duration such as \"7 days\" or \"1 hour\"".into()),
            );
            None
        }
        other => other,
    };
    Some(SettingsSpec {
        checkpoint_location: s.checkpoint_location.clone(),
        quarantine_path: s.quarantine_path.clone(),
        delta_bucket: s.delta_bucket.clone(),
        trigger_interval: trigger_interval?,
        max_batch_records: max_batch_records?,
        max_batch_bytes: max_batch_bytes?,
        maintenance_interval: maintenance_interval?,
        vacuum_retention: vacuum_retention?,
    })
}

/// A duration setting (`default` when absent), or None after reporting what is wrong. A bare
/// zero is the plain way to say "never"; other numbers need a unit.
fn duration(
    c: &mut Checker,
    path: &str,
    value: Option<&Value>,
    default: Duration,
) -> Option<Duration> {
    let key = path.rsplit('.').next().unwrap_or(path);
    let hint = || Some("write a duration such as \"1 hour\", \"7 days\" or \"30m\"".to_string());
    let text = match value {
        None => return Some(default),
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => return Some(Duration::ZERO),
        Some(Value::String(text)) if text.trim() == "0" => return Some(Duration::ZERO),
        Some(Value::String(text)) => text,
        Some(other) => {
            c.error_hint(
                path,
                format!(
                    "invalid {key} {}: a duration needs its unit",
                    describe(other)
                ),
                hint(),
            );
            return None;
        }
    };
    match parse_interval(text) {
        Ok(d) => Some(d),
        Err(e) => {
            c.error_hint(path, format!("invalid {key} {text:?}: {e}"), hint());
            None
        }
    }
}

fn positive(c: &mut Checker, path: &str, value: Option<u64>, default: u64) -> Option<u64> {
    match value {
        None => Some(default),
        Some(0) => {
            c.error(path, "must be at least 1");
            None
        }
        Some(v) => Some(v),
    }
}

/// "15 seconds" (the original's Spark trigger syntax), "10s", "1 minute", "500ms".
pub fn parse_interval(text: &str) -> Result<Duration, humantime::DurationError> {
    // humantime wants the unit glued to the number ("15seconds"); Spark writes "15 seconds".
    static SPACE_BEFORE_UNIT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"([0-9])\s+([A-Za-z])").expect("static regex compiles"));
    let normalized = SPACE_BEFORE_UNIT.replace_all(text.trim(), "$1$2");
    humantime::parse_duration(&normalized)
}

pub(super) fn kafka(c: &mut Checker, kafka: Option<&KafkaSettings>) -> Option<KafkaSpec> {
    let default = KafkaSettings::default();
    let k = kafka.unwrap_or(&default);
    let bootstrap_servers = match k.bootstrap_servers.as_deref().map(str::trim) {
        None | Some(PLACEHOLDER_BOOTSTRAP_SERVERS) => None,
        Some("") => {
            c.error_hint(
                "kafka.bootstrap_servers",
                "bootstrap_servers is empty",
                Some(format!(
                    "leave it out or write {PLACEHOLDER_BOOTSTRAP_SERVERS} to let the target decide"
                )),
            );
            None
        }
        Some(servers) => Some(servers.to_string()),
    };
    let mut ok = true;
    ok &= one_of(
        c,
        "kafka.security_protocol",
        k.security_protocol.as_deref(),
        SECURITY_PROTOCOLS,
    );
    ok &= one_of(
        c,
        "kafka.sasl_mechanism",
        k.sasl_mechanism.as_deref(),
        SASL_MECHANISMS,
    );
    let partitions = match k.partitions {
        None => DEFAULT_PARTITIONS,
        Some(p) if p >= 1 => p,
        Some(p) => {
            c.error(
                "kafka.partitions",
                format!("partitions must be at least 1, found {p}"),
            );
            ok = false;
            DEFAULT_PARTITIONS
        }
    };
    if k.consumer_group
        .as_deref()
        .is_some_and(|g| g.trim().is_empty())
    {
        c.error("kafka.consumer_group", "consumer_group is empty");
        ok = false;
    }
    let consumer_options = consumer_options(c, k.consumer_options.as_ref());
    ok &= consumer_options.is_some();
    let on_data_loss = match k.on_data_loss.as_deref() {
        None => OnDataLoss::Fail,
        Some(v) if v.eq_ignore_ascii_case("fail") => OnDataLoss::Fail,
        Some(v) if v.eq_ignore_ascii_case("warn") => OnDataLoss::Warn,
        Some(_) => {
            ok &= one_of(
                c,
                "kafka.on_data_loss",
                k.on_data_loss.as_deref(),
                ON_DATA_LOSS,
            );
            OnDataLoss::Fail
        }
    };
    ok.then(|| KafkaSpec {
        bootstrap_servers,
        security_protocol: k.security_protocol.clone(),
        sasl_mechanism: k.sasl_mechanism.clone(),
        sasl_username: k.sasl_username.clone(),
        partitions,
        consumer_group: k.consumer_group.clone(),
        consumer_options: consumer_options.unwrap_or_default(),
        on_data_loss,
    })
}

/// Values of `kafka.on_data_loss`.
const ON_DATA_LOSS: &[&str] = &["fail", "warn"];

/// Consumer properties dqetl sets itself, and the key that sets them instead.
const OWNED_CONSUMER_OPTIONS: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.bootstrap_servers"),
    ("metadata.broker.list", "kafka.bootstrap_servers"),
    ("group.id", "kafka.consumer_group"),
    ("security.protocol", "kafka.security_protocol"),
    ("sasl.mechanism", "kafka.sasl_mechanism"),
    ("sasl.mechanisms", "kafka.sasl_mechanism"),
    ("sasl.username", "kafka.sasl_username"),
];

/// Properties whose change would break exactly-once delivery: offsets are committed by the
/// processor after the Delta commits, and positions come from the lake.
const EXACTLY_ONCE_OPTIONS: &[&str] = &[
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.partition.eof",
];

/// `kafka.consumer_options`: scalar values, none of the properties dqetl owns, no secrets, and
/// each property known to librdkafka with a value it accepts (checked by librdkafka itself,
/// without connecting anywhere).
fn consumer_options(
    c: &mut Checker,
    options: Option<&BTreeMap<String, Value>>,
) -> Option<Vec<(String, String)>> {
    let mut ok = true;
    let mut checked = Vec::new();
    for (key, value) in options.into_iter().flatten() {
        let path = format!("kafka.consumer_options.{key}");
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                c.error(
                    &path,
                    format!("`{key}` must be a string, a number or a boolean"),
                );
                ok = false;
                continue;
            }
        };
        let lower = key.to_ascii_lowercase();
        if let Some((_, instead)) = OWNED_CONSUMER_OPTIONS.iter().find(|(k, _)| *k == lower) {
            c.error_hint(
                &path,
                format!("`{key}` is set by dqetl"),
                Some(format!("use `{instead}`")),
            );
            ok = false;
        } else if EXACTLY_ONCE_OPTIONS.contains(&lower.as_str()) {
            c.error(
                &path,
                format!(
                    "`{key}` is set by dqetl: offsets are committed after the Delta commits and \
                     positions come from the lake"
                ),
            );
            ok = false;
        } else if lower.contains("password") || lower.contains("secret") {
            // Not echoed back: the value is a secret.
            c.error_hint(
                &path,
                format!("`{key}` holds a secret, which does not belong in the config file"),
                Some("the SASL password comes from DQETL_KAFKA_PASSWORD".into()),
            );
            ok = false;
        } else if let Err(reason) = librdkafka_accepts(key, &text) {
            c.error(&path, format!("librdkafka refuses `{key}`: {reason}"));
            ok = false;
        } else {
            checked.push((key.clone(), text));
        }
    }
    ok.then_some(checked)
}

/// Sets the property on a fresh librdkafka configuration (no client, no network); the reason
/// librdkafka gives when it refuses it.
pub fn librdkafka_accepts(key: &str, value: &str) -> Result<(), String> {
    let mut cfg = rdkafka::ClientConfig::new();
    cfg.set(key, value);
    match cfg.create_native_config() {
        Ok(_) => Ok(()),
        Err(rdkafka::error::KafkaError::ClientConfig(_, description, _, _)) => Err(description),
        Err(error) => Err(error.to_string()),
    }
}

/// Kafka client settings are upper-case names; matched case-insensitively like librdkafka does.
fn one_of(c: &mut Checker, path: &str, value: Option<&str>, allowed: &[&str]) -> bool {
    let Some(v) = value else { return true };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(v)) {
        return true;
    }
    let hint = did_you_mean(v, allowed.iter().copied())
        .or_else(|| Some(format!("one of {}", allowed.join(", "))));
    c.error_hint(path, format!("unsupported value {v:?}"), hint);
    false
}

/// The source schema; only PostgreSQL is a source.
pub(super) fn schema_name(c: &mut Checker, source: Option<&SourceDatabase>) -> Option<String> {
    let Some(source) = source else {
        return Some(DEFAULT_SCHEMA_NAME.into());
    };
    let mut ok = true;
    if let Some(engine) = source.engine.as_deref()
        && !matches!(
            engine.to_ascii_lowercase().as_str(),
            "postgres" | "postgresql"
        )
    {
        c.error(
            "source_database.engine",
            format!("unsupported engine {engine:?}: dqetl captures from PostgreSQL"),
        );
        ok = false;
    }
    let name = source
        .schema_name
        .clone()
        .unwrap_or_else(|| DEFAULT_SCHEMA_NAME.into());
    if !is_identifier(&name) || name.len() > MAX_IDENTIFIER_LEN {
        c.error(
            "source_database.schema_name",
            format!("invalid schema name {name:?}: expected letters, digits and _ (not starting with a digit), at most {MAX_IDENTIFIER_LEN} characters"),
        );
        ok = false;
    }
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_intervals_in_spark_and_humantime_syntax() {
        assert_eq!(
            parse_interval("15 seconds").unwrap(),
            Duration::from_secs(15)
        );
        assert_eq!(parse_interval("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_interval("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_interval("1 minute").unwrap(), Duration::from_secs(60));
        assert_eq!(
            parse_interval(" 2  min 30 s ").unwrap(),
            Duration::from_secs(150)
        );
        assert!(parse_interval("soon").is_err());
        assert!(parse_interval("15").is_err());
        assert!(parse_interval("").is_err());
    }

    /// (key path, line) of each error.
    fn places(report: &crate::config::validate::ValidationReport) -> Vec<(&str, usize)> {
        report
            .errors
            .iter()
            .map(|e| (e.path.as_str(), e.line))
            .collect()
    }

    fn validated(kafka: &str) -> crate::config::validate::ValidationReport {
        validated_with("kafka", kafka)
    }

    /// A config with `body` under the top-level `section`.
    fn validated_with(section: &str, body: &str) -> crate::config::validate::ValidationReport {
        let text = format!(
            "\
{section}:
{body}
tables:
  - name: t
    primary_key: id
    schema:
      - {{name: id, type: integer, nullable: false}}
"
        );
        let ctx = crate::config::load::LoadContext {
            stack_name: "s".into(),
            account_id: None,
        };
        let loaded = crate::config::load::load_str_with_env(&text, "t.yaml", &ctx, &|_| None)
            .expect("loads");
        crate::config::validate::validate(&loaded)
    }

    #[test]
    fn maintenance_defaults_to_hourly_with_a_week_of_retention_and_zero_turns_it_off() {
        let defaults = validated_with("settings", "  trigger_interval: 10s")
            .spec
            .expect("valid");
        assert_eq!(
            defaults.settings.maintenance_interval,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            defaults.settings.vacuum_retention,
            Duration::from_secs(7 * 24 * 3600)
        );
        let set = validated_with(
            "settings",
            "  maintenance_interval: \"30 minutes\"\n  vacuum_retention: 2h",
        )
        .spec
        .expect("valid");
        assert_eq!(
            set.settings.maintenance_interval,
            Some(Duration::from_secs(1800))
        );
        assert_eq!(set.settings.vacuum_retention, Duration::from_secs(7200));
        for off in ["0", "0s", "\"0 seconds\""] {
            let spec = validated_with("settings", &format!("  maintenance_interval: {off}"))
                .spec
                .expect("valid");
            assert_eq!(spec.settings.maintenance_interval, None, "{off}");
        }
    }

    #[test]
    fn a_zero_retention_or_an_unreadable_duration_is_an_error_at_its_line() {
        let report = validated_with(
            "settings",
            "  maintenance_interval: often\n  vacuum_retention: 0",
        );
        assert!(report.spec.is_none());
        let errors = places(&report);
        assert_eq!(
            errors,
            vec![
                ("settings.maintenance_interval", 2),
                ("settings.vacuum_retention", 3)
            ]
        );
        assert!(
            report.errors[0]
                .message
                .contains("invalid maintenance_interval \"often\""),
            "{}",
            report.errors[0].message
        );
        assert!(
            report.errors[1]
                .message
                .contains("vacuum_retention must be longer than zero"),
            "{}",
            report.errors[1].message
        );
    }

    #[test]
    fn on_data_loss_fails_unless_told_to_warn_and_refuses_other_values() {
        let default = validated("  partitions: 3").spec.expect("valid");
        assert_eq!(default.kafka.on_data_loss, OnDataLoss::Fail);
        let warn = validated("  on_data_loss: warn").spec.expect("valid");
        assert_eq!(warn.kafka.on_data_loss, OnDataLoss::Warn);
        let report = validated("  on_data_loss: ignore");
        assert!(report.spec.is_none());
        let errors = places(&report);
        assert_eq!(errors, [("kafka.on_data_loss", 2)]);
        assert!(
            report.errors[0].to_string().contains("fail, warn"),
            "{}",
            report.errors[0]
        );
    }

    #[test]
    fn consumer_options_reach_the_spec_as_librdkafka_texts() {
        let report = validated(
            "  consumer_options:\n    fetch.wait.max.ms: 25\n    check.crcs: true\n    client.rack: eu-1a",
        );
        let spec = report.spec.expect("valid");
        assert_eq!(
            spec.kafka.consumer_options,
            [
                ("check.crcs".to_string(), "true".to_string()),
                ("client.rack".to_string(), "eu-1a".to_string()),
                ("fetch.wait.max.ms".to_string(), "25".to_string()),
            ]
        );
    }

    #[test]
    fn consumer_options_that_break_delivery_leak_secrets_or_librdkafka_refuses_are_errors() {
        let report = validated(
            "  consumer_options:\n    group.id: other\n    enable.auto.commit: true\n    \
             sasl.password: hunter2\n    fetch.wait.max.msec: 25\n    fetch.wait.max.ms: soon\n    \
             fetch.min.bytes: [1]",
        );
        assert!(report.spec.is_none());
        let errors: Vec<(&str, &str, usize)> = report
            .errors
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str(), e.line))
            .collect();
        let find = |path: &str| {
            errors
                .iter()
                .find(|(p, _, _)| *p == path)
                .unwrap_or_else(|| panic!("no error at {path}: {errors:?}"))
        };
        assert!(
            find("kafka.consumer_options.group.id")
                .1
                .contains("set by dqetl")
        );
        assert_eq!(
            report
                .errors
                .iter()
                .find(|e| e.path == "kafka.consumer_options.group.id")
                .and_then(|e| e.hint.as_deref()),
            Some("use `kafka.consumer_group`")
        );
        assert!(
            find("kafka.consumer_options.enable.auto.commit")
                .1
                .contains("Delta commits")
        );
        let secret = find("kafka.consumer_options.sasl.password");
        assert!(secret.1.contains("secret") && !secret.1.contains("hunter2"));
        assert!(
            find("kafka.consumer_options.fetch.wait.max.msec")
                .1
                .contains("No such configuration property")
        );
        assert!(
            find("kafka.consumer_options.fetch.wait.max.ms")
                .1
                .contains("librdkafka refuses")
        );
        assert!(
            find("kafka.consumer_options.fetch.min.bytes")
                .1
                .contains("a string, a number")
        );
        // Each error points at its own line of the file.
        assert_eq!(find("kafka.consumer_options.group.id").2, 3);
        assert_eq!(find("kafka.consumer_options.fetch.min.bytes").2, 8);
        assert!(!format!("{:?}", report.errors).contains("hunter2"));
    }
}
