//! `cargo xtask bench agent`: how fast `mt-agent apply` lands a change stream on its targets,
//! with the journal on the same file system, against writing the same data directly (plain
//! writes + fdatasync at the same cadence) and against fio, for a sequential 1 MiB stream and
//! 4 KiB random writes. Prints MiB/s, the ratios, and the write amplification measured by the
//! kernel's I/O accounting (bytes sent to the storage layer / payload bytes).

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use mt_agent::replication::frame::{Frame, FrameReader, FrameWriter, TagKind};
use mt_agent::replication::journal::clock::{Clock, SystemClock};
use mt_agent::replication::journal::sim::SimRng;
use mt_agent::replication::journal::Lsn;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::Instant;
use xshell::cmd;

const MIB: u64 = 1 << 20;

/// Apply throughput of mt-agent vs plain writes and fio.
#[derive(clap::Args)]
pub struct AgentBench {
    /// Size of the sequential stream (1 MiB writes).
    #[arg(long, default_value_t = 512)]
    seq_mib: u64,
    /// Payload of the random stream (4 KiB writes).
    #[arg(long, default_value_t = 64)]
    random_mib: u64,
    /// Target disk size (the random writes land anywhere in it).
    #[arg(long, default_value_t = 512)]
    disk_mib: u64,
    /// Group commit / fdatasync cadence, the same for every contender.
    #[arg(long, default_value_t = 8)]
    batch_mib: u64,
    /// Working directory (journal and targets share its file system) [default: target/bench-agent].
    #[arg(long)]
    dir: Option<Utf8PathBuf>,
    /// Runs of each contender; the fastest counts.
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// Keep the recorded streams (stream-N.mtf) for other tools.
    #[arg(long)]
    keep_streams: bool,
}

/// One contender's run.
struct Measured {
    secs: f64,
    written: u64,
}

fn best(a: Option<Measured>, b: Measured) -> Option<Measured> {
    match a {
        Some(a) if a.secs <= b.secs => Some(a),
        _ => Some(b),
    }
}

impl Measured {
    fn mib_s(&self, payload: u64) -> f64 {
        payload as f64 / MIB as f64 / self.secs
    }
}

/// Bytes this process's waited-for children sent to the storage layer (getrusage counts
/// 512-byte blocks from the same accounting as /proc/<pid>/io write_bytes).
fn children_written() -> u64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    ru.ru_oublock as u64 * 512
}

/// `write_bytes` of this process, from /proc/self/io.
fn self_written() -> Result<u64> {
    let io = std::fs::read_to_string("/proc/self/io").context("cannot read /proc/self/io")?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .context("no write_bytes in /proc/self/io")
}

