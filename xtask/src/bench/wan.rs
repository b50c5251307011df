//! `cargo xtask bench wan`: a full copy and a 1% delta resync by `mt-agent send` through
//! `testkit::FaultyLink` at a WAN's round trip (40 ms unless told), against a plain TCP copy of
//! the same bytes through the same link (std's copy of the file to a socket; the receiver writes
//! a file on the same file system and fsyncs it at the end, what `nc -l > file; sync` does).
//! Rounds alternate the contenders; the median of each is reported, with MiB/s, the ratio of the
//! full copies, the delta's time and wire bytes, and the CPU seconds per GiB on each end (for
//! mt-agent the `send` and `serve` processes, for the plain copy its two threads). Both sides
//! start from a warm page cache; the journal is on the disk of the images. Then the goal, and
//! the figures are appended to the history (`docs/benchmarks.md`).

use super::history::{Better, Entry, Figure, Schema};
use super::resync::{change_blocks, random_image, same, warm, Master, Rng, BLOCK};
use super::{median, Goal};
use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use std::io::{BufWriter, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};
use testkit::FaultyLink;
use xshell::{cmd, Shell};

const MIB: f64 = (1 << 20) as f64;
const GIB: f64 = (1 << 30) as f64;
/// The share of blocks the delta resync finds changed.
const DELTA_PERCENT: u64 = 1;
/// Goal: the full copy's throughput / the plain TCP copy's.
const GOAL_FULL: Goal = Goal::AtLeast(0.9);

/// The bench's table in `docs/benchmarks.md`.
pub(super) const HISTORY: Schema = Schema {
    bench: "wan",
    about: "`cargo xtask bench wan`: vs plain copy = the plain TCP copy's time / this \
            contender's; CPU per GiB of the image.",
    figures: &[
        Figure {
            name: "vs plain copy",
            decimals: 2,
            suffix: "x",
            compare: Some(Better::Higher),
        },
        Figure {
            name: "sender CPU s/GiB",
            decimals: 2,
            suffix: "",
            compare: Some(Better::Lower),
        },
        Figure {
            name: "receiver CPU s/GiB",
            decimals: 2,
            suffix: "",
            compare: Some(Better::Lower),
        },
        Figure::shown("seconds", 2),
        Figure::shown("MiB/s", 0),
        Figure::shown("wire MiB", 1),
    ],
};

