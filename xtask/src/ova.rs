//! `cargo xtask ova --definition FILE --disk os=RAW --disk retention=RAW --out FILE.ova`: packs
//! raw disk images into the appliance's OVA (the last stage of `build-ova`, useful on its own).
//! The work is `appliance::ova::pack`; this verb reads the flags and `SOURCE_DATE_EPOCH` and
//! names the build.

use crate::util;
use anyhow::{Context, Result};
use appliance::ova::{pack, PackOptions};
use appliance::ovf::DiskRole;
use camino::{Utf8Path, Utf8PathBuf};
use std::time::Instant;
use xshell::cmd;

/// Pack raw disk images into the appliance OVA (streamOptimized VMDKs, OVF, manifest).
#[derive(clap::Args)]
pub struct Ova {
    /// The appliance definition (default: appliance/appliance.toml).
    #[arg(long)]
    definition: Option<Utf8PathBuf>,
    /// A raw disk image for a role: `os=PATH` and `retention=PATH` (both required).
    #[arg(long = "disk", value_name = "ROLE=RAW", value_parser = parse_disk, required = true)]
    disks: Vec<(DiskRole, Utf8PathBuf)>,
    /// Where to write the OVA (written under a temporary name, renamed when complete).
    #[arg(long)]
    out: Utf8PathBuf,
    /// The build id in the OVF's ProductSection (default: `git describe --always --dirty`).
    #[arg(long)]
    build_id: Option<String>,
}

fn parse_disk(s: &str) -> Result<(DiskRole, Utf8PathBuf), String> {
    let (role, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ROLE=PATH (e.g. os=build/os.raw)"))?;
    Ok((role.parse()?, Utf8PathBuf::from(path)))
}

/// `SOURCE_DATE_EPOCH` as the reproducible-builds convention defines it (seconds since 1970).
pub fn source_date_epoch() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v.trim().parse().map(Some).with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970")
        }),
        _ => Ok(None),
    }
}

/// The commit the build comes from; "unknown" outside a git checkout.
pub fn git_build_id(sh: &xshell::Shell) -> String {
    cmd!(sh, "git describe --always --dirty --abbrev=12")
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_else(|_| "unknown".to_string())
}

impl Ova {
    pub fn run(self, sh: &xshell::Shell) -> Result<()> {
        let (def_path, def) = util::load_definition(self.definition.as_deref())?;
        let opts = PackOptions {
            source_date_epoch: source_date_epoch()?,
            build_id: self.build_id.unwrap_or_else(|| git_build_id(sh)),
        };
        let disks: Vec<(DiskRole, &Utf8Path)> =
            self.disks.iter().map(|(r, p)| (*r, p.as_path())).collect();
        let started = Instant::now();
        let summary = pack(&def, &disks, &self.out, &opts)
            .with_context(|| format!("cannot pack {} from {def_path}", self.out))?;
        for (name, size) in &summary.members {
            println!("  {name:<40} {size:>14} bytes");
        }
        for (role, d) in &summary.disks {
            println!(
                "  {role} disk: capacity {} bytes, {} grains ({} bytes populated)",
                d.capacity, d.grains_written, d.populated_size
            );
        }
        println!(
            "wrote {} ({} bytes, SHA-256 {}, manifest {}) in {:.1}s",
            summary.path,
            summary.size,
            summary.sha256,
            summary.manifest_algorithm.manifest_name(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}
