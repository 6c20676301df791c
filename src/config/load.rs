//! Reading `tables.yaml`: positions of every node, placeholder resolution, the loose model.
//!
//! Two parsers read the same text, each for what it does best:
//! - saphyr (`MarkedYaml`) gives every node its line and column, so every later finding can name
//!   the place in the file;
//! - serde_yaml_ng deserializes the loose model. serde_yaml is archived (unmaintained);
//!   serde_yaml_ng is its maintained drop-in fork, and its errors carry the key path and position
//!   of structural type errors (`tables[0].schema: invalid type: string, expected a sequence`).

use std::path::{Path, PathBuf};

use saphyr::{LoadableYamlNode, MarkedYaml};
use serde_yaml_ng::Value as Yaml;

use crate::config::diagnostics::Diagnostic;
use crate::config::model::Config;
use crate::config::placeholders::Resolver;
use crate::config::positions::{Pos, Positions, child_index, child_key};

/// What placeholders resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadContext {
    pub stack_name: String,
    /// The AWS account; None on the local target (`${AWS_ACCOUNT_ID}` becomes `local`).
    pub account_id: Option<String>,
}

/// A config file read and parsed, with placeholders resolved; not yet validated.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The path as given, for messages.
    pub file: String,
    /// The loose model, placeholders resolved.
    pub config: Config,
    /// The same document as a YAML tree (placeholders resolved), for checks of unknown keys.
    pub document: Yaml,
    pub positions: Positions,
    /// Problems found while loading (values of the wrong shape, placeholders that cannot be
    /// resolved); `validate` reports them with its own findings.
    pub errors: Vec<Diagnostic>,
    /// Key paths of values that had the wrong shape: reported in `errors` and left out of
    /// `config`, so findings under them are consequences, not news.
    pub set_aside: Vec<String>,
}

impl LoadedConfig {
    /// A diagnostic at the value of `path` (or its nearest enclosing node).
    pub fn at(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        self.diagnostic(self.positions.value(path), path, message)
    }

    /// A diagnostic at the key of `path` (for unknown keys).
    pub fn at_key(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        self.diagnostic(self.positions.key(path), path, message)
    }

    fn diagnostic(&self, pos: Pos, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            path: if path.is_empty() {
                ".".into()
            } else {
                path.to_string()
            },
            message: message.into(),
            hint: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML.
    #[error("{0}")]
    Syntax(Diagnostic),
    /// YAML, but of a shape no config has (e.g. a list at the top); values of the wrong shape
    /// deeper down are reported in [`LoadedConfig::errors`] instead.
    #[error("{0}")]
    Structure(Diagnostic),
}

impl LoadError {
    /// `dqetl validate`'s exit code: 2 when the file cannot be read, 1 when its content is wrong.
    pub fn exit_code(&self) -> u8 {
        match self {
            LoadError::Read { .. } => 2,
            LoadError::Syntax(_) | LoadError::Structure(_) => 1,
        }
    }

    /// The finding in the file, if the file could be read.
    pub fn diagnostic(&self) -> Option<&Diagnostic> {
        match self {
            LoadError::Read { .. } => None,
            LoadError::Syntax(d) | LoadError::Structure(d) => Some(d),
        }
    }
}

/// Reads, parses and resolves placeholders in a config file. Placeholders read the process
/// environment (`${ENV:NAME}`).
pub fn load(path: &Path, ctx: &LoadContext) -> Result<LoadedConfig, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, &path.display().to_string(), ctx)
}

/// [`load`] on text already in memory; `file` names it in messages.
pub fn load_str(text: &str, file: &str, ctx: &LoadContext) -> Result<LoadedConfig, LoadError> {
    load_str_with_env(text, file, ctx, &|name| std::env::var(name).ok())
}