/// Full copy and delta resync by mt-agent through a WAN-like link vs a plain TCP copy.
#[derive(clap::Args)]
pub struct WanBench {
    /// Image size (e.g. 1GiB, 256MiB).
    #[arg(long, default_value = "1GiB")]
    size: appliance::units::ByteSize,
    /// Round trip of the link in milliseconds (half of it is added each way).
    #[arg(long, default_value_t = 40)]
    rtt_ms: u64,
    /// A cap on the link's bandwidth, per direction, per second (e.g. 100MiB) [default: none].
    #[arg(long)]
    bandwidth: Option<appliance::units::ByteSize>,
    /// Working directory [default: target/bench-wan].
    #[arg(long)]
    dir: Option<Utf8PathBuf>,
    /// Rounds of each contender (the median is reported, with the spread of the ratios).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// One transfer: how long it took, what crossed the link and the CPU each end spent.
#[derive(Clone, Copy)]
struct Transfer {
    secs: f64,
    wire: u64,
    sender_cpu: f64,
    receiver_cpu: f64,
}

impl WanBench {
    pub fn run(self, sh: &Shell) -> Result<()> {
        if self.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        let size = self.size.bytes() - self.size.bytes() % BLOCK;
        if size == 0 {
            bail!("--size must be at least one 64 KiB block");
        }
        let root = crate::util::workspace_root();
        let dir = self.dir.clone().unwrap_or(root.join("target/bench-wan"));
        if sh.path_exists(&dir) {
            sh.remove_path(&dir)?;
        }
        sh.create_dir(&dir)?;
        eprintln!("building mt-agent (release)");
        cmd!(sh, "cargo build --release --quiet -p mt-agent").run()?;
        let agent = root.join("target/release/mt-agent");

        eprintln!("writing a {} MiB image", size >> 20);
        let mut rng = Rng(0x3a7_1e55);
        let base = dir.join("base.img");
        random_image(&base, size, &mut rng)?;
        std::fs::File::open(&base)?.sync_all()?;

        let master = Master::start(sh, &agent, &dir)?;
        let serve_addr: SocketAddr = master.addr.parse()?;
        let plain_listener = TcpListener::bind("127.0.0.1:0")?;
        let plain_addr = plain_listener.local_addr()?;
        let link = FaultyLink::start(serve_addr);
        link.set_latency(Duration::from_micros(self.rtt_ms * 500));
        link.set_bandwidth(self.bandwidth.map(|b| b.bytes()));
        // The sender pins the master target's key under the address it enrols with: the link's.
        let (to, pass, sender) = (link.target(), &master.passphrase, dir.join("sender-state"));
        cmd!(
            sh,
            "{agent} enrol --to {to} --passphrase-file {pass} --state {sender}"
        )
        .quiet()
        .ignore_stdout()
        .run()?;
        let mt = Mt {
            sh,
            agent: &agent,
            master: &master,
            link: &link,
            sender: &sender,
            log: dir.join("send.log"),
        };

        let (mut plain, mut full, mut delta) = (Vec::new(), Vec::new(), Vec::new());
        let mut changed = 0;
        for round in 0..self.rounds {
            eprintln!("round {} of {}", round + 1, self.rounds);
            // Alternate who goes first: neither always meets the warmer machine.
            for agent_turn in [round % 2 == 1, round % 2 == 0] {
                if agent_turn {
                    link.set_upstream(serve_addr);
                    full.push(mt.full_copy(&base, size, &dir, round)?);
                } else {
                    link.set_upstream(plain_addr);
                    let copy = dir.join("plain.img");
                    warm(&base)?;
                    plain.push(plain_copy(&link, &plain_listener, &base, &copy)?);
                    same(&base, &copy)?;
                    std::fs::remove_file(&copy)?;
                }
            }
            link.set_upstream(serve_addr);
            let (t, c) = mt.delta_resync(&base, size, &dir, round, &mut rng)?;
            delta.push(t);
            changed = c;
        }
        drop(link);
        drop(master);

        let mib_s = |t: &Transfer| size as f64 / MIB / t.secs;
        let per_gib = |cpu: f64| cpu / (size as f64 / GIB);
        let col = |v: &[Transfer], f: &dyn Fn(&Transfer) -> f64| -> f64 {
            median(&v.iter().map(f).collect::<Vec<_>>())
        };
        let cap = self.bandwidth.map_or(String::new(), |b| {
            format!(", capped at {:.0} MiB/s", b.bytes() as f64 / MIB)
        });
        println!();
        println!(
            "a {} MiB image through a FaultyLink at {} ms round trip{cap}, journal on disk, page cache warm;",
            size >> 20,
            self.rtt_ms
        );
        println!(
            "{} rounds, alternating, median of each; CPU per GiB of the image",
            self.rounds
        );
        println!(
            "{:<24} {:>9} {:>9} {:>10} {:>17} {:>19}",
            "contender", "seconds", "MiB/s", "wire MiB", "sender CPU s/GiB", "receiver CPU s/GiB"
        );
        let rows: [(&str, &[Transfer]); 3] = [
            ("plain TCP copy", &plain),
            ("mt-agent send --full", &full),
            ("mt-agent send --delta", &delta),
        ];
        let params = format!(
            "size={} rtt={}ms bandwidth={} delta={DELTA_PERCENT}% rounds={}",
            appliance::units::ByteSize(size),
            self.rtt_ms,
            self.bandwidth.map_or("none".into(), |b| b.to_string()),
            self.rounds
        );
        let plain_secs = col(&plain, &|t| t.secs);
        let delta_secs = col(&delta, &|t| t.secs);
        let ratio = col(&full, &|t| mib_s(t)) / col(&plain, &|t| mib_s(t));
        // Against the plain copy, as the lines under the table say it.
        let vs_plain = [None, Some(ratio), Some(plain_secs / delta_secs)];
        let mut entries = Vec::new();
        for ((name, v), vs_plain) in rows.into_iter().zip(vs_plain) {
            entries.push(Entry {
                workload: name.into(),
                values: vec![
                    vs_plain,
                    Some(col(v, &|t| per_gib(t.sender_cpu))),
                    Some(col(v, &|t| per_gib(t.receiver_cpu))),
                    Some(col(v, &|t| t.secs)),
                    Some(col(v, &|t| mib_s(t))),
                    Some(col(v, &|t| t.wire as f64 / MIB)),
                ],
                params: params.clone(),
            });
            println!(
                "{:<24} {:>9.2} {:>9.0} {:>10.1} {:>17.2} {:>19.2}",
                name,
                col(v, &|t| t.secs),
                col(v, &|t| mib_s(t)),
                col(v, &|t| t.wire as f64 / MIB),
                col(v, &|t| per_gib(t.sender_cpu)),
                col(v, &|t| per_gib(t.receiver_cpu)),
            );
        }
        let ratios: Vec<f64> = full
            .iter()
            .zip(&plain)
            .map(|(f, p)| p.secs / f.secs)
            .collect();
        println!(
            "full copy: mt-agent/plain {ratio:.2}x (rounds {:.2}..{:.2}; {})",
            ratios.iter().copied().fold(f64::INFINITY, f64::min),
            ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            GOAL_FULL.verdict(ratio, "x")
        );
        println!(
            "delta resync: {DELTA_PERCENT}% changed ({:.1} MiB) in {delta_secs:.2} s, {:.1} MiB on the wire, {:.1}x faster than the plain copy of the whole image",
            changed as f64 / MIB,
            col(&delta, &|t| t.wire as f64 / MIB),
            plain_secs / delta_secs,
        );
        sh.remove_path(&dir)?;
        super::history::record(sh, &HISTORY, &entries)
    }
}

/// What every mt-agent transfer of the benchmark shares.
struct Mt<'a> {
    sh: &'a Shell,
    agent: &'a Utf8Path,
    master: &'a Master,
    link: &'a FaultyLink,
    sender: &'a Utf8Path,
    /// Where the sends' standard error goes.
    log: Utf8PathBuf,
}

