//! Micro-batching: collect records until the trigger interval ends or a size bound is hit.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::consumer::Consumer as _;
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset};
use tokio::sync::watch;
use tokio::time::Instant;

use super::consumer::{Consumer, fetched_end};

pub(super) struct MicroBatch {
    pub messages: Vec<OwnedMessage>,
    pub bytes: usize,
}

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
    pub next: HashMap<(String, i32), i64>,
}

impl Drain {
    pub fn new(listed: &BTreeMap<(String, i32), i64>) -> Drain {
        Drain {
            ends: listed
                .iter()
                .map(|(k, end)| (k.clone(), (*end, false)))
                .collect(),
            next: HashMap::new(),
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

/// Collects one micro-batch. Returns early (possibly empty) when a stop is requested, so the
/// batch in flight is still applied before the processor exits. When draining, it also returns
/// as soon as every partition is read to its end, so `--once` never waits out the interval and a
/// backlog within the bounds is one batch.
pub(super) async fn collect(
    consumer: &Consumer,
    bounds: &Bounds,
    mut drain: Option<&mut Drain>,
    shutdown: &mut watch::Receiver<bool>,
) -> MicroBatch {
    let deadline = Instant::now() + bounds.interval;
    let mut batch = MicroBatch {
        messages: Vec::new(),
        bytes: 0,
    };
    let mut errors = 0_u64;
    let mut last_logged: Option<Instant> = None;
    while batch.messages.len() < bounds.max_records
        && batch.bytes < bounds.max_bytes
        && Instant::now() < deadline
        && !drain.as_mut().is_some_and(|d| d.done(consumer, false))
    {
        let wake = match drain {
            Some(_) => (Instant::now() + DRAIN_CHECK).min(deadline),
            None => deadline,
        };
        tokio::select! {
            biased;
            _ = stop_requested(shutdown) => break,
            received = consumer.recv() => match received {
                Ok(message) => {
                    batch.bytes += message.payload_len() + message.key().map_or(0, <[u8]>::len);
                    let message = message.detach();
                    if errors > 0 {
                        tracing::info!(failures = errors, "receiving from Kafka again");
                        errors = 0;
                    }
                    if let Some(drain) = drain.as_mut() {
                        let key = (message.topic().to_string(), message.partition());
                        let next = drain.next.entry(key).or_insert(0);
                        *next = (*next).max(message.offset() + 1);
                    }
                    batch.messages.push(message);
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
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    batch
}

/// Resolves once a stop is requested; never, when nobody can request one any more.
pub(super) async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}
