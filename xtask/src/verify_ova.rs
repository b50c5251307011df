//! `cargo xtask verify-ova FILE.ova [--raw-dir DIR]`: runs the `appliance::verify` checks on an
//! OVA (ours or anyone's) and prints every finding; fails if any is an error.

use crate::util;
use anyhow::{bail, Result};
use appliance::definition::VsphereCompat;
use appliance::verify::{verify_ova, Severity, VerifyOptions};
use camino::Utf8PathBuf;

/// Check an OVA the way vSphere imports it: tar, manifest digests, OVF, VMDK structure.
#[derive(clap::Args)]
pub struct VerifyOva {
    /// The OVA to check.
    ova: Utf8PathBuf,
    /// Also check that each disk expands byte-for-byte to DIR/<disk stem>.* (e.g. the raw
    /// image `mt-appliance-disk1.raw` for `mt-appliance-disk1.vmdk`).
    #[arg(long, value_name = "DIR")]
    raw_dir: Option<Utf8PathBuf>,
    /// The oldest vSphere release that must import it (6.0 6.5 6.7 7.0 8.0); default: the
    /// definition's `appliance.vsphere_compat`.
    #[arg(long, value_name = "RELEASE", value_parser = parse_compat)]
    vsphere_compat: Option<VsphereCompat>,
    /// The appliance definition whose compatibility target applies (default: appliance/appliance.toml).
    #[arg(long)]
    definition: Option<Utf8PathBuf>,
}

fn parse_compat(s: &str) -> Result<VsphereCompat, String> {
    VsphereCompat::from_name(s).ok_or_else(|| {
        let all: Vec<&str> = VsphereCompat::ALL.iter().map(|c| c.as_str()).collect();
        format!(
            "{s:?} is not a vSphere release this tool knows ({})",
            all.join(", ")
        )
    })
}

impl VerifyOva {
    pub fn run(self, _sh: &xshell::Shell) -> Result<()> {
        let compat = match self.vsphere_compat {
            Some(c) => c,
            None => {
                util::load_definition(self.definition.as_deref())?
                    .1
                    .appliance
                    .vsphere_compat
            }
        };
        let opts = VerifyOptions {
            compat,
            raw_dir: self.raw_dir.clone(),
        };
        let report = verify_ova(&self.ova, &opts)?;
        for f in &report.findings {
            println!("{f}");
        }
        let count = |s| report.findings.iter().filter(|f| f.severity == s).count();
        let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
        let members: Vec<String> = report
            .members
            .iter()
            .map(|m| format!("{} ({} bytes)", m.name, m.size))
            .collect();
        println!("members: {}", members.join(", "));
        for (disk, raw) in &report.disks_compared {
            println!("{disk} expands to {raw} byte for byte");
        }
        if errors > 0 {
            bail!(
                "{}: {errors} error(s), {warnings} warning(s) for a vSphere {} target",
                self.ova,
                compat.as_str()
            );
        }
        println!(
            "{}: OK for vSphere {} ({warnings} warning(s))",
            self.ova,
            compat.as_str()
        );
        Ok(())
    }
}
