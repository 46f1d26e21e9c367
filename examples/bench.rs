//! The gateway overhead benchmark: the `echo` tool of `examples/echo_server.rs`, called directly
//! and through the gateway, on the same machine, in one run, with the same client code.
//!
//! ```text
//! cargo build --release --bin countersign --examples
//! target/release/examples/bench [--requests N] [--duration-secs S] [--warmup N]
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
//! The load generator is deliberately light (one single-threaded tokio runtime, one keep-alive
//! HTTP/1.1 client per target with `TCP_NODELAY`): on a small machine it competes for the same
//! cores as the servers it measures.

use anyhow::{Context, bail};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MODERN_VERSION: &str = "2026-07-28";
const LEGACY_VERSION: &str = "2025-11-25";
/// Targets of the project: added latency, and throughput relative to direct.
const TARGET_ADDED_P50_US: f64 = 120.0;
const TARGET_ADDED_P99_US: f64 = 300.0;
const TARGET_THROUGHPUT_RATIO: f64 = 0.6;
/// Hard bound on any one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Hard bound on starting the two servers.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Unmeasured lead-in of each load phase (connections opened, caches warm).
const LOAD_WARMUP: Duration = Duration::from_millis(500);
const CONCURRENCY: [usize; 2] = [16, 64];
/// The sequential phases alternate direct / gateway this many times.
const SEQUENTIAL_ROUNDS: usize = 10;

struct Args {
    requests: usize,
    duration: Duration,
    warmup: usize,
    /// Pin the bench and the echo server to CPU 0 and the gateway to CPU 1 (`taskset`).
    pin: bool,
    /// Run the gateway with a policy that allows the echo tool and the durable audit log on
    /// (SQLite, WAL, synchronous=FULL): every call appends its events before and after it runs.
    audit: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        requests: 5000,
        duration: Duration::from_secs(5),
        warmup: 1000,
        pin: false,
        audit: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--requests" => args.requests = value()?.parse()?,
            "--duration-secs" => args.duration = Duration::from_secs_f64(value()?.parse()?),
            "--warmup" => args.warmup = value()?.parse()?,
            "--pin" => args.pin = true,
            "--audit" => args.audit = true,
            "--bench" => {} // passed by `cargo bench`-style runners; ignored
            _ => bail!(
                "usage: bench [--requests N] [--duration-secs S] [--warmup N] [--pin] [--audit]"
            ),
        }
    }
    if args.requests == 0 || args.requests > 1_000_000 {
        bail!("--requests must be in 1..=1000000");
    }
    if args.duration.is_zero() || args.duration > Duration::from_secs(600) {
        bail!("--duration-secs must be in (0, 600]");
    }
    Ok(args)
}

fn main() {
    let code = match parse_args().and_then(|args| run(&args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench: {e:#}");
            1
        }
    };
    // The child guards were dropped (and the children killed) when `run` returned.
    std::process::exit(code);
}

// === child processes ===

/// Kills its child when dropped: at the end of the run, on error and on panic.
struct ChildGuard {
    name: &'static str,
    child: Child,
}

impl ChildGuard {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the child has already exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("{} exited early: {status}", self.name),
            None => Ok(()),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe().context("cannot find the bench binary")?;
    let dir = exe.parent().context("the bench binary has no directory")?;
    let echo = dir.join("echo_server");
    let gateway = match std::env::var_os("COUNTERSIGN_BIN") {
        Some(path) => PathBuf::from(path),
        None => dir
            .parent()
            .context("the bench binary is not in target/<profile>/examples")?
            .join("countersign"),
    };
    for path in [&echo, &gateway] {
        if !path.is_file() {
            bail!(
                "{} not found; build first: cargo build --release --bin countersign --examples",
                path.display()
            );
        }
    }
    Ok((echo, gateway))
}

/// Starts the echo server on a free port; returns it and the address it printed.
fn start_echo(binary: &Path, cpu: Option<usize>) -> anyhow::Result<(ChildGuard, String)> {
    let child = pinned(binary, cpu)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut guard = ChildGuard {
        name: "echo_server",
        child,
    };
    let stdout = guard.child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(START_TIMEOUT)
        .context("echo_server did not say where it listens")?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("echo_server said {line:?}"))?
        .to_owned();
    Ok((guard, addr))
}

