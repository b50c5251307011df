//! Which QEMU accelerator a VM runs under: KVM when it really runs a guest, TCG otherwise. The
//! one choice for every VM (the boot test's and the CentOS install's), the one KVM probe, and
//! the one record of what was found.
//!
//! A `/dev/kvm` node is not proof: on some hosts KVM accepts a guest and never runs it, or aborts
//! once `-cpu host` asks for MSRs it cannot set. So the probe boots a 512-byte boot sector with
//! exactly the arguments a KVM VM gets, which writes one byte to the first serial port and halts;
//! KVM is used only if that byte arrives. The probe ends as soon as the answer is clear: the byte
//! arrived, QEMU exited, or QEMU's vCPU is stuck (see `StuckWatch`); `PROBE_WAIT` only bounds the
//! case where none of these shows.
//!
//! The answer does not change while the host's kernel, QEMU and CPU stay the same, so it is kept
//! in `build/kvm-verdict.toml` under those three and used without probing until one of them
//! changes or the file is deleted. A later, stronger answer is kept there too: when the probe
//! passed but a real kernel then shows no sign of life under KVM, the caller falls back to TCG
//! and calls `remember`, so that the next VM starts under TCG at once.

use super::{QemuCommand, QEMU};
use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use xshell::{cmd, Shell};

/// How long a kernel booting under KVM may take to show it runs (its banner, any console line)
/// before `auto` gives up on KVM and starts the VM again under TCG: where KVM works it takes a
/// second or two. The probe guest is not a kernel; on some hosts it runs and kernels do not.
/// A host pays this wait once: the fallback is remembered (`remember`).
pub const KVM_KERNEL_START: Duration = Duration::from_secs(60);

/// The longest a probe lasts, for the case where neither the byte, nor QEMU's exit, nor a stuck
/// vCPU shows (a working KVM prints the byte within milliseconds). Such a probe proves nothing,
/// so its TCG is not remembered.
const PROBE_WAIT: Duration = Duration::from_secs(5);

/// How long a vCPU may spin or sleep without running the probe guest before it counts as stuck.
/// The BIOS and the boot sector need a few milliseconds of CPU under a working KVM; this leaves
/// room for a slow nested host.
const STUCK_AFTER: Duration = Duration::from_secs(2);

/// How often the probe looks at the serial log, QEMU and its vCPU.
const PROBE_POLL: Duration = Duration::from_millis(50);

const PROBE_BYTE: u8 = b'K';

/// The name QEMU gives the probe's only vCPU thread when asked to name its threads.
const VCPU_THREAD: &str = "CPU 0/KVM";

/// The ioctl that runs a vCPU (`_IO(KVMIO, 0x80)`), as `/proc/<pid>/task/<tid>/syscall` shows it.
const KVM_RUN: &str = "0xae80";

/// The verdict file, in the workspace's `build/` directory.
pub const VERDICT_FILE: &str = "kvm-verdict.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM if the probe guest runs (remembered per host), else TCG.
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

    fn shout(self) -> &'static str {
        match self {
            Accel::Auto => "AUTO",
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
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

/// Where the verdict is kept: `build/kvm-verdict.toml` in the workspace.
pub fn verdict_file() -> Utf8PathBuf {
    verdict_file_in(&crate::util::workspace_root().join("build"))
}

fn verdict_file_in(build_dir: &Utf8Path) -> Utf8PathBuf {
    build_dir.join(VERDICT_FILE)
}

/// Resolves `Auto`: the remembered verdict if it was found on this host as it is now, else the
/// probe's (files go to `dir`), which is then remembered. The others are returned as asked and
/// never read or write the verdict file.
pub fn choose(sh: &Shell, asked: Accel, dir: &Utf8Path) -> Result<Accel> {
    choose_in(&verdict_file(), asked, &ThisHost { sh, dir })
}

/// Records a verdict learnt after the probe, e.g. TCG when the probe passed but the real kernel
/// then showed nothing under KVM, so that the next VM starts under it without trying KVM again.
/// A file that cannot be written only costs that try, so this warns instead of failing.
pub fn remember(sh: &Shell, accel: Accel, reason: &str) {
    let file = verdict_file();
    let done = HostKey::of_this_host(sh).and_then(|key| remember_in(&file, &key, accel, reason));
    match done {
        Ok(()) => eprintln!(
            "accelerator: {} from now on on this host (remembered in {}: {reason}; delete the file to probe again)",
            accel.shout(),
            shown(&file)
        ),
        Err(e) => eprintln!(
            "accelerator: cannot remember {} in {} ({e:#}); make build/ writable, or the next VM tries KVM again",
            accel.shout(),
            shown(&file)
        ),
    }
}

/// What `choose` needs from the host: the kernel's KVM device, the host's key and a probe.
/// Tests answer for it.
trait Host {
    fn kvm_device_usable(&self) -> bool;
    fn key(&self) -> Result<HostKey>;
    fn probe(&self) -> Result<Probe>;
}

struct ThisHost<'a> {
    sh: &'a Shell,
    dir: &'a Utf8Path,
}

