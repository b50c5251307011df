//! Which QEMU accelerator the install uses: KVM when it really runs a guest, TCG otherwise.
//!
//! A `/dev/kvm` node is not proof: on some hosts KVM accepts a guest and never runs it. So the
//! probe boots a 512-byte boot sector that writes one byte to the first serial port and halts;
//! KVM is used only if that byte arrives within a few seconds.

use anyhow::{Context, Result};
use camino::Utf8Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use xshell::{cmd, Shell};

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
    /// QEMU's `-accel` and `-cpu` values.
    pub fn qemu_args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            _ => ["-accel", "tcg,thread=multi", "-cpu", "qemu64"],
        }
    }
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
    if !crate::qemu::kvm_device_usable() {
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
    let serial = format!("file:{log}");
    let floppy = format!("file={disk},format=raw,if=floppy");
    // The probe runs with exactly the accelerator arguments the install would use: on some
    // hosts KVM runs a plain guest but aborts once `-cpu host` asks for MSRs it cannot set.
    let accel = Accel::Kvm.qemu_args();
    let mut qemu: Command = cmd!(
        sh,
        "qemu-system-x86_64 {accel...} -machine pc -m 16 -nodefaults -display none -monitor none -serial {serial} -no-reboot -drive {floppy}"
    )
    .into();
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
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
