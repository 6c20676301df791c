//! Deequ-style metrics through mergeable states (Deequ's algebraic states), per batch and
//! cumulative per table.
//!
//! What is measured: the rows a batch leaves as the current version of their key — each key's
//! last event that passed the error rules, when it is not a delete — with their decoded (pre-
//! transform) values, which the checks' columns and patterns are written against. The original
//! measured raw CDC events (every version, deletes and rejected rows included), so two updates of
//! one key lowered Uniqueness of the key (its bug 6.1.10).
//!
//! Definitions (Deequ 2.0): Size = rows; Completeness = non-null / rows; Uniqueness = values
//! occurring exactly once / rows (NULL rows count in the denominator only); Compliance = rows
//! where the predicate is true / rows (NULL counts as false); RuleFailureRate = rule failures /
//! rows the rule evaluated (insert/update/load events, quarantined ones included).
//!
//! Cumulative metrics merge the batch states, so they are the metrics of all measured rows so far:
//! a key updated in several batches is measured once per batch (as Deequ on appended data would).
//! Uniqueness keeps a frequency per distinct value (a 64-bit digest of the value's text form, so
//! no values are held), which grows with the number of distinct values, as Deequ's does.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Schema};
use deltalake::datafusion::common::DFSchema;
use deltalake::datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use crate::config::spec::{CompliancePredicate, MetricCheckSpec, MetricKind, TableSpec};

use super::anomaly::MetricHistory;
use super::digest_set::DigestSet;
use super::error::{PipelineError, Result};
use super::plan::MetricRow;
use super::rules::RuleOutcome;
use super::values::ColumnValues;

pub const SCOPE_BATCH: &str = "batch";
pub const SCOPE_CUMULATIVE: &str = "cumulative";
/// `metric_name` of a rule's failure rate (the column is the rule id).
pub const RULE_FAILURE_RATE: &str = "RuleFailureRate";

/// Matches over rows: the state of Completeness, Compliance and rule failure rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ratio {
    pub matches: u64,
    pub rows: u64,
}

impl Ratio {
    fn merge(&mut self, other: Ratio) {
        self.matches += other.matches;
        self.rows += other.rows;
    }

    fn value(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.matches as f64 / self.rows as f64)
    }
}

/// Digest of a value's text form → occurrences. The keys are already XXH64 digests, so a cheap
/// multiplicative hasher spreads them well; SipHash was a visible cost per row.
pub type DigestCounts = HashMap<u64, u64, rustc_hash::FxBuildHasher>;

/// Deequ's FrequenciesAndNumRows: how often each non-null value occurred, and all rows.
///
/// Nearly every value of a key column occurs once, so those are kept as bare digests (9 bytes a
/// slot instead of 17 with a count): the cumulative state of a table holds one per distinct value
/// ever seen, and is the largest thing a long-running processor keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frequencies {
    /// Values that occurred exactly once.
    once: DigestSet,
    /// Values that occurred more than once, with their counts.
    more: DigestCounts,
    rows: u64,
}

impl Frequencies {
    /// From a count per value (tests build states this way; batches count with [`Frequencies::add`]).
    #[cfg(test)]
    pub fn new(counts: DigestCounts, rows: u64) -> Frequencies {
        let singles = counts.values().filter(|&&c| c == 1).count();
        let mut frequencies = Frequencies::with_capacity(singles, rows);
        for (value, count) in counts {
            frequencies.add(value, count);
        }
        frequencies
    }

    fn distinct(&self) -> usize {
        self.once.len() + self.more.len()
    }

    fn count(&self, value: &u64) -> u64 {
        if self.once.contains(value) {
            1
        } else {
            self.more.get(value).copied().unwrap_or(0)
        }
    }

    /// No values yet, of `rows` rows, with room for `capacity` distinct values.
    fn with_capacity(capacity: usize, rows: u64) -> Frequencies {
        Frequencies {
            once: DigestSet::with_capacity(capacity),
            more: DigestCounts::default(),
            rows,
        }
    }

