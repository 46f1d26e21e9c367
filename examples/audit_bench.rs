//! Audit log benchmark.
//!
//! ```text
//! cargo run --release --example audit_bench -- --events 1000000 [--db sqlite|postgres]
//!     [--appenders 64] [--appends 20000] [--url URL]
//! ```
//!
//! 1. appends/s through the real `AuditLog::append` API (each call resolves only after its
//!    group commit), with many concurrent appenders, plus per-append latency;
//! 2. fills the log to `--events` with `append_all` batches (the same writer and chain, 1024
//!    events per transaction);
//! 3. `verify` over the whole log (events/s; target ≥ 500k/s);
//! 4. filtered `list` / `show` latency on the full log (target < 50 ms).
//!
//! SQLite uses a file in a temporary directory; PostgreSQL a fresh database `cs_bench_<uuid>`
//! on 127.0.0.1:5432 (or `--url` for the maintenance database), dropped at the end.

use countersign::audit::{self, AuditLog, EventKind, Filter, NewEvent};
use countersign::store;
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

struct Args {
    events: usize,
    db: String,
    appenders: usize,
    appends: usize,
    url: Option<String>,
    file: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        events: 1_000_000,
        db: "sqlite".into(),
        appenders: 64,
        appends: 20_000,
        url: None,
        file: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => args.events = value().parse().expect("--events N"),
            "--db" => args.db = value(),
            "--appenders" => args.appenders = value().parse().expect("--appenders N"),
            "--appends" => args.appends = value().parse().expect("--appends N"),
            "--url" => args.url = Some(value()),
            "--file" => args.file = Some(value()),
            other => panic!("unknown flag {other}; see the doc comment of examples/audit_bench.rs"),
        }
    }
    args
}

