//! The consumer loop: collect a micro-batch, then per table decode → plan → commit, then
//! commit Kafka offsets. Order per table and batch: quarantine, data, metric rows, metric state.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use rdkafka::Message;
use rdkafka::Offset;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::message::OwnedMessage;
use rdkafka::topic_partition_list::TopicPartitionList;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::batcher::{self, Bounds};
use super::consumer::{self, Consumer};
use super::options::ProcessOptions;
use super::watermarks::{self, Marks, TableMarks};
use crate::cdc::decode::{RawMessage, decode};
use crate::config::spec::{ConfigSpec, TableSpec};
use crate::pipeline::TableMetricState;
use crate::pipeline::plan::{BatchStats, DecodedBatch, SourcePosition};
use crate::sink::{Lake, LakeTable};

/// Totals over a run, for logs, `--once` output and tests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessSummary {
    pub batches: u64,
    pub records: u64,
    pub per_table: BTreeMap<String, TableTotals>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TableTotals {
    pub events: u64,
    pub loaded: u64,
    pub quarantined: u64,
    pub malformed: u64,
    pub deletes: u64,
    pub control_records: u64,
    pub skipped_already_applied: u64,
    pub rule_failures: BTreeMap<String, u64>,
}

impl TableTotals {
    fn add(&mut self, s: &BatchStats) {
        self.events += s.events;
        self.loaded += s.loaded;
        self.quarantined += s.quarantined;
        self.malformed += s.malformed;
        self.deletes += s.deletes;
        self.control_records += s.control_records;
        for (rule, n) in &s.rule_failures {
            *self.rule_failures.entry(rule.clone()).or_default() += n;
        }
    }
}

/// The cumulative metric state of a table with the marks it covers, saved as one blob.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedState {
    state: TableMetricState,
    marks: Marks,
}

struct TableRun {
    spec: TableSpec,
    marks: TableMarks,
    state: TableMetricState,
}

pub struct Processor {
    opts: ProcessOptions,
    lake: Lake,
    tables: Vec<TableRun>,
    by_topic: HashMap<String, usize>,
    /// Every (topic, partition) of the processed topics.
    partitions: Vec<(String, i32)>,
    summary: ProcessSummary,
}

/// The progress blob of one table for one consumer group (a plain file name, as the lake's
/// state store requires; the group is part of it because the marks are the group's).
fn state_name(group: &str, table: &str) -> String {
    format!("stream-{}-{}.json", hex::encode(table), hex::encode(group))
}

