//! The centos6 base: CentOS 6.6 minimal installed by Anaconda from the rendered kickstart inside
//! QEMU, then finished like the Debian base.
//!
//! Steps: find and check the ISO (`iso`), take its installer kernel and initrd and append
//! `ks.cfg` to the initrd (`initrd`), write the extras CD with the verified RPMs and `mt-agent`
//! (`extras`), run the install headless and follow its console (`install`, under the accelerator
//! `crate::qemu::accel` chooses), then hand the two raw disks to `build-ova`'s finishing path
//! (`build_ova::finish`: pack, verify, then the final name). Everything runs here in `xtask`;
//! the formats (kickstart, cpio) come from the `appliance` library.

pub mod extras;
pub mod initrd;
pub mod install;
pub mod iso;

#[cfg(test)]
mod test_double;

use anyhow::{bail, Context, Result};
use appliance::packages::PackageManifest;
use appliance::Definition;
use camino::{Utf8Path, Utf8PathBuf};
use std::time::Duration;
use xshell::Shell;

pub use crate::qemu::Accel;

/// Everything of a centos6 build besides the definition, the ISO and the output.
pub struct BuildOptions {
    /// Build from an ISO whose SHA-256 is not the published one.
    pub allow_unverified_iso: bool,
    /// The verified RPMs (`cargo xtask fetch-packages --dest`).
    pub rpm_dir: Utf8PathBuf,
    /// The el6 package manifest whose pins the RPMs are checked against.
    pub manifest: Utf8PathBuf,
    /// A static `mt-agent` to put on the extras CD instead of building one.
    pub agent: Option<Utf8PathBuf>,
    /// Intermediate files: boot files, patched initrd, extras CD, raw disks, console log.
    pub work_dir: Utf8PathBuf,
    pub accel: Accel,
    /// Memory and CPUs of the install VM (not of the appliance: Anaconda needs about 1 GiB).
    pub install_memory_mib: u64,
    pub install_cpus: u32,
    pub install_limits: install::Limits,
}

impl BuildOptions {
    /// The defaults `cargo xtask build-ova --base centos6` uses, with files under `target/`.
    pub fn new(workspace: &Utf8Path) -> BuildOptions {
        BuildOptions {
            allow_unverified_iso: false,
            rpm_dir: workspace.join(crate::fetch_packages::DEFAULT_RPM_DIR),
            manifest: workspace.join(appliance::packages::EL6_MANIFEST),
            agent: None,
            work_dir: workspace.join("target/centos6/build"),
            accel: Accel::Auto,
            install_memory_mib: 2048,
            install_cpus: 2,
            install_limits: install::Limits {
                timeout: Duration::from_secs(180 * 60),
                idle: Duration::from_secs(15 * 60),
            },
        }
    }
}

/// The `build-ova` flags of the centos6 base (flattened into that verb's arguments).
#[derive(clap::Args, Debug)]
pub struct CentosArgs {
    /// The CentOS 6.6 minimal ISO (else the MT_CENTOS_ISO environment variable).
    #[arg(long)]
    pub iso: Option<Utf8PathBuf>,
    /// Build even if the ISO's SHA-256 is not the published one of CentOS-6.6-x86_64-minimal.iso.
    #[arg(long)]
    pub allow_unverified_iso: bool,
    /// The verified extra RPMs (default: where `cargo xtask fetch-packages` puts them).
    #[arg(long)]
    pub rpm_dir: Option<Utf8PathBuf>,
    /// The el6 package manifest holding the RPMs' pins (default: packages/el6.toml).
    #[arg(long)]
    pub manifest: Option<Utf8PathBuf>,
    /// A static mt-agent to put on the extras CD instead of building one.
    #[arg(long)]
    pub agent: Option<Utf8PathBuf>,
    /// QEMU accelerator for the install.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: Accel,
    /// Give up on the install after this many minutes.
    #[arg(long, default_value_t = 180)]
    pub install_timeout_minutes: u64,
    /// Give up when the disks and the console stay unchanged this many minutes.
    #[arg(long, default_value_t = 15)]
    pub install_idle_minutes: u64,
}

impl CentosArgs {
    /// The build options these flags give, with defaults under the workspace's `target/`.
    pub fn options(&self, workspace: &Utf8Path) -> BuildOptions {
        let mut o = BuildOptions::new(workspace);
        o.allow_unverified_iso = self.allow_unverified_iso;
        if let Some(d) = &self.rpm_dir {
            o.rpm_dir = d.clone();
        }
        if let Some(m) = &self.manifest {
            o.manifest = m.clone();
        }
        o.agent = self.agent.clone();
        o.accel = self.accel;
        o.install_limits = install::Limits {
            timeout: Duration::from_secs(self.install_timeout_minutes * 60),
            idle: Duration::from_secs(self.install_idle_minutes * 60),
        };
        o
    }
}

