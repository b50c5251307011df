//! The retention volume check `serve` runs before it accepts anything: the runbook's criteria
//! for a volume that may hold recovery points. It must be a file system of its own mounted at
//! the configured path (not a directory on the OS disk), not FAT/FAT32/exFAT, of non-zero
//! capacity, and writable. Facts are gathered from the kernel (`stat`, `statfs`) and judged by
//! a pure function, so every refusal is testable without a real disk.
//!
//! `assess` is the whole list for `mt-agent check-retention PATH` (one finding per criterion,
//! for a mounted directory or for a block device an operator means to use): also not the
//! agent's install/cache volume, not a replication target, not locked by a running agent, and
//! enough free space for the policy. `Context::of_this_system` gathers what it compares with.

use camino::{Utf8Path, Utf8PathBuf};
use std::os::unix::fs::MetadataExt;

/// `statfs` magic numbers of the file systems the runbook refuses.
const MSDOS_SUPER_MAGIC: i64 = 0x4d44;
const EXFAT_SUPER_MAGIC: i64 = 0x2011_bab0;

/// What the kernel says about the volume at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFacts {
    pub is_dir: bool,
    /// The path's device differs from its parent's: something is mounted there.
    pub is_mount_point: bool,
    pub fs_magic: i64,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub read_only: bool,
}

/// A volume that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionVolume {
    pub path: Utf8PathBuf,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("the retention volume {0} does not exist or is not a directory: mount the retention disk there (see /etc/fstab)")]
    Missing(Utf8PathBuf),
    #[error("nothing is mounted at {0}: recovery points would land on the OS disk. Mount the retention disk there (is the disk attached? `mount {0}`)")]
    NotAMountPoint(Utf8PathBuf),
    #[error("the retention volume {0} is FAT/FAT32/exFAT, which is not eligible for retention: format it with ext4 or xfs")]
    Fat(Utf8PathBuf),
    #[error("the retention volume {0} has zero capacity")]
    ZeroCapacity(Utf8PathBuf),
    #[error("the retention volume {0} is mounted read-only")]
    ReadOnly(Utf8PathBuf),
    #[error("the retention volume {path} is not writable: {source}")]
    NotWritable {
        path: Utf8PathBuf,
        source: std::io::Error,
    },
    #[error("cannot examine the retention volume {path}: {source}")]
    Io {
        path: Utf8PathBuf,
        source: std::io::Error,
    },
}

/// The runbook's criteria, in the order an operator would fix them.
pub fn judge(path: &Utf8Path, f: &VolumeFacts) -> Result<(), RetentionError> {
    let p = || path.to_owned();
    if !f.is_dir {
        return Err(RetentionError::Missing(p()));
    }
    if !f.is_mount_point {
        return Err(RetentionError::NotAMountPoint(p()));
    }
    if f.fs_magic == MSDOS_SUPER_MAGIC || f.fs_magic == EXFAT_SUPER_MAGIC {
        return Err(RetentionError::Fat(p()));
    }
    if f.capacity_bytes == 0 {
        return Err(RetentionError::ZeroCapacity(p()));
    }
    if f.read_only {
        return Err(RetentionError::ReadOnly(p()));
    }
    Ok(())
}