/// [`load_str`] with an explicit environment for `${ENV:NAME}`.
pub fn load_str_with_env(
    text: &str,
    file: &str,
    ctx: &LoadContext,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, LoadError> {
    let syntax_error = |line: usize, column: usize, message: String| {
        LoadError::Syntax(Diagnostic {
            file: file.to_string(),
            line,
            column,
            path: ".".into(),
            message: format!("invalid YAML: {message}"),
            hint: None,
        })
    };

    let documents = MarkedYaml::load_from_str(text).map_err(|e| {
        syntax_error(
            e.marker().line().max(1),
            e.marker().col() + 1,
            e.info().to_string(),
        )
    })?;
    if documents.len() > 1 {
        return Err(syntax_error(
            1,
            1,
            "the file holds several YAML documents; expected one".into(),
        ));
    }
    let positions = documents
        .first()
        .map(Positions::from_document)
        .unwrap_or_default();

    let mut document: Yaml = serde_yaml_ng::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        syntax_error(line, column, strip_location(&e.to_string()).to_string())
    })?;

    // An empty file is an empty config: validate then reports the missing `tables`.
    if document.is_null() {
        return Ok(LoadedConfig {
            file: file.to_string(),
            config: Config::default(),
            document,
            positions,
            errors: Vec::new(),
            set_aside: Vec::new(),
        });
    }

    let resolver = Resolver {
        stack_name: &ctx.stack_name,
        account_id: ctx.account_id.as_deref(),
        env,
    };
    let mut loaded = LoadedConfig {
        file: file.to_string(),
        config: Config::default(),
        document: Yaml::Null,
        positions,
        errors: Vec::new(),
        set_aside: Vec::new(),
    };
    let mut errors = Vec::new();
    resolve_placeholders(
        &mut document,
        String::new(),
        &resolver,
        &loaded,
        &mut errors,
    );
    // Placeholders only ever turn strings into strings, so they cannot change the shape.
    let model = deserialize_model(text, &document, file, &loaded.positions)?;
    errors.extend(model.errors);
    loaded.config = model.config;
    loaded.set_aside = model.set_aside;
    loaded.document = document;
    loaded.errors = errors;
    Ok(loaded)
}

/// Enough for any real file; a bound so a pathological one cannot loop for long.
const MAX_STRUCTURAL_ERRORS: usize = 200;

struct Model {
    config: Config,
    errors: Vec<Diagnostic>,
    set_aside: Vec<String>,
}

/// Deserializes the loose model. serde stops at the first value of the wrong shape, so each one
/// is reported, set aside (nulled) and the rest checked again: every structural error is found.
fn deserialize_model(
    text: &str,
    document: &Yaml,
    file: &str,
    positions: &Positions,
) -> Result<Model, LoadError> {
    // The first error comes straight from the file, with serde's exact location.
    let mut pending = serde_yaml_ng::from_str::<Config>(text)
        .err()
        .map(|e| (e, true));
    let mut patched = document.clone();
    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut set_aside: Vec<String> = Vec::new();
    for _ in 0..MAX_STRUCTURAL_ERRORS {
        let Some((error, from_file)) = pending.take() else {
            let config = serde_yaml_ng::from_value(patched).map_err(|e| {
                LoadError::Structure(diagnostic_at(
                    file,
                    positions,
                    ".",
                    strip_location(&e.to_string()),
                ))
            })?;
            return Ok(Model {
                config,
                errors,
                set_aside,
            });
        };
        let d = structure_error(file, positions, &error, from_file);
        let attempts = set_aside.iter().filter(|p| **p == d.path).count();
        if d.path == "." || !set_aside_node(&mut patched, &d.path, attempts) {
            return Err(LoadError::Structure(d));
        }
        if attempts == 0 {
            set_aside.push(d.path.clone());
            errors.push(d);
        } else {
            set_aside.push(d.path);
        }
        // Only errors from text carry key paths, hence the round trip through YAML text; its
        // positions are not the file's, so positions come from the path.
        let retext = serde_yaml_ng::to_string(&patched).map_err(|e| {
            LoadError::Structure(diagnostic_at(file, positions, ".", &e.to_string()))
        })?;
        pending = serde_yaml_ng::from_str::<Config>(&retext)
            .err()
            .map(|e| (e, false));
    }
    Err(LoadError::Structure(diagnostic_at(
        file,
        positions,
        ".",
        "too many values of the wrong shape",
    )))
}