/// A command for `binary`, run through `taskset -c CPU` when pinned (`taskset` execs, so the
/// child's pid is the binary's).
fn pinned(binary: &Path, cpu: Option<usize>) -> Command {
    match cpu {
        None => Command::new(binary),
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg(binary);
            command
        }
    }
}

/// Pins this process (all its threads) to one CPU.
fn pin_self(cpu: usize) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .context("--pin needs taskset")?;
    if !status.success() {
        bail!("taskset failed: {status}");
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts the gateway with the echo server as its only upstream; logs go to `dir/gateway.log`.
fn start_gateway(
    binary: &Path,
    dir: &Path,
    echo_addr: &str,
    key_sha256: &str,
    cpu: Option<usize>,
    audit: bool,
) -> anyhow::Result<(ChildGuard, String)> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut config = format!(
        "server:\n  listen: \"{addr}\"\n  allow_anonymous: false\n\
         upstreams:\n  - name: echo\n    prefix: \"\"\n    http:\n      url: \"http://{echo_addr}/mcp\"\n\
         agents:\n  - id: bench\n    key_sha256: \"{key_sha256}\"\n"
    );
    if audit {
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies)?;
        let policy = "defaults: {verdict: deny, reason: not benchmarked}\n\
                      rules:\n  - id: bench-echo\n    match: {tool: echo}\n    verdict: allow\n";
        std::fs::write(policies.join("bench.yaml"), policy)?;
        config.push_str(&format!(
            "policy_dir: \"{}\"\ndatabase:\n  url: \"sqlite://{}\"\n",
            policies.display(),
            dir.join("audit.db").display()
        ));
    }
    let config_path = dir.join("countersign.yaml");
    std::fs::write(&config_path, config)?;
    let log = std::fs::File::create(dir.join("gateway.log"))?;
    let mut command = pinned(binary, cpu);
    command
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // The configuration file alone decides: no overrides from the caller's environment.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COUNTERSIGN_") {
            command.env_remove(name);
        }
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    Ok((
        ChildGuard {
            name: "countersign",
            child,
        },
        addr,
    ))
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

// === the client ===

/// One endpoint under test, with its own keep-alive connection pool.
struct Target {
    name: &'static str,
    url: String,
    client: reqwest::Client,
    headers: HeaderMap,
}

/// The era a call is made in.
#[derive(Clone)]
enum Era {
    Modern,
    Legacy { session: Option<String> },
}

impl Target {
    fn new(name: &'static str, url: String, key: &str) -> anyhow::Result<Self> {
        let client = countersign::tls::Tls::new(&Default::default())
            .unwrap()
            .http()
            .tcp_nodelay(true)
            .http1_only()
            .no_proxy()
            .pool_max_idle_per_host(256)
            .timeout(CALL_TIMEOUT)
            .build()?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        // Sent to both; the echo server ignores it, the gateway authenticates it.
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}"))?,
        );
        Ok(Target {
            name,
            url,
            client,
            headers,
        })
    }

    /// POSTs one message; the status, the `Mcp-Session-Id` answered, and the body.
    async fn post(
        &self,
        era: &Era,
        body: String,
        method: &'static str,
    ) -> Result<(u16, Option<String>, bytes::Bytes), String> {
        let mut request = self.client.post(&self.url).headers(self.headers.clone());
        match era {
            Era::Modern => {
                request = request
                    .header("mcp-protocol-version", MODERN_VERSION)
                    .header("mcp-method", method);
                if method == "tools/call" {
                    request = request.header("mcp-name", "echo");
                }
            }
            Era::Legacy { session } => {
                if method != "initialize" {
                    request = request.header("mcp-protocol-version", LEGACY_VERSION);
                }
                if let Some(id) = session {
                    request = request.header("mcp-session-id", id);
                }
            }
        }
        let response = request.body(body).send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, session, bytes))
    }

    /// Opens a legacy session (`initialize` + `notifications/initialized`).
    async fn open_session(&self) -> Result<Era, String> {
        let init = format!(
            r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{LEGACY_VERSION}","capabilities":{{}},"clientInfo":{{"name":"bench","version":"0"}}}}}}"#
        );
        let (status, session, body) = self
            .post(&Era::Legacy { session: None }, init, "initialize")
            .await?;
        let answer = parse_answer(&body)?;
        if status != 200 || answer.pointer("/result/protocolVersion").is_none() {
            return Err(format!("initialize answered {status} {answer}"));
        }
        let era = Era::Legacy { session };
        let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_owned();
        let (status, _, _) = self
            .post(&era, initialized, "notifications/initialized")
            .await?;
        if status != 202 {
            return Err(format!("notifications/initialized answered {status}"));
        }
        Ok(era)
    }

    /// One `tools/call` of `echo`, checked; its latency (request sent → whole body read).
    async fn call(&self, era: &Era, seq: u64) -> Result<Duration, String> {
        let message = format!("bench-{seq}");
        let meta = match era {
            Era::Modern => format!(
                r#","_meta":{{"io.modelcontextprotocol/protocolVersion":"{MODERN_VERSION}","io.modelcontextprotocol/clientCapabilities":{{}}}}"#
            ),
            Era::Legacy { .. } => String::new(),
        };
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{seq},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{message}"}}{meta}}}}}"#
        );
        let started = Instant::now();
        let (status, _, bytes) = self.post(era, body, "tools/call").await?;
        let elapsed = started.elapsed();
        let answer = parse_answer(&bytes)?;
        let correct = status == 200
            && answer.get("id").and_then(Value::as_u64) == Some(seq)
            && answer
                .pointer("/result/content/0/text")
                .and_then(Value::as_str)
                == Some(message.as_str())
            && answer.pointer("/result/isError") == Some(&Value::Bool(false));
        if correct {
            Ok(elapsed)
        } else {
            Err(format!("HTTP {status}: {answer}"))
        }
    }
}

