//! Traffic for any config: rows made from each table's schema and rules, parents before
//! children, then a mix of inserts, updates and hard deletes, with violations of the rules at
//! `--bad-ratio`.

use std::sync::Arc;

use chrono::{NaiveDateTime, Utc};
use rand::Rng;
use rand::rngs::SmallRng;

use super::plan::Plan;
use super::row::{Key, Row, Value};
use super::values::violation_candidates;
use super::writer::{Step, Writer};

/// Rows per table in the seed.
const SEED_ROWS: usize = 10;
/// Share of steps that insert, update, delete (the rest).
const INSERT_SHARE: f64 = 0.6;
const UPDATE_SHARE: f64 = 0.3;
/// Random picks tried when looking for a row no other row references.
const DELETE_PICKS: usize = 16;

pub(crate) struct GenericTraffic {
    rng: SmallRng,
    bad_ratio: f64,
    plan: Arc<Plan>,
    /// Per table, per column: some row's foreign key points at this column (keep it stable).
    referenced: Vec<Vec<bool>>,
}

impl GenericTraffic {
    pub(crate) fn new(plan: Arc<Plan>, rng: SmallRng, bad_ratio: f64) -> GenericTraffic {
        let mut referenced: Vec<Vec<bool>> = plan
            .tables
            .iter()
            .map(|t| vec![false; t.columns.len()])
            .collect();
        for table in &plan.tables {
            for fk in &table.foreign_keys {
                referenced[fk.parent][fk.parent_column] = true;
            }
        }
        GenericTraffic {
            rng,
            bad_ratio,
            plan,
            referenced,
        }
    }

    /// Every table may see updates and deletes.
    pub(crate) fn retained(plan: &Plan) -> Vec<bool> {
        vec![true; plan.tables.len()]
    }

    pub(crate) async fn seed(&mut self, w: &mut Writer) -> Step {
        let order = self.plan.creation_order.clone();
        for t in order {
            for _ in 0..SEED_ROWS {
                self.insert(w, t).await?;
            }
            w.commit().await?;
        }
        Ok(())
    }

    /// One write on a random table. Returns whether something was written.
    pub(crate) async fn step(&mut self, w: &mut Writer) -> Step<bool> {
        if self.plan.tables.is_empty() {
            return Ok(false);
        }
        let t = self.rng.random_range(0..self.plan.tables.len());
        let roll: f64 = self.rng.random();
        if w.live(t).is_empty() || roll < INSERT_SHARE {
            return self.insert(w, t).await.map(|_| true);
        }
        if roll >= INSERT_SHARE + UPDATE_SHARE && self.delete(w, t).await? {
            return Ok(true);
        }
        if self.update(w, t).await? {
            return Ok(true);
        }
        self.insert(w, t).await.map(|_| true)
    }

    async fn insert(&mut self, w: &mut Writer, t: usize) -> Step<Key> {
        let now = Utc::now().naive_utc();
        let shape = &self.plan.tables[t];
        let mut row = Row::nulls(shape.columns.len());
        for c in 0..shape.columns.len() {
            if !shape.columns[c].generated {
                row.set(c, w.valid_value(t, c, &mut self.rng, now)?);
            }
        }
        if self.rng.random_bool(self.bad_ratio) {
            self.break_a_rule(w, t, &mut row, &|_| true);
        }
        w.insert(t, row).await
    }

    /// Changes one or two columns of a random live row (and any `updated_at`). False when the
    /// table has nothing the generator may change.
    async fn update(&mut self, w: &mut Writer, t: usize) -> Step<bool> {
        let now = Utc::now().naive_utc();
        let plan = Arc::clone(&self.plan);
        let shape = &plan.tables[t];
        let changeable: Vec<usize> = (0..shape.columns.len())
            .filter(|&c| self.changeable(t, c))
            .collect();
        if changeable.is_empty() {
            return Ok(false);
        }
        let live = w.live(t);
        let key = live[self.rng.random_range(0..live.len())].clone();
        let Some(old) = w.image(t, &key).cloned() else {
            return Ok(false);
        };
        let mut new = old.clone();
        let picks = self.rng.random_range(1..=changeable.len().min(2));
        for _ in 0..picks {
            let c = changeable[self.rng.random_range(0..changeable.len())];
            new.set(c, different_value(w, t, c, old.get(c), &mut self.rng, now)?);
        }
        for c in changeable
            .iter()
            .copied()
            .filter(|&c| shape.columns[c].name.eq_ignore_ascii_case("updated_at"))
        {
            new.set(c, w.valid_value(t, c, &mut self.rng, now)?);
        }
        if self.rng.random_bool(self.bad_ratio) {
            let allowed = changeable.clone();
            self.break_a_rule(w, t, &mut new, &|c| allowed.contains(&c));
        }
        let changes: Vec<(usize, Value)> = (0..shape.columns.len())
            .filter(|&c| new.get(c) != old.get(c))
            .map(|c| (c, new.get(c).clone()))
            .collect();
        if changes.is_empty() {
            return Ok(false);
        }
        w.update(t, &key, changes).await?;
        Ok(true)
    }

    /// Hard-deletes a random row that no row references, keeping at least one row in tables
    /// that others reference. False when there is none.
    async fn delete(&mut self, w: &mut Writer, t: usize) -> Step<bool> {
        let is_parent = self.referenced[t].iter().any(|&r| r);
        let live = w.live(t);
        if live.is_empty() || (is_parent && live.len() <= 1) {
            return Ok(false);
        }
        for _ in 0..DELETE_PICKS {
            let live = w.live(t);
            let key = live[self.rng.random_range(0..live.len())].clone();
            if !w.is_referenced(t, &key) {
                w.delete(t, &key).await?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Columns an update may change: not the key, not generated, not a foreign key and not a
    /// column other rows point at.
    fn changeable(&self, t: usize, c: usize) -> bool {
        let shape = &self.plan.tables[t];
        c != shape.key
            && !shape.columns[c].generated
            && !self.referenced[t][c]
            && !shape.foreign_keys.iter().any(|f| f.column == c)
    }

    /// Replaces one column of `row` by a violation of a rule the database lets the generator
    /// break, among the columns `allowed`. Leaves the row valid when no such violation exists.
    fn break_a_rule(
        &mut self,
        w: &Writer,
        t: usize,
        row: &mut Row,
        allowed: &dyn Fn(usize) -> bool,
    ) {
        let shape = &self.plan.tables[t];
        let rules: Vec<usize> = (0..shape.rules.len())
            .filter(|&r| self.plan.rule_plans[t][r].is_ok() && allowed(shape.rule_columns[r]))
            .collect();
        if rules.is_empty() {
            return;
        }
        let r = rules[self.rng.random_range(0..rules.len())];
        let c = shape.rule_columns[r];
        let candidates: Vec<Value> = violation_candidates(shape, r, row.get(c), &mut self.rng)
            .into_iter()
            .filter(|v| w.accepts(t, c, v).is_ok())
            .collect();
        if !candidates.is_empty() {
            row.set(
                c,
                candidates[self.rng.random_range(0..candidates.len())].clone(),
            );
        }
    }
}

/// A valid value of column `c` other than `old`, when a few tries find one (else `old`).
fn different_value(
    w: &mut Writer,
    t: usize,
    c: usize,
    old: &Value,
    rng: &mut SmallRng,
    now: NaiveDateTime,
) -> Step<Value> {
    for _ in 0..8 {
        let v = w.valid_value(t, c, rng, now)?;
        if v != *old {
            return Ok(v);
        }
    }
    Ok(old.clone())
}
