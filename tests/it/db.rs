//! A fresh database for one test, for the integration tests: a SQLite
//! file in a temporary directory, or a new database on the machine's PostgreSQL (127.0.0.1:5432,
//! or the server of `COUNTERSIGN_TEST_PG_URL`), dropped when the value is dropped.

#![allow(dead_code)]

pub use countersign::store::Backend;

/// The maintenance database new test databases are created from, unless
/// `COUNTERSIGN_TEST_PG_URL` names another.
pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The maintenance URL in use: `COUNTERSIGN_TEST_PG_URL`, or [`PG_ADMIN`].
pub fn pg_admin_url() -> String {
    std::env::var("COUNTERSIGN_TEST_PG_URL").unwrap_or_else(|_| PG_ADMIN.into())
}

/// A database of its own for one test; removed when dropped. Nothing is connected or migrated:
/// `url` is what the code under test is given (see [`TestDb::connect`] for a connection).
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb::sqlite().await,
            Backend::Postgres => TestDb::postgres().await,
        }
    }

    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("countersign.db").display());
        TestDb {
            url,
            backend: Backend::Sqlite,
            _dir: Some(dir),
            pg_name: None,
        }
    }

    pub async fn postgres() -> TestDb {
        let admin_url = pg_admin_url();
        let name = format!("cs_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::any::install_default_drivers();
        let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {admin_url} (start it with pg_ctlcluster … main start, \
                     or set COUNTERSIGN_TEST_PG_URL): {e}"
                )
            });
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let _ = sqlx::Connection::close(admin).await;
        let (server, _) = admin_url
            .rsplit_once('/')
            .expect("the maintenance URL ends in /DATABASE");
        TestDb {
            url: format!("{server}/{name}"),
            backend: Backend::Postgres,
            _dir: None,
            pg_name: Some(name),
        }
    }

    /// Connects to it (and migrates it) as the gateway does.
    pub async fn connect(&self) -> countersign::store::Db {
        let db = countersign::store::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to the test database {}: {e}", self.url));
        assert_eq!(db.backend, self.backend);
        db
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Best effort, on a thread of its own: Drop cannot await, and may run inside the
        // test's runtime. FORCE ends the connections the test left open.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut admin) =
                    <sqlx::AnyConnection as sqlx::Connection>::connect(&pg_admin_url()).await
                {
                    let drop = format!("drop database if exists {name} with (force)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                        .execute(&mut admin)
                        .await;
                    let _ = sqlx::Connection::close(admin).await;
                }
            });
        })
        .join()
        .ok();
    }
}
