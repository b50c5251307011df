//! The journal verbs: `group create`, `points`, `recover`, `status`, `apply`, `prune`, `verify`.
//! Each opens the retention volume its [`JournalArgs`] name, calls the journal
//! (`mt_agent::replication`) and prints; the tables and summary lines here are presentation only.

use super::{named_disk, parse_bytes};
use anyhow::{bail, Context};
use camino::Utf8PathBuf;
use clap::{Args, Subcommand};
use mt_agent::replication::journal::policy;
use mt_agent::replication::journal::{
    DiskSpec, GroupJournal, GroupView, PointSelector, RetentionVolume, TimelineState,
    DEFAULT_BATCH_BYTES,
};
use mt_agent::replication::{apply, local};
use mt_agent::serve::handshake_counts;

/// Where the journal lives and which policy applies (every journal subcommand takes these).
#[derive(Args, Clone)]
pub struct JournalArgs {
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

impl JournalArgs {
    fn volume(&self) -> anyhow::Result<RetentionVolume> {
        let cfg = mt_agent::config::load(&self.config).with_context(|| {
            "the failback policy comes from the agent configuration: pass --config or set MT_AGENT_CONFIG"
        })?;
        let root = self
            .retention
            .clone()
            .unwrap_or(cfg.retention_mount.clone());
        if !root.is_dir() {
            bail!("the retention directory {root} does not exist (mount the retention volume or pass --retention DIR)");
        }
        Ok(local::retention_volume(
            &cfg,
            root,
            self.retention_budget,
            DEFAULT_BATCH_BYTES,
        ))
    }
}

/// Opens a group for `verb` and tells the operator what opening it repaired.
fn open(vol: &RetentionVolume, group: &str, verb: &str) -> anyhow::Result<GroupJournal> {
    let j = vol.open_group_as(group, &format!("mt-agent {verb}"))?;
    tell_repairs(&j);
    Ok(j)
}

fn tell_repairs(j: &GroupJournal) {
    for n in &j.notes {
        eprintln!("mt-agent: group {}: {n}", j.name());
    }
}

/// A group for a verb that only reads it: opened (and repaired) when it is free, otherwise,
/// while a session or another command holds it, read as committed without its lock.
enum Reading {
    Own(Box<GroupJournal>),
    Held(Box<GroupView>),
}

fn read(vol: &RetentionVolume, group: &str, verb: &str) -> anyhow::Result<Reading> {
    Ok(
        match vol.try_open_group(group, &format!("mt-agent {verb}"))? {
            Ok(j) => {
                tell_repairs(&j);
                Reading::Own(Box::new(j))
            }
            Err(_) => Reading::Held(Box::new(vol.view_group(group)?)),
        },
    )
}

impl Reading {
    fn state(&self) -> &TimelineState {
        match self {
            Reading::Own(j) => j.state(),
            Reading::Held(v) => v.state(),
        }
    }
}

#[derive(Subcommand)]
pub enum GroupCommand {
    Create(GroupCreateArgs),
}

impl GroupCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            GroupCommand::Create(a) => a.run(),
        }
    }
}

/// Create a group. Targets are files or block devices (/dev/disk/by-id/scsi-3…).
#[derive(Args)]
pub struct GroupCreateArgs {
    /// The new group's name (the sender's streams name it in their start frame).
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
}

impl GroupCreateArgs {
    fn run(self) -> anyhow::Result<()> {
        let vol = self.j.volume()?;
        let mut specs = Vec::new();
        for d in &self.disks {
            let (name, target) = named_disk(d, "NAME=TARGET (a file or /dev/disk/by-id/scsi-3…)")?;
            let target = Utf8PathBuf::from(target);
            let capacity = local::target_capacity(&vol, &target, self.size)?;
            specs.push(DiskSpec {
                name: name.to_owned(),
                target,
                capacity,
            });
        }
        vol.create_group(&self.group, specs.clone())?;
        println!("created group {} in {}", self.group, vol.root);
        for s in specs {
            println!("  disk {} -> {} ({} bytes)", s.name, s.target, s.capacity);
        }
        Ok(())
    }
}

