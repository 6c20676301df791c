//! The progress blob of one table for one consumer group: the marks every destination has
//! reached, and the cumulative metric state that covers exactly those records.
//!
//! A small state is kept inline in the blob: one atomic put per batch. A large one (the
//! Uniqueness digests of a big table, one per distinct value ever seen) is kept as parts: the
//! whole state as of a compaction, then what each later batch added. The blob lists the parts
//! and reload merges them in order (metric states merge associatively), so a part counts once
//! the blob that lists it is written, and a crash before that leaves an unlisted part behind,
//! never a half-saved state. A batch thus writes what it added instead of the whole state; once
//! the parts written since the last compaction outgrow it, the whole state is written as one
//! part again, so the bytes written per batch stay proportional to the batch (the compacted part
//! at least doubles between compactions).

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::watermarks::Marks;
use crate::pipeline::TableMetricState;
use crate::sink::Lake;

/// States estimated below this are saved inline in the blob.
pub(super) const INLINE_STATE_BYTES: usize = 64 * 1024;

/// A metric state as saved, in a buffer sized for it up front (a whole state is megabytes of
/// digests; growing the buffer would copy them over and over).
fn saved(state: &TableMetricState) -> serde_json::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(state.saved_size_hint());
    serde_json::to_writer(&mut bytes, state)?;
    Ok(bytes)
}

/// One part of a saved state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Part {
    /// The object's name, next to the blob.
    name: String,
    bytes: u64,
}

/// The blob as read: older blobs hold only `state` and `marks`.
#[derive(Debug, Default, Deserialize)]
struct StoredBlob {
    #[serde(default)]
    state: TableMetricState,
    marks: Marks,
    #[serde(default)]
    parts: Vec<Part>,
}

/// The blob as written, borrowing the state when it is inline.
#[derive(Serialize)]
struct BlobToWrite<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a TableMetricState>,
    marks: &'a Marks,
    #[serde(skip_serializing_if = "<[Part]>::is_empty")]
    parts: &'a [Part],
}

/// Where a table's progress is saved, and the parts its last blob listed.
#[derive(Debug)]
pub(super) struct Progress {
    /// The blob's name; parts are named after it.
    name: String,
    /// Tells this processor's parts from those of other members of the group, which may save
    /// the same table's progress too.
    writer: String,
    inline_limit: usize,
    parts: Vec<Part>,
    /// Numbers this writer's parts.
    next_part: u64,
}

impl Progress {
    pub fn new(group: &str, table: &str) -> Progress {
        Progress::with_inline_limit(group, table, INLINE_STATE_BYTES)
    }

    pub fn with_inline_limit(group: &str, table: &str, inline_limit: usize) -> Progress {
        Progress {
            name: format!("stream-{}-{}.json", hex::encode(table), hex::encode(group)),
            writer: format!("{:016x}", rand::random::<u64>()),
            inline_limit,
            parts: Vec::new(),
            next_part: 0,
        }
    }