    /// Counts `count` more occurrences of `value`. A value is in `once` or in `more`, never in
    /// both; a new value costs one lookup in `more` (small for a key column) and one insert.
    fn add(&mut self, value: u64, count: u64) {
        if count == 0 {
            return;
        }
        if let Some(seen) = self.more.get_mut(&value) {
            *seen += count;
        } else if count == 1 {
            if !self.once.insert(value) {
                self.once.remove(&value);
                self.more.insert(value, 2);
            }
        } else if self.once.remove(&value) {
            self.more.insert(value, 1 + count);
        } else {
            self.more.insert(value, count);
        }
    }

    /// Every value with its count.
    fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.once
            .iter()
            .map(|&value| (value, 1))
            .chain(self.more.iter().map(|(&value, &count)| (value, count)))
    }

    fn merge(&mut self, other: Frequencies) {
        // The smaller state is folded into the larger one.
        let (mut base, smaller) = if self.distinct() < other.distinct() {
            (other, std::mem::take(self))
        } else {
            (std::mem::take(self), other)
        };
        for (value, count) in smaller.entries() {
            base.add(value, count);
        }
        base.rows += smaller.rows;
        *self = base;
    }

    fn uniqueness(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.once.len() as f64 / self.rows as f64)
    }

    /// Uniqueness of `self` and `other` merged, found by looking the smaller state's values up
    /// in the larger one: the cumulative state (a digest per distinct value ever seen) is not
    /// copied.
    fn merged_uniqueness(&self, other: &Frequencies) -> Option<f64> {
        let (larger, smaller) = if self.distinct() >= other.distinct() {
            (self, other)
        } else {
            (other, self)
        };
        let mut once = larger.once.len();
        for (value, count) in smaller.entries() {
            let seen = larger.count(&value);
            if seen == 1 {
                once -= 1;
            }
            if seen + count == 1 {
                once += 1;
            }
        }
        let rows = self.rows + other.rows;
        (rows > 0).then(|| once as f64 / rows as f64)
    }
}

/// How [`Frequencies`] are saved: the state is saved after every batch and holds a digest per
/// distinct value, so it is kept compact — the digests seen once (nearly all of them for a key
/// column) as one base64 string of little-endian u64s, the others as pairs.
#[derive(Deserialize)]
struct FrequenciesWire {
    rows: u64,
    once: String,
    more: Vec<(u64, u64)>,
}

/// [`FrequenciesWire`] as written, streaming the digests.
#[derive(Serialize)]
struct FrequenciesWireOut<'a> {
    rows: u64,
    once: OnceDigests<'a>,
    more: Vec<(u64, u64)>,
}

/// The digests seen once, written as base64 straight from the set: a whole state holds millions
/// of them, and their bytes and base64 text laid out first were twice its size again in memory.
struct OnceDigests<'a>(&'a DigestSet);

impl std::fmt::Display for OnceDigests<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Three digests are 24 bytes, a whole number of base64 groups: the chunks' encodings
        // joined are the encoding of all the bytes, with padding only at the end.
        const CHUNK: usize = 3;
        let mut bytes = [0_u8; 8 * CHUNK];
        let mut text = [0_u8; 32];
        let mut digests = self.0.iter().peekable();
        while digests.peek().is_some() {
            let mut filled = 0;
            for digest in digests.by_ref().take(CHUNK) {
                bytes[filled..filled + 8].copy_from_slice(&digest.to_le_bytes());
                filled += 8;
            }
            let written = BASE64
                .encode_slice(&bytes[..filled], &mut text)
                .map_err(|_| std::fmt::Error)?;
            f.write_str(std::str::from_utf8(&text[..written]).map_err(|_| std::fmt::Error)?)?;
        }
        Ok(())
    }
}

