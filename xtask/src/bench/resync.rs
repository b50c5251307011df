//! `cargo xtask bench resync`: delta resync of one image pair by `mt-agent send --delta` over
//! loopback (into a real journal on disk) against `rsync -I --inplace --no-whole-file` on the
//! same files, at 1% and 10% changed 64 KiB blocks, in one run; then a full copy by
//! `mt-agent send --full` against the disk's direct read speed. Prints time ratios (median of
//! `--rounds` alternating runs, with their spread), bytes on the wire against changed bytes,
//! throughput and the full copy's write amplification (bytes `serve` and `send` sent to the
//! storage layer / image size, from the kernel's I/O accounting), then the goals, and appends the
//! figures to the history (`docs/benchmarks.md`). Both sides start from a warm page cache.

use super::history::{Better, Entry, Figure, Schema};
use super::{children_written, median, process_written, Goal};
use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::process::{Child, Stdio};
use std::time::Instant;
use xshell::{cmd, Shell};

/// The block of a delta resync (what `change_blocks` rewrites and what an image is a multiple of).
pub(super) const BLOCK: u64 = 64 << 10;
const MIB: f64 = (1 << 20) as f64;

/// The delta resyncs: the share of blocks changed, and the goal of mt-agent's speedup over rsync.
const DELTAS: [(u64, Goal); 2] = [(1, Goal::AtLeast(2.5)), (10, Goal::AtLeast(4.0))];
/// Goal: the bytes on the wire of a delta resync / (changed bytes + hash traffic).
const GOAL_WIRE: Goal = Goal::AtMost(1.05);
/// Goal: the full copy's throughput / a direct read of the same disk.
const GOAL_FULL: Goal = Goal::AtLeast(0.9);
/// Goal: the write amplification of a first (full) copy.
const GOAL_WA_FIRST_COPY: Goal = Goal::AtMost(1.05);

/// The bench's table in `docs/benchmarks.md`.
pub(super) const HISTORY: Schema = Schema {
    bench: "resync",
    about: "`cargo xtask bench resync`: speedup = the baseline's time / mt-agent's (rsync \
            -I --inplace --no-whole-file for a delta, a direct read of the disk for the full copy); \
            wire/(chg+hash) = bytes on the wire / (changed bytes + hash traffic); WA = bytes sent \
            to storage / image size.",
    figures: &[
        Figure {
            name: "speedup",
            decimals: 2,
            suffix: "x",
            compare: Some(Better::Higher),
        },
        Figure {
            name: "wire/(chg+hash)",
            decimals: 3,
            suffix: "",
            compare: Some(Better::Lower),
        },
        Figure {
            name: "WA",
            decimals: 2,
            suffix: "",
            compare: Some(Better::Lower),
        },
        Figure::shown("mt-agent s", 2),
        Figure::shown("baseline s", 2),
        Figure::shown("changed MiB", 1),
        Figure::shown("wire MiB", 1),
        Figure::shown("hash KiB", 1),
        Figure::shown("rsync MiB", 1),
    ],
};