impl Host for ThisHost<'_> {
    fn kvm_device_usable(&self) -> bool {
        kvm_device_usable()
    }
    fn key(&self) -> Result<HostKey> {
        HostKey::of_this_host(self.sh)
    }
    fn probe(&self) -> Result<Probe> {
        probe(self.sh, self.dir)
    }
}

fn choose_in(file: &Utf8Path, asked: Accel, host: &dyn Host) -> Result<Accel> {
    if asked != Accel::Auto {
        return Ok(asked);
    }
    // Checked every time: the device's permissions change without the key changing.
    if !host.kvm_device_usable() {
        eprintln!("accelerator: TCG, slower (/dev/kvm is not usable)");
        return Ok(Accel::Tcg);
    }
    let key = match host.key() {
        Ok(key) => Some(key),
        Err(e) => {
            eprintln!("accelerator: probing KVM, and not remembering its verdict: {e:#}");
            None
        }
    };
    if let Some(key) = &key {
        match recall(file, key) {
            Recall::Hit(v) => {
                eprintln!(
                    "accelerator: {} (remembered in {}: {}; delete the file to probe again)",
                    v.verdict.shout(),
                    shown(file),
                    v.reason
                );
                return Ok(v.verdict);
            }
            Recall::Missing => {}
            Recall::Miss(why) => eprintln!("accelerator: probing KVM again: {why}"),
        }
    }
    let start = Instant::now();
    let probe = host.probe()?;
    let took = start.elapsed().as_secs_f64();
    let accel = probe.accel();
    let reason = probe.reason();
    let kept = match (&key, probe.conclusive()) {
        (Some(key), true) => match remember_in(file, key, accel, &reason) {
            Ok(()) => format!("remembered in {}", shown(file)),
            Err(e) => format!("not remembered: {e:#}; make build/ writable"),
        },
        (Some(_), false) => "not remembered: the next VM probes again".to_string(),
        (None, _) => "not remembered".to_string(),
    };
    match accel {
        Accel::Kvm => eprintln!("accelerator: KVM ({reason}; probed in {took:.1}s, {kept})"),
        _ => eprintln!("accelerator: TCG, slower ({reason}; probed in {took:.1}s, {kept})"),
    }
    Ok(accel)
}

/// A path as the user knows it: inside the workspace, relative to it.
fn shown(file: &Utf8Path) -> String {
    let root = crate::util::workspace_root();
    file.strip_prefix(&root).unwrap_or(file).to_string()
}

/// What a verdict depends on: the host's kernel (its KVM), QEMU (how it drives KVM, which MSRs
/// `-cpu host` asks for) and the CPU (what it virtualises).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HostKey {
    /// `uname -r`.
    kernel: String,
    /// The first line of `qemu-system-x86_64 --version`.
    qemu: String,
    /// The first `model name` of /proc/cpuinfo.
    cpu: String,
}

