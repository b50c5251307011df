//! The one QEMU launcher: every VM the pipeline starts (the boot test's `Machine`, the CentOS
//! install, the KVM probe) is a `QemuCommand`, so they share the board, the accelerator's
//! arguments, the absence of default devices and display, and the rule that QEMU dies with the
//! process that started it. What each VM attaches (disks, consoles, network) is its caller's.
//!
//! Hardware mapping (QEMU 7.2): VMware Paravirtual SCSI -> `pvscsi`, LSI Logic SAS ->
//! `mptsas1068`, vmxnet3 -> `vmxnet3`, E1000 -> `e1000`. LSI Logic Parallel (LSI53C1030) has no
//! QEMU model; `lsi53c895a` (same vendor, older parallel SCSI chip, `sym53c8xx` driver in the
//! guest) stands in, so that mapping does not prove the guest's `mptspi` driver.

pub mod accel;
pub mod machine;

use anyhow::{Context, Result};
use appliance::definition::{NicKind, ScsiController};
use std::process::{Child, Command, Stdio};
use xshell::Shell;

pub use accel::Accel;
pub use machine::{disk_identity, Forward, Machine};

pub const QEMU: &str = "qemu-system-x86_64";

/// One QEMU command line, built as its VM needs it.
pub struct QemuCommand {
    args: Vec<String>,
}

impl QemuCommand {
    /// The `pc` board with `accel` (already chosen: see `accel::choose`), `cpus` and
    /// `memory_mib`, no default devices and no display.
    pub fn new(accel: Accel, cpus: u32, memory_mib: u64) -> QemuCommand {
        let mut args: Vec<String> = accel.qemu_args().map(String::from).into();
        args.extend([
            "-machine".to_string(),
            "pc".into(),
            "-smp".into(),
            cpus.to_string(),
            "-m".into(),
            format!("{memory_mib}M"),
            "-nodefaults".into(),
            "-display".into(),
            "none".into(),
        ]);
        QemuCommand { args }
    }

    pub fn arg(&mut self, arg: impl Into<String>) -> &mut QemuCommand {
        self.args.push(arg.into());
        self
    }

    /// An option and its value, e.g. `("-drive", "file=...")`.
    pub fn opt(&mut self, name: &str, value: impl Into<String>) -> &mut QemuCommand {
        self.arg(name).arg(value)
    }

    /// The command as a shell would show it (kept next to a VM's logs).
    pub fn line(&self) -> String {
        format!("{QEMU} {}", self.args.join(" "))
    }

    /// Starts QEMU in the shell's directory, its standard input closed. QEMU must not outlive
    /// the build when that is killed (SIGTERM, CI time-outs): a `Drop` only runs on an orderly
    /// exit, so the kernel kills QEMU when its parent dies.
    pub fn spawn(&self, sh: &Shell, stdout: Stdio, stderr: Stdio) -> Result<Child> {
        let mut command = Command::new(QEMU);
        // SAFETY: prctl is async-signal-safe and touches only the child being set up.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
            .current_dir(sh.current_dir())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .context("cannot run qemu-system-x86_64 (Debian package: qemu-system-x86)")
    }
}

pub fn scsi_device(c: ScsiController) -> &'static str {
    match c {
        ScsiController::Paravirtual => "pvscsi",
        ScsiController::LsilogicSas => "mptsas1068",
        ScsiController::Lsilogic => "lsi53c895a",
    }
}

pub fn nic_device(n: NicKind) -> &'static str {
    match n {
        NicKind::Vmxnet3 => "vmxnet3",
        NicKind::E1000 => "e1000",
    }
}

/// Removes ANSI escape sequences (colours, cursor moves) that systemd and GRUB print.
pub fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// A free TCP port on loopback for a forward (the kernel picks it; QEMU binds it moments later).
pub fn free_local_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free local port")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ovf_controller_and_nic_has_a_qemu_model() {
        assert_eq!(scsi_device(ScsiController::Paravirtual), "pvscsi");
        assert_eq!(scsi_device(ScsiController::LsilogicSas), "mptsas1068");
        assert_eq!(scsi_device(ScsiController::Lsilogic), "lsi53c895a");
        assert_eq!(nic_device(NicKind::Vmxnet3), "vmxnet3");
        assert_eq!(nic_device(NicKind::E1000), "e1000");
    }

    #[test]
    fn every_vm_starts_with_the_accelerators_arguments_on_the_pc_board() {
        let mut c = QemuCommand::new(Accel::Kvm, 2, 2048);
        c.opt("-serial", "file:console.log").arg("-no-reboot");
        assert_eq!(
            c.line(),
            "qemu-system-x86_64 -accel kvm -cpu host -machine pc -smp 2 -m 2048M -nodefaults \
             -display none -serial file:console.log -no-reboot"
        );
        let tcg = QemuCommand::new(Accel::Tcg, 1, 16).line();
        assert!(
            tcg.starts_with("qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64 -machine pc"),
            "{tcg}"
        );
    }

    #[test]
    fn console_escapes_are_removed() {
        assert_eq!(
            strip_escapes("[\u{1b}[0;32m  OK  \u{1b}[0m] Started\r\n"),
            "[  OK  ] Started\n"
        );
    }
}
