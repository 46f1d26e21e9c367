//! Sequential and closed-loop measurements, and the latencies they yield.

use crate::client::{Era, Target};
use crate::processes::{ChildGuard, START_TIMEOUT};
use anyhow::bail;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Unmeasured lead-in of each load phase (connections opened, caches warm).
const LOAD_WARMUP: Duration = Duration::from_millis(500);
/// The sequential phases alternate direct / gateway this many times.
const SEQUENTIAL_ROUNDS: usize = 10;
/// Failures seen, with the first few kept for the report.
#[derive(Default)]
pub struct Failures {
    count: u64,
    samples: Vec<String>,
}

impl Failures {
    pub fn add(&mut self, what: &str, why: String) {
        self.count += 1;
        if self.samples.len() < 5 {
            self.samples.push(format!("{what}: {why}"));
        }
    }

    /// Says loudly what failed, if anything did; whether anything did.
    pub fn reported(&self, what: &str) -> bool {
        if self.count == 0 {
            return false;
        }
        eprintln!();
        eprintln!(
            "!!!!!!!! {} {what} FAILED OR WERE WRONG !!!!!!!!",
            self.count
        );
        for sample in &self.samples {
            eprintln!("  {sample}");
        }
        true
    }
}

/// Latencies in microseconds, sorted.
pub struct Latencies(pub Vec<f64>);

impl Latencies {
    pub fn new(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        Latencies(samples)
    }
    pub fn quantile(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1]
    }
    pub fn mean(&self) -> f64 {
        self.0.iter().sum::<f64>() / self.0.len().max(1) as f64
    }
}

pub static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

pub async fn sequential(
    target: &Target,
    era: &Era,
    n: usize,
    failures: &mut Failures,
) -> Latencies {
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
pub async fn alternating(
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

pub struct Load {
    pub calls_per_sec: f64,
    pub latencies: Latencies,
    /// CPU seconds used in the measured window by the bench itself, the echo server and the
    /// gateway (zero for a process not in the path).
    pub cpu: [f64; 3],
    pub calls: usize,
}

/// User + system CPU time of a process so far, in seconds (`/proc/PID/stat`, `USER_HZ` = 100).
pub fn cpu_secs(pid: Option<u32>) -> f64 {
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

pub fn cpu_now(pids: [u32; 2]) -> [f64; 3] {
    [
        cpu_secs(None),
        cpu_secs(Some(pids[0])),
        cpu_secs(Some(pids[1])),
    ]
}

/// `clients` closed loops for `LOAD_WARMUP + duration`; counts the calls that finish in the
/// measured window.
pub async fn closed_loop(
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
pub async fn wait_ready(target: &Target, gateway: &mut ChildGuard) -> anyhow::Result<()> {
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