impl HostKey {
    fn of_this_host(sh: &Shell) -> Result<HostKey> {
        let release = "/proc/sys/kernel/osrelease";
        let kernel = std::fs::read_to_string(release)
            .with_context(|| format!("cannot read {release} (is /proc mounted?)"))?;
        let version = cmd!(sh, "{QEMU} --version")
            .quiet()
            .read()
            .context("cannot run qemu-system-x86_64 --version (Debian package: qemu-system-x86)")?;
        let cpuinfo = "/proc/cpuinfo";
        let cpu = std::fs::read_to_string(cpuinfo)
            .with_context(|| format!("cannot read {cpuinfo} (is /proc mounted?)"))?;
        Ok(HostKey {
            kernel: kernel.trim().to_string(),
            qemu: version.lines().next().unwrap_or("").trim().to_string(),
            cpu: cpu_model(&cpu)
                .with_context(|| format!("{cpuinfo} has no \"model name\" line"))?,
        })
    }

    /// What differs from `other`, in words.
    fn differences(&self, other: &HostKey) -> Vec<String> {
        let mut d = Vec::new();
        for (what, a, b) in [
            ("kernel", &self.kernel, &other.kernel),
            ("QEMU", &self.qemu, &other.qemu),
            ("CPU", &self.cpu, &other.cpu),
        ] {
            if a != b {
                d.push(format!("{what} {b:?}, now {a:?}"));
            }
        }
        d
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        (name.trim() == "model name").then(|| value.trim().to_string())
    })
}

/// The verdict file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Remembered {
    verdict: Accel,
    reason: String,
    host: HostKey,
}

enum Recall {
    /// Found on this host as it is now.
    Hit(Remembered),
    /// No file: the first probe on this host (or after the file was deleted).
    Missing,
    /// Found for another host, or not readable as a verdict: why, in words.
    Miss(String),
}

fn recall(file: &Utf8Path, key: &HostKey) -> Recall {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Recall::Missing,
        Err(e) => {
            return Recall::Miss(format!(
                "cannot read {} ({e}); it will be replaced",
                shown(file)
            ))
        }
    };
    let r: Remembered = match toml::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            let e = e.to_string();
            let first = e.lines().next().unwrap_or("");
            return Recall::Miss(format!(
                "{} is not a verdict ({first}); it will be replaced",
                shown(file)
            ));
        }
    };
    if r.verdict == Accel::Auto {
        return Recall::Miss(format!(
            "{} says \"auto\", which is no verdict; it will be replaced",
            shown(file)
        ));
    }
    let diff = key.differences(&r.host);
    if !diff.is_empty() {
        return Recall::Miss(format!(
            "{} was found with {}",
            shown(file),
            diff.join(", ")
        ));
    }
    Recall::Hit(r)
}

fn remember_in(file: &Utf8Path, key: &HostKey, verdict: Accel, reason: &str) -> Result<()> {
    if verdict == Accel::Auto {
        bail!("\"auto\" is no verdict to remember");
    }
    let r = Remembered {
        verdict,
        // One line, so that the message quoting it stays one line.
        reason: reason.split_whitespace().collect::<Vec<_>>().join(" "),
        host: key.clone(),
    };
    let body = toml::to_string(&r).context("cannot render the KVM verdict")?;
    let text = format!(
        "# Which accelerator `cargo xtask` VMs use on this host (xtask/src/qemu/accel.rs), kept\n\
         # while the host's kernel, QEMU and CPU stay as below. Delete this file to probe KVM again.\n\
         {body}"
    );
    crate::util::write_atomic(file, text.as_bytes())
}

/// How a probe ended.
#[derive(Debug, Clone, PartialEq)]
enum Probe {
    /// The byte arrived: KVM runs a guest.
    Ran(Duration),
    /// QEMU exited first (e.g. `-cpu host` asked for an MSR KVM refuses); what it said.
    Exited(String),
    /// QEMU ran, its vCPU did not.
    Stuck(Stuck),
    /// None of these within `PROBE_WAIT`: maybe a host too busy to run QEMU at all.
    TimedOut,
}

impl Probe {
    fn accel(&self) -> Accel {
        match self {
            Probe::Ran(_) => Accel::Kvm,
            _ => Accel::Tcg,
        }
    }

    /// Whether the verdict holds for the host, not just for this moment.
    fn conclusive(&self) -> bool {
        !matches!(self, Probe::TimedOut)
    }

