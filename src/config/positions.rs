//! Line and column of every node of a YAML document, by key path (`tables[2].dq_rules[0].params.min`).
//!
//! The path syntax is the one serde_yaml_ng prints in its errors, so positions of structural
//! errors and of validation findings are looked up the same way.

use std::collections::HashMap;

use saphyr::{MarkedYaml, Scalar, YamlData};

/// A 1-based place in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };
}

/// Positions of the values and mapping keys of one document.
#[derive(Debug, Clone, Default)]
pub struct Positions {
    values: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
}

impl Positions {
    pub fn from_document(root: &MarkedYaml<'_>) -> Self {
        let mut positions = Positions::default();
        positions.visit(root, String::new());
        positions
    }

    fn visit(&mut self, node: &MarkedYaml<'_>, path: String) {
        self.values.insert(path.clone(), pos_of(node));
        match &node.data {
            YamlData::Mapping(map) => {
                for (key, value) in map {
                    let Some(name) = key_text(key) else { continue };
                    let child = child_key(&path, &name);
                    self.keys.insert(child.clone(), pos_of(key));
                    self.visit(value, child);
                }
            }
            YamlData::Sequence(items) => {
                for (index, item) in items.iter().enumerate() {
                    self.visit(item, child_index(&path, index));
                }
            }
            YamlData::Tagged(_, inner) => self.visit(inner, path),
            _ => {}
        }
    }

    /// Where the value at `path` starts; the nearest enclosing node when the path is absent
    /// (e.g. a missing key reports at its parent).
    pub fn value(&self, path: &str) -> Pos {
        let mut current = path;
        loop {
            if let Some(pos) = self.values.get(normalize(current)) {
                return *pos;
            }
            match parent(current) {
                Some(p) => current = p,
                None => return Pos::START,
            }
        }
    }

    /// Where the key at `path` is written; falls back to [`Positions::value`].
    pub fn key(&self, path: &str) -> Pos {
        self.keys
            .get(normalize(path))
            .copied()
            .unwrap_or_else(|| self.value(path))
    }

    /// Whether the document has a node at exactly this path.
    pub fn contains(&self, path: &str) -> bool {
        self.values.contains_key(normalize(path))
    }
}

/// serde_yaml_ng names the root `.`; the map stores it as the empty path.
fn normalize(path: &str) -> &str {
    if path == "." { "" } else { path }
}

/// `a.b[3].c` → `a.b[3]` → `a.b` → `a` → `` → None.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() || path == "." {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

pub fn child_key(parent: &str, key: &str) -> String {
    if parent.is_empty() || parent == "." {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

pub fn child_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

fn pos_of(node: &MarkedYaml<'_>) -> Pos {
    let start = node.span.start;
    Pos {
        line: start.line().max(1),
        column: start.col() + 1,
    }
}

fn key_text(key: &MarkedYaml<'_>) -> Option<String> {
    match &key.data {
        YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
        YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
        YamlData::Value(Scalar::Boolean(b)) => Some(b.to_string()),
        YamlData::Value(Scalar::FloatingPoint(f)) => Some(f.to_string()),
        YamlData::Value(Scalar::Null) => Some("~".to_string()),
        YamlData::Representation(s, _, _) => Some(s.to_string()),
        YamlData::Tagged(_, inner) => key_text(inner),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use saphyr::LoadableYamlNode;

    use super::*;

    fn positions(text: &str) -> Positions {
        let docs = MarkedYaml::load_from_str(text).expect("test yaml parses");
        Positions::from_document(&docs[0])
    }

    const DOC: &str = "\
settings:
  trigger_interval: 10s
tables:
  - name: a
    dq_rules:
      - {id: r1, type: range, params: {min: abc}}
  - name: b
";

    #[test]
    fn block_and_flow_nodes_have_their_line_and_column() {
        let p = positions(DOC);
        assert_eq!(
            p.value("settings.trigger_interval"),
            Pos {
                line: 2,
                column: 21
            }
        );
        assert_eq!(
            p.key("settings.trigger_interval"),
            Pos { line: 2, column: 3 }
        );
        assert_eq!(
            p.value("tables[1].name"),
            Pos {
                line: 7,
                column: 11
            }
        );
        assert_eq!(
            p.value("tables[0].dq_rules[0].params.min"),
            Pos {
                line: 6,
                column: 45
            }
        );
        assert_eq!(
            p.key("tables[0].dq_rules[0].params.min"),
            Pos {
                line: 6,
                column: 40
            }
        );
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_parent() {
        let p = positions(DOC);
        assert_eq!(
            p.value("tables[0].dq_rules[0].params.max"),
            p.value("tables[0].dq_rules[0].params")
        );
        assert_eq!(p.value("tables[0].primary_key"), p.value("tables[0]"));
        assert_eq!(p.value("nothing.here"), p.value("."));
        assert!(p.contains("tables[1].name"));
        assert!(!p.contains("tables[2]"));
    }

    #[test]
    fn parents_walk_up_keys_and_indexes() {
        assert_eq!(parent("a.b[3].c"), Some("a.b[3]"));
        assert_eq!(parent("a.b[3]"), Some("a.b"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
    }
}
