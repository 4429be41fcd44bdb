//! The PostgreSQL backend (`database_url: postgres://…`): one deadpool pool of
//! tokio-postgres connections shared by every store, versioned migrations applied at
//! start ([`schema`]), and one implementation per storage trait:
//!
//! - [`memory`] implements [`crate::memory::MemoryStore`] (memories, sessions, vectors);
//! - [`analytics`] implements [`crate::analytics::AnalyticsStore`] (usage rows in
//!   multi-row INSERTs, feedback, key spend);
//! - [`keys`] implements [`crate::keys::KeyStore`];
//! - [`responses`] implements [`crate::responses_store::ResponseStore`].
//!
//! Every store tells a failure of the database (down, restarting, unreachable: worth
//! retrying) from a refusal of the statement ([`PgError::is_transient`]).

pub mod analytics;
pub mod keys;
pub mod memory;
pub mod responses;
mod rollup;
pub mod schema;
pub mod tls;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Longest wait for a new connection (TCP, TLS, authentication).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest wait for a pooled connection when all are busy.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// Connections at most per process.
const POOL_SIZE: usize = 16;

/// Why a PostgreSQL operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No connection could be had (down, unreachable, pool exhausted).
    #[error("PostgreSQL is unavailable: {0}")]
    Unavailable(String),
    /// A statement failed.
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
}

impl PgError {
    /// Whether retrying later may succeed: the connection broke, or the server is
    /// starting, shutting down or out of resources (SQLSTATE classes 08, 53, 57).
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Unavailable(_) => true,
            PgError::Db(e) => match e.code() {
                None => true,
                Some(code) => {
                    let c = code.code();
                    c.starts_with("08") || c.starts_with("53") || c.starts_with("57")
                }
            },
        }
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => PgError::Db(e),
            other => PgError::Unavailable(other.to_string()),
        }
    }
}

/// A parsed `postgres://` URL: the driver's config and the TLS connector its `sslmode`
/// asks for.
#[derive(Clone)]
pub struct PgUrl {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    /// The URL without its password, for logs and errors.
    redacted: String,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// PostgreSQL's text and jsonb cannot hold U+0000 (SQLSTATE 22021, 22P05), which a
/// client can send in any JSON string (`"\u0000"`): a text bound for PostgreSQL carries
/// U+FFFD in its place, so that one request's stray NUL cannot fail the batch it is
/// written in (the other requests' usage rows and memories with it).
pub(crate) fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// [`text`] for an owned string, in place.
pub(crate) fn fix_text(s: &mut String) {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{FFFD}");
    }
}

/// [`text`] for every string and key of a JSON value.
pub(crate) fn json(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(text(s).into_owned()),
        Value::Array(a) => Value::Array(a.iter().map(json).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (text(k).into_owned(), json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether a `database_url` names PostgreSQL.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl PgUrl {
    /// Parses `postgres://user:pass@host:port/db?sslmode=…&…` (libpq's URL form; the
    /// `sslmode` values of [`tls::Mode`]).
    pub fn parse(url: &str) -> Result<Self, String> {
        if !is_postgres_url(url) {
            return Err("a PostgreSQL URL starts with postgres:// or postgresql://".into());
        }
        let mut parsed =
            url::Url::parse(url).map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
        let mut mode = tls::Mode::Plain;
        let mut rest: Vec<(String, String)> = Vec::new();
        for (k, v) in parsed.query_pairs() {
            if k == "sslmode" {
                mode = tls::Mode::parse(&v)?;
            } else {
                rest.push((k.into_owned(), v.into_owned()));
            }
        }
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }
        let mut config = tokio_postgres::Config::from_str(parsed.as_str())
            .map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
        config.ssl_mode(match mode {
            tls::Mode::Plain => SslMode::Disable,
            tls::Mode::Encrypt | tls::Mode::Verify => SslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("memproxy");
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        if parsed.password().is_some() {
            let _ = parsed.set_password(Some("*****"));
        }
        Ok(Self {
            config,
            tls: tls::connector(mode)?,
            redacted: parsed.to_string(),
        })
    }

    /// The URL without its password.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The database name (for tests and messages).
    pub fn dbname(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    /// Opens one connection outside the pool, its I/O driven by a task on the current
    /// runtime (start-up work, the migrate command, tests).
    pub async fn connect(&self) -> Result<Client, PgError> {
        let (client, conn) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "PostgreSQL connection closed");
            }
        });
        Ok(client)
    }

    /// Connects, applies the migrations, and runs `then` on the connection, all on a
    /// thread of its own with its own runtime: start-up is synchronous, and runs inside
    /// the server's runtime, which must not be blocked on.
    pub fn open_blocking<T: Send + 'static>(
        &self,
        then: impl FnOnce(Client) -> crate::memory::store::BoxFuture<'static, Result<T, String>>
            + Send
            + 'static,
    ) -> Result<T, String> {
        let url = self.clone();
        let job = move || -> Result<T, String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let mut client = url.connect().await.map_err(|e| {
                    format!("cannot connect to PostgreSQL at {}: {e}", url.redacted)
                })?;
                let before = schema::migrate(&mut client).await?;
                if before < schema::VERSION {
                    tracing::info!(
                        from = before,
                        to = schema::VERSION,
                        database = %url.redacted,
                        "PostgreSQL schema migrated"
                    );
                }
                then(client).await
            })
        };
        std::thread::Builder::new()
            .name("memproxy-pg-start".into())
            .spawn(job)
            .map_err(|e| e.to_string())?
            .join()
            .map_err(|_| "the PostgreSQL start-up thread panicked".to_string())?
    }

    /// The pool every store shares. Connections are made on first use, on the runtime
    /// that uses them.
    pub fn pool(&self) -> Result<Pg, String> {
        let manager = Manager::from_config(
            self.config.clone(),
            self.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| format!("PostgreSQL pool: {e}"))?;
        Ok(Pg {
            pool,
            url: std::sync::Arc::new(self.clone()),
        })
    }
}

/// The shared pool (cheap to clone).
#[derive(Clone)]
pub struct Pg {
    pool: Pool,
    url: std::sync::Arc<PgUrl>,
}

impl Pg {
    /// A pooled connection.
    pub async fn get(&self) -> Result<Object, PgError> {
        Ok(self.pool.get().await?)
    }

    /// The URL it connects to.
    pub fn url(&self) -> &PgUrl {
        &self.url
    }

    /// A cheap round trip (readiness).
    pub async fn check(&self) -> Result<(), PgError> {
        self.get().await?.simple_query("SELECT 1").await?;
        Ok(())
    }
}
