//! The consumer loop: collect a micro-batch, apply each table's part of it (tables concurrently),
//! then commit Kafka offsets (advisory). Positions come from the lake, never from Kafka.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use rdkafka::Offset;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::topic_partition_list::TopicPartitionList;
use serde::Serialize;
use tokio::sync::{Mutex, watch};

use super::apply::{Applied, TableRun};
use super::batcher::{self, Bounds, Cadence, Drain, stop_requested};
use super::consumer::{self, Consumer, Starts};
use super::data_loss::DataLoss;
use super::intake::{Intake, TableBatch};
use super::latency::{Histogram, LatencySummary};
use super::maintenance::{self, MaintenanceTotals, Schedule};
use super::options::{Partitions, ProcessOptions};
use crate::config::spec::{ConfigSpec, TableSpec};
use crate::pipeline::plan::BatchStats;
use crate::sink::Lake;

/// Totals over a run, for logs, `--once` output and tests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessSummary {
    pub batches: u64,
    /// Records received from Kafka (including ones skipped as already applied).
    pub records: u64,
    /// Failed table applications that were retried.
    pub retries: u64,
    pub per_table: BTreeMap<String, TableTotals>,
    /// From each applied record's producer timestamp to its batch's last commit.
    pub latency: LatencySummary,
    /// Compaction and vacuum rounds between batches.
    pub maintenance: MaintenanceTotals,
    /// Tables still set aside at the end of the run (one whose part of a batch kept failing), with
    /// their last error.
    pub parked: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TableTotals {
    /// Records decoded this run: `loaded + deletes + quarantined + control_records`.
    pub events: u64,
    pub loaded: u64,
    pub quarantined: u64,
    /// Of the quarantined: messages that could not be decoded.
    pub malformed: u64,
    pub deletes: u64,
    pub control_records: u64,
    /// Records the lake already held (re-read after a restart or rebalance), not applied again.
    pub skipped_already_applied: u64,
    /// Records the consumer delivered twice within a batch, dropped.
    pub redelivered: u64,
    /// Offsets the consumer skipped (compaction, transaction markers, or a broker fault).
    pub offsets_not_delivered: u64,
    pub rule_failures: BTreeMap<String, u64>,
}

impl TableTotals {
    fn add(&mut self, applied: &Applied) {
        self.skipped_already_applied += applied.skipped;
        self.redelivered += applied.redelivered;
        self.offsets_not_delivered += applied.not_delivered;
        let Some(s) = &applied.stats else { return };
        self.add_stats(s);
    }

