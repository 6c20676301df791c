//! DMS table mappings: per source table a selection rule and, right after it, the object-mapping
//! rule that sends its changes to the table's topic (the original compiler's exact shape).

use serde_json::{Value, json};

use crate::config::spec::ConfigSpec;

pub fn dms_mappings(spec: &ConfigSpec) -> Value {
    let mut rules = Vec::new();
    let mut rule_id = 0u32;
    let mut next_id = || {
        rule_id += 1;
        rule_id.to_string()
    };
    for table in spec.source_tables() {
        let locator = json!({"schema-name": spec.schema_name, "table-name": table.name});
        rules.push(json!({
            "rule-type": "selection",
            "rule-id": next_id(),
            "rule-name": format!("select-{}", table.name),
            "object-locator": locator,
            "rule-action": "include",
        }));
        rules.push(json!({
            "rule-type": "object-mapping",
            "rule-id": next_id(),
            "rule-name": mapping_rule_name(&table.name),
            "rule-action": "map-record-to-record",
            "kafka-target-topic": table.topic,
            "object-locator": locator,
        }));
    }
    json!({ "rules": rules })
}

/// The original's `name.title().replace("_", "") + "Mapping"`: `vehicle_telemetry` →
/// `VehicleTelemetryMapping`. Like Python's `str.title`, a letter is upper-cased when it follows a
/// non-letter and lower-cased otherwise.
pub fn mapping_rule_name(table: &str) -> String {
    let mut out = String::with_capacity(table.len() + 7);
    let mut after_letter = false;
    for ch in table.chars() {
        if ch.is_alphabetic() {
            if after_letter {
                out.extend(ch.to_lowercase());
            } else {
                out.extend(ch.to_uppercase());
            }
            after_letter = true;
        } else {
            after_letter = false;
            if ch != '_' {
                out.push(ch);
            }
        }
    }
    out.push_str("Mapping");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_names_follow_python_title_case() {
        assert_eq!(
            mapping_rule_name("vehicle_telemetry"),
            "VehicleTelemetryMapping"
        );
        assert_eq!(mapping_rule_name("alerts"), "AlertsMapping");
        assert_eq!(mapping_rule_name("gps2point"), "Gps2PointMapping");
        assert_eq!(mapping_rule_name("ORDER_items"), "OrderItemsMapping");
    }
}