/// A JSON body, or the last message of an SSE body.
fn parse_answer(body: &[u8]) -> Result<Value, String> {
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let text = String::from_utf8_lossy(body);
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .find_map(|d| serde_json::from_str(d.trim()).ok())
        .ok_or_else(|| format!("not JSON: {text:?}"))
}

// === measurements ===

/// Failures seen, with the first few kept for the report.
#[derive(Default)]
struct Failures {
    count: u64,
    samples: Vec<String>,
}

impl Failures {
    fn add(&mut self, what: &str, why: String) {
        self.count += 1;
        if self.samples.len() < 5 {
            self.samples.push(format!("{what}: {why}"));
        }
    }
}

/// Latencies in microseconds, sorted.
struct Latencies(Vec<f64>);

impl Latencies {
    fn new(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        Latencies(samples)
    }
    fn quantile(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1]
    }
    fn mean(&self) -> f64 {
        self.0.iter().sum::<f64>() / self.0.len().max(1) as f64
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

async fn sequential(target: &Target, era: &Era, n: usize, failures: &mut Failures) -> Latencies {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        match target.call(era, next_id()).await {
            Ok(latency) => samples.push(latency.as_secs_f64() * 1e6),
            Err(why) => failures.add(target.name, why),
        }
    }
    Latencies::new(samples)
}

/// Sequential calls to both targets in alternating rounds, so that noise on the machine (other
/// processes, frequency changes) falls on both alike.
async fn alternating(
    targets: [&Rc<Target>; 2],
    eras: &[Era; 2],
    n: usize,
    failures: &mut Failures,
) -> [Latencies; 2] {
    let mut samples = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for round in 0..SEQUENTIAL_ROUNDS {
        let chunk = n / SEQUENTIAL_ROUNDS + usize::from(round < n % SEQUENTIAL_ROUNDS);
        for (i, t) in targets.iter().enumerate() {
            samples[i].extend(sequential(t, &eras[i], chunk, failures).await.0);
        }
    }
    samples.map(Latencies::new)
}

struct Load {
    calls_per_sec: f64,
    latencies: Latencies,
    /// CPU seconds used in the measured window by the bench itself, the echo server and the
    /// gateway (zero for a process not in the path).
    cpu: [f64; 3],
    calls: usize,
}

