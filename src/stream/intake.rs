//! A micro-batch as it is collected: each record is decoded the moment it arrives, so a batch
//! holds Arrow columns and a few numbers per record instead of the Kafka messages (payload, key,
//! topic and headers: most of a batch's memory before).
//!
//! Records already in the lake when the batch starts (at or below the floor of their partition)
//! and records the consumer hands over twice are kept as positions only, never decoded; the
//! table's apply step sorts every record out again from the positions, with the marks as they
//! are then (see [`TableBatch::restrict`]).

use std::collections::BTreeMap;

use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use rustc_hash::FxHashMap;

use crate::cdc::decode::{Decoder, RawMessage};
use crate::config::spec::TableSpec;
use crate::pipeline::plan::DecodedBatch;

use super::consumer::Starts;
use super::watermarks;

/// One received record, as far as the apply step needs it once the payload is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Received {
    pub partition: i32,
    pub offset: i64,
    /// The producer's timestamp (ms since the epoch), for latency.
    pub produced_ms: Option<i64>,
    /// Whether the payload went to the decoder (not when it was already applied or a repeat).
    pub decoded: bool,
}

/// One table's records of a micro-batch.
#[derive(Debug)]
pub(super) struct TableBatch {
    /// Every received record, in arrival order.
    pub records: Vec<Received>,
    /// The decoded records (exactly those marked `decoded`), in arrival order.
    pub decoded: DecodedBatch,
}

impl TableBatch {
    /// The decoded part for records that `keep` says are still wanted: the others (now at or
    /// below a mark, or of a partition no longer assigned) are taken out of the rows, the
    /// malformed records and the control-record count. Every decoded record is exactly one row,
    /// one malformed record or one control record, so the control records kept are the kept
    /// decoded records that are neither.
    pub fn restrict(
        &self,
        keep: impl Fn(i32, i64) -> bool,
    ) -> Result<DecodedBatch, deltalake::arrow::error::ArrowError> {
        let kept_decoded = self
            .records
            .iter()
            .filter(|r| r.decoded && keep(r.partition, r.offset))
            .count() as u64;
        let mut decoded = watermarks::retain(&self.decoded, &keep)?;
        decoded.control_records = kept_decoded
            .saturating_sub(decoded.rows.num_rows() as u64)
            .saturating_sub(decoded.malformed.len() as u64);
        Ok(decoded)
    }

    /// Leaves out the records of partitions not in `assigned`, as if they had never arrived.
    pub fn retain_partitions(
        &mut self,
        assigned: &dyn Fn(i32) -> bool,
    ) -> Result<usize, deltalake::arrow::error::ArrowError> {
        let before = self.records.len();
        self.decoded = self.restrict(|partition, _| assigned(partition))?;
        self.records.retain(|r| assigned(r.partition));
        Ok(before - self.records.len())
    }
}

struct TableIntake {
    topic: String,
    /// The next offset to apply per partition when the batch started: below it, records are in
    /// the lake already.
    starts: FxHashMap<i32, i64>,
    decoder: Decoder,
    records: Vec<Received>,
    /// The last offset received per partition in this batch.
    last: BTreeMap<i32, i64>,
}

/// The micro-batch being collected, per table.
pub(super) struct Intake {
    tables: Vec<TableIntake>,
    /// Looked up for every record: a fast hash rather than a DoS-resistant one (topic names come
    /// from the config).
    by_topic: FxHashMap<String, usize>,
    /// A topic no table reads (the consumer only subscribes to configured topics).
    pub unknown_topic: Option<String>,
    /// Records received, of every table.
    pub received: usize,
    /// Payload and key bytes received.
    pub bytes: usize,
}

