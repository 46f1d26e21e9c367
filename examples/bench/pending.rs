//! `--pending N`: what waiting approvals cost. N approvals pend at once, a fifth of them as
//! calls held open (each on its own connection) and the rest as tasks (2026-07-28 clients that
//! declare the tasks extension get a task handle at once); meanwhile 64 clients make calls the
//! policy allows. Then an approver denies them all through the approver API.
//!
//! Measured, against the targets of issue 14: the gateway's RSS idle, with N pending and 64
//! busy clients, and after they end; the allowed calls' rate with N pending over their rate
//! with none, in the same run; and how fast tasks are created.

use crate::Args;
use crate::client::{Era, Target};
use crate::measure::{Failures, closed_loop, next_id, wait_ready};
use crate::processes::{self, ChildGuard, Setup, memory_kib, mib};
use anyhow::{Context, bail};
use serde_json::Value;
use std::rc::Rc;
use std::time::{Duration, Instant};

const APPROVER_TOKEN: &str = "bench-approver-token";
/// Requests in flight at once while creating tasks and while denying.
const FAN_OUT: usize = 32;
/// Bound on waiting for the gateway to report every approval pending, or none.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);
const CLIENTS: usize = 64;

/// The configuration that makes `echo` with a `hold-` message wait for one approver.
fn setup<'a>(args: &Args, database_url: Option<&'a str>, n: usize) -> Setup<'a> {
    let token_sha256 = countersign::auth::hash_key(APPROVER_TOKEN);
    let limit = n * 2;
    Setup {
        store: args.store,
        database_url,
        rules: "  - id: bench-hold\n    match:\n      tool: echo\n      arguments:\n        \
                type: object\n        properties: {message: {type: string, pattern: \"^hold-\"}}\n        \
                required: [message]\n    verdict: approve\n    approvers: [bench-approver]\n    \
                quorum: 1\n    timeout: 2h\n"
            .into(),
        config: format!(
            "approvers:\n  - {{id: bench-approver, token_sha256: \"{token_sha256}\"}}\n\
             approvals:\n  max_pending_per_agent: {limit}\n  max_pending_per_tool: {limit}\n  \
             new_per_minute_per_agent: {}\n",
            limit * 60
        ),
        server: format!("  max_connections: {}\n", n + 4 * CLIENTS),
    }
}

pub fn run(args: &Args, n: usize) -> anyhow::Result<i32> {
    let (echo_bin, gateway_bin) = processes::binaries()?;
    let dir = tempfile::tempdir()?;
    let key = format!("bench-{}", uuid::Uuid::new_v4());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let database = match args.store {
        crate::audit::Store::Postgres => Some(runtime.block_on(crate::audit::Database::create())?),
        _ => None,
    };
    let (echo, echo_addr) = processes::start_echo(&echo_bin, None)?;
    let (mut gateway, gateway_addr) = processes::start_gateway(
        &gateway_bin,
        dir.path(),
        &echo_addr,
        &countersign::auth::hash_key(&key),
        None,
        &setup(args, database.as_ref().map(|d| d.url.as_str()), n),
    )?;
    let result = runtime.block_on(measure(
        args,
        n,
        &key,
        &gateway_addr,
        echo.pid(),
        &mut gateway,
    ));
    if result.is_err() {
        let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
        for line in log
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            eprintln!("{line}");
        }
    }
    drop(echo);
    drop(gateway);
    if let Some(database) = database {
        runtime.block_on(database.drop_now());
    }
    Ok(report(&result?))
}

/// What one `--pending` run measured.
struct Measured {
    n: usize,
    held: usize,
    idle_kib: u64,
    pending_busy_kib: u64,
    after_kib: u64,
    rate_none: f64,
    rate_pending: f64,
    tasks_per_sec: f64,
    failures: Failures,
}