fn diagnostic_at(file: &str, positions: &Positions, path: &str, message: &str) -> Diagnostic {
    let pos = positions.value(path);
    Diagnostic {
        file: file.to_string(),
        line: pos.line,
        column: pos.column,
        path: path.to_string(),
        message: message.to_string(),
        hint: None,
    }
}

/// One step of a key path: `tables[2].schema` is `tables`, `[2]`, `schema`.
enum Step {
    Key(String),
    Index(usize),
}

fn parse_path(path: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !key.is_empty() {
            steps.push(Step::Key(key.to_string()));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let close = inner.find(']')?;
            steps.push(Step::Index(inner[..close].parse().ok()?));
            rest = &inner[close + 1..];
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(steps)
}

/// Replaces the node at `path` with something every model field accepts: a mapping key becomes
/// null (fields are optional), a list item an empty mapping; a second failure removes it.
fn set_aside_node(root: &mut Yaml, path: &str, attempts: usize) -> bool {
    let Some(steps) = parse_path(path) else {
        return false;
    };
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut node = root;
    for step in parents {
        let next = match (step, node) {
            (Step::Key(k), Yaml::Mapping(map)) => map.get_mut(k.as_str()),
            (Step::Index(i), Yaml::Sequence(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match (last, node, attempts) {
        (Step::Key(k), Yaml::Mapping(map), 0) => {
            map.get_mut(k.as_str()).map(|v| *v = Yaml::Null).is_some()
        }
        (Step::Key(k), Yaml::Mapping(map), 1) => map.remove(k.as_str()).is_some(),
        (Step::Index(i), Yaml::Sequence(items), 0) if *i < items.len() => {
            items[*i] = Yaml::Mapping(serde_yaml_ng::Mapping::new());
            true
        }
        (Step::Index(i), Yaml::Sequence(items), 1) if *i < items.len() => {
            items.remove(*i);
            true
        }
        _ => false,
    }
}

/// A structural error from serde_yaml_ng, split into key path and message, placed at the node.
fn structure_error(
    file: &str,
    positions: &Positions,
    error: &serde_yaml_ng::Error,
    from_file: bool,
) -> Diagnostic {
    let text = error.to_string();
    let text = strip_location(&text);
    let (path, message) = split_path(text);
    let pos = match error.location() {
        Some(l) if from_file && !positions.contains(path) => Pos {
            line: l.line(),
            column: l.column(),
        },
        _ => positions.value(path),
    };
    Diagnostic {
        file: file.to_string(),
        line: pos.line,
        column: pos.column,
        path: path.to_string(),
        message: message.to_string(),
        hint: None,
    }
}

/// serde_yaml_ng appends " at line L column C"; the diagnostic carries that separately.
fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(cut) => &message[..cut],
        None => message,
    }
}

/// `tables[0].schema: invalid type: ...` → (`tables[0].schema`, `invalid type: ...`); messages at
/// the root have no path prefix.
fn split_path(message: &str) -> (&str, &str) {
    if let Some((head, tail)) = message.split_once(": ")
        && !head.is_empty()
        && !head.contains(' ')
    {
        return (head, tail);
    }
    (".", message)
}

fn resolve_placeholders(
    node: &mut Yaml,
    path: String,
    resolver: &Resolver<'_>,
    loaded: &LoadedConfig,
    errors: &mut Vec<Diagnostic>,
) {
    match node {
        Yaml::String(text) => match resolver.resolve(text) {
            Ok(resolved) => {
                if let std::borrow::Cow::Owned(new) = resolved {
                    *text = new;
                }
            }
            Err(e) => {
                let mut d = loaded.at(&path, e.to_string());
                d.hint = e.hint();
                errors.push(d);
            }
        },
        Yaml::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve_placeholders(item, child_index(&path, i), resolver, loaded, errors);
            }
        }
        Yaml::Mapping(map) => {
            for (key, value) in map.iter_mut() {
                let child = child_key(&path, &key_text(key));
                resolve_placeholders(value, child, resolver, loaded, errors);
            }
        }
        Yaml::Tagged(tagged) => {
            resolve_placeholders(&mut tagged.value, path, resolver, loaded, errors)
        }
        Yaml::Null | Yaml::Bool(_) | Yaml::Number(_) => {}
    }
}

/// A mapping key as it appears in key paths.
pub(crate) fn key_text(key: &Yaml) -> String {
    match key {
        Yaml::String(s) => s.clone(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Null => "~".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> LoadContext {
        LoadContext {
            stack_name: "demo".into(),
            account_id: None,
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn placeholders_are_resolved_in_values_and_keep_positions() {
        let text = "settings:\n  delta_bucket: \"${STACK_NAME}-delta-${AWS_ACCOUNT_ID}\"\n  quarantine_path: ${ENV:Q_PATH}\ntables: []\n";
        let loaded = load_str_with_env(text, "t.yaml", &ctx(), &no_env).unwrap();
        let settings = loaded.config.settings.as_ref().unwrap();
        assert_eq!(settings.delta_bucket.as_deref(), Some("demo-delta-local"));
        assert_eq!(loaded.errors.len(), 1);
        let unset = &loaded.errors[0];
        assert_eq!(
            (unset.line, unset.path.as_str()),
            (3, "settings.quarantine_path")
        );
        assert!(
            unset.message.contains("`Q_PATH` is not set"),
            "{}",
            unset.message
        );
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let err = load_str_with_env(
            "tables:\n  - name: a\n   bad: [\n",
            "t.yaml",
            &ctx(),
            &no_env,
        )
        .unwrap_err();
        let LoadError::Syntax(d) = &err else {
            panic!("expected a syntax error, got {err:?}")
        };
        assert!(d.line >= 3, "{d}");
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn every_structural_error_is_reported_and_its_value_set_aside() {
        let text = "tables:\n  - name: a\n    schema:\n      - {name: id, type: integer, nullable: maybe}\n      - just-a-string\n    transforms: {id: t1}\n";
        let loaded = load_str_with_env(text, "t.yaml", &ctx(), &no_env).unwrap();
        let found: Vec<(usize, &str)> = loaded
            .errors
            .iter()
            .map(|d| (d.line, d.path.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (4, "tables[0].schema[0].nullable"),
                (5, "tables[0].schema[1]"),
                (6, "tables[0].transforms")
            ]
        );
        assert!(
            loaded.errors[0].message.contains("expected a boolean"),
            "{}",
            loaded.errors[0]
        );
        let table = &loaded.config.tables.as_ref().unwrap()[0];
        assert_eq!(
            table.schema.as_ref().map(Vec::len),
            Some(2),
            "the bad column is kept as an empty one"
        );
        assert!(table.transforms.is_none());
        assert_eq!(loaded.set_aside.len(), 3);
    }

    #[test]
    fn a_document_that_is_not_a_mapping_is_a_structural_load_error() {
        let err = load_str_with_env("- a\n- b\n", "t.yaml", &ctx(), &no_env).unwrap_err();
        assert!(matches!(err, LoadError::Structure(_)), "{err:?}");
    }

    #[test]
    fn key_paths_parse_into_steps() {
        let steps = parse_path("tables[2].schema[10].name").unwrap();
        assert_eq!(steps.len(), 5);
        assert!(matches!(&steps[3], Step::Index(10)));
        assert!(parse_path("a[x]").is_none());
    }

    #[test]
    fn an_empty_file_is_an_empty_config() {
        let loaded = load_str_with_env("", "t.yaml", &ctx(), &no_env).unwrap();
        assert!(loaded.config.tables.is_none());
    }

    #[test]
    fn a_missing_file_is_a_read_error_with_exit_code_2() {
        let err = load(Path::new("/nonexistent/tables.yaml"), &ctx()).unwrap_err();
        assert!(matches!(err, LoadError::Read { .. }));
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn root_messages_have_no_path() {
        assert_eq!(
            split_path("invalid type: sequence, expected struct Config"),
            (".", "invalid type: sequence, expected struct Config")
        );
        assert_eq!(
            split_path("tables: invalid type: string"),
            ("tables", "invalid type: string")
        );
        assert_eq!(strip_location("x: bad at line 3 column 4"), "x: bad");
    }
}
