//! The `mt-agent` command line: parses arguments and calls the library. No logic lives here.

use anyhow::{bail, Context};
use camino::Utf8PathBuf;
use clap::{Args, Parser, Subcommand};
use mt_agent::replication::journal::policy;
use mt_agent::replication::journal::{
    DiskSpec, GroupJournal, JournalError, PointSelector, RetentionVolume, DEFAULT_BATCH_BYTES,
};
use mt_agent::replication::{apply, volume};

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
    /// Check the retention volume, listen on the configured port, announce readiness, then
    /// accept enrolments and replication sessions.
    Serve {
        #[arg(long, default_value = mt_agent::config::DEFAULT_CONFIG_PATH)]
        config: camino::Utf8PathBuf,
        /// Listen on ADDR (e.g. 127.0.0.1:0) instead of every address on the configured port.
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// The journals' directory [default: the configuration's retention mount].
        #[arg(long, env = "MT_AGENT_RETENTION")]
        retention: Option<Utf8PathBuf>,
        /// Most bytes the journals may take; credit stops before it is reached.
        #[arg(long, env = "MT_AGENT_RETENTION_BUDGET", value_parser = parse_bytes)]
        retention_budget: Option<u64>,
        /// Group-commit size per session: writes are made durable and acknowledged per this
        /// many bytes (memory per session grows with it).
        #[arg(long, value_parser = parse_bytes, default_value_t = DEFAULT_BATCH_BYTES)]
        batch: u64,
        /// The master target's key and the senders it authorised.
        #[arg(long, value_name = "DIR", default_value = mt_agent::replication::net::auth::DEFAULT_SERVER_STATE)]
        state: Utf8PathBuf,
        /// The enrolment passphrase (one line, mode 600).
        #[arg(long, value_name = "FILE", default_value = mt_agent::replication::net::auth::PASSPHRASE_PATH)]
        passphrase_file: Utf8PathBuf,
    },
    /// Enrol this process server with a master target: prove its passphrase, pin its key.
    Enrol {
        /// The master target, HOST:PORT.
        #[arg(long, value_name = "HOST:PORT")]
        to: String,
        /// A file holding the master target's passphrase (one line, mode 600).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Utf8PathBuf,
        /// This sender's key and pinned master-target keys.
        #[arg(long, value_name = "DIR", default_value = mt_agent::replication::net::auth::DEFAULT_SENDER_STATE)]
        state: Utf8PathBuf,
    },
    /// Replicate a group to a master target: a full copy or delta resync of source disks,
    /// and/or a recorded change stream. Resumes from the last acknowledged position.
    Send {
        group: String,
        /// The master target, HOST:PORT.
        #[arg(long, value_name = "HOST:PORT")]
        to: String,
        /// NAME=SOURCE (a file or block device), once per disk, in the group's order.
        #[arg(long = "disk")]
        disks: Vec<String>,
        /// Copy every block of the sources.
        #[arg(long, conflicts_with = "delta")]
        full: bool,
        /// Send only blocks that differ from the master target's copy.
        #[arg(long)]
        delta: bool,
        /// Then send this recorded change stream (the frame format `apply --from` reads).
        #[arg(long, value_name = "FILE")]
        stream: Option<Utf8PathBuf>,
        /// Enrol first with this passphrase file if no key is pinned for the master target.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<Utf8PathBuf>,
        #[arg(long, value_name = "DIR", default_value = mt_agent::replication::net::auth::DEFAULT_SENDER_STATE)]
        state: Utf8PathBuf,
        /// Keep reconnecting this many seconds after a lost connection.
        #[arg(long, default_value_t = 300)]
        retry_for: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Install the agent into a root file system at image build time (service, configuration,
    /// template sealing). Safe to run again: only differences are written.
    Setup {
        /// The root of the image's file system tree.
        #[arg(long)]
        root: camino::Utf8PathBuf,
        #[arg(long, value_enum)]
        distro: mt_agent::guest::setup::Distro,
        /// The agent.toml to install (rendered from the appliance definition) [default: the
        /// one already installed in the root].
        #[arg(long)]
        config: Option<camino::Utf8PathBuf>,
        /// Print the changes as a unified diff; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Adapt this copy of the appliance to its VM (run once per boot before serve): blacklist
    /// the OS disk for multipath, format (only if blank) and mount the retention disk, create
    /// SSH host keys, record the own disks' IDs. Safe to re-run.
    Firstboot {
        #[arg(long, default_value = mt_agent::config::DEFAULT_CONFIG_PATH)]
        config: Utf8PathBuf,
        #[command(flatten)]
        sys: SystemArgs,
    },
    /// Every SCSI disk with its stable ID, size and role (os, retention, target, free).
    Disks {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = mt_agent::config::DEFAULT_CONFIG_PATH)]
        config: Utf8PathBuf,
        #[command(flatten)]
        sys: SystemArgs,
    },
    /// Check a volume (its mount point, or a block device) against the runbook's criteria for
    /// a retention volume, one line per criterion.
    CheckRetention {
        path: Utf8PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(long, env = "MT_AGENT_CONFIG", default_value = mt_agent::config::DEFAULT_CONFIG_PATH)]
        config: Utf8PathBuf,
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
        #[arg(long, env = "MT_AGENT_OVFENV_RECORD", default_value = mt_agent::guest::ovfenv::RECORD_PATH, hide = true)]
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

/// Where sysfs, /dev and the system root are (tests point them at a fake tree).
#[derive(Args, Clone)]
struct SystemArgs {
    #[arg(long, default_value = "/sys", hide = true)]
    sys_root: Utf8PathBuf,
    #[arg(long, default_value = "/dev", hide = true)]
    dev_root: Utf8PathBuf,
    #[arg(long, default_value = "/", hide = true)]
    system_root: Utf8PathBuf,
}

impl SystemArgs {
    fn paths(&self) -> mt_agent::guest::disks::SystemPaths {
        mt_agent::guest::disks::SystemPaths {
            sys: self.sys_root.clone(),
            dev: self.dev_root.clone(),
            root: self.system_root.clone(),
        }
    }
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
        distro: mt_agent::guest::setup::Distro,
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
        Ok(volume::on_disk(
            &cfg,
            root,
            self.retention_budget,
            DEFAULT_BATCH_BYTES,
        ))
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
        Command::Serve {
            config,
            listen,
            retention,
            retention_budget,
            batch,
            state,
            passphrase_file,
        } => mt_agent::serve::run(&mt_agent::serve::ServeOptions {
            config,
            listen,
            retention,
            retention_budget,
            batch_bytes: batch,
            state,
            passphrase_file,
        })?,
        Command::Enrol {
            to,
            passphrase_file,
            state,
        } => {
            let pass = mt_agent::replication::net::auth::read_passphrase(&passphrase_file)?;
            let auth = mt_agent::replication::net::auth::SenderAuth::load(&state)?;
            let key = auth.enrol(&to, &pass)?;
            println!(
                "enrolled with {to}: its key {} is pinned; this sender's key {} is authorised there",
                mt_agent::replication::net::auth::hex(&key),
                mt_agent::replication::net::auth::hex(&auth.public_key())
            );
        }
        Command::Send {
            group,
            to,
            disks,
            full,
            delta,
            stream,
            passphrase_file,
            state,
            retry_for,
            json,
        } => {
            use mt_agent::replication::net::sender::{self, ResyncMode, SendOptions};
            let auth = mt_agent::replication::net::auth::SenderAuth::load(&state)?;
            if auth.pinned(&to)?.is_none() {
                if let Some(f) = &passphrase_file {
                    let pass = mt_agent::replication::net::auth::read_passphrase(f)?;
                    let key = auth.enrol(&to, &pass)?;
                    eprintln!(
                        "mt-agent: enrolled with {to}, pinned key {}",
                        mt_agent::replication::net::auth::hex(&key)
                    );
                }
            }
            let mut sources = Vec::new();
            for d in &disks {
                let Some((name, path)) = d.split_once('=') else {
                    bail!("--disk {d:?}: expected NAME=SOURCE (a file or block device)");
                };
                sources.push((name.to_owned(), Utf8PathBuf::from(path)));
            }
            let resync = match (full, delta) {
                (true, _) => Some(ResyncMode::Full),
                (_, true) => Some(ResyncMode::Delta),
                _ => None,
            };
            let opts = SendOptions {
                target: to,
                group: group.clone(),
                disks: sources,
                resync,
                stream,
                state,
                retry_for: std::time::Duration::from_secs(retry_for),
            };
            let r = sender::send(&opts, &|l| eprintln!("mt-agent: {l}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "group {group}: acknowledged through LSN {}; {} of {} compared blocks changed ({} bytes), {} frames, wire {} bytes sent / {} received ({} of hashes), {} reconnects",
                    r.acked, r.blocks_changed, r.blocks_compared, r.changed_bytes, r.frames_sent,
                    r.wire_bytes_sent, r.wire_bytes_received, r.hash_bytes_received, r.reconnects
                );
            }
        }
        Command::Setup {
            root,
            distro,
            config,
            dry_run,
        } => mt_agent::guest::setup::run(&root, distro, config.as_deref(), dry_run)?,
        Command::Firstboot { config, sys } => {
            let cfg = mt_agent::config::AgentConfig::load(&config)?;
            let report = mt_agent::guest::firstboot::run_firstboot(
                &cfg,
                &sys.paths(),
                &mt_agent::guest::firstboot::SystemTools,
            )?;
            for line in &report.kept {
                println!("mt-agent firstboot: {line}");
            }
            if report.done.is_empty() {
                println!("mt-agent firstboot: this copy is already set up, nothing to change");
            }
            for line in &report.done {
                println!("mt-agent firstboot: {line}");
            }
        }
        Command::Disks { json, config, sys } => {
            let cfg = mt_agent::config::AgentConfig::load(&config)?;
            let Some(rule) = mt_agent::guest::disks::rule_of(&cfg) else {
                bail!("{config} has no [retention_disk] (scsi_unit, fs, label): the roles of the appliance's own disks come from it");
            };
            let targets = replication_targets(&cfg)
                .into_iter()
                .map(|(_, t)| t)
                .collect::<Vec<_>>();
            let disks = mt_agent::guest::disks::discover(&sys.paths(), rule, &targets)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&disks)?);
            } else {
                print!("{}", mt_agent::guest::disks::render(&disks));
            }
        }
        Command::CheckRetention { path, json, config } => {
            let targets = mt_agent::config::AgentConfig::load(&config)
                .map(|cfg| replication_targets(&cfg))
                .unwrap_or_default();
            let ctx = mt_agent::guest::retention::Context::of_this_system(&targets);
            let findings = mt_agent::guest::retention::assess(&path, &ctx);
            if json {
                println!("{}", serde_json::to_string_pretty(&findings)?);
            } else {
                for f in &findings {
                    let mark = if f.ok { "ok  " } else { "FAIL" };
                    println!("{mark} {}: {}", f.criterion, f.message);
                }
            }
            let failed = findings.iter().filter(|f| !f.ok).count();
            if failed > 0 {
                bail!("{path} is not eligible as a retention volume ({failed} criteria failed)");
            }
        }
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
                let capacity = volume::target_capacity(&vol, &target, size)?;
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
            let resync = jr.state().resync;
            if json {
                let v = serde_json::json!({"group": group, "latest": latest, "points": jr.points(),
                    "resync_since_lsn": resync.map(|l| l.0)});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:>10}  {:<7} {:<21} NAME", "LSN", "KIND", "SOURCE TIME");
                let when = if latest.lsn.0 == 0 {
                    "-".to_string()
                } else {
                    latest.source_time.to_string()
                };
                let what = match resync {
                    None => "(every acknowledged write)".to_string(),
                    Some(from) => format!(
                        "(not a recovery point: a resync begun at LSN {from} is unfinished)"
                    ),
                };
                println!("{:>10}  {:<7} {:<21} {what}", latest.lsn, "latest", when);
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
                println!(
                    "{}",
                    mt_agent::guest::ovfenv::describe_source(&ovfenv_record)
                );
            }
        }
        Command::Ovfenv(OvfenvCommand::Show { from }) => print!(
            "{}",
            mt_agent::guest::ovfenv::show(from.as_deref(), &mt_agent::guest::ovfenv::SystemRunner)?
        ),
        Command::Ovfenv(OvfenvCommand::Apply { root, distro, from }) => print!(
            "{}",
            mt_agent::guest::ovfenv::run_apply(
                &root,
                distro,
                from.as_deref(),
                &mt_agent::guest::ovfenv::SystemRunner
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
            let r = apply::apply_recorded(&mut jr, &from)?;
            println!(
                "group {}: acknowledged through LSN {} (was {}); {} frames read, {} resent frames skipped, {} tagged points",
                jr.name(),
                r.acked,
                r.first_acked,
                r.frames,
                r.resent_skipped,
                r.points
            );
            r.into_result()?;
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

/// Every group's disk targets on the configured retention volume ("group/disk", target).
fn replication_targets(cfg: &mt_agent::config::AgentConfig) -> Vec<(String, Utf8PathBuf)> {
    volume::disk_targets(cfg, &|w| eprintln!("mt-agent: warning: {w}"))
}
