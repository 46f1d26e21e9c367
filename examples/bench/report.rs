//! The table: each figure beside its target, and whether it is met.
//!
//! The targets are the project's (issue 14), as ratios to the direct call in the same run or,
//! on the audited path, in terms of this disk's fsync latency measured in the same run:
//!
//! | path | added p50 | added p99 | calls/s, 16 clients | calls/s, 64 clients |
//! |---|---|---|---|---|
//! | plain proxy | ≤ 100 µs | ≤ 300 µs | ≥ 0.75× | ≥ 0.75× |
//! | audited, SQLite | ≤ fsync p50 + 100 µs | ≤ 3 × that | ≥ 0.5× | ≥ 0.5× |
//! | audited, PostgreSQL | (shown) | (shown) | (shown) | ≥ 0.4× |

use crate::audit::Store;
use crate::measure::Latencies;
use crate::processes::mib;
use crate::{Args, Measured, Servers};

/// What one run must reach; `None` is shown without a target.
struct Targets {
    added_p50_us: Option<f64>,
    added_p99_us: Option<f64>,
    /// calls/s through the gateway over direct, at 16 and at 64 clients.
    ratio: [Option<f64>; 2],
}

impl Targets {
    fn of(store: Store, fsync: Option<&Latencies>) -> Targets {
        let one_fsync = fsync.map(|f| f.quantile(0.5) + 100.0);
        match store {
            Store::None => Targets {
                added_p50_us: Some(100.0),
                added_p99_us: Some(300.0),
                ratio: [Some(0.75), Some(0.75)],
            },
            Store::Sqlite => Targets {
                added_p50_us: one_fsync,
                added_p99_us: one_fsync.map(|t| 3.0 * t),
                ratio: [Some(0.5), Some(0.5)],
            },
            Store::Postgres => Targets {
                added_p50_us: None,
                added_p99_us: None,
                ratio: [None, Some(0.4)],
            },
        }
    }
}

/// Prints the report; the exit status: 0 all targets met, 2 some missed, 1 a call failed.
pub fn print(args: &Args, servers: &Servers, fsync: Option<&Latencies>, m: &Measured) -> i32 {
    let targets = Targets::of(args.store, fsync);
    let all_pass = std::cell::Cell::new(true);
    let verdict = |pass: bool| {
        all_pass.set(all_pass.get() && pass);
        if pass { "PASS" } else { "FAIL" }
    };
    println!();
    println!("path: {}", args.store.label());
    if let Some(f) = fsync {
        println!(
            "this disk: write+fsync of 256 bytes p50 {:.1} us, p99 {:.1} us ({} samples, same run)",
            f.quantile(0.5),
            f.quantile(0.99),
            f.0.len()
        );
    }
    println!(
        "{:<34} {:>11} {:>11} {:>13}  {:<14} result",
        "metric", "direct", "gateway", "added/ratio", "target"
    );
    let latency_row = |name: &str, d: f64, g: f64, target: Option<f64>| {
        let added = g - d;
        let (target, result) = match target {
            Some(t) => (format!("<= +{t:.0} us"), verdict(added <= t)),
            None => (String::new(), ""),
        };
        println!("{name:<34} {d:>8.1} us {g:>8.1} us {added:>+10.1} us  {target:<14} {result}");
    };
    let [d, g] = &m.seq;
    latency_row(
        "modern seq p50",
        d.quantile(0.5),
        g.quantile(0.5),
        targets.added_p50_us,
    );
    latency_row(
        "modern seq p99",
        d.quantile(0.99),
        g.quantile(0.99),
        targets.added_p99_us,
    );
    latency_row("modern seq mean", d.mean(), g.mean(), None);
    let [d, g] = &m.legacy;
    latency_row(
        "legacy-session seq p50",
        d.quantile(0.5),
        g.quantile(0.5),
        None,
    );
    latency_row(
        "legacy-session seq p99",
        d.quantile(0.99),
        g.quantile(0.99),
        None,
    );
    for ((clients, pair), target) in m.loads.iter().zip(targets.ratio) {
        let (d, g) = (&pair[0], &pair[1]);
        let ratio = g.calls_per_sec / d.calls_per_sec;
        let (target, result) = match target {
            Some(t) => (format!(">= {t:.2}x"), verdict(ratio >= t)),
            None => (String::new(), ""),
        };
        println!(
            "{:<34} {:>11.0} {:>11.0} {:>12.2}x  {target:<14} {result}",
            format!("calls/s, {clients} clients"),
            d.calls_per_sec,
            g.calls_per_sec,
            ratio,
        );
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            latency_row(
                &format!("  {name} under load, {clients} clients"),
                d.latencies.quantile(q),
                g.latencies.quantile(q),
                None,
            );
        }
    }
    print_cpu(args, servers, m);
    print_memory(m);
    if m.failures.reported("CALLS") {
        return 1;
    }
    println!("all calls answered with the right echo");
    if all_pass.get() { 0 } else { 2 }
}

fn print_cpu(args: &Args, servers: &Servers, m: &Measured) {
    println!();
    println!(
        "CPU in the measured window, per call (bench client / echo_server / gateway), and cores busy:"
    );
    for (clients, pair) in &m.loads {
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
                servers.cores,
            );
        }
    }
}

fn print_memory(m: &Measured) {
    println!();
    match m.memory {
        [Some((idle, _)), Some((rss, peak))] => println!(
            "gateway RSS: idle {} before load; {} after the 64-client phase, peak (VmHWM) {}",
            mib(idle),
            mib(rss),
            mib(peak)
        ),
        _ => println!("gateway RSS: /proc not readable"),
    }
}
