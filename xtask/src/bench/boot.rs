//! `cargo xtask bench boot`: the first boot of a deployed copy, from power-on to the agent's
//! readiness line, against the same image as a plain Debian: the OS disk of the same OVA with
//! the appliance's own units disabled (the agent, first boot, the OVF environment, kdump) and
//! SSH host keys made beforehand, as a plain image has them, booting to `multi-user.target`.
//! Both boot on the hardware the OVF declares, each time from fresh overlays (a first boot),
//! alternating within one run under the same accelerator; the medians are reported, with the
//! appliance's own multi-user time beside them, then the goals and the history.

use super::history::{Better, Entry, Figure, Schema};
use super::{median, Goal};
use crate::boot_test::ova_hardware;
use crate::qemu::{accel, Accel, Machine};
use crate::util;
use anyhow::{bail, Context, Result};
use appliance::definition::OS_DISK_SCSI_UNIT;
use appliance::layout::DiskLayout;
use appliance::vm_hardware::{DiskFormat, VmHardware};
use camino::{Utf8Path, Utf8PathBuf};
use std::time::Duration;
use xshell::{cmd, Shell};

/// Goal: the appliance's first boot to ready / the plain image's boot to multi-user.
const GOAL_RATIO: Goal = Goal::AtMost(1.5);
/// Goal: seconds from power-on to the agent's readiness line (TCG on this machine kind).
const GOAL_READY_SECS: Goal = Goal::AtMost(40.0);
/// What the plain image's kernel prints on the console once multi-user.target is reached: a unit
/// the bench adds to the plain copy writes it to `/dev/kmsg`. (systemd's own "Reached target"
/// line is no signal: systemd stops printing unit status on the console once a getty runs there,
/// which on some boots comes first.)
const MULTI_USER: &str = "mt-bench: multi-user.target reached";

/// The plain copy's marker unit (`MULTI_USER`).
const MARKER_UNIT: &str = "mt-bench-multi-user.service";
const MARKER_UNIT_TEXT: &str = "[Unit]
Description=bench boot: say on the console that multi-user.target is reached
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo \"mt-bench: multi-user.target reached\" > /dev/kmsg'

[Install]
WantedBy=multi-user.target
";
/// How long one boot may take before the run fails.
const BOOT_LIMIT: Duration = Duration::from_secs(900);

/// The units `mt-agent setup` adds or replaces that the plain image does without.
const APPLIANCE_UNITS: [&str; 4] = [
    mt_contract::guest::AGENT_SERVICE,
    mt_contract::guest::FIRSTBOOT_SERVICE,
    mt_contract::guest::OVFENV_SERVICE,
    mt_agent::guest::setup::kdump::DEBIAN_SERVICE,
];

/// The bench's table in `docs/benchmarks.md`.
pub(super) const HISTORY: Schema = Schema {
    bench: "boot",
    about:
        "`cargo xtask bench boot`: vs plain = the appliance's first boot to `mt-agent: ready` / \
            the plain image's boot to multi-user.target (lower is better); seconds from power-on.",
    figures: &[
        Figure {
            name: "vs plain",
            decimals: 2,
            suffix: "x",
            compare: Some(Better::Lower),
        },
        Figure::shown("agent ready s", 1),
        Figure::shown("plain multi-user s", 1),
    ],
};

/// First boot of the OVA to agent-ready vs the same root file system without the appliance's
/// units to multi-user, alternating in one run.
#[derive(clap::Args)]
pub struct BootBench {
    /// The OVA (as `build-ova` wrote it; never modified).
    ova: Utf8PathBuf,
    /// The definition it was built from (default: the project's).
    #[arg(long)]
    definition: Option<Utf8PathBuf>,
    /// Boots of each image; the median is reported (odd: a true middle).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// kvm, tcg or auto (as `boot-test`).
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    accel: Accel,
}

/// One boot's figure: seconds from power-on to the appliance's readiness line, or to the plain
/// image's multi-user.target.
struct Boot {
    seconds: f64,
}

impl BootBench {
    pub fn run(self, sh: &Shell) -> Result<()> {
        if self.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        let (_, def) = util::load_definition(self.definition.as_deref())?;
        let ova = crate::build_ova::absolute(&self.ova);
        let work = util::workspace_root().join("build/bench-boot");
        if work.exists() {
            std::fs::remove_dir_all(&work).with_context(|| format!("cannot clear {work}"))?;
        }
        std::fs::create_dir_all(&work)?;
        let hw = ova_hardware(&ova, &work)?;
        let plain = plain_hardware(sh, &hw, &def, &work)?;
        let accel = accel::choose(sh, self.accel, &work)?;
        let seed = def.appliance.name.as_str();
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 1..=self.rounds {
            eprintln!("bench boot: round {round}/{}: the appliance", self.rounds);
            let b = boot(sh, &hw, seed, &work.join("appliance"), accel, true)?;
            eprintln!("  agent ready {:.1} s", b.seconds);
            ours.push(b.seconds);
            eprintln!("bench boot: round {round}/{}: the plain image", self.rounds);
            let b = boot(sh, &plain, seed, &work.join("plain"), accel, false)?;
            eprintln!("  multi-user {:.1} s", b.seconds);
            theirs.push(b.seconds);
        }
        let ready = median(&ours);
        let plain_mu = median(&theirs);
        let ratio = ready / plain_mu;
        println!(
            "first boot under {} ({} round(s), medians, seconds from power-on):",
            accel.as_str(),
            self.rounds
        );
        println!("  appliance: mt-agent ready  {ready:>6.1}");
        println!("  plain image: multi-user    {plain_mu:>6.1}");
        println!("  ready / plain: {}", GOAL_RATIO.judge(ratio, "x"));
        println!("  agent ready: {}", GOAL_READY_SECS.judge(ready, " s"));
        let entries = [Entry {
            workload: "first boot".into(),
            values: vec![Some(ratio), Some(ready), Some(plain_mu)],
            params: format!("accel={} rounds={}", accel.as_str(), self.rounds),
        }];
        for d in ["appliance", "plain"] {
            remove_disks(&work.join(d));
        }
        remove_disks(&work);
        super::history::record(sh, &HISTORY, &entries)
    }
}

