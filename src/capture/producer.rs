//! Kafka side: an idempotent producer (`acks=all`) and a delivery tracker that turns broker
//! acknowledgements into the LSN capture may confirm to PostgreSQL.
//!
//! Guarantee: [`DeliveryTracker::acked_lsn`] only reaches a transaction's commit LSN once the
//! broker acknowledged every message of that transaction and of every transaction before it.
//! Capture confirms nothing beyond it, so after a crash PostgreSQL resends at most the
//! unacknowledged tail (at-least-once; the processor is idempotent).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::error::{CaptureError, Result};

/// How long librdkafka keeps retrying one message before reporting it failed; capture then
/// backs off and replays from the last confirmed LSN.
pub(crate) const MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a wait for the broker is reported while it lasts.
const SLOW_DELIVERY_WARNING: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub(crate) struct Producer {
    inner: FutureProducer,
    bootstrap: String,
}

impl Producer {
    pub(crate) fn new(bootstrap: &str, message_timeout: Duration) -> Result<Self> {
        let inner: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("client.id", "dqetl-capture")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            // Bounds the payload bytes librdkafka holds (large rows add up); `send` waits beyond.
            .set("queue.buffering.max.kbytes", "65536")
            .set(
                "message.timeout.ms",
                message_timeout.as_millis().to_string(),
            )
            .create()
            .map_err(|source| CaptureError::ProducerConfig {
                bootstrap: bootstrap.to_string(),
                source,
            })?;
        Ok(Producer {
            inner,
            bootstrap: bootstrap.to_string(),
        })
    }

    pub(crate) fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Waits up to `timeout` for every message handed over to be acknowledged or failed, so
    /// that nothing of this producer can still land after the next session read what the
    /// topics hold.
    pub(crate) fn flush(&self, timeout: Duration) {
        if let Err(e) = self.inner.flush(timeout) {
            tracing::warn!(error = %e, "messages still in flight when the session ended");
        }
    }

    /// Hands one message to librdkafka, waiting while its local queue is full. `partition`
    /// None lets librdkafka choose; `header` is a `(name, value)` pair.
    pub(crate) async fn send(
        &self,
        topic: &str,
        key: Option<&str>,
        payload: &[u8],
        partition: Option<i32>,
        header: Option<(&str, &str)>,
    ) -> Result<DeliveryFuture> {
        loop {
            let mut record = FutureRecord::<str, [u8]>::to(topic).payload(payload);
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            if let Some((name, value)) = header {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: name,
                    value: Some(value),
                }));
            }
            match self.inner.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((source, _)) => {
                    return Err(CaptureError::Produce {
                        topic: topic.to_string(),
                        source,
                    });
                }
            }
        }
    }
}

/// What the tracker is told, in stream order.
enum Tracked {
    Message {
        topic: String,
        delivery: DeliveryFuture,
    },
    /// Every message since the previous commit belongs to the transaction ending here.
    Commit {
        end_lsn: u64,
    },
    Barrier(oneshot::Sender<()>),
}

pub(crate) struct DeliveryTracker {
    tx: mpsc::Sender<Tracked>,
    acked: Arc<AtomicU64>,
    task: JoinHandle<Result<()>>,
    /// The last commit LSN handed to the tracker.
    last_tracked_commit: u64,
}

impl DeliveryTracker {
    /// `capacity` bounds the messages in flight; `track` waits when it is reached.
    pub(crate) fn start(capacity: usize, bootstrap: &str) -> Self {
        let (tx, rx) = mpsc::channel(capacity);
        let acked = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run_tracker(rx, Arc::clone(&acked), bootstrap.to_string()));
        DeliveryTracker {
            tx,
            acked,
            task,
            last_tracked_commit: 0,
        }
    }

    pub(crate) async fn message(&mut self, topic: &str, delivery: DeliveryFuture) -> Result<()> {
        self.push(Tracked::Message {
            topic: topic.to_string(),
            delivery,
        })
        .await
    }

    pub(crate) async fn commit(&mut self, end_lsn: u64) -> Result<()> {
        self.last_tracked_commit = end_lsn;
        self.push(Tracked::Commit { end_lsn }).await
    }

    /// Waits until every message tracked so far is acknowledged.
    pub(crate) async fn barrier(&mut self) -> Result<()> {
        let (done_tx, done_rx) = oneshot::channel();
        self.push(Tracked::Barrier(done_tx)).await?;
        match done_rx.await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.failure().await),
        }
    }

    /// The highest commit LSN whose transaction, and all before it, the broker acknowledged.
    pub(crate) fn acked_lsn(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    /// True when nothing tracked is still waiting for the broker.
    pub(crate) fn drained(&self) -> bool {
        self.tx.capacity() == self.tx.max_capacity() && self.acked_lsn() >= self.last_tracked_commit
    }

    /// Resolves when the tracker stopped because a delivery failed; for `select!`.
    pub(crate) async fn failure(&mut self) -> CaptureError {
        match (&mut self.task).await {
            Ok(Err(err)) => err,
            Ok(Ok(())) | Err(_) => CaptureError::DeliveryTrackingLost,
        }
    }

    async fn push(&mut self, item: Tracked) -> Result<()> {
        if self.tx.send(item).await.is_err() {
            return Err(self.failure().await);
        }
        Ok(())
    }
}

async fn run_tracker(
    mut rx: mpsc::Receiver<Tracked>,
    acked: Arc<AtomicU64>,
    bootstrap: String,
) -> Result<()> {
    while let Some(item) = rx.recv().await {
        match item {
            Tracked::Message {
                topic,
                mut delivery,
            } => {
                let outcome = loop {
                    match tokio::time::timeout(SLOW_DELIVERY_WARNING, &mut delivery).await {
                        Ok(outcome) => break outcome,
                        Err(_) => tracing::warn!(
                            broker = %bootstrap, topic = %topic, pending = rx.len() + 1,
                            "still waiting for the broker to acknowledge messages"
                        ),
                    }
                };
                match outcome {
                    Ok(Ok(_)) => {}
                    // The returned message holds row values: only the error is kept.
                    Ok(Err((source, _message))) => {
                        return Err(CaptureError::Produce { topic, source });
                    }
                    Err(_canceled) => return Err(CaptureError::DeliveryTrackingLost),
                }
            }
            Tracked::Commit { end_lsn } => {
                acked.fetch_max(end_lsn, Ordering::AcqRel);
            }
            Tracked::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
    Ok(())
}
