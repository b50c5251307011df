//! A simulated disk for the crash and corruption tests: an in-memory file system that remembers
//! what has been flushed, and on a simulated power loss keeps only that plus a random choice of the
//! unflushed 512-byte sectors (torn writes) and a random prefix of the unsynced directory changes.
//! It emulates what dm-log-writes/LazyFS do (device-mapper is not available on every machine).
//! Every choice comes from a seeded generator, so a failure reproduces from its seed.
//!
//! It must stay a faithful pessimist: nothing is durable before `sync_data`/`sync_dir` says so.

use super::io::{Fs, FsFile, OpenMode};
use camino::{Utf8Path, Utf8PathBuf};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex};

const SECTOR: u64 = 512;

/// A small deterministic random generator (SplitMix64): enough for test workloads, reproducible
/// from a seed, and no dependency.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Sectors written (or resized) since the last flush of this inode.
    dirty: BTreeSet<u64>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(Utf8PathBuf, u64),
    Unlink(Utf8PathBuf),
}

#[derive(Debug, Clone, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    names: BTreeMap<Utf8PathBuf, u64>,
    durable_names: BTreeMap<Utf8PathBuf, u64>,
    pending: Vec<DirOp>,
    dirs: BTreeSet<Utf8PathBuf>,
    ops: u64,
    crash_at: Option<u64>,
    crashed: bool,
    fail_sync_at: Option<u64>,
    capacity: Option<u64>,
    /// Locks held (path: the holder line); a restart of the machine releases them all.
    locks: BTreeMap<Utf8PathBuf, String>,
}

/// The simulated file system. Cloning shares the same disk.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

fn crashed() -> io::Error {
    io::Error::other("simulated power loss")
}

fn parent(p: &Utf8Path) -> Utf8PathBuf {
    p.parent().map(|d| d.to_owned()).unwrap_or_default()
}

impl State {
    /// Counts one mutating operation; fails it (and every later one) once the crash point is hit.
    fn tick(&mut self) -> io::Result<()> {
        if self.crashed {
            return Err(crashed());
        }
        self.ops += 1;
        if Some(self.ops) == self.crash_at {
            self.crashed = true;
            return Err(crashed());
        }
        Ok(())
    }
    fn used(&self) -> u64 {
        let live: BTreeSet<u64> = self.names.values().copied().collect();
        live.iter().map(|i| self.inodes[i].data.len() as u64).sum()
    }
}