impl Serialize for OnceDigests<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Serialize for Frequencies {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        FrequenciesWireOut {
            rows: self.rows,
            once: OnceDigests(&self.once),
            more: self.more.iter().map(|(&v, &c)| (v, c)).collect(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Frequencies {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        let wire = FrequenciesWire::deserialize(deserializer)?;
        let once = BASE64
            .decode(wire.once.as_bytes())
            .map_err(|e| D::Error::custom(format!("uniqueness digests are not base64: {e}")))?;
        if once.len() % 8 != 0 {
            return Err(D::Error::custom(format!(
                "uniqueness digests hold {} bytes, not a multiple of 8",
                once.len()
            )));
        }
        let mut frequencies = Frequencies::with_capacity(once.len() / 8, wire.rows);
        for chunk in once.chunks_exact(8) {
            let mut digest = [0_u8; 8];
            digest.copy_from_slice(chunk);
            frequencies.add(u64::from_le_bytes(digest), 1);
        }
        for (value, count) in wire.more {
            frequencies.add(value, count);
        }
        Ok(frequencies)
    }
}

/// The mergeable metric state of one table: one batch's, or every batch's so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableMetricState {
    /// Size.
    pub rows: u64,
    /// Completeness, by column.
    pub completeness: BTreeMap<String, Ratio>,
    /// Compliance, by check name.
    pub compliance: BTreeMap<String, Ratio>,
    /// Uniqueness, by column.
    pub uniqueness: BTreeMap<String, Frequencies>,
    /// Failure rate, by rule id.
    pub rule_failures: BTreeMap<String, Ratio>,
    /// The earlier values of each anomaly check's metric, by
    /// [`history_key`](super::anomaly::history_key).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub anomaly_history: BTreeMap<String, MetricHistory>,
}

impl TableMetricState {
    /// About how many bytes the state takes saved (as JSON): the Uniqueness digests dominate.
    pub fn saved_size_hint(&self) -> usize {
        let ratios = self.completeness.len() + self.compliance.len() + self.rule_failures.len();
        let digests: usize = self
            .uniqueness
            .values()
            // A digest seen once: 8 bytes in base64; one seen more: a pair of numbers.
            .map(|f| f.once.len() * 11 + f.more.len() * 42)
            .sum();
        64 * (1 + ratios + self.uniqueness.len()) + 160 * self.anomaly_history.len() + digests
    }

    /// Adds `other` in: the result describes the rows of both.
    pub fn merge(&mut self, other: TableMetricState) {
        self.rows += other.rows;
        for (column, ratio) in other.completeness {
            self.completeness.entry(column).or_default().merge(ratio);
        }
        for (name, ratio) in other.compliance {
            self.compliance.entry(name).or_default().merge(ratio);
        }
        for (column, frequencies) in other.uniqueness {
            self.uniqueness
                .entry(column)
                .or_default()
                .merge(frequencies);
        }
        for (rule, ratio) in other.rule_failures {
            self.rule_failures.entry(rule).or_default().merge(ratio);
        }
        for (check, history) in other.anomaly_history {
            self.anomaly_history
                .entry(check)
                .or_default()
                .merge(history);
        }
    }
}

/// Measures `rows` (source columns, config names and types) for the table's checks, and the
/// rule outcomes for failure rates.
pub(crate) fn measure(
    table: &TableSpec,
    rows: &RecordBatch,
    outcomes: &[RuleOutcome],
) -> Result<TableMetricState> {
    let n = rows.num_rows() as u64;
    let mut state = TableMetricState {
        rows: n,
        ..TableMetricState::default()
    };
    for check in &table.checks {
        match &check.kind {
            MetricKind::Size => {}
            MetricKind::Completeness => {
                let column = check_column(table, rows, check)?;
                let non_null = (column.len() - column.null_count()) as u64;
                state.completeness.insert(
                    check_column_name(check),
                    Ratio {
                        matches: non_null,
                        rows: n,
                    },
                );
            }
            MetricKind::Uniqueness => {
                let column = check_column(table, rows, check)?;
                let values =
                    ColumnValues::new(&column).ok_or_else(|| unknown_column(table, check))?;
                let mut frequencies = Frequencies::with_capacity(column.len(), n);
                let mut text = String::new();
                for row in 0..column.len() {
                    text.clear();
                    if values.write_text(row, &mut text) {
                        frequencies.add(digest(&text), 1);
                    }
                }
                state
                    .uniqueness
                    .insert(check_column_name(check), frequencies);
            }
            MetricKind::Compliance { name, predicate } => {
                let matches = match predicate {
                    CompliancePredicate::Pattern(pattern) => {
                        let column = check_column(table, rows, check)?;
                        let values = ColumnValues::new(&column)
                            .ok_or_else(|| unknown_column(table, check))?;
                        (0..column.len())
                            .filter(|&row| values.text(row).is_some_and(|t| pattern.is_match(&t)))
                            .count() as u64
                    }
                    CompliancePredicate::Expression(expression) => {
                        if n == 0 {
                            0
                        } else {
                            expression_true_count(table, name, expression, rows)?
                        }
                    }
                };
                state
                    .compliance
                    .insert(name.clone(), Ratio { matches, rows: n });
            }
        }
    }
    for outcome in outcomes {
        let rule = &table.rules[outcome.rule];
        state.rule_failures.insert(
            rule.id.clone(),
            Ratio {
                matches: outcome.failures,
                rows: outcome.evaluated,
            },
        );
    }
    Ok(state)
}

/// The values the `dq_metrics` rows report, read from one state or from two as if merged.
pub(crate) trait MetricValues {
    fn size(&self) -> u64;
    fn completeness(&self, column: &str) -> Option<f64>;
    fn uniqueness(&self, column: &str) -> Option<f64>;
    fn compliance(&self, name: &str) -> Option<f64>;
    fn rule_failure_rate(&self, rule: &str) -> Option<f64>;
}

impl MetricValues for TableMetricState {
    fn size(&self) -> u64 {
        self.rows
    }

