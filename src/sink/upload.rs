//! A data file stored while it is written: the bytes a Parquet writer produces are held up to
//! one part's size and then uploaded part by part (a multipart upload), so writing a file holds
//! about a part of it in memory rather than all of it. A file smaller than a part is stored with
//! one plain put.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use deltalake::logstore::object_store::{
    ObjectStore, ObjectStoreExt as _, PutPayload, WriteMultipart, path::Path,
};

/// Size of an uploaded part (S3 takes parts of 5 MiB and more, 10,000 at most).
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one file uploading at once.
const PARTS_IN_FLIGHT: usize = 2;

/// The `Write` end handed to the Parquet writer: what it writes collects here until
/// [`StoredFile::store_written`] moves it on.
#[derive(Clone, Default)]
pub(super) struct Written(Arc<Mutex<Vec<u8>>>);

impl Written {
    fn take(&self) -> Vec<u8> {
        // The buffer is only ever appended to or taken whole: a panic elsewhere cannot leave
        // it half-updated.
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Write for Written {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Output {
    /// Less than a part written so far.
    Held(Vec<Bytes>),
    Uploading(WriteMultipart),
}

/// A file being written to `path` in `store`.
pub(super) struct StoredFile {
    store: Arc<dyn ObjectStore>,
    path: Path,
    written: Written,
    output: Output,
    size: usize,
}

impl StoredFile {
    pub fn new(store: Arc<dyn ObjectStore>, path: Path) -> StoredFile {
        StoredFile {
            store,
            path,
            written: Written::default(),
            output: Output::Held(Vec::new()),
            size: 0,
        }
    }

    /// Where the writer writes.
    pub fn writer(&self) -> Written {
        self.written.clone()
    }

    /// Moves what was written since the last call on to the store: held while the file is
    /// smaller than a part, uploaded part by part from then on (waiting while the parts in
    /// flight are at their limit).
    pub async fn store_written(&mut self) -> deltalake::logstore::object_store::Result<()> {
        let bytes = self.written.take();
        if bytes.is_empty() {
            return Ok(());
        }
        self.size += bytes.len();
        match &mut self.output {
            Output::Held(parts) => {
                parts.push(Bytes::from(bytes));
                if self.size >= PART_BYTES {
                    let upload = self.store.put_multipart(&self.path).await?;
                    let mut uploading = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
                    for part in parts.drain(..) {
                        uploading.put(part);
                    }
                    self.output = Output::Uploading(uploading);
                }
            }
            Output::Uploading(uploading) => {
                uploading.put(Bytes::from(bytes));
                uploading.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            }
        }
        Ok(())
    }

    /// Stores the rest and completes the file; returns its size in bytes.
    pub async fn finish(mut self) -> deltalake::logstore::object_store::Result<usize> {
        self.store_written().await?;
        match self.output {
            Output::Held(parts) => {
                self.store
                    .put(&self.path, parts.into_iter().collect::<PutPayload>())
                    .await?;
            }
            Output::Uploading(uploading) => {
                uploading.finish().await?;
            }
        }
        Ok(self.size)
    }

    /// Gives up the file: the parts uploaded so far are removed.
    pub async fn abandon(self) {
        if let Output::Uploading(uploading) = self.output
            && let Err(e) = uploading.abort().await
        {
            tracing::warn!(
                path = %self.path,
                error = %crate::error_chain::error_chain(&e),
                "the parts uploaded of an unfinished data file could not be removed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::logstore::object_store::local::LocalFileSystem;
    use deltalake::logstore::object_store::memory::InMemory;

    async fn stored(store: &Arc<dyn ObjectStore>, path: &Path) -> Vec<u8> {
        store
            .get(path)
            .await
            .expect("the file is stored")
            .bytes()
            .await
            .expect("its bytes")
            .to_vec()
    }

    #[tokio::test]
    async fn a_file_smaller_than_a_part_is_stored_whole_at_the_end() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("small.parquet");
        let mut file = StoredFile::new(store.clone(), path.clone());
        let mut writer = file.writer();
        writer.write_all(b"PAR1").unwrap();
        file.store_written().await.unwrap();
        assert!(
            store.head(&path).await.is_err(),
            "nothing stored before finish"
        );
        writer.write_all(b" footer").unwrap();
        assert_eq!(file.finish().await.unwrap(), 11);
        assert_eq!(stored(&store, &path).await, b"PAR1 footer");
    }

    /// Writes chunks of uneven sizes past several parts and reads the file back.
    async fn assert_large_file_round_trips(store: Arc<dyn ObjectStore>) {
        let path = Path::from("large.parquet");
        let mut file = StoredFile::new(store.clone(), path.clone());
        let mut writer = file.writer();
        let mut expected = Vec::new();
        for i in 0..40u32 {
            let chunk: Vec<u8> = (0..(700_000 + i * 13_001))
                .map(|j| (i * 31 + j) as u8)
                .collect();
            writer.write_all(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
            file.store_written().await.unwrap();
            assert!(
                file.written.take().is_empty(),
                "nothing is left in the writer's buffer once stored"
            );
        }
        assert!(matches!(file.output, Output::Uploading(_)));
        assert_eq!(file.finish().await.unwrap(), expected.len());
        assert_eq!(stored(&store, &path).await, expected);
    }

    #[tokio::test]
    async fn a_large_file_is_uploaded_in_parts_and_keeps_every_byte_in_order() {
        assert_large_file_round_trips(Arc::new(InMemory::new())).await;
    }

    #[tokio::test]
    async fn a_large_file_is_written_in_parts_to_a_local_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        assert_large_file_round_trips(Arc::new(store)).await;
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["large.parquet"], "no staging file is left behind");
    }

    #[tokio::test]
    async fn an_abandoned_upload_leaves_no_file() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("abandoned.parquet");
        let mut file = StoredFile::new(store.clone(), path.clone());
        let mut writer = file.writer();
        writer.write_all(&vec![7u8; PART_BYTES + 1]).unwrap();
        file.store_written().await.unwrap();
        file.abandon().await;
        assert!(store.head(&path).await.is_err());
    }
}
