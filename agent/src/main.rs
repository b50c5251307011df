//! The `mt-agent` command line: parses arguments and calls the library. No logic lives here.

use anyhow::{bail, Context};
use camino::{Utf8Path, Utf8PathBuf};
use clap::{Args, Parser, Subcommand};
use mt_agent::frame::{Frame, FrameReader};
use mt_agent::journal::clock::SystemClock;
use mt_agent::journal::io::{OpenMode, RealFs};
use mt_agent::journal::policy::{self, Policy};
use mt_agent::journal::{
    DiskSpec, FrameOutcome, GroupJournal, JournalError, PointSelector, RetentionVolume,
    DEFAULT_BATCH_BYTES,
};
use std::sync::Arc;

/// The master target's replication agent.
#[derive(Parser)]
#[command(name = "mt-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the journal lives and which policy applies (every journal subcommand takes these).
#[derive(Args, Clone)]
struct JournalArgs {
    /// The agent configuration (failback policy, retention mount).
    #[arg(long, env = "MT_AGENT_CONFIG", default_value = mt_agent::config::DEFAULT_CONFIG_PATH)]
    config: Utf8PathBuf,
    /// The retention directory [default: the configuration's retention mount].
    #[arg(long, env = "MT_AGENT_RETENTION")]
    retention: Option<Utf8PathBuf>,
    /// Most bytes the journals may take (e.g. 512MiB); acknowledgements stop beyond it.
    #[arg(long, env = "MT_AGENT_RETENTION_BUDGET", value_parser = parse_bytes)]
    retention_budget: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the configuration the agent would run with.
    ShowConfig {
        #[arg(long, default_value = mt_agent::config::DEFAULT_CONFIG_PATH)]
        config: camino::Utf8PathBuf,
    },
    /// Check the retention volume, listen on the configured port and announce readiness.
    Serve {
        #[arg(long, default_value = mt_agent::config::DEFAULT_CONFIG_PATH)]
        config: camino::Utf8PathBuf,
    },
    /// Install the agent into a root file system at image build time (service, configuration,
    /// template sealing). Safe to run again: only differences are written.
    Setup {
        /// The root of the image's file system tree.
        #[arg(long)]
        root: camino::Utf8PathBuf,
        #[arg(long, value_enum)]
        distro: mt_agent::setup::Distro,
        /// The agent.toml to install (rendered from the appliance definition).
        #[arg(long)]
        config: camino::Utf8PathBuf,
    },
    /// Define replication groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Deploy-time configuration from the OVF environment (vSphere's deploy wizard values).
    #[command(subcommand)]
    Ovfenv(OvfenvCommand),
    /// List a group's recovery points (and "latest", the newest acknowledged state).
    Points {
        group: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        j: JournalArgs,
    },
    /// Recover a group to a point: into new image files with --to DIR, or in place (the targets
    /// roll back; newer points are dropped).
    Recover {
        group: String,
        /// latest | latest-app-consistent | an RFC 3339 time (the newest point at or before it)
        #[arg(long)]
        point: PointSelector,
        /// Write DIR/<disk>.img for every disk instead of rolling the targets back.
        #[arg(long, value_name = "DIR")]
        to: Option<Utf8PathBuf>,
        #[command(flatten)]
        j: JournalArgs,
    },
    /// RPO, app-consistent age, retention window and usage of every group.
    Status {
        #[arg(long)]
        json: bool,
        /// The record of the applied OVF environment (where the configuration came from).
        #[arg(long, env = "MT_AGENT_OVFENV_RECORD", default_value = mt_agent::ovfenv::RECORD_PATH, hide = true)]
        ovfenv_record: Utf8PathBuf,
        #[command(flatten)]
        j: JournalArgs,
    },
    /// Apply a recorded change stream (the network's frame format) to a group.
    Apply {
        group: String,
        #[arg(long, value_name = "FILE")]
        from: Utf8PathBuf,
        /// Group-commit size: writes are made durable and acknowledged per this many bytes.
        #[arg(long, value_parser = parse_bytes, default_value_t = DEFAULT_BATCH_BYTES)]
        batch: u64,
        #[command(flatten)]
        j: JournalArgs,
    },
    /// Drop recovery points older than the retention window now (apply also does this).
    Prune {
        group: String,
        #[command(flatten)]
        j: JournalArgs,
    },
    /// Check every record of every undo log the group's points need.
    Verify {
        group: String,
        #[command(flatten)]
        j: JournalArgs,
    },
}

