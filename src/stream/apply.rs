//! One table's part of a micro-batch, decoded as it arrived (see `intake`): plan → the three
//! destination commits → the progress blob. Each destination has its own marks, so after a crash
//! between two commits each gets exactly the records it has not applied yet.

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::data_loss::{DataLoss, Gap};
use super::intake::TableBatch;
use super::progress::Progress;
use super::watermarks::{self, Marks, TableMarks};
use crate::config::spec::{OnDataLoss, TableSpec};
use crate::pipeline::TableMetricState;
use crate::pipeline::metrics::SCOPE_BATCH;
use crate::pipeline::plan::{BatchPlan, BatchStats, DecodedBatch, MetricRow, SourcePosition};
use crate::sink::{Lake, LakeTable};

/// One source table as the processor runs it.
pub(super) struct TableRun {
    pub spec: TableSpec,
    pub marks: TableMarks,
    /// The cumulative metric state, covering exactly the records at or below `marks.metric_state`.
    pub state: TableMetricState,
    /// A batch was merged into `state` but the progress blob was not saved: `state` is ahead of
    /// the marks, and only a reload puts them together again.
    unsaved: bool,
    /// The last offset received per partition since the marks were read, to notice offsets the
    /// consumer never delivered.
    read: Marks,
    /// Where `state` and `marks.metric_state` are saved after the destinations of each batch:
    /// everything at or below those marks is applied everywhere. None until the first reload.
    progress: Option<Progress>,
    on_data_loss: OnDataLoss,
}

/// What applying one table's records did.
#[derive(Debug, Default)]
pub(super) struct Applied {
    /// The last offset per partition the records covered (applied or skipped).
    pub ends: BTreeMap<i32, i64>,
    /// Records at or below every destination's marks: applied before, skipped now.
    pub skipped: u64,
    /// Records the consumer handed over again within the batch (at or below an offset of their
    /// partition already in it), dropped.
    pub redelivered: u64,
    /// Offsets between two records of a partition that never arrived (with `on_data_loss: warn`;
    /// `fail` stops the batch instead): legitimate for compacted topics and transaction markers,
    /// records deleted by retention or a broker fault otherwise.
    pub not_delivered: u64,
    /// Producer timestamps (ms since the epoch) of the records applied, for latency.
    pub produced_ms: Vec<i64>,
    /// None when every record was skipped.
    pub stats: Option<BatchStats>,
}

impl TableRun {
    pub fn new(spec: TableSpec, on_data_loss: OnDataLoss) -> TableRun {
        TableRun {
            spec,
            marks: TableMarks::default(),
            state: TableMetricState::default(),
            unsaved: false,
            read: Marks::new(),
            progress: None,
            on_data_loss,
        }
    }

    /// Reads every destination's marks and the progress blob back from the lake.
    pub async fn reload(
        &mut self,
        lake: &Lake,
        group: &str,
        partitions: &[i32],
    ) -> anyhow::Result<()> {
        let name = self.spec.name.clone();
        let topic = self.spec.topic.clone();
        let tps: Vec<(String, i32)> = partitions.iter().map(|p| (topic.clone(), *p)).collect();
        let of_topic = |m: std::collections::HashMap<(String, i32), i64>| -> Marks {
            m.into_iter()
                .filter(|((t, _), _)| *t == topic)
                .map(|((_, p), o)| (p, o))
                .collect()
        };
        let read = |table: LakeTable| {
            let tps = &tps;
            async move {
                lake.watermarks(table.clone(), group, tps)
                    .await
                    .with_context(|| format!("reading the positions recorded in {}", table.name()))
            }
        };
        let (data, quarantine, metric_rows) = tokio::join!(
            read(LakeTable::Data(name.clone())),
            read(LakeTable::Quarantine(name.clone())),
            read(LakeTable::Metrics),
        );
        self.marks.data = of_topic(data?);
        self.marks.quarantine = of_topic(quarantine?);
        self.marks.metric_rows = of_topic(metric_rows?);
        // The group is part of the blob's name because the marks are the group's.
        let progress = self
            .progress
            .get_or_insert_with(|| Progress::new(group, &name));
        let (state, marks) = progress
            .load(lake)
            .await
            .with_context(|| format!("reading the progress of table '{name}'"))?;
        self.state = state;
        self.unsaved = false;
        self.marks.metric_state = marks;
        // The blob is saved after every destination of a batch, so each destination is at least
        // there. One that made no commit for its last batches (nothing to write) has an older
        // txn watermark; the blob lifts it.
        let floor = self.marks.metric_state.clone();
        for m in [
            &mut self.marks.data,
            &mut self.marks.quarantine,
            &mut self.marks.metric_rows,
        ] {
            TableMarks::advance(m, &floor);
        }
        let m = &self.marks;
        if [&m.data, &m.quarantine, &m.metric_rows]
            .iter()
            .any(|d| **d != m.metric_state)
        {
            tracing::info!(
                table = %name, data = ?m.data, quarantine = ?m.quarantine, metric_rows = ?m.metric_rows,
                progress = ?m.metric_state,
                "resuming after an interrupted batch: each destination gets the records it lacks"
            );
        }
        self.read = self
            .marks
            .metric_state
            .keys()
            .filter_map(|p| self.marks.floor(*p).map(|f| (*p, f)))
            .collect();
        Ok(())
    }

