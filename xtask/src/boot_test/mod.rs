//! `cargo xtask boot-test FILE.ova`: boots the OVA the way vSphere would run it and checks the
//! appliance from inside. The OVA is only read: its descriptor and disks are extracted into a
//! work directory and the VM writes to throw-away qcow2 overlays. The hardware comes from the
//! OVF (`appliance::vm_hardware`, and `qemu` for the device models); KVM is used when the
//! probe guest runs under it (`qemu::accel`), TCG otherwise.
//!
//! The channel into the guest is the image's own serial console: the test waits for the
//! agent's readiness line there, connects to the agent's port through a loopback forward, logs
//! in as root with the password given on the command line, runs read-only checks, and powers
//! the VM off. The whole console is kept in `console.log`; a failure prints its last lines.
//!
//! This file owns the flags and the options they become (`BootTestOptions`, which `build-ova`
//! fills in too) and the work directory. The jobs: `image` reads the OVA, `session` drives the
//! VM and its console, `guest` writes what the guest is asked, `judge` compares the answers
//! with the definition, `restart` restarts the VM once (a clean reboot, or with `--crash` a
//! kernel crash kdump must capture), `ovf_env` builds and checks the `--ovf-env` CD.

mod guest;
mod image;
mod judge;
mod ovf_env;
mod restart;
mod session;
#[cfg(test)]
mod tests;

use crate::host;
use crate::qemu::Accel;
use crate::util;
use anyhow::{bail, Context, Result};
use appliance::vm_hardware::VmHardware;
use camino::{Utf8Path, Utf8PathBuf};
use clap::ValueEnum;
use ovf_env::OvfEnvTest;
use std::time::Duration;
use xshell::Shell;

pub(crate) use image::ova_hardware;
pub use ovf_env::test_environment;

/// The root password the default definition's hash is of.
pub const DEFAULT_PASSWORD: &str = "mt-changeme";
/// How long the test waits for the agent's readiness line, by default.
const DEFAULT_TIMEOUT_SECS: u64 = 900;

/// Boot an OVA in QEMU and check the appliance inside it.
#[derive(clap::Args)]
pub struct BootTest {
    /// The OVA to boot (never modified).
    ova: Option<Utf8PathBuf>,
    /// The definition the OVA was built from: what the checks expect (mounts, tools, port).
    #[arg(long)]
    definition: Option<Utf8PathBuf>,
    /// The root password (the default definition's hash is of "mt-changeme").
    #[arg(long, default_value = DEFAULT_PASSWORD)]
    password: String,
    /// Debugging: boot raw disk images instead of an OVA (OS disk first, then the retention
    /// disk), with the hardware the definition declares.
    #[arg(long, conflicts_with = "ova")]
    raw: Vec<Utf8PathBuf>,
    /// kvm, tcg or auto (KVM when a probe guest runs under it with `-cpu host`, else TCG).
    #[arg(long, default_value = "auto")]
    accel: String,
    /// Seconds to wait for the agent's readiness line.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    timeout: u64,
    /// Work directory (default: build/boot-test-<name>/); console.log stays there.
    #[arg(long)]
    work: Option<Utf8PathBuf>,
    /// Put this ovf-env.xml on a CD into the CD-ROM drive the OVF declares (the OVF iso
    /// transport) and check that the guest applied every value it carries: host name, static
    /// address, route, resolver, NTP server, root's SSH key, the agent's passphrase.
    #[arg(long, value_name = "FILE.xml")]
    ovf_env: Option<Utf8PathBuf>,
    /// Like --ovf-env with a document built from test values that fit QEMU's user network
    /// (10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3), an NTP server, a passphrase with XML
    /// specials and a fresh SSH key, with which root then logs in over SSH.
    #[arg(long, conflicts_with = "ovf_env")]
    ovf_env_test: bool,
    /// Restart through a kernel crash instead of a clean reboot, and first prove the capture
    /// kernel's initramfs path a kernel upgrade takes: the initramfs is removed and
    /// `kdump-config load` must build it again for the running kernel. The capture kernel must
    /// then save the dump in /var/crash and reboot the VM. Needs kexec-tools in the
    /// definition; about 2.5 minutes more under TCG. (`build-ova`'s own boot test reboots
    /// cleanly; the end-to-end test runs this.)
    #[arg(long, conflicts_with_all = ["ovf_env", "ovf_env_test"])]
    crash: bool,
}

/// What a boot test boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootImage {
    /// An OVA, with the hardware its OVF declares (never modified).
    Ova(Utf8PathBuf),
    /// Debugging: raw disk images with the hardware the definition declares.
    Raw {
        os: Utf8PathBuf,
        retention: Utf8PathBuf,
    },
}

/// Where the OVF environment of an `--ovf-env` test comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OvfEnvSource {
    File(Utf8PathBuf),
    /// `test_environment()`: values that fit QEMU's user network.
    TestValues,
}

