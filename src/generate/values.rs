//! Values derived from a column's type and DQ rules: valid ones (passing every rule on the
//! column) and violations of one rule. Every candidate is judged by the rule's own predicate
//! (`check::fails`) and by what the source database accepts (`TableShape::accepts`), so a value
//! is never called valid or violating on faith.

use chrono::{Duration, NaiveDateTime, SecondsFormat};
use rand::Rng;
use rand::rngs::SmallRng;

use crate::config::spec::{ColumnType, RuleKind};

use super::check;
use super::pattern::Pattern;
use super::row::{Decimal, Value};
use super::shape::{Storage, TableShape};

/// Samples tried before a column is declared unable to produce a valid value.
const ATTEMPTS: usize = 64;
/// Width of a one-sided or open range the generator draws from.
const OPEN_SPAN: f64 = 1000.0;

/// What a sample needs besides the column: randomness, a counter for distinct values, a clock.
pub(crate) struct SampleContext<'a> {
    pub rng: &'a mut SmallRng,
    pub seq: u64,
    pub now: NaiveDateTime,
}

/// How valid values of one column are made.
#[derive(Debug, Clone)]
enum Strategy {
    /// One of the `allowed_values`.
    Choice(Vec<Value>),
    /// A string shaped by a `regex` rule.
    Pattern(Pattern),
    /// A number inside a `range` rule.
    Number { lo: f64, hi: f64, integral: bool },
    /// A string inside a `length` rule.
    Chars { min: usize, max: usize },
    /// Anything of the column's type, shaped by its name (`*_at` timestamps, `*phone*`, ...).
    Plain,
}

/// How one column's values are made.
#[derive(Debug, Clone)]
pub(crate) struct ColumnGen {
    strategy: Strategy,
    /// Why no sample passed the column's rules, when none did (rows then fail those rules).
    pub unsatisfiable: Option<String>,
}

impl ColumnGen {
    /// The strategy for `column`, with a trial run that tells whether valid values can be made.
    pub(crate) fn plan(
        table: &TableShape,
        column: usize,
        rng: &mut SmallRng,
        now: NaiveDateTime,
    ) -> ColumnGen {
        let col = &table.columns[column];
        let rules: Vec<usize> = table.rules_on(column).collect();
        let mut notes = Vec::new();
        let mut strategy = Strategy::Plain;
        // The most constraining rule shapes the values; the others only filter them.
        for &r in &rules {
            let rule = &table.rules[r];
            let candidate = match &rule.kind {
                RuleKind::AllowedValues { values } => Some((
                    0,
                    Strategy::Choice(
                        values
                            .iter()
                            .filter_map(|v| table.conform(column, Value::text(v)).ok())
                            .collect(),
                    ),
                )),
                RuleKind::Regex { pattern } => match Pattern::parse(pattern.as_str()) {
                    Ok(p) => Some((1, Strategy::Pattern(p))),
                    Err(e) => {
                        notes.push(format!(
                            "cannot synthesize values for pattern {} ({e}): rule {} will not be exercised as intended \
                             (the generated values fail it)",
                            pattern.as_str(),
                            rule.id
                        ));
                        None
                    }
                },
                RuleKind::Range { min, max } => {
                    let integral = matches!(col.column_type, ColumnType::Int | ColumnType::Long);
                    let (mut lo, mut hi) = match (min, max) {
                        (Some(lo), Some(hi)) => (*lo, *hi),
                        (Some(lo), None) => (*lo, lo + OPEN_SPAN),
                        (None, Some(hi)) => (hi - OPEN_SPAN, *hi),
                        (None, None) => (0.0, OPEN_SPAN),
                    };
                    if let Storage::Integer { min, max } = col.storage {
                        lo = lo.max(min as f64);
                        hi = hi.min(max as f64);
                    }
                    if integral {
                        lo = lo.ceil();
                        hi = hi.floor();
                    }
                    Some((2, Strategy::Number { lo, hi, integral }))
                }
                RuleKind::Length { min, max } => {
                    let min = min.unwrap_or(1) as usize;
                    let max = max.map(|m| m as usize).unwrap_or(min + 12);
                    Some((3, Strategy::Chars { min, max }))
                }
                RuleKind::NotNull | RuleKind::Unique => None,
            };
            if let Some((rank, s)) = candidate
                && rank < strategy_rank(&strategy)
            {
                strategy = s;
            }
        }
        let mut column_gen = ColumnGen {
            strategy,
            unsatisfiable: None,
        };
        if !rules.is_empty() {
            let mut ctx = SampleContext { rng, seq: 0, now };
            let ok = (0..ATTEMPTS).any(|_| {
                let v = column_gen.sample(table, column, &mut ctx);
                table
                    .conform(column, v)
                    .is_ok_and(|v| passes_column_rules(table, column, &v))
            });
            if !ok {
                let ids: Vec<&str> = rules.iter().map(|&r| table.rules[r].id.as_str()).collect();
                notes.push(format!(
                    "no generated value passed rules {}",
                    ids.join(", ")
                ));
                column_gen.unsatisfiable = Some(notes.join("; "));
            }
        }
        column_gen
    }

