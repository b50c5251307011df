//! `mt-agent firstboot`: adapts a deployed copy of the appliance to its VM before `serve`
//! starts (disk IDs and host keys differ between the build and every copy). Steps, each
//! idempotent so a re-run after a crash halfway finishes the job:
//! 1. the OS disk's WWID is blacklisted in `/etc/multipath.conf`;
//! 2. the retention disk (the definition's SCSI unit) is formatted if, and only if, its first
//!    and last MiB are all zeros (the Debian image ships it so), then entered in `/etc/fstab` by
//!    UUID and mounted. A file system with the retention label is adopted as it is: on the whole
//!    disk (formatted by an earlier first boot) or in the single partition of an MBR table (the
//!    el6 kickstart partitions and formats the disk at install time);
//! 3. on el6, missing SSH host keys are created (on Debian `mt-ssh-host-keys.service` makes
//!    them beside first boot: `host_key_kinds`);
//! 4. the IDs of the OS and retention disks are recorded, so a later boot (and `serve`)
//!    notices when they change.
//!
//! Outside effects (mkfs, mount, ssh-keygen) go through `Tools`, so tests use fakes; every
//! path is injectable (`SystemPaths`). It must never write to a disk that holds data.

use crate::atomic_file::write_atomic;
use crate::config::AgentConfig;
use crate::guest::disks::{self, Disk, Identity, Role, Rule, SystemPaths};
use crate::guest::setup::multipath;
use anyhow::{bail, Context, Result};
use camino::Utf8Path;
use std::os::unix::fs::FileExt;

const MIB: u64 = 1 << 20;

/// What first boot asks of the outside world.
pub trait Tools {
    /// Creates file system `fs` labelled `label` on `device`.
    fn mkfs(&self, device: &Utf8Path, fs: &str, label: &str) -> Result<()>;
    /// Mounts `mountpoint` as `/etc/fstab` says, unless something is mounted there.
    fn mount(&self, paths: &SystemPaths, mountpoint: &str) -> Result<()>;
    /// Creates an SSH host key of `kind` at `key` (and `key`.pub).
    fn ssh_keygen(&self, kind: &str, key: &Utf8Path) -> Result<()>;
}

/// The real commands.
pub struct SystemTools;

fn run(cmd: &mut std::process::Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Tools for SystemTools {
    fn mkfs(&self, device: &Utf8Path, fs: &str, label: &str) -> Result<()> {
        match fs {
            "ext4" => run(std::process::Command::new("mkfs.ext4")
                .args(["-q", "-F", "-L", label])
                .arg(device)),
            "xfs" => run(std::process::Command::new("mkfs.xfs")
                .args(["-q", "-f", "-L", label])
                .arg(device)),
            other => bail!("first boot cannot create a {other:?} file system (use ext4 or xfs)"),
        }
    }
    fn mount(&self, paths: &SystemPaths, mountpoint: &str) -> Result<()> {
        let mounts =
            std::fs::read_to_string(paths.in_root("/proc/self/mounts")).unwrap_or_default();
        if mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(mountpoint))
        {
            return Ok(());
        }
        std::fs::create_dir_all(paths.in_root(mountpoint))
            .with_context(|| format!("cannot create {mountpoint}"))?;
        run(std::process::Command::new("mount").arg(mountpoint))
    }
    fn ssh_keygen(&self, kind: &str, key: &Utf8Path) -> Result<()> {
        run(std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-f"])
            .arg(key))
    }
}

/// What the first and last MiB of a disk say about its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    Blank,
    /// A file system first boot can adopt: its kind, label and UUID, and the MBR partition
    /// holding it (`None`: the whole disk).
    FileSystem {
        fs: &'static str,
        label: String,
        uuid: String,
        partition: Option<u32>,
    },
    /// Anything else; the text names what was recognised.
    Data(String),
}

/// An MBR partition type that holds a Linux file system (what the el6 kickstart's `part`
/// writes for ext4 and xfs).
const MBR_LINUX: u8 = 0x83;
const SECTOR: u64 = 512;
/// Enough of a partition's start for the ext4 and XFS superblocks `identify` reads.
const SUPERBLOCK_SPAN: usize = 4096;

