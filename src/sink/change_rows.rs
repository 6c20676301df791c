//! The change rows an SCD2 commit applies: rows of a batch picked in application order, or all of
//! them. The processor hands over the decoded batch's columns and the rows it picked (see
//! [`Changes`]), so the picked rows are copied only where a commit needs them as arrays of their
//! own: the keys, the values compared, the new versions.

use deltalake::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use deltalake::arrow::compute::take;
use deltalake::arrow::error::ArrowError;

use crate::pipeline::plan::{Changes, picked_batch};

/// Change `i` is row `rows[i]` of `batch`, or row `i` when there is no `rows`.
#[derive(Debug, Clone, Copy)]
pub struct ChangeRows<'a> {
    pub(super) batch: &'a RecordBatch,
    rows: Option<&'a [u32]>,
}

impl<'a> ChangeRows<'a> {
    /// How many changes there are.
    pub(super) fn len(&self) -> usize {
        self.rows.map_or(self.batch.num_rows(), <[u32]>::len)
    }

    /// Whether every row of the batch is a change, in order.
    pub(super) fn is_every_row(&self) -> bool {
        self.rows.is_none()
    }

    /// The batch row of change `change`.
    #[inline]
    pub(super) fn row(&self, change: usize) -> usize {
        self.rows.map_or(change, |rows| rows[change] as usize)
    }

    /// Column `column` of the batch, whole: read it at [`ChangeRows::row`].
    pub(super) fn column(&self, column: usize) -> &'a ArrayRef {
        self.batch.column(column)
    }

    /// Column `column` at the changes, in order.
    pub(super) fn picked(&self, column: usize) -> Result<ArrayRef, ArrowError> {
        match self.rows {
            None => Ok(self.batch.column(column).clone()),
            Some(rows) => take(
                self.batch.column(column),
                &UInt32Array::from(rows.to_vec()),
                None,
            ),
        }
    }

    /// The changes as a batch of their own.
    pub(super) fn to_batch(self) -> Result<RecordBatch, ArrowError> {
        picked_batch(self.batch, self.rows)
    }
}

impl<'a> From<&'a RecordBatch> for ChangeRows<'a> {
    fn from(batch: &'a RecordBatch) -> ChangeRows<'a> {
        ChangeRows { batch, rows: None }
    }
}

impl<'a> From<&'a Changes> for ChangeRows<'a> {
    fn from(changes: &'a Changes) -> ChangeRows<'a> {
        ChangeRows {
            batch: &changes.batch,
            rows: changes.rows.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{AsArray, Int64Array};
    use deltalake::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![10, 11, 12, 13]))],
        )
        .unwrap_or_else(|e| panic!("batch: {e}"))
    }

    fn ids(column: &ArrayRef) -> Vec<i64> {
        column.as_primitive::<Int64Type>().values().to_vec()
    }

    #[test]
    fn picked_rows_come_in_the_order_given() {
        let changes = Changes {
            batch: batch(),
            rows: Some(vec![3, 1]),
        };
        let rows = ChangeRows::from(&changes);
        assert_eq!(rows.len(), 2);
        assert!(!rows.is_every_row());
        assert_eq!((rows.row(0), rows.row(1)), (3, 1));
        let picked = rows.picked(0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ids(&picked), [13, 11]);
        let own = rows.to_batch().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ids(own.column(0)), [13, 11]);
    }

    #[test]
    fn a_batch_alone_is_every_row_in_order() {
        let batch = batch();
        let rows = ChangeRows::from(&batch);
        assert_eq!(rows.len(), 4);
        assert!(rows.is_every_row());
        assert_eq!(rows.row(2), 2);
        let picked = rows.picked(0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ids(&picked), [10, 11, 12, 13]);
    }
}