    /// A raw sample of the strategy (not yet conformed or checked).
    fn sample(&self, table: &TableShape, column: usize, ctx: &mut SampleContext<'_>) -> Value {
        let col = &table.columns[column];
        match &self.strategy {
            Strategy::Choice(values) if !values.is_empty() => {
                values[ctx.rng.random_range(0..values.len())].clone()
            }
            Strategy::Pattern(p) => Value::Text(p.sample(ctx.rng)),
            Strategy::Number { lo, hi, integral } if lo <= hi => {
                let x = if *integral {
                    ctx.rng.random_range(*lo as i64..=*hi as i64) as f64
                } else {
                    (lo + ctx.rng.random::<f64>() * (hi - lo)).clamp(*lo, *hi)
                };
                let x = if *integral {
                    x
                } else {
                    round_inward(x, *lo, *hi)
                };
                if col.column_type.is_text() {
                    Value::Text(format!("{x}"))
                } else {
                    Value::Float(x)
                }
            }
            Strategy::Chars { min, max } if min <= max => {
                let len = ctx.rng.random_range(*min..=*max);
                Value::Text(random_chars(ctx.rng, len))
            }
            _ => plain(col.column_type, &col.name, ctx),
        }
    }

    /// A value passing every rule on the column that the database accepts, for which `fresh`
    /// holds (distinct values for unique columns). None when no such value turned up.
    pub(crate) fn valid(
        &self,
        table: &TableShape,
        column: usize,
        ctx: &mut SampleContext<'_>,
        fresh: &dyn Fn(&Value) -> bool,
    ) -> Option<Value> {
        let acceptable = |v: &Value| table.accepts(column, v).is_ok() && fresh(v);
        for _ in 0..ATTEMPTS {
            let Ok(v) = table.conform(column, self.sample(table, column, ctx)) else {
                continue;
            };
            if passes_column_rules(table, column, &v) && acceptable(&v) {
                return Some(v);
            }
        }
        None
    }

    /// A value of the column's type the database accepts, whether or not it passes the rules:
    /// what a column whose rules cannot be satisfied gets. Text values get the counter appended
    /// so they stay distinct.
    pub(crate) fn fallback(
        &self,
        table: &TableShape,
        column: usize,
        ctx: &mut SampleContext<'_>,
        fresh: &dyn Fn(&Value) -> bool,
    ) -> Option<Value> {
        let col = &table.columns[column];
        for attempt in 0..ATTEMPTS {
            let raw = if attempt % 2 == 0 {
                self.sample(table, column, ctx)
            } else {
                plain(col.column_type, &col.name, ctx)
            };
            let raw = match raw {
                Value::Text(s) if attempt >= ATTEMPTS / 2 => {
                    Value::Text(format!("{s}-{}", ctx.seq))
                }
                other => other,
            };
            let Ok(v) = table.conform(column, raw) else {
                continue;
            };
            if table.accepts(column, &v).is_ok() && fresh(&v) {
                return Some(v);
            }
            ctx.seq += 1;
        }
        None
    }
}

fn strategy_rank(s: &Strategy) -> u8 {
    match s {
        Strategy::Choice(_) => 0,
        Strategy::Pattern(_) => 1,
        Strategy::Number { .. } => 2,
        Strategy::Chars { .. } => 3,
        Strategy::Plain => 4,
    }
}

/// Whether `value` passes every rule on `column`.
pub(crate) fn passes_column_rules(table: &TableShape, column: usize, value: &Value) -> bool {
    table
        .rules_on(column)
        .all(|r| !check::fails(&table.rules[r], value))
}