    fn completeness(&self, column: &str) -> Option<f64> {
        self.completeness.get(column).and_then(Ratio::value)
    }

    fn uniqueness(&self, column: &str) -> Option<f64> {
        self.uniqueness
            .get(column)
            .and_then(Frequencies::uniqueness)
    }

    fn compliance(&self, name: &str) -> Option<f64> {
        self.compliance.get(name).and_then(Ratio::value)
    }

    fn rule_failure_rate(&self, rule: &str) -> Option<f64> {
        self.rule_failures.get(rule).and_then(Ratio::value)
    }
}

/// A cumulative state with one more batch's state, read as if merged (see
/// [`TableMetricState::merge`]) without building the merged state.
pub(crate) struct Merged<'a> {
    pub cumulative: &'a TableMetricState,
    pub batch: &'a TableMetricState,
}

impl Merged<'_> {
    fn ratio(a: Option<&Ratio>, b: Option<&Ratio>) -> Option<f64> {
        let mut merged = a.copied().unwrap_or_default();
        merged.merge(b.copied().unwrap_or_default());
        merged.value()
    }
}

impl MetricValues for Merged<'_> {
    fn size(&self) -> u64 {
        self.cumulative.rows + self.batch.rows
    }

    fn completeness(&self, column: &str) -> Option<f64> {
        Merged::ratio(
            self.cumulative.completeness.get(column),
            self.batch.completeness.get(column),
        )
    }

    fn uniqueness(&self, column: &str) -> Option<f64> {
        match (
            self.cumulative.uniqueness.get(column),
            self.batch.uniqueness.get(column),
        ) {
            (Some(a), Some(b)) => a.merged_uniqueness(b),
            (Some(one), None) | (None, Some(one)) => one.uniqueness(),
            (None, None) => None,
        }
    }

    fn compliance(&self, name: &str) -> Option<f64> {
        Merged::ratio(
            self.cumulative.compliance.get(name),
            self.batch.compliance.get(name),
        )
    }

    fn rule_failure_rate(&self, rule: &str) -> Option<f64> {
        Merged::ratio(
            self.cumulative.rule_failures.get(rule),
            self.batch.rule_failures.get(rule),
        )
    }
}

/// The `dq_metrics` rows of a state: the checks in config order, then each rule's failure rate.
/// Ratios over zero rows have no value and are left out (Deequ reports them as failures to
/// compute, not as numbers); Size is always there.
pub(crate) fn metric_rows(
    table: &TableSpec,
    state: &impl MetricValues,
    scope: &'static str,
) -> Vec<MetricRow> {
    let mut out = Vec::new();
    for check in &table.checks {
        let (column_name, value) = check_value(check, state);
        if let Some(value) = value {
            out.push(MetricRow {
                table_name: table.name.clone(),
                metric_name: check.metric_name().to_owned(),
                column_name,
                metric_value: value,
                threshold: check.threshold,
                passed: check.threshold.is_none_or(|t| value >= t),
                scope,
            });
        }
    }
    for rule in &table.rules {
        if let Some(value) = state.rule_failure_rate(&rule.id) {
            out.push(MetricRow {
                table_name: table.name.clone(),
                metric_name: RULE_FAILURE_RATE.to_owned(),
                column_name: Some(rule.id.clone()),
                metric_value: value,
                threshold: None,
                passed: true,
                scope,
            });
        }
    }
    out
}

