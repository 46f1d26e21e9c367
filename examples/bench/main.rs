//! The gateway overhead benchmark: the `echo` tool of `examples/echo_server.rs`, called directly
//! and through the gateway, on the same machine, in one run, with the same client code.
//!
//! ```text
//! cargo build --release --bin countersign --examples
//! target/release/examples/bench [--requests N] [--duration-secs S] [--warmup N] [--pin]
//!                               [--audit sqlite|postgres] [--pending N]
//! ```
//!
//! (`cargo run --release --example bench -- ...` works too once the gateway binary and the
//! `echo_server` example are built: the bench starts `echo_server` from its own directory,
//! `target/release/examples/`, and the gateway from `target/release/countersign`, or from
//! `$COUNTERSIGN_BIN` when set.)
//!
//! The run starts the echo server on a free loopback port and the gateway (`countersign serve`,
//! the echo server as its only HTTP upstream, unprefixed, authentication on with one agent key)
//! as separate processes, then for the echo server directly and for the gateway:
//!
//! 1. warm-up calls (not measured);
//! 2. N sequential modern-era (2026-07-28) `tools/call` POSTs: p50, p99, mean latency;
//! 3. the same over a legacy session (`initialize`, `Mcp-Session-Id`): p50, p99 (informative);
//! 4. closed-loop load with 16, then 64 concurrent clients for S seconds each: calls/s.
//!
//! The phases alternate direct / gateway (the sequential ones in 10 rounds) so that drift and
//! noise on the machine hit both alike. Every answer is
//! checked to be the right echo; any failure is reported loudly and the exit status is 1. A
//! missed target exits with 2; all targets met exits with 0. The gateway's RSS is read from
//! `/proc/PID/status` when idle and after the 64-client phase (with the peak, `VmHWM`).
//!
//! With `--pin` (needs `taskset` and 2 CPUs) the bench and the echo server share CPU 0 and the
//! gateway gets CPU 1 to itself: the throughput ratio then says whether the gateway keeps up with
//! a client + server pair, instead of how three processes share two cores.
//!
//! With `--pending N` it measures instead what N pending approvals cost (`pending.rs`).
//!
//! With `--audit sqlite|postgres` the gateway runs the audited path every real deployment runs:
//! a policy that allows `echo`, and the durable, hash-chained audit log on that store. The run
//! then also measures this disk's `write`+`fsync` latency, and the latency targets are stated in
//! it (`audit.rs`).
//!
//! The load generator is deliberately light (one single-threaded tokio runtime, one keep-alive
//! HTTP/1.1 client per target with `TCP_NODELAY`): on a small machine it competes for the same
//! cores as the servers it measures.

mod audit;
mod client;
mod measure;
mod pending;
mod processes;
mod report;

use anyhow::{Context, bail};
use audit::Store;
use client::{Era, Target};
use measure::{Failures, alternating, closed_loop, sequential, wait_ready};
use processes::{ChildGuard, memory_kib};
use std::rc::Rc;
use std::time::Duration;

const CONCURRENCY: [usize; 2] = [16, 64];

pub struct Args {
    requests: usize,
    duration: Duration,
    warmup: usize,
    /// Pin the bench and the echo server to CPU 0 and the gateway to CPU 1 (`taskset`).
    pin: bool,
    /// The plain proxy, or the audited path on one store.
    store: Store,
    /// Measure what this many pending approvals cost instead (`pending.rs`).
    pending: Option<usize>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        requests: 5000,
        duration: Duration::from_secs(5),
        warmup: 1000,
        pin: false,
        store: Store::None,
        pending: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--requests" => args.requests = value()?.parse()?,
            "--duration-secs" => args.duration = Duration::from_secs_f64(value()?.parse()?),
            "--warmup" => args.warmup = value()?.parse()?,
            "--pin" => args.pin = true,
            "--audit" => args.store = Store::parse(&value()?)?,
            "--pending" => args.pending = Some(value()?.parse()?),
            "--bench" => {} // passed by `cargo bench`-style runners; ignored
            _ => bail!(
                "usage: bench [--requests N] [--duration-secs S] [--warmup N] [--pin] \
                 [--audit sqlite|postgres] [--pending N]"
            ),
        }
    }
    if args.requests == 0 || args.requests > 1_000_000 {
        bail!("--requests must be in 1..=1000000");
    }
    if args.duration.is_zero() || args.duration > Duration::from_secs(600) {
        bail!("--duration-secs must be in (0, 600]");
    }
    if let Some(n) = args.pending {
        if !(5..=50_000).contains(&n) {
            bail!("--pending must be in 5..=50000");
        }
        if args.store == Store::None {
            // Approvals need the audit log: the default store.
            args.store = Store::Sqlite;
        }
    }
    Ok(args)
}

