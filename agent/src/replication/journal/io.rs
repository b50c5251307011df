//! The I/O interface the journal runs on, and its real implementation on the host's file system.
//!
//! Every byte the journal reads or writes (retention files AND replication targets) goes through
//! [`Fs`], so the crash tests can swap in [`super::sim::SimFs`], a disk that loses unflushed writes.
//! This module must not know anything about the journal's formats.

use camino::Utf8Path;
use std::io;
use std::os::unix::fs::FileExt;

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Existing file, read only.
    Read,
    /// Existing file or block device, read and write.
    ReadWrite,
    /// Create (or empty) a file for read and write.
    CreateTruncate,
    /// Read-write, and whole aligned blocks written with [`FsFile::write_blocks_at`] bypass the
    /// page cache (`O_DIRECT`) where the file system allows it: the replication targets.
    Target,
}

/// Alignment (address, offset and length) of the writes that may bypass the page cache.
pub const DIRECT_ALIGN: usize = 4096;

/// A zeroed byte buffer whose start is aligned to [`DIRECT_ALIGN`], for direct writes.
pub struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only give out &[u8].
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` bytes rounded up to whole blocks, zeroed.
    pub fn new(len: usize) -> AlignedBuf {
        let len = len.max(DIRECT_ALIGN).next_multiple_of(DIRECT_ALIGN);
        let layout = std::alloc::Layout::from_size_align(len, DIRECT_ALIGN)
            .expect("buffer size fits the address space");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, DIRECT_ALIGN)
            .expect("the layout it was allocated with");
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: `len` initialised bytes owned exclusively by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// One open file or block device.
#[allow(clippy::len_without_is_empty)] // a device has a size, "empty" means nothing for it
pub trait FsFile: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset` (an error if the file is shorter).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Like `write_all_at`; a file opened as [`OpenMode::Target`] writes a buffer, offset and
    /// length aligned to [`DIRECT_ALIGN`] past the page cache (durable only after `sync_data`,
    /// like any write).
    fn write_blocks_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(buf, offset)
    }
    /// A hint that `len` bytes at `offset` will be read soon: the read is started in the
    /// background (`posix_fadvise(POSIX_FADV_WILLNEED)`), so many scattered reads queue at the
    /// device together instead of one at a time. Only a hint: nothing changes if it is ignored.
    fn will_need(&self, _offset: u64, _len: u64) {}
    /// Reserves disk space for `len` bytes at `offset` without changing the file's size
    /// (`fallocate(FALLOC_FL_KEEP_SIZE)`, Linux 2.6.23 on): an append into reserved space costs
    /// the file system no block allocation at its flush. Only a hint: a file system without
    /// it, or without the room, leaves the file as it is. `set_len` to the size gives back
    /// what was reserved past it.
    fn reserve(&self, _offset: u64, _len: u64) {}
    /// The size in bytes (for a block device, its capacity).
    fn len(&self) -> io::Result<u64>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`: the data written so far (and the size) survive a power loss once this returns.
    fn sync_data(&self) -> io::Result<()>;
}

/// A file system: paths are absolute or relative to the process's working directory.
pub trait Fs: Send + Sync {
    fn open(&self, path: &Utf8Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>>;
    fn exists(&self, path: &Utf8Path) -> bool;
    fn create_dir_all(&self, path: &Utf8Path) -> io::Result<()>;
    /// Names (not paths) of the entries of a directory, sorted.
    fn list(&self, dir: &Utf8Path) -> io::Result<Vec<String>>;
    fn rename(&self, from: &Utf8Path, to: &Utf8Path) -> io::Result<()>;
    fn remove_file(&self, path: &Utf8Path) -> io::Result<()>;
    /// `fsync` of a directory: makes creations, renames and removals in it durable.
    fn sync_dir(&self, dir: &Utf8Path) -> io::Result<()>;
    /// Bytes a new file could still take on the file system holding `path`.
    fn free_space(&self, path: &Utf8Path) -> io::Result<u64>;
    /// Size of a regular file without opening it (0 if it is gone).
    fn file_size(&self, path: &Utf8Path) -> u64;
    /// An exclusive advisory lock on `path` (created if missing), held while the value lives:
    /// one process at a time writes a group. Fails with [`io::ErrorKind::WouldBlock`] while
    /// another holds it. `holder` (one line: who takes it) is kept with the lock, best effort,
    /// so another process can name the holder or see that the lock changed hands.
    fn lock(&self, path: &Utf8Path, holder: &str) -> io::Result<Box<dyn std::any::Any + Send>>;
    /// The `holder` line of the last process that took the lock on `path` (`None` if none is
    /// kept; once that process has let go, a stale line or `None`).
    fn lock_holder(&self, path: &Utf8Path) -> Option<String>;
    /// Whether the journal may flush a batch on a thread of its own while it takes the next one.
    /// The simulated disk says no: its crash tests replay I/O in one order from a seed, so there
    /// the journal runs the same steps in a fixed order on one thread.
    fn concurrent_flushes(&self) -> bool {
        true
    }
}

/// The host's file system (std + a few libc calls std lacks).
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

struct RealFile {
    file: std::fs::File,
    /// The same file opened with O_DIRECT (targets only, where the file system allows it).
    direct: Option<std::fs::File>,
}

impl FsFile for RealFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn write_blocks_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let aligned = (buf.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
            && buf.len().is_multiple_of(DIRECT_ALIGN)
            && offset.is_multiple_of(DIRECT_ALIGN as u64);
        match &self.direct {
            Some(d) if aligned => match d.write_all_at(buf, offset) {
                // A device with a larger logical block: the page cache path still works.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.file.write_all_at(buf, offset)
                }
                r => r,
            },
            _ => self.file.write_all_at(buf, offset),
        }
    }
    fn will_need(&self, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let (Ok(o), Ok(l)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return;
        };
        // SAFETY: a hint on a descriptor we own; its result changes nothing we rely on.
        unsafe { libc::posix_fadvise(self.file.as_raw_fd(), o, l, libc::POSIX_FADV_WILLNEED) };
    }
    fn reserve(&self, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let (Ok(o), Ok(l)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return;
        };
        // SAFETY: fallocate on a descriptor we own; a refusal changes nothing.
        unsafe { libc::fallocate(self.file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, o, l) };
    }
    fn len(&self) -> io::Result<u64> {
        let meta = self.file.metadata()?;
        if meta.file_type().is_file() {
            return Ok(meta.len());
        }
        // A block device reports size 0 in its metadata; seeking to its end gives the capacity.
        use std::io::Seek;
        let mut f = &self.file;
        f.seek(io::SeekFrom::End(0))
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl Fs for RealFs {
    fn open(&self, path: &Utf8Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        let mut o = std::fs::OpenOptions::new();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::ReadWrite | OpenMode::Target => o.read(true).write(true),
            OpenMode::CreateTruncate => o.read(true).write(true).create(true).truncate(true),
        };
        let file = o.open(path)?;
        let direct = if mode == OpenMode::Target {
            use std::os::unix::fs::OpenOptionsExt;
            // tmpfs and some other file systems refuse O_DIRECT: then every write is buffered.
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .ok()
        } else {
            None
        };
        Ok(Box::new(RealFile { file, direct }))
    }
    fn exists(&self, path: &Utf8Path) -> bool {
        path.exists()
    }
    fn create_dir_all(&self, path: &Utf8Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn list(&self, dir: &Utf8Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
    fn rename(&self, from: &Utf8Path, to: &Utf8Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Utf8Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Utf8Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
    fn free_space(&self, path: &Utf8Path) -> io::Result<u64> {
        let c = std::ffi::CString::new(path.as_str())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated string and `st` a writable statvfs.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st.f_bavail as u64 * st.f_frsize as u64)
    }
    fn file_size(&self, path: &Utf8Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
    fn lock(&self, path: &Utf8Path, holder: &str) -> io::Result<Box<dyn std::any::Any + Send>> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // SAFETY: flock on a descriptor we own; released when the file is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // Not flushed: the line means something only while this process lives and holds the lock.
        let _ = f
            .set_len(0)
            .and_then(|()| f.write_all_at(format!("{holder}\n").as_bytes(), 0));
        Ok(Box::new(f))
    }
    fn lock_holder(&self, path: &Utf8Path) -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        let line = text.lines().next()?.trim();
        (!line.is_empty()).then(|| line.to_owned())
    }
}
