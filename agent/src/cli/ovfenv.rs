//! `ovfenv show` and `ovfenv apply`: the deploy-time OVF environment, read and applied by
//! `mt_agent::guest::ovfenv` (which also renders what these print).

use camino::Utf8PathBuf;
use clap::{Args, Subcommand};
use mt_agent::guest::ovfenv::{self, SystemRunner};

#[derive(Subcommand)]
pub enum OvfenvCommand {
    Show(ShowArgs),
    Apply(ApplyArgs),
}

impl OvfenvCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            OvfenvCommand::Show(a) => a.run(),
            OvfenvCommand::Apply(a) => a.run(),
        }
    }
}

/// Read and validate the OVF environment and print it (the passphrase masked).
#[derive(Args)]
pub struct ShowArgs {
    /// Read this ovf-env.xml instead of VMware tools or the CD-ROM.
    #[arg(long, value_name = "FILE")]
    from: Option<Utf8PathBuf>,
}

impl ShowArgs {
    fn run(self) -> anyhow::Result<()> {
        print!("{}", ovfenv::show(self.from.as_deref(), &SystemRunner)?);
        Ok(())
    }
}

/// Apply the OVF environment to a root file system; unchanged values write nothing.
#[derive(Args)]
pub struct ApplyArgs {
    /// The root file system to write to (network, host name, passphrase, root's SSH key).
    #[arg(long, default_value = "/")]
    root: Utf8PathBuf,
    /// The distribution installed in the root.
    #[arg(long, value_enum)]
    distro: mt_agent::guest::setup::Distro,
    /// Read this ovf-env.xml instead of VMware tools or the CD-ROM.
    #[arg(long, value_name = "FILE")]
    from: Option<Utf8PathBuf>,
}

impl ApplyArgs {
    fn run(self) -> anyhow::Result<()> {
        print!(
            "{}",
            ovfenv::run_apply(&self.root, self.distro, self.from.as_deref(), &SystemRunner)?
        );
        Ok(())
    }
}