    /// Applies this table's records of one micro-batch.
    pub async fn apply(
        &mut self,
        lake: &Lake,
        group: &str,
        batch: &TableBatch,
        batch_id: i64,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Applied> {
        let name = self.spec.name.clone();
        anyhow::ensure!(
            !self.unsaved,
            "the metric state of table '{name}' was not saved after the last batch; it must be \
             read back from the lake first"
        );
        let mut applied = Applied::default();
        let mut gaps = Vec::new();
        // Put back if the batch stops at a gap, so the gap is found again if it is retried.
        let read_before = self.read.clone();
        let mut fresh = 0_usize;
        // Decoded when received, in the lake by now (another member of the group, or an earlier
        // attempt at this batch, applied it): taken out of the decoded part below.
        let mut applied_since = false;
        for r in &batch.records {
            if applied
                .ends
                .get(&r.partition)
                .is_some_and(|end| r.offset <= *end)
            {
                // Consumers may deliver a record twice (a broker answering a fetch with a record
                // batch that overlaps what it sent before); once per batch is all it counts for.
                applied.redelivered += 1;
                continue;
            }
            applied.ends.insert(r.partition, r.offset);
            let read = self.read.entry(r.partition).or_insert(r.offset - 1);
            // Offsets a destination already holds were delivered before, here or to another
            // member of the group (whose progress record may lag behind its commits).
            let first_missing = (*read + 1).max(
                self.marks
                    .ceiling(r.partition)
                    .map_or(i64::MIN, |mark| mark + 1),
            );
            if r.offset > first_missing {
                applied.not_delivered += (r.offset - first_missing) as u64;
                gaps.push(Gap {
                    partition: r.partition,
                    first: first_missing,
                    last: r.offset - 1,
                });
            }
            *read = (*read).max(r.offset);
            if self.marks.floor(r.partition).is_some_and(|f| r.offset <= f) {
                applied.skipped += 1;
                applied_since |= r.decoded;
                continue;
            }
            if !r.decoded {
                // Marks only grow, so a record below them when received is below them now.
                anyhow::bail!(
                    "record {}[{}]@{} was already applied when received but is above the lake's \
                     marks now; the marks went back (the lake changed under the processor)",
                    self.spec.topic,
                    r.partition,
                    r.offset
                );
            }
            if let Some(ms) = r.produced_ms {
                applied.produced_ms.push(ms);
            }
            fresh += 1;
        }
        if !gaps.is_empty() {
            if self.on_data_loss == OnDataLoss::Fail {
                self.read = read_before;
                return Err(DataLoss {
                    table: name,
                    topic: self.spec.topic.clone(),
                    gaps,
                }
                .into());
            }
            tracing::warn!(
                table = %name, topic = %self.spec.topic, offsets = applied.not_delivered,
                first_gaps = %gaps.iter().take(5).map(Gap::to_string).collect::<Vec<_>>().join(", "),
                "offsets were never delivered by the broker (deleted by retention before they were \
                 applied, skipped by the broker, or compacted away); going on without them as \
                 `kafka.on_data_loss: warn` says"
            );
        }
        if fresh == 0 {
            return Ok(applied);
        }
        let started = std::time::Instant::now();
        let restricted;
        let decoded = if applied_since {
            let marks = &self.marks;
            restricted = batch
                .restrict(|partition, offset| marks.floor(partition).is_none_or(|f| offset > f))
                .context("leaving out records applied since they were received")?;
            &restricted
        } else {
            &batch.decoded
        };
        let plans = self.plan(decoded, now)?;
        let positions: Vec<SourcePosition> = applied
            .ends
            .iter()
            .map(|(p, o)| SourcePosition {
                topic: self.spec.topic.clone(),
                partition: *p,
                offset: *o,
            })
            .collect();

        let planned = started.elapsed();
        // Three different Delta tables: committed concurrently, each with its own marks. Each is
        // called even with nothing to write, so that it records its progress through the batch
        // (a note instead of an empty commit) and the lake's resume offsets keep up.
        let spec = &self.spec;
        let quarantine = async {
            lake.append_quarantine(spec, &plans.for_quarantine().quarantine, &positions, group)
                .await
                .with_context(|| format!("writing the quarantine of table '{name}'"))
        };
        let metrics = async {
            lake.append_metrics(
                &name,
                batch_id,
                &plans.metric_rows(),
                &positions,
                group,
                now,
            )
            .await
            .with_context(|| format!("writing the metrics of table '{name}'"))
        };
        let data = async {
            lake.commit_changes(spec, &plans.for_data().changes, &positions, group, now)
                .await
                .with_context(|| format!("committing the changes of table '{name}'"))
        };
        let committing = std::time::Instant::now();
        let (quarantine, metrics, data) = tokio::join!(quarantine, metrics, data);
        let committed = committing.elapsed();
        quarantine?;
        metrics?;
        data?;

        // Saved last: everything at or below these marks is now applied to every destination.
        // The batch is merged in place (the cumulative Uniqueness map is the largest thing a
        // table holds); until the save succeeds, `unsaved` keeps the next batch from using it.
        let mut marks = self.marks.metric_state.clone();
        TableMarks::advance(&mut marks, &applied.ends);
        self.unsaved = true;
        let added = plans.main.metric_state;
        self.state.merge(added.clone());
        self.progress
            .as_mut()
            .context("the progress of the table was never read")?
            .save(lake, &self.state, &added, &marks)
            .await
            .with_context(|| format!("saving the progress of table '{name}'"))?;
        self.unsaved = false;
        for m in [
            &mut self.marks.data,
            &mut self.marks.quarantine,
            &mut self.marks.metric_rows,
        ] {
            TableMarks::advance(m, &applied.ends);
        }
        self.marks.metric_state = marks;

        let stats = plans.main.stats;
        tracing::info!(
            table = %name, batch_id, events = stats.events, loaded = stats.loaded,
            quarantined = stats.quarantined, deletes = stats.deletes, malformed = stats.malformed,
            control = stats.control_records, skipped = applied.skipped, redelivered = applied.redelivered,
            plan_ms = planned.as_millis() as u64, commit_ms = committed.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "batch applied"
        );
        applied.stats = Some(stats);
        Ok(applied)
    }

    /// One plan for the records above the progress blob's marks (it also advances the cumulative
    /// metric state); normally every destination has the same marks and it serves them all.
    /// After a crash between two commits of one batch they differ, and a destination that is
    /// ahead gets its own plan of only the records it lacks.
    fn plan(&self, decoded: &DecodedBatch, now: DateTime<Utc>) -> anyhow::Result<Plans> {
        let name = &self.spec.name;
        let above = |marks: &Marks| -> anyhow::Result<DecodedBatch> {
            watermarks::above(decoded, marks).context("filtering already-applied records")
        };
        let main = crate::pipeline::plan(
            &self.spec,
            &above(&self.marks.metric_state)?,
            &self.state,
            now,
        )
        .with_context(|| format!("planning table '{name}'"))?;
        let own = |marks: &Marks| -> anyhow::Result<Option<BatchPlan>> {
            if *marks == self.marks.metric_state {
                return Ok(None);
            }
            let plan = crate::pipeline::plan(
                &self.spec,
                &above(marks)?,
                &TableMetricState::default(),
                now,
            )
            .with_context(|| format!("planning table '{name}'"))?;
            Ok(Some(plan))
        };
        Ok(Plans {
            quarantine: own(&self.marks.quarantine)?,
            metric_rows: own(&self.marks.metric_rows)?,
            data: own(&self.marks.data)?,
            main,
        })
    }
}

struct Plans {
    main: BatchPlan,
    quarantine: Option<BatchPlan>,
    metric_rows: Option<BatchPlan>,
    data: Option<BatchPlan>,
}

impl Plans {
    fn for_quarantine(&self) -> &BatchPlan {
        self.quarantine.as_ref().unwrap_or(&self.main)
    }