impl Mt<'_> {
    fn group_create(&self, group: &str, target: &Utf8Path) -> Result<()> {
        let (agent, config, ret) = (self.agent, &self.master.config, &self.master.retention);
        cmd!(
            self.sh,
            "{agent} group create {group} --disk d0={target} --config {config} --retention {ret}"
        )
        .quiet()
        .ignore_stdout()
        .run()?;
        self.master.allow(self.sh, self.agent, self.sender, group)
    }

    /// `send GROUP --MODE --disk d0=SOURCE --json` through the link; its report and the transfer.
    fn send(
        &self,
        group: &str,
        mode: &str,
        source: &Utf8Path,
    ) -> Result<(serde_json::Value, Transfer)> {
        let (agent, sender, to) = (self.agent, self.sender, self.link.target());
        let mode = format!("--{mode}");
        let shown = format!("{agent} send {group} --to {to} {mode} --disk d0={source} --json");
        let mut command = std::process::Command::from(cmd!(
            self.sh,
            "{agent} send {group} --to {to} --state {sender} {mode} --disk d0={source} --json"
        ));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        command.stdout(Stdio::piped()).stderr(log);
        let serve_before = process_cpu(self.master.pid())?;
        let wire_before = self.link.bytes_up() + self.link.bytes_down();
        let start = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {shown}"))?;
        let mut out = String::new();
        child
            .stdout
            .take()
            .context("no stdout")?
            .read_to_string(&mut out)?;
        let measured = super::reap(&child, start, &shown)
            .with_context(|| format!("its errors are in {}", self.log))?;
        let transfer = Transfer {
            secs: measured.wall.as_secs_f64(),
            wire: self.link.bytes_up() + self.link.bytes_down() - wire_before,
            sender_cpu: measured.cpu.as_secs_f64(),
            receiver_cpu: process_cpu(self.master.pid())? - serve_before,
        };
        let report = serde_json::from_str(&out)
            .with_context(|| format!("{shown} printed no JSON report: {out:?}"))?;
        Ok((report, transfer))
    }

    /// A full copy of `base` into a new, empty target.
    fn full_copy(
        &self,
        base: &Utf8Path,
        size: u64,
        dir: &Utf8Path,
        round: usize,
    ) -> Result<Transfer> {
        let target = dir.join(format!("target-full-{round}.img"));
        std::fs::File::create(&target)?.set_len(size)?;
        let group = format!("wan-full-{round}");
        self.group_create(&group, &target)?;
        warm(base)?;
        let (_, transfer) = self.send(&group, "full", base)?;
        same(base, &target)?;
        std::fs::remove_file(&target)?;
        Ok(transfer)
    }

    /// A delta resync of a copy of `base` with `DELTA_PERCENT`% of its blocks changed onto a
    /// target that holds `base`; the transfer and the bytes changed.
    fn delta_resync(
        &self,
        base: &Utf8Path,
        size: u64,
        dir: &Utf8Path,
        round: usize,
        rng: &mut Rng,
    ) -> Result<(Transfer, u64)> {
        let src = dir.join(format!("src-delta-{round}.img"));
        let target = dir.join(format!("target-delta-{round}.img"));
        for p in [&src, &target] {
            std::fs::copy(base, p)?;
            // The agent flushes what it writes; nothing dirty from the setup may be billed to it.
            std::fs::File::open(p)?.sync_all()?;
        }
        let changed = change_blocks(&src, size, DELTA_PERCENT, rng)?;
        let group = format!("wan-delta-{round}");
        self.group_create(&group, &target)?;
        for p in [&src, &target] {
            warm(p)?;
        }
        let (report, transfer) = self.send(&group, "delta", &src)?;
        if report["changed_bytes"].as_u64() != Some(changed) {
            bail!(
                "mt-agent sent {} changed bytes, {changed} changed",
                report["changed_bytes"]
            );
        }
        same(&src, &target)?;
        for p in [&src, &target] {
            std::fs::remove_file(p)?;
        }
        Ok((transfer, changed))
    }
}

