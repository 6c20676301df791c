//! Rows picked out of a batch, in a given order, applied to each of its columns. Most batches
//! pick their rows in ascending order (one partition, or partitions arriving in runs), often
//! nearly all of them: then Arrow's filter copies runs of rows at once, where `take` copies row
//! by row, and picking every row copies nothing.

use deltalake::arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array};
use deltalake::arrow::compute::{FilterBuilder, FilterPredicate, take};
use deltalake::arrow::error::ArrowError;

pub(crate) enum RowSelection {
    /// Every row, in order.
    All,
    /// Rows in ascending order.
    Ascending(FilterPredicate),
    /// Rows in any other order, or repeated.
    Indices(UInt32Array),
}

impl RowSelection {
    /// `rows` (positions in a batch of `len` rows), in that order.
    pub(crate) fn new(rows: &[u32], len: usize) -> RowSelection {
        let ascending = rows.windows(2).all(|pair| pair[0] < pair[1]);
        if !ascending || rows.last().is_some_and(|&last| last as usize >= len) {
            return RowSelection::Indices(UInt32Array::from(rows.to_vec()));
        }
        if rows.len() == len {
            return RowSelection::All;
        }
        let mut mask = vec![false; len];
        for &row in rows {
            mask[row as usize] = true;
        }
        let predicate = FilterBuilder::new(&BooleanArray::from(mask))
            .optimize()
            .build();
        RowSelection::Ascending(predicate)
    }

    /// The selected rows of `column`.
    pub(crate) fn apply(&self, column: &dyn Array) -> Result<ArrayRef, ArrowError> {
        match self {
            RowSelection::All => Ok(column.slice(0, column.len())),
            RowSelection::Ascending(predicate) => predicate.filter(column),
            RowSelection::Indices(indices) => take(column, indices, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use deltalake::arrow::array::{Int32Array, StringArray};
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever the rows, the columns come out as `take` picks them.
        #[test]
        fn picks_what_take_picks(
            values in proptest::collection::vec(proptest::option::of("[a-z]{0,5}"), 0..50),
            picks in proptest::collection::vec(0_usize..50, 0..60),
            ascending in any::<bool>(),
            all in any::<bool>(),
        ) {
            let len = values.len();
            let mut rows: Vec<u32> = if all {
                (0..len as u32).collect()
            } else {
                picks.iter().filter(|&&p| p < len).map(|&p| p as u32).collect()
            };
            if ascending {
                rows.sort_unstable();
                rows.dedup();
            }
            let texts = StringArray::from(values.clone());
            let numbers = Int32Array::from_iter(values.iter().map(|v| v.as_ref().map(|s| s.len() as i32)));
            let selection = RowSelection::new(&rows, len);
            let indices = UInt32Array::from(rows.clone());
            for column in [&texts as &dyn Array, &numbers] {
                let picked = selection.apply(column).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let expected = take(column, &indices, None).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(picked.to_data(), expected.to_data());
            }
        }
    }
}