pub fn examine(device: &Utf8Path) -> Result<Contents> {
    let f = std::fs::File::open(device).with_context(|| format!("cannot open {device}"))?;
    use std::io::{Seek, SeekFrom};
    let size = (&f)
        .seek(SeekFrom::End(0))
        .with_context(|| format!("cannot size {device}"))?;
    let head_len = size.min(MIB) as usize;
    let mut head = vec![0u8; head_len];
    f.read_exact_at(&mut head, 0)
        .with_context(|| format!("cannot read {device}"))?;
    let tail_at = size.saturating_sub(MIB).max(head_len as u64);
    let mut tail = vec![0u8; (size - tail_at) as usize];
    f.read_exact_at(&mut tail, tail_at)
        .with_context(|| format!("cannot read the end of {device}"))?;
    if head.iter().chain(tail.iter()).all(|b| *b == 0) {
        return Ok(Contents::Blank);
    }
    let found = identify(&head, &tail);
    if found != Contents::Data(MBR_TABLE.to_owned()) {
        return Ok(found);
    }
    // One Linux partition (the el6 kickstart's layout): what does it hold?
    let Some((number, start)) = single_linux_partition(&head, size) else {
        return Ok(found);
    };
    let mut at_start = vec![0u8; SUPERBLOCK_SPAN];
    f.read_exact_at(&mut at_start, start)
        .with_context(|| format!("cannot read partition {number} of {device}"))?;
    Ok(match identify(&at_start, &[]) {
        Contents::FileSystem {
            fs, label, uuid, ..
        } => Contents::FileSystem {
            fs,
            label,
            uuid,
            partition: Some(number),
        },
        _ => found,
    })
}

const MBR_TABLE: &str = "an MBR partition table";

/// The number and byte offset of the only partition of an MBR table, when it is a Linux one
/// that lies inside the disk; `None` for any other table.
fn single_linux_partition(head: &[u8], disk_size: u64) -> Option<(u32, u64)> {
    let entries: Vec<(u32, &[u8])> = (0..4u32)
        .map(|i| {
            (
                i + 1,
                head.get(446 + 16 * i as usize..462 + 16 * i as usize),
            )
        })
        .filter_map(|(n, e)| e.map(|e| (n, e)))
        .filter(|(_, e)| e[4] != 0)
        .collect();
    let [(number, entry)] = entries.as_slice() else {
        return None;
    };
    let lba = |o: usize| u32::from_le_bytes(entry[o..o + 4].try_into().expect("4 bytes")) as u64;
    let (start, sectors) = (lba(8) * SECTOR, lba(12) * SECTOR);
    let fits = start >= SECTOR
        && sectors > 0
        && start
            .checked_add(sectors)
            .is_some_and(|end| end <= disk_size);
    (entry[4] == MBR_LINUX && fits).then_some((*number, start))
}

fn uuid_text(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn label_text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end_matches('\0').to_owned()
}

fn identify(head: &[u8], tail: &[u8]) -> Contents {
    let at = |o: usize, n: usize| head.get(o..o + n);
    if at(1024 + 0x38, 2) == Some(&[0x53, 0xef]) {
        let uuid = uuid_text(at(1024 + 0x68, 16).unwrap_or(&[0; 16]));
        let label = label_text(at(1024 + 0x78, 16).unwrap_or(&[]));
        return Contents::FileSystem {
            fs: "ext4",
            label,
            uuid,
            partition: None,
        };
    }
    if at(0, 4) == Some(b"XFSB") {
        return Contents::FileSystem {
            fs: "xfs",
            uuid: uuid_text(at(32, 16).unwrap_or(&[0; 16])),
            label: label_text(at(108, 12).unwrap_or(&[])),
            partition: None,
        };
    }
    let what = if at(512, 8) == Some(b"EFI PART") {
        "a GPT partition table"
    } else if at(512, 8) == Some(b"LABELONE") {
        "an LVM physical volume"
    } else if at(4086, 10) == Some(b"SWAPSPACE2") {
        "swap space"
    } else if at(54, 3) == Some(b"FAT") || at(82, 3) == Some(b"FAT") {
        "a FAT file system"
    } else if at(510, 2) == Some(&[0x55, 0xaa]) {
        MBR_TABLE
    } else if tail.len() >= 512 && tail[tail.len() - 512..].starts_with(b"EFI PART") {
        "a backup GPT header"
    } else {
        "data in its first or last MiB"
    };
    Contents::Data(what.to_owned())
}

