//! The boot test's VM: the virtual hardware an OVF declares on throw-away qcow2 overlays over
//! the disk images (the images are never written), a serial console reachable through a Unix
//! socket and logged to a file, and forwarded ports. Every SCSI disk gets a serial number and a
//! WWN, which is what `disk.EnableUUID = TRUE` gives a guest on ESXi
//! (`/dev/disk/by-id/scsi-3<wwn>`).

use super::{nic_device, scsi_device, strip_escapes, Accel, QemuCommand};
use anyhow::{bail, Context, Result};
use appliance::vm_hardware::{CdromDrive, VmHardware};
use camino::{Utf8Path, Utf8PathBuf};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xshell::{cmd, Shell};

/// A stable serial number and NAA-5 WWN per disk, derived from `seed` (the appliance name) and
/// the SCSI unit, so every boot of the same OVA shows the guest the same IDs. The WWN carries
/// VMware's OUI (00:0c:29), as ESXi's IDs do.
pub fn disk_identity(seed: &str, unit: u32) -> (String, u64) {
    let d = Sha256::digest(format!("{seed}:scsi0:{unit}"));
    let tail = u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) & 0xf_ffff_ffff;
    let wwn = (0x5u64 << 60) | (0x000c29u64 << 36) | tail;
    let serial = format!("MT{unit:02}{:010X}", tail);
    (serial, wwn)
}

/// The QEMU drive of a declared CD-ROM: on the `pc` board's own IDE controller at the channel and
/// unit the OVF names (QEMU numbers IDE drives channel * 2 + unit), empty or holding its ISO.
pub fn cdrom_drive(cd: &CdromDrive) -> String {
    let index = cd.ide_bus * 2 + cd.unit;
    match &cd.iso {
        Some(iso) => format!("file={iso},if=ide,index={index},media=cdrom,readonly=on,format=raw"),
        None => format!("if=ide,index={index},media=cdrom,readonly=on"),
    }
}

/// What the console has printed so far, filled by a reader thread.
#[derive(Clone, Default)]
pub struct ConsoleBuffer(Arc<Mutex<Vec<u8>>>);

impl ConsoleBuffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("console lock")).into_owned()
    }
    /// The console output from byte `from` on.
    pub fn text_from(&self, from: usize) -> String {
        self.text_between(from, usize::MAX)
    }
    /// The console output between two byte offsets.
    pub fn text_between(&self, from: usize, to: usize) -> String {
        let buf = self.0.lock().expect("console lock");
        let to = to.min(buf.len());
        String::from_utf8_lossy(&buf[from.min(to)..to]).into_owned()
    }
    pub fn len(&self) -> usize {
        self.0.lock().expect("console lock").len()
    }
    /// The byte offset just past the first `needle` at or after `from`.
    fn find(&self, needle: &str, from: usize) -> Option<usize> {
        let buf = self.0.lock().expect("console lock");
        let hay = &buf[from.min(buf.len())..];
        hay.windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .map(|p| from + p + needle.len())
    }
}

pub struct Machine {
    child: Child,
    console: UnixStream,
    pub buffer: ConsoleBuffer,
    pub log: Utf8PathBuf,
    pub accel: Accel,
    started: Instant,
    /// QEMU's own error output, quoted when it exits early.
    err_log: Utf8PathBuf,
}

pub struct Forward {
    pub host: u16,
    pub guest: u16,
}

impl Machine {
    /// Starts the VM. Overlays and the console socket go into `work`; the console log is
    /// `work/console.log`, written from what the socket delivers. (Not QEMU's own `logfile=`:
    /// when the socket is full the UART retries a byte, and QEMU's log records each attempt, so
    /// a busy host saw `a3bb` logged for `a3b`.)
    pub fn start(
        sh: &Shell,
        hw: &VmHardware,
        seed: &str,
        work: &Utf8Path,
        forwards: &[Forward],
        accel: Accel,
    ) -> Result<Machine> {
        std::fs::create_dir_all(work).with_context(|| format!("cannot create {work}"))?;
        let log = work.join("console.log");
        let socket = work.join("console.sock");
        let _ = std::fs::remove_file(&socket);
        let mut qemu = QemuCommand::new(accel, hw.cpus, hw.memory_mib);
        qemu.opt(
            "-chardev",
            format!("socket,id=console,path={socket},server=on,wait=off"),
        )
        .opt("-serial", "chardev:console")
        .opt("-device", format!("{},id=scsi0", scsi_device(hw.scsi)));
        for d in &hw.disks {
            let overlay = work.join(format!("disk{}.qcow2", d.unit));
            let _ = std::fs::remove_file(&overlay);
            let (image, format) = (&d.image, d.format.as_str());
            cmd!(
                sh,
                "qemu-img create -q -f qcow2 -F {format} -b {image} {overlay}"
            )
            .run()
            .with_context(|| {
                format!("cannot create an overlay over {image} (Debian package: qemu-utils)")
            })?;
            let (serial, wwn) = disk_identity(seed, d.unit);
            qemu.opt(
                "-drive",
                format!(
                    "if=none,id=disk{0},file={overlay},format=qcow2,cache=unsafe",
                    d.unit
                ),
            )
            .opt(
                "-device",
                format!(
                    "scsi-hd,bus=scsi0.0,scsi-id={0},drive=disk{0},serial={serial},wwn={wwn:#018x}",
                    d.unit
                ),
            );
        }
        if let Some(cd) = &hw.cdrom {
            qemu.opt("-drive", cdrom_drive(cd));
        }
        let fwd: String = forwards
            .iter()
            .map(|f| format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest))
            .collect();
        qemu.opt("-netdev", format!("user,id=net0{fwd}"))
            .opt("-device", format!("{},netdev=net0", nic_device(hw.nic)));