/// A realistic event: one of 50 agents, 10 servers, 100 tools; votes name one of 20
/// approvers, decisions an outcome.
fn sample(i: usize) -> NewEvent {
    let call = Uuid::from_u64_pair(0x0190_0000_0000_7000, i as u64 / 6);
    let agent = format!("agent-{:02}", (i / 6) % 50);
    let server = format!("server-{}", (i / 6) % 10);
    let tool = format!("tool-{:03}", (i / 6) % 100);
    let (kind, extra) = match i % 6 {
        0 => (
            EventKind::CallReceived,
            json!({"args_sha256": format!("{:064x}", i), "session": "s-1"}),
        ),
        1 => (
            EventKind::PolicyDecided,
            json!({"decision": "approve", "rule": "prod-writes", "policy_version": "v42"}),
        ),
        2 => (
            EventKind::ApprovalVote,
            json!({"approver": format!("approver-{:02}", (i / 6) % 20), "vote": "approve", "evidence": {"mattermost_trigger_id": format!("t{i}")}}),
        ),
        3 => (
            EventKind::ApprovalDecided,
            json!({"outcome": if i.is_multiple_of(7) { "denied" } else { "approved" }}),
        ),
        4 => (
            EventKind::CallForwarded,
            json!({"executor": "svc-deploy", "upstream": "http://127.0.0.1:9000/mcp"}),
        ),
        _ => (
            EventKind::CallCompleted,
            json!({"outcome": "ok", "result_sha256": format!("{:064x}", i * 31), "duration_ms": i % 1000}),
        ),
    };
    let mut payload = json!({"agent": agent, "server": server, "tool": tool});
    for (k, v) in extra.as_object().unwrap() {
        payload[k] = v.clone();
    }
    NewEvent::untyped(Some(call), kind, "gateway", payload)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    sqlx::any::install_default_drivers();
    let _dir;
    let mut pg_cleanup = None;
    let url = match args.db.as_str() {
        "sqlite" => {
            let dir = tempfile::tempdir()?;
            let url = match &args.file {
                // A kept file: phases 1 and 2 are skipped if it already holds the events.
                Some(file) => format!("sqlite://{file}"),
                None => format!("sqlite://{}", dir.path().join("bench.db").display()),
            };
            _dir = dir;
            url
        }
        "postgres" => {
            let maintenance = args
                .url
                .clone()
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let name = format!("cs_bench_{}", Uuid::new_v4().simple());
            let admin = sqlx::AnyPool::connect(&maintenance).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await?;
            let (base, _) = maintenance.rsplit_once('/').expect("a database URL");
            pg_cleanup = Some((admin, name.clone()));
            format!("{base}/{name}")
        }
        other => anyhow::bail!("--db {other}: use sqlite or postgres"),
    };
    let db = store::connect(&url).await?;
    let log = AuditLog::open(db.clone()).await?;
    let mut rows: Vec<(String, String)> = Vec::new();

    let existing = audit::checkpoint(&db).await?.seq as usize;
    // 1. Real appends, many concurrent appenders, group commit.
    let appends = if existing >= args.events {
        0
    } else {
        args.appends.min(args.events)
    };
    let started = Instant::now();
    let per_task = appends / args.appenders.max(1);
    let tasks: Vec<_> = (0..args.appenders)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task);
                for j in 0..per_task {
                    let begun = Instant::now();
                    log.append(sample(t * per_task + j)).await.expect("append");
                    latencies.push(begun.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let done = latencies.len();
    if done > 0 {
        rows.push((
            format!("append ({} appenders, {done} events)", args.appenders),
            format!(
                "{:.0} events/s  (latency p50 {}, p99 {})",
                done as f64 / elapsed.as_secs_f64(),
                ms(percentile(&latencies, 0.5)),
                ms(percentile(&latencies, 0.99))
            ),
        ));
    }
    // Sequential appends: one appender, one commit per event (the durability floor).
    let started = Instant::now();
    let single = if appends == 0 { 0 } else { 300 };
    for i in 0..single {
        log.append(sample(done + i)).await?;
    }
    let elapsed = started.elapsed();
    if single > 0 {
        rows.push((
            "append (1 appender, sequential)".into(),
            format!(
                "{:.0} events/s  ({} per commit)",
                single as f64 / elapsed.as_secs_f64(),
                ms(elapsed / single as u32)
            ),
        ));
    }

    // 2. Fill.
    let have = existing + done + single;
    let started = Instant::now();
    let fill_tasks = 4;
    let remaining = args.events.saturating_sub(have);
    let chunks = remaining.div_ceil(audit::MAX_BATCH);
    let tasks: Vec<_> = (0..fill_tasks)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut filled = 0;
                for c in (t..chunks).step_by(fill_tasks) {
                    let start = have + c * audit::MAX_BATCH;
                    let end = (start + audit::MAX_BATCH).min(have + remaining);
                    log.append_all((start..end).map(sample).collect())
                        .await
                        .expect("fill");
                    filled += end - start;
                }
                filled
            })
        })
        .collect();
    let mut filled = 0;
    for task in tasks {
        filled += task.await?;
    }
    let elapsed = started.elapsed();
    if filled > 0 {
        rows.push((
            format!("fill (append_all, 1024/batch, {filled} events)"),
            format!(
                "{:.0} events/s  ({:.1} s)",
                filled as f64 / elapsed.as_secs_f64(),
                elapsed.as_secs_f64()
            ),
        ));
    }
    let total = audit::checkpoint(&db).await?.seq;

    // 3. Verify.
    let options = audit::VerifyOptions {
        trusted: audit::AuditKeys::ephemeral().trusted.clone(),
        ..Default::default()
    };
    let report = audit::verify(&db, &options).await?;
    assert!(report.ok, "{report}");
    rows.push((
        format!("verify ({} events)", report.events),
        format!(
            "{:.0} events/s  ({:.2} s)",
            report.events as f64 / (report.elapsed_ms.max(1) as f64 / 1000.0),
            report.elapsed_ms as f64 / 1000.0
        ),
    ));

    // 4. Filtered lists on the full log.
    let mid = {
        let probe = log
            .list(&Filter {
                after_seq: Some(total / 2),
                limit: Some(1),
                ..Filter::default()
            })
            .await?;
        probe[0].at.clone()
    };
    let queries: Vec<(&str, Filter)> = vec![
        (
            "agent=agent-07, limit 100",
            Filter {
                agent: Some("agent-07".into()),
                ..Filter::default()
            },
        ),
        (
            "agent=agent-07, since mid-log",
            Filter {
                agent: Some("agent-07".into()),
                since: Some(mid.clone()),
                ..Filter::default()
            },
        ),
        (
            "tool=tool-042 & kind=call.completed",
            Filter {
                tool: Some("tool-042".into()),
                kind: Some(EventKind::CallCompleted),
                ..Filter::default()
            },
        ),
        (
            "approver=approver-13",
            Filter {
                approver: Some("approver-13".into()),
                ..Filter::default()
            },
        ),
        (
            "outcome=denied, limit 1000",
            Filter {
                outcome: Some("denied".into()),
                limit: Some(1000),
                ..Filter::default()
            },
        ),
        (
            "server=server-3, page at seq 900000",
            Filter {
                server: Some("server-3".into()),
                after_seq: Some(total * 9 / 10),
                ..Filter::default()
            },
        ),
        (
            "agent=agent-07 & server=server-7 & tool=tool-007",
            Filter {
                agent: Some("agent-07".into()),
                server: Some("server-7".into()),
                tool: Some("tool-007".into()),
                ..Filter::default()
            },
        ),
        (
            "agent=nobody (no match)",
            Filter {
                agent: Some("nobody".into()),
                ..Filter::default()
            },
        ),
    ];
    for (name, filter) in queries {
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..15 {
            let begun = Instant::now();
            found = log.list(&filter).await?.len();
            times.push(begun.elapsed());
        }
        times.sort_unstable();
        rows.push((
            format!("list {name}"),
            format!(
                "{} median, {} max  ({found} events)",
                ms(percentile(&times, 0.5)),
                ms(*times.last().unwrap())
            ),
        ));
    }
    let call = Uuid::from_u64_pair(0x0190_0000_0000_7000, (total as u64 / 2) / 6);
    let mut times = Vec::new();
    let mut found = 0;
    for _ in 0..15 {
        let begun = Instant::now();
        found = log.show(call).await?.len();
        times.push(begun.elapsed());
    }
    times.sort_unstable();
    rows.push((
        "show CALL_ID".into(),
        format!("{} median  ({found} events)", ms(percentile(&times, 0.5))),
    ));

    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!(
        "\naudit_bench: {} with {total} events ({} cores)\n",
        db.backend.name(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{:<width$}  result", "measure");
    println!("{:-<width$}  {:-<40}", "", "");
    for (k, v) in &rows {
        println!("{k:<width$}  {v}");
    }

    drop(log);
    db.pool.close().await;
    if let Some((admin, name)) = pg_cleanup {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await?;
    }
    Ok(())
}