/// List a group's recovery points (and "latest", the newest acknowledged state).
#[derive(Args)]
pub struct PointsArgs {
    /// The replication group.
    group: String,
    /// Print the points as JSON (times to the microsecond).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    j: JournalArgs,
}

impl PointsArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let group = self.group;
        let vol = self.j.volume()?;
        let jr = read(&vol, &group, "points")?;
        let state = jr.state();
        let latest = state.latest();
        let resync = state.resync;
        if self.json {
            let v = serde_json::json!({"group": group, "latest": latest, "points": state.points,
                "resync_since_lsn": resync.map(|l| l.0)});
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        println!("{:>10}  {:<7} {:<21} NAME", "LSN", "KIND", "SOURCE TIME");
        let when = if latest.lsn.0 == 0 {
            "-".to_string()
        } else {
            latest.source_time.to_string()
        };
        let what = match resync {
            None => "(every acknowledged write)".to_string(),
            Some(from) => {
                format!("(not a recovery point: a resync begun at LSN {from} is unfinished)")
            }
        };
        println!("{:>10}  {:<7} {:<21} {what}", latest.lsn, "latest", when);
        for p in state.points.iter().rev() {
            let kind = serde_json::to_value(p.kind)?;
            println!(
                "{:>10}  {:<7} {:<21} {}",
                p.lsn,
                kind.as_str().unwrap_or("?"),
                p.source_time,
                p.name
            );
        }
        Ok(())
    }
}

/// Recover a group to a point: into new image files with --to DIR, or in place (the targets
/// roll back; newer points are dropped).
#[derive(Args)]
pub struct RecoverArgs {
    /// The replication group.
    group: String,
    /// latest | latest-app-consistent | an RFC 3339 time (the newest point at or before it;
    /// a time to the second, as `points` shows it, covers that whole second)
    #[arg(long)]
    point: PointSelector,
    /// Write DIR/<disk>.img for every disk instead of rolling the targets back.
    #[arg(long, value_name = "DIR")]
    to: Option<Utf8PathBuf>,
    #[command(flatten)]
    j: JournalArgs,
}

impl RecoverArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let vol = self.j.volume()?;
        let r = match &self.to {
            None => match vol.try_open_group(&self.group, "mt-agent recover")? {
                Ok(mut jr) => {
                    tell_repairs(&jr);
                    jr.recover(&self.point, None)?
                }
                Err(held) => bail!(
                    "group {}: {held}. An in-place recovery rewrites the targets and needs the group to itself: end that session first (stop `mt-agent send` on the source, or stop `mt-agent serve` here) and run this again, or recover into a directory while it runs (--to DIR)",
                    self.group
                ),
            },
            Some(to) => match read(&vol, &self.group, "recover")? {
                Reading::Own(mut jr) => jr.recover(&self.point, Some(to))?,
                Reading::Held(view) => view.recover_into(&self.point, to)?,
            },
        };
        let how = if self.to.is_some() {
            "into"
        } else {
            "in place:"
        };
        println!(
            "recovered group {} to LSN {} ({:?} point {:?}, source time {}) {how} {} ({} undo bytes applied)",
            self.group,
            r.point.lsn,
            r.point.kind,
            r.point.name,
            r.point.source_time,
            r.images.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
            r.undo_bytes_applied
        );
        Ok(())
    }
}

/// RPO, app-consistent age, retention window and usage of every group.
#[derive(Args)]
pub struct StatusArgs {
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
    /// The record of the applied OVF environment (where the configuration came from).
    #[arg(long, env = "MT_AGENT_OVFENV_RECORD", default_value = mt_agent::guest::ovfenv::RECORD_PATH, hide = true)]
    ovfenv_record: Utf8PathBuf,
    /// The master target's state directory (serve's --state), where serve counts the
    /// handshakes it refused.
    #[arg(long, value_name = "DIR", default_value = mt_agent::replication::net::auth::DEFAULT_SERVER_STATE)]
    state: Utf8PathBuf,
    #[command(flatten)]
    j: JournalArgs,
}

