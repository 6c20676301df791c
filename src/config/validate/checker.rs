//! The collector every check reports to, and small value helpers shared by the checks.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

use crate::config::diagnostics::{Diagnostic, did_you_mean};
use crate::config::load::LoadedConfig;
use crate::config::model::Value;
use crate::config::spec::{ColumnType, Severity};

/// Collects every error and warning; checks never stop at the first problem.
pub(crate) struct Checker<'a> {
    pub loaded: &'a LoadedConfig,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    pub fn new(loaded: &'a LoadedConfig) -> Self {
        Checker {
            loaded,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.error_hint(path, message, None);
    }

    pub fn error_hint(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        let mut d = self.loaded.at(path, message);
        d.hint = hint;
        self.errors.push(d);
    }

    pub fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warn_hint(path, message, None);
    }

    pub fn warn_hint(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        let mut d = self.loaded.at(path, message);
        d.hint = hint;
        self.warnings.push(d);
    }

    /// A warning placed on a key rather than its value (unknown keys).
    pub fn warn_key(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        let mut d = self.loaded.at_key(path, message);
        d.hint = hint;
        self.warnings.push(d);
    }

    /// Parses `severity` (case-sensitive, like the original's `== "error"`); absent means error.
    pub fn severity(&mut self, path: &str, severity: Option<&str>) -> Option<Severity> {
        match severity {
            None | Some("error") => Some(Severity::Error),
            Some("warning") => Some(Severity::Warning),
            Some(other) => {
                let lower = other.to_ascii_lowercase();
                let hint = if lower == "error" || lower == "warning" {
                    Some(format!("severity is case-sensitive: write `{lower}`"))
                } else {
                    did_you_mean(other, ["error", "warning"])
                };
                self.error_hint(
                    path,
                    format!("severity must be `error` or `warning`, found {other:?}"),
                    hint,
                );
                None
            }
        }
    }

    /// Warns about parameters a rule, transform or check does not read.
    pub fn unknown_params(
        &mut self,
        params_path: &str,
        params: Option<&BTreeMap<String, Value>>,
        known: &[&str],
        what: &str,
    ) {
        for key in params.into_iter().flat_map(|p| p.keys()) {
            if !known.contains(&key.as_str()) {
                let expected = if known.is_empty() {
                    "it takes no parameters".to_string()
                } else {
                    format!(
                        "it reads {}",
                        known
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                let hint = did_you_mean(key, known.iter().copied()).or(Some(expected));
                self.warn_key(
                    &format!("{params_path}.{key}"),
                    format!("unknown parameter `{key}` for {what} (ignored)"),
                    hint,
                );
            }
        }
    }
}

/// How a value reads in a message: `"abc"`, `4.5`, `a list`.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`: names that are safe as SQL, Delta and Arrow identifiers.
pub(crate) fn is_identifier(name: &str) -> bool {
    static IDENT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").expect("static regex compiles"));
    IDENT.is_match(name)
}

/// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1).
pub(crate) const MAX_IDENTIFIER_LEN: usize = 63;

/// The column names of one table with their types (None where the type is invalid).
#[derive(Debug, Clone, Default)]
pub(crate) struct ColumnSet {
    pub columns: Vec<(String, Option<ColumnType>)>,
}

impl ColumnSet {
    pub fn get(&self, name: &str) -> Option<Option<ColumnType>> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| *t)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|(n, _)| n.as_str())
    }
}

/// A column reference that exists in the schema.
#[derive(Debug, Clone)]
pub(crate) struct ColumnRef {
    pub name: String,
    /// None when the column's own type is invalid (already reported).
    pub column_type: Option<ColumnType>,
}

impl Checker<'_> {
    /// Checks that `column` (at `path`) is given and names a column of `table`.
    /// `columns` is None when the table's schema is unusable (already reported).
    pub fn column_ref(
        &mut self,
        path: &str,
        column: Option<&str>,
        table: &str,
        columns: Option<&ColumnSet>,
    ) -> Option<ColumnRef> {
        let Some(name) = column else {
            self.error(path, "`column` is required");
            return None;
        };
        let columns = columns?;
        match columns.get(name) {
            Some(column_type) => Some(ColumnRef {
                name: name.to_string(),
                column_type,
            }),
            None => {
                let hint = did_you_mean(name, columns.names());
                self.error_hint(
                    path,
                    format!("column '{name}' not in schema of table '{table}'"),
                    hint,
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_sql_safe_names() {
        assert!(is_identifier("vehicle_telemetry"));
        assert!(is_identifier("_x1"));
        assert!(!is_identifier("1abc"));
        assert!(!is_identifier("my-table"));
        assert!(!is_identifier("a b"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("tëst"));
    }

    #[test]
    fn values_are_described_as_written() {
        assert_eq!(describe(&serde_json::json!("abc")), "\"abc\"");
        assert_eq!(describe(&serde_json::json!(4.5)), "4.5");
        assert_eq!(describe(&serde_json::json!([1])), "a list");
        assert_eq!(describe(&Value::Null), "null");
    }
}
