//! A problem found in a config file, pointing at the file, line, column and key path.

use std::fmt;

use serde::Serialize;

/// One error or warning about the config, e.g.
/// `config/tables.yaml:42:9: tables[2].dq_rules[0].params.min: expected a number, found "abc"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    /// Key path such as `tables[2].dq_rules[0].params.min`; `.` is the whole document.
    pub path: String,
    pub message: String,
    /// A suggestion such as "did you mean `dq_rules`?".
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.path, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// The closest candidate to a misspelt word, if one is close enough to be a likely typo.
pub fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| {
            (
                strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(distance, c)| *distance <= typo_budget(c.len().max(word.len())))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// How many edits still count as a typo: one for short words, up to a third of longer ones.
fn typo_budget(len: usize) -> usize {
    (len / 3).max(1)
}

/// "did you mean `x`?" for the closest candidate, if any.
pub fn did_you_mean<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE_KEYS: &[&str] = &[
        "name",
        "topic",
        "schema",
        "dq_rules",
        "transforms",
        "deequ_checks",
        "indexes",
    ];

    #[test]
    fn suggests_the_plural_key() {
        assert_eq!(
            did_you_mean("dq_rule", TABLE_KEYS.iter().copied()),
            Some("did you mean `dq_rules`?".into())
        );
        assert_eq!(
            closest("transform", TABLE_KEYS.iter().copied()),
            Some("transforms")
        );
        assert_eq!(
            closest("deequ_check", TABLE_KEYS.iter().copied()),
            Some("deequ_checks")
        );
    }

    #[test]
    fn suggests_across_case_and_transpositions() {
        assert_eq!(
            closest("Schema", TABLE_KEYS.iter().copied()),
            Some("schema")
        );
        assert_eq!(closest("nmae", TABLE_KEYS.iter().copied()), Some("name"));
    }

    #[test]
    fn stays_quiet_for_unrelated_words() {
        assert_eq!(closest("partition_by", TABLE_KEYS.iter().copied()), None);
        assert_eq!(closest("x", TABLE_KEYS.iter().copied()), None);
    }

    #[test]
    fn display_is_file_line_column_path_message_hint() {
        let d = Diagnostic {
            file: "config/tables.yaml".into(),
            line: 42,
            column: 9,
            path: "tables[2].dq_rules[0].params.min".into(),
            message: "expected a number, found \"abc\"".into(),
            hint: None,
        };
        assert_eq!(
            d.to_string(),
            "config/tables.yaml:42:9: tables[2].dq_rules[0].params.min: expected a number, found \"abc\""
        );
        let hinted = Diagnostic {
            hint: Some("did you mean `dq_rules`?".into()),
            ..d
        };
        assert!(
            hinted
                .to_string()
                .ends_with("found \"abc\" (did you mean `dq_rules`?)")
        );
    }
}
