//! `cargo xtask build-ova`: the Debian 12 appliance from the definition to a verified OVA.
//!
//! Stages, each cached under `build/<stage>-<hash>/` by the hash of its inputs:
//! `rootfs` (mmdebstrap -> tar), `os-disk` (unpack, configure, `mt-agent setup`, file systems at
//! partition offsets, GRUB), `retention-disk` (blank: first boot formats it); then the appliance
//! crate's OVA writer packs the raw disks and `verify-ova`'s checks run on the result.
//! Orchestration only: byte layouts live in the `appliance` crate.

pub mod bootloader;
pub mod cache;
pub mod configure;
pub mod disk;
pub mod host;
pub mod progress;
pub mod rootfs;

use crate::util;
use anyhow::{bail, Context, Result};
use appliance::definition::Base;
use appliance::Definition;
use camino::{Utf8Path, Utf8PathBuf};
use host::tool;
use std::time::Instant;
use xshell::{cmd, Shell};

pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// Build the appliance OVA (Debian 12 base) from the definition.
#[derive(clap::Args)]
pub struct BuildOva {
    /// The appliance definition (default: appliance/appliance.toml).
    #[arg(long)]
    definition: Option<Utf8PathBuf>,
    /// Where the OVA goes (default: out/ in the workspace).
    #[arg(long)]
    out: Option<Utf8PathBuf>,
    /// The build directory holding the cached stages (default: build/ in the workspace).
    #[arg(long)]
    build_dir: Option<Utf8PathBuf>,
    /// Stop after the raw disk images (for debugging the image; `boot-test --raw` boots them).
    #[arg(long)]
    raw_only: bool,
    /// Build this base instead of the definition's `appliance.base`.
    #[arg(long, value_parser = ["debian12", "centos6"])]
    base: Option<String>,
    #[command(flatten, next_help_heading = "centos6 base")]
    centos: crate::centos::CentosArgs,
    /// Do not boot the finished OVA (by default it is booted once in QEMU, as `boot-test` does).
    #[arg(long)]
    no_boot_test: bool,
    /// The root password the boot test logs in with (default: the default definition's).
    #[arg(long, default_value = "mt-changeme")]
    password: String,
}

const BUILD_TOOLS: [host::Tool; 5] = [
    tool("mmdebstrap", "mmdebstrap"),
    tool("mke2fs", "e2fsprogs"),
    tool("tar", "tar"),
    tool("grub-mkimage", "grub-pc-bin"),
    tool("/usr/lib/grub/i386-pc/boot.img", "grub-pc-bin"),
];

impl BuildOva {
    /// The centos6 base: installed by Anaconda from the CentOS ISO (see `crate::centos`).
    fn build_centos6(&self, sh: &Shell, def: &Definition) -> Result<()> {
        let root = util::workspace_root();
        let mut opts = self.centos.options(&root);
        if let Some(d) = &self.build_dir {
            opts.work_dir = absolute(d).join("centos6");
        }
        let out_dir = match &self.out {
            Some(d) => absolute(d),
            None => root.join("out"),
        };
        if self.raw_only {
            let disks = crate::centos::install_disks(sh, def, self.centos.iso.as_deref(), &opts)?;
            eprintln!(
                "raw disks:\n  os        {}\n  retention {}\nkickstart {}\nconsole   {}",
                disks.os_disk, disks.retention_disk, disks.kickstart, disks.console_log
            );
            return Ok(());
        }
        std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {out_dir}"))?;
        let ova = out_dir.join(format!("{}.ova", def.appliance.name));
        crate::centos::build(sh, def, self.centos.iso.as_deref(), &ova, &opts)?;
        Ok(())
    }