    fn for_data(&self) -> &BatchPlan {
        self.data.as_ref().unwrap_or(&self.main)
    }

    /// The batch rows of the records `dq_metrics` lacks; the cumulative and anomaly rows always
    /// come from the main plan (an own plan starts from an empty state and history).
    fn metric_rows(&self) -> Vec<MetricRow> {
        match &self.metric_rows {
            None => self.main.metrics.clone(),
            // Nothing new for `dq_metrics`: the cumulative rows are there already too.
            Some(own) if own.metrics.is_empty() => Vec::new(),
            Some(own) => own
                .metrics
                .iter()
                .filter(|m| m.scope == SCOPE_BATCH)
                .chain(self.main.metrics.iter().filter(|m| m.scope != SCOPE_BATCH))
                .cloned()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::layout::LakeLayout;
    use crate::config::spec::ColumnType;
    use crate::pipeline::testing::{decode_at, dms, table};
    use crate::stream::intake::Received;

    /// Inserts of keys equal to their offsets, on partition 0.
    fn batch(spec: &TableSpec, offsets: &[i64]) -> TableBatch {
        let messages: Vec<(i32, i64, Vec<u8>)> = offsets
            .iter()
            .map(|&o| (0, o, dms(spec, "insert", json!({"id": o, "v": 1}), 1)))
            .collect();
        TableBatch {
            records: offsets
                .iter()
                .map(|&offset| Received {
                    partition: 0,
                    offset,
                    produced_ms: None,
                    decoded: true,
                })
                .collect(),
            decoded: decode_at(spec, &messages),
        }
    }

    async fn run(policy: OnDataLoss) -> (tempfile::TempDir, Lake, TableRun) {
        let dir = tempfile::tempdir().expect("temp dir");
        let lake = Lake::new(LakeLayout::local(dir.path()), Default::default());
        let spec = table("t", &[("id", ColumnType::Long), ("v", ColumnType::Long)]);
        let mut run = TableRun::new(spec, policy);
        run.reload(&lake, "g", &[0]).await.expect("reload");
        (dir, lake, run)
    }

    #[tokio::test]
    async fn offsets_never_delivered_stop_the_batch_before_anything_is_applied() {
        let (_dir, lake, mut run) = run(OnDataLoss::Fail).await;
        let first = batch(&run.spec, &[0, 1]);
        run.apply(&lake, "g", &first, 1, Utc::now())
            .await
            .expect("first batch");
        let data = LakeTable::Data("t".into());
        let version = lake.table_version(&data).await.expect("version");

        let after_gap = batch(&run.spec, &[2, 6, 7, 9]);
        let error = run
            .apply(&lake, "g", &after_gap, 2, Utc::now())
            .await
            .expect_err("a gap stops the batch");
        let loss = error.downcast_ref::<DataLoss>().expect("a DataLoss error");
        assert_eq!(
            loss.gaps,
            [
                Gap {
                    partition: 0,
                    first: 3,
                    last: 5
                },
                Gap {
                    partition: 0,
                    first: 8,
                    last: 8
                }
            ]
        );
        assert_eq!(loss.offsets(), 4);
        assert_eq!(
            lake.table_version(&data).await.expect("version"),
            version,
            "nothing of the batch was committed, not even offset 2 before the gap"
        );
        // Tried again, the same gaps are found again.
        let again = run
            .apply(&lake, "g", &after_gap, 2, Utc::now())
            .await
            .expect_err("still a gap");
        assert_eq!(
            again.downcast_ref::<DataLoss>().map(|l| l.offsets()),
            Some(4)
        );
    }

    #[tokio::test]
    async fn offsets_a_destination_already_holds_are_no_gap() {
        let (_dir, lake, mut run) = run(OnDataLoss::Fail).await;
        run.apply(&lake, "g", &batch(&run.spec, &[0, 1]), 1, Utc::now())
            .await
            .expect("first batch");
        // Another member of the group committed offsets 2..=5 to the data table, and its stale
        // progress record left the floor behind: the consumer resumes after 5.
        run.marks.data.insert(0, 5);
        let applied = run
            .apply(&lake, "g", &batch(&run.spec, &[6, 7]), 2, Utc::now())
            .await
            .expect("no offsets are missing");
        assert_eq!(applied.not_delivered, 0);
        assert_eq!(applied.ends.get(&0), Some(&7));
    }

    #[tokio::test]
    async fn with_warn_the_batch_goes_on_and_counts_the_offsets() {
        let (_dir, lake, mut run) = run(OnDataLoss::Warn).await;
        run.apply(&lake, "g", &batch(&run.spec, &[0, 1]), 1, Utc::now())
            .await
            .expect("first batch");
        let applied = run
            .apply(&lake, "g", &batch(&run.spec, &[2, 6, 7, 9]), 2, Utc::now())
            .await
            .expect("applied past the gap");
        assert_eq!(applied.not_delivered, 4);
        assert_eq!(applied.stats.map(|s| s.loaded), Some(4));
        assert_eq!(applied.ends.get(&0), Some(&9));
    }
}