/// Values that break rule `rule` of `table` and that the column accepts on its own; `valid` is
/// a valid value of the column to mutate. Candidates that other rows would make unacceptable
/// (a taken unique value, a missing parent) are the caller's to drop.
pub(crate) fn violation_candidates(
    table: &TableShape,
    rule: usize,
    valid: &Value,
    rng: &mut SmallRng,
) -> Vec<Value> {
    let r = &table.rules[rule];
    let column = table.rule_columns[rule];
    let integral = matches!(
        table.columns[column].column_type,
        ColumnType::Int | ColumnType::Long
    );
    let mut raw: Vec<Value> = Vec::new();
    if !r.allow_null || matches!(r.kind, RuleKind::NotNull) {
        raw.push(Value::Null);
    }
    let valid_text = valid.rule_text().unwrap_or_default();
    match &r.kind {
        RuleKind::NotNull | RuleKind::Unique => {}
        RuleKind::Range { min, max } => {
            let span = match (min, max) {
                (Some(lo), Some(hi)) => (hi - lo).abs().max(1.0),
                _ => 100.0,
            };
            let offset = |rng: &mut SmallRng| {
                let d = 1.0 + rng.random::<f64>() * span;
                if integral {
                    d.ceil()
                } else {
                    (d * 100.0).round() / 100.0
                }
            };
            if let Some(lo) = min {
                let base = if integral { lo.floor() } else { *lo };
                raw.push(Value::Float(base - offset(rng)));
            }
            if let Some(hi) = max {
                let base = if integral { hi.ceil() } else { *hi };
                raw.push(Value::Float(base + offset(rng)));
            }
        }
        RuleKind::AllowedValues { values } => {
            for v in values {
                raw.push(Value::text(v.to_uppercase()));
                raw.push(Value::text(v.to_lowercase()));
                raw.push(Value::text(format!("{v}_x")));
            }
            raw.push(Value::text("unknown"));
            raw.push(Value::text(""));
            let numbers: Vec<f64> = values
                .iter()
                .filter_map(|v| v.trim().parse::<f64>().ok())
                .collect();
            if let Some(top) = numbers.iter().copied().reduce(f64::max) {
                raw.push(Value::Float(
                    top.floor() + 1.0 + f64::from(rng.random_range(0..10u8)),
                ));
            }
        }
        RuleKind::Regex { .. } => {
            raw.extend(mutations(&valid_text).into_iter().map(Value::Text));
            raw.extend(["INVALID", "", "12345", "x"].map(Value::text));
        }
        RuleKind::Length { min, max } => {
            if let Some(min) = min.filter(|&m| m >= 1) {
                raw.push(Value::Text(
                    valid_text.chars().take(min as usize - 1).collect(),
                ));
                raw.push(Value::Text("x".repeat(min as usize - 1)));
            }
            if let Some(max) = max {
                let mut long: String = valid_text.chars().collect();
                while long.chars().count() <= *max as usize {
                    long.push('x');
                }
                raw.push(Value::Text(long));
            }
        }
    }
    let mut out: Vec<Value> = Vec::new();
    for candidate in raw {
        let Ok(v) = table.conform(column, candidate) else {
            continue;
        };
        if check::fails(r, &v) && table.accepts(column, &v).is_ok() && !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Small edits of a valid string that usually break a pattern.
fn mutations(valid: &str) -> Vec<String> {
    let chars: Vec<char> = valid.chars().collect();
    let mut out = Vec::new();
    if let Some(i) = chars.iter().position(|c| c.is_ascii_digit()) {
        let mut c = chars.clone();
        c[i] = 'X';
        out.push(c.into_iter().collect());
    }
    if let Some(i) = chars.iter().position(|c| c.is_alphabetic()) {
        let mut c = chars.clone();
        c[i] = '9';
        out.push(c.into_iter().collect());
    }
    let swapped: String = valid
        .chars()
        .map(|c| {
            if c.is_uppercase() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    out.push(swapped);
    if chars.len() > 1 {
        out.push(chars[..chars.len() - 1].iter().collect());
        out.push(chars[1..].iter().collect());
    }
    out.push(format!("{valid}X"));
    out.push(format!("{valid}0"));
    out.push(format!("X{valid}"));
    out
}

/// `x` rounded to 4 decimals, unless that would leave [lo, hi].
fn round_inward(x: f64, lo: f64, hi: f64) -> f64 {
    let r = (x * 10_000.0).round() / 10_000.0;
    if r < lo || r > hi { x } else { r }
}

fn random_chars(rng: &mut SmallRng, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

const FIRST_NAMES: &[&str] = &[
    "Ana", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kira",
    "Liam",
];
const LAST_NAMES: &[&str] = &[
    "Rivera", "Chen", "Okafor", "Novak", "Schmidt", "Haddad", "Kowalski", "Tanaka", "Silva",
    "Brown",
];

/// A value of `ty` with no rule to follow, shaped by the column name where it says what it holds.
pub(crate) fn plain(ty: ColumnType, name: &str, ctx: &mut SampleContext<'_>) -> Value {
    ctx.seq += 1;
    let rng = &mut *ctx.rng;
    match ty {
        ColumnType::Int | ColumnType::Long => Value::Int(rng.random_range(1..=1000)),
        ColumnType::Double | ColumnType::Real => {
            Value::Float((rng.random_range(0.0..1000.0f64) * 100.0).round() / 100.0)
        }
        ColumnType::Decimal { precision, scale } => {
            let scale = u8::try_from(scale.max(0)).unwrap_or(0);
            let whole_digits = u32::from(precision).saturating_sub(u32::from(scale)).min(3);
            let limit = 10i128.pow(whole_digits + u32::from(scale));
            Value::Decimal(Decimal {
                unscaled: rng.random_range(0..limit.max(1)),
                scale,
            })
        }
        ColumnType::Boolean => Value::Bool(rng.random_bool(0.5)),
        ColumnType::Timestamp => {
            Value::Timestamp(ctx.now - Duration::seconds(rng.random_range(0..86_400)))
        }
        ColumnType::Date => Value::Date(ctx.now.date() - Duration::days(rng.random_range(0..365))),
        ColumnType::String | ColumnType::Text => {
            let lower = name.to_ascii_lowercase();
            if lower.ends_with("_at")
                || lower.ends_with("_time")
                || lower == "timestamp"
                || lower == "date"
            {
                Value::Text(iso_utc(ctx.now))
            } else if lower.contains("email") {
                Value::Text(format!("user{}@example.com", ctx.seq))
            } else if lower.contains("phone") {
                Value::Text(format!(
                    "+1{}",
                    rng.random_range(2_000_000_000u64..9_999_999_999)
                ))
            } else if lower.contains("name") {
                let first = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
                let last = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
                Value::Text(format!("{first} {last}"))
            } else if lower.contains("status") {
                Value::text("active")
            } else {
                Value::Text(format!("{name}-{:06}", ctx.seq))
            }
        }
    }
}

/// `2026-11-25T14:01:32.123456Z`, how the generator writes times into string columns.
pub(crate) fn iso_utc(ts: NaiveDateTime) -> String {
    ts.and_utc().to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::config::spec::{ColumnType as T, RuleSpec};
    use crate::generate::check::tests::{regex, rule};
    use crate::generate::shape::tests::{column, shape, table};

    fn now() -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_795_615_292, 0)
            .map(|t| t.naive_utc())
            .unwrap_or_default()
    }

    fn with_rules(ty: T, nullable: bool, rules: Vec<RuleSpec>) -> TableShape {
        let mut spec = table(
            "t",
            vec![column("id", T::Int, false), column("v", ty, nullable)],
        );
        spec.rules = rules;
        shape(&spec)
    }

    /// Valid samples pass every rule on the column; each candidate violation fails the rule
    /// it was made for, by the rule's own predicate.
    fn assert_synthesis(t: &TableShape) {
        let mut rng = SmallRng::seed_from_u64(42);
        let column_gen = ColumnGen::plan(t, 1, &mut rng, now());
        assert_eq!(column_gen.unsatisfiable, None);
        for _ in 0..100 {
            let mut ctx = SampleContext {
                rng: &mut rng,
                seq: 0,
                now: now(),
            };
            let v = column_gen
                .valid(t, 1, &mut ctx, &|_| true)
                .unwrap_or_else(|| panic!("no valid value"));
            for r in 0..t.rules.len() {
                assert!(
                    !check::fails(&t.rules[r], &v),
                    "valid {v:?} fails {}",
                    t.rules[r].id
                );
                let bad = violation_candidates(t, r, &v, &mut rng);
                assert!(!bad.is_empty(), "no violation of {}", t.rules[r].id);
                for b in bad {
                    assert!(
                        check::fails(&t.rules[r], &b),
                        "{b:?} passes {}",
                        t.rules[r].id
                    );
                    assert!(t.accepts(1, &b).is_ok(), "{b:?} would be refused");
                }
            }
        }
    }

    #[test]
    fn regex_shaped_values_match_and_mutations_do_not() {
        assert_synthesis(&with_rules(
            T::String,
            false,
            vec![rule("drv_001", "v", regex(r"^DRV\d{5}$"))],
        ));
        assert_synthesis(&with_rules(
            T::String,
            false,
            vec![rule("p", "v", regex(r"^MRN-\d{6}$"))],
        ));
    }

    #[test]
    fn range_values_stay_inside_and_violations_fall_outside() {
        assert_synthesis(&with_rules(
            T::Double,
            true,
            vec![rule(
                "tel_001",
                "v",
                RuleKind::Range {
                    min: Some(-90.0),
                    max: Some(90.0),
                },
            )],
        ));
        assert_synthesis(&with_rules(
            T::Int,
            true,
            vec![rule(
                "r",
                "v",
                RuleKind::Range {
                    min: Some(1.5),
                    max: Some(3.5),
                },
            )],
        ));
        assert_synthesis(&with_rules(
            T::Double,
            false,
            vec![rule(
                "r",
                "v",
                RuleKind::Range {
                    min: Some(0.0),
                    max: None,
                },
            )],
        ));
    }

    #[test]
    fn allowed_values_pick_members_and_violations_are_not_members() {
        let values = ["assigned", "picked_up", "delivered"]
            .map(String::from)
            .to_vec();
        assert_synthesis(&with_rules(
            T::String,
            true,
            vec![rule("del_001", "v", RuleKind::AllowedValues { values })],
        ));
        let numbers = ["1", "2", "3"].map(String::from).to_vec();
        assert_synthesis(&with_rules(
            T::Int,
            false,
            vec![rule("n", "v", RuleKind::AllowedValues { values: numbers })],
        ));
    }

    #[test]
    fn length_values_fit_and_violations_are_too_short_or_too_long() {
        assert_synthesis(&with_rules(
            T::String,
            false,
            vec![rule(
                "l",
                "v",
                RuleKind::Length {
                    min: Some(3),
                    max: Some(8),
                },
            )],
        ));
    }

    #[test]
    fn several_rules_on_one_column_are_all_satisfied() {
        assert_synthesis(&with_rules(
            T::String,
            true,
            vec![
                rule("re", "v", regex(r"^[A-Z]{2}\d{2,6}$")),
                rule(
                    "len",
                    "v",
                    RuleKind::Length {
                        min: Some(5),
                        max: Some(6),
                    },
                ),
            ],
        ));
    }

    #[test]
    fn not_null_on_a_not_null_column_has_no_violation_the_database_accepts() {
        let t = with_rules(
            T::String,
            false,
            vec![rule("drv_002", "v", RuleKind::NotNull)],
        );
        let mut rng = SmallRng::seed_from_u64(1);
        assert!(violation_candidates(&t, 0, &Value::text("Ana"), &mut rng).is_empty());
        let nullable = with_rules(
            T::String,
            true,
            vec![rule("drv_002", "v", RuleKind::NotNull)],
        );
        assert_eq!(
            violation_candidates(&nullable, 0, &Value::text("Ana"), &mut rng),
            vec![Value::Null]
        );
    }

    #[test]
    fn an_unsupported_pattern_is_reported_not_guessed() {
        let t = with_rules(
            T::String,
            false,
            vec![rule("neg", "v", regex(r"^[^a-z]+$"))],
        );
        let mut rng = SmallRng::seed_from_u64(3);
        let column_gen = ColumnGen::plan(&t, 1, &mut rng, now());
        let note = column_gen.unsatisfiable.unwrap_or_default();
        assert!(
            note.contains("cannot synthesize values for pattern ^[^a-z]+$"),
            "{note}"
        );
        assert!(note.contains("rule neg"), "{note}");
    }

    #[test]
    fn contradictory_rules_are_reported_unsatisfiable() {
        let t = with_rules(
            T::Int,
            false,
            vec![
                rule(
                    "a",
                    "v",
                    RuleKind::Range {
                        min: Some(10.0),
                        max: Some(20.0),
                    },
                ),
                rule(
                    "b",
                    "v",
                    RuleKind::Range {
                        min: Some(30.0),
                        max: Some(40.0),
                    },
                ),
            ],
        );
        let mut rng = SmallRng::seed_from_u64(3);
        assert!(
            ColumnGen::plan(&t, 1, &mut rng, now())
                .unsatisfiable
                .is_some()
        );
    }
}
