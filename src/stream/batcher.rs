//! Micro-batching: collect records until the trigger interval ends or a size bound is hit.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::FutureExt as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset};
use rustc_hash::FxHashMap;
use tokio::sync::watch;
use tokio::time::Instant;

use super::consumer::{Consumer, fetched_end};
use super::intake::Intake;

pub(super) struct Bounds {
    pub interval: Duration,
    pub max_records: usize,
    pub max_bytes: usize,
}

/// Draining (`--once`): how far each partition must be read.
#[derive(Debug, Clone, Default)]
pub(super) struct Drain {
    /// The end of each partition: as the broker listed it at start, raised to the end its first
    /// fetch response to this consumer reported. Fetch responses are trusted over listings
    /// (tansu's in-memory storage lists the first offset of a partition's last record batch),
    /// and only the first one counts, so records produced meanwhile do not keep `--once` going.
    ends: BTreeMap<(String, i32), (i64, bool)>,
    /// The next offset to read per partition (missing: from the beginning).
    pub next: FxHashMap<(String, i32), i64>,
    /// The key of the last partition received, reused so that a record's lookup allocates nothing.
    last_key: (String, i32),
}

impl Drain {
    pub fn new(listed: &BTreeMap<(String, i32), i64>) -> Drain {
        Drain {
            ends: listed
                .iter()
                .map(|(k, end)| (k.clone(), (*end, false)))
                .collect(),
            next: FxHashMap::default(),
            last_key: (String::new(), 0),
        }
    }

    /// Records that `offset` of a partition was received.
    fn received(&mut self, topic: &str, partition: i32, offset: i64) {
        if self.last_key.0 != topic {
            self.last_key.0.clear();
            self.last_key.0.push_str(topic);
        }
        self.last_key.1 = partition;
        match self.next.get_mut(&self.last_key) {
            Some(next) => *next = (*next).max(offset + 1),
            None => {
                self.next.insert(self.last_key.clone(), offset + 1);
            }
        }
    }

    /// Every partition is read to its end (a partition without a fetch response yet is only
    /// done when listed as empty). When `idle`, the consumer's position counts as read too:
    /// offsets without a record (transaction markers, compacted records) never arrive.
    pub fn done(&mut self, consumer: &Consumer, idle: bool) -> bool {
        let positions = if idle { consumer.position().ok() } else { None };
        let mut all = true;
        for (key @ (topic, partition), (end, fetched)) in &mut self.ends {
            if !*fetched && let Some(reported) = fetched_end(consumer, topic, *partition) {
                *end = (*end).max(reported);
                *fetched = true;
            }
            let next = self.next.get(key).copied().unwrap_or(0);
            let position = positions
                .as_ref()
                .and_then(|p| p.find_partition(topic, *partition))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            let reached = next >= *end || position.is_some_and(|p| p >= *end);
            all &= if *fetched { reached } else { *end == 0 };
        }
        all
    }
}

/// The pause after a receive error (the broker is down or restarting).
const ERROR_PAUSE: Duration = Duration::from_millis(500);

/// How often a draining batch checks whether the ends are reached while no record arrives.
const DRAIN_CHECK: Duration = Duration::from_millis(50);

/// When micro-batches close: one trigger interval after the previous one closed, like a
/// processing-time trigger in Spark. A batch collected while the previous one applies closes
/// when that apply is done if it outlasts the interval (see [`collect`]); one collected after a
/// batch that took longer than the interval to apply is due at once, with what the consumer has
/// fetched meanwhile. Either way a record waits for at most one batch in flight instead of that
/// batch plus a full interval.
#[derive(Debug, Default)]
pub(super) struct Cadence {
    /// When the previous batch closed (its deadline).
    last: Option<Instant>,
}

impl Cadence {
    /// The deadline of the batch starting at `now`, recorded as the latest one.
    fn next_deadline(&mut self, now: Instant, interval: Duration) -> Instant {
        // An overdue batch is due now, and the cadence restarts from it: a long stall is not
        // followed by a run of triggers that were missed.
        let due = self
            .last
            .map_or(now + interval, |last| (last + interval).max(now));
        self.last = Some(due);
        due
    }
}