/// A check's instance as `dq_metrics.column_name` names it (the column, or a compliance check's
/// name; None for Size) and its value in `state`, if it has one.
pub(crate) fn check_value(
    check: &MetricCheckSpec,
    state: &impl MetricValues,
) -> (Option<String>, Option<f64>) {
    match &check.kind {
        MetricKind::Size => (None, Some(state.size() as f64)),
        MetricKind::Completeness => {
            let column = check_column_name(check);
            let value = state.completeness(&column);
            (Some(column), value)
        }
        MetricKind::Uniqueness => {
            let column = check_column_name(check);
            let value = state.uniqueness(&column);
            (Some(column), value)
        }
        MetricKind::Compliance { name, .. } => (Some(name.clone()), state.compliance(name)),
    }
}

fn check_column_name(check: &MetricCheckSpec) -> String {
    check.column.clone().unwrap_or_default()
}

fn unknown_column(table: &TableSpec, check: &MetricCheckSpec) -> PipelineError {
    PipelineError::UnknownColumn {
        table: table.name.clone(),
        context: format!("{} check", check.metric_name()),
        column: check_column_name(check),
    }
}

fn check_column(
    table: &TableSpec,
    rows: &RecordBatch,
    check: &MetricCheckSpec,
) -> Result<deltalake::arrow::array::ArrayRef> {
    let column = check
        .column
        .as_deref()
        .ok_or_else(|| unknown_column(table, check))?;
    rows.column_by_name(column)
        .cloned()
        .ok_or_else(|| unknown_column(table, check))
}

/// A stable 64-bit digest of a value's text form (XXH64: persisted states stay comparable across
/// versions and machines, and it costs a few nanoseconds per value).
fn digest(text: &str) -> u64 {
    twox_hash::XxHash64::oneshot(0, text.as_bytes())
}

/// Parses SQL expressions; a pure in-memory context (no tables, no I/O).
static EXPRESSIONS: LazyLock<SessionContext> = LazyLock::new(SessionContext::new);

fn expression_error(
    table: &TableSpec,
    name: &str,
    expression: &str,
) -> impl FnOnce(deltalake::datafusion::error::DataFusionError) -> PipelineError + use<> {
    let (table, name, expression) = (table.name.clone(), name.to_owned(), expression.to_owned());
    move |source| PipelineError::ComplianceExpression {
        table,
        name,
        expression,
        source: Box::new(source),
    }
}

/// Rows where a SQL boolean expression is true, evaluated with DataFusion's expression engine.
fn expression_true_count(
    table: &TableSpec,
    name: &str,
    expression: &str,
    rows: &RecordBatch,
) -> Result<u64> {
    let schema = DFSchema::try_from(rows.schema().as_ref().clone())
        .map_err(expression_error(table, name, expression))?;
    let logical = EXPRESSIONS
        .parse_sql_expr(expression, &schema)
        .map_err(expression_error(table, name, expression))?;
    let physical = EXPRESSIONS
        .create_physical_expr(logical, &schema)
        .map_err(expression_error(table, name, expression))?;
    let result = physical
        .evaluate(rows)
        .and_then(|value| value.into_array(rows.num_rows()))
        .map_err(expression_error(table, name, expression))?;
    let booleans = result
        .as_boolean_opt()
        .ok_or_else(|| PipelineError::ComplianceNotBoolean {
            table: table.name.clone(),
            name: name.to_owned(),
            expression: expression.to_owned(),
            data_type: result.data_type().clone(),
        })?;
    Ok(booleans.true_count() as u64)
}

