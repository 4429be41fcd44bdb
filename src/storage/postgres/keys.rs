//! Virtual keys in `memproxy_keys`. Spend is added by the analytics store in the same
//! transaction as the usage rows that cost it ([`super::analytics`]).

use tokio_postgres::{Client, GenericClient, Row};

use super::{Pg, PgError};
use crate::analytics::StoreError;
use crate::keys::{BoxFuture, KeyRow, KeyStore};

const COLUMNS: &str = "hash, alias, user_id, models, max_budget, expires_ms, rpm_limit, \
    tpm_limit, metadata, created_ms, preview, spend, project";

/// A failure as the key API reports it.
pub(super) fn store_error(e: PgError) -> StoreError {
    if e.is_transient() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Database(e.to_string())
    }
}

fn from_row(r: &Row) -> KeyRow {
    KeyRow {
        hash: r.get(0),
        alias: r.get(1),
        user_id: r.get(2),
        models: serde_json::from_value(r.get(3)).unwrap_or_default(),
        max_budget: r.get(4),
        expires_ms: r.get(5),
        rpm_limit: r.get::<_, Option<i64>>(6).map(|v| v.max(0) as u64),
        tpm_limit: r.get::<_, Option<i64>>(7).map(|v| v.max(0) as u64),
        metadata: r.get(8),
        created_ms: r.get(9),
        preview: r.get(10),
        spend: r.get(11),
        project: r.get(12),
    }
}

/// Every key, oldest first (start-up reads them on its own connection).
pub async fn load(client: &Client) -> Result<Vec<KeyRow>, String> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM memproxy_keys ORDER BY created_ms, hash"),
            &[],
        )
        .await
        .map_err(|e| format!("reading the virtual keys: {e}"))?;
    Ok(rows.iter().map(from_row).collect())
}

/// Inserts a key; an existing hash is left as it is (the migrate command copies keys
/// again after an interruption). Returns whether it was new.
pub async fn insert(client: &impl GenericClient, k: &KeyRow) -> Result<bool, PgError> {
    let models = serde_json::json!(k.models);
    let n = client
        .execute(
            &format!(
                "INSERT INTO memproxy_keys ({COLUMNS}) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) ON CONFLICT (hash) DO NOTHING"
            ),
            &[
                &k.hash,
                &k.alias,
                &k.user_id,
                &models,
                &k.max_budget,
                &k.expires_ms,
                &k.rpm_limit.map(|v| v.min(i64::MAX as u64) as i64),
                &k.tpm_limit.map(|v| v.min(i64::MAX as u64) as i64),
                &k.metadata,
                &k.created_ms,
                &k.preview,
                &k.spend,
                &k.project,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// The PostgreSQL key store.
pub struct PgKeys {
    pg: Pg,
}

impl PgKeys {
    pub fn new(pg: Pg) -> Self {
        Self { pg }
    }
}

impl KeyStore for PgKeys {
    fn load(&self) -> BoxFuture<'_, Result<Vec<KeyRow>, StoreError>> {
        Box::pin(async move {
            let c = self.pg.get().await.map_err(store_error)?;
            load(&c).await.map_err(StoreError::Database)
        })
    }

    fn get<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<Option<KeyRow>, StoreError>> {
        Box::pin(async move {
            let c = self.pg.get().await.map_err(store_error)?;
            let row = c
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM memproxy_keys WHERE hash = $1"),
                    &[&hash],
                )
                .await
                .map_err(|e| store_error(e.into()))?;
            Ok(row.as_ref().map(from_row))
        })
    }

    fn insert<'a>(&'a self, key: &'a KeyRow) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let c = self.pg.get().await.map_err(store_error)?;
            if insert(&**c, key).await.map_err(store_error)? {
                Ok(())
            } else {
                Err(StoreError::Database("this key already exists".into()))
            }
        })
    }

    fn delete<'a>(
        &'a self,
        hashes: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let c = self.pg.get().await.map_err(store_error)?;
            let rows = c
                .query(
                    "DELETE FROM memproxy_keys WHERE hash = ANY($1) RETURNING hash",
                    &[&hashes],
                )
                .await
                .map_err(|e| store_error(e.into()))?;
            let gone: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            // In the order asked, as the embedded store answers.
            Ok(hashes
                .iter()
                .filter(|h| gone.contains(h))
                .cloned()
                .collect())
        })
    }
}
