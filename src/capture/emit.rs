//! One row change → one DMS JSON message on the table's topic, keyed by the primary key's text,
//! tracked until the broker acknowledges it.

use chrono::{DateTime, Utc};

use super::delivered::{Delivered, POSITION_HEADER, Position};
use super::error::Result;
use super::producer::{DeliveryTracker, Producer};
use super::source::SourceTable;
use crate::cdc::encode::encode;
use crate::pipeline::plan::Operation;

pub(crate) struct Emitter<'a> {
    pub producer: &'a Producer,
    pub tracker: &'a mut DeliveryTracker,
    /// What the topics held when the session started.
    pub delivered: &'a Delivered,
    /// Messages handed to the producer.
    pub sent: u64,
}

/// What [`Emitter::emit`] did with a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Emitted {
    Sent,
    /// Its partition already holds it (sent by an earlier session).
    AlreadyDelivered,
}

impl<'a> Emitter<'a> {
    pub(crate) fn new(
        producer: &'a Producer,
        tracker: &'a mut DeliveryTracker,
        delivered: &'a Delivered,
    ) -> Self {
        Emitter {
            producer,
            tracker,
            delivered,
            sent: 0,
        }
    }

    /// Sends one change to its key's partition, with its `position` (streamed changes; the
    /// snapshot's rows have none) as a header, unless the partition already holds it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn emit(
        &mut self,
        table: &SourceTable,
        op: Operation,
        row: serde_json::Map<String, serde_json::Value>,
        key: Option<&str>,
        commit_ts: DateTime<Utc>,
        transaction_id: Option<u64>,
        position: Option<Position>,
    ) -> Result<Emitted> {
        let topic = &table.spec.topic;
        let partition = key.and_then(|k| self.delivered.partition(topic, k));
        if let (Some(partition), Some(position)) = (partition, position)
            && self.delivered.holds(topic, partition, position)
        {
            return Ok(Emitted::AlreadyDelivered);
        }
        if key.is_none() {
            tracing::warn!(table = %table.spec.name, key = %table.key, operation = op.as_dms(), "row change without a primary key value; sent without a message key");
        }
        let payload = encode(
            &table.spec,
            &table.schema,
            op,
            row,
            commit_ts,
            transaction_id,
        );
        let header = position.map(|p| self.delivered.header(p));
        let delivery = self
            .producer
            .send(
                topic,
                key,
                &payload,
                partition,
                header.as_deref().map(|h| (POSITION_HEADER, h)),
            )
            .await?;
        self.tracker.message(topic, delivery).await?;
        self.sent += 1;
        Ok(Emitted::Sent)
    }
}
