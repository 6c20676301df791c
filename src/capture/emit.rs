//! One row change → one DMS JSON message on the table's topic, keyed by the primary key's text,
//! tracked until the broker acknowledges it.

use chrono::{DateTime, Utc};

use super::error::Result;
use super::producer::{DeliveryTracker, Producer};
use super::source::SourceTable;
use crate::cdc::encode::encode;
use crate::pipeline::plan::Operation;

pub(crate) struct Emitter<'a> {
    pub producer: &'a Producer,
    pub tracker: &'a mut DeliveryTracker,
    /// Messages handed to the producer.
    pub sent: u64,
}

impl<'a> Emitter<'a> {
    pub(crate) fn new(producer: &'a Producer, tracker: &'a mut DeliveryTracker) -> Self {
        Emitter {
            producer,
            tracker,
            sent: 0,
        }
    }

    pub(crate) async fn emit(
        &mut self,
        table: &SourceTable,
        op: Operation,
        row: serde_json::Map<String, serde_json::Value>,
        key: Option<&str>,
        commit_ts: DateTime<Utc>,
        transaction_id: Option<u64>,
    ) -> Result<()> {
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
        let delivery = self.producer.send(&table.spec.topic, key, &payload).await?;
        self.tracker.message(&table.spec.topic, delivery).await?;
        self.sent += 1;
        Ok(())
    }
}
