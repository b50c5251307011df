//! The agent's one way to replace a small file outside the journal (keys, pins, stream records,
//! the guest's configuration files): a temporary file in the same directory, written, given an
//! explicit mode, flushed, renamed over the target, and the directory flushed, so a crash leaves
//! the old file or the new one, never half of one. The journal does not use it: its writes go
//! through `io::Fs`, which the simulated disk of the crash tests replaces.

use anyhow::{Context, Result};
use camino::Utf8Path;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

/// Replaces `path` with `contents`, its permission bits exactly `mode` (not filtered by the
/// umask). Missing parent directories are created. On failure the temporary file is removed and
/// `path` is as it was.
pub fn write_atomic(path: &Utf8Path, contents: &[u8], mode: u32) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{path} does not name a file"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_str().is_empty() => d,
        _ => Utf8Path::new("."),
    };
    create_dirs(dir)?;
    let tmp = dir.join(format!(".{name}.mt-tmp"));
    // A temporary file left by a crash may have another mode: start from none, so the new one is
    // created with `mode` and a secret is never readable by others, not even briefly.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove the stale {tmp}"));
        }
        _ => {}
    }
    let written = write_new(&tmp, contents, mode).and_then(|()| {
        std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {path}"))
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

fn write_new(tmp: &Utf8Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .with_context(|| format!("cannot create {tmp}"))?;
    // The mode given at creation is filtered by the umask; this one is not.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {tmp}"))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {tmp}"))
}

/// Creates `dir` and its missing ancestors, flushing each new entry into its parent (so a
/// state directory made on first use survives a power loss with the files renamed into it).
pub fn create_dirs(dir: &Utf8Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_str().is_empty());
    if let Some(parent) = parent {
        create_dirs(parent)?;
    }
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(e).with_context(|| format!("cannot create {dir}"));
        }
        _ => {}
    }
    sync_dir(parent.unwrap_or(Utf8Path::new(".")))
}

fn sync_dir(dir: &Utf8Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot flush the directory {dir}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::setup::tests::scratch;

    fn mode_of(p: &Utf8Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn replaces_the_file_with_exactly_the_mode_given() {
        let dir = scratch("atomic-mode");
        let p = dir.join("a/b/key");
        write_atomic(&p, b"one", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(mode_of(&p), 0o600);
        // Bits a usual umask (022) would drop are kept.
        write_atomic(&p, b"two", 0o666).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(mode_of(&p), 0o666);
        write_atomic(&p, b"three", 0o755).unwrap();
        assert_eq!(mode_of(&p), 0o755);
        let left: Vec<_> = std::fs::read_dir(dir.join("a/b")).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_temporary_file_is_not_reused() {
        let dir = scratch("atomic-stale");
        let p = dir.join("secret");
        let tmp = dir.join(".secret.mt-tmp");
        std::fs::write(&tmp, b"stale, readable by all").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&p, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(mode_of(&p), 0o600);
        assert!(!tmp.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_replace_leaves_the_old_file_and_no_temporary_file() {
        let dir = scratch("atomic-fail");
        // A directory cannot be replaced by a file: the rename fails after the write.
        let p = dir.join("taken");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("inside"), b"kept").unwrap();
        let err = write_atomic(&p, b"new", 0o644).unwrap_err();
        assert!(format!("{err:#}").contains("cannot replace"), "{err:#}");
        assert_eq!(std::fs::read(p.join("inside")).unwrap(), b"kept");
        assert!(!dir.join(".taken.mt-tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
