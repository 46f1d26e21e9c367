//! The audited path's store, and the disk's own speed to judge it by.
//!
//! With `--audit sqlite` the gateway writes its log to a SQLite file in the run's temporary
//! directory (WAL, `synchronous=FULL`, the default); with `--audit postgres` to a database of
//! its own on `COUNTERSIGN_BENCH_PG` (default `postgres://postgres@127.0.0.1:5432/postgres`),
//! created for the run and dropped after it. The fsync probe writes and syncs 256 bytes in the
//! same directory, the same way a commit must reach the disk, so the targets can say "one fsync
//! plus 100 µs" on this machine, measured in this run.

use anyhow::Context;
use sqlx::Connection;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::measure::Latencies;

/// Where the gateway under test keeps its audit log.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub enum Store {
    /// No policy, no log: the plain proxy path.
    #[default]
    None,
    Sqlite,
    Postgres,
}

impl Store {
    pub fn parse(value: &str) -> anyhow::Result<Store> {
        match value {
            "sqlite" => Ok(Store::Sqlite),
            "postgres" => Ok(Store::Postgres),
            other => anyhow::bail!("--audit takes sqlite or postgres, not {other:?}"),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Store::None => "plain proxy (no policy, no audit)",
            Store::Sqlite => "policy + durable audit on SQLite (WAL, synchronous=FULL)",
            Store::Postgres => "policy + durable audit on PostgreSQL (synchronous_commit=on)",
        }
    }
}

/// A PostgreSQL database made for one run; dropped with it.
pub struct Database {
    admin: String,
    name: String,
    pub url: String,
}

impl Database {
    pub async fn create() -> anyhow::Result<Database> {
        let admin = std::env::var("COUNTERSIGN_BENCH_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("countersign_bench_{}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .with_context(|| format!("cannot reach PostgreSQL at {admin}"))?;
        for statement in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await?;
        }
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Ok(Database { admin, name, url })
    }

    pub async fn drop_now(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await;
        }
    }
}

/// `write` + `fsync` of 256 bytes, `n` times, in `dir`: what one durable commit costs at least.
pub fn fsync_latency(dir: &Path, n: usize) -> anyhow::Result<Latencies> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0x5a_u8; 256];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_all()?;
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    std::fs::remove_file(path)?;
    Ok(Latencies::new(samples))
}