impl AgentBench {
    pub fn run(self, sh: &xshell::Shell) -> Result<()> {
        let root = crate::util::workspace_root();
        let dir = self.dir.clone().unwrap_or(root.join("target/bench-agent"));
        if sh.path_exists(&dir) {
            sh.remove_path(&dir)?;
        }
        sh.create_dir(&dir)?;
        eprintln!("building mt-agent (release)");
        cmd!(sh, "cargo build --release --quiet -p mt-agent").run()?;
        let agent = root.join("target/release/mt-agent");
        let (_, def) = crate::util::load_definition(None)?;
        let cfg = mt_agent::config::AgentConfig {
            retention_mount: dir.join("retention"),
            retention_disk: None,
            ..def.agent_config()
        };
        crate::util::write_atomic(&dir.join("agent.toml"), toml::to_string(&cfg)?.as_bytes())?;
        let disk = self.disk_mib * MIB;
        let target = dir.join("disk.img");
        eprintln!(
            "filling a {} MiB target with non-zero data (so the undo journal saves real blocks)",
            self.disk_mib
        );
        fill(&target, disk)?;
        let fio = which_fio(sh);
        let batch = self.batch_mib * MIB;

        let mut rows = Vec::new();
        let runs = [
            ("sequential 1 MiB", self.seq_mib * MIB, MIB, true),
            ("random 4 KiB", self.random_mib * MIB, 4096, true),
        ];
        for (name, payload, bs, tagged) in runs {
            let stream = dir.join(format!("stream-{}.mtf", rows.len()));
            eprintln!("recording the {name} stream ({} MiB)", payload / MIB);
            record(&stream, disk, payload, bs, tagged)?;
            // Interleaved repetitions, best of each: the machine may be shared.
            let (mut raw, mut ag, mut fio_run): (
                Option<Measured>,
                Option<Measured>,
                Option<Measured>,
            ) = (None, None, None);
            for rep in 0..self.repeat {
                eprintln!("{name}: run {} of {}", rep + 1, self.repeat);
                raw = best(raw, raw_apply(&stream, &target, batch)?);
                ag = best(ag, agent_apply(sh, &agent, &dir, &target, &stream, batch)?);
                if let (Some(f), true) = (&fio, tagged) {
                    fio_run = best(
                        fio_run,
                        fio_apply(sh, f, &target, disk, payload, bs, batch)?,
                    );
                }
            }
            let (raw, ag) = (raw.context("no run")?, ag.context("no run")?);
            if !self.keep_streams {
                sh.remove_path(&stream)?;
            }
            rows.push((name, payload, raw, ag, fio_run));
        }
        println!();
        println!("mt-agent apply vs writing the same data directly (journal and target on one file system,");
        println!("fdatasync every {} MiB for all, best of {} runs); write amplification = bytes sent to storage / payload", self.batch_mib, self.repeat);
        println!(
            "{:<18} {:>10} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "workload",
            "raw MiB/s",
            "agent MiB/s",
            "fio MiB/s",
            "agent/raw",
            "agent/fio",
            "WA raw",
            "WA agent"
        );
        for (name, payload, raw, ag, fio_run) in &rows {
            let fio_s = fio_run
                .as_ref()
                .map_or("-".into(), |f| format!("{:.0}", f.mib_s(*payload)));
            let vs_fio = fio_run.as_ref().map_or("-".into(), |f| {
                format!("{:.2}x", ag.mib_s(*payload) / f.mib_s(*payload))
            });
            println!(
                "{:<18} {:>10.0} {:>12.0} {:>10} {:>8.2}x {:>9} {:>9.2} {:>9.2}",
                name,
                raw.mib_s(*payload),
                ag.mib_s(*payload),
                fio_s,
                ag.mib_s(*payload) / raw.mib_s(*payload),
                vs_fio,
                raw.written as f64 / *payload as f64,
                ag.written as f64 / *payload as f64,
            );
        }
        let goal = |i: usize, want: f64| {
            let (_, p, raw, ag, _) = &rows[i];
            let r = ag.mib_s(*p) / raw.mib_s(*p);
            format!(
                "{r:.2}x (goal >= {want}x: {})",
                if r >= want { "met" } else { "MISSED" }
            )
        };
        println!(
            "goals: sequential {}, random 4 KiB {}",
            goal(0, 0.4),
            goal(1, 0.5)
        );
        if fio.is_none() {
            println!("fio is not installed: its column is empty (apt-get install fio)");
        }
        Ok(())
    }
}

fn which_fio(sh: &xshell::Shell) -> Option<String> {
    cmd!(sh, "fio --version")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .map(|_| "fio".to_string())
}

fn fill(target: &Utf8Path, len: u64) -> Result<()> {
    let f = std::fs::File::create(target).with_context(|| format!("cannot create {target}"))?;
    let mut rng = SimRng::new(1);
    let mut buf = vec![0u8; 8 * MIB as usize];
    let mut at = 0;
    while at < len {
        rng.fill(&mut buf);
        f.write_all_at(&buf, at)?;
        at += buf.len() as u64;
    }
    f.sync_all()?;
    Ok(())
}

/// Records a stream: a start frame, with `tagged` an app-consistent tag (so the agent keeps undo
/// for it, as in steady state; without, the stream is an initial copy before any point), then
/// `payload` bytes of `bs`-sized writes, sequential (1 MiB) or random (4 KiB).
fn record(path: &Utf8Path, disk: u64, payload: u64, bs: u64, tagged: bool) -> Result<()> {
    let mut w = FrameWriter::new(std::io::BufWriter::with_capacity(
        4 << 20,
        std::fs::File::create(path).with_context(|| format!("cannot create {path}"))?,
    ));
    let now = SystemClock.now();
    w.write(&Frame::Start {
        group: "bench".into(),
        disks: vec![("d0".into(), disk)],
    })?;
    let first = if tagged {
        w.write(&Frame::Tag {
            lsn: Lsn(1),
            source_time: now,
            kind: TagKind::App,
            name: "start".into(),
        })?;
        2
    } else {
        1
    };
    let mut rng = SimRng::new(bs);
    let mut data = vec![0u8; bs as usize];
    for i in 0..payload / bs {
        let off = if bs >= MIB {
            (i * bs) % disk
        } else {
            rng.below(disk / bs) * bs
        };
        rng.fill(&mut data);
        w.write(&Frame::Write {
            lsn: Lsn(i + first),
            source_time: now,
            disk: 0,
            offset: off,
            data: data.clone(),
            resync: false,
        })?;
    }
    w.into_inner().flush()?;
    Ok(())
}