/// Checks that a compliance expression parses and is boolean over the table's source columns
/// (for config validation).
pub fn check_compliance_expression(table: &TableSpec, name: &str, expression: &str) -> Result<()> {
    let schema = Schema::new(super::schema::source_fields(table));
    let df_schema =
        DFSchema::try_from(schema.clone()).map_err(expression_error(table, name, expression))?;
    let logical = EXPRESSIONS
        .parse_sql_expr(expression, &df_schema)
        .map_err(expression_error(table, name, expression))?;
    let physical = EXPRESSIONS
        .create_physical_expr(logical, &df_schema)
        .map_err(expression_error(table, name, expression))?;
    let data_type = physical
        .data_type(&schema)
        .map_err(expression_error(table, name, expression))?;
    if data_type != DataType::Boolean {
        return Err(PipelineError::ComplianceNotBoolean {
            table: table.name.clone(),
            name: name.to_owned(),
            expression: expression.to_owned(),
            data_type,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequencies_survive_their_compact_form() {
        let frequencies = Frequencies::new(
            (0..1000_u64)
                .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15), 1 + i % 3))
                .collect(),
            2500,
        );
        let mut state = TableMetricState::default();
        state.uniqueness.insert("id".into(), frequencies);
        let text = serde_json::to_string(&state).expect("serialize");
        let back: TableMetricState = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, state);
        assert_eq!(
            back.uniqueness["id"].uniqueness(),
            Some(334.0 / 2500.0),
            "values seen once over all rows"
        );
    }

    #[test]
    fn values_counted_one_at_a_time_or_in_bulk_agree() {
        let values = [5_u64, 1, 2, 1, 3, 1, 2, 5, 5, 5, 4];
        let mut one_at_a_time = Frequencies::with_capacity(2, 12);
        for value in values {
            one_at_a_time.add(value, 1);
        }
        let counts = [(1, 3), (2, 2), (3, 1), (4, 1), (5, 4)]
            .into_iter()
            .collect();
        assert_eq!(one_at_a_time, Frequencies::new(counts, 12));
        assert_eq!(one_at_a_time.uniqueness(), Some(2.0 / 12.0));
        one_at_a_time.add(3, 2);
        one_at_a_time.add(6, 2);
        assert_eq!(one_at_a_time.count(&3), 3);
        assert_eq!(one_at_a_time.count(&6), 2);
        assert_eq!(one_at_a_time.uniqueness(), Some(1.0 / 12.0));
    }

    #[test]
    fn merged_uniqueness_counts_the_values_seen_once_overall() {
        let a = Frequencies::new([(1, 1), (2, 1), (3, 2)].into_iter().collect(), 4);
        let b = Frequencies::new([(2, 1), (4, 1)].into_iter().collect(), 3);
        // Overall 1 → 1, 2 → 2, 3 → 2, 4 → 1, and one NULL row: 2 values seen once in 7 rows.
        for (left, right) in [(a.clone(), b.clone()), (b, a)] {
            assert_eq!(left.merged_uniqueness(&right), Some(2.0 / 7.0));
            let mut merged = left;
            merged.merge(right);
            assert_eq!(merged.uniqueness(), Some(2.0 / 7.0));
            let overall = [(1, 1), (2, 2), (3, 2), (4, 1)].into_iter().collect();
            assert_eq!(merged, Frequencies::new(overall, 7));
        }
    }

    #[test]
    fn saved_digests_are_the_base64_of_their_bytes_and_read_back_equal() {
        // Up to seven digests: whole chunks of three, and tails of one and two.
        for n in 0..8u64 {
            let digests: Vec<u64> = (0..n)
                .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .collect();
            let counts = digests
                .iter()
                .map(|&d| (d, 1))
                .chain([(u64::MAX, 3)])
                .collect();
            let frequencies = Frequencies::new(counts, n + 4);
            let saved = serde_json::to_value(&frequencies).unwrap();
            let once = saved["once"].as_str().expect("a string");
            let bytes: Vec<u8> = frequencies
                .once
                .iter()
                .flat_map(|d| d.to_le_bytes())
                .collect();
            assert_eq!(once, BASE64.encode(&bytes), "{n} digests");
            assert_eq!(saved["more"], serde_json::json!([[u64::MAX, 3]]));
            let read: Frequencies = serde_json::from_value(saved).unwrap();
            assert_eq!(read, frequencies, "{n} digests");
        }
    }

    #[test]
    fn damaged_digests_are_an_error_that_says_so() {
        let damaged = r#"{"rows":3,"once":"AAAA","more":[]}"#;
        let error = serde_json::from_str::<Frequencies>(damaged).expect_err("3 bytes");
        assert!(error.to_string().contains("not a multiple of 8"), "{error}");
        let error = serde_json::from_str::<Frequencies>(r#"{"rows":1,"once":"@@","more":[]}"#)
            .expect_err("not base64");
        assert!(error.to_string().contains("not base64"), "{error}");
    }
}