/// The result of the install: the two raw disks and the console log.
#[derive(Debug)]
pub struct InstalledDisks {
    pub os_disk: Utf8PathBuf,
    pub retention_disk: Utf8PathBuf,
    pub console_log: Utf8PathBuf,
    /// The kickstart that was injected (kept next to the disks for reference).
    pub kickstart: Utf8PathBuf,
}

/// Everything up to the installed raw disks.
pub fn install_disks(
    sh: &Shell,
    def: &Definition,
    iso: Option<&Utf8Path>,
    opts: &BuildOptions,
) -> Result<InstalledDisks> {
    // The cheap checks first: a missing ISO or RPM fails before anything is built.
    let iso = iso::locate(iso)?;
    let manifest = PackageManifest::load(&opts.manifest)?;
    let ks = appliance::kickstart::render(def)?;
    iso::verify(&iso, opts.allow_unverified_iso)?;
    let work = &opts.work_dir;
    std::fs::create_dir_all(work).with_context(|| format!("cannot create {work}"))?;
    let agent = extras::agent_binary(sh, opts.agent.as_deref())?;
    let extras_iso = work.join("extras.iso");
    extras::build_cd(
        sh,
        def,
        &manifest,
        &opts.rpm_dir,
        &agent,
        &work.join("extras-root"),
        &extras_iso,
    )?;
    let kickstart = work.join(initrd::KS_FILE);
    crate::util::write_atomic(&kickstart, ks.as_bytes())?;
    let boot = iso::extract_boot_files(sh, &iso, work)?;
    let patched = work.join("initrd-ks.img");
    initrd::inject(&boot.initrd, &ks, &patched)?;
    let os_disk = work.join("os-disk.raw");
    let retention_disk = work.join("retention-disk.raw");
    install::create_disk(&os_disk, def.os_disk.size.bytes())?;
    install::create_disk(&retention_disk, def.retention_disk.size.bytes())?;
    let console_log = work.join("install-console.log");
    let append = kernel_append();
    use crate::qemu::accel::{self, Accel};
    let accel = accel::choose(sh, opts.accel, work)?;
    let run = |accel: Accel, limits: install::Limits| {
        install::run(
            sh,
            &install::Install {
                kernel: &boot.kernel,
                initrd: &patched,
                append: &append,
                iso: &iso,
                extras: &extras_iso,
                os_disk: &os_disk,
                retention_disk: &retention_disk,
                console_log: &console_log,
                accel,
                memory_mib: opts.install_memory_mib,
                cpus: opts.install_cpus,
                limits,
            },
        )
    };
    let result = if accel == Accel::Kvm && opts.accel == Accel::Auto {
        // The probe passed (now or on an earlier run), but a kernel may still not run under
        // KVM here: one that shows no sign of life in time is given up on, TCG is remembered
        // for this host, and the install starts again under TCG.
        let quick = install::Limits {
            idle: opts.install_limits.idle.min(accel::KVM_KERNEL_START),
            ..opts.install_limits
        };
        let r = run(Accel::Kvm, quick);
        let silent = std::fs::metadata(&console_log).map_or(true, |m| m.len() == 0);
        match r {
            Err(e) if silent => {
                let first = format!("{e:#}");
                let first = first.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                eprintln!(
                    "the installer's kernel did not start under KVM ({first}); falling back to TCG (slower, emulated CPU)"
                );
                install::create_disk(&os_disk, def.os_disk.size.bytes())?;
                install::create_disk(&retention_disk, def.retention_disk.size.bytes())?;
                // Remembered before the install, which takes hours under TCG: the next VM on
                // this host (an install or a boot test) starts under TCG without waiting.
                accel::remember(
                    sh,
                    Accel::Tcg,
                    &format!("the CentOS installer's kernel did not start under KVM ({first})"),
                );
                run(Accel::Tcg, opts.install_limits)
            }
            r => r,
        }
    } else {
        run(accel, opts.install_limits)
    };
    if let Err(e) = result {
        // Half-installed disks must not be mistaken for a result.
        let _ = std::fs::remove_file(&os_disk);
        let _ = std::fs::remove_file(&retention_disk);
        return Err(e);
    }
    Ok(InstalledDisks {
        os_disk,
        retention_disk,
        console_log,
        kickstart,
    })
}

/// The installer's kernel command line: the kickstart in the initrd, the console on the serial
/// port QEMU logs, the text UI (no X in the install VM).
pub fn kernel_append() -> String {
    format!("{} console=ttyS0,115200 text", initrd::ks_kernel_arg())
}

/// Runs a tool, and on failure says what was being done, with the tool's own output.
pub(crate) fn run_tool(cmd: xshell::Cmd<'_>, doing: &str) -> Result<()> {
    let out = cmd
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("{doing}: cannot run the tool"))?;
    if !out.status.success() {
        bail!(
            "{doing} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
