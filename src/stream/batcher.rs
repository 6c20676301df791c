//! Micro-batching: collect records until the trigger interval ends or a size bound is hit.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tokio::sync::watch;
use tokio::time::Instant;

use super::consumer::Consumer;

pub(super) struct MicroBatch {
    pub messages: Vec<OwnedMessage>,
    pub bytes: usize,
}

pub(super) struct Bounds {
    pub interval: Duration,
    pub max_records: usize,
    pub max_bytes: usize,
}

/// Collects one micro-batch. Returns early (possibly empty) when a stop is requested, so the
/// batch in flight is still applied before the processor exits.
pub(super) async fn collect(
    consumer: &Consumer,
    bounds: &Bounds,
    shutdown: &mut watch::Receiver<bool>,
) -> MicroBatch {
    let deadline = Instant::now() + bounds.interval;
    let mut batch = MicroBatch {
        messages: Vec::new(),
        bytes: 0,
    };
    let mut backoff = Duration::from_millis(200);
    while batch.messages.len() < bounds.max_records && batch.bytes < bounds.max_bytes {
        tokio::select! {
            received = consumer.recv() => match received {
                Ok(message) => {
                    batch.bytes += message.payload_len() + message.key().map_or(0, <[u8]>::len);
                    batch.messages.push(message.detach());
                    backoff = Duration::from_millis(200);
                }
                Err(error) => {
                    // The broker may be down or restarting; librdkafka reconnects by itself.
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "receiving from Kafka failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop_requested(shutdown) => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            },
            _ = tokio::time::sleep_until(deadline) => break,
            _ = stop_requested(shutdown) => break,
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