/// `status --json`: the volume's status and serve's handshake counts (`null` if serve wrote none).
#[derive(serde::Serialize)]
struct StatusReport<'a> {
    #[serde(flatten)]
    volume: &'a policy::VolumeStatus,
    handshakes: Option<&'a handshake_counts::HandshakeCounts>,
    /// Why the counts could not be read (status still reports the volume).
    #[serde(skip_serializing_if = "Option::is_none")]
    handshakes_error: Option<String>,
}

impl StatusArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let vol = self.j.volume()?;
        let st = policy::volume_status(&vol);
        let (handshakes, handshakes_error) = match handshake_counts::load(&self.state) {
            Ok(c) => (c, None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        if self.json {
            let report = StatusReport {
                volume: &st,
                handshakes: handshakes.as_ref(),
                handshakes_error,
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", policy::render(&st));
            match handshakes_error {
                Some(e) => println!("handshakes: {e}"),
                None => println!(
                    "{}",
                    handshake_counts::render(handshakes.as_ref(), &self.state)
                ),
            }
            println!(
                "{}",
                mt_agent::guest::ovfenv::describe_source(&self.ovfenv_record)
            );
        }
        Ok(())
    }
}

/// Apply a recorded change stream (the network's frame format) to a group.
#[derive(Args)]
pub struct ApplyArgs {
    /// The replication group (the stream's start frame must name it).
    group: String,
    /// The recorded change stream (frames one after another, as `send --stream` sends them).
    #[arg(long, value_name = "FILE")]
    from: Utf8PathBuf,
    /// Group-commit size: writes are made durable and acknowledged per this many bytes.
    #[arg(long, value_parser = parse_bytes, default_value_t = DEFAULT_BATCH_BYTES)]
    batch: u64,
    #[command(flatten)]
    j: JournalArgs,
}

impl ApplyArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let mut vol = self.j.volume()?;
        vol.batch_bytes = self.batch;
        let mut jr = open(&vol, &self.group, "apply")?;
        let r = apply::apply_recorded(&mut jr, &self.from)?;
        // Printed also when the stream stopped early: what was valid before is acknowledged.
        println!(
            "group {}: acknowledged through LSN {} (was {}); {} frames read, {} resent frames skipped, {} tagged points",
            jr.name(),
            r.acked,
            r.first_acked,
            r.frames,
            r.resent_skipped,
            r.points
        );
        r.into_result()
    }
}

/// Drop recovery points older than the retention window now (apply also does this).
#[derive(Args)]
pub struct PruneArgs {
    /// The replication group.
    group: String,
    #[command(flatten)]
    j: JournalArgs,
}

impl PruneArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let vol = self.j.volume()?;
        let mut jr = open(&vol, &self.group, "prune")?;
        let gone = jr.prune()?;
        println!("pruned {} points from group {}", gone.len(), self.group);
        Ok(())
    }
}

/// Check every record of every undo log the group's points need.
#[derive(Args)]
pub struct VerifyArgs {
    /// The replication group.
    group: String,
    #[command(flatten)]
    j: JournalArgs,
}

impl VerifyArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let vol = self.j.volume()?;
        let jr = read(&vol, &self.group, "verify")?;
        let damage = match &jr {
            Reading::Own(j) => j.verify(),
            Reading::Held(v) => v.verify(),
        };
        if let Some(first) = damage.first() {
            bail!("group {} is damaged: {first}", self.group);
        }
        println!(
            "group {}: every undo log checks out ({} points)",
            self.group,
            jr.state().points.len()
        );
        Ok(())
    }
}
