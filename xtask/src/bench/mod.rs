//! `cargo xtask bench <what>`: benchmarks that run our code side by side with the tool a user
//! would otherwise use, in one invocation, and print ratios. Benchmarks are never tests: nothing
//! here asserts a time. Each run ends by appending its figures to `docs/benchmarks.md` and
//! printing the change against the previous run of the same workload (`history`).

mod agent;
mod boot;
mod history;
mod resync;
pub mod vmdk;
mod wan;

use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

/// Measure our code against the tool a user would otherwise use.
#[derive(clap::Args)]
pub struct Bench {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Raw image -> stream-optimized VMDK: our writer vs `qemu-img convert`.
    Vmdk(vmdk::BenchVmdk),
    /// mt-agent apply throughput and write amplification vs plain writes and fio.
    Agent(agent::AgentBench),
    /// Delta resync and full copy by mt-agent send over loopback vs rsync.
    Resync(resync::ResyncBench),
    /// Full copy and delta resync by mt-agent send through a WAN-like link vs a plain TCP copy.
    Wan(wan::WanBench),
    /// First boot of an OVA to agent-ready vs the same image without the appliance's units to
    /// multi-user (QEMU, alternating; needs root to prepare the plain copy).
    Boot(boot::BootBench),
}

impl Bench {
    pub fn run(self, sh: &xshell::Shell) -> Result<()> {
        // The tools each benchmark compares itself with.
        let tools: &[&str] = match &self.what {
            What::Vmdk(_) => &["qemu-img"],
            What::Agent(_) => &["fio"],
            What::Resync(_) => &["rsync"],
            // Its baseline is a plain TCP copy in this process.
            What::Wan(_) => &[],
            // Its baseline is the same OS disk, prepared with these.
            What::Boot(_) => &[
                "qemu-system-x86_64",
                "qemu-img",
                "mount",
                "systemctl",
                "ssh-keygen",
            ],
        };
        crate::host::ensure(sh, "bench", tools)?;
        match self.what {
            What::Vmdk(b) => b.run(sh),
            What::Agent(b) => b.run(sh),
            What::Resync(b) => b.run(sh),
            What::Wan(b) => b.run(sh),
            What::Boot(b) => b.run(sh),
        }
    }
}

/// What one run of a child process cost.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub wall: Duration,
    /// Peak resident set size of the child.
    pub max_rss_bytes: u64,
    pub cpu: Duration,
}

/// Runs `cmd` to completion and measures it. The child is reaped with `wait4`, which gives that
/// child's own peak RSS (`getrusage(RUSAGE_CHILDREN)` would give the maximum over all children).
pub fn measure(cmd: xshell::Cmd<'_>) -> Result<Measured> {
    let shown = cmd.to_string();
    let mut command = std::process::Command::from(cmd);
    let start = Instant::now();
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    reap(&child, start, &shown)
}

/// Waits for `child` (started at `start`, shown as `shown` in errors), which must succeed, and
/// measures it as `measure` does; for a caller that reads the child's output first.
pub fn reap(child: &std::process::Child, start: Instant, shown: &str) -> Result<Measured> {
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for the kernel to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `status` and `usage` are valid for writes.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    if r != pid {
        bail!("waiting for {shown}: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{shown} failed (wait status {status})");
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Measured {
        wall,
        // Linux reports ru_maxrss in KiB.
        max_rss_bytes: usage.ru_maxrss as u64 * 1024,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
    })
}

/// The tables of `docs/benchmarks.md`, in the order of its sections.
const SCHEMAS: &[&history::Schema] = &[
    &agent::HISTORY,
    &resync::HISTORY,
    &wan::HISTORY,
    &vmdk::HISTORY,
    &boot::HISTORY,
];

/// A goal of a benchmark's figure (each bench keeps its goals as constants next to it).
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

impl Goal {
    pub fn met(self, value: f64) -> bool {
        match self {
            Goal::AtLeast(g) => value >= g,
            Goal::AtMost(g) => value <= g,
        }
    }

    /// The goal and whether `value` meets it: "goal >= 0.8x: met" (`suffix` "x").
    pub fn verdict(self, value: f64, suffix: &str) -> String {
        let (op, g) = match self {
            Goal::AtLeast(g) => (">=", g),
            Goal::AtMost(g) => ("<=", g),
        };
        let verdict = if self.met(value) { "met" } else { "MISSED" };
        format!("goal {op} {g:?}{suffix}: {verdict}")
    }

    /// `value` and the verdict: "0.85x (goal >= 0.8x: met)"; to two decimals, or four where two
    /// would seem to say the opposite of the verdict (2.004 is not "2.00 <= 2.0").
    pub fn judge(self, value: f64, suffix: &str) -> String {
        let two = format!("{value:.2}");
        let shown = match two.parse() {
            Ok(v) if self.met(v) == self.met(value) => two,
            _ => format!("{value:.4}"),
        };
        format!("{shown}{suffix} ({})", self.verdict(value, suffix))
    }
}

/// Bytes this process's waited-for children sent to the storage layer (getrusage counts
/// 512-byte blocks from the same accounting as /proc/PID/io write_bytes).
pub fn children_written() -> u64 {
    // SAFETY: an all-zero rusage is a valid value for the kernel to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    ru.ru_oublock as u64 * 512
}

/// `write_bytes` of a process (all its threads, those that ended included) from
/// /proc/`pid`/io: the bytes it caused to be sent to the storage layer. `pid` may be "self".
pub fn process_written(pid: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/io");
    let io = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no write_bytes in {path}"))
}

/// The median (the upper one of an even count).
pub fn median<T: Copy + PartialOrd>(values: &[T]) -> T {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::Goal;

    #[test]
    fn a_goal_shows_enough_digits_for_its_verdict() {
        assert_eq!(
            Goal::AtLeast(0.8).judge(0.851, "x"),
            "0.85x (goal >= 0.8x: met)"
        );
        assert_eq!(
            Goal::AtMost(2.0).judge(2.0037, ""),
            "2.0037 (goal <= 2.0: MISSED)"
        );
        assert_eq!(
            Goal::AtMost(2.0).judge(1.996, ""),
            "2.00 (goal <= 2.0: met)"
        );
        assert_eq!(
            Goal::AtLeast(4.0).judge(3.999, "x"),
            "3.9990x (goal >= 4.0x: MISSED)"
        );
    }
}
