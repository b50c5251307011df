//! Runs the CentOS installer headless in QEMU and follows its serial console until it powers off.
//!
//! Success is QEMU exiting after the console printed the kickstart's `POST_OK_MARKER` line;
//! failure is one of the installer's known hang messages (the installer then waits forever, so
//! QEMU is stopped at once), `%post`'s failure line, QEMU exiting without the success line, no
//! disk or console activity for the idle limit, or the global time-out. The whole console is kept
//! in a log file; a failure prints the lines around the cause.

use anyhow::{Context, Result};
use appliance::kickstart::{POST_FAILED_MARKER, POST_OK_MARKER};
use camino::{Utf8Path, Utf8PathBuf};
use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use xshell::Shell;

use crate::qemu::{Accel, QemuCommand};

/// Console text after which the RHEL 6 loader or Anaconda waits for a person: seeing one means
/// the unattended install has failed (anaconda `loader/kickstart.c`, `cmdline.py`, `kickstart.py`).
pub const HANG_MARKERS: [&str; 7] = [
    "Kickstart Error",
    "Can't have a question in command line mode!",
    "missing required information",
    "Traceback",
    "Cannot find kickstart file",
    "Error downloading kickstart file",
    "The following error was found while parsing your kickstart configuration",
];

/// Console text that tells the user how far the install has come (first occurrence only).
const PHASES: [(&str, &str); 6] = [
    ("Linux version", "kernel started"),
    ("Running anaconda", "Anaconda started"),
    ("Formatting", "formatting the disks"),
    ("Installing", "installing packages"),
    ("post-installation", "running %post"),
    (POST_OK_MARKER, "%post succeeded, waiting for the power-off"),
];

/// Lines kept for the excerpt printed on failure.
const EXCERPT_LINES: usize = 40;
/// A console "line" without a newline (full-screen text UI) is cut here.
const MAX_PARTIAL: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The whole install.
    pub timeout: Duration,
    /// No change to either disk image and no console output for this long.
    pub idle: Duration,
}

/// Everything QEMU needs for one install.
pub struct Install<'a> {
    pub kernel: &'a Utf8Path,
    pub initrd: &'a Utf8Path,
    pub append: &'a str,
    pub iso: &'a Utf8Path,
    pub extras: &'a Utf8Path,
    pub os_disk: &'a Utf8Path,
    pub retention_disk: &'a Utf8Path,
    pub console_log: &'a Utf8Path,
    pub accel: Accel,
    pub memory_mib: u64,
    pub cpus: u32,
    pub limits: Limits,
}

/// Creates (or replaces) a sparse raw disk image of exactly `bytes`.
pub fn create_disk(path: &Utf8Path, bytes: u64) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let f = std::fs::File::create(path).with_context(|| format!("cannot create {path}"))?;
    f.set_len(bytes)
        .with_context(|| format!("cannot size {path} to {bytes} bytes"))?;
    Ok(())
}

/// What the console said, fed as it arrives.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing decisive yet.
    Running,
    /// The kickstart's success line was printed (the install is done once QEMU exits).
    PostOk,
    /// A hang or failure line: the text that matched and the line it was in.
    Failed { marker: String, line: String },
}

/// Follows console bytes: splits them into lines with terminal escapes removed, keeps the last
/// lines for an excerpt, reports phases and decides success or failure.
pub struct ConsoleWatch {
    partial: Vec<u8>,
    recent: VecDeque<String>,
    pub lines: u64,
    post_ok: bool,
    phases_seen: Vec<&'static str>,
}

impl Default for ConsoleWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleWatch {
    pub fn new() -> ConsoleWatch {
        ConsoleWatch {
            partial: Vec::new(),
            recent: VecDeque::new(),
            lines: 0,
            post_ok: false,
            phases_seen: Vec::new(),
        }
    }

