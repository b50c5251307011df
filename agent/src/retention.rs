//! The retention volume check `serve` runs before it accepts anything: the runbook's criteria
//! for a volume that may hold recovery points. It must be a file system of its own mounted at
//! the configured path (not a directory on the OS disk), not FAT/FAT32/exFAT, of non-zero
//! capacity, and writable. Facts are gathered from the kernel (`stat`, `statfs`) and judged by
//! a pure function, so every refusal is testable without a real disk.

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
        let dir = std::env::temp_dir().join(format!("mt-retention-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.clone()).unwrap();
        let err = check(&path).unwrap_err();
        assert!(matches!(err, RetentionError::NotAMountPoint(_)), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
        assert!(matches!(check(&path), Err(RetentionError::Missing(_))));
    }
}