/// The baseline: decode the same frames and pwrite them, fdatasync every `batch` bytes.
fn raw_apply(stream: &Utf8Path, target: &Utf8Path, batch: u64) -> Result<Measured> {
    let t = std::fs::OpenOptions::new().write(true).open(target)?;
    let before = self_written()?;
    let start = Instant::now();
    let mut r = FrameReader::new(std::io::BufReader::with_capacity(
        4 << 20,
        std::fs::File::open(stream)?,
    ));
    let mut since_sync = 0;
    while let Some(f) = r.next_frame()? {
        if let Frame::Write { offset, data, .. } = f {
            t.write_all_at(&data, offset)?;
            since_sync += data.len() as u64;
            if since_sync >= batch {
                t.sync_data()?;
                since_sync = 0;
            }
        }
    }
    t.sync_data()?;
    let secs = start.elapsed().as_secs_f64();
    Ok(Measured {
        secs,
        written: self_written()? - before,
    })
}

fn agent_apply(
    sh: &xshell::Shell,
    agent: &Utf8Path,
    dir: &Utf8Path,
    target: &Utf8Path,
    stream: &Utf8Path,
    batch: u64,
) -> Result<Measured> {
    let retention = dir.join("retention");
    if sh.path_exists(&retention) {
        sh.remove_path(&retention)?;
    }
    sh.create_dir(&retention)?;
    let config = dir.join("agent.toml");
    let disk = format!("d0={target}");
    cmd!(
        sh,
        "{agent} group create bench --disk {disk} --config {config} --retention {retention}"
    )
    .quiet()
    .ignore_stdout()
    .run()?;
    let batch = batch.to_string();
    let before = children_written();
    let start = Instant::now();
    let st = std::process::Command::new(agent)
        .args([
            "apply",
            "bench",
            "--from",
            stream.as_str(),
            "--batch",
            &batch,
        ])
        .args([
            "--config",
            config.as_str(),
            "--retention",
            retention.as_str(),
        ])
        .stdout(std::process::Stdio::null())
        .status()?;
    let secs = start.elapsed().as_secs_f64();
    if !st.success() {
        bail!("mt-agent apply failed ({st})");
    }
    Ok(Measured {
        secs,
        written: children_written() - before,
    })
}

/// fio writing the same amount with the same block size and fdatasync cadence.
fn fio_apply(
    sh: &xshell::Shell,
    fio: &str,
    target: &Utf8Path,
    disk: u64,
    payload: u64,
    bs: u64,
    batch: u64,
) -> Result<Measured> {
    let rw = if bs >= MIB { "write" } else { "randwrite" };
    let (size, io_size, bs_s, every) = (
        disk.to_string(),
        payload.to_string(),
        bs.to_string(),
        (batch / bs).to_string(),
    );
    let before = children_written();
    let out = cmd!(
        sh,
        "{fio} --name=bench --filename={target} --rw={rw} --bs={bs_s} --size={size} --io_size={io_size} --fdatasync={every} --ioengine=psync --randrepeat=0 --norandommap --output-format=json"
    )
    .quiet()
    .read()?;
    let v: serde_json::Value = serde_json::from_str(&out).context("fio printed no JSON")?;
    let job = &v["jobs"][0]["write"];
    let bytes = job["io_bytes"]
        .as_u64()
        .context("fio JSON has no write io_bytes")?;
    let ms = job["runtime"].as_u64().context("fio JSON has no runtime")?;
    Ok(Measured {
        secs: (ms as f64 / 1000.0) * payload as f64 / bytes.max(1) as f64,
        written: children_written() - before,
    })
}
