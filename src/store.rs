//! The database: one `sqlx::AnyPool` over SQLite (the embedded default) or PostgreSQL (several
//! replicas), with the backend's embedded migrations applied at connect.
//!
//! SQL is written at run time (`sqlx::query`) with `$1` placeholders, which both backends
//! accept; where the dialects differ the caller matches on [`Backend`].

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};
use std::time::Duration;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a SQLite connection waits for another writer's lock before failing.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;

/// How long a query waits for a pooled SQLite connection before it fails (a local file: a
/// wait means contention, never an outage).
const SQLITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a query waits for a pooled PostgreSQL connection (or for connecting one) before it
/// fails. Short, so that callers are answered within seconds when the server is down or
/// unreachable: a call whose events cannot be recorded is refused (never run unaudited), and
/// the pool reconnects by itself once the server is back.
const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The `Retry-After` (seconds) of an HTTP answer refused because the database is unavailable.
pub const RETRY_AFTER_SECS: &str = "5";

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }

    /// The backend a `database.url` names.
    pub fn of_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl { url: redact(url) })
        }
    }
}

/// A connected, migrated database.
#[derive(Debug, Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    /// SQLite lets one transaction write at a time, and a writer that finds the file locked
    /// sleeps in steps of up to 100 ms (its busy handler): this process's writers queue here
    /// instead, in order and without sleeping.
    writes: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Db {
    /// The turn to write, held for one write transaction on SQLite (`None` on PostgreSQL,
    /// which locks rows). Never hold it across an audit append: the audit writer takes it too.
    pub async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match self.backend {
            Backend::Sqlite => Some(self.writes.clone().lock_owned().await),
            Backend::Postgres => None,
        }
    }
}

/// Most values an `IN (…)` list takes in one statement; longer lists go in several.
pub const IN_LIST_CHUNK: usize = 500;

/// `$first,$first+1,…` for `n` values: an `IN (…)` list's placeholders.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Everything that can go wrong in the storage layer; each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "database.url `{url}` is not supported: use `sqlite://PATH` (e.g. `sqlite://countersign.db`) \
         or `postgres://USER@HOST:PORT/DATABASE`"
    )]
    UnsupportedUrl { url: String },
    #[error(
        "cannot open the SQLite database `{url}`: {source} (check that its directory exists and \
         that this user may write the file and the directory)"
    )]
    OpenSqlite { url: String, source: sqlx::Error },
    #[error(
        "cannot connect to PostgreSQL at `{url}`: {source} (check that the server is running, the \
         database exists and the user may log in)"
    )]
    ConnectPostgres { url: String, source: sqlx::Error },
    #[error(
        "applying the {backend} migrations failed: {source} (a migration that was already applied \
         must never be edited; see migrations/README.md)"
    )]
    Migrate {
        backend: &'static str,
        source: sqlx::migrate::MigrateError,
    },
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

/// Connects to `url` (`sqlite://PATH`, created if missing, or `postgres://…`) and applies the
/// backend's migrations.
///
/// SQLite runs in WAL mode with `synchronous=FULL`: a committed transaction survives a crash
/// or power loss. PostgreSQL keeps its own durability settings (`synchronous_commit=on` by
/// default, which is what the audit log needs).
pub async fn connect(url: &str) -> Result<Db, StoreError> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of_url(url)?;
    let db = match backend {
        Backend::Sqlite => connect_sqlite(url).await?,
        Backend::Postgres => connect_postgres(url).await?,
    };
    migrate(&db).await?;
    Ok(db)
}

async fn connect_sqlite(url: &str) -> Result<Db, StoreError> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let url_rwc = if in_memory || url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    };
    let mut options = AnyPoolOptions::new()
        .max_connections(if in_memory { 1 } else { 8 })
        .acquire_timeout(SQLITE_ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| Box::pin(ready_for_use(conn, meta)))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                // journal_mode=WAL persists in the file; the others are per connection.
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                // 32 MiB page cache (the default is 2 MiB): a million events and their
                // indexes are several hundred MiB.
                conn.execute("PRAGMA cache_size = -32768").await?;
                // Reads through a memory map (writes still go through the WAL): verify reads
                // the whole log.
                conn.execute("PRAGMA mmap_size = 1073741824").await?;
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"
                )))
                .await?;
                Ok(())
            })
        });
    if in_memory {
        // An in-memory database lives only as long as a connection to it.
        options = options
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    }
    let pool = options
        .connect(&url_rwc)
        .await
        .map_err(|source| StoreError::OpenSqlite {
            url: redact(url),
            source,
        })?;
    Ok(Db {
        pool,
        backend: Backend::Sqlite,
        writes: Default::default(),
    })
}