    fn add_stats(&mut self, s: &BatchStats) {
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

/// Attempts per table and batch before `--once` gives up (with the error) and exits; a restart
/// resumes from the lake, so giving up loses nothing either.
const APPLY_ATTEMPTS: u32 = 6;

/// Attempts per table and batch before a running processor sets the table aside (see
/// [`Parked`]) and goes on with the others.
const PARK_AFTER_ATTEMPTS: u32 = 3;

/// Longest wait between two attempts at a parked table.
const PARKED_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A table whose part of a batch kept failing (its lake unwritable, say). One failing table
/// must not stop the others (the original's Spark job stopped every stream with it), so its
/// partitions are paused, its records in later batches are left unread, and its pending part is
/// tried again with a growing backoff. Once it applies, its partitions are sought back to the
/// lake's positions and resumed: nothing is skipped or applied twice.
struct Parked {
    records: Arc<TableBatch>,
    attempts: u32,
    retry_at: tokio::time::Instant,
    backoff: Duration,
    last_error: String,
}

/// How long `--once` keeps trying to reach the broker before it gives up.
const ONCE_CONNECT_PATIENCE: Duration = Duration::from_secs(120);

/// The streaming processor of one consumer group.
///
/// Guarantee: every Kafka record of a processed topic ends up exactly once in the lake (as a data
/// version, a no-op, or a quarantine row), whatever crashes, restarts or rebalances happen; see
/// `src/stream/mod.rs`.
pub struct Processor {
    opts: ProcessOptions,
    lake: Arc<Lake>,
    /// The tables' specs, indexed as `tables`.
    specs: Vec<TableSpec>,
    tables: Vec<Arc<Mutex<TableRun>>>,
    /// Partitions of each processed topic, as found at start.
    partitions: BTreeMap<String, Vec<i32>>,
    summary: ProcessSummary,
    latency: Histogram,
    /// Tables set aside after failing, by index.
    parked: BTreeMap<usize, Parked>,
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
            tables.push(TableRun::new(spec.clone(), opts.on_data_loss));
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
        Ok(Processor {
            opts,
            lake: Arc::new(lake),
            specs: tables.iter().map(|t| t.spec.clone()).collect(),
            tables: tables
                .into_iter()
                .map(|t| Arc::new(Mutex::new(t)))
                .collect(),
            partitions: BTreeMap::new(),
            summary: ProcessSummary::default(),
            latency: Histogram::default(),
            parked: BTreeMap::new(),
        })
    }

    /// Runs until `shutdown` flips (or, with `once`, until every partition is drained). A stop
    /// request lets the batch in flight finish first.
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<ProcessSummary> {
        let consumer = consumer::create(&self.opts).context("creating the Kafka consumer")?;
        let topics: Vec<String> = self
            .specs
            .iter()
            .map(|spec| spec.topic.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let Some(high) = self.discover(&consumer, &topics, &mut shutdown).await? else {
            tracing::info!("stopped before the broker could be reached");
            return Ok(self.summary);
        };
        for (topic, partition) in high.keys() {
            self.partitions
                .entry(topic.clone())
                .or_default()
                .push(*partition);
        }
        for index in 0..self.tables.len() {
            self.reload(index).await?;
        }
        let starts = self.starts().await;
        let mut drain = if self.opts.once || self.opts.partitions == Partitions::All {
            let mut tpl = TopicPartitionList::new();
            for key @ (topic, partition) in high.keys() {
                let start = starts
                    .get(key)
                    .map_or(Offset::Beginning, |o| Offset::Offset(*o));
                tpl.add_partition_offset(topic, *partition, start)
                    .context("building the assignment")?;
            }
            consumer.assign(&tpl).context("assigning partitions")?;
            self.opts.once.then(|| Drain::new(&high))
        } else {
            consumer.context().set_starts(starts);
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&refs)
                .context("subscribing to the configured topics")?;
            None
        };
        let bounds = Bounds {
            interval: self.opts.trigger_interval,
            max_records: self.opts.max_batch_records.max(1),
            max_bytes: self.opts.max_batch_bytes.max(1),
        };
        tracing::info!(
            tables = self.tables.len(), group = %self.opts.group, once = self.opts.once,
            partitions = ?self.opts.partitions, "processor started"
        );
        let mut cadence = Cadence::default();
        let mut upkeep = self
            .opts
            .maintenance
            .map(|m| Schedule::new(m, tokio::time::Instant::now()));
        // A batch collected while the previous one was applied, to apply next.
        let mut collected: Option<Intake> = None;
        // Tables resumed after `collected` was read: any records of them it holds (fetched before
        // a pause took hold, or after a rebalance assigned them unpaused) came before the seek
        // back to the lake's positions, which reads them again.
        let mut read_before_resume: BTreeSet<usize> = BTreeSet::new();
        loop {
            let intake = match collected.take() {
                Some(intake) => intake,
                None => {
                    let starts = self.starts().await;
                    if let Some(drain) = drain.as_mut() {
                        drain.next = starts.iter().map(|(k, v)| (k.clone(), *v)).collect();
                    }
                    let intake = Intake::new(&self.specs, starts);
                    batcher::collect(
                        &consumer,
                        &bounds,
                        &mut cadence,
                        drain.as_mut(),
                        &mut shutdown,
                        None,
                        intake,
                    )
                    .await
                }
            };
            if let Some(topic) = &intake.unknown_topic {
                anyhow::bail!(
                    "received a record from topic '{topic}', which no configured table reads"
                );
            }
            let mut batches = intake.finish()?;
            // A parked table's later records are read again once it is resumed.
            batches.retain(|index, _| {
                !self.parked.contains_key(index) && !read_before_resume.contains(index)
            });
            read_before_resume.clear();
            if consumer.context().take_assignment_change() {
                // Records of partitions this processor no longer owns belong to their new owner;
                // the marks of newly assigned ones may have moved (another processor of the group).
                if !self.opts.once {
                    self.still_assigned(&consumer, &mut batches)?;
                    self.parked_still_assigned(&consumer)?;
                }
                for index in 0..self.tables.len() {
                    self.reload(index).await?;
                }
                consumer.context().set_starts(self.starts().await);
                self.pause_parked(&consumer);
            }
            let idle = batches.is_empty();
            if !idle {
                // The next batch is collected (fetched and decoded) while this one is applied,
                // unless the processor is stopping or everything to drain is read already. Its
                // records come after this batch's, so the starts it classifies them by need not
                // wait for this batch's marks; the apply step checks them against the marks
                // as they are then anyway.
                let read_all = drain.as_mut().is_some_and(|d| d.done(&consumer, false));
                if *shutdown.borrow() || read_all {
                    self.apply(&consumer, batches, &mut shutdown).await?;
                } else {
                    let next = Intake::new(&self.specs, self.starts().await);
                    let (running, applying) = watch::channel(true);
                    let mut stop = shutdown.clone();
                    let apply = async {
                        let outcome = self.apply(&consumer, batches, &mut shutdown).await;
                        let _ = running.send(false);
                        outcome
                    };
                    let collect = batcher::collect(
                        &consumer,
                        &bounds,
                        &mut cadence,
                        drain.as_mut(),
                        &mut stop,
                        Some(applying),
                        next,
                    );
                    let (outcome, next) = tokio::join!(apply, collect);
                    outcome?;
                    collected = Some(next);
                }
                if drain.is_none() {
                    // Where a rebalance re-assigns partitions: as close to the truth as known.
                    consumer.context().set_starts(self.starts().await);
                }
            }
            if *shutdown.borrow() {
                // A batch collected meanwhile is left unapplied: its records are read again on
                // the next start.
                tracing::info!("stop requested; the batch in flight was applied");
                break;
            }
            let resumed = self.retry_parked(&consumer).await?;
            if collected.is_some() {
                read_before_resume.extend(resumed);
            }
            if let Some(schedule) = upkeep.as_mut()
                && schedule.due(tokio::time::Instant::now())
            {
                self.maintain(schedule.retention(), &mut shutdown).await;
                schedule.done(tokio::time::Instant::now());
            }
            if let Some(drain) = drain.as_mut() {
                // Read positions only grow: the batch collected meanwhile may be ahead of the marks.
                for (partition, start) in self.starts().await {
                    let next = drain.next.entry(partition).or_insert(start);
                    *next = (*next).max(start);
                }
                let nothing_pending = collected.as_ref().is_none_or(Intake::is_empty);
                if nothing_pending && drain.done(&consumer, idle) {
                    break;
                }
            }
        }
        self.lake.settle().await;
        self.summary.latency = self.latency.summary();
        for (index, parked) in &self.parked {
            tracing::warn!(
                table = %self.specs[*index].name, attempts = parked.attempts, error = %parked.last_error,
                "stopping with the table still set aside; its records are read again on the next start"
            );
            self.summary
                .parked
                .insert(self.specs[*index].name.clone(), parked.last_error.clone());
        }
        Ok(self.summary)
    }

    /// The end offset of every partition of the topics, waiting for the broker while it is
    /// unreachable. `None` when a stop was requested meanwhile.
    async fn discover(
        &self,
        consumer: &Consumer,
        topics: &[String],
        shutdown: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<Option<BTreeMap<(String, i32), i64>>> {
        let started = tokio::time::Instant::now();
        let mut backoff = Duration::from_secs(1);
        loop {
            match high_watermarks(consumer, topics) {
                Ok(found) => return Ok(Some(found)),
                Err(error) => {
                    if self.opts.once && started.elapsed() >= ONCE_CONNECT_PATIENCE {
                        return Err(error.context(format!(
                            "the broker at {} did not answer within {ONCE_CONNECT_PATIENCE:?}",
                            self.opts.kafka.bootstrap_servers
                        )));
                    }
                    tracing::warn!(
                        error = format!("{error:#}"),
                        bootstrap = %self.opts.kafka.bootstrap_servers,
                        retry_in_s = backoff.as_secs(),
                        "cannot read the topics' partitions yet; retrying"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop_requested(shutdown) => return Ok(None),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn reload(&self, index: usize) -> anyhow::Result<()> {
        let mut run = self.tables[index].lock().await;
        let partitions = self
            .partitions
            .get(&run.spec.topic)
            .cloned()
            .unwrap_or_default();
        run.reload(&self.lake, &self.opts.group, &partitions).await
    }

    /// Leaves out the records of partitions no longer assigned to this consumer: they belong to
    /// their new owner.
    fn still_assigned(
        &self,
        consumer: &Consumer,
        batches: &mut BTreeMap<usize, TableBatch>,
    ) -> anyhow::Result<()> {
        let mut dropped = 0;
        for (index, batch) in batches.iter_mut() {
            dropped += keep_assigned(self.assigned_partitions(consumer, *index), batch)?;
        }
        batches.retain(|_, batch| !batch.records.is_empty());
        if dropped > 0 {
            tracing::info!(
                dropped,
                "records of revoked partitions left to their new owner"
            );
        }
        Ok(())
    }

    /// The partitions of a table's topic assigned to this consumer now; None when the consumer
    /// cannot tell.
    fn assigned_partitions(&self, consumer: &Consumer, index: usize) -> Option<BTreeSet<i32>> {
        let topic = &self.specs[index].topic;
        let assigned = consumer.assignment().ok()?;
        Some(
            assigned
                .elements()
                .iter()
                .filter(|e| e.topic() == topic)
                .map(|e| e.partition())
                .collect(),
        )
    }

    /// One round of table maintenance. A stop request abandons it: what it did so far stands,
    /// and what it had written but not committed is an orphan the next round deletes.
    async fn maintain(&mut self, retention: Duration, shutdown: &mut watch::Receiver<bool>) {
        let round = maintenance::round(
            &self.lake,
            &self.specs,
            retention,
            &mut self.summary.maintenance,
        );
        tokio::select! {
            _ = round => {}
            _ = stop_requested(shutdown) => {
                tracing::info!("stop requested; table maintenance left for the next start");
            }
        }
    }

    /// The next offset to read per partition: after the lowest mark of the table's destinations.
    async fn starts(&self) -> Starts {
        let mut starts = Starts::new();
        for table in &self.tables {
            let run = table.lock().await;
            for partition in self.partitions.get(&run.spec.topic).into_iter().flatten() {
                if let Some(floor) = run.marks.floor(*partition) {
                    starts.insert((run.spec.topic.clone(), *partition), floor + 1);
                }
            }
        }
        starts
    }

    /// Applies one micro-batch: each table's records in its own task. A table that fails is
    /// retried with backoff after re-reading its marks (its destinations may have committed part
    /// of the batch; the marks make that part a no-op), then set aside ([`Parked`]), or with
    /// `--once` the processor gives up.
    async fn apply(
        &mut self,
        consumer: &Consumer,
        batches: BTreeMap<usize, TableBatch>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let now = Utc::now();
        let batch_id = now.timestamp_millis();
        self.summary.batches += 1;
        self.summary.records += batches
            .values()
            .map(|b| b.records.len() as u64)
            .sum::<u64>();
        let mut pending: BTreeMap<usize, Arc<TableBatch>> = batches
            .into_iter()
            .map(|(i, batch)| (i, Arc::new(batch)))
            .collect();
        let mut offsets = TopicPartitionList::new();
        let mut produced_ms = Vec::new();
        let mut attempt = 1;
        let mut backoff = Duration::from_secs(1);
        loop {
            let mut tasks = Vec::with_capacity(pending.len());
            for (index, records) in &pending {
                let (table, lake, group) = (
                    self.tables[*index].clone(),
                    self.lake.clone(),
                    self.opts.group.clone(),
                );
                let records = records.clone();
                tasks.push((
                    *index,
                    tokio::spawn(async move {
                        let mut run = table.lock().await;
                        run.apply(&lake, &group, &records, batch_id, now).await
                    }),
                ));
            }
            let mut failed = BTreeMap::new();
            let mut last_error = None;
            let mut fatal = None;
            for (index, task) in tasks {
                let outcome = match task.await {
                    Ok(outcome) => outcome,
                    Err(join) => Err(anyhow::anyhow!(
                        "the task applying the batch failed: {join}"
                    )),
                };
                match outcome {
                    Ok(applied) => {
                        self.count_applied(index, &applied, &mut offsets, &mut produced_ms)?;
                    }
                    Err(error) => {
                        let text = format!("{error:#}");
                        tracing::error!(
                            table = %self.specs[index].name, attempt, error = %text,
                            "applying the batch failed"
                        );
                        if let Some(records) = pending.get(&index) {
                            failed.insert(index, (records.clone(), text));
                        }
                        if error.downcast_ref::<DataLoss>().is_some() {
                            fatal = Some(error);
                        } else {
                            last_error = Some(error);
                        }
                    }
                }
            }
            if let Some(error) = fatal {
                // Retrying cannot bring deleted records back.
                return Err(error);
            }
            let Some(error) = last_error else { break };
            if !self.opts.once && attempt >= PARK_AFTER_ATTEMPTS && !*shutdown.borrow() {
                for (index, (records, text)) in failed {
                    self.park(consumer, index, records, text, attempt);
                }
                break;
            }
            if attempt >= APPLY_ATTEMPTS || *shutdown.borrow() {
                return Err(error.context(format!(
                    "giving up on the batch after {attempt} attempts (nothing is lost: a restart resumes from the lake)"
                )));
            }
            tracing::warn!(
                retry_in_s = backoff.as_secs(),
                tables = failed.len(),
                "retrying the failed part of the batch"
            );
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop_requested(shutdown) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(16));
            attempt += 1;
            self.summary.retries += failed.len() as u64;
            for index in failed.keys() {
                if let Err(error) = self.reload(*index).await {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "re-reading the marks failed; trying again"
                    );
                }
            }
            pending = failed
                .into_iter()
                .map(|(index, (records, _))| (index, records))
                .collect();
        }
        self.committed(consumer, &offsets, produced_ms);
        Ok(())
    }

    /// Adds what a table's part of a batch did to the summary, and its ends to the offsets to
    /// commit.
    fn count_applied(
        &mut self,
        index: usize,
        applied: &Applied,
        offsets: &mut TopicPartitionList,
        produced_ms: &mut Vec<i64>,
    ) -> anyhow::Result<()> {
        let spec = &self.specs[index];
        for (partition, offset) in &applied.ends {
            offsets.add_partition_offset(&spec.topic, *partition, Offset::Offset(offset + 1))?;
        }
        self.summary
            .per_table
            .entry(spec.name.clone())
            .or_default()
            .add(applied);
        produced_ms.extend_from_slice(&applied.produced_ms);
        Ok(())
    }

    /// Records the latency of what was committed, and commits the Kafka offsets (advisory).
    fn committed(
        &mut self,
        consumer: &Consumer,
        offsets: &TopicPartitionList,
        produced_ms: Vec<i64>,
    ) {
        let committed_ms = Utc::now().timestamp_millis();
        for ms in produced_ms {
            self.latency
                .record(committed_ms.saturating_sub(ms).max(0) as u64);
        }
        if offsets.count() > 0
            && let Err(error) = consumer.commit(offsets, CommitMode::Async)
        {
            // Advisory only: the lake holds the authoritative positions.
            tracing::warn!(%error, "committing Kafka offsets failed");
        }
    }

    /// The partitions of a table's topic assigned to this consumer now, as a list.
    fn assigned_of(&self, consumer: &Consumer, index: usize) -> TopicPartitionList {
        let topic = &self.specs[index].topic;
        let mut tpl = TopicPartitionList::new();
        for partition in self
            .assigned_partitions(consumer, index)
            .unwrap_or_default()
        {
            tpl.add_partition(topic, partition);
        }
        tpl
    }

    /// Sets a failing table aside (see [`Parked`]): its partitions stop fetching, the other
    /// tables go on.
    fn park(
        &mut self,
        consumer: &Consumer,
        index: usize,
        records: Arc<TableBatch>,
        last_error: String,
        attempts: u32,
    ) {
        let backoff = Duration::from_secs(4);
        tracing::error!(
            table = %self.specs[index].name, attempts, retry_in_s = backoff.as_secs(),
            error = %last_error,
            "setting the table aside: its partitions are paused and its batch is tried again \
             with a growing backoff while the other tables go on"
        );
        self.parked.insert(
            index,
            Parked {
                records,
                attempts,
                retry_at: tokio::time::Instant::now() + backoff,
                backoff,
                last_error,
            },
        );
        self.pause_parked(consumer);
    }

    /// Pauses the assigned partitions of every parked table (again after a rebalance, which
    /// assigns partitions unpaused).
    fn pause_parked(&self, consumer: &Consumer) {
        for index in self.parked.keys() {
            let tpl = self.assigned_of(consumer, *index);
            if tpl.count() > 0
                && let Err(error) = consumer.pause(&tpl)
            {
                // Not fatal: records of a parked table are left out of every batch anyway.
                tracing::warn!(table = %self.specs[*index].name, %error, "pausing the partitions failed");
            }
        }
    }

    /// After a rebalance: a parked table's records of partitions no longer assigned belong to
    /// their new owner.
    fn parked_still_assigned(&mut self, consumer: &Consumer) -> anyhow::Result<()> {
        let indices: Vec<usize> = self.parked.keys().copied().collect();
        for index in indices {
            let assigned = self.assigned_partitions(consumer, index);
            // Held nowhere else between batches; were it shared, the sink's per-partition marks
            // would still refuse to apply a record twice.
            if let Some(records) = self
                .parked
                .get_mut(&index)
                .and_then(|parked| Arc::get_mut(&mut parked.records))
            {
                keep_assigned(assigned, records)?;
            }
        }
        Ok(())
    }

    /// Tries each parked table whose backoff is up. One that applies is sought back to the lake's
    /// positions and resumed (returned); one that fails again waits longer. Offsets never
    /// delivered end the run, as in a batch.
    async fn retry_parked(&mut self, consumer: &Consumer) -> anyhow::Result<Vec<usize>> {
        let mut resumed = Vec::new();
        let now = tokio::time::Instant::now();
        let due: Vec<usize> = self
            .parked
            .iter()
            .filter(|(_, p)| p.retry_at <= now)
            .map(|(index, _)| *index)
            .collect();
        for index in due {
            let Some(records) = self.parked.get(&index).map(|p| p.records.clone()) else {
                continue;
            };
            self.summary.retries += 1;
            let outcome = match self.reload(index).await {
                Ok(()) => {
                    let now = Utc::now();
                    let mut run = self.tables[index].lock().await;
                    run.apply(
                        &self.lake,
                        &self.opts.group,
                        &records,
                        now.timestamp_millis(),
                        now,
                    )
                    .await
                }
                Err(error) => Err(error),
            };
            let applied = match outcome {
                Ok(applied) => applied,
                // Retrying cannot bring deleted records back.
                Err(error) if error.downcast_ref::<DataLoss>().is_some() => return Err(error),
                Err(error) => {
                    self.still_parked(index, error);
                    continue;
                }
            };
            let mut offsets = TopicPartitionList::new();
            let mut produced_ms = Vec::new();
            self.count_applied(index, &applied, &mut offsets, &mut produced_ms)?;
            self.committed(consumer, &offsets, produced_ms);
            match self.resume(consumer, index).await {
                Ok(()) => {
                    self.parked.remove(&index);
                    resumed.push(index);
                    tracing::info!(
                        table = %self.specs[index].name,
                        "the table applies again; its partitions are resumed"
                    );
                }
                // Tried again later: its records are applied by then, so only the resume is left.
                Err(error) => self.still_parked(index, error),
            }
        }
        Ok(resumed)
    }

    /// A parked table failed again: it waits longer.
    fn still_parked(&mut self, index: usize, error: anyhow::Error) {
        let name = &self.specs[index].name;
        if let Some(parked) = self.parked.get_mut(&index) {
            parked.attempts += 1;
            parked.backoff = (parked.backoff * 2).min(PARKED_BACKOFF_MAX);
            parked.retry_at = tokio::time::Instant::now() + parked.backoff;
            parked.last_error = format!("{error:#}");
            tracing::error!(
                table = %name, attempts = parked.attempts,
                retry_in_s = parked.backoff.as_secs(), error = %parked.last_error,
                "the table set aside failed again"
            );
        }
    }

    /// Seeks a table's assigned partitions to the lake's positions (the records it left unread
    /// while parked come next), then resumes them.
    async fn resume(&self, consumer: &Consumer, index: usize) -> anyhow::Result<()> {
        let starts = self.starts().await;
        let assigned = self.assigned_of(consumer, index);
        consumer.context().set_starts(starts);
        let positions = consumer.context().positioned(&assigned)?;
        if positions.count() > 0 {
            consumer
                .seek_partitions(positions, Duration::from_secs(10))
                .context("resuming the table: seeking its partitions to the lake's positions")?;
        }
        consumer
            .resume(&assigned)
            .context("resuming the table's partitions")?;
        Ok(())
    }
}

/// Takes the records of partitions no longer `assigned` out of a table's batch; how many. With
/// the assignment unknown (None) it keeps them: the sink's per-partition watermarks still refuse
/// a double commit.
fn keep_assigned(assigned: Option<BTreeSet<i32>>, batch: &mut TableBatch) -> anyhow::Result<usize> {
    let Some(partitions) = assigned else {
        return Ok(0);
    };
    batch
        .retain_partitions(&|partition| partitions.contains(&partition))
        .context("leaving out the records of revoked partitions")
}

/// The end offset of every partition of `topics`.
fn high_watermarks(
    consumer: &Consumer,
    topics: &[String],
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let mut targets = BTreeMap::new();
    let timeout = Duration::from_secs(10);
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .with_context(|| format!("reading metadata of topic '{topic}'"))?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            anyhow::bail!(
                "the broker's metadata does not list topic '{topic}' (broker unreachable?)"
            );
        };
        if let Some(err) = t.error() {
            anyhow::bail!("topic '{topic}' is not available: {err:?}");
        }
        if t.partitions().is_empty() {
            anyhow::bail!("topic '{topic}' has no partitions (does it exist?)");
        }
        for p in t.partitions() {
            let (_low, high) = consumer
                .fetch_watermarks(topic, p.id(), timeout)
                .with_context(|| format!("reading offsets of {topic}[{}]", p.id()))?;
            targets.insert((topic.clone(), p.id()), high);
        }
    }
    Ok(targets)
}
