//! PII masking outside the data table: quarantine columns, reasons and raw payloads are masked
//! with the table's own `mask_pii` transforms, unless `quarantine.mask_pii: false`.

use std::collections::HashMap;

use crate::config::spec::{TableSpec, TransformKind};

use super::transforms::mask_pii;

/// The `mask_pii` transforms of a table, by column, in transform order.
#[derive(Debug, Clone, Default)]
pub struct PiiMasks {
    by_column: HashMap<String, Vec<usize>>,
}

impl PiiMasks {
    /// The masks quarantine output gets: none when the table opts out.
    pub fn for_quarantine(table: &TableSpec) -> PiiMasks {
        if !table.mask_pii_in_quarantine {
            return PiiMasks::default();
        }
        let mut by_column: HashMap<String, Vec<usize>> = HashMap::new();
        for transform in &table.transforms {
            if let TransformKind::MaskPii { visible_chars } = transform.kind {
                by_column
                    .entry(transform.column.clone())
                    .or_default()
                    .push(visible_chars);
            }
        }
        PiiMasks { by_column }
    }

    pub fn is_empty(&self) -> bool {
        self.by_column.is_empty()
    }

    pub fn masks(&self, column: &str) -> bool {
        self.by_column.contains_key(column)
    }

    /// The text as stored in quarantine: masked if the column is PII, else unchanged.
    pub fn apply<'t>(&self, column: &str, text: &'t str) -> std::borrow::Cow<'t, str> {
        match self.by_column.get(column) {
            None => std::borrow::Cow::Borrowed(text),
            Some(masks) => {
                let mut masked = text.to_owned();
                for &visible in masks {
                    masked = mask_pii(&masked, visible);
                }
                std::borrow::Cow::Owned(masked)
            }
        }
    }
}