impl Processor {
    pub async fn new(
        config: &ConfigSpec,
        lake: Lake,
        opts: ProcessOptions,
    ) -> anyhow::Result<Self> {
        let mut tables = Vec::new();
        for spec in config.source_tables() {
            if !opts.tables.is_empty() && !opts.tables.iter().any(|t| t == &spec.name) {
                continue;
            }
            tables.push(TableRun {
                spec: spec.clone(),
                marks: TableMarks::default(),
                state: TableMetricState::default(),
            });
        }
        for wanted in &opts.tables {
            if !tables.iter().any(|t| &t.spec.name == wanted) {
                anyhow::bail!(
                    "--tables names '{wanted}', which is not a source table of the config"
                );
            }
        }
        if tables.is_empty() {
            anyhow::bail!("the config has no source tables to process");
        }
        let by_topic = tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.spec.topic.clone(), i))
            .collect();
        Ok(Processor {
            opts,
            lake,
            tables,
            by_topic,
            partitions: Vec::new(),
            summary: ProcessSummary::default(),
        })
    }

    /// Reads every destination's marks back from the lake.
    async fn reload_marks(&mut self) -> anyhow::Result<()> {
        let group = self.opts.group.clone();
        for t in &mut self.tables {
            let topic = t.spec.topic.clone();
            let by_partition = |m: HashMap<(String, i32), i64>| -> Marks {
                m.into_iter()
                    .filter(|((tp, _), _)| *tp == topic)
                    .map(|((_, p), o)| (p, o))
                    .collect()
            };
            let tps: Vec<(String, i32)> = self
                .partitions
                .iter()
                .filter(|(tp, _)| *tp == topic)
                .cloned()
                .collect();
            t.marks.data = by_partition(
                self.lake
                    .watermarks(LakeTable::Data(t.spec.name.clone()), &group, &tps)
                    .await?,
            );
            t.marks.quarantine = by_partition(
                self.lake
                    .watermarks(LakeTable::Quarantine(t.spec.name.clone()), &group, &tps)
                    .await?,
            );
            t.marks.metric_rows = by_partition(
                self.lake
                    .watermarks(LakeTable::Metrics, &group, &tps)
                    .await?,
            );
            let saved: SavedState = match self
                .lake
                .load_state(&state_name(&group, &t.spec.name))
                .await?
            {
                Some(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                    format!("reading the saved metric state of table '{}'", t.spec.name)
                })?,
                None => SavedState::default(),
            };
            t.state = saved.state;
            t.marks.metric_state = saved.marks;
            // The progress blob is saved after every destination of a batch; each destination's
            // own commits may only be ahead of it, by the one batch a crash interrupted.
            let floor = t.marks.metric_state.clone();
            for m in [
                &mut t.marks.data,
                &mut t.marks.quarantine,
                &mut t.marks.metric_rows,
            ] {
                TableMarks::advance(m, &floor);
            }
        }
        Ok(())
    }

    /// Runs until `shutdown` flips (or, with `once`, until every partition is drained).
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<ProcessSummary> {
        let consumer = consumer::create(&self.opts).context("creating the Kafka consumer")?;
        let topics: Vec<String> = self.tables.iter().map(|t| t.spec.topic.clone()).collect();
        let high = self.high_watermarks(&consumer, &topics).await?;
        self.partitions = high.keys().cloned().collect();
        self.reload_marks().await?;
        let drain_targets = if self.opts.once {
            self.assign_all(&consumer, &high)?;
            Some(high)
        } else {
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&refs)
                .context("subscribing to the configured topics")?;
            None
        };
        let bounds = Bounds {
            interval: if self.opts.once {
                self.opts.trigger_interval.min(Duration::from_secs(1))
            } else {
                self.opts.trigger_interval
            },
            max_records: self.opts.max_batch_records,
            max_bytes: self.opts.max_batch_bytes,
        };
        tracing::info!(tables = self.tables.len(), group = %self.opts.group, once = self.opts.once, "processor started");
        loop {
            if consumer.context().take_assignment_change() {
                self.reload_marks().await?;
                self.seek_to_marks(&consumer);
            }
            let batch = batcher::collect(&consumer, &bounds, &mut shutdown).await;
            if !batch.messages.is_empty() {
                self.apply(&consumer, batch.messages).await?;
            }
            if *shutdown.borrow() {
                tracing::info!("shutdown requested; the batch in flight was applied");
                break;
            }
            if let Some(targets) = &drain_targets
                && self.drained(targets)
            {
                break;
            }
        }
        Ok(self.summary)
    }

    async fn high_watermarks(
        &self,
        consumer: &Consumer,
        topics: &[String],
    ) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
        let mut targets = BTreeMap::new();
        let timeout = Duration::from_secs(30);
        for topic in topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), timeout)
                .with_context(|| format!("reading metadata of topic '{topic}'"))?;
            for t in metadata.topics() {
                if let Some(err) = t.error() {
                    anyhow::bail!("topic '{topic}' is not available: {err:?}");
                }
                for p in t.partitions() {
                    let (_low, high) = consumer
                        .fetch_watermarks(topic, p.id(), timeout)
                        .with_context(|| format!("reading offsets of {topic}[{}]", p.id()))?;
                    targets.insert((topic.clone(), p.id()), high);
                }
            }
        }
        Ok(targets)
    }

    fn assign_all(
        &self,
        consumer: &Consumer,
        targets: &BTreeMap<(String, i32), i64>,
    ) -> anyhow::Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in targets.keys() {
            let start = self
                .table_for(topic)
                .and_then(|t| t.marks.floor(*partition))
                .map_or(Offset::Beginning, |o| Offset::Offset(o + 1));
            tpl.add_partition_offset(topic, *partition, start)
                .context("building the assignment")?;
        }
        consumer.assign(&tpl).context("assigning partitions")?;
        Ok(())
    }

    fn seek_to_marks(&self, consumer: &Consumer) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        for elem in assignment.elements() {
            let Some(floor) = self
                .table_for(elem.topic())
                .and_then(|t| t.marks.floor(elem.partition()))
            else {
                continue;
            };
            // Seeking right after an assignment can fail until the first fetch; that is harmless,
            // because records at or below the marks are filtered out anyway.
            if let Err(error) = consumer.seek(
                elem.topic(),
                elem.partition(),
                Offset::Offset(floor + 1),
                Duration::from_secs(5),
            ) {
                tracing::debug!(%error, topic = elem.topic(), partition = elem.partition(), "seek after assignment deferred");
            }
        }
    }

    fn table_for(&self, topic: &str) -> Option<&TableRun> {
        self.by_topic.get(topic).map(|i| &self.tables[*i])
    }

    fn drained(&self, targets: &BTreeMap<(String, i32), i64>) -> bool {
        targets.iter().all(|((topic, partition), high)| {
            *high == 0
                || self.table_for(topic).is_some_and(|t| {
                    [&t.marks.data, &t.marks.quarantine, &t.marks.metric_state]
                        .iter()
                        .all(|m| m.get(partition).is_some_and(|o| o + 1 >= *high))
                })
        })
    }

    async fn apply(
        &mut self,
        consumer: &Consumer,
        messages: Vec<OwnedMessage>,
    ) -> anyhow::Result<()> {
        let now = Utc::now();
        let batch_id = now.timestamp_millis();
        self.summary.batches += 1;
        self.summary.records += messages.len() as u64;
        let mut per_table: BTreeMap<usize, Vec<&OwnedMessage>> = BTreeMap::new();
        for m in &messages {
            match self.by_topic.get(m.topic()) {
                Some(i) => per_table.entry(*i).or_default().push(m),
                None => anyhow::bail!(
                    "received a record from topic '{}', which no configured table reads",
                    m.topic()
                ),
            }
        }
        let mut offsets = TopicPartitionList::new();
        for (index, records) in per_table {
            let ends = self.apply_table(index, &records, batch_id, now).await?;
            let topic = self.tables[index].spec.topic.clone();
            for (partition, offset) in ends {
                offsets.add_partition_offset(&topic, partition, Offset::Offset(offset + 1))?;
            }
        }
        if offsets.count() > 0
            && let Err(error) = consumer.commit(&offsets, CommitMode::Async)
        {
            // Advisory only: the lake holds the authoritative positions.
            tracing::warn!(%error, "committing Kafka offsets failed");
        }
        Ok(())
    }

    /// Applies one table's records; returns the last offset per partition it covered.
    async fn apply_table(
        &mut self,
        index: usize,
        records: &[&OwnedMessage],
        batch_id: i64,
        now: chrono::DateTime<Utc>,
    ) -> anyhow::Result<BTreeMap<i32, i64>> {
        let group = self.opts.group.clone();
        let run = &mut self.tables[index];
        let table_name = run.spec.name.clone();
        let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
        let mut fresh = Vec::with_capacity(records.len());
        let mut skipped = 0u64;
        for m in records {
            let e = ends.entry(m.partition()).or_insert(m.offset());
            *e = (*e).max(m.offset());
            if run
                .marks
                .floor(m.partition())
                .is_some_and(|f| m.offset() <= f)
            {
                skipped += 1;
                continue;
            }
            fresh.push(RawMessage {
                position: SourcePosition {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                },
                key: m.key(),
                payload: m.payload(),
            });
        }
        let totals = self
            .summary
            .per_table
            .entry(table_name.clone())
            .or_default();
        totals.skipped_already_applied += skipped;
        if fresh.is_empty() {
            return Ok(ends);
        }
        let decoded = decode(&run.spec, &fresh);
        let positions: Vec<SourcePosition> = ends
            .iter()
            .map(|(p, o)| SourcePosition {
                topic: run.spec.topic.clone(),
                partition: *p,
                offset: *o,
            })
            .collect();

        // Normally every destination has the same marks and one plan serves all of them; after a
        // crash between two commits of one batch they differ, and each gets its own plan.
        let for_marks = |marks: &Marks| -> anyhow::Result<DecodedBatch> {
            watermarks::above(&decoded, marks).context("filtering already-applied records")
        };
        let mut state = run.state.clone();
        let state_plan = crate::pipeline::plan(
            &run.spec,
            &for_marks(&run.marks.metric_state)?,
            &mut state,
            now,
        )
        .with_context(|| format!("planning table '{table_name}'"))?;
        let plan_for = |marks: &Marks| -> anyhow::Result<Option<crate::pipeline::plan::BatchPlan>> {
            if *marks == run.marks.metric_state {
                return Ok(None);
            }
            let plan = crate::pipeline::plan(
                &run.spec,
                &for_marks(marks)?,
                &mut TableMetricState::default(),
                now,
            )?;
            Ok(Some(plan))
        };
        let quarantine_plan = plan_for(&run.marks.quarantine)?;
        let quarantine = &quarantine_plan.as_ref().unwrap_or(&state_plan).quarantine;
        if quarantine.num_rows() > 0 {
            self.lake
                .append_quarantine(&run.spec, quarantine, &positions, &group)
                .await
                .with_context(|| format!("writing the quarantine of table '{table_name}'"))?;
        }
        let metrics_plan = plan_for(&run.marks.metric_rows)?;
        let metrics = &metrics_plan.as_ref().unwrap_or(&state_plan).metrics;
        if !metrics.is_empty() {
            self.lake
                .append_metrics(&table_name, batch_id, metrics, &positions, &group, now)
                .await
                .with_context(|| format!("writing metrics of table '{table_name}'"))?;
        }
        let data_plan = plan_for(&run.marks.data)?;
        let changes = &data_plan.as_ref().unwrap_or(&state_plan).changes;
        if changes.num_rows() > 0 {
            self.lake
                .commit_changes(&run.spec, changes, &positions, &group, now)
                .await
                .with_context(|| format!("committing changes of table '{table_name}'"))?;
        }
        // Saved last: everything at or below these marks is applied to every destination.
        let mut marks = run.marks.metric_state.clone();
        TableMarks::advance(&mut marks, &ends);
        let saved = SavedState { state, marks };
        self.lake
            .save_state(
                &state_name(&group, &table_name),
                &serde_json::to_vec(&saved)?,
            )
            .await
            .with_context(|| format!("saving the progress of table '{table_name}'"))?;
        for m in [
            &mut run.marks.data,
            &mut run.marks.quarantine,
            &mut run.marks.metric_rows,
        ] {
            TableMarks::advance(m, &ends);
        }
        run.state = saved.state;
        run.marks.metric_state = saved.marks;

        let data_plan = state_plan;
        let stats = &data_plan.stats;
        tracing::info!(
            table = %table_name, batch_id, events = stats.events, loaded = stats.loaded,
            quarantined = stats.quarantined, deletes = stats.deletes, malformed = stats.malformed,
            "batch applied"
        );
        self.summary
            .per_table
            .entry(table_name)
            .or_default()
            .add(stats);
        Ok(ends)
    }
}