/// Boots from fresh overlays until the agent is ready (`appliance`) or the plain image's marker
/// says multi-user.target is reached, then stops the VM.
fn boot(
    sh: &Shell,
    hw: &VmHardware,
    seed: &str,
    work: &Utf8Path,
    accel: Accel,
    appliance: bool,
) -> Result<Boot> {
    let mut vm = Machine::start(sh, hw, seed, work, &[], accel)?;
    let (needle, what) = if appliance {
        (
            mt_contract::guest::READY_PREFIX,
            "the agent's readiness line",
        )
    } else {
        (MULTI_USER, "multi-user.target")
    };
    vm.wait_for(needle, 0, BOOT_LIMIT)
        .with_context(|| format!("waiting for {what} ({})", vm.log))?;
    // The console of the last boot stays; the VM goes with `vm`.
    Ok(Boot {
        seconds: vm.uptime().as_secs_f64(),
    })
}

/// The plain image's hardware: the OVF's, with the OS disk replaced by a raw copy whose root
/// file system has the appliance's units disabled (`systemctl --root`), SSH host keys, and a unit
/// that marks multi-user.target on the console.
fn plain_hardware(
    sh: &Shell,
    hw: &VmHardware,
    def: &appliance::Definition,
    work: &Utf8Path,
) -> Result<VmHardware> {
    let mut plain = hw.clone();
    let Some(os) = plain.disks.iter_mut().find(|d| d.unit == OS_DISK_SCSI_UNIT) else {
        bail!("the OVF declares no disk on SCSI unit {OS_DISK_SCSI_UNIT} (the OS disk)");
    };
    let raw = work.join("plain-os.raw");
    let (image, format) = (&os.image, os.format.as_str());
    cmd!(sh, "qemu-img convert -f {format} -O raw {image} {raw}")
        .run()
        .context("cannot convert the OS disk to a raw image (Debian package: qemu-utils)")?;
    let layout = DiskLayout::for_os_disk(&def.os_disk)?;
    let Some(root) = layout.by_mount("/") else {
        bail!("the definition's OS disk has no / partition");
    };
    let mnt = work.join("plain-root");
    std::fs::create_dir_all(&mnt)?;
    let options = format!("loop,offset={},sizelimit={}", root.offset, root.size);
    cmd!(sh, "mount -o {options} {raw} {mnt}")
        .run()
        .context("cannot mount the plain image's root file system (needs root)")?;
    let changed = (|| -> Result<()> {
        cmd!(
            sh,
            "systemctl --root={mnt} disable --quiet {APPLIANCE_UNITS...}"
        )
        .run()?;
        std::fs::write(
            mnt.join("etc/systemd/system").join(MARKER_UNIT),
            MARKER_UNIT_TEXT,
        )?;
        cmd!(sh, "systemctl --root={mnt} enable --quiet {MARKER_UNIT}").run()?;
        cmd!(sh, "ssh-keygen -q -A -f {mnt}").run()?;
        Ok(())
    })();
    let unmounted = cmd!(sh, "umount {mnt}").run();
    changed.context("cannot disable the appliance's units in the plain image")?;
    unmounted?;
    os.image = raw;
    os.format = DiskFormat::Raw;
    Ok(plain)
}

/// Disk images and overlays are large and worthless after the run; console logs stay.
fn remove_disks(dir: &Utf8Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if [".qcow2", ".vmdk", ".raw", ".sock"]
            .iter()
            .any(|s| n.ends_with(s))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_image_goes_without_every_unit_setup_adds_or_replaces() {
        for u in APPLIANCE_UNITS {
            assert!(u.ends_with(".service"), "{u}");
        }
        assert!(APPLIANCE_UNITS.contains(&"mt-agent.service"));
        assert!(APPLIANCE_UNITS.contains(&"kdump-tools.service"));
    }

    #[test]
    fn the_marker_unit_prints_what_the_bench_waits_for_after_multi_user() {
        assert!(MARKER_UNIT_TEXT.contains(&format!("echo \"{MULTI_USER}\" > /dev/kmsg")));
        assert!(MARKER_UNIT_TEXT.contains("After=multi-user.target\n"));
        assert!(MARKER_UNIT_TEXT.contains("WantedBy=multi-user.target\n"));
    }
}
