//! Running a VM in QEMU with the virtual hardware an OVF declares: the VMware device models
//! QEMU has, throw-away qcow2 overlays over the disk images (the images are never written),
//! a serial console reachable through a Unix socket and logged to a file, and forwarded ports.
//!
//! Hardware mapping (QEMU 7.2): VMware Paravirtual SCSI -> `pvscsi`, LSI Logic SAS ->
//! `mptsas1068`, vmxnet3 -> `vmxnet3`, E1000 -> `e1000`. LSI Logic Parallel (LSI53C1030) has no
//! QEMU model; `lsi53c895a` (same vendor, older parallel SCSI chip, `sym53c8xx` driver in the
//! guest) stands in, so that mapping does not prove the guest's `mptspi` driver.
//! Every SCSI disk gets a serial number and a WWN, which is what `disk.EnableUUID = TRUE` gives
//! a guest on ESXi (`/dev/disk/by-id/scsi-3<wwn>`).

use anyhow::{bail, Context, Result};
use appliance::definition::{NicKind, ScsiController};
use camino::{Utf8Path, Utf8PathBuf};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xshell::{cmd, Shell};

#[derive(Debug, Clone)]
pub struct VmHardware {
    pub cpus: u32,
    pub memory_mib: u64,
    pub scsi: ScsiController,
    pub nic: NicKind,
    pub disks: Vec<VmDisk>,
    /// An ISO image on an IDE CD-ROM (the OVF `iso` transport carries `ovf-env.xml` this way).
    pub cdrom: Option<Utf8PathBuf>,
}

#[derive(Debug, Clone)]
pub struct VmDisk {
    pub image: Utf8PathBuf,
    /// QEMU's name of the image format: `vmdk` or `raw`.
    pub format: &'static str,
    pub unit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
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

/// Whether `/dev/kvm` can be opened. A node that opens can still be broken (guests hang in
/// the kernel on some hosts), which `boot-test` detects with a short test boot.
pub fn kvm_device_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
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
    /// `work/console.log`.
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
        let mut args: Vec<String> = vec![
            "-accel".into(),
            accel.as_str().into(),
            "-machine".into(),
            "pc".into(),
            "-smp".into(),
            hw.cpus.to_string(),
            "-m".into(),
            format!("{}M", hw.memory_mib),
            "-nodefaults".into(),
            "-display".into(),
            "none".into(),
            "-chardev".into(),
            format!(
                "socket,id=console,path={socket},server=on,wait=off,logfile={log},logappend=off"
            ),
            "-serial".into(),
            "chardev:console".into(),
            "-device".into(),
            format!("{},id=scsi0", scsi_device(hw.scsi)),
        ];
        if accel == Accel::Kvm {
            args.extend(["-cpu".into(), "host".into()]);
        }
        for d in &hw.disks {
            let overlay = work.join(format!("disk{}.qcow2", d.unit));
            let _ = std::fs::remove_file(&overlay);
            let (image, format) = (&d.image, d.format);
            cmd!(
                sh,
                "qemu-img create -q -f qcow2 -F {format} -b {image} {overlay}"
            )
            .run()
            .with_context(|| {
                format!("cannot create an overlay over {image} (Debian package: qemu-utils)")
            })?;
            let (serial, wwn) = disk_identity(seed, d.unit);
            args.push("-drive".into());
            args.push(format!(
                "if=none,id=disk{0},file={overlay},format=qcow2,cache=unsafe",
                d.unit
            ));
            args.push("-device".into());
            args.push(format!(
                "scsi-hd,bus=scsi0.0,scsi-id={0},drive=disk{0},serial={serial},wwn={wwn:#018x}",
                d.unit
            ));
        }
        if let Some(iso) = &hw.cdrom {
            // The `pc` board's own IDE controller, as vSphere attaches the transport's CD.
            args.push("-drive".into());
            args.push(format!(
                "file={iso},if=ide,index=2,media=cdrom,readonly=on,format=raw"
            ));
        }
        let fwd: String = forwards
            .iter()
            .map(|f| format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest))
            .collect();
        args.push("-netdev".into());
        args.push(format!("user,id=net0{fwd}"));
        args.push("-device".into());
        args.push(format!("{},netdev=net0", nic_device(hw.nic)));

        let qemu_log = work.join("qemu.log");
        std::fs::write(
            work.join("qemu-command.txt"),
            format!("qemu-system-x86_64 {}\n", args.join(" ")),
        )?;
        let mut command = Command::new("qemu-system-x86_64");
        // QEMU must not outlive the test when it is killed (SIGTERM, CI time-outs): Drop only
        // runs on an orderly exit.
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
        let child = command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&qemu_log)?)
            .stderr(std::fs::File::create(qemu_log.with_extension("err"))?)
            .spawn()
            .context("cannot run qemu-system-x86_64 (Debian package: qemu-system-x86)")?;
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
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
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
    fn every_ovf_controller_and_nic_has_a_qemu_model() {
        assert_eq!(scsi_device(ScsiController::Paravirtual), "pvscsi");
        assert_eq!(scsi_device(ScsiController::LsilogicSas), "mptsas1068");
        assert_eq!(scsi_device(ScsiController::Lsilogic), "lsi53c895a");
        assert_eq!(nic_device(NicKind::Vmxnet3), "vmxnet3");
        assert_eq!(nic_device(NicKind::E1000), "e1000");
    }

    #[test]
    fn console_escapes_are_removed() {
        assert_eq!(
            strip_escapes("[\u{1b}[0;32m  OK  \u{1b}[0m] Started\r\n"),
            "[  OK  ] Started\n"
        );
    }
}