/// Delta resync and full copy of mt-agent vs rsync.
#[derive(clap::Args)]
pub struct ResyncBench {
    /// Image size (e.g. 1GiB, 4GiB).
    #[arg(long, default_value = "1GiB")]
    size: appliance::units::ByteSize,
    /// Working directory [default: target/bench-resync].
    #[arg(long)]
    dir: Option<Utf8PathBuf>,
    /// Rounds of each measurement (the median is reported, with the spread of the ratios).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}
fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// xorshift64*: fast reproducible image contents.
pub(super) struct Rng(pub(super) u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

pub(super) fn random_image(path: &Utf8Path, size: u64, rng: &mut Rng) -> Result<()> {
    let mut f = std::io::BufWriter::with_capacity(
        4 << 20,
        std::fs::File::create(path).with_context(|| format!("cannot create {path}"))?,
    );
    let mut buf = vec![0u8; 4 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// Rewrites `percent`% of the 64 KiB blocks of `path` (distinct, random); returns the bytes.
pub(super) fn change_blocks(
    path: &Utf8Path,
    size: u64,
    percent: u64,
    rng: &mut Rng,
) -> Result<u64> {
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    let blocks = size / BLOCK;
    let mut chosen = std::collections::BTreeSet::new();
    while (chosen.len() as u64) < blocks * percent / 100 {
        chosen.insert(rng.next() % blocks);
    }
    let mut buf = vec![0u8; BLOCK as usize];
    for b in &chosen {
        rng.fill(&mut buf);
        f.write_all_at(&buf, b * BLOCK)?;
    }
    f.sync_all()?;
    Ok(chosen.len() as u64 * BLOCK)
}

/// Reads a file to warm the page cache (both contenders then start equal).
pub(super) fn warm(path: &Utf8Path) -> Result<()> {
    std::io::copy(&mut std::fs::File::open(path)?, &mut std::io::sink())?;
    Ok(())
}

pub(super) fn same(a: &Utf8Path, b: &Utf8Path) -> Result<()> {
    let (fa, fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut x, mut y) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
    let mut at = 0u64;
    loop {
        let n = fa.read_at(&mut x, at)?;
        let m = fb.read_at(&mut y, at)?;
        if n != m || x[..n] != y[..m] {
            bail!("{a} and {b} differ near byte {at}");
        }
        if n == 0 {
            return Ok(());
        }
        at += n as u64;
    }
}

/// rsync's statistics: (seconds, literal data, bytes sent + received).
fn rsync(sh: &Shell, src: &Utf8Path, dst: &Utf8Path) -> Result<(f64, u64, u64)> {
    let t = Instant::now();
    let out = cmd!(sh, "rsync -I --inplace --no-whole-file --stats {src} {dst}").read()?;
    let secs = t.elapsed().as_secs_f64();
    let num = |label: &str| -> Result<u64> {
        out.lines()
            .find_map(|l| l.strip_prefix(label))
            .and_then(|v| v.split_whitespace().next())
            .map(|v| v.replace(',', ""))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {label:?} in rsync --stats:\n{out}"))
    };
    Ok((
        secs,
        num("Literal data: ")?,
        num("Total bytes sent: ")? + num("Total bytes received: ")?,
    ))
}

/// Direct (uncached) read speed of the disk under `path`, by dd with O_DIRECT.
fn direct_read_mib_s(sh: &Shell, path: &Utf8Path, size: u64) -> Result<f64> {
    let t = Instant::now();
    cmd!(
        sh,
        "dd if={path} of=/dev/null bs=4M iflag=direct status=none"
    )
    .run()?;
    Ok(size as f64 / MIB / t.elapsed().as_secs_f64())
}

/// A running `mt-agent serve` for a benchmark, on 127.0.0.1 (an ephemeral port), its journals in
/// `DIR/retention` on the disk of the images; killed when dropped.
pub(super) struct Master {
    process: Child,
    /// 127.0.0.1:PORT.
    pub(super) addr: String,
    pub(super) config: Utf8PathBuf,
    pub(super) retention: Utf8PathBuf,
    pub(super) passphrase: Utf8PathBuf,
    /// serve's state directory (keys, authorised senders).
    state: Utf8PathBuf,
}

impl Master {
    pub(super) fn start(sh: &Shell, agent: &Utf8Path, dir: &Utf8Path) -> Result<Master> {
        // serve refuses to start unless its configured retention mount is a mount point of its
        // own; /dev/shm is one on every Linux host. The journals live in dir (--retention), on
        // the same disk as the images.
        let (_, def) = crate::util::load_definition(None)?;
        let cfg = mt_agent::config::AgentConfig {
            retention_mount: "/dev/shm".into(),
            retention_disk: None,
            ..def.agent_config()
        };
        let config = dir.join("agent.toml");
        std::fs::write(&config, toml::to_string(&cfg)?)?;
        let pass = dir.join("passphrase");
        std::fs::write(&pass, "bench passphrase\n")?;
        std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let (ret, state) = (dir.join("retention"), dir.join("server-state"));
        sh.create_dir(&ret)?;
        let mut child = std::process::Command::from(cmd!(
            sh,
            "{agent} serve --config {config} --listen 127.0.0.1:0 --retention {ret} --state {state} --passphrase-file {pass}"
        ));
        let mut process = child
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("serve.log"))?)
            .spawn()
            .context("cannot start mt-agent serve")?;
        let mut line = String::new();
        BufReader::new(process.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let Some(port) = line
            .split("port=")
            .nth(1)
            .and_then(|p| p.split_whitespace().next())
        else {
            let _ = process.kill();
            let _ = process.wait();
            bail!("no readiness line from mt-agent serve: {line:?}");
        };
        Ok(Master {
            process,
            addr: format!("127.0.0.1:{port}"),
            config,
            retention: ret,
            passphrase: pass,
            state,
        })
    }

    /// Lets the sender whose state directory is `sender` write `group` (a group created after
    /// its enrolment): `mt-agent senders allow`.
    pub(super) fn allow(
        &self,
        sh: &Shell,
        agent: &Utf8Path,
        sender: &Utf8Path,
        group: &str,
    ) -> Result<()> {
        let text = std::fs::read_to_string(sender.join("key"))?;
        let key = text
            .lines()
            .nth(1)
            .context("the sender's key file has no public key")?;
        let state = &self.state;
        cmd!(
            sh,
            "{agent} senders allow {key} --group {group} --state {state}"
        )
        .quiet()
        .ignore_stdout()
        .run()?;
        Ok(())
    }

    pub(super) fn pid(&self) -> u32 {
        self.process.id()
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl ResyncBench {
    pub fn run(self, sh: &Shell) -> Result<()> {
        if self.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        let size = self.size.bytes() - self.size.bytes() % BLOCK;
        let root = crate::util::workspace_root();
        let dir = self.dir.clone().unwrap_or(root.join("target/bench-resync"));
        if sh.path_exists(&dir) {
            sh.remove_path(&dir)?;
        }
        sh.create_dir(dir.join("retention"))?;
        eprintln!("building mt-agent (release)");
        cmd!(sh, "cargo build --release --quiet -p mt-agent").run()?;
        let agent = root.join("target/release/mt-agent");
        eprintln!("writing a {} MiB image pair", size >> 20);
        let mut rng = Rng(0x0b5e_55ed);
        let base = dir.join("base.img");
        random_image(&base, size, &mut rng)?;
        std::fs::File::open(&base)?.sync_all()?;

        let master = Master::start(sh, &agent, &dir)?;
        let to = master.addr.clone();
        let sender = dir.join("sender-state");
        let (config, ret, pass) = (&master.config, &master.retention, &master.passphrase);
        cmd!(
            sh,
            "{agent} enrol --to {to} --passphrase-file {pass} --state {sender}"
        )
        .quiet()
        .ignore_stdout()
        .run()?;

        println!(
            "delta resync of a {} MiB image over loopback, journal on disk, page cache warm; {} rounds, median",
            size >> 20,
            self.rounds
        );
        println!(
            "{:>7} {:>10} {:>10} {:>8} {:>15} {:>12} {:>12} {:>10} {:>12} {:>12}",
            "changed",
            "mt-agent s",
            "rsync s",
            "speedup",
            "(min..max)",
            "changed MiB",
            "wire MiB",
            "wire/chg",
            "hash KiB",
            "rsync MiB"
        );
        let params = format!(
            "size={} rounds={}",
            appliance::units::ByteSize(size),
            self.rounds
        );
        let (mut entries, mut goals) = (Vec::new(), Vec::new());
        for (percent, goal) in DELTAS {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            let (mut changed, mut wire, mut hashes, mut rwire) = (0, 0, 0, 0);
            for round in 0..self.rounds {
                let src = dir.join(format!("src-{percent}.img"));
                let target = dir.join(format!("target-{percent}.img"));
                let rdst = dir.join(format!("rsync-{percent}.img"));
                for p in [&src, &target, &rdst] {
                    std::fs::copy(&base, p)?;
                    // The agent flushes what it writes; nothing dirty from the setup may be billed to it.
                    std::fs::File::open(p)?.sync_all()?;
                }
                changed = change_blocks(&src, size, percent, &mut rng)?;
                let group = format!("g{percent}-{round}");
                cmd!(sh, "{agent} group create {group} --disk d0={target} --config {config} --retention {ret}")
                    .quiet()
                    .ignore_stdout()
                    .run()?;
                master.allow(sh, &agent, &sender, &group)?;
                for p in [&src, &target, &rdst] {
                    warm(p)?;
                }
                let t = Instant::now();
                let report = cmd!(
                    sh,
                    "{agent} send {group} --to {to} --state {sender} --delta --disk d0={src} --json"
                )
                .quiet()
                .ignore_stderr()
                .read()?;
                ours.push(t.elapsed().as_secs_f64());
                let r: serde_json::Value = serde_json::from_str(&report)?;
                wire = r["wire_bytes_sent"].as_u64().unwrap_or(0)
                    + r["wire_bytes_received"].as_u64().unwrap_or(0);
                hashes = r["hash_bytes_received"].as_u64().unwrap_or(0);
                if r["changed_bytes"].as_u64() != Some(changed) {
                    bail!(
                        "mt-agent sent {} changed bytes, {changed} changed",
                        r["changed_bytes"]
                    );
                }
                same(&src, &target)?;
                let (secs, _literal, rw) = rsync(sh, &src, &rdst)?;
                theirs.push(secs);
                rwire = rw;
                same(&src, &rdst)?;
                for p in [&src, &target, &rdst] {
                    std::fs::remove_file(p)?;
                }
            }
            let ratios: Vec<f64> = theirs.iter().zip(&ours).map(|(t, o)| t / o).collect();
            let speedup = median(&theirs) / median(&ours);
            let wire_ratio = wire as f64 / (changed + hashes) as f64;
            goals.push(format!(
                "{percent}% delta {}, its wire/(changed+hash) {}",
                goal.judge(speedup, "x"),
                GOAL_WIRE.judge(wire_ratio, "")
            ));
            entries.push(Entry {
                workload: format!("{percent}% delta vs rsync"),
                values: vec![
                    Some(speedup),
                    Some(wire_ratio),
                    None,
                    Some(median(&ours)),
                    Some(median(&theirs)),
                    Some(changed as f64 / MIB),
                    Some(wire as f64 / MIB),
                    Some(hashes as f64 / 1024.0),
                    Some(rwire as f64 / MIB),
                ],
                params: params.clone(),
            });
            println!(
                "{:>6}% {:>10.2} {:>10.2} {:>7.2}x {:>15} {:>12.1} {:>12.1} {:>10.3} {:>12.1} {:>12.1}",
                percent,
                median(&ours),
                median(&theirs),
                speedup,
                format!("({:.2}..{:.2})", min(&ratios), max(&ratios)),
                changed as f64 / MIB,
                wire as f64 / MIB,
                wire_ratio,
                hashes as f64 / 1024.0,
                rwire as f64 / MIB,
            );
        }

        // Full copy into a new, empty target, against reading the disk directly: alternating.
        let (mut full, mut read, mut full_secs, mut read_secs, mut wa) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let serve = master.pid().to_string();
        for round in 0..self.rounds {
            let target = dir.join(format!("target-full-{round}.img"));
            std::fs::File::create(&target)?.set_len(size)?;
            let group = format!("gfull-{round}");
            cmd!(
                sh,
                "{agent} group create {group} --disk d0={target} --config {config} --retention {ret}"
            )
            .quiet()
            .ignore_stdout()
            .run()?;
            master.allow(sh, &agent, &sender, &group)?;
            let r = direct_read_mib_s(sh, &base, size)?;
            read.push(r);
            read_secs.push(size as f64 / MIB / r);
            warm(&base)?;
            // What serve (running) and send (a child waited for) send to the storage layer.
            let written = || -> Result<u64> { Ok(process_written(&serve)? + children_written()) };
            let before = written()?;
            let t = Instant::now();
            cmd!(
                sh,
                "{agent} send {group} --to {to} --state {sender} --full --disk d0={base} --json"
            )
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()?;
            let secs = t.elapsed().as_secs_f64();
            wa.push((written()? - before) as f64 / size as f64);
            full_secs.push(secs);
            full.push(size as f64 / MIB / secs);
            same(&base, &target)?;
            std::fs::remove_file(&target)?;
        }
        let ratios: Vec<f64> = full.iter().zip(&read).map(|(f, r)| f / r).collect();
        let ratio = median(&full) / median(&read);
        println!(
            "full copy: {:.0} MiB/s through the journal (fsynced); direct read of the disk {:.0} MiB/s; ratio {:.2} (rounds {:.2}..{:.2}); write amplification {:.2}",
            median(&full),
            median(&read),
            ratio,
            min(&ratios),
            max(&ratios),
            median(&wa)
        );
        goals.push(format!(
            "full copy {}, its write amplification {}",
            GOAL_FULL.judge(ratio, "x"),
            GOAL_WA_FIRST_COPY.judge(median(&wa), "")
        ));
        println!("goals: {}", goals.join("; "));
        entries.push(Entry {
            workload: "full copy vs direct read".into(),
            values: vec![
                Some(ratio),
                None,
                Some(median(&wa)),
                Some(median(&full_secs)),
                Some(median(&read_secs)),
                None,
                None,
                None,
                None,
            ],
            params,
        });
        drop(master);
        sh.remove_path(&dir)?;
        super::history::record(sh, &HISTORY, &entries)
    }
}
