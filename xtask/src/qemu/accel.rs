//! Which QEMU accelerator a VM runs under: KVM when it really runs a guest, TCG otherwise. The
//! one choice for every VM (the boot test's and the CentOS install's), and the one KVM probe.
//!
//! A `/dev/kvm` node is not proof: on some hosts KVM accepts a guest and never runs it, or aborts
//! once `-cpu host` asks for MSRs it cannot set. So the probe boots a 512-byte boot sector with
//! exactly the arguments a KVM VM gets, which writes one byte to the first serial port and halts;
//! KVM is used only if that byte arrives within a few seconds.

use super::QemuCommand;
use anyhow::{Context, Result};
use camino::Utf8Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use xshell::Shell;

/// How long a kernel booting under KVM may take to show it runs (its banner, any console line)
/// before `auto` gives up on KVM and starts the VM again under TCG: where KVM works it takes a
/// second or two. The probe guest is not a kernel; on some hosts it runs and kernels do not.
pub const KVM_KERNEL_START: Duration = Duration::from_secs(60);

/// How long a working KVM may take to print the probe's byte (it takes milliseconds).
const PROBE_WAIT: Duration = Duration::from_secs(5);
const PROBE_BYTE: u8 = b'K';

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM if the probe guest runs, else TCG.
    Auto,
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// QEMU's `-accel` and `-cpu` values. Only a chosen accelerator runs a VM (`choose`
    /// resolves `Auto` first).
    pub fn qemu_args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg,thread=multi", "-cpu", "qemu64"],
            Accel::Auto => panic!("a VM was started before its accelerator was chosen"),
        }
    }
}

/// Whether `/dev/kvm` can be opened (which does not yet mean KVM runs a guest).
pub fn kvm_device_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// The boot sector: `mov dx,0x3f8; mov al,'K'; out dx,al; cli; hlt; jmp $-1`, then the 0x55AA
/// signature that makes the BIOS boot it.
fn probe_sector() -> [u8; 512] {
    let code = [
        0xba, 0xf8, 0x03, 0xb0, PROBE_BYTE, 0xee, 0xfa, 0xf4, 0xeb, 0xfd,
    ];
    let mut s = [0u8; 512];
    s[..code.len()].copy_from_slice(&code);
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

/// Resolves `Auto` by probing KVM (files go to `dir`); the others are returned as asked.
pub fn choose(sh: &Shell, asked: Accel, dir: &Utf8Path) -> Result<Accel> {
    if asked != Accel::Auto {
        return Ok(asked);
    }
    if !kvm_device_usable() {
        eprintln!("accelerator: /dev/kvm is not usable, using TCG (slower)");
        return Ok(Accel::Tcg);
    }
    let works = kvm_runs_a_guest(sh, dir)?;
    if works {
        eprintln!("accelerator: KVM");
        Ok(Accel::Kvm)
    } else {
        eprintln!(
            "accelerator: /dev/kvm exists but the probe guest did not run within {}s, using TCG (slower)",
            PROBE_WAIT.as_secs()
        );
        Ok(Accel::Tcg)
    }
}

fn kvm_runs_a_guest(sh: &Shell, dir: &Utf8Path) -> Result<bool> {
    let disk = dir.join("kvm-probe.img");
    let log = dir.join("kvm-probe.log");
    std::fs::write(&disk, probe_sector()).with_context(|| format!("cannot write {disk}"))?;
    std::fs::write(&log, b"").with_context(|| format!("cannot write {log}"))?;
    let mut qemu = QemuCommand::new(Accel::Kvm, 1, 16);
    qemu.opt("-monitor", "none")
        .opt("-serial", format!("file:{log}"))
        .arg("-no-reboot")
        .opt("-drive", format!("file={disk},format=raw,if=floppy"));
    let mut child = qemu.spawn(sh, Stdio::null(), Stdio::null())?;
    let start = Instant::now();
    let mut seen = false;
    while start.elapsed() < PROBE_WAIT {
        if std::fs::read(&log).is_ok_and(|b| b.contains(&PROBE_BYTE)) {
            seen = true;
            break;
        }
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&disk);
    let _ = std::fs::remove_file(&log);
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_a_bootable_sector() {
        let s = probe_sector();
        assert_eq!(&s[510..], &[0x55, 0xaa]);
        assert!(s[..10].contains(&PROBE_BYTE));
    }

    #[test]
    fn an_asked_accelerator_is_used_without_probing() {
        let sh = Shell::new().unwrap();
        let nowhere = Utf8Path::new("/nonexistent");
        assert_eq!(choose(&sh, Accel::Tcg, nowhere).unwrap(), Accel::Tcg);
        assert_eq!(choose(&sh, Accel::Kvm, nowhere).unwrap(), Accel::Kvm);
    }
}
