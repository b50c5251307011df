//! The appliance's own verbs: `show-config`, `setup` (at image build time), `firstboot` (per VM),
//! `disks` and `check-retention`. They call `mt_agent::guest` and print its reports; which disk
//! is which and what a retention volume must be are decided there.

use anyhow::bail;
use camino::Utf8PathBuf;
use clap::Args;
use mt_agent::config::AgentConfig;
use mt_agent::guest::{disks, firstboot, retention};
use mt_agent::replication::local;

/// Where sysfs, /dev and the system root are (tests point them at a fake tree).
#[derive(Args, Clone)]
pub struct SystemArgs {
    #[arg(long, default_value = "/sys", hide = true)]
    sys_root: Utf8PathBuf,
    #[arg(long, default_value = "/dev", hide = true)]
    dev_root: Utf8PathBuf,
    #[arg(long, default_value = "/", hide = true)]
    system_root: Utf8PathBuf,
}

impl SystemArgs {
    fn paths(&self) -> disks::SystemPaths {
        disks::SystemPaths {
            sys: self.sys_root.clone(),
            dev: self.dev_root.clone(),
            root: self.system_root.clone(),
        }
    }
}

/// The disk targets of every group on the configured volume, a group that cannot be read
/// reported as a warning.
fn replication_targets(cfg: &AgentConfig) -> Vec<(String, Utf8PathBuf)> {
    local::disk_targets(cfg, &|w| eprintln!("mt-agent: warning: {w}"))
}

/// Print the configuration the agent would run with.
#[derive(Args)]
pub struct ShowConfigArgs {
    /// The agent configuration.
    #[arg(long, default_value = mt_agent::config::DEFAULT_CONFIG_PATH)]
    config: camino::Utf8PathBuf,
}

impl ShowConfigArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let cfg = mt_agent::config::load(&self.config)?;
        println!("{}", toml::to_string_pretty(&cfg)?);
        Ok(())
    }
}

/// Install the agent into a root file system at image build time (service, configuration,
/// template sealing). Safe to run again: only differences are written.
#[derive(Args)]
pub struct SetupArgs {
    /// The root of the image's file system tree.
    #[arg(long)]
    root: camino::Utf8PathBuf,
    /// The distribution installed in the root.
    #[arg(long, value_enum)]
    distro: mt_agent::guest::setup::Distro,
    /// The agent.toml to install (rendered from the appliance definition) [default: the
    /// one already installed in the root].
    #[arg(long)]
    config: Option<camino::Utf8PathBuf>,
    /// Print the changes as a unified diff; change nothing.
    #[arg(long)]
    dry_run: bool,
}

impl SetupArgs {
    pub fn run(self) -> anyhow::Result<()> {
        mt_agent::guest::setup::run(
            &self.root,
            self.distro,
            self.config.as_deref(),
            self.dry_run,
        )
    }
}

/// Adapt this copy of the appliance to its VM (run once per boot before serve): blacklist
/// the OS disk for multipath, format (only if blank) and mount the retention disk, create
/// SSH host keys, record the own disks' IDs. Safe to re-run.
#[derive(Args)]
pub struct FirstbootArgs {
    /// The agent configuration (the retention disk's rule and mount point).
    #[arg(long, default_value = mt_agent::config::DEFAULT_CONFIG_PATH)]
    config: Utf8PathBuf,
    #[command(flatten)]
    sys: SystemArgs,
}

impl FirstbootArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let cfg = mt_agent::config::load(&self.config)?;
        let report = firstboot::run_firstboot(&cfg, &self.sys.paths(), &firstboot::SystemTools)?;
        for line in &report.kept {
            println!("mt-agent firstboot: {line}");
        }
        if report.done.is_empty() {
            println!("mt-agent firstboot: this copy is already set up, nothing to change");
        }
        for line in &report.done {
            println!("mt-agent firstboot: {line}");
        }
        Ok(())
    }
}

/// Every SCSI disk with its stable ID, size and role (os, retention, target, free).
#[derive(Args)]
pub struct DisksArgs {
    /// Print the disks as JSON.
    #[arg(long)]
    json: bool,
    /// The agent configuration (the retention disk's rule; the groups' targets).
    #[arg(long, default_value = mt_agent::config::DEFAULT_CONFIG_PATH)]
    config: Utf8PathBuf,
    #[command(flatten)]
    sys: SystemArgs,
}

impl DisksArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let cfg = mt_agent::config::load(&self.config)?;
        let Some(rule) = disks::rule_of(&cfg) else {
            bail!("{} has no [retention_disk] (scsi_unit, fs, label): the roles of the appliance's own disks come from it", self.config);
        };
        let targets = replication_targets(&cfg)
            .into_iter()
            .map(|(_, t)| t)
            .collect::<Vec<_>>();
        let found = disks::discover(&self.sys.paths(), rule, &targets)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&found)?);
        } else {
            print!("{}", disks::render(&found));
        }
        Ok(())
    }
}

/// Check a volume (its mount point, or a block device) against the runbook's criteria for
/// a retention volume, one line per criterion.
#[derive(Args)]
pub struct CheckRetentionArgs {
    /// The volume's mount point, or a block device.
    path: Utf8PathBuf,
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
    /// The agent configuration (the groups' targets, which the volume must not be).
    #[arg(long, env = "MT_AGENT_CONFIG", default_value = mt_agent::config::DEFAULT_CONFIG_PATH)]
    config: Utf8PathBuf,
}

impl CheckRetentionArgs {
    pub fn run(self) -> anyhow::Result<()> {
        // Without a readable configuration there are no known targets to compare with.
        let targets = mt_agent::config::load(&self.config)
            .map(|cfg| replication_targets(&cfg))
            .unwrap_or_default();
        let ctx = retention::Context::of_this_system(&targets);
        let findings = retention::assess(&self.path, &ctx);
        if self.json {
            println!("{}", serde_json::to_string_pretty(&findings)?);
        } else {
            for f in &findings {
                let mark = if f.ok { "ok  " } else { "FAIL" };
                println!("{mark} {}: {}", f.criterion, f.message);
            }
        }
        let failed = findings.iter().filter(|f| !f.ok).count();
        if failed > 0 {
            bail!(
                "{} is not eligible as a retention volume ({failed} criteria failed)",
                self.path
            );
        }
        Ok(())
    }
}
