//! Per table, the last Kafka offset each destination has durably applied, per partition.
//! A record is applied to a destination only when its offset is above that destination's mark.

use std::collections::BTreeMap;

use deltalake::arrow::array::{Array, BooleanArray, Int32Array, Int64Array};
use deltalake::arrow::compute::filter_record_batch;

use crate::pipeline::plan::DecodedBatch;
use crate::pipeline::schema::{OFFSET, PARTITION};

/// partition → last applied offset.
pub(super) type Marks = BTreeMap<i32, i64>;

/// The destinations of one table, each with its own marks: they commit one after the other,
/// so after a crash they may differ by one batch.
#[derive(Debug, Clone, Default)]
pub(super) struct TableMarks {
    pub data: Marks,
    pub quarantine: Marks,
    pub metric_rows: Marks,
    pub metric_state: Marks,
}

impl TableMarks {
    /// The lowest mark of any destination: records at or below it are applied everywhere.
    pub fn floor(&self, partition: i32) -> Option<i64> {
        [
            &self.data,
            &self.quarantine,
            &self.metric_rows,
            &self.metric_state,
        ]
        .iter()
        .map(|m| m.get(&partition).copied())
        .min_by(|a, b| match (a, b) {
            (None, _) => std::cmp::Ordering::Less,
            (_, None) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => x.cmp(y),
        })
        .flatten()
    }

    /// The highest mark of any destination: records at or below it reached the lake, so the
    /// broker delivered them (to this processor or to another member of the group).
    pub fn ceiling(&self, partition: i32) -> Option<i64> {
        [
            &self.data,
            &self.quarantine,
            &self.metric_rows,
            &self.metric_state,
        ]
        .iter()
        .filter_map(|m| m.get(&partition).copied())
        .max()
    }

    pub fn advance(marks: &mut Marks, ends: &BTreeMap<i32, i64>) {
        for (p, o) in ends {
            let e = marks.entry(*p).or_insert(*o);
            *e = (*e).max(*o);
        }
    }
}

pub(super) fn is_above(marks: &Marks, partition: i32, offset: i64) -> bool {
    marks.get(&partition).is_none_or(|m| offset > *m)
}

/// The part of a decoded batch above `marks`.
pub(super) fn above(
    decoded: &DecodedBatch,
    marks: &Marks,
) -> Result<DecodedBatch, deltalake::arrow::error::ArrowError> {
    retain(decoded, &|partition, offset| {
        is_above(marks, partition, offset)
    })
}

/// The rows and malformed records of a decoded batch whose (partition, offset) `keep` takes; the
/// control-record count is left as it is.
pub(super) fn retain(
    decoded: &DecodedBatch,
    keep: &dyn Fn(i32, i64) -> bool,
) -> Result<DecodedBatch, deltalake::arrow::error::ArrowError> {
    let rows = &decoded.rows;
    let partitions = rows
        .column_by_name(PARTITION)
        .and_then(|c| c.as_any().downcast_ref::<Int32Array>().cloned());
    let offsets = rows
        .column_by_name(OFFSET)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned());
    let rows = match (partitions, offsets) {
        (Some(p), Some(o)) => {
            let mask: BooleanArray = (0..rows.num_rows())
                .map(|i| Some(p.is_null(i) || o.is_null(i) || keep(p.value(i), o.value(i))))
                .collect();
            // Normally every record is above the marks: no copy then.
            if mask.true_count() == rows.num_rows() {
                rows.clone()
            } else {
                filter_record_batch(rows, &mask)?
            }
        }
        _ => rows.clone(),
    };
    Ok(DecodedBatch {
        rows,
        malformed: decoded
            .malformed
            .iter()
            .filter(|m| keep(m.position.partition, m.position.offset))
            .cloned()
            .collect(),
        control_records: decoded.control_records,
    })
}
