//! `cargo xtask bench agent`: how fast `mt-agent apply` lands a change stream on its targets,
//! with the journal on the same file system, against writing the same data directly (plain
//! writes + fdatasync at the same cadence) and against fio, for a sequential 1 MiB stream and
//! 4 KiB random writes. Rounds alternate the order of the contenders; the median of each is
//! reported. Prints MiB/s, the ratios, and the write amplification measured by the kernel's I/O
//! accounting (bytes sent to the storage layer / payload bytes), then the goals, and appends the
//! figures to the history (`docs/benchmarks.md`).

use super::history::{Better, Entry, Figure, Schema};
use super::{children_written, median, process_written, Goal};
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

/// Goal: agent/raw of the sequential 1 MiB stream.
const GOAL_SEQUENTIAL: Goal = Goal::AtLeast(0.8);
/// Goal: agent/raw of the random 4 KiB stream.
const GOAL_RANDOM: Goal = Goal::AtLeast(0.8);
/// Goal: the agent's write amplification on a change stream (both streams are).
const GOAL_WA: Goal = Goal::AtMost(2.0);

/// The bench's table in `docs/benchmarks.md`.
pub(super) const HISTORY: Schema = Schema {
    bench: "agent",
    about:
        "`cargo xtask bench agent`: `mt-agent apply` of a change stream against plain writes of \
            the same data (raw) and fio; WA = bytes sent to storage / payload.",
    figures: &[
        Figure {
            name: "agent/raw",
            decimals: 2,
            suffix: "x",
            compare: Some(Better::Higher),
        },
        Figure {
            name: "agent/fio",
            decimals: 2,
            suffix: "x",
            compare: Some(Better::Higher),
        },
        Figure {
            name: "WA agent",
            decimals: 2,
            suffix: "",
            compare: Some(Better::Lower),
        },
        Figure::shown("raw MiB/s", 0),
        Figure::shown("agent MiB/s", 0),
        Figure::shown("fio MiB/s", 0),
        Figure::shown("WA raw", 2),
    ],
};

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
    /// Rounds of each contender, alternating their order; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Keep the recorded streams (stream-N.mtf) for other tools.
    #[arg(long)]
    keep_streams: bool,
}

/// One contender's run.
struct Measured {
    secs: f64,
    written: u64,
}

/// The medians of one contender's runs.
struct Medians {
    secs: f64,
    written: u64,
}

impl Medians {
    fn of(runs: &[Measured]) -> Option<Medians> {
        if runs.is_empty() {
            return None;
        }
        Some(Medians {
            secs: median(&runs.iter().map(|m| m.secs).collect::<Vec<_>>()),
            written: median(&runs.iter().map(|m| m.written).collect::<Vec<_>>()),
        })
    }

    fn mib_s(&self, payload: u64) -> f64 {
        payload as f64 / MIB as f64 / self.secs
    }

    fn wa(&self, payload: u64) -> f64 {
        self.written as f64 / payload as f64
    }
}

/// The contenders, in the order of the first round (each later round rotates it by one).
#[derive(Clone, Copy)]
enum Contender {
    Raw,
    Agent,
    Fio,
}

impl AgentBench {
    pub fn run(self, sh: &xshell::Shell) -> Result<()> {
        if self.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
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
            let mut contenders = vec![Contender::Raw, Contender::Agent];
            if let (Some(_), true) = (&fio, tagged) {
                contenders.push(Contender::Fio);
            }
            // Rounds rotate the order: the machine may be shared, and no contender may always
            // meet the page cache or the disk as the one before left them.
            let (mut raw, mut ag, mut fio_runs) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..self.rounds {
                eprintln!("{name}: round {} of {}", round + 1, self.rounds);
                let mut order = contenders.clone();
                order.rotate_left(round % contenders.len());
                for c in order {
                    match (c, &fio) {
                        (Contender::Raw, _) => raw.push(raw_apply(&stream, &target, batch)?),
                        (Contender::Agent, _) => {
                            ag.push(agent_apply(sh, &agent, &dir, &target, &stream, batch)?)
                        }
                        (Contender::Fio, Some(f)) => {
                            fio_runs.push(fio_apply(sh, f, &target, disk, payload, bs, batch)?)
                        }
                        (Contender::Fio, None) => {}
                    }
                }
            }
            let raw = Medians::of(&raw).context("no run")?;
            let ag = Medians::of(&ag).context("no run")?;
            let fio_run = Medians::of(&fio_runs);
            if !self.keep_streams {
                sh.remove_path(&stream)?;
            }
            rows.push((name, payload, raw, ag, fio_run));
        }
        println!();
        println!("mt-agent apply vs writing the same data directly (journal and target on one file system,");
        println!("fdatasync every {} MiB for all, median of {} alternating rounds); write amplification = bytes sent to storage / payload", self.batch_mib, self.rounds);
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
        let mut entries = Vec::new();
        for (name, payload, raw, ag, fio_run) in &rows {
            let fio_mib_s = fio_run.as_ref().map(|f| f.mib_s(*payload));
            let vs_fio = fio_mib_s.map(|f| ag.mib_s(*payload) / f);
            println!(
                "{:<18} {:>10.0} {:>12.0} {:>10} {:>8.2}x {:>9} {:>9.2} {:>9.2}",
                name,
                raw.mib_s(*payload),
                ag.mib_s(*payload),
                fio_mib_s.map_or("-".into(), |f| format!("{f:.0}")),
                ag.mib_s(*payload) / raw.mib_s(*payload),
                vs_fio.map_or("-".into(), |r| format!("{r:.2}x")),
                raw.wa(*payload),
                ag.wa(*payload),
            );
            entries.push(Entry {
                workload: name.to_string(),
                values: vec![
                    Some(ag.mib_s(*payload) / raw.mib_s(*payload)),
                    vs_fio,
                    Some(ag.wa(*payload)),
                    Some(raw.mib_s(*payload)),
                    Some(ag.mib_s(*payload)),
                    fio_mib_s,
                    Some(raw.wa(*payload)),
                ],
                params: format!(
                    "payload={}MiB disk={}MiB batch={}MiB rounds={}",
                    payload / MIB,
                    self.disk_mib,
                    self.batch_mib,
                    self.rounds
                ),
            });
        }
        let vs_raw = |i: usize| {
            let (_, p, raw, ag, _) = &rows[i];
            ag.mib_s(*p) / raw.mib_s(*p)
        };
        let wa = |i: usize| {
            let (_, p, _, ag, _) = &rows[i];
            ag.wa(*p)
        };
        println!(
            "goals: agent/raw sequential 1 MiB {}, random 4 KiB {}; WA agent sequential {}, random {}",
            GOAL_SEQUENTIAL.judge(vs_raw(0), "x"),
            GOAL_RANDOM.judge(vs_raw(1), "x"),
            GOAL_WA.judge(wa(0), ""),
            GOAL_WA.judge(wa(1), ""),
        );
        if fio.is_none() {
            println!("fio is not installed: its column is empty (apt-get install fio)");
        }
        super::history::record(sh, &HISTORY, &entries)
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
    let before = process_written("self")?;
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
        written: process_written("self")? - before,
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
