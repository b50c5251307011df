//! `cargo xtask kickstart`: renders the CentOS 6.6 kickstart for a definition.

use crate::util;
use anyhow::Result;
use camino::Utf8PathBuf;

/// Render the CentOS 6.6 kickstart (ks.cfg) from the appliance definition.
#[derive(clap::Args)]
pub struct Kickstart {
    /// The appliance definition (default: appliance/appliance.toml).
    #[arg(long)]
    definition: Option<Utf8PathBuf>,
    /// Write the kickstart here instead of printing it.
    #[arg(long)]
    out: Option<Utf8PathBuf>,
}

impl Kickstart {
    pub fn run(self, _sh: &xshell::Shell) -> Result<()> {
        let (_, def) = util::load_definition(self.definition.as_deref())?;
        let ks = appliance::kickstart::render(&def)?;
        match self.out {
            Some(out) => {
                util::write_atomic(&out, ks.as_bytes())?;
                eprintln!("wrote {out}");
            }
            None => print!("{ks}"),
        }
        Ok(())
    }
}
