//! The embedded key store: the virtual keys kept in the analytics file
//! (`<data_dir>/analytics.db`, [`super::analytics`]), reached through a connection of
//! their own.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::analytics::SqliteStore;
use crate::analytics::StoreError;
use crate::keys::{BoxFuture, KeyRow, KeyStore};

/// Virtual keys in `<data_dir>/analytics.db`. Key changes are rare admin calls: each runs
/// under `spawn_blocking` on one connection, opened on first use (and again after a
/// failure to open), so a data dir that is unwritable at start does not stop the server.
pub struct SqliteKeys {
    dir: PathBuf,
    conn: Arc<Mutex<Option<SqliteStore>>>,
}

impl SqliteKeys {
    /// Keys in `dir/analytics.db`; nothing is opened yet.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            conn: Arc::default(),
        }
    }

    /// Runs `f` on the connection (opening it if needed), blocking.
    pub fn with_blocking<T>(
        &self,
        f: impl FnOnce(&mut SqliteStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        run(&self.dir, &self.conn, f)
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SqliteStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (dir, conn) = (self.dir.clone(), self.conn.clone());
        tokio::task::spawn_blocking(move || run(&dir, &conn, f))
            .await
            .map_err(|e| StoreError::Unavailable(format!("key store task failed: {e}")))?
    }
}

fn run<T>(
    dir: &std::path::Path,
    conn: &Mutex<Option<SqliteStore>>,
    f: impl FnOnce(&mut SqliteStore) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut guard = conn
        .lock()
        .map_err(|_| StoreError::Unavailable("key store lock poisoned".into()))?;
    if guard.is_none() {
        *guard = Some(SqliteStore::open(dir)?);
    }
    match guard.as_mut() {
        Some(s) => f(s),
        None => Err(StoreError::Unavailable("key store not open".into())),
    }
}

impl KeyStore for SqliteKeys {
    fn load(&self) -> BoxFuture<'_, Result<Vec<KeyRow>, StoreError>> {
        Box::pin(self.with(|s| s.load_keys()))
    }

    fn get<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<Option<KeyRow>, StoreError>> {
        let hash = hash.to_string();
        Box::pin(self.with(move |s| Ok(s.load_keys()?.into_iter().find(|k| k.hash == hash))))
    }

    fn insert<'a>(&'a self, key: &'a KeyRow) -> BoxFuture<'a, Result<(), StoreError>> {
        let key = key.clone();
        Box::pin(self.with(move |s| s.insert_key(&key)))
    }

    fn delete<'a>(
        &'a self,
        hashes: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        let hashes = hashes.to_vec();
        Box::pin(self.with(move |s| s.delete_keys(&hashes)))
    }
}