/// User + system CPU time of a process so far, in seconds (`/proc/PID/stat`, `USER_HZ` = 100).
fn cpu_secs(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let Ok(stat) = std::fs::read_to_string(path) else {
        return f64::NAN;
    };
    // Fields after the command name: state is the 3rd field, utime the 14th, stime the 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

fn cpu_now(pids: [u32; 2]) -> [f64; 3] {
    [
        cpu_secs(None),
        cpu_secs(Some(pids[0])),
        cpu_secs(Some(pids[1])),
    ]
}

/// `clients` closed loops for `LOAD_WARMUP + duration`; counts the calls that finish in the
/// measured window.
async fn closed_loop(
    target: &Rc<Target>,
    clients: usize,
    duration: Duration,
    pids: [u32; 2],
    failures: &mut Failures,
) -> Load {
    let measure_from = Instant::now() + LOAD_WARMUP;
    let end = measure_from + duration;
    let local = tokio::task::LocalSet::new();
    let cpu = local.spawn_local(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let before = cpu_now(pids);
        tokio::time::sleep_until(end.into()).await;
        let after = cpu_now(pids);
        [0, 1, 2].map(|i| after[i] - before[i])
    });
    let mut workers = Vec::new();
    for _ in 0..clients {
        let target = target.clone();
        workers.push(local.spawn_local(async move {
            let mut samples = Vec::new();
            let mut errors = Vec::new();
            while Instant::now() < end {
                let result = target.call(&Era::Modern, next_id()).await;
                let finished = Instant::now();
                match result {
                    Ok(latency) if finished >= measure_from && finished <= end => {
                        samples.push(latency.as_secs_f64() * 1e6)
                    }
                    Ok(_) => {}
                    Err(why) => errors.push(why),
                }
            }
            (samples, errors)
        }));
    }
    let results = local.run_until(futures::future::join_all(workers)).await;
    let cpu = local.run_until(cpu).await.unwrap_or([f64::NAN; 3]);
    let mut all = Vec::new();
    for result in results {
        match result {
            Ok((samples, errors)) => {
                all.extend(samples);
                for why in errors {
                    failures.add(target.name, why);
                }
            }
            Err(e) => failures.add(target.name, format!("client task failed: {e}")),
        }
    }
    Load {
        calls_per_sec: all.len() as f64 / duration.as_secs_f64(),
        calls: all.len(),
        latencies: Latencies::new(all),
        cpu,
    }
}