impl SimFs {
    pub fn new() -> SimFs {
        SimFs::default()
    }
    /// The `n`th mutating operation from now (write, resize, flush, directory change) fails, as do
    /// all after it: the machine lost power there.
    pub fn crash_after(&self, n: u64) {
        let mut s = self.state.lock().unwrap();
        s.crash_at = Some(s.ops + n.max(1));
    }
    pub fn has_crashed(&self) -> bool {
        self.state.lock().unwrap().crashed
    }
    /// Mutating operations so far (to choose crash points inside a workload).
    pub fn ops(&self) -> u64 {
        self.state.lock().unwrap().ops
    }
    /// The `n`th flush from now reports an I/O error (and, like Linux, forgets the dirty data).
    pub fn fail_sync_after(&self, n: u64) {
        let mut s = self.state.lock().unwrap();
        s.fail_sync_at = Some(n.max(1));
    }
    /// Limits the bytes all files may hold; writes beyond get ENOSPC.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().unwrap().capacity = bytes;
    }

    /// The disk as found after the power loss: flushed data and directory entries, plus a random
    /// subset of unflushed sectors, a random file length between flushed and written, and a random
    /// prefix of the unsynced directory changes.
    pub fn after_power_loss(&self, rng: &mut SimRng) -> SimFs {
        let s = self.state.lock().unwrap();
        let mut names = s.durable_names.clone();
        let keep = rng.below(s.pending.len() as u64 + 1) as usize;
        for op in &s.pending[..keep] {
            match op {
                DirOp::Link(p, ino) => {
                    names.insert(p.clone(), *ino);
                }
                DirOp::Unlink(p) => {
                    names.remove(p);
                }
            }
        }
        let mut inodes = BTreeMap::new();
        for (&ino, node) in &s.inodes {
            let mut data = node.durable.clone();
            if !node.dirty.is_empty() || node.data.len() != node.durable.len() {
                let (lo, hi) = (node.durable.len() as u64, node.data.len() as u64);
                let new_len = if lo == hi {
                    lo
                } else {
                    let (a, b) = (lo.min(hi), lo.max(hi));
                    match rng.below(3) {
                        0 => lo,
                        1 => hi,
                        _ => a + rng.below(b - a + 1),
                    }
                };
                data.resize(new_len as usize, 0);
                for &sec in &node.dirty {
                    let start = sec * SECTOR;
                    if start >= new_len || !rng.chance(50) {
                        continue;
                    }
                    let end = (start + SECTOR).min(new_len) as usize;
                    let start = start as usize;
                    for (i, b) in data[start..end].iter_mut().enumerate() {
                        *b = node.data.get(start + i).copied().unwrap_or(0);
                    }
                }
            }
            inodes.insert(
                ino,
                Inode {
                    durable: data.clone(),
                    data,
                    dirty: BTreeSet::new(),
                },
            );
        }
        let state = State {
            inodes,
            next_ino: s.next_ino,
            names: names.clone(),
            durable_names: names,
            pending: Vec::new(),
            dirs: s.dirs.clone(),
            capacity: s.capacity,
            ..State::default()
        };
        SimFs {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// A fully flushed copy (as if the machine had shut down cleanly).
    pub fn clean_copy(&self) -> SimFs {
        let s = self.state.lock().unwrap();
        let mut state = s.clone();
        for node in state.inodes.values_mut() {
            node.durable = node.data.clone();
            node.dirty.clear();
        }
        state.durable_names = state.names.clone();
        state.pending.clear();
        state.crash_at = None;
        state.crashed = false;
        state.fail_sync_at = None;
        state.locks.clear();
        SimFs {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Flips one bit of a file, on the medium (flushed or not): bit rot.
    pub fn flip_bit(&self, path: &Utf8Path, offset: u64, bit: u8) {
        let mut s = self.state.lock().unwrap();
        let ino = s.names[path];
        let node = s.inodes.get_mut(&ino).unwrap();
        node.data[offset as usize] ^= 1 << (bit % 8);
        if let Some(b) = node.durable.get_mut(offset as usize) {
            *b ^= 1 << (bit % 8);
        }
    }
    /// Cuts a file short, on the medium.
    pub fn truncate(&self, path: &Utf8Path, len: u64) {
        let mut s = self.state.lock().unwrap();
        let ino = s.names[path];
        let node = s.inodes.get_mut(&ino).unwrap();
        node.data.truncate(len as usize);
        node.durable.truncate(len as usize);
    }
    /// The whole current content of a file (for tests).
    pub fn read_all(&self, path: &Utf8Path) -> io::Result<Vec<u8>> {
        let s = self.state.lock().unwrap();
        let ino = s.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(s.inodes[ino].data.clone())
    }
    /// Creates a file with this content, flushed (test setup).
    pub fn put(&self, path: &Utf8Path, data: &[u8]) {
        let mut s = self.state.lock().unwrap();
        s.next_ino += 1;
        let ino = s.next_ino;
        s.inodes.insert(
            ino,
            Inode {
                data: data.to_vec(),
                durable: data.to_vec(),
                dirty: BTreeSet::new(),
            },
        );
        s.names.insert(path.to_owned(), ino);
        s.durable_names.insert(path.to_owned(), ino);
        let mut d = parent(path);
        while !d.as_str().is_empty() {
            s.dirs.insert(d.clone());
            d = parent(&d);
        }
    }
}

fn not_found(path: &Utf8Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{path}: no such file"))
}

struct SimFile {
    fs: SimFs,
    ino: u64,
    writable: bool,
}

impl FsFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let s = self.fs.state.lock().unwrap();
        if s.crashed {
            return Err(crashed());
        }
        let data = &s.inodes[&self.ino].data;
        let end = offset as usize + buf.len();
        if end > data.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end of file",
            ));
        }
        buf.copy_from_slice(&data[offset as usize..end]);
        Ok(())
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        assert!(self.writable, "write to a file opened read-only");
        let mut s = self.fs.state.lock().unwrap();
        s.tick()?;
        let end = offset as usize + buf.len();
        let grow = end.saturating_sub(s.inodes[&self.ino].data.len()) as u64;
        if let Some(cap) = s.capacity {
            if s.used() + grow > cap {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        let node = s.inodes.get_mut(&self.ino).unwrap();
        if node.data.len() < end {
            node.data.resize(end, 0);
        }
        node.data[offset as usize..end].copy_from_slice(buf);
        let first = offset / SECTOR;
        let last = (end as u64).div_ceil(SECTOR);
        node.dirty.extend(first..last);
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        let s = self.fs.state.lock().unwrap();
        Ok(s.inodes[&self.ino].data.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.fs.state.lock().unwrap();
        s.tick()?;
        let node = s.inodes.get_mut(&self.ino).unwrap();
        let old = node.data.len() as u64;
        node.data.resize(len as usize, 0);
        let (a, b) = (old.min(len), old.max(len));
        node.dirty.extend(a / SECTOR..b.div_ceil(SECTOR));
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.fs.state.lock().unwrap();
        s.tick()?;
        // Counts down the flushes to the one that fails.
        let fail = match s.fail_sync_at {
            Some(1) => {
                s.fail_sync_at = None;
                true
            }
            Some(n) => {
                s.fail_sync_at = Some(n - 1);
                false
            }
            None => false,
        };
        if fail {
            // Linux may drop the dirty pages of a failed flush; a retry would then "succeed".
            let node = s.inodes.get_mut(&self.ino).unwrap();
            node.data = node.durable.clone();
            node.dirty.clear();
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let node = s.inodes.get_mut(&self.ino).unwrap();
        node.durable = node.data.clone();
        node.dirty.clear();
        Ok(())
    }
}

/// A lock of [`SimFs`], released when dropped.
struct SimLock {
    state: Arc<Mutex<State>>,
    path: Utf8PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        if let Ok(mut s) = self.state.lock() {
            s.locks.remove(&self.path);
        }
    }
}

impl Fs for SimFs {
    fn open(&self, path: &Utf8Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        let mut s = self.state.lock().unwrap();
        if s.crashed {
            return Err(crashed());
        }
        let ino = match (s.names.get(path).copied(), mode) {
            (Some(ino), OpenMode::CreateTruncate) => {
                s.tick()?;
                let node = s.inodes.get_mut(&ino).unwrap();
                let old = node.data.len() as u64;
                node.data.clear();
                node.dirty.extend(0..old.div_ceil(SECTOR));
                ino
            }
            (Some(ino), _) => ino,
            (None, OpenMode::CreateTruncate) => {
                if !s.dirs.contains(&parent(path)) {
                    return Err(not_found(&parent(path)));
                }
                s.tick()?;
                s.next_ino += 1;
                let ino = s.next_ino;
                s.inodes.insert(ino, Inode::default());
                s.names.insert(path.to_owned(), ino);
                s.pending.push(DirOp::Link(path.to_owned(), ino));
                ino
            }
            (None, _) => return Err(not_found(path)),
        };
        Ok(Box::new(SimFile {
            fs: self.clone(),
            ino,
            writable: mode != OpenMode::Read,
        }))
    }
    fn exists(&self, path: &Utf8Path) -> bool {
        let s = self.state.lock().unwrap();
        s.names.contains_key(path) || s.dirs.contains(path)
    }
    fn create_dir_all(&self, path: &Utf8Path) -> io::Result<()> {
        // Directories are durable at once: the journal creates them before anything depends on them.
        let mut s = self.state.lock().unwrap();
        if s.crashed {
            return Err(crashed());
        }
        let mut d = path.to_owned();
        while !d.as_str().is_empty() {
            s.dirs.insert(d.clone());
            d = parent(&d);
        }
        Ok(())
    }
    fn list(&self, dir: &Utf8Path) -> io::Result<Vec<String>> {
        let s = self.state.lock().unwrap();
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let mut out: Vec<String> = s
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(str::to_owned))
            .collect();
        out.extend(
            s.dirs
                .iter()
                .filter(|p| p.parent() == Some(dir))
                .filter_map(|p| p.file_name().map(str::to_owned)),
        );
        out.sort();
        Ok(out)
    }
    fn rename(&self, from: &Utf8Path, to: &Utf8Path) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        s.tick()?;
        let ino = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_owned(), ino);
        s.pending.push(DirOp::Link(to.to_owned(), ino));
        s.pending.push(DirOp::Unlink(from.to_owned()));
        Ok(())
    }
    fn remove_file(&self, path: &Utf8Path) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        s.tick()?;
        s.names.remove(path).ok_or_else(|| not_found(path))?;
        s.pending.push(DirOp::Unlink(path.to_owned()));
        Ok(())
    }
    fn sync_dir(&self, dir: &Utf8Path) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        s.tick()?;
        let pending = std::mem::take(&mut s.pending);
        let mut rest = Vec::new();
        for op in pending {
            let p = match &op {
                DirOp::Link(p, _) | DirOp::Unlink(p) => p.clone(),
            };
            if parent(&p) == dir {
                match op {
                    DirOp::Link(p, ino) => {
                        s.durable_names.insert(p, ino);
                    }
                    DirOp::Unlink(p) => {
                        s.durable_names.remove(&p);
                    }
                }
            } else {
                rest.push(op);
            }
        }
        s.pending = rest;
        Ok(())
    }
    fn concurrent_flushes(&self) -> bool {
        false
    }
    fn free_space(&self, _path: &Utf8Path) -> io::Result<u64> {
        let s = self.state.lock().unwrap();
        Ok(s.capacity
            .map_or(u64::MAX / 2, |c| c.saturating_sub(s.used())))
    }
    fn lock(&self, path: &Utf8Path, holder: &str) -> io::Result<Box<dyn std::any::Any + Send>> {
        // Exclusive like flock, but kept beside the disk: taking it is no operation on the disk,
        // so it moves no crash point of the crash campaign.
        let mut s = self.state.lock().unwrap();
        if s.locks.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "simulated lock held",
            ));
        }
        s.locks.insert(path.to_owned(), holder.to_owned());
        Ok(Box::new(SimLock {
            state: self.state.clone(),
            path: path.to_owned(),
        }))
    }
    fn lock_holder(&self, path: &Utf8Path) -> Option<String> {
        self.state.lock().unwrap().locks.get(path).cloned()
    }
    fn file_size(&self, path: &Utf8Path) -> u64 {
        let s = self.state.lock().unwrap();
        s.names
            .get(path)
            .map_or(0, |ino| s.inodes[ino].data.len() as u64)
    }
}