fn main() {
    let code = match parse_args().and_then(|args| match args.pending {
        Some(n) => pending::run(&args, n),
        None => run(&args),
    }) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench: {e:#}");
            1
        }
    };
    // The child guards were dropped (and the children killed) when `run` returned.
    std::process::exit(code);
}

fn run(args: &Args) -> anyhow::Result<i32> {
    let (echo_bin, gateway_bin) = processes::binaries()?;
    let dir = tempfile::tempdir()?;
    let key = format!("bench-{}", uuid::Uuid::new_v4());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.pin {
        if cpus < 2 {
            bail!("--pin needs at least 2 CPUs");
        }
        processes::pin_self(0)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let database = match args.store {
        Store::Postgres => Some(runtime.block_on(audit::Database::create())?),
        _ => None,
    };
    let fsync = match args.store {
        Store::None => None,
        _ => Some(audit::fsync_latency(dir.path(), 500)?),
    };
    let (echo, echo_addr) = processes::start_echo(&echo_bin, args.pin.then_some(0))?;
    let (mut gateway, gateway_addr) = processes::start_gateway(
        &gateway_bin,
        dir.path(),
        &echo_addr,
        &countersign::auth::hash_key(&key),
        args.pin.then_some(1),
        &processes::Setup {
            store: args.store,
            database_url: database.as_ref().map(|d| d.url.as_str()),
            ..Default::default()
        },
    )?;
    let log_path = dir.path().join("gateway.log");
    let servers = Servers {
        echo_addr,
        gateway_addr,
        echo_pid: echo.pid(),
        cores: cpus,
    };
    let result = runtime.block_on(measure(args, &key, &servers, &mut gateway));
    if result.is_err() {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!("--- gateway log (last lines) ---");
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
    drop(echo);
    drop(gateway);
    if let Some(database) = database {
        runtime.block_on(database.drop_now());
    }
    let measured = result?;
    Ok(report::print(args, &servers, fsync.as_ref(), &measured))
}

/// Where the two servers under test run.
pub struct Servers {
    echo_addr: String,
    gateway_addr: String,
    echo_pid: u32,
    cores: usize,
}

/// Everything one run measured, direct first and gateway second in every pair.
pub struct Measured {
    seq: [measure::Latencies; 2],
    legacy: [measure::Latencies; 2],
    loads: Vec<(usize, Vec<measure::Load>)>,
    /// The gateway's (VmRSS, VmHWM) in KiB, idle before load and after the last phase.
    memory: [Option<(u64, u64)>; 2],
    failures: Failures,
}

async fn measure(
    args: &Args,
    key: &str,
    servers: &Servers,
    gateway: &mut ChildGuard,
) -> anyhow::Result<Measured> {
    let direct = Rc::new(Target::new(
        "direct",
        format!("http://{}/mcp", servers.echo_addr),
        key,
    )?);
    let via = Rc::new(Target::new(
        "gateway",
        format!("http://{}/mcp", servers.gateway_addr),
        key,
    )?);
    wait_ready(&direct, gateway).await?;
    wait_ready(&via, gateway).await?;
    let idle = memory_kib(gateway.pid());

    println!(
        "bench: echo_server at {}, gateway at {} (pid {}, auth on), {}; \
         {} sequential calls, {} s per load phase, {} cores{}",
        servers.echo_addr,
        servers.gateway_addr,
        gateway.pid(),
        args.store.label(),
        args.requests,
        args.duration.as_secs_f64(),
        servers.cores,
        if args.pin {
            "; pinned: bench + echo_server on CPU 0, gateway on CPU 1"
        } else {
            ""
        },
    );
    let mut failures = Failures::default();
    let targets = [&direct, &via];

    println!("warm-up: {} calls each", args.warmup);
    for t in targets {
        sequential(t, &Era::Modern, args.warmup, &mut failures).await;
    }

    println!("sequential, modern era (alternating rounds)");
    let modern = [Era::Modern, Era::Modern];
    let seq = alternating(targets, &modern, args.requests, &mut failures).await;

    println!("sequential, legacy session (alternating rounds)");
    let mut sessions = Vec::new();
    for t in targets {
        let era = t
            .open_session()
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", t.name))?;
        sequential(t, &era, args.warmup.min(args.requests), &mut failures).await;
        sessions.push(era);
    }
    let sessions = [sessions[0].clone(), sessions[1].clone()];
    let legacy = alternating(targets, &sessions, args.requests, &mut failures).await;

    let mut loads = Vec::new();
    for clients in CONCURRENCY {
        println!("closed loop, {clients} clients");
        let mut pair = Vec::new();
        for t in targets {
            gateway.check_alive()?;
            let pids = [servers.echo_pid, gateway.pid()];
            pair.push(closed_loop(t, clients, args.duration, pids, &mut failures).await);
        }
        loads.push((clients, pair));
    }
    let after = memory_kib(gateway.pid());
    gateway.check_alive()?;
    Ok(Measured {
        seq,
        legacy,
        loads,
        memory: [idle, after],
        failures,
    })
}
