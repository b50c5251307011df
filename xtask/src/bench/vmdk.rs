//! `cargo xtask bench vmdk`: our stream-optimized VMDK writer against
//! `qemu-img convert -O vmdk -o subformat=streamOptimized` on the same raw image, alternating,
//! both as child processes measured the same way; the figures are appended to the history
//! (`docs/benchmarks.md`). Also the hidden `cargo xtask vmdk-convert` verb that runs our writer
//! as such a child.

use super::history::{Better, Entry, Figure, Schema};
use super::{measure, median, Measured};
use anyhow::{ensure, Context, Result};
use appliance::units::{ByteSize, GIB, MIB};
use appliance::vmdk::{write_stream_optimized, VmdkOptions};
use camino::{Utf8Path, Utf8PathBuf};
use std::os::unix::fs::FileExt;
use xshell::cmd;

/// The bench's table in `docs/benchmarks.md`.
pub(super) const HISTORY: Schema = Schema {
    bench: "vmdk",
    about:
        "`cargo xtask bench vmdk`: our stream-optimized VMDK writer against `qemu-img convert`; \
            speed and CPU are qemu-img's time / ours (higher is better), size and RSS ours / \
            qemu-img's (lower is better); times are medians, RSS the peak of the runs.",
    figures: &[
        Figure {
            name: "speed vs qemu-img",
            decimals: 2,
            suffix: "x",
            compare: Some(Better::Higher),
        },
        Figure {
            name: "CPU vs qemu-img",
            decimals: 2,
            suffix: "x",
            compare: Some(Better::Higher),
        },
        Figure {
            name: "size vs qemu-img",
            decimals: 4,
            suffix: "x",
            compare: Some(Better::Lower),
        },
        Figure {
            name: "RSS vs qemu-img",
            decimals: 2,
            suffix: "x",
            compare: Some(Better::Lower),
        },
        Figure::shown("ours s", 2),
        Figure::shown("qemu-img s", 2),
        Figure::shown("ours CPU s", 2),
        Figure::shown("ours MiB", 1),
        Figure::shown("ours RSS MiB", 1),
    ],
};

/// Convert a raw image and compare with qemu-img (time, size, peak memory).
#[derive(clap::Args)]
pub struct BenchVmdk {
    /// Apparent size of the generated raw image.
    #[arg(long, default_value = "4GiB")]
    size: ByteSize,
    /// Share of the image left as holes (never written), in percent; the rest is split
    /// 10:30:10:15 between written zeros, text, binary and random data.
    #[arg(long, default_value_t = 35)]
    holes: u64,
    /// Runs of each tool.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Compression threads for our writer (0 = every core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Working directory (the raw image is kept there for the next run).
    #[arg(long)]
    dir: Option<Utf8PathBuf>,
}

/// Convert a raw image into a stream-optimized VMDK (what the benchmark runs as our side).
#[derive(clap::Args)]
pub struct VmdkConvert {
    raw: Utf8PathBuf,
    out: Utf8PathBuf,
    /// Compression threads (0 = every core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

impl VmdkConvert {
    pub fn run(self, _sh: &xshell::Shell) -> Result<()> {
        let opts = VmdkOptions {
            threads: self.threads,
            ..VmdkOptions::default()
        };
        let s = write_stream_optimized(&self.raw, &self.out, &opts)?;
        eprintln!(
            "wrote {}: {} bytes, capacity {}, {} grains",
            self.out,
            s.file_size,
            ByteSize(s.capacity),
            s.grains_written
        );
        Ok(())
    }
}

impl BenchVmdk {
    pub fn run(self, sh: &xshell::Shell) -> Result<()> {
        ensure!(self.runs > 0, "--runs must be at least 1");
        ensure!(self.holes <= 100, "--holes is a percentage (0 to 100)");
        let root = crate::util::workspace_root();
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| root.join("target/bench/vmdk"));
        sh.create_dir(&dir)?;
        eprintln!("building the release xtask…");
        cmd!(sh, "cargo build --release --quiet -p xtask").run()?;
        let ours_exe = root.join("target/release/xtask");
        let raw = dir.join(format!("mixed-{}-holes{}.raw", self.size, self.holes));
        make_raw_image(&raw, self.size.bytes(), self.holes)?;
        let allocated = allocated_bytes(&raw)?;
        let qemu_version = cmd!(sh, "qemu-img --version").read()?;
        let qemu_version = qemu_version.lines().next().unwrap_or("").to_string();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "raw image {raw}: {} apparent, {:.2} GiB allocated; {cores} cores; {qemu_version}",
            self.size,
            allocated as f64 / GIB as f64
        );