/// The fstab line for the retention volume: an earlier line for that mount point gets the
/// UUID as its device (its options, e.g. the build's device timeout, are kept); without one a
/// line is added.
pub fn fstab_with(current: &str, uuid: &str, mountpoint: &str, fs: &str) -> String {
    let spec = format!("UUID={uuid}");
    let mut out = String::new();
    let mut placed = false;
    for l in current.lines() {
        let mut fields: Vec<&str> = l.split_whitespace().collect();
        let is_ours = !l.trim_start().starts_with('#') && fields.get(1) == Some(&mountpoint);
        if !is_ours {
            out.push_str(l);
            out.push('\n');
        } else if !placed {
            fields[0] = &spec;
            out.push_str(&fields.join(" "));
            out.push('\n');
            placed = true;
        }
    }
    if !placed {
        out.push_str(&format!("{spec} {mountpoint} {fs} defaults,nofail 0 2\n"));
    }
    out
}

/// Writes `contents` to `path` unless it already holds them (see [`write_atomic`]).
fn put(path: &Utf8Path, contents: &str, mode: u32) -> Result<bool> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(contents) {
        return Ok(false);
    }
    write_atomic(path, contents.as_bytes(), mode)?;
    Ok(true)
}

/// The host key types first boot creates: el6's (its OpenSSH 5.3 has no ed25519). On Debian
/// none: `mt-ssh-host-keys.service` (`ssh-keygen -A`, ordered before sshd only) makes them
/// while first boot runs, so nothing the agent needs waits for key generation (seconds of RSA
/// under emulation).
fn host_key_kinds(paths: &SystemPaths) -> &'static [&'static str] {
    if paths.in_root("/etc/debian_version").exists() {
        &[]
    } else {
        &["rsa", "dsa"]
    }
}

/// What a run of first boot did and found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// What it changed, one line each; empty when nothing was needed.
    pub done: Vec<String>,
    /// What it found in place and kept (the retention volume it adopted instead of formatting).
    pub kept: Vec<String>,
}