    pub fn run(self, sh: &Shell) -> Result<()> {
        let started = Instant::now();
        let (def_path, mut def) = util::load_definition(self.definition.as_deref())?;
        match self.base.as_deref() {
            Some("centos6") => def.appliance.base = Base::Centos6,
            Some(_) => def.appliance.base = Base::Debian12,
            None => {}
        }
        if def.appliance.base == Base::Centos6 {
            return self.build_centos6(sh, &def);
        }
        preflight(sh, !self.raw_only && !self.no_boot_test)?;
        let root = util::workspace_root();
        let build_dir = match &self.build_dir {
            Some(d) => absolute(d),
            None => root.join("build"),
        };
        let out_dir = match &self.out {
            Some(d) => absolute(d),
            None => root.join("out"),
        };
        let cache = cache::Cache::open(&build_dir)?;
        let mut timings = Vec::new();

        let t = Instant::now();
        let agent = build_agent(sh)?;
        timings.push(("agent (cargo, musl)".to_string(), t.elapsed(), false));

        let manifest_path = root.join(appliance::packages::DEBIAN12_MANIFEST);
        let manifest = appliance::packages::PackageManifest::load(&manifest_path)?;
        let packages = rootfs::package_list(&manifest, &def);
        let (tar, rootfs) = rootfs::build(&cache, &packages)?;
        report("rootfs", &rootfs, &mut timings);
        let (os_raw, os) = disk::os_disk(
            sh,
            &cache,
            &disk::OsDiskInputs {
                def: &def,
                rootfs_tar: &tar,
                rootfs_stage: &rootfs.dir,
                agent: &agent,
            },
        )?;
        report("os-disk", &os, &mut timings);
        let (retention_raw, retention) = disk::retention_disk(&cache, &def)?;
        report("retention-disk", &retention, &mut timings);

        if self.raw_only {
            eprintln!("raw disks:\n  os        {os_raw}\n  retention {retention_raw}");
        } else {
            let build_id = format!(
                "{} {}",
                def.appliance.version,
                os.dir.file_name().unwrap_or("os-disk")
            );
            // The OVA gets its final name only after it passed verify-ova and its boot test, so
            // an interrupted or failed run never leaves a file that looks ready to hand out.
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("cannot create {out_dir}"))?;
            let ova = out_dir.join(format!("{}.ova", def.appliance.name));
            remove_abandoned_staging(&out_dir, &def.appliance.name)?;
            let staging = out_dir.join(format!(
                ".{}.ova{STAGING_MARK}{}",
                def.appliance.name,
                std::process::id()
            ));
            let result = self.pack_and_boot(
                sh,
                &def,
                &def_path,
                &os_raw,
                &retention_raw,
                &staging,
                build_id,
                &mut timings,
            );
            if let Err(e) = result {
                let _ = std::fs::remove_file(&staging);
                return Err(e);
            }
            std::fs::rename(&staging, &ova)
                .with_context(|| format!("cannot rename {staging} to {ova}"))?;
            eprintln!(
                "OVA: {ova} ({})",
                progress::human_bytes(std::fs::metadata(&ova)?.len())
            );
        }
        eprintln!("\nstage                 time      ");
        for (name, elapsed, reused) in &timings {
            let how = if *reused {
                "reused".to_string()
            } else {
                progress::human_duration(*elapsed)
            };
            eprintln!("  {name:<20} {how}");
        }
        if let Some(s) = disk::read_summary(&os.dir) {
            eprintln!(
                "image: {} packages, {} in the root file systems",
                s.packages,
                progress::human_bytes(s.root_bytes)
            );
        }
        eprintln!("total {}", progress::human_duration(started.elapsed()));
        Ok(())
    }
}

impl BuildOva {
    /// Packs into `staging`, verifies, and boots it once unless `--no-boot-test`.
    #[allow(clippy::too_many_arguments)]
    fn pack_and_boot(
        &self,
        sh: &Shell,
        def: &Definition,
        def_path: &Utf8Path,
        os_raw: &Utf8Path,
        retention_raw: &Utf8Path,
        staging: &Utf8Path,
        build_id: String,
        timings: &mut Vec<(String, std::time::Duration, bool)>,
    ) -> Result<()> {
        let t = Instant::now();
        pack(def, os_raw, retention_raw, staging, build_id)?;
        timings.push(("pack + verify".to_string(), t.elapsed(), false));
        if self.no_boot_test {
            return Ok(());
        }
        let t = Instant::now();
        let test = crate::boot_test::BootTest {
            ova: Some(staging.to_owned()),
            definition: Some(def_path.to_owned()),
            password: self.password.clone(),
            raw: Vec::new(),
            accel: "auto".into(),
            timeout: 900,
            work: None,
            ovf_env: None,
            ovf_env_test: false,
        };
        if let Err(e) = test.run(sh) {
            // Complete and verified, but it did not boot: kept for inspection under a name
            // that cannot be mistaken for a finished OVA.
            let failed = staging
                .parent()
                .unwrap_or(Utf8Path::new("."))
                .join(format!("{}.ova.failed-boot-test", def.appliance.name));
            std::fs::rename(staging, &failed)
                .with_context(|| format!("cannot rename {staging}"))?;
            return Err(e.context(format!(
                "the OVA did not pass its boot test; kept as {failed} for inspection"
            )));
        }
        timings.push(("boot test".to_string(), t.elapsed(), false));
        Ok(())
    }
}

const STAGING_MARK: &str = ".unverified-";

/// OVAs of runs that were interrupted before their checks finished.
fn remove_abandoned_staging(out_dir: &Utf8Path, name: &str) -> Result<()> {
    let prefix = format!(".{name}.ova{STAGING_MARK}");
    for entry in std::fs::read_dir(out_dir).with_context(|| format!("cannot list {out_dir}"))? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix(&prefix) else {
            continue;
        };
        if !Utf8Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing the unverified OVA of an interrupted build: {out_dir}/{file}");
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {out_dir}/{file}"))?;
        }
    }
    Ok(())
}

