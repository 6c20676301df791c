//! Offsets of a partition the consumer never delivered: the broker deleted them (the topic's
//! retention ran out before they were applied) or skipped them. With `kafka.on_data_loss: fail`
//! the processor stops on them instead of going on without those records.

use std::fmt;

/// Offsets `first..=last` of `partition` were never delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub partition: i32,
    pub first: i64,
    pub last: i64,
}

impl Gap {
    pub fn offsets(&self) -> u64 {
        (self.last - self.first + 1) as u64
    }
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "partition {} offset {}", self.partition, self.first)
        } else {
            write!(
                f,
                "partition {} offsets {}..={}",
                self.partition, self.first, self.last
            )
        }
    }
}

/// A batch that would have gone on past records never delivered; nothing of it was applied.
#[derive(Debug, thiserror::Error)]
#[error(
    "table '{table}': topic {topic} skipped {offsets} offset(s), never delivered by the broker \
     ({listed}): deleted by the topic's retention before they were applied, or lost by the \
     broker. Nothing past them was applied. To go on without them, set `kafka.on_data_loss: warn` \
     (compacted topics and transactional producers need it); to keep them, re-capture the rows from the source",
    offsets = self.offsets(),
    listed = self.listed()
)]
pub struct DataLoss {
    pub table: String,
    pub topic: String,
    pub gaps: Vec<Gap>,
}

impl DataLoss {
    pub fn offsets(&self) -> u64 {
        self.gaps.iter().map(Gap::offsets).sum()
    }

    /// The first few gaps, and how many more.
    fn listed(&self) -> String {
        const SHOWN: usize = 5;
        let mut text: Vec<String> = self.gaps.iter().take(SHOWN).map(Gap::to_string).collect();
        if self.gaps.len() > SHOWN {
            text.push(format!("and {} more gaps", self.gaps.len() - SHOWN));
        }
        text.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_names_the_table_topic_and_every_gap_up_to_five() {
        let gaps: Vec<Gap> = (0..7)
            .map(|p| Gap {
                partition: p,
                first: 10,
                last: 10 + i64::from(p),
            })
            .collect();
        let text = DataLoss {
            table: "orders".into(),
            topic: "cdc-orders".into(),
            gaps,
        }
        .to_string();
        assert!(
            text.starts_with("table 'orders': topic cdc-orders skipped 28 offset(s)"),
            "{text}"
        );
        assert!(
            text.contains("(partition 0 offset 10, partition 1 offsets 10..=11, "),
            "{text}"
        );
        assert!(text.contains("and 2 more gaps)"), "{text}");
        assert!(text.contains("`kafka.on_data_loss: warn`"), "{text}");
    }
}