    /// Feeds new console bytes; `on_phase` is called with each phase reached for the first time.
    pub fn feed(&mut self, bytes: &[u8], mut on_phase: impl FnMut(&str)) -> Verdict {
        let mut verdict = Verdict::Running;
        for &b in bytes {
            if b == b'\n' || b == b'\r' || self.partial.len() >= MAX_PARTIAL {
                let line = strip_terminal_codes(&String::from_utf8_lossy(&self.partial));
                self.partial.clear();
                if b != b'\n' && b != b'\r' {
                    self.partial.push(b);
                }
                if line.trim().is_empty() {
                    continue;
                }
                if let v @ Verdict::Failed { .. } = self.check_line(&line, &mut on_phase) {
                    if verdict == Verdict::Running || verdict == Verdict::PostOk {
                        verdict = v;
                    }
                }
                self.lines += 1;
                self.recent.push_back(line);
                if self.recent.len() > EXCERPT_LINES {
                    self.recent.pop_front();
                }
            } else {
                self.partial.push(b);
            }
        }
        // A full-screen dialog may never end its line: look at the unfinished one too.
        if verdict == Verdict::Running && !self.partial.is_empty() {
            let line = strip_terminal_codes(&String::from_utf8_lossy(&self.partial));
            if let Some(m) = HANG_MARKERS.iter().find(|m| line.contains(**m)) {
                verdict = Verdict::Failed {
                    marker: m.to_string(),
                    line,
                };
            }
        }
        if verdict == Verdict::Running && self.post_ok {
            verdict = Verdict::PostOk;
        }
        verdict
    }

    fn check_line(&mut self, line: &str, on_phase: &mut impl FnMut(&str)) -> Verdict {
        for (needle, phase) in PHASES {
            if !self.phases_seen.contains(&phase) && line.contains(needle) {
                self.phases_seen.push(phase);
                on_phase(phase);
            }
        }
        let trimmed = line.trim();
        if trimmed == POST_OK_MARKER {
            self.post_ok = true;
        }
        if trimmed.starts_with(POST_FAILED_MARKER) {
            return Verdict::Failed {
                marker: POST_FAILED_MARKER.to_string(),
                line: trimmed.to_string(),
            };
        }
        if let Some(m) = HANG_MARKERS.iter().find(|m| line.contains(**m)) {
            return Verdict::Failed {
                marker: m.to_string(),
                line: trimmed.to_string(),
            };
        }
        Verdict::Running
    }

    pub fn post_ok(&self) -> bool {
        self.post_ok
    }