async fn measure(
    args: &Args,
    n: usize,
    key: &str,
    addr: &str,
    echo_pid: u32,
    gateway: &mut ChildGuard,
) -> anyhow::Result<Measured> {
    let url = format!("http://{addr}/mcp");
    let allowed = Rc::new(Target::new("gateway", url.clone(), key)?);
    let holder = Rc::new(Target::with_timeout(
        "held",
        url,
        key,
        Duration::from_secs(7200),
    )?);
    let api = Api::new(addr)?;
    wait_ready(&allowed, gateway).await?;
    let pids = [echo_pid, gateway.pid()];
    let mut failures = Failures::default();
    let rss = |gateway: &ChildGuard| memory_kib(gateway.pid()).map_or(0, |(rss, _)| rss);
    let idle_kib = rss(gateway);
    println!(
        "bench --pending {n}: gateway at {addr} (pid {})",
        gateway.pid()
    );

    println!("allowed calls, {CLIENTS} clients, nothing pending");
    let none = closed_loop(&allowed, CLIENTS, args.duration, pids, &mut failures).await;

    let held = n / 5;
    println!("{held} calls held open for approval");
    let local = tokio::task::LocalSet::new();
    let held_calls: Vec<_> = (0..held)
        .map(|i| {
            let holder = holder.clone();
            local.spawn_local(async move {
                holder
                    .echo(&Era::Modern, next_id(), &format!("hold-{i}"), false)
                    .await
            })
        })
        .collect();
    let tasks = n - held;
    println!("{tasks} tasks");
    let started = Instant::now();
    local
        .run_until(create_tasks(&allowed, tasks, &mut failures))
        .await;
    let tasks_per_sec = tasks as f64 / started.elapsed().as_secs_f64();
    local.run_until(api.until_pending(n, gateway)).await?;

    println!("allowed calls, {CLIENTS} clients, {n} pending");
    let busy = local.run_until(closed_loop(
        &allowed,
        CLIENTS,
        args.duration,
        pids,
        &mut failures,
    ));
    let pending = busy.await;
    let pending_busy_kib = rss(gateway);

    println!("denying all {n}");
    local.run_until(api.deny_all()).await?;
    for call in held_calls {
        match local.run_until(call).await {
            Ok(Ok((200, answer))) if answer.to_string().contains("Denied by") => {}
            Ok(Ok((status, answer))) => failures.add("held", format!("HTTP {status}: {answer}")),
            Ok(Err(why)) => failures.add("held", why),
            Err(e) => failures.add("held", e.to_string()),
        }
    }
    local.run_until(api.until_pending(0, gateway)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    gateway.check_alive()?;
    Ok(Measured {
        n,
        held,
        idle_kib,
        pending_busy_kib,
        after_kib: rss(gateway),
        rate_none: none.calls_per_sec,
        rate_pending: pending.calls_per_sec,
        tasks_per_sec,
        failures,
    })
}

/// Creates `count` tasks, `FAN_OUT` at a time; each must be answered with a working task.
async fn create_tasks(target: &Rc<Target>, count: usize, failures: &mut Failures) {
    let mut next = 0;
    while next < count {
        let wave: Vec<_> = (next..count.min(next + FAN_OUT))
            .map(|i| {
                let target = target.clone();
                tokio::task::spawn_local(async move {
                    target
                        .echo(&Era::Modern, next_id(), &format!("hold-t{i}"), true)
                        .await
                })
            })
            .collect();
        next += wave.len();
        for created in futures::future::join_all(wave).await {
            match created {
                Ok(Ok((200, answer)))
                    if answer.pointer("/result/task/taskId").is_some()
                        || answer.pointer("/result/taskId").is_some() => {}
                Ok(Ok((status, answer))) => {
                    failures.add("task", format!("HTTP {status}: {answer}"))
                }
                Ok(Err(why)) => failures.add("task", why),
                Err(e) => failures.add("task", e.to_string()),
            }
        }
    }
}

/// The approver API, as the one approver.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(addr: &str) -> anyhow::Result<Api> {
        Ok(Api {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()?,
        })
    }

    async fn pending(&self) -> anyhow::Result<Vec<String>> {
        let list: Value = self
            .client
            .get(format!("{}/approvals?status=pending", self.base))
            .bearer_auth(APPROVER_TOKEN)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let list = list
            .as_array()
            .context("the approvals list is not an array")?;
        Ok(list
            .iter()
            .filter_map(|a| a["id"].as_str().map(str::to_owned))
            .collect())
    }

    /// Waits (bounded) until exactly `count` approvals pend.
    async fn until_pending(&self, count: usize, gateway: &mut ChildGuard) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            gateway.check_alive()?;
            let now = self.pending().await?.len();
            if now == count {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{now} approvals pending after {SETTLE_TIMEOUT:?}; expected {count}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn deny_all(&self) -> anyhow::Result<()> {
        let ids = self.pending().await?;
        for wave in ids.chunks(FAN_OUT) {
            let denials = wave.iter().map(|id| {
                self.client
                    .post(format!("{}/approvals/{id}/deny", self.base))
                    .bearer_auth(APPROVER_TOKEN)
                    .json(&serde_json::json!({"reason": "the benchmark is over"}))
                    .send()
            });
            for denied in futures::future::join_all(denials).await {
                denied?.error_for_status()?;
            }
        }
        Ok(())
    }
}

fn report(m: &Measured) -> i32 {
    let mut all_pass = true;
    let mut row = |name: String, value: String, target: &str, pass: bool| {
        all_pass &= pass;
        let result = if pass { "PASS" } else { "FAIL" };
        println!("{name:<52} {value:>12}  {target:<16} {result}");
    };
    let mib_of = |kib: u64| kib as f64 / 1024.0;
    println!();
    println!(
        "{} approvals pending: {} calls held open, {} tasks",
        m.n,
        m.held,
        m.n - m.held
    );
    println!("{:<52} {:>12}  {:<16} result", "metric", "value", "target");
    row(
        "gateway RSS, idle".into(),
        mib(m.idle_kib),
        "<= 30 MiB",
        mib_of(m.idle_kib) <= 30.0,
    );
    row(
        format!("gateway RSS, {} pending, {CLIENTS} busy clients", m.n),
        mib(m.pending_busy_kib),
        "<= 150 MiB",
        mib_of(m.pending_busy_kib) <= 150.0,
    );
    row(
        "gateway RSS after they ended".into(),
        mib(m.after_kib),
        "<= 1.2 x idle",
        m.after_kib as f64 <= 1.2 * m.idle_kib as f64,
    );
    let ratio = m.rate_pending / m.rate_none;
    row(
        format!(
            "allowed calls/s with {} pending ({:.0}) over none ({:.0})",
            m.n, m.rate_pending, m.rate_none
        ),
        format!("{ratio:.2}x"),
        ">= 0.8x",
        ratio >= 0.8,
    );
    row(
        "time to create 10,000 tasks at this rate".into(),
        format!("{:.1} s", 10_000.0 / m.tasks_per_sec),
        "< 10 s",
        m.tasks_per_sec > 1000.0,
    );
    if m.failures.reported("REQUESTS") {
        return 1;
    }
    if all_pass { 0 } else { 2 }
}