/// One boot test, as the `boot-test` flags or `build-ova` ask for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootTestOptions {
    pub image: BootImage,
    /// The definition the image was built from (default: the project's).
    pub definition: Option<Utf8PathBuf>,
    pub password: String,
    pub accel: Accel,
    /// How long to wait for the agent's readiness line, at each boot.
    pub timeout: Duration,
    /// Default: build/boot-test-<name>/ in the workspace.
    pub work: Option<Utf8PathBuf>,
    pub ovf_env: Option<OvfEnvSource>,
    /// Restart through a kernel crash (`--crash`) rather than a clean reboot.
    pub crash: bool,
}

/// What booting needs on the host.
pub const TOOLS: [&str; 2] = ["qemu-system-x86_64", "qemu-img"];

impl BootTest {
    /// The options these flags ask for; fails on a missing image or an unknown accelerator.
    pub fn options(self) -> Result<BootTestOptions> {
        let image = match (self.ova, <[Utf8PathBuf; 2]>::try_from(self.raw)) {
            (Some(ova), _) => BootImage::Ova(ova),
            (None, Ok([os, retention])) => BootImage::Raw { os, retention },
            (None, Err(_)) => {
                bail!("give the OVA to boot (or, for debugging, --raw OS.raw --raw RETENTION.raw)")
            }
        };
        let accel = Accel::from_str(&self.accel, false)
            .map_err(|_| anyhow::anyhow!("--accel {:?}: use kvm, tcg or auto", self.accel))?;
        let ovf_env = match (self.ovf_env, self.ovf_env_test) {
            (Some(f), _) => Some(OvfEnvSource::File(f)),
            (None, true) => Some(OvfEnvSource::TestValues),
            (None, false) => None,
        };
        Ok(BootTestOptions {
            image,
            definition: self.definition,
            password: self.password,
            accel,
            timeout: Duration::from_secs(self.timeout),
            work: self.work,
            ovf_env,
            crash: self.crash,
        })
    }

    pub fn run(self, sh: &Shell) -> Result<()> {
        self.options()?.run(sh)
    }
}

impl BootTestOptions {
    /// The boot test `build-ova` runs on the OVA it packed: the flags' defaults.
    pub fn of_built_ova(ova: &Utf8Path, definition: &Utf8Path, password: &str) -> Self {
        BootTestOptions {
            image: BootImage::Ova(ova.to_owned()),
            definition: Some(definition.to_owned()),
            password: password.to_owned(),
            accel: Accel::Auto,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            work: None,
            ovf_env: None,
            crash: false,
        }
    }

    pub fn run(&self, sh: &Shell) -> Result<()> {
        host::ensure(sh, "boot-test", &TOOLS)?;
        let (_, def) = util::load_definition(self.definition.as_deref())?;
        // Before anything is extracted: a crash test of an image without kdump is refused.
        restart::Restart::for_test(&def, self)?;
        let name = def.appliance.name.clone();
        let work = match &self.work {
            Some(w) => crate::build_ova::absolute(w),
            None => util::workspace_root()
                .join("build")
                .join(format!("boot-test-{name}")),
        };
        if work.exists() {
            std::fs::remove_dir_all(&work).with_context(|| format!("cannot clear {work}"))?;
        }
        std::fs::create_dir_all(&work)?;
        let mut hw = match &self.image {
            BootImage::Ova(ova) => image::ova_hardware(&crate::build_ova::absolute(ova), &work)?,
            BootImage::Raw { os, retention } => VmHardware::from_definition(
                &def,
                &[
                    crate::build_ova::absolute(os),
                    crate::build_ova::absolute(retention),
                ],
            ),
        };
        if self.ovf_env.is_some() {
            host::ensure(sh, "boot-test --ovf-env", &ovf_env::TOOLS)?;
        }
        let ovf = match &self.ovf_env {
            Some(OvfEnvSource::File(f)) => {
                let f = crate::build_ova::absolute(f);
                let xml = std::fs::read_to_string(&f)
                    .with_context(|| format!("cannot read the OVF environment {f}"))?;
                Some(OvfEnvTest::prepare(sh, &xml, f.as_ref(), &work, None)?)
            }
            Some(OvfEnvSource::TestValues) => {
                let (identity, public) = ovf_env::test_key_pair(sh, &work)?;
                Some(OvfEnvTest::prepare(
                    sh,
                    &test_environment(&public),
                    "the test values",
                    &work,
                    Some(identity),
                )?)
            }
            None => None,
        };
        // Only what the OVF declares: the environment goes into its CD-ROM drive, as vSphere
        // inserts it, and an OVF without one cannot take the iso transport.
        if let Some(o) = &ovf {
            let Some(drive) = hw.cdrom.as_mut() else {
                bail!(
                    "--ovf-env: the OVF declares no CD-ROM drive, so the iso transport has nowhere to put ovf-env.xml (the OVF must declare an IDE controller and a CD-ROM Item whenever it offers the iso transport)"
                );
            };
            drive.iso = Some(o.iso.clone());
        }
        let result = session::boot_and_check(sh, self, &def, &hw, &work, ovf.as_ref());
        // Overlays and extracted disks are large and worthless afterwards; the console log stays.
        for entry in std::fs::read_dir(&work)?.flatten() {
            let n = entry.file_name().to_string_lossy().into_owned();
            if n.ends_with(".qcow2") || n.ends_with(".vmdk") || n.ends_with(".sock") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        result
    }
}
