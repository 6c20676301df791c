//! Small state blobs (cumulative metric states as JSON) stored next to the lake under
//! `LakeLayout::state_dir()`. Each put replaces the whole object atomically (a local put writes a
//! temporary file and renames it; an S3 PUT is atomic), so a reader never sees half a state.

use std::sync::Arc;

use deltalake::DeltaTableBuilder;
use deltalake::logstore::object_store::{
    self, GetOptions, ObjectStore, ObjectStoreExt, PutOptions, PutPayload, path::Path,
};

use super::error::{Result, SinkError};
use super::lake::Lake;

impl Lake {
    /// Stores `bytes` under `name` (a plain file name), replacing what was there.
    pub async fn save_state(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        let (store, path) = self.state_object(name)?;
        store
            .put_opts(&path, PutPayload::from(bytes), PutOptions::default())
            .await
            .map_err(|source| self.state_error(name, "write", source))?;
        Ok(())
    }

    /// The bytes stored under `name`; `None` when nothing was stored yet.
    pub async fn load_state(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let (store, path) = self.state_object(name)?;
        let read = async {
            let found = store.get_opts(&path, GetOptions::default()).await?;
            found.bytes().await
        };
        match read.await {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(self.state_error(name, "read", source)),
        }
    }

    /// Removes what is stored under `name`; nothing stored is no error.
    pub async fn delete_state(&self, name: &str) -> Result<()> {
        let (store, path) = self.state_object(name)?;
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(self.state_error(name, "delete", source)),
        }
    }

    fn state_object(&self, name: &str) -> Result<(Arc<dyn ObjectStore>, Path)> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain {
            return Err(SinkError::StateName {
                name: name.to_string(),
            });
        }
        // Built once: a batch reads or writes several state objects, and building a store (an
        // S3 client with its credential provider) for each was repeated work.
        let store = match self.state_store.get() {
            Some(store) => store.clone(),
            None => {
                let built = self.build_state_store()?;
                self.state_store.get_or_init(|| built).clone()
            }
        };
        Ok((store, Path::from(name)))
    }

    fn build_state_store(&self) -> Result<Arc<dyn ObjectStore>> {
        let location = self.layout().state_dir();
        let invalid = |source| SinkError::InvalidLocation {
            table: "state".into(),
            location: location.clone(),
            source: Box::new(source),
        };
        let url = deltalake::ensure_table_uri(&location).map_err(invalid)?;
        Ok(DeltaTableBuilder::from_url(url)
            .and_then(|b| {
                b.with_storage_options(self.storage_options().clone())
                    .build_storage()
            })
            .map_err(invalid)?
            .object_store(None))
    }

    fn state_error(
        &self,
        name: &str,
        operation: &'static str,
        source: object_store::Error,
    ) -> SinkError {
        SinkError::State {
            name: name.to_string(),
            location: self.layout().state_dir(),
            operation,
            source: Box::new(source),
        }
    }
}