/// The plain copy: this thread copies `src` to a socket through `link` (std's copy, sendfile),
/// a second thread accepts it on `listener` and writes `dst`, fsyncing at the end; done when the
/// receiver has closed its socket after the fsync and the sender has seen that.
fn plain_copy(
    link: &FaultyLink,
    listener: &TcpListener,
    src: &Utf8Path,
    dst: &Utf8Path,
) -> Result<Transfer> {
    let wire_before = link.bytes_up() + link.bytes_down();
    let start = Instant::now();
    std::thread::scope(|scope| {
        let receiver = std::thread::Builder::new()
            .name("plain-receiver".into())
            .spawn_scoped(scope, || -> Result<f64> {
                let cpu = thread_cpu();
                let (mut socket, _) = listener.accept()?;
                let file =
                    std::fs::File::create(dst).with_context(|| format!("cannot create {dst}"))?;
                let mut out = BufWriter::with_capacity(1 << 20, file);
                std::io::copy(&mut socket, &mut out)?;
                out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                drop(socket);
                Ok(thread_cpu() - cpu)
            })?;
        let cpu = thread_cpu();
        let sent = (|| -> Result<()> {
            let mut socket = TcpStream::connect(link.addr())?;
            std::io::copy(&mut std::fs::File::open(src)?, &mut socket)?;
            socket.shutdown(std::net::Shutdown::Write)?;
            // The receiver's close says the copy is on its disk.
            let mut rest = Vec::new();
            socket.read_to_end(&mut rest)?;
            Ok(())
        })();
        let sender_cpu = thread_cpu() - cpu;
        let secs = start.elapsed().as_secs_f64();
        if sent.is_err() {
            // The receiver may still wait in accept: an empty connection ends its copy.
            let _ = TcpStream::connect(listener.local_addr()?);
        }
        let receiver_cpu = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("the plain copy's receiver panicked"))??;
        sent.context("the plain copy's sender")?;
        Ok(Transfer {
            secs,
            wire: link.bytes_up() + link.bytes_down() - wire_before,
            sender_cpu,
            receiver_cpu,
        })
    })
}

/// CPU seconds (user and system) of the calling thread.
fn thread_cpu() -> f64 {
    // SAFETY: an all-zero rusage is a valid value for the kernel to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// CPU seconds (user and system) a running process has used, from /proc/PID/stat.
fn process_cpu(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name may hold spaces; the fields after it start with the state (field 3), so
    // utime and stime (fields 14 and 15) are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{path} has no field {}: {stat:?}", i + 3))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(11)? + ticks(12)?) as f64 / hz)
}