    /// Reads the saved state and its marks (both empty when nothing was saved yet).
    pub async fn load(&mut self, lake: &Lake) -> anyhow::Result<(TableMetricState, Marks)> {
        let blob: StoredBlob = match lake
            .load_state(&self.name)
            .await
            .context("reading the progress blob")?
        {
            Some(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading the progress blob {}", self.name))?,
            None => StoredBlob::default(),
        };
        let mut state = blob.state;
        for part in &blob.parts {
            match lake.load_state(&part.name).await {
                Ok(Some(bytes)) => state.merge(
                    serde_json::from_slice(&bytes)
                        .with_context(|| format!("reading metric state part {}", part.name))?,
                ),
                // Only another processor of the group compacting its own progress removes a
                // listed part; the metric state is exact with one processor per group only.
                Ok(None) => tracing::warn!(
                    blob = %self.name, part = %part.name,
                    "a part of the saved metric state is gone (another processor of the group \
                     replaced it); cumulative metrics go on without it"
                ),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("reading metric state part {}", part.name));
                }
            }
        }
        self.parts = blob.parts;
        Ok((state, blob.marks))
    }

    /// Saves `state` (which now includes `added`, the state of the batch just applied) as
    /// covering `marks`: inline when small, else as `added` appended to the parts, or as one new
    /// part when the parts since the last compaction would outgrow it. Parts the new blob no
    /// longer lists are removed afterwards.
    pub async fn save(
        &mut self,
        lake: &Lake,
        state: &TableMetricState,
        added: &TableMetricState,
        marks: &Marks,
    ) -> anyhow::Result<()> {
        let parts = if state.saved_size_hint() <= self.inline_limit {
            Vec::new()
        } else {
            let added = saved(added).context("serializing the batch's metric state")?;
            let compacted = self.parts.first().map_or(0, |p| p.bytes);
            let since: u64 = self.parts.iter().skip(1).map(|p| p.bytes).sum();
            if self.parts.is_empty() || since + added.len() as u64 > compacted {
                let whole = saved(state).context("serializing the metric state")?;
                vec![self.put_part(lake, whole).await?]
            } else {
                let mut parts = self.parts.clone();
                parts.push(self.put_part(lake, added).await?);
                parts
            }
        };
        let blob = BlobToWrite {
            state: parts.is_empty().then_some(state),
            marks,
            parts: &parts,
        };
        let bytes = serde_json::to_vec(&blob).context("serializing the progress blob")?;
        lake.save_state(&self.name, bytes)
            .await
            .context("writing the progress blob")?;
        let replaced: Vec<Part> = std::mem::replace(&mut self.parts, parts)
            .into_iter()
            .filter(|old| !self.parts.contains(old))
            .collect();
        for part in replaced {
            // Unlisted now, so only storage is lost if it stays.
            if let Err(e) = lake.delete_state(&part.name).await {
                tracing::warn!(part = %part.name, error = %e, "could not remove a replaced metric state part");
            }
        }
        Ok(())
    }

    async fn put_part(&mut self, lake: &Lake, bytes: Vec<u8>) -> anyhow::Result<Part> {
        let stem = self.name.trim_end_matches(".json");
        let name = format!("{stem}-{}-{}.json", self.writer, self.next_part);
        self.next_part += 1;
        let part = Part {
            name,
            bytes: bytes.len() as u64,
        };
        lake.save_state(&part.name, bytes)
            .await
            .with_context(|| format!("writing metric state part {}", part.name))?;
        Ok(part)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::layout::LakeLayout;
    use crate::pipeline::metrics::{DigestCounts, Frequencies, Ratio};

    fn lake(dir: &tempfile::TempDir) -> Lake {
        Lake::new(LakeLayout::local(dir.path()), Default::default())
    }

    /// A batch's state: `distinct` new digests from `first`, each seen once, plus digest 0
    /// seen twice (a value that occurs more than once).
    fn batch(first: u64, distinct: u64) -> TableMetricState {
        let mut counts: DigestCounts = (first..first + distinct).map(|d| (d, 1)).collect();
        counts.insert(0, 2);
        let rows = distinct + 2;
        let mut state = TableMetricState {
            rows,
            ..TableMetricState::default()
        };
        state
            .uniqueness
            .insert("id".into(), Frequencies::new(counts, rows));
        state.completeness.insert(
            "id".into(),
            Ratio {
                matches: rows - 1,
                rows,
            },
        );
        state
    }

    fn marks(offset: i64) -> Marks {
        [(0, offset), (1, offset / 2)].into()
    }

    /// The objects in the lake's state directory.
    fn stored(dir: &tempfile::TempDir) -> BTreeSet<String> {
        let state_dir = LakeLayout::local(dir.path()).state_dir();
        std::fs::read_dir(state_dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn reloaded(lake: &Lake, limit: usize) -> (TableMetricState, Marks) {
        Progress::with_inline_limit("g", "t", limit)
            .load(lake)
            .await
            .unwrap_or_else(|e| panic!("load: {e:#}"))
    }

    /// Applies `batches` batches of `distinct` digests each, saving after each one.
    async fn run(
        lake: &Lake,
        progress: &mut Progress,
        batches: u64,
        distinct: u64,
    ) -> TableMetricState {
        let mut state = TableMetricState::default();
        for b in 0..batches {
            let added = batch(1 + b * distinct, distinct);
            state.merge(added.clone());
            progress
                .save(lake, &state, &added, &marks(b as i64 * 10))
                .await
                .unwrap_or_else(|e| panic!("save {b}: {e:#}"));
        }
        state
    }

    #[tokio::test]
    async fn a_small_state_is_saved_inline_in_the_blob() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let lake = lake(&dir);
        let mut progress = Progress::new("g", "t");
        let state = run(&lake, &mut progress, 3, 10).await;
        assert_eq!(stored(&dir), BTreeSet::from([progress.name.clone()]));
        assert_eq!(
            reloaded(&lake, INLINE_STATE_BYTES).await,
            (state, marks(20))
        );
    }

    #[tokio::test]
    async fn a_large_state_is_saved_as_parts_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let lake = lake(&dir);
        let mut progress = Progress::with_inline_limit("g", "t", 1024);
        let mut state = TableMetricState::default();
        let mut compactions = 0;
        for b in 0..40_u64 {
            let added = batch(1 + b * 200, 200);
            state.merge(added.clone());
            progress
                .save(&lake, &state, &added, &marks(b as i64))
                .await
                .unwrap_or_else(|e| panic!("save {b}: {e:#}"));
            if progress.parts.len() == 1 {
                compactions += 1;
            }
            // Exactly the blob and the parts it lists are stored: replaced parts are removed.
            let mut expected: BTreeSet<String> =
                progress.parts.iter().map(|p| p.name.clone()).collect();
            expected.insert(progress.name.clone());
            assert_eq!(stored(&dir), expected, "after batch {b}");
            assert_eq!(
                reloaded(&lake, 1024).await,
                (state.clone(), marks(b as i64))
            );
        }
        // The compacted part doubles at least between compactions: a handful of them in 40
        // batches, and most batches only wrote what they added.
        assert!((2..=7).contains(&compactions), "{compactions} compactions");
        let blob = std::fs::read(LakeLayout::local(dir.path()).state_dir() + "/" + &progress.name)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            blob.len() < 2048,
            "the blob lists parts: {} bytes",
            blob.len()
        );
    }

    #[tokio::test]
    async fn a_part_written_without_its_blob_does_not_count() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let lake = lake(&dir);
        let mut progress = Progress::with_inline_limit("g", "t", 0);
        let state = run(&lake, &mut progress, 5, 50).await;
        // A crash between a part and its blob: the part is there, unlisted.
        let orphan = serde_json::to_vec(&batch(10_000, 50)).unwrap_or_else(|e| panic!("{e}"));
        progress
            .put_part(&lake, orphan)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(reloaded(&lake, 0).await, (state.clone(), marks(40)));

        // A restarted processor goes on from the saved state.
        let mut restarted = Progress::with_inline_limit("g", "t", 0);
        let (mut resumed, _) = restarted
            .load(&lake)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let added = batch(20_000, 50);
        resumed.merge(added.clone());
        restarted
            .save(&lake, &resumed, &added, &marks(50))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let mut expected = state;
        expected.merge(added);
        assert_eq!(reloaded(&lake, 0).await, (expected, marks(50)));
    }

    #[tokio::test]
    async fn an_older_blob_with_the_state_inline_still_loads() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let lake = lake(&dir);
        let state = batch(1, 30);
        let old = serde_json::json!({ "state": state, "marks": marks(7) });
        let name = Progress::new("g", "t").name;
        lake.save_state(&name, old.to_string().into_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reloaded(&lake, 0).await, (state, marks(7)));
    }

    #[tokio::test]
    async fn a_listed_part_another_processor_removed_is_skipped_with_a_warning() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let lake = lake(&dir);
        let mut progress = Progress::with_inline_limit("g", "t", 0);
        run(&lake, &mut progress, 4, 50).await;
        let last = progress
            .parts
            .last()
            .cloned()
            .unwrap_or_else(|| panic!("parts"));
        assert!(progress.parts.len() > 1, "{:?}", progress.parts);
        lake.delete_state(&last.name)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (state, saved_marks) = reloaded(&lake, 0).await;
        assert_eq!(saved_marks, marks(30));
        assert_eq!(state.rows, 3 * 52, "the rows of every batch but the last");
    }
}