/// Calls until one succeeds, or fails after `START_TIMEOUT`.
async fn wait_ready(target: &Target, gateway: &mut ChildGuard) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        gateway.check_alive()?;
        match target.call(&Era::Modern, next_id()).await {
            Ok(_) => return Ok(()),
            Err(why) if Instant::now() > deadline => {
                bail!("{} not ready after {START_TIMEOUT:?}: {why}", target.name)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

// === the run ===

fn run(args: &Args) -> anyhow::Result<i32> {
    let (echo_bin, gateway_bin) = binaries()?;
    let dir = tempfile::tempdir()?;
    let key = format!("bench-{}", uuid::Uuid::new_v4());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.pin {
        if cpus < 2 {
            bail!("--pin needs at least 2 CPUs");
        }
        pin_self(0)?;
    }
    let (echo, echo_addr) = start_echo(&echo_bin, args.pin.then_some(0))?;
    let (mut gateway, gateway_addr) = start_gateway(
        &gateway_bin,
        dir.path(),
        &echo_addr,
        &countersign::auth::hash_key(&key),
        args.pin.then_some(1),
        args.audit,
    )?;
    let log_path = dir.path().join("gateway.log");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(measure(
        args,
        &key,
        &echo_addr,
        &gateway_addr,
        echo.pid(),
        cpus,
        &mut gateway,
    ));
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
    result
}

async fn measure(
    args: &Args,
    key: &str,
    echo_addr: &str,
    gateway_addr: &str,
    echo_pid: u32,
    cores: usize,
    gateway: &mut ChildGuard,
) -> anyhow::Result<i32> {
    let direct = Rc::new(Target::new(
        "direct",
        format!("http://{echo_addr}/mcp"),
        key,
    )?);
    let via = Rc::new(Target::new(
        "gateway",
        format!("http://{gateway_addr}/mcp"),
        key,
    )?);
    wait_ready(&direct, gateway).await?;
    wait_ready(&via, gateway).await?;
    let idle = memory_kib(gateway.pid());

    println!(
        "bench: echo_server at {echo_addr}, gateway at {gateway_addr} (pid {}, auth on); \
         {} sequential calls, {} s per load phase, {} cores{}",
        gateway.pid(),
        args.requests,
        args.duration.as_secs_f64(),
        cores,
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

    println!("sequential, modern era ({SEQUENTIAL_ROUNDS} alternating rounds)");
    let modern = [Era::Modern, Era::Modern];
    let seq = alternating(targets, &modern, args.requests, &mut failures).await;

    println!("sequential, legacy session ({SEQUENTIAL_ROUNDS} alternating rounds)");
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
            let pids = [echo_pid, gateway.pid()];
            pair.push(closed_loop(t, clients, args.duration, pids, &mut failures).await);
        }
        loads.push((clients, pair));
    }
    let after = memory_kib(gateway.pid());
    gateway.check_alive()?;

    // === report ===
    let mut all_pass = true;
    let mut verdict = |pass: bool| {
        all_pass &= pass;
        if pass { "PASS" } else { "FAIL" }
    };
    println!();
    println!(
        "{:<34} {:>11} {:>11} {:>13}  {:<12} result",
        "metric", "direct", "gateway", "added/ratio", "target"
    );
    let latency_row = |name: &str,
                       d: f64,
                       g: f64,
                       target: Option<f64>,
                       v: &mut dyn FnMut(bool) -> &'static str| {
        let added = g - d;
        let (target, result) = match target {
            Some(t) => (format!("<= +{t:.0} us"), v(added <= t)),
            None => (String::new(), ""),
        };
        println!("{name:<34} {d:>8.1} us {g:>8.1} us {added:>+10.1} us  {target:<12} {result}");
    };
    let (d, g) = (&seq[0], &seq[1]);
    latency_row(
        "modern seq p50",
        d.quantile(0.5),
        g.quantile(0.5),
        Some(TARGET_ADDED_P50_US),
        &mut verdict,
    );
    latency_row(
        "modern seq p99",
        d.quantile(0.99),
        g.quantile(0.99),
        Some(TARGET_ADDED_P99_US),
        &mut verdict,
    );
    latency_row("modern seq mean", d.mean(), g.mean(), None, &mut verdict);
    let (d, g) = (&legacy[0], &legacy[1]);
    latency_row(
        "legacy-session seq p50",
        d.quantile(0.5),
        g.quantile(0.5),
        None,
        &mut verdict,
    );
    latency_row(
        "legacy-session seq p99",
        d.quantile(0.99),
        g.quantile(0.99),
        None,
        &mut verdict,
    );
    for (clients, pair) in &loads {
        let (d, g) = (&pair[0], &pair[1]);
        let ratio = g.calls_per_sec / d.calls_per_sec;
        let result = verdict(ratio >= TARGET_THROUGHPUT_RATIO);
        println!(
            "{:<34} {:>11.0} {:>11.0} {:>12.2}x  {:<12} {result}",
            format!("calls/s, {clients} clients"),
            d.calls_per_sec,
            g.calls_per_sec,
            ratio,
            format!(">= {TARGET_THROUGHPUT_RATIO:.1}x"),
        );
        latency_row(
            &format!("  p50 under load, {clients} clients"),
            d.latencies.quantile(0.5),
            g.latencies.quantile(0.5),
            None,
            &mut verdict,
        );
        latency_row(
            &format!("  p99 under load, {clients} clients"),
            d.latencies.quantile(0.99),
            g.latencies.quantile(0.99),
            None,
            &mut verdict,
        );
    }
    println!();
    println!(
        "CPU in the measured window, per call (bench client / echo_server / gateway), and cores busy:"
    );
    for (clients, pair) in &loads {
        for (load, name) in pair.iter().zip(["direct", "gateway"]) {
            let per_call = |cpu: f64| cpu / load.calls.max(1) as f64 * 1e6;
            let gateway_cpu = if name == "direct" {
                "-".to_owned() // idle: not in the path
            } else {
                format!("{:.1} us", per_call(load.cpu[2]))
            };
            println!(
                "  {name:<8} {clients:>2} clients: {:>6.1} us / {:>6.1} us / {:>8}   {:.2} of {} cores",
                per_call(load.cpu[0]),
                per_call(load.cpu[1]),
                gateway_cpu,
                load.cpu.iter().sum::<f64>() / args.duration.as_secs_f64(),
                cores,
            );
        }
    }
    println!();
    match (idle, after) {
        (Some((idle_rss, _)), Some((rss, peak))) => println!(
            "gateway RSS: idle {} before load; {} after the 64-client phase, peak (VmHWM) {}",
            mib(idle_rss),
            mib(rss),
            mib(peak)
        ),
        _ => println!("gateway RSS: /proc not readable"),
    }

    if failures.count > 0 {
        eprintln!();
        eprintln!(
            "!!!!!!!! {} CALLS FAILED OR WERE WRONG !!!!!!!!",
            failures.count
        );
        for sample in &failures.samples {
            eprintln!("  {sample}");
        }
        return Ok(1);
    }
    println!("all calls answered with the right echo");
    Ok(if all_pass { 0 } else { 2 })
}