pub fn facts(path: &Utf8Path) -> Result<VolumeFacts, RetentionError> {
    let io = |source| RetentionError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RetentionError::Missing(path.to_owned()))
        }
        Err(e) => return Err(io(e)),
    };
    let parent = path.parent().unwrap_or(Utf8Path::new("/"));
    let parent_meta = std::fs::metadata(parent).map_err(io)?;
    // `/` is its own parent: it is a mount, but the OS disk's, never a retention volume.
    let is_mount_point = meta.dev() != parent_meta.dev() && path.as_str() != "/";
    let c_path = std::ffi::CString::new(path.as_str()).map_err(|e| io(std::io::Error::other(e)))?;
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` a writable statfs buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    // SAFETY: as above, with a statvfs buffer (statfs has no mount flags on every libc).
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut vfs) } != 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    let block = vfs.f_frsize as u64;
    Ok(VolumeFacts {
        is_dir: meta.is_dir(),
        is_mount_point,
        fs_magic: st.f_type as i64,
        capacity_bytes: vfs.f_blocks as u64 * block,
        free_bytes: vfs.f_bavail as u64 * block,
        read_only: vfs.f_flag & libc::ST_RDONLY != 0,
    })
}

/// Every check, including a real write (a volume can be mounted read-write and still refuse).
pub fn check(path: &Utf8Path) -> Result<RetentionVolume, RetentionError> {
    let f = facts(path)?;
    judge(path, &f)?;
    let probe = path.join(format!(".mt-agent-write-check-{}", std::process::id()));
    let write = (|| {
        use std::io::Write;
        let mut file = std::fs::File::create(&probe)?;
        file.write_all(b"mt-agent")?;
        file.sync_all()?;
        std::fs::remove_file(&probe)
    })();
    if let Err(source) = write {
        let _ = std::fs::remove_file(&probe);
        return Err(RetentionError::NotWritable {
            path: path.to_owned(),
            source,
        });
    }
    Ok(RetentionVolume {
        path: path.to_owned(),
        capacity_bytes: f.capacity_bytes,
        free_bytes: f.free_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> VolumeFacts {
        VolumeFacts {
            is_dir: true,
            is_mount_point: true,
            fs_magic: 0xef53,
            capacity_bytes: 64 << 30,
            free_bytes: 60 << 30,
            read_only: false,
        }
    }

    #[test]
    fn a_mounted_writable_ext4_volume_is_accepted() {
        assert!(judge(Utf8Path::new("/mnt/retention"), &good()).is_ok());
    }

    #[test]
    fn each_criterion_is_refused_with_its_own_message() {
        let path = Utf8Path::new("/mnt/retention");
        type Spoil = fn(&mut VolumeFacts);
        let cases: [(Spoil, &str); 5] = [
            (|f| f.is_dir = false, "does not exist"),
            (|f| f.is_mount_point = false, "nothing is mounted"),
            (|f| f.fs_magic = MSDOS_SUPER_MAGIC, "FAT"),
            (|f| f.capacity_bytes = 0, "zero capacity"),
            (|f| f.read_only = true, "read-only"),
        ];
        for (spoil, expected) in cases {
            let mut f = good();
            spoil(&mut f);
            let msg = judge(path, &f).unwrap_err().to_string();
            assert!(msg.contains(expected), "{msg:?} lacks {expected:?}");
            assert!(msg.contains("/mnt/retention"));
        }
    }

    #[test]
    fn a_plain_directory_on_the_os_disk_is_refused() {
        let dir = testkit::scratch("retention-plain-dir");
        let path = dir.clone();
        let err = check(&path).unwrap_err();
        assert!(matches!(err, RetentionError::NotAMountPoint(_)), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
        assert!(matches!(check(&path), Err(RetentionError::Missing(_))));
    }
}

/// The lock file a running agent holds (flock) on its retention volume.
pub const LOCK_FILE: &str = ".mt-agent.lock";

/// Takes the volume's lock for as long as the returned file stays open; refuses if another
/// process holds it.
pub fn lock(path: &Utf8Path) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let p = path.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&p)
        .map_err(|e| format!("cannot open {p}: {e}"))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(&p).unwrap_or_default();
        return Err(format!(
            "{path} is locked by another mt-agent (pid {}, lock file {p}): stop it or choose another volume",
            holder.trim()
        ));
    }
    use std::io::Write;
    let _ = f.set_len(0);
    let _ = (&f).write_all(format!("{}\n", std::process::id()).as_bytes());
    Ok(f)
}

/// What else on the system a candidate volume must not be.
#[derive(Debug, Default, Clone)]
pub struct Context {
    /// Devices (st_dev) of the agent's install and cache directories, with their paths.
    pub install: Vec<(Utf8PathBuf, u64)>,
    /// Replication targets that are block devices: (group/disk, device number).
    pub targets: Vec<(String, u64)>,
    /// The space the policy needs free on the volume.
    pub min_free_bytes: u64,
}

impl Context {
    /// What `check-retention` compares a candidate with on this system: the directories the
    /// running binary and the agent's state live in, and those of `targets` ("group/disk",
    /// target) that are block devices.
    pub fn of_this_system(targets: &[(String, Utf8PathBuf)]) -> Context {
        use std::os::unix::fs::FileTypeExt;
        let mut ctx = Context::default();
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| Utf8PathBuf::from_path_buf(p).ok());
        let own = exe
            .iter()
            .filter_map(|e| e.parent().map(Utf8Path::to_owned))
            .chain([Utf8PathBuf::from(mt_contract::guest::AGENT_STATE_DIR)]);
        for dir in own {
            if let Some(dev) = device_of(&dir) {
                ctx.install.push((dir, dev));
            }
        }
        for (what, target) in targets {
            if let Ok(m) = std::fs::metadata(target) {
                if m.file_type().is_block_device() {
                    ctx.targets.push((format!("{what} ({target})"), m.rdev()));
                }
            }
        }
        ctx
    }
}

/// The least free space a retention volume needs: the journal stops acknowledging at
/// `NEARLY_FULL_PERCENT` full, and needs room for at least one group-commit batch.
pub fn min_free_bytes(capacity: u64) -> u64 {
    let nearly_full = crate::replication::journal::policy::NEARLY_FULL_PERCENT;
    (capacity / 100 * (100 - nearly_full)).max(crate::replication::journal::DEFAULT_BATCH_BYTES)
}

/// One criterion of the runbook and how the volume fared.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub criterion: &'static str,
    pub ok: bool,
    pub message: String,
}

/// The device (st_dev) a path lives on.
pub fn device_of(path: &Utf8Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.dev())
}

/// The whole disk a (partition) device number belongs to, via `/sys/dev/block/M:m`.
fn whole_disk(dev: u64) -> u64 {
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    let node = format!("/sys/dev/block/{maj}:{min}");
    if std::path::Path::new(&node).join("partition").exists() {
        if let Ok(t) = std::fs::read_to_string(format!("{node}/../dev")) {
            if let Some((a, b)) = t.trim().split_once(':') {
                if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                    return libc::makedev(a, b);
                }
            }
        }
    }
    dev
}

fn in_use_as_target(dev: u64, ctx: &Context) -> Option<String> {
    ctx.targets
        .iter()
        .find(|(_, t)| *t == dev || whole_disk(dev) == *t || whole_disk(*t) == dev)
        .map(|(what, _)| what.clone())
}

/// Where the device `dev` is mounted, from /proc/self/mountinfo.
fn mounted_at(dev: u64) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = format!("{}:{}", libc::major(dev), libc::minor(dev));
    info.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let mm = f.nth(2)?;
        let _root = f.next()?;
        let at = f.next()?;
        (mm == want).then(|| at.to_owned())
    })
}

/// Every criterion for `path` (a directory where the volume is mounted, or a block device).
pub fn assess(path: &Utf8Path, ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |criterion, r: Result<String, String>| {
        let (ok, message) = match r {
            Ok(m) => (true, m),
            Err(m) => (false, m),
        };
        out.push(Finding {
            criterion,
            ok,
            message,
        });
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => {
            push(
                "exists",
                Err(RetentionError::Missing(path.to_owned()).to_string()),
            );
            return out;
        }
    };
    use std::os::unix::fs::FileTypeExt;
    if meta.file_type().is_block_device() {
        assess_device(path, meta.rdev(), ctx, &mut push);
        return out;
    }
    let dev = meta.dev();
    push(
        "not the agent's install/cache volume",
        match ctx.install.iter().find(|(_, d)| *d == dev) {
            Some((p, _)) => Err(format!("{path} is on the volume mt-agent itself lives on ({p}): the journal would fill the agent's own disk. Use the retention disk")),
            None => Ok(format!("{path} is not where mt-agent is installed")),
        },
    );
    let f = match facts(path) {
        Ok(f) => f,
        Err(e) => {
            push("readable", Err(e.to_string()));
            return out;
        }
    };
    let crit = |spoil: fn(&VolumeFacts) -> bool, err: RetentionError, ok: String| {
        if spoil(&f) {
            Err(err.to_string())
        } else {
            Ok(ok)
        }
    };
    let p = || path.to_owned();
    push(
        "a file system of its own",
        crit(
            |f| !f.is_mount_point,
            RetentionError::NotAMountPoint(p()),
            format!("{path} is a mounted file system"),
        ),
    );
    push(
        "not FAT/FAT32",
        crit(
            |f| f.fs_magic == MSDOS_SUPER_MAGIC || f.fs_magic == EXFAT_SUPER_MAGIC,
            RetentionError::Fat(p()),
            format!("{path} is not FAT (statfs type {:#x})", f.fs_magic),
        ),
    );
    push(
        "non-zero capacity",
        crit(
            |f| f.capacity_bytes == 0,
            RetentionError::ZeroCapacity(p()),
            format!("{path} holds {} bytes", f.capacity_bytes),
        ),
    );
    push(
        "not in use as a replication target",
        match in_use_as_target(dev, ctx) {
            Some(what) => Err(format!("{path} is on a disk that is the replication target {what}: recovery points and replicated writes cannot share it")),
            None => Ok(format!("{path} is no replication target's disk")),
        },
    );
    push(
        "not locked",
        lock(path).map(|_| format!("no other mt-agent holds {path}")),
    );
    push(
        "writable",
        match check(path) {
            Ok(_) => Ok(format!("{path} accepted a test write")),
            Err(e @ (RetentionError::ReadOnly(_) | RetentionError::NotWritable { .. })) => {
                Err(e.to_string())
            }
            Err(_) => Err(format!("{path} was not tried for writing (see above)")),
        },
    );
    let need = ctx.min_free_bytes.max(min_free_bytes(f.capacity_bytes));
    push(
        "enough free space for the policy",
        if f.free_bytes >= need {
            Ok(format!(
                "{} bytes free (at least {need} needed)",
                f.free_bytes
            ))
        } else {
            Err(format!("{path} has {} bytes free of {}; the journal stops acknowledging writes at {}% full and needs one batch of room: free at least {need} bytes", f.free_bytes, f.capacity_bytes, crate::replication::journal::policy::NEARLY_FULL_PERCENT))
        },
    );
    out
}

fn assess_device(
    path: &Utf8Path,
    rdev: u64,
    ctx: &Context,
    push: &mut dyn FnMut(&'static str, Result<String, String>),
) {
    use std::io::{Read, Seek, SeekFrom};
    let mut head = vec![0u8; 4096];
    let size = std::fs::File::open(path).and_then(|mut f| {
        let size = f.seek(SeekFrom::End(0))?;
        f.seek(SeekFrom::Start(0))?;
        let n = f.read(&mut head)?;
        head.truncate(n);
        Ok(size)
    });
    let size = match size {
        Ok(s) => s,
        Err(e) => {
            push("readable", Err(format!("cannot read {path}: {e}")));
            return;
        }
    };
    push(
        "non-zero capacity",
        if size == 0 {
            Err(RetentionError::ZeroCapacity(path.to_owned()).to_string())
        } else {
            Ok(format!("{path} holds {size} bytes"))
        },
    );
    let fat = head.get(54..57) == Some(b"FAT") || head.get(82..87) == Some(b"FAT32");
    push(
        "not FAT/FAT32",
        if fat {
            Err(RetentionError::Fat(path.to_owned()).to_string())
        } else {
            Ok(format!("{path} carries no FAT file system"))
        },
    );
    push(
        "not in use as a replication target",
        match in_use_as_target(rdev, ctx) {
            Some(what) => Err(format!("{path} is the replication target {what}: recovery points and replicated writes cannot share it")),
            None => Ok(format!("{path} is no replication target")),
        },
    );
    push(
        "not in use for anything else",
        match mounted_at(rdev) {
            Some(at) => Err(format!("{path} is mounted at {at}: unmount it, or give that mount point to check-retention")),
            None => Ok(format!("{path} is not mounted")),
        },
    );
}
