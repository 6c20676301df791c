//! The snapshot marker: a small JSON file per slot, `<state-dir>/<slot>.json`, that says whether
//! the initial snapshot taken when the slot was created has been delivered in full.
//!
//! Why a file and not a table: capture must not write into the source database it mirrors
//! (the table would need privileges, and it would itself be changed data), and the state only
//! matters to the capture process that owns `--state-dir`. The file is written atomically
//! (temp file + rename). Losing it is safe: a slot without a "complete" marker is dropped and
//! recreated, which re-sends the snapshot as `load` records — duplicates, never gaps.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{CaptureError, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotMarker {
    pub slot: String,
    pub database: String,
    /// The slot's consistent point (`X/Y`) when it was created; the snapshot is as of this LSN.
    pub consistent_point: String,
    /// True once every `load` record was acknowledged by the broker.
    pub complete: bool,
}

pub(crate) fn marker_path(state_dir: &Path, slot: &str) -> PathBuf {
    state_dir.join(format!("{slot}.json"))
}

/// Reads the marker. A missing or unreadable file means "no completed snapshot".
pub(crate) fn read_marker(path: &Path) -> Option<SnapshotMarker> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "cannot read the capture state file; the snapshot will be taken again");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(marker) => Some(marker),
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "the capture state file is not valid; the snapshot will be taken again");
            None
        }
    }
}

pub(crate) fn write_marker(path: &Path, marker: &SnapshotMarker) -> Result<()> {
    let state_err = |source| CaptureError::State {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(state_err)?;
    }
    let tmp = path.with_extension("json.tmp");
    let body =
        serde_json::to_vec_pretty(marker).map_err(|e| state_err(std::io::Error::other(e)))?;
    std::fs::write(&tmp, body).map_err(state_err)?;
    std::fs::rename(&tmp, path).map_err(state_err)
}

pub(crate) fn remove_marker(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CaptureError::State {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_marker_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = marker_path(&dir.path().join("nested"), "dqetl_demo");
        let marker = SnapshotMarker {
            slot: "dqetl_demo".into(),
            database: "etldb".into(),
            consistent_point: "0/16B3748".into(),
            complete: true,
        };
        write_marker(&path, &marker).unwrap();
        assert_eq!(read_marker(&path), Some(marker));
        remove_marker(&path).unwrap();
        assert_eq!(read_marker(&path), None);
    }

    #[test]
    fn a_corrupt_marker_counts_as_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = marker_path(dir.path(), "s");
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(read_marker(&path), None);
    }
}
