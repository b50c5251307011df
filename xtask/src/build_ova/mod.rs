//! `cargo xtask build-ova`: the Debian 12 appliance from the definition to a verified OVA.
//!
//! Stages, each cached under `build/<stage>-<hash>/` by the hash of its inputs:
//! `rootfs` (mmdebstrap -> tar), `os-disk` (unpack, configure, `mt-agent setup`, file systems at
//! partition offsets, GRUB), `retention-disk` (blank: first boot formats it); then
//! the finishing path (`finish`, shared with the centos6 base) packs the raw disks, runs
//! `verify-ova`'s checks and the boot test on the result, and only then names it.
//! Orchestration only: byte layouts live in the `appliance` crate.

pub mod bootloader;
pub mod cache;
pub mod configure;
pub mod disk;
pub mod finish;
pub mod progress;
pub mod rootfs;

use crate::util;
use anyhow::{bail, Context, Result};
use appliance::definition::Base;
use appliance::Definition;
use camino::{Utf8Path, Utf8PathBuf};
use std::time::Instant;
use xshell::{cmd, Shell};

pub use crate::host::MUSL_TARGET;

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
    #[arg(long, default_value = crate::boot_test::DEFAULT_PASSWORD)]
    password: String,
}

const BUILD_TOOLS: [&str; 6] = [
    "mmdebstrap",
    "mke2fs",
    "tar",
    "grub-mkimage",
    "/usr/lib/grub/i386-pc/boot.img",
    "musl-gcc",
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
        if !self.raw_only {
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("cannot create {out_dir}"))?;
        }
        let disks = crate::centos::install_disks(sh, def, self.centos.iso.as_deref(), &opts)?;
        if self.raw_only {
            eprintln!(
                "raw disks:\n  os        {}\n  retention {}\nkickstart {}\nconsole   {}",
                disks.os_disk, disks.retention_disk, disks.kickstart, disks.console_log
            );
            return Ok(());
        }
        eprintln!(
            "install console log: {}\ninjected kickstart: {}",
            disks.console_log, disks.kickstart
        );
        let finished = finish::Finish {
            def,
            os_disk: &disks.os_disk,
            retention_disk: &disks.retention_disk,
            out_dir: &out_dir,
            build_id: crate::ova::git_build_id(sh),
            // The boot test's guest checks are the Debian image's (systemd units, nftables,
            // kdump-tools): an el6 image is not booted by the build.
            boot_test: None,
        };
        finish::finish(sh, &finished, &mut Vec::new())?;
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

        let manifest_path = root.join(appliance::packages::DEBIAN12_MANIFEST);
        let manifest = appliance::packages::PackageManifest::load(&manifest_path)?;
        let packages = rootfs::package_list(&manifest, &def);
        // The agent compiles while mmdebstrap downloads and unpacks: neither needs the other
        // until the OS disk, and together they take the longest part of a cold build.
        let (agent, rootfs) = std::thread::scope(|scope| {
            let agent = scope.spawn(|| {
                let t = Instant::now();
                let sh = Shell::new()?;
                sh.change_dir(&root);
                build_agent(&sh).map(|bin| (bin, t.elapsed()))
            });
            let rootfs = rootfs::build(&cache, &packages);
            let agent = agent
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the agent's build thread panicked")));
            (agent, rootfs)
        });
        let (agent, agent_time) = agent?;
        let (tar, rootfs) = rootfs?;
        timings.push(("agent (cargo, musl)".to_string(), agent_time, false));
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
            let boot_test = (!self.no_boot_test).then(|| finish::BootCheck {
                definition: def_path.clone(),
                password: self.password.clone(),
            });
            let finished = finish::Finish {
                def: &def,
                os_disk: &os_raw,
                retention_disk: &retention_raw,
                out_dir: &out_dir,
                build_id,
                boot_test,
            };
            finish::finish(sh, &finished, &mut timings)?;
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

fn report(name: &str, out: &cache::StageOutput, timings: &mut finish::Timings) {
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
    if !crate::host::is_root() {
        bail!("build-ova must run as root: mmdebstrap installs packages as root, and only root can recreate the root file system's owners and device nodes before mke2fs copies them into the image (no loop device or mount is used). Run it as root, e.g. `sudo -E cargo xtask build-ova`.");
    }
    let mut tools = BUILD_TOOLS.to_vec();
    if boot_test {
        tools.extend(crate::boot_test::TOOLS);
    }
    crate::host::ensure(sh, "build-ova", &tools)?;
    crate::host::ensure_musl_target(sh)
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
