//! A PostgreSQL database of its own for one test: `memproxy_test_<random>`, created on the
//! server named by `MEMPROXY_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and dropped when the guard goes, also
//! when the test fails. An unreachable server fails the test: these tests never skip.

use std::str::FromStr;

/// The server tests use.
pub fn admin_url() -> String {
    std::env::var("MEMPROXY_TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` with its database replaced by `db`.
fn with_db(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("MEMPROXY_TEST_DATABASE_URL is not a URL");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// Connects to the admin URL's database, or to `postgres` on the same server when that
/// database does not exist.
async fn admin() -> tokio_postgres::Client {
    let url = admin_url();
    let connect = |u: String| async move {
        let cfg = tokio_postgres::Config::from_str(&u).expect("admin URL");
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok::<_, tokio_postgres::Error>(client)
    };
    match connect(url.clone()).await {
        Ok(c) => c,
        Err(e) if e.code().map(|c| c.code()) == Some("3D000") => connect(with_db(&url, "postgres"))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} is not reachable: {e}")),
        Err(e) => panic!("PostgreSQL at {url} is not reachable: {e}"),
    }
}

/// A fresh database, dropped with the guard.
pub struct TestDb {
    pub name: String,
    /// `postgres://…/memproxy_test_<random>`.
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let name = format!(
            "memproxy_test_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        let url = with_db(&admin_url(), &name);
        Self { name, url }
    }

    /// The database migrated and its pool (what `Storage::open` does at start).
    pub fn pool(&self) -> memproxy::storage::postgres::Pg {
        let url = memproxy::storage::postgres::PgUrl::parse(&self.url).expect("test URL");
        url.open_blocking(|_| Box::pin(async { Ok(()) }))
            .expect("migrate");
        url.pool().expect("pool")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A runtime of its own: the test's may be gone or busy.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                admin()
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