        let ours_out = dir.join("ours.vmdk");
        let qemu_out = dir.join("qemu.vmdk");
        let threads = self.threads.to_string();
        let mut ours: Vec<Measured> = Vec::new();
        let mut qemu: Vec<Measured> = Vec::new();
        for run in 0..self.runs {
            // Alternate who goes first so that neither always finds the page cache warmer.
            for ours_turn in [run % 2 == 0, run % 2 != 0] {
                if ours_turn {
                    let m = measure(cmd!(
                        sh,
                        "{ours_exe} vmdk-convert {raw} {ours_out} --threads {threads}"
                    ))?;
                    print_run("ours", run, &m);
                    ours.push(m);
                } else {
                    sh.remove_path(&qemu_out)?;
                    let m = measure(cmd!(sh, "qemu-img convert -f raw -O vmdk -o subformat=streamOptimized,adapter_type=lsilogic {raw} {qemu_out}"))?;
                    print_run("qemu-img", run, &m);
                    qemu.push(m);
                }
            }
        }
        // A benchmark of a wrong writer is worthless: the output must read back as the input.
        eprintln!("checking our output with qemu-img compare…");
        cmd!(sh, "qemu-img compare -q -f raw -F vmdk {raw} {ours_out}")
            .run()
            .context("our VMDK does not read back as the raw image")?;

        let ours_size = std::fs::metadata(&ours_out)?.len();
        let qemu_size = std::fs::metadata(&qemu_out)?.len();
        let secs =
            |v: &[Measured]| median(&v.iter().map(|m| m.wall.as_secs_f64()).collect::<Vec<_>>());
        let cpu =
            |v: &[Measured]| median(&v.iter().map(|m| m.cpu.as_secs_f64()).collect::<Vec<_>>());
        let rss = |v: &[Measured]| v.iter().map(|m| m.max_rss_bytes).max().unwrap_or(0);
        let (to, tq) = (secs(&ours), secs(&qemu));
        let (ro, rq) = (rss(&ours), rss(&qemu));
        println!();
        println!(
            "{:<10} {:>12} {:>12} {:>14} {:>12}",
            "", "time (med)", "cpu (med)", "output", "peak RSS"
        );
        println!(
            "{:<10} {:>11.2}s {:>11.2}s {:>14} {:>9.1} MiB",
            "ours",
            to,
            cpu(&ours),
            ours_size,
            ro as f64 / MIB as f64
        );
        println!(
            "{:<10} {:>11.2}s {:>11.2}s {:>14} {:>9.1} MiB",
            "qemu-img",
            tq,
            cpu(&qemu),
            qemu_size,
            rq as f64 / MIB as f64
        );
        println!(
            "ratios: {:.2}x faster (wall), {:.2}x less CPU time; output {:+.2}% vs qemu-img; peak RSS {:.2}x qemu-img's",
            tq / to,
            cpu(&qemu) / cpu(&ours),
            (ours_size as f64 / qemu_size as f64 - 1.0) * 100.0,
            ro as f64 / rq as f64
        );
        let entry = Entry {
            workload: "stream-optimized VMDK".into(),
            values: vec![
                Some(tq / to),
                Some(cpu(&qemu) / cpu(&ours)),
                Some(ours_size as f64 / qemu_size as f64),
                Some(ro as f64 / rq as f64),
                Some(to),
                Some(tq),
                Some(cpu(&ours)),
                Some(ours_size as f64 / MIB as f64),
                Some(ro as f64 / MIB as f64),
            ],
            params: format!(
                "size={} holes={}% runs={} threads={} cores={cores}",
                self.size, self.holes, self.runs, self.threads
            ),
        };
        super::history::record(sh, &HISTORY, &[entry])
    }
}

fn print_run(who: &str, run: usize, m: &Measured) {
    println!(
        "run {} {:<9} {:>7.2}s wall {:>7.2}s cpu {:>8.1} MiB peak RSS",
        run + 1,
        who,
        m.wall.as_secs_f64(),
        m.cpu.as_secs_f64(),
        m.max_rss_bytes as f64 / MIB as f64
    );
}