impl Intake {
    /// An empty batch for `tables` (indexed as the processor indexes them); records below
    /// `starts` (the next offset to apply per partition) are in the lake already.
    pub fn new(tables: &[TableSpec], starts: Starts) -> Intake {
        Intake {
            tables: tables
                .iter()
                .map(|spec| TableIntake {
                    topic: spec.topic.clone(),
                    starts: starts
                        .iter()
                        .filter(|((topic, _), _)| *topic == spec.topic)
                        .map(|((_, partition), start)| (*partition, *start))
                        .collect(),
                    decoder: Decoder::new(spec, 0),
                    records: Vec::new(),
                    last: BTreeMap::new(),
                })
                .collect(),
            by_topic: tables
                .iter()
                .enumerate()
                .map(|(i, spec)| (spec.topic.clone(), i))
                .collect(),
            unknown_topic: None,
            received: 0,
            bytes: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.received == 0
    }

    /// Takes one record: decoded now unless it is already applied or a repeat within the batch.
    pub fn push(&mut self, message: &BorrowedMessage<'_>) {
        self.bytes += message.payload_len() + message.key().map_or(0, <[u8]>::len);
        self.received += 1;
        let Some(&index) = self.by_topic.get(message.topic()) else {
            self.unknown_topic
                .get_or_insert_with(|| message.topic().to_string());
            return;
        };
        let table = &mut self.tables[index];
        let (partition, offset) = (message.partition(), message.offset());
        let repeat = table
            .last
            .get(&partition)
            .is_some_and(|last| offset <= *last);
        let applied = table
            .starts
            .get(&partition)
            .is_some_and(|start| offset < *start);
        let decoded = !repeat && !applied;
        if !repeat {
            table.last.insert(partition, offset);
        }
        if decoded {
            table.decoder.push(&RawMessage {
                topic: &table.topic,
                partition,
                offset,
                key: message.key(),
                payload: message.payload(),
            });
        }
        table.records.push(Received {
            partition,
            offset,
            produced_ms: message.timestamp().to_millis(),
            decoded,
        });
    }

    /// The tables' batches, by table index (tables without records left out).
    pub fn finish(self) -> anyhow::Result<BTreeMap<usize, TableBatch>> {
        let mut batches = BTreeMap::new();
        for (index, table) in self.tables.into_iter().enumerate() {
            if table.records.is_empty() {
                continue;
            }
            let decoded = table.decoder.finish().map_err(|error| {
                anyhow::anyhow!(
                    "the records of topic '{}' cannot be decoded into Arrow: {error}",
                    table.topic
                )
            })?;
            batches.insert(
                index,
                TableBatch {
                    records: table.records,
                    decoded,
                },
            );
        }
        Ok(batches)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::pipeline::testing::{decode_at, dms, ints, telemetry_table};

    /// Partition 0: offsets 0, 1 rows, 2 a control record, 3 malformed, 4 a row; partition 1:
    /// offset 0 a row. All decoded.
    fn batch() -> TableBatch {
        let table = telemetry_table();
        let row = |id: i64| dms(&table, "insert", json!({"id": id, "vehicle_id": 1}), 1);
        let control = json!({"data": {}, "metadata": {"record-type": "control", "operation": "create-table"}})
            .to_string()
            .into_bytes();
        let messages = vec![
            (0, 0, row(10)),
            (0, 1, row(11)),
            (0, 2, control),
            (0, 3, b"not json".to_vec()),
            (0, 4, row(14)),
            (1, 0, row(20)),
        ];
        let records = messages
            .iter()
            .map(|(partition, offset, _)| Received {
                partition: *partition,
                offset: *offset,
                produced_ms: None,
                decoded: true,
            })
            .collect();
        TableBatch {
            records,
            decoded: decode_at(&table, &messages),
        }
    }

    #[test]
    fn the_whole_batch_is_decoded_as_received() {
        let batch = batch();
        assert_eq!(batch.decoded.rows.num_rows(), 4);
        assert_eq!(batch.decoded.malformed.len(), 1);
        assert_eq!(batch.decoded.control_records, 1);
    }

    #[test]
    fn restricting_takes_records_out_of_rows_malformed_and_control_records() {
        let batch = batch();
        let later = batch
            .restrict(|partition, offset| partition == 1 || offset >= 3)
            .expect("restrict");
        assert_eq!(ints(&later.rows, "id"), vec![Some(14), Some(20)]);
        assert_eq!(later.malformed.len(), 1);
        assert_eq!(
            later.control_records, 0,
            "the control record was at offset 2"
        );

        let all_but_first = batch.restrict(|_, offset| offset != 0).expect("restrict");
        assert_eq!(ints(&all_but_first.rows, "id"), vec![Some(11), Some(14)]);
        assert_eq!(all_but_first.malformed.len(), 1);
        assert_eq!(all_but_first.control_records, 1);
    }

    #[test]
    fn records_not_decoded_never_count_as_control_records() {
        let mut batch = batch();
        // A repeat of offset 1 that was not decoded, and offset 0 now applied.
        batch.records.push(Received {
            partition: 0,
            offset: 1,
            produced_ms: None,
            decoded: false,
        });
        let restricted = batch
            .restrict(|partition, offset| partition == 1 || offset > 0)
            .expect("restrict");
        assert_eq!(
            ints(&restricted.rows, "id"),
            vec![Some(11), Some(14), Some(20)]
        );
        assert_eq!(restricted.malformed.len(), 1);
        assert_eq!(restricted.control_records, 1);
    }

    #[test]
    fn revoked_partitions_leave_the_batch_entirely() {
        let mut batch = batch();
        let dropped = batch
            .retain_partitions(&|partition| partition == 1)
            .expect("retain");
        assert_eq!(dropped, 5);
        assert_eq!(batch.records.len(), 1);
        assert_eq!(ints(&batch.decoded.rows, "id"), vec![Some(20)]);
        assert!(batch.decoded.malformed.is_empty());
        assert_eq!(batch.decoded.control_records, 0);
    }
}