/// Runs every step.
pub fn run_firstboot(cfg: &AgentConfig, paths: &SystemPaths, tools: &dyn Tools) -> Result<Report> {
    let Some(rd) = &cfg.retention_disk else {
        bail!("the agent configuration has no [retention_disk] (scsi_unit, fs, label): rebuild the appliance so agent.toml carries the definition's retention disk rule");
    };
    let mut done = Vec::new();
    let mut kept = Vec::new();
    let rule = Rule {
        os_unit: 0,
        retention_unit: rd.scsi_unit,
    };
    let found = disks::discover(paths, rule, &[])?;
    let now = Identity::of(&found);
    if let Some(then) = Identity::load(paths)? {
        if let Some(why) = then.changed(&now) {
            bail!("{why}");
        }
    }
    let role = |r| found.iter().find(|d: &&Disk| d.role == r);

    // 1. Multipath must leave the OS disk alone.
    match role(Role::Os) {
        Some(Disk {
            stable_id: Some(wwid),
            ..
        }) => {
            let conf = paths.in_root(multipath::PATH);
            if put(&conf, &multipath::render(Some(wwid)), 0o644)? {
                done.push(format!("blacklisted the OS disk {wwid} in {}", multipath::PATH));
            }
        }
        Some(d) => eprintln!(
            "mt-agent firstboot: warning: the OS disk {} has {}; it is not blacklisted for multipath",
            d.name,
            disks::ENABLE_UUID_HINT
        ),
        None => eprintln!("mt-agent firstboot: warning: no OS disk at SCSI unit 0 (is the controller paravirtual/LSI SCSI?)"),
    }

    // 2. The retention disk.
    let Some(ret) = role(Role::Retention) else {
        bail!(
            "no retention disk at SCSI unit {} of the appliance's controller: attach a disk there (the definition's retention_disk.scsi_unit); `mt-agent disks` lists what is attached",
            rd.scsi_unit
        );
    };
    if ret.size_bytes == 0 {
        bail!("the retention disk {} has zero capacity", ret.device);
    }
    // Once multipathd has claimed the disk (find_multipaths no), the sd device is busy and
    // the runbook's device is the map named by the WWID.
    let mapper = ret
        .stable_id
        .as_ref()
        .map(|id| paths.dev.join("mapper").join(id))
        .filter(|m| m.exists());
    let device = mapper.as_ref().unwrap_or(&ret.device);
    let uuid = match examine(device)? {
        Contents::Blank => {
            tools.mkfs(device, &rd.fs, &rd.label)?;
            match examine(device)? {
                Contents::FileSystem { uuid, partition: None, .. } => {
                    done.push(format!("formatted the retention disk {device} as {} labelled {} (UUID={uuid})", rd.fs, rd.label));
                    uuid
                }
                other => bail!("formatting {} did not leave a file system ({other:?})", device),
            }
        }
        Contents::FileSystem { fs, label, uuid, partition } if label == rd.label => {
            let place = match partition {
                Some(n) => format!("partition {n} of the retention disk {device}"),
                None => format!("the retention disk {device}"),
            };
            kept.push(format!("{place} already holds the {fs} file system {label} (UUID={uuid}): adopted, not formatted"));
            uuid
        }
        Contents::FileSystem { fs, label, .. } => bail!(
            "the disk at SCSI unit {} ({}) holds a {fs} file system labelled {label:?}, not the retention volume {:?}: not formatting it. If it really is the retention disk, relabel it (e2label/xfs_admin -L {})",
            rd.scsi_unit, device, rd.label, rd.label
        ),
        Contents::Data(what) => bail!(
            "the disk at SCSI unit {} ({}) holds {what}: not formatting it. If it really is meant as the retention disk, clear it first (wipefs -a {})",
            rd.scsi_unit, device, device
        ),
    };
    let mount = cfg.retention_mount.as_str();
    let fstab_path = paths.in_root("/etc/fstab");
    let fstab = std::fs::read_to_string(&fstab_path).unwrap_or_default();
    if put(
        &fstab_path,
        &fstab_with(&fstab, &uuid, mount, &rd.fs),
        0o644,
    )? {
        done.push(format!("/etc/fstab mounts UUID={uuid} at {mount}"));
    }
    tools.mount(paths, mount)?;

    // 3. SSH host keys of this copy.
    for kind in host_key_kinds(paths) {
        let key = paths.in_root(&format!("/etc/ssh/ssh_host_{kind}_key"));
        let public = key.with_extension("pub");
        if key.exists() && public.exists() {
            continue;
        }
        // A crash between the two files leaves half a key: start that key again.
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(&public);
        std::fs::create_dir_all(key.parent().unwrap_or(Utf8Path::new("/")))?;
        tools.ssh_keygen(kind, &key)?;
        done.push(format!(
            "created the SSH host key /etc/ssh/ssh_host_{kind}_key"
        ));
    }

    // 4. Remember who the own disks are.
    let text = toml::to_string(&now)?;
    if put(&paths.in_root(disks::IDENTITY_FILE), &text, 0o644)? {
        done.push(format!(
            "recorded the OS disk {} and retention disk {} in {}",
            now.os_disk.as_deref().unwrap_or("-"),
            now.retention_disk.as_deref().unwrap_or("-"),
            disks::IDENTITY_FILE
        ));
    }
    Ok(Report { done, kept })
}

#[cfg(test)]
mod tests;