fn allocated_bytes(path: &Utf8Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

/// What a region of the generated disk holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Region {
    /// Never written: a hole in the sparse file.
    Hole,
    /// Written zeros (freed blocks of a file system, zeroed swap).
    Zeros,
    /// Log-file and configuration-like text.
    Text,
    /// Executable-like: small integers, tables, padding; compresses about 2:1.
    Binary,
    /// Already-compressed data (packages, images).
    Random,
}

/// A fixed xorshift generator: the same image on every machine, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes (once; reused while its size matches) a raw image of `size` bytes with a realistic
/// mix of regions: `holes` percent holes, the rest written zeros, text, binary and random data
/// in the proportions 10:30:10:15.
fn make_raw_image(path: &Utf8Path, size: u64, holes: u64) -> Result<()> {
    let stamp = path.with_extension("raw.done");
    if std::fs::metadata(path).is_ok_and(|m| m.len() == size) && stamp.exists() {
        eprintln!("reusing {path}");
        return Ok(());
    }
    eprintln!("writing {path}…");
    let _ = std::fs::remove_file(&stamp);
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {path}"))?;
    file.set_len(size)?;
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut buf = Vec::new();
    let mut at = 0u64;
    while at < size {
        let kind = if rng.below(100) < holes {
            Region::Hole
        } else {
            match rng.below(65) {
                0..=9 => Region::Zeros,
                10..=39 => Region::Text,
                40..=49 => Region::Binary,
                _ => Region::Random,
            }
        };
        // 64 KiB to 8 MiB, not grain-aligned, as files are not.
        let len = (64 * 1024 + rng.below(8 * MIB)).min(size - at);
        if kind != Region::Hole {
            fill(&mut buf, len as usize, kind, &mut rng);
            file.write_all_at(&buf, at)
                .with_context(|| format!("cannot write {path}"))?;
        }
        at += len;
    }
    file.sync_all()?;
    std::fs::write(&stamp, b"")?;
    Ok(())
}

fn fill(buf: &mut Vec<u8>, len: usize, kind: Region, rng: &mut XorShift) {
    const WORDS: &[&str] = &[
        "kernel:",
        "systemd[1]:",
        "Started",
        "Stopping",
        "session",
        "user",
        "root",
        "eth0:",
        "link",
        "up",
        "down",
        "mounted",
        "filesystem",
        "ext4",
        "error",
        "warning",
        "info",
        "/var/log/messages",
        "/usr/lib/x86_64-linux-gnu",
        "replication",
        "journal",
        "sync",
        "the",
        "of",
        "to",
        "and",
        "a",
        "in",
        "for",
        "on",
        "with",
        "from",
        "block",
        "device",
        "sda1",
        "retention",
        "checkpoint",
        "0x7fffe3a2",
        "=",
        "{",
        "}",
        "true",
        "false",
    ];
    buf.clear();
    match kind {
        Region::Hole | Region::Zeros => buf.resize(len, 0),
        Region::Random => {
            while buf.len() < len {
                buf.extend_from_slice(&rng.next().to_le_bytes());
            }
        }
        Region::Text => {
            while buf.len() < len {
                let r = rng.next();
                buf.extend_from_slice(
                    format!(
                        "Nov 26 {:02}:{:02}:{:02} mt-appliance ",
                        r % 24,
                        (r >> 8) % 60,
                        (r >> 16) % 60
                    )
                    .as_bytes(),
                );
                for _ in 0..4 + (r >> 24) % 10 {
                    buf.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
                    buf.push(b' ');
                }
                buf.extend_from_slice(format!("{}\n", (r >> 32) % 100_000).as_bytes());
            }
        }
        Region::Binary => {
            while buf.len() < len {
                let r = rng.next();
                // Mostly small little-endian integers, with runs of padding and opcodes.
                match r % 4 {
                    0 => buf.extend_from_slice(&((r >> 8) as u32 & 0xffff).to_le_bytes()),
                    1 => buf.extend_from_slice(&[0x48, 0x89, (r >> 8) as u8 & 0x3f, 0xe5]),
                    2 => buf.extend_from_slice(&[0; 8]),
                    _ => buf.extend_from_slice(&(r >> 16).to_le_bytes()[..4]),
                }
            }
        }
    }
    buf.truncate(len);
}