    /// Why, in words (for TCG, beginning with what KVM did not do).
    fn reason(&self) -> String {
        let why = match self {
            Probe::Ran(after) => {
                return format!(
                    "the probe guest ran under KVM with -cpu host, its byte after {} ms",
                    after.as_millis()
                )
            }
            Probe::Exited(said) => format!("QEMU exited under KVM with -cpu host ({said})"),
            Probe::Stuck(Stuck::Spinning(cpu)) => format!(
                "its vCPU used {:.1}s of CPU in vain (the probe needs milliseconds)",
                cpu.as_secs_f64()
            ),
            Probe::Stuck(Stuck::Asleep(slept)) => format!(
                "its vCPU slept {:.1}s inside KVM_RUN and was never woken",
                slept.as_secs_f64()
            ),
            Probe::TimedOut => format!(
                "no byte, no exit and no stuck vCPU within {}s",
                PROBE_WAIT.as_secs()
            ),
        };
        format!("KVM did not run the probe guest: {why}")
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

fn probe(sh: &Shell, dir: &Utf8Path) -> Result<Probe> {
    let disk = dir.join("kvm-probe.img");
    let log = dir.join("kvm-probe.log");
    let err = dir.join("kvm-probe.err");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
    std::fs::write(&disk, probe_sector()).with_context(|| format!("cannot write {disk}"))?;
    std::fs::write(&log, b"").with_context(|| format!("cannot write {log}"))?;
    let stderr = std::fs::File::create(&err).with_context(|| format!("cannot create {err}"))?;
    let mut qemu = QemuCommand::new(Accel::Kvm, 1, 16);
    // Named threads let the watch find the vCPU's (`VCPU_THREAD`); nothing else changes.
    qemu.opt("-name", "kvm-probe,debug-threads=on")
        .opt("-monitor", "none")
        .opt("-serial", format!("file:{log}"))
        .arg("-no-reboot")
        .opt("-drive", format!("file={disk},format=raw,if=floppy"));
    let mut child = qemu.spawn(sh, Stdio::null(), stderr.into())?;
    let result = watch(&mut child, &log, &err, PROBE_WAIT);
    let _ = child.kill();
    let _ = child.wait();
    for f in [&disk, &log, &err] {
        let _ = std::fs::remove_file(f);
    }
    result
}

/// Follows a started probe until it is decided, or `limit` passes.
fn watch(child: &mut Child, log: &Utf8Path, err: &Utf8Path, limit: Duration) -> Result<Probe> {
    let start = Instant::now();
    let mut stuck = StuckWatch::default();
    loop {
        if std::fs::read(log).is_ok_and(|b| b.contains(&PROBE_BYTE)) {
            return Ok(Probe::Ran(start.elapsed()));
        }
        if let Some(status) = child.try_wait()? {
            return Ok(Probe::Exited(what_qemu_said(status, err)));
        }
        if let Some(s) = sample_vcpu(child.id()) {
            if let Some(verdict) = stuck.look(start.elapsed(), s) {
                return Ok(Probe::Stuck(verdict));
            }
        }
        if start.elapsed() >= limit {
            return Ok(Probe::TimedOut);
        }
        std::thread::sleep(PROBE_POLL);
    }
}

/// QEMU's own reason for exiting: its first error line, else its last line, else the status.
fn what_qemu_said(status: ExitStatus, err: &Utf8Path) -> String {
    let text = std::fs::read_to_string(err).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .find(|l| l.contains("error"))
        .or(lines.last())
        .map_or(String::new(), |l| format!(": {l}"));
    format!("{status}{line}")
}

/// How the probe's vCPU was stuck.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stuck {
    /// It used this much CPU time without the probe guest getting anywhere.
    Spinning(Duration),
    /// It slept this long inside KVM_RUN without being woken once.
    Asleep(Duration),
}

/// One look at the probe's vCPU thread, from /proc/<pid>/task/<tid>/.
#[derive(Debug, Clone, Copy, PartialEq)]
struct VcpuSample {
    /// Running or waiting for a CPU (`R` in `stat`): not asleep.
    runnable: bool,
    /// The CPU time it has used, user and system (`utime` + `stime` in `stat`).
    cpu: Duration,
    /// How often it has been switched out (`voluntary_ctxt_switches` + `nonvoluntary_…` in
    /// `status`): while this stands still, the thread has not woken.
    switches: u64,
    /// Whether it sits in the KVM_RUN ioctl (`syscall`), i.e. in the guest as far as the host
    /// can tell.
    in_kvm_run: bool,
}

/// Decides that the probe's vCPU is stuck, from samples of its thread.
///
/// The probe needs a few milliseconds of guest execution, and everything the guest does before
/// its byte (the BIOS's port I/O, timer interrupts while it waits) either returns to QEMU or
/// wakes the vCPU thread. So there are two observable ways of being stuck, and each shows
/// within `STUCK_AFTER`:
/// - spinning: the vCPU thread has used `STUCK_AFTER` of CPU time. A hung KVM that keeps
///   re-entering the guest without progress (seen with nested KVM) burns a whole core inside
///   KVM_RUN, as system time; a working one is done long before.
/// - asleep: the thread sits in KVM_RUN, not runnable, and its context-switch count has not
///   moved for `STUCK_AFTER`, so it has not been woken once: the guest halted with nothing to
///   wake it, or the host never schedules it. (A BIOS waiting on its timer is woken 18 times a
///   second; before the machine starts the thread waits in QEMU, not in KVM_RUN.)
///
/// CPU time, not wall time, is what counts for spinning, so a busy host only delays the verdict.
/// A vCPU that is runnable but never gets a CPU shows neither; `PROBE_WAIT` ends that probe, and
/// its verdict is not remembered.
#[derive(Default)]
struct StuckWatch {
    /// When the thread was first seen asleep in KVM_RUN, and its switch count then.
    asleep_since: Option<(Duration, u64)>,
}

impl StuckWatch {
    fn look(&mut self, at: Duration, s: VcpuSample) -> Option<Stuck> {
        if s.cpu >= STUCK_AFTER {
            return Some(Stuck::Spinning(s.cpu));
        }
        let asleep = s.in_kvm_run && !s.runnable;
        match self.asleep_since {
            Some((since, switches)) if asleep && switches == s.switches => {
                let slept = at.saturating_sub(since);
                if slept >= STUCK_AFTER {
                    return Some(Stuck::Asleep(slept));
                }
            }
            _ => self.asleep_since = asleep.then_some((at, s.switches)),
        }
        None
    }
}

/// Samples the vCPU thread of QEMU process `pid`; None while there is none (QEMU starting) or
/// /proc cannot be read.
fn sample_vcpu(pid: u32) -> Option<VcpuSample> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let dir = task.path();
        let is_vcpu = std::fs::read_to_string(dir.join("comm"))
            .is_ok_and(|c| c.trim_end_matches('\n') == VCPU_THREAD);
        if !is_vcpu {
            continue;
        }
        let (state, ticks) = parse_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
        let switches = parse_switches(&std::fs::read_to_string(dir.join("status")).ok()?)?;
        // Readable by the process that started QEMU; if not, "asleep" is never claimed.
        let in_kvm_run = std::fs::read_to_string(dir.join("syscall")).is_ok_and(|s| in_kvm_run(&s));
        return Some(VcpuSample {
            runnable: state == 'R',
            cpu: Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second()),
            switches,
            in_kvm_run,
        });
    }
    None
}

/// The state and utime + stime (clock ticks) of a `/proc/<pid>/task/<tid>/stat` line. The
/// thread's name is in parentheses and may hold spaces and parentheses ("CPU 0/KVM"), so the
/// fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let state = f.first()?.chars().next()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((state, utime + stime))
}

fn parse_switches(status: &str) -> Option<u64> {
    let field = |name: &str| {
        status.lines().find_map(|l| {
            let v = l.strip_prefix(name)?.strip_prefix(':')?;
            v.trim().parse::<u64>().ok()
        })
    };
    Some(field("voluntary_ctxt_switches")? + field("nonvoluntary_ctxt_switches")?)
}

/// Whether a `/proc/<pid>/task/<tid>/syscall` line is the KVM_RUN ioctl (a running thread shows
/// "running" instead).
fn in_kvm_run(syscall: &str) -> bool {
    let f: Vec<&str> = syscall.split_whitespace().collect();
    f.first() == Some(&libc::SYS_ioctl.to_string().as_str()) && f.get(2) == Some(&KVM_RUN)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests;