#[derive(Subcommand)]
enum OvfenvCommand {
    /// Read and validate the OVF environment and print it (the passphrase masked).
    Show {
        /// Read this ovf-env.xml instead of VMware tools or the CD-ROM.
        #[arg(long, value_name = "FILE")]
        from: Option<Utf8PathBuf>,
    },
    /// Apply the OVF environment to a root file system; unchanged values write nothing.
    Apply {
        #[arg(long, default_value = "/")]
        root: Utf8PathBuf,
        #[arg(long, value_enum)]
        distro: mt_agent::ovfenv::Distro,
        /// Read this ovf-env.xml instead of VMware tools or the CD-ROM.
        #[arg(long, value_name = "FILE")]
        from: Option<Utf8PathBuf>,
    },
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Create a group. Targets are files or block devices (/dev/disk/by-id/scsi-3…).
    Create {
        group: String,
        /// NAME=TARGET, once per disk, in the order the source numbers them.
        #[arg(long = "disk", required = true)]
        disks: Vec<String>,
        /// Disk capacity; file targets that do not exist are created (sparse) with this size.
        /// Without it, each target's current size is the disk's capacity.
        #[arg(long, value_parser = parse_bytes)]
        size: Option<u64>,
        #[command(flatten)]
        j: JournalArgs,
    },
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 4096, 64MiB or 2GiB"))?;
    let mul = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        u => {
            return Err(format!(
                "unknown unit {u:?} in {s:?} (use B, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

impl JournalArgs {
    fn volume(&self) -> anyhow::Result<RetentionVolume> {
        let cfg = mt_agent::config::AgentConfig::load(&self.config).with_context(|| {
            "the failback policy comes from the agent configuration: pass --config or set MT_AGENT_CONFIG"
        })?;
        let root = self
            .retention
            .clone()
            .unwrap_or(cfg.retention_mount.clone());
        if !root.is_dir() {
            bail!("the retention directory {root} does not exist (mount the retention volume or pass --retention DIR)");
        }
        Ok(RetentionVolume {
            fs: Arc::new(RealFs),
            clock: Arc::new(SystemClock),
            root,
            policy: Policy::from_config(&cfg),
            budget: self.retention_budget,
            batch_bytes: DEFAULT_BATCH_BYTES,
        })
    }
}

fn open(vol: &RetentionVolume, group: &str) -> anyhow::Result<GroupJournal> {
    let j = vol.open_group(group)?;
    for n in &j.notes {
        eprintln!("mt-agent: group {group}: {n}");
    }
    Ok(j)
}

/// Exit status when acknowledgements stopped because the retention volume is full (EX_TEMPFAIL:
/// retry after freeing space).
const EXIT_RETENTION_FULL: i32 = 75;

fn main() {
    // Printing into a closed pipe (`mt-agent status | head`) ends quietly, as other tools do.
    // SAFETY: restoring the default action of one signal before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("mt-agent: error: {e:#}");
        let full = e.chain().any(|c| {
            matches!(
                c.downcast_ref::<JournalError>(),
                Some(JournalError::RetentionFull(_))
            )
        });
        std::process::exit(if full { EXIT_RETENTION_FULL } else { 1 });
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::ShowConfig { config } => {
            let cfg = mt_agent::config::AgentConfig::load(&config)?;
            println!("{}", toml::to_string_pretty(&cfg)?);
        }
        Command::Serve { config } => mt_agent::serve::run(&config)?,
        Command::Setup {
            root,
            distro,
            config,
        } => mt_agent::setup::run(&root, distro, &config)?,
        Command::Group(GroupCommand::Create {
            group,
            disks,
            size,
            j,
        }) => {
            let vol = j.volume()?;
            let mut specs = Vec::new();
            for d in &disks {
                let Some((name, target)) = d.split_once('=') else {
                    bail!("--disk {d:?}: expected NAME=TARGET (a file or /dev/disk/by-id/scsi-3…)");
                };
                let target = Utf8PathBuf::from(target);
                let capacity = target_capacity(&vol, &target, size)?;
                specs.push(DiskSpec {
                    name: name.to_owned(),
                    target,
                    capacity,
                });
            }
            vol.create_group(&group, specs.clone())?;
            println!("created group {group} in {}", vol.root);
            for s in specs {
                println!("  disk {} -> {} ({} bytes)", s.name, s.target, s.capacity);
            }
        }
        Command::Points { group, json, j } => {
            let vol = j.volume()?;
            let jr = open(&vol, &group)?;
            let latest = jr.latest();
            if json {
                let v =
                    serde_json::json!({"group": group, "latest": latest, "points": jr.points()});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:>10}  {:<7} {:<21} NAME", "LSN", "KIND", "SOURCE TIME");
                let when = if latest.lsn.0 == 0 {
                    "-".to_string()
                } else {
                    latest.source_time.to_string()
                };
                println!(
                    "{:>10}  {:<7} {:<21} (every acknowledged write)",
                    latest.lsn, "latest", when
                );
                for p in jr.points().iter().rev() {
                    let kind = serde_json::to_value(p.kind)?;
                    println!(
                        "{:>10}  {:<7} {:<21} {}",
                        p.lsn,
                        kind.as_str().unwrap_or("?"),
                        p.source_time,
                        p.name
                    );
                }
            }
        }
        Command::Recover {
            group,
            point,
            to,
            j,
        } => {
            let vol = j.volume()?;
            let mut jr = open(&vol, &group)?;
            let r = jr.recover(&point, to.as_deref())?;
            let how = if to.is_some() { "into" } else { "in place:" };
            println!(
                "recovered group {group} to LSN {} ({:?} point {:?}, source time {}) {how} {} ({} undo bytes applied)",
                r.point.lsn,
                r.point.kind,
                r.point.name,
                r.point.source_time,
                r.images.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
                r.undo_bytes_applied
            );
        }
        Command::Status {
            json,
            ovfenv_record,
            j,
        } => {
            let vol = j.volume()?;
            let st = policy::volume_status(&vol);
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", policy::render(&st));
                println!("{}", mt_agent::ovfenv::describe_source(&ovfenv_record));
            }
        }
        Command::Ovfenv(OvfenvCommand::Show { from }) => print!(
            "{}",
            mt_agent::ovfenv::show(from.as_deref(), &mt_agent::ovfenv::SystemRunner)?
        ),
        Command::Ovfenv(OvfenvCommand::Apply { root, distro, from }) => print!(
            "{}",
            mt_agent::ovfenv::run_apply(
                &root,
                distro,
                from.as_deref(),
                &mt_agent::ovfenv::SystemRunner
            )?
        ),
        Command::Apply {
            group,
            from,
            batch,
            j,
        } => {
            let mut vol = j.volume()?;
            vol.batch_bytes = batch;
            let mut jr = open(&vol, &group)?;
            apply(&mut jr, &from)?;
        }
        Command::Prune { group, j } => {
            let vol = j.volume()?;
            let mut jr = open(&vol, &group)?;
            let gone = jr.prune()?;
            println!("pruned {} points from group {group}", gone.len());
        }
        Command::Verify { group, j } => {
            let vol = j.volume()?;
            let jr = open(&vol, &group)?;
            let damage = jr.verify();
            if let Some(first) = damage.first() {
                bail!("group {group} is damaged: {first}");
            }
            println!(
                "group {group}: every undo log checks out ({} points)",
                jr.points().len()
            );
        }
    }
    Ok(())
}

/// The disk capacity for a target: `--size` (creating a missing file target), or its size.
fn target_capacity(
    vol: &RetentionVolume,
    target: &Utf8Path,
    size: Option<u64>,
) -> anyhow::Result<u64> {
    let fs = vol.fs.as_ref();
    if !fs.exists(target) {
        let Some(size) = size else {
            bail!("target {target} does not exist (pass --size to create a file target)");
        };
        let f = fs
            .open(target, OpenMode::CreateTruncate)
            .with_context(|| format!("cannot create target {target}"))?;
        f.set_len(size)
            .and_then(|_| f.sync_data())
            .with_context(|| format!("cannot size target {target}"))?;
        return Ok(size);
    }
    let len = fs
        .open(target, OpenMode::Read)
        .and_then(|f| f.len())
        .with_context(|| format!("cannot open target {target}"))?;
    Ok(size.unwrap_or(len - len % mt_agent::frame::BLOCK_SIZE))
}

fn apply(jr: &mut GroupJournal, from: &Utf8Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(from).with_context(|| format!("cannot open {from}"))?;
    let mut reader = FrameReader::new(std::io::BufReader::with_capacity(4 << 20, file));
    let first_acked = jr.acked();
    let (mut frames, mut dups, mut points) = (0u64, 0u64, 0u64);
    let mut started = false;
    // Frames are read and their hashes checked on another thread while the journal flushes;
    // the channel is bounded, so memory is too (16 frames of at most 4 MiB: about two batches).
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    let result: anyhow::Result<()> = std::thread::scope(|s| {
        s.spawn(move || loop {
            let (index, offset) = reader.position();
            let next = reader.next_frame();
            let end = !matches!(next, Ok(Some(_)));
            if tx.send((index, offset, next)).is_err() || end {
                break;
            }
        });
        let rx = rx;
        loop {
            let Ok((index, offset, next)) = rx.recv() else {
                break Ok(());
            };
            let frame = match next {
                Ok(Some(f)) => f,
                Ok(None) => break Ok(()),
                Err(e) => break Err(anyhow::anyhow!("{from}: {e}")),
            };
            if !started && !matches!(frame, Frame::Start { .. }) {
                break Err(anyhow::anyhow!(
                    "{from}: frame #{index} (byte {offset}): the stream must begin with a start frame naming the group"
                ));
            }
            started = true;
            frames += 1;
            match jr.apply_frame(frame) {
                Ok(FrameOutcome::Duplicate) => dups += 1,
                Ok(FrameOutcome::Accepted) => {}
                Ok(FrameOutcome::PointCreated(_)) => points += 1,
                Err(e) => {
                    break Err(anyhow::Error::new(e)
                        .context(format!("{from}: frame #{index} (byte {offset})")))
                }
            }
        }
    });
    // Whatever was valid before an error is still made durable and acknowledged.
    let commit = jr.commit();
    println!(
        "group {}: acknowledged through LSN {} (was {first_acked}); {frames} frames read, {} resent frames skipped, {points} tagged points",
        jr.name(),
        jr.acked(),
        dups.saturating_sub(1)
    );
    result?;
    commit?;
    Ok(())
}