fn report(
    name: &str,
    out: &cache::StageOutput,
    timings: &mut Vec<(String, std::time::Duration, bool)>,
) {
    if out.reused {
        eprintln!("{name}: unchanged inputs, reusing {}", out.dir);
    } else {
        eprintln!(
            "{name}: built in {} -> {}",
            progress::human_duration(out.elapsed),
            out.dir
        );
    }
    timings.push((name.to_string(), out.elapsed, out.reused));
}

/// Everything the build needs, checked before the first minute is spent.
fn preflight(sh: &Shell, boot_test: bool) -> Result<()> {
    if !host::is_root() {
        bail!("build-ova must run as root: mmdebstrap installs packages as root, and only root can recreate the root file system's owners and device nodes before mke2fs copies them into the image (no loop device or mount is used). Run it as root, e.g. `sudo -E cargo xtask build-ova`.");
    }
    let mut tools = BUILD_TOOLS.to_vec();
    tools.push(tool("musl-gcc", "musl-tools"));
    if boot_test {
        tools.extend(crate::boot_test::TOOLS);
    }
    host::ensure(sh, "build-ova", &tools)?;
    host::ensure_musl_target(sh)
}

/// The static agent that goes into the image, built from this workspace.
fn build_agent(sh: &Shell) -> Result<Utf8PathBuf> {
    eprintln!("agent: cargo build --release --target {MUSL_TARGET} -p mt-agent");
    cmd!(
        sh,
        "cargo build --quiet --release --target {MUSL_TARGET} -p mt-agent"
    )
    .run()
    .context("building the static mt-agent failed")?;
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(Utf8PathBuf::from)
        .unwrap_or_else(|_| util::workspace_root().join("target"));
    let bin = target_dir.join(MUSL_TARGET).join("release/mt-agent");
    if !bin.is_file() {
        bail!("cargo reported success but {bin} does not exist");
    }
    Ok(bin)
}

/// The agent's configuration file, from the definition: one source for port, policy and paths.
pub fn agent_config_toml(def: &Definition) -> Result<String> {
    Ok(toml::to_string_pretty(&def.agent_config())?)
}

/// Packs the raw disks into the OVA with the appliance crate's writers (temporary name, renamed
/// when complete), then runs `verify-ova`'s checks on the result; an OVA that fails them is
/// removed rather than left looking finished.
fn pack(
    def: &Definition,
    os: &Utf8Path,
    retention: &Utf8Path,
    out: &Utf8Path,
    build_id: String,
) -> Result<()> {
    use appliance::ovf::DiskRole;
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => Some(v.trim().parse::<u64>().with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970")
        })?),
        Err(_) => None,
    };
    let opts = appliance::ova::PackOptions {
        source_date_epoch,
        build_id,
    };
    let summary = {
        let status = std::sync::Arc::new(std::sync::Mutex::new(format!(
            "streamOptimized VMDKs, OVF, manifest -> {out}"
        )));
        let _ticker = progress::Ticker::start("pack", None, status);
        appliance::ova::pack(
            def,
            &[(DiskRole::Os, os), (DiskRole::Retention, retention)],
            out,
            &opts,
        )
        .with_context(|| format!("packing {out}"))?
    };
    for (name, size) in &summary.members {
        eprintln!("  {name:<32} {}", progress::human_bytes(*size));
    }
    let verify = appliance::verify::VerifyOptions {
        compat: def.appliance.vsphere_compat,
        raw_dir: None,
    };
    let report =
        appliance::verify::verify_ova(out, &verify).with_context(|| format!("verifying {out}"))?;
    let errors: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.severity == appliance::verify::Severity::Error)
        .map(|f| f.to_string())
        .collect();
    for f in &report.findings {
        eprintln!("verify-ova: {f}");
    }
    if !errors.is_empty() {
        let _ = std::fs::remove_file(out);
        bail!(
            "the OVA failed verify-ova ({} error(s)); it was removed:\n{}",
            errors.len(),
            errors.join("\n")
        );
    }
    eprintln!(
        "verify-ova: OK for vSphere {} (sha256 {})",
        def.appliance.vsphere_compat.as_str(),
        summary.sha256
    );
    Ok(())
}

/// A path given on the command line is relative to where the user ran the command.
pub fn absolute(p: &Utf8Path) -> Utf8PathBuf {
    if p.is_absolute() {
        return p.to_owned();
    }
    std::env::current_dir()
        .ok()
        .and_then(|d| Utf8PathBuf::from_path_buf(d).ok())
        .unwrap_or_else(util::workspace_root)
        .join(p)
}
