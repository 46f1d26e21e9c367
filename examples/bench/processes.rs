//! The two servers under test, as child processes that die with the run.

use crate::audit::Store;
use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Hard bound on starting the two servers.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Kills its child when dropped: at the end of the run, on error and on panic.
pub struct ChildGuard {
    pub name: &'static str,
    pub child: Child,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the child has already exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
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

pub fn binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
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
pub fn start_echo(binary: &Path, cpu: Option<usize>) -> anyhow::Result<(ChildGuard, String)> {
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
pub fn pinned(binary: &Path, cpu: Option<usize>) -> Command {
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
pub fn pin_self(cpu: usize) -> anyhow::Result<()> {
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

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// How the gateway under test is configured beyond its upstream and agent.
#[derive(Default)]
pub struct Setup<'a> {
    pub store: Store,
    pub database_url: Option<&'a str>,
    /// Policy rules (YAML list items) checked before the one that allows `echo`.
    pub rules: String,
    /// More top-level configuration.
    pub config: String,
    /// More lines of the `server` section (each indented two spaces).
    pub server: String,
}

/// Starts the gateway with the echo server as its only upstream; logs go to `dir/gateway.log`.
pub fn start_gateway(
    binary: &Path,
    dir: &Path,
    echo_addr: &str,
    key_sha256: &str,
    cpu: Option<usize>,
    setup: &Setup<'_>,
) -> anyhow::Result<(ChildGuard, String)> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut config = format!(
        "server:\n  listen: \"{addr}\"\n  allow_anonymous: false\n{}\
         upstreams:\n  - name: echo\n    prefix: \"\"\n    http:\n      url: \"http://{echo_addr}/mcp\"\n\
         agents:\n  - id: bench\n    key_sha256: \"{key_sha256}\"\n",
        setup.server
    );
    if setup.store != Store::None {
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies)?;
        let policy = format!(
            "defaults: {{verdict: deny, reason: not benchmarked}}\nrules:\n{}\
             \x20 - id: bench-echo\n    match: {{tool: echo}}\n    verdict: allow\n",
            setup.rules
        );
        std::fs::write(policies.join("bench.yaml"), policy)?;
        let url = match setup.database_url {
            Some(url) => url.to_owned(),
            None => format!("sqlite://{}", dir.join("audit.db").display()),
        };
        config.push_str(&format!(
            "policy_dir: \"{}\"\ndatabase:\n  url: \"{url}\"\n",
            policies.display(),
        ));
    }
    config.push_str(&setup.config);
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
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
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

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