/// Collects one micro-batch into `batch`. Returns early (possibly empty) when a stop is
/// requested, so the batch in flight is still applied before the processor exits. When draining,
/// it also returns as soon as every partition is read to its end, so `--once` never waits out the
/// interval and a backlog within the bounds is one batch. An overdue batch (see [`Cadence`]) takes the records
/// already fetched without waiting; when there are none, it waits one interval for new ones.
///
/// `applying` is set while the previous batch is still being applied: this one then stays open
/// past its deadline until that apply is done (within the bounds), since it could not be applied
/// earlier anyway, and fetching and decoding go on meanwhile.
pub(super) async fn collect(
    consumer: &Consumer,
    bounds: &Bounds,
    cadence: &mut Cadence,
    mut drain: Option<&mut Drain>,
    shutdown: &mut watch::Receiver<bool>,
    mut applying: Option<watch::Receiver<bool>>,
    mut batch: Intake,
) -> Intake {
    let mut deadline = cadence.next_deadline(Instant::now(), bounds.interval);
    let overdue = deadline <= Instant::now() && applying.is_none();
    let mut errors = 0_u64;
    let mut last_logged: Option<Instant> = None;
    if overdue {
        while take_fetched(consumer, bounds, &mut batch, drain.as_deref_mut()) {}
        if !batch.is_empty() {
            return batch;
        }
        deadline = cadence.next_deadline(Instant::now(), bounds.interval);
    }
    while batch.received < bounds.max_records
        && batch.bytes < bounds.max_bytes
        && (Instant::now() < deadline || applying.is_some())
        && !drain.as_mut().is_some_and(|d| d.done(consumer, false))
    {
        // Past the deadline only while the previous batch applies: then its end, a record or
        // (draining) the next check wakes the loop, no timer.
        let now = Instant::now();
        let wake = match (&drain, now < deadline) {
            (Some(_), true) => Some((now + DRAIN_CHECK).min(deadline)),
            (Some(_), false) => Some(now + DRAIN_CHECK),
            (None, true) => Some(deadline),
            (None, false) => None,
        };
        tokio::select! {
            biased;
            _ = stop_requested(shutdown) => break,
            _ = applied(&mut applying) => {}
            received = consumer.recv() => match received {
                Ok(message) => {
                    if errors > 0 {
                        tracing::info!(failures = errors, "receiving from Kafka again");
                        errors = 0;
                    }
                    take(&mut batch, message, drain.as_deref_mut());
                    // The rest of the run comes back through the select, so a stop or the
                    // deadline is noticed within a run.
                    take_fetched(consumer, bounds, &mut batch, drain.as_deref_mut());
                }
                Err(error) => {
                    // Broker down or restarting: librdkafka reconnects with its own backoff and
                    // reports a failure on every poll meanwhile: logged every 10 s, with a short
                    // pause so the loop does not spin.
                    errors += 1;
                    if last_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(%error, failures = errors, "receiving from Kafka failed; the client keeps reconnecting");
                        last_logged = Some(Instant::now());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(ERROR_PAUSE) => {}
                        _ = stop_requested(shutdown) => break,
                    }
                }
            },
            _ = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
        }
    }
    batch
}

/// How many records a collect takes at most without going back to its `select!`, which polls
/// every branch (stop, apply done, timer) and reads the clock for each record otherwise.
const FETCHED_RUN: usize = 256;

/// Takes records the consumer has fetched already, up to [`FETCHED_RUN`] and within the
/// bounds; stops at the first that is not there yet, or at an error (logged: the collect loop's
/// next receive meets the broker's state again and handles it). True when it stopped at the run's
/// end, with more records possibly there.
fn take_fetched(
    consumer: &Consumer,
    bounds: &Bounds,
    batch: &mut Intake,
    mut drain: Option<&mut Drain>,
) -> bool {
    for _ in 0..FETCHED_RUN {
        if batch.received >= bounds.max_records || batch.bytes >= bounds.max_bytes {
            return false;
        }
        match consumer.recv().now_or_never() {
            Some(Ok(message)) => take(batch, message, drain.as_deref_mut()),
            Some(Err(error)) => {
                tracing::warn!(%error, "receiving from Kafka failed");
                return false;
            }
            None => return false,
        }
    }
    true
}

/// Adds a received record to the batch (and to the drain's read positions).
fn take(batch: &mut Intake, message: BorrowedMessage<'_>, drain: Option<&mut Drain>) {
    if let Some(drain) = drain {
        drain.received(message.topic(), message.partition(), message.offset());
    }
    batch.push(&message);
}

/// Resolves once the apply running beside a collect is done, and forgets it (at once when it is
/// done already); never when there is none. `applying` is `None` from then on, which is how the
/// collect loop knows.
async fn applied(applying: &mut Option<watch::Receiver<bool>>) {
    let Some(receiver) = applying else {
        return std::future::pending().await;
    };
    // The sender flips to false (or drops) when the apply is done.
    let _ = receiver.wait_for(|running| !*running).await;
    *applying = None;
}

/// Resolves once a stop is requested; never, when nobody can request one any more.
pub(super) async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(250);

    #[test]
    fn the_first_batch_waits_one_interval() {
        let start = Instant::now();
        assert_eq!(
            Cadence::default().next_deadline(start, INTERVAL),
            start + INTERVAL
        );
    }

    #[test]
    fn a_batch_applied_within_the_interval_keeps_the_cadence() {
        let start = Instant::now();
        let mut cadence = Cadence::default();
        cadence.next_deadline(start, INTERVAL);
        // Collected until start + 250 ms, applied in 100 ms: the next trigger is start + 500 ms.
        let next = cadence.next_deadline(start + Duration::from_millis(350), INTERVAL);
        assert_eq!(next, start + 2 * INTERVAL);
        let after = cadence.next_deadline(start + Duration::from_millis(520), INTERVAL);
        assert_eq!(after, start + 3 * INTERVAL);
    }

    #[test]
    fn an_overdue_batch_is_due_at_once_and_the_cadence_restarts_from_it() {
        let start = Instant::now();
        let mut cadence = Cadence::default();
        cadence.next_deadline(start, INTERVAL);
        // The first batch took 900 ms to apply after its 250 ms window.
        let late = start + Duration::from_millis(1_150);
        assert_eq!(cadence.next_deadline(late, INTERVAL), late);
        // Nothing was fetched meanwhile: the batch waits one interval from then, not a run of
        // triggers that were missed.
        assert_eq!(cadence.next_deadline(late, INTERVAL), late + INTERVAL);
        assert_eq!(
            cadence.next_deadline(late + Duration::from_millis(300), INTERVAL),
            late + 2 * INTERVAL
        );
    }
}