        let qemu_log = work.join("qemu.log");
        std::fs::write(work.join("qemu-command.txt"), format!("{}\n", qemu.line()))?;
        let child = qemu.spawn(
            sh,
            std::fs::File::create(&qemu_log)?.into(),
            std::fs::File::create(qemu_log.with_extension("err"))?.into(),
        )?;
        let mut machine_child = child;
        let console = loop {
            match UnixStream::connect(&socket) {
                Ok(s) => break s,
                Err(_) if machine_child.try_wait()?.is_none() => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(_) => {
                    let err =
                        std::fs::read_to_string(qemu_log.with_extension("err")).unwrap_or_default();
                    let first = err.lines().find(|l| l.contains("error")).unwrap_or("");
                    bail!(
                        "qemu-system-x86_64 exited at start: {}\n{err}",
                        first.trim()
                    );
                }
            }
        };
        let buffer = ConsoleBuffer::default();
        let (mut reader, sink) = (console.try_clone()?, buffer.clone());
        let mut log_file =
            std::fs::File::create(&log).with_context(|| format!("cannot create {log}"))?;
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                // The log is for people reading along; a failed write must not stop the
                // console, which the checks read.
                let _ = log_file.write_all(&chunk[..n]);
                sink.0
                    .lock()
                    .expect("console lock")
                    .extend_from_slice(&chunk[..n]);
            }
        });
        Ok(Machine {
            child: machine_child,
            console,
            buffer,
            log,
            accel,
            started: Instant::now(),
            err_log: qemu_log.with_extension("err"),
        })
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits until `needle` appears on the console at or after byte `from`; returns the offset
    /// just past it. Fails if the VM exits or the deadline passes.
    pub fn wait_for(&mut self, needle: &str, from: usize, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = self.buffer.find(needle, from) {
                return Ok(at);
            }
            if let Some(status) = self.child.try_wait()? {
                let err = std::fs::read_to_string(&self.err_log).unwrap_or_default();
                let why = err
                    .lines()
                    .find(|l| l.contains("error"))
                    .map(|l| format!(": {}", l.trim()))
                    .unwrap_or_default();
                bail!("the VM exited ({status}) before the console showed {needle:?}{why}");
            }
            if Instant::now() >= deadline {
                bail!(
                    "the console did not show {needle:?} within {}s",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Types on the serial console.
    pub fn send(&mut self, text: &str) -> Result<()> {
        self.console
            .write_all(text.as_bytes())
            .context("cannot write to the VM's serial console")
    }

    /// Waits for the VM to power itself off.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("the VM did not power off within {}s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last `n` lines of the console, with terminal escape sequences removed.
    pub fn console_tail(&self, n: usize) -> String {
        let text = strip_escapes(&self.buffer.text());
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_ids_are_stable_distinct_and_naa5_with_vmwares_oui() {
        let (s0, w0) = disk_identity("mt-appliance", 0);
        let (s1, w1) = disk_identity("mt-appliance", 1);
        assert_eq!((s0.clone(), w0), disk_identity("mt-appliance", 0));
        assert_ne!(w0, w1);
        assert_ne!(s0, s1);
        assert_eq!(w0 >> 36, 0x5000c29);
        assert!(s0.len() <= 20, "SCSI serials are short: {s0}");
    }

    #[test]
    fn the_declared_cdrom_is_the_ide_drive_at_its_channel_and_unit() {
        let mut cd = CdromDrive {
            ide_bus: 1,
            unit: 0,
            iso: None,
        };
        assert_eq!(cdrom_drive(&cd), "if=ide,index=2,media=cdrom,readonly=on");
        cd.unit = 1;
        cd.iso = Some("/w/ovf-env.iso".into());
        assert_eq!(
            cdrom_drive(&cd),
            "file=/w/ovf-env.iso,if=ide,index=3,media=cdrom,readonly=on,format=raw"
        );
    }
}
