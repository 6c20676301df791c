//! Keys the config model does not know, found by walking the document along the JSON Schema
//! generated from the model, so the list of known keys can never drift from the model.

use serde_json::{Map, Value as Json};
use serde_yaml_ng::Value as Yaml;

use crate::config::diagnostics::did_you_mean;
use crate::config::load::key_text;
use crate::config::model::Config;
use crate::config::positions::{child_index, child_key};
use crate::config::validate::checker::Checker;

/// Warns, with a "did you mean" hint, about every key that dqetl would ignore.
pub(super) fn check(c: &mut Checker) {
    let schema = schemars::schema_for!(Config);
    let root = schema.as_value();
    let defs = root
        .get("$defs")
        .and_then(Json::as_object)
        .cloned()
        .unwrap_or_default();
    let mut found = Vec::new();
    walk(&c.loaded.document, root, &defs, String::new(), &mut found);
    for (path, key, hint) in found {
        c.warn_key(&path, format!("unknown key `{key}` (ignored)"), hint);
    }
}

fn walk(
    node: &Yaml,
    schema: &Json,
    defs: &Map<String, Json>,
    path: String,
    found: &mut Vec<(String, String, Option<String>)>,
) {
    match node {
        Yaml::Mapping(map) => {
            let Some(properties) = branch_with(schema, defs, "properties")
                .and_then(|s| s.get("properties"))
                .and_then(Json::as_object)
            else {
                return; // free-form (params, defaults) or not an object in the model
            };
            for (key, value) in map {
                let key = key_text(key);
                let child = child_key(&path, &key);
                match properties.get(&key) {
                    Some(sub) => walk(value, sub, defs, child, found),
                    None => {
                        let hint = did_you_mean(&key, properties.keys().map(String::as_str));
                        found.push((child, key, hint));
                    }
                }
            }
        }
        Yaml::Sequence(items) => {
            let Some(item_schema) = branch_with(schema, defs, "items").and_then(|s| s.get("items"))
            else {
                return;
            };
            for (i, item) in items.iter().enumerate() {
                walk(item, item_schema, defs, child_index(&path, i), found);
            }
        }
        Yaml::Tagged(tagged) => walk(&tagged.value, schema, defs, path, found),
        _ => {}
    }
}

/// The (sub)schema that has `key`, following `$ref` and the `anyOf`/`oneOf` that `Option` produces.
fn branch_with<'a>(schema: &'a Json, defs: &'a Map<String, Json>, key: &str) -> Option<&'a Json> {
    let schema = resolve(schema, defs);
    if schema.get(key).is_some() {
        return Some(schema);
    }
    ["anyOf", "oneOf", "allOf"]
        .iter()
        .filter_map(|k| schema.get(*k).and_then(Json::as_array))
        .flatten()
        .find_map(|branch| branch_with(branch, defs, key))
}

fn resolve<'a>(schema: &'a Json, defs: &'a Map<String, Json>) -> &'a Json {
    match schema
        .get("$ref")
        .and_then(Json::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        Some(name) => defs.get(name).map(|s| resolve(s, defs)).unwrap_or(schema),
        None => schema,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load::{LoadContext, load_str_with_env};
    use crate::config::validate::validate;

    #[test]
    fn unknown_keys_are_found_at_every_depth_but_not_in_free_form_params() {
        let text = "\
kafka: {partitons: 6}
tables:
  - name: t
    primary_key: id
    schema:
      - {name: id, type: integer, nulable: false}
    dq_rules:
      - {id: r1, type: range, colum: id, params: {min: 0, anything: 1}}
    transforms: []
    deequ_checks: []
    scd2: {hard_delete: close}
";
        let ctx = LoadContext {
            stack_name: "s".into(),
            account_id: None,
        };
        let loaded = load_str_with_env(text, "t.yaml", &ctx, &|_| None).expect("loads");
        let report = validate(&loaded);
        let unknown: Vec<(&str, Option<&str>)> = report
            .warnings
            .iter()
            .filter(|w| w.message.starts_with("unknown key"))
            .map(|w| (w.path.as_str(), w.hint.as_deref()))
            .collect();
        assert_eq!(
            unknown,
            [
                ("kafka.partitons", Some("did you mean `partitions`?")),
                (
                    "tables[0].schema[0].nulable",
                    Some("did you mean `nullable`?")
                ),
                (
                    "tables[0].dq_rules[0].colum",
                    Some("did you mean `column`?")
                ),
                (
                    "tables[0].scd2.hard_delete",
                    Some("did you mean `hard_deletes`?")
                ),
            ]
        );
        // Rule params are checked per rule type instead.
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.path == "tables[0].dq_rules[0].params.anything")
        );
    }
}
