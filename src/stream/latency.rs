//! End-to-end latency of applied records: from the producer's timestamp on the Kafka record
//! (`CreateTime`) to the moment the batch holding it is committed to every destination.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Latencies in whole milliseconds, exact (a count per distinct value: a run has a few thousand
/// distinct values at most, whatever its record count).
#[derive(Debug, Clone, Default)]
pub(super) struct Histogram {
    counts: BTreeMap<u64, u64>,
    records: u64,
}

impl Histogram {
    pub fn record(&mut self, millis: u64) {
        *self.counts.entry(millis).or_default() += 1;
        self.records += 1;
    }

    /// The smallest latency at or below which a fraction `q` of the records lie.
    fn quantile(&self, q: f64) -> Option<u64> {
        let rank = ((q * self.records as f64).ceil() as u64).clamp(1, self.records.max(1));
        let mut seen = 0;
        for (millis, count) in &self.counts {
            seen += count;
            if seen >= rank {
                return Some(*millis);
            }
        }
        None
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            records: self.records,
            p50_ms: self.quantile(0.50),
            p99_ms: self.quantile(0.99),
            max_ms: self.counts.keys().next_back().copied(),
        }
    }
}

/// Produce-to-commit latency over a run; `None` without records (or without producer times).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    pub records: u64,
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub max_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record(ms);
        }
        let s = h.summary();
        assert_eq!(
            (s.records, s.p50_ms, s.p99_ms, s.max_ms),
            (100, Some(50), Some(99), Some(100))
        );
    }

    #[test]
    fn an_empty_histogram_has_no_quantiles() {
        let s = Histogram::default().summary();
        assert_eq!((s.records, s.p50_ms, s.p99_ms), (0, None, None));
    }

    #[test]
    fn repeated_values_count_each_time() {
        let mut h = Histogram::default();
        for _ in 0..98 {
            h.record(5);
        }
        h.record(700);
        h.record(900);
        let s = h.summary();
        assert_eq!(
            (s.p50_ms, s.p99_ms, s.max_ms),
            (Some(5), Some(700), Some(900))
        );
    }
}