async fn connect_postgres(url: &str) -> Result<Db, StoreError> {
    let pool = AnyPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| Box::pin(ready_for_use(conn, meta)))
        .connect(url)
        .await
        .map_err(|source| StoreError::ConnectPostgres {
            url: redact(url),
            source,
        })?;
    Ok(Db {
        pool,
        backend: Backend::Postgres,
        writes: Default::default(),
    })
}

/// Whether a pooled connection may be handed out: not when sqlx still counts it inside a
/// transaction. SQLite rolls a transaction back by itself on some errors ("database or disk is
/// full", I/O errors); the `ROLLBACK` sqlx then sends fails ("no transaction is active") and
/// its transaction depth stays at 1, so every later `begin_with` on that connection failed with
/// "attempted to call begin_with at non-zero transaction depth" until a restart. Such a
/// connection is closed instead, and the pool opens a fresh one.
async fn ready_for_use(
    conn: &mut sqlx::AnyConnection,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    if !outside_transaction(conn) {
        return Ok(false);
    }
    // A connection in steady use is known to be alive: pinging it before every query (sqlx's
    // default) costs a round trip each, which on PostgreSQL is a network one. One idle for a
    // while may have been dropped by the server or the network: that one is pinged.
    if meta.idle_for > PING_IF_IDLE_FOR {
        conn.ping().await?;
    }
    Ok(true)
}

/// How long a pooled connection may sit idle before it is checked with a ping on acquire.
const PING_IF_IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(10);

fn outside_transaction(conn: &sqlx::AnyConnection) -> bool {
    use sqlx::Connection;
    let clean = !conn.is_in_transaction();
    if !clean {
        tracing::warn!("discarding a database connection left inside a failed transaction");
    }
    clean
}

async fn migrate(db: &Db) -> Result<(), StoreError> {
    let migrator = match db.backend {
        Backend::Sqlite => &SQLITE_MIGRATIONS,
        Backend::Postgres => &POSTGRES_MIGRATIONS,
    };
    if all_applied(db, migrator).await {
        // Nothing to do; skipping the migrator lets a role with only INSERT and SELECT (see
        // migrations/README.md) start the gateway once the owner has migrated.
        return Ok(());
    }
    migrator
        .run(&db.pool)
        .await
        .map_err(|source| StoreError::Migrate {
            backend: db.backend.name(),
            source,
        })
}

/// Whether every embedded migration is recorded as applied with the same checksum.
async fn all_applied(db: &Db, migrator: &Migrator) -> bool {
    let applied: Vec<(i64, Vec<u8>)> = match sqlx::query_as(
        "SELECT version, checksum FROM _sqlx_migrations WHERE success = TRUE ORDER BY version",
    )
    .fetch_all(&db.pool)
    .await
    {
        Ok(rows) => rows,
        Err(_) => return false,
    };
    migrator.iter().all(|m| {
        applied
            .iter()
            .any(|(version, checksum)| *version == m.version && checksum[..] == m.checksum[..])
    })
}

/// A database URL with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://gw:s3cret@db:5432/cs?sslmode=require"),
            "postgres://gw:***@db:5432/cs?sslmode=require"
        );
        assert_eq!(redact("postgres://gw@db/cs"), "postgres://gw@db/cs");
        assert_eq!(redact("sqlite://countersign.db"), "sqlite://countersign.db");
    }

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(Backend::of_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of_url("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::of_url("postgresql://h/db").unwrap(),
            Backend::Postgres
        );
        let err = Backend::of_url("mysql://h/db").unwrap_err().to_string();
        assert!(err.contains("sqlite://PATH"), "{err}");
    }
}