    /// The last lines (and the unfinished one), for an error message.
    pub fn excerpt(&self) -> String {
        let mut out: Vec<String> = self.recent.iter().cloned().collect();
        let partial = strip_terminal_codes(&String::from_utf8_lossy(&self.partial));
        if !partial.trim().is_empty() {
            out.push(partial);
        }
        out.iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Removes ANSI/VT100 escape sequences and other control characters (a text-mode installer draws
/// its screens with them), keeping tabs.
pub fn strip_terminal_codes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            match chars.next() {
                Some('[') => {
                    // CSI: parameters and intermediates, then one final byte in @..~.
                    for d in chars.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                }
                Some('(' | ')' | '*' | '+' | '#') => {
                    chars.next();
                }
                _ => {}
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// Kills QEMU if the build stops for any reason while it runs.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn qemu_command(i: &Install) -> QemuCommand {
    // IDE on the pc machine: the disks are the first two ATA devices, so the installer calls them
    // sda and sdb as the kickstart expects; the two CDs follow. cache=unsafe skips the guest's
    // flushes: QEMU writes everything when it exits, and a crashed install is redone anyway.
    let mut qemu = QemuCommand::new(i.accel, i.cpus, i.memory_mib);
    qemu.opt("-monitor", "none")
        .opt("-serial", format!("file:{}", i.console_log))
        .arg("-no-reboot")
        .opt("-kernel", i.kernel.as_str())
        .opt("-initrd", i.initrd.as_str())
        .opt("-append", i.append)
        .opt(
            "-drive",
            format!(
                "file={},format=raw,if=ide,index=0,media=disk,cache=unsafe",
                i.os_disk
            ),
        )
        .opt(
            "-drive",
            format!(
                "file={},format=raw,if=ide,index=1,media=disk,cache=unsafe",
                i.retention_disk
            ),
        )
        .opt(
            "-drive",
            format!(
                "file={},format=raw,if=ide,index=2,media=cdrom,readonly=on",
                i.iso
            ),
        )
        .opt(
            "-drive",
            format!(
                "file={},format=raw,if=ide,index=3,media=cdrom,readonly=on",
                i.extras
            ),
        )
        .opt("-nic", "user,model=e1000,restrict=on");
    qemu
}

/// Allocated blocks and modification time of each disk: a write changes one or the other.
fn disk_state(disks: &[&Utf8Path]) -> Vec<(u64, i64, i64)> {
    disks
        .iter()
        .map(|d| {
            std::fs::metadata(d)
                .map(|m| (m.blocks(), m.mtime(), m.mtime_nsec()))
                .unwrap_or_default()
        })
        .collect()
}

fn allocated_mib(disks: &[&Utf8Path]) -> u64 {
    disk_state(disks).iter().map(|s| s.0 * 512).sum::<u64>() >> 20
}

fn minutes(d: Duration) -> String {
    format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
}

/// Runs the install; Ok once QEMU powered off after `%post` reported success.
pub fn run(sh: &Shell, i: &Install) -> Result<Duration> {
    std::fs::write(i.console_log, b"")
        .with_context(|| format!("cannot create {}", i.console_log))?;
    let qemu_log = Utf8PathBuf::from(format!("{}.qemu-stderr", i.console_log));
    let stderr =
        std::fs::File::create(&qemu_log).with_context(|| format!("cannot create {qemu_log}"))?;
    eprintln!(
        "installing in QEMU ({:?}, {} MiB, {} CPUs); console: {}",
        i.accel, i.memory_mib, i.cpus, i.console_log
    );
    let child = qemu_command(i).spawn(sh, Stdio::null(), stderr.into())?;
    let mut qemu = Running(child);
    let mut console = std::fs::File::open(i.console_log)?;
    let mut read_to = 0u64;
    let mut watch = ConsoleWatch::new();
    let disks = [i.os_disk, i.retention_disk];
    let start = Instant::now();
    let mut last_activity = start;
    let mut last_disks = disk_state(&disks);
    let mut last_status = start;
    let fail = |watch: &ConsoleWatch, why: String| -> anyhow::Error {
        anyhow::anyhow!(
            "the CentOS install failed: {why}\nlast console lines:\n{}\nthe whole console is in {}",
            watch.excerpt(),
            i.console_log
        )
    };
    loop {
        let exited = qemu.0.try_wait()?;
        // Read what the console has after checking for exit, so the last lines are never missed.
        let mut fresh = Vec::new();
        console.seek(SeekFrom::Start(read_to))?;
        console.read_to_end(&mut fresh)?;
        read_to += fresh.len() as u64;
        if !fresh.is_empty() {
            last_activity = Instant::now();
        }
        let verdict = watch.feed(&fresh, |phase| {
            eprintln!("[{}] {phase}", minutes(start.elapsed()));
        });
        if let Verdict::Failed { marker, line } = verdict {
            drop(qemu);
            return Err(fail(
                &watch,
                format!("the console printed {marker:?} ({line:?}); QEMU was stopped"),
            ));
        }
        if let Some(status) = exited {
            if watch.post_ok() {
                eprintln!(
                    "[{}] installed: QEMU powered off after {POST_OK_MARKER} ({} console lines)",
                    minutes(start.elapsed()),
                    watch.lines
                );
                return Ok(start.elapsed());
            }
            let stderr = std::fs::read_to_string(&qemu_log).unwrap_or_default();
            return Err(fail(
                &watch,
                format!(
                    "QEMU exited ({status}) before the console printed {POST_OK_MARKER}{}",
                    if stderr.trim().is_empty() {
                        String::new()
                    } else {
                        format!("; QEMU said: {}", stderr.trim())
                    }
                ),
            ));
        }
        let now_disks = disk_state(&disks);
        if now_disks != last_disks {
            last_disks = now_disks;
            last_activity = Instant::now();
        }
        if last_activity.elapsed() >= i.limits.idle {
            drop(qemu);
            return Err(fail(
                &watch,
                format!(
                    "no disk or console activity for {} (idle limit); QEMU was stopped",
                    minutes(i.limits.idle)
                ),
            ));
        }
        if start.elapsed() >= i.limits.timeout {
            drop(qemu);
            return Err(fail(
                &watch,
                format!(
                    "not finished after {} (time-out); QEMU was stopped",
                    minutes(i.limits.timeout)
                ),
            ));
        }
        if last_status.elapsed() >= Duration::from_secs(60) {
            last_status = Instant::now();
            eprintln!(
                "[{}] {} console lines, {} MiB written to the disks",
                minutes(start.elapsed()),
                watch.lines,
                allocated_mib(&disks)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(text: &str) -> (ConsoleWatch, Verdict, Vec<String>) {
        let mut w = ConsoleWatch::new();
        let mut phases = Vec::new();
        let mut last = Verdict::Running;
        // In small pieces, as a serial log grows.
        for chunk in text.as_bytes().chunks(7) {
            let v = w.feed(chunk, |p| phases.push(p.to_string()));
            if v != Verdict::Running {
                last = v;
                if matches!(last, Verdict::Failed { .. }) {
                    break;
                }
            }
        }
        (w, last, phases)
    }

    #[test]
    fn the_success_line_is_recognised_alone_on_its_line() {
        let (w, v, phases) = feed_all(&format!(
            "Linux version 2.6.32\r\nfoo\n{POST_OK_MARKER}\r\nreboot: Power down\n"
        ));
        assert!(w.post_ok());
        assert_eq!(v, Verdict::PostOk);
        assert_eq!(phases.first().map(String::as_str), Some("kernel started"));
        // A line that merely mentions it (e.g. a shell trace) is not success.
        let (w, _, _) = feed_all(&format!("+ echo {POST_OK_MARKER}\n"));
        assert!(!w.post_ok());
    }

    #[test]
    fn a_newt_dialog_without_a_newline_fails_with_its_marker() {
        let screen = "\u{1b}[1;1H\u{1b}[0;37;44m\u{e}lqqq\u{f}\u{1b}[2;10HKickstart Error\u{1b}[3;3HThe following problem";
        let (w, v, _) = feed_all(screen);
        match v {
            Verdict::Failed { marker, .. } => assert_eq!(marker, "Kickstart Error"),
            other => panic!("{other:?}"),
        }
        assert!(w.excerpt().contains("Kickstart Error"), "{}", w.excerpt());
    }

    #[test]
    fn post_failure_and_anaconda_hangs_fail() {
        for text in [
            format!("{POST_FAILED_MARKER}: cannot install /usr/sbin/mt-agent\n"),
            "Can't have a question in command line mode!\n".to_string(),
            "Traceback (most recent call last):\n".to_string(),
        ] {
            let (_, v, _) = feed_all(&text);
            assert!(matches!(v, Verdict::Failed { .. }), "{text}: {v:?}");
        }
    }

    #[test]
    fn the_install_boots_the_installer_with_the_disks_first_on_ide_and_never_reboots() {
        let p = Utf8Path::new;
        let i = Install {
            kernel: p("vmlinuz"),
            initrd: p("initrd-ks.img"),
            append: "ks=file:/ks.cfg text",
            iso: p("c.iso"),
            extras: p("extras.iso"),
            os_disk: p("os.raw"),
            retention_disk: p("r.raw"),
            console_log: p("console.log"),
            accel: Accel::Tcg,
            memory_mib: 2048,
            cpus: 2,
            limits: Limits {
                timeout: Duration::from_secs(1),
                idle: Duration::from_secs(1),
            },
        };
        let line = qemu_command(&i).line();
        assert!(
            line.starts_with(
                "qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64 -machine pc -smp 2 -m 2048M"
            ),
            "{line}"
        );
        for needle in [
            " -monitor none -serial file:console.log -no-reboot -kernel vmlinuz -initrd initrd-ks.img -append ks=file:/ks.cfg text ",
            "-drive file=os.raw,format=raw,if=ide,index=0,media=disk,cache=unsafe -drive file=r.raw,format=raw,if=ide,index=1,",
            "-drive file=extras.iso,format=raw,if=ide,index=3,media=cdrom,readonly=on -nic user,model=e1000,restrict=on",
        ] {
            assert!(line.contains(needle), "no {needle:?} in {line}");
        }
    }

    #[test]
    fn escape_sequences_and_control_characters_are_removed() {
        assert_eq!(
            strip_terminal_codes("\u{1b}[0;1mBold\u{1b}[0m \u{1b}(Bx\u{7}\ty"),
            "Bold x\ty"
        );
    }
}
