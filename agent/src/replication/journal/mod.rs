//! The retention journal: one ordered timeline per replication group, the undo store that keeps
//! 24 hours of recovery points, and recovery. Format: `agent/docs/journal-format.md`.
//!
//! Design (undo journal with a write-ahead rollback log, see the format document for why):
//! a batch of writes is acknowledged only after (1) the old content of every block it overwrites
//! is durable, in the open epoch's undo log (first overwrite of a block since the last point) or
//! in the rollback log (later overwrites), (2) the new data is durable on the targets, and (3) a
//! commit record is durable in the timeline. A crash anywhere rolls the unfinished batch back, so
//! the targets always hold exactly the acknowledged prefix of the stream ("latest" needs no
//! replay), and every recovery point is reached by applying undo epochs newest first.
//!
//! Everything runs on [`io::Fs`] and [`clock::Clock`]; this module never touches `std::fs` or the
//! system clock, and never panics on anything read from disk.

pub mod clock;
pub mod io;
pub mod policy;
pub mod record;
pub mod sim;
pub(crate) mod timeline;

use crate::replication::frame::{Frame, TagKind, BLOCK_SIZE};
use camino::{Utf8Path, Utf8PathBuf};
use clock::{Clock, Timestamp};
use io::{Fs, FsFile, OpenMode};
use policy::Policy;
use record::{FileKind, FILE_HEADER_LEN};
use std::collections::HashSet;
use std::sync::Arc;
pub use timeline::{ClosedEpoch, DiskSpec, OpenEpoch, PointKind, RecoveryPoint, TimelineState};

/// A position in a group's timeline. Every write, tag and recovery point has one; they increase
/// by one per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub struct Lsn(pub u64);

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Group commit: a batch is made durable once it holds this many bytes of writes (or at a tag,
/// or when the caller flushes).
pub const DEFAULT_BATCH_BYTES: u64 = 8 << 20;
/// The aligned buffer that gathers a batch's adjacent writes for one direct write.
const STAGING_BYTES: usize = 8 << 20;
/// A resync commits in larger batches (fewer flushes; bounded memory all the same).
pub const RESYNC_BATCH_BYTES: u64 = 32 << 20;
/// The timeline is compacted into one snapshot record when it grows past this.
const TIMELINE_COMPACT_BYTES: u64 = 1 << 20;

const REC_UNDO: u8 = 1;
const REC_ROLLBACK: u8 = 2;
/// Undo and rollback record head: lsn/seq u64, disk u32, reserved u32, offset u64, len u32, reserved u32.
const BLOCK_HEAD_LEN: usize = 32;

/// Why the journal refused or stopped.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {op} failed: {source}; the stream is stopped (a failed flush is never retried: restart the agent, it recovers from what is durable)")]
    Io {
        path: Utf8PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("{path} is damaged at byte {offset}: {what}")]
    Damaged {
        path: Utf8PathBuf,
        offset: u64,
        what: String,
    },
    #[error("retention volume full: {0}; nothing more is acknowledged until space is freed (raise the retention budget or free space on the volume, then resume the stream)")]
    RetentionFull(String),
    #[error("{0}")]
    Rejected(String),
}

impl JournalError {
    pub fn io(path: &Utf8Path, op: &'static str, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: path.to_owned(),
            op,
            source,
        }
    }
    pub fn damaged(path: &Utf8Path, offset: u64, what: &str) -> JournalError {
        JournalError::Damaged {
            path: path.to_owned(),
            offset,
            what: what.to_owned(),
        }
    }
}

type Result<T> = std::result::Result<T, JournalError>;

/// The retention volume: where every group's journal lives, with the services the journal needs.
#[derive(Clone)]
pub struct RetentionVolume {
    pub fs: Arc<dyn Fs>,
    pub clock: Arc<dyn Clock>,
    pub root: Utf8PathBuf,
    pub policy: Policy,
    /// Most bytes the journals may take on the volume (all groups); `None` = the free space.
    pub budget: Option<u64>,
    pub batch_bytes: u64,
}

/// Which point to recover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointSelector {
    Latest,
    LatestAppConsistent,
    /// The newest point at or before this time.
    AtOrBefore(Timestamp),
}

impl std::str::FromStr for PointSelector {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "latest" => Ok(PointSelector::Latest),
            "latest-app-consistent" => Ok(PointSelector::LatestAppConsistent),
            t => Timestamp::parse_rfc3339(t)
                .map(PointSelector::AtOrBefore)
                .map_err(|e| format!("{e}; or use `latest` or `latest-app-consistent`")),
        }
    }
}

/// What happened to one frame handed to [`GroupJournal::apply_frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameOutcome {
    /// Buffered; durable at the next commit.
    Accepted,
    /// Already acknowledged earlier (a resend): ignored, never applied twice.
    Duplicate,
    /// A tag: a recovery point now exists (durable).
    PointCreated(RecoveryPoint),
}

/// One undo or rollback record found on disk.
#[derive(Debug, Clone)]
struct BlockRecord {
    disk: u32,
    offset: u64,
    len: u32,
    /// The commit sequence number of the batch that wrote the record.
    tag: u64,
    /// Where the old data starts in its file.
    data_at: u64,
}

struct PendingWrite {
    lsn: Lsn,
    time: Timestamp,
    disk: u32,
    offset: u64,
    data: Vec<u8>,
}

/// Which blocks of each disk the open epoch has already saved: one bit per 4 KiB block, so the
/// memory is bounded by the disks' size (32 MiB per TiB), not by the churn.
struct SavedBlocks(Vec<Vec<u64>>);

impl SavedBlocks {
    fn new(disks: &[DiskSpec]) -> SavedBlocks {
        SavedBlocks(
            disks
                .iter()
                .map(|d| vec![0u64; (d.capacity / BLOCK_SIZE).div_ceil(64) as usize])
                .collect(),
        )
    }
    fn contains(&self, disk: u32, block: u64) -> bool {
        self.0[disk as usize][(block / 64) as usize] & (1 << (block % 64)) != 0
    }
    fn insert(&mut self, disk: u32, block: u64) {
        self.0[disk as usize][(block / 64) as usize] |= 1 << (block % 64);
    }
    fn clear(&mut self) {
        for bits in &mut self.0 {
            bits.fill(0);
        }
    }
}

/// Returned by [`GroupJournal::recover`].
#[derive(Debug, Clone)]
pub struct Recovered {
    pub point: RecoveryPoint,
    /// The files written (recovery into a directory) or the targets rolled back (in place).
    pub images: Vec<Utf8PathBuf>,
    pub undo_bytes_applied: u64,
}

/// An open replication group.
pub struct GroupJournal {
    vol: RetentionVolume,
    dir: Utf8PathBuf,
    pub(crate) state: TimelineState,
    timeline: Box<dyn FsFile>,
    timeline_len: u64,
    undo: Box<dyn FsFile>,
    rollback: Box<dyn FsFile>,
    targets: Vec<Box<dyn FsFile>>,
    /// Blocks whose pre-epoch content is already in the open epoch's undo log.
    saved: SavedBlocks,
    /// Gathers adjacent writes for the targets (allocated at the first commit).
    staging: Option<io::AlignedBuf>,
    pending: Vec<PendingWrite>,
    pending_bytes: u64,
    /// Set after any failed write or flush: the stream stops; reopening recovers.
    failed: Option<String>,
    /// Things recovery had to repair (a torn tail cut, an unfinished batch rolled back).
    pub notes: Vec<String>,
    _lock: Box<dyn std::any::Any + Send>,
}

pub fn valid_group_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid group name: use 1 to 64 letters, digits, '.', '_' or '-' (not starting with '.')"
        ))
    }
}

impl RetentionVolume {
    pub fn groups_dir(&self) -> Utf8PathBuf {
        self.root.join("groups")
    }
    pub fn group_dir(&self, name: &str) -> Utf8PathBuf {
        self.groups_dir().join(name)
    }
    /// Names of the groups on this volume.
    pub fn groups(&self) -> Vec<String> {
        let dir = self.groups_dir();
        let mut out = Vec::new();
        for name in self.fs.list(&dir).unwrap_or_default() {
            if self
                .fs
                .exists(&dir.join(&name).join(timeline::TIMELINE_FILE))
            {
                out.push(name);
            }
        }
        out
    }
    /// Bytes the journals take on the volume (every file under `groups/`).
    pub fn usage(&self) -> u64 {
        let dir = self.groups_dir();
        let mut total = 0;
        for g in self.fs.list(&dir).unwrap_or_default() {
            let gd = dir.join(&g);
            for f in self.fs.list(&gd).unwrap_or_default() {
                total += self.fs.file_size(&gd.join(f));
            }
        }
        total
    }
    pub fn group_usage(&self, name: &str) -> u64 {
        let gd = self.group_dir(name);
        self.fs
            .list(&gd)
            .unwrap_or_default()
            .iter()
            .map(|f| self.fs.file_size(&gd.join(f)))
            .sum()
    }

    /// Creates a group: its disks' targets must exist (files or block devices) and be at least
    /// as large as the capacity given (or, without a capacity, the target's size is the disk's).
    pub fn create_group(&self, name: &str, disks: Vec<DiskSpec>) -> Result<()> {
        valid_group_name(name).map_err(JournalError::Rejected)?;
        if disks.is_empty() {
            return Err(JournalError::Rejected(format!(
                "group {name}: give at least one disk (--disk NAME=TARGET)"
            )));
        }
        let mut seen = HashSet::new();
        for d in &disks {
            valid_group_name(&d.name)
                .map_err(|e| JournalError::Rejected(format!("disk name: {e}")))?;
            if !seen.insert(d.name.clone()) {
                return Err(JournalError::Rejected(format!(
                    "disk {} is named twice",
                    d.name
                )));
            }
            if d.capacity == 0 || d.capacity % BLOCK_SIZE != 0 {
                return Err(JournalError::Rejected(format!(
                    "disk {}: capacity {} is not a positive multiple of {BLOCK_SIZE} bytes",
                    d.name, d.capacity
                )));
            }
            let f = self
                .fs
                .open(&d.target, OpenMode::ReadWrite)
                .map_err(|e| JournalError::io(&d.target, "open target", e))?;
            let len = f
                .len()
                .map_err(|e| JournalError::io(&d.target, "size", e))?;
            if len < d.capacity {
                return Err(JournalError::Rejected(format!(
                    "disk {}: target {} holds {len} bytes, less than the disk's {} bytes",
                    d.name, d.target, d.capacity
                )));
            }
        }
        let dir = self.group_dir(name);
        if self.fs.exists(&dir.join(timeline::TIMELINE_FILE)) {
            return Err(JournalError::Rejected(format!(
                "group {name} already exists in {}",
                self.root
            )));
        }
        self.fs
            .create_dir_all(&dir)
            .map_err(|e| JournalError::io(&dir, "create directory", e))?;
        self.fs
            .sync_dir(&self.groups_dir())
            .map_err(|e| JournalError::io(&self.groups_dir(), "sync directory", e))?;
        let now = self.clock.now();
        let state = TimelineState::new(name, disks, now);
        create_log(
            self.fs.as_ref(),
            &dir.join(undo_file(state.open.id)),
            FileKind::Undo,
            state.open.id,
        )?;
        create_log(
            self.fs.as_ref(),
            &dir.join(timeline::ROLLBACK_FILE),
            FileKind::Rollback,
            0,
        )?;
        timeline::write_snapshot(self.fs.as_ref(), &dir, &state)?;
        Ok(())
    }

    /// Opens a group, recovering from any crash first.
    pub fn open_group(&self, name: &str) -> Result<GroupJournal> {
        valid_group_name(name).map_err(JournalError::Rejected)?;
        let dir = self.group_dir(name);
        if !self.fs.exists(&dir.join(timeline::TIMELINE_FILE)) {
            return Err(JournalError::Rejected(format!(
                "no group {name} in {} (create it with `mt-agent group create {name} --disk NAME=TARGET`)",
                self.root
            )));
        }
        GroupJournal::open(self.clone(), dir)
    }
}

fn undo_file(id: u64) -> String {
    format!("undo-{id:016x}.log")
}

fn create_log(fs: &dyn Fs, path: &Utf8Path, kind: FileKind, id: u64) -> Result<Box<dyn FsFile>> {
    let f = fs
        .open(path, OpenMode::CreateTruncate)
        .map_err(|e| JournalError::io(path, "create", e))?;
    f.write_all_at(&record::file_header(kind, id), 0)
        .map_err(|e| JournalError::io(path, "write", e))?;
    f.sync_data()
        .map_err(|e| JournalError::io(path, "flush", e))?;
    let dir = path.parent().unwrap_or(Utf8Path::new("."));
    fs.sync_dir(dir)
        .map_err(|e| JournalError::io(dir, "sync directory", e))?;
    Ok(f)
}

/// The record header and block head that go in front of `data` in an undo or rollback record.
fn block_record_header(
    kind: u8,
    tag: u64,
    disk: u32,
    offset: u64,
    data: &[u8],
) -> [u8; record::RECORD_HEADER_LEN as usize + BLOCK_HEAD_LEN] {
    let mut h = [0u8; record::RECORD_HEADER_LEN as usize + BLOCK_HEAD_LEN];
    let head = &mut h[record::RECORD_HEADER_LEN as usize..];
    head[0..8].copy_from_slice(&tag.to_le_bytes());
    head[8..12].copy_from_slice(&disk.to_le_bytes());
    head[16..24].copy_from_slice(&offset.to_le_bytes());
    head[24..28].copy_from_slice(&(data.len() as u32).to_le_bytes());
    let len = (BLOCK_HEAD_LEN + data.len()) as u32;
    h[0..4].copy_from_slice(&record::RECORD_MAGIC);
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8] = kind;
    let mut crc = crc32c::crc32c(&h[0..12]);
    crc = crc32c::crc32c_append(crc, &h[record::RECORD_HEADER_LEN as usize..]);
    crc = crc32c::crc32c_append(crc, data);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

fn decode_block_head(
    rec: &record::RecordAt,
    body_len: u64,
) -> std::result::Result<BlockRecord, String> {
    let b = &rec.body;
    if b.len() < BLOCK_HEAD_LEN {
        return Err("block record shorter than its head".into());
    }
    let len = u32::from_le_bytes(b[24..28].try_into().unwrap());
    if u64::from(len) + BLOCK_HEAD_LEN as u64 != body_len {
        return Err("block record length fields disagree".into());
    }
    Ok(BlockRecord {
        tag: u64::from_le_bytes(b[0..8].try_into().unwrap()),
        disk: u32::from_le_bytes(b[8..12].try_into().unwrap()),
        offset: u64::from_le_bytes(b[16..24].try_into().unwrap()),
        len,
        data_at: rec.offset + record::RECORD_HEADER_LEN + BLOCK_HEAD_LEN as u64,
    })
}

/// Reads the block records of a log between `start` and `end`. With `strict`, any bad record is
/// damage (committed data); otherwise reading stops at the first bad one (an unfinished batch).
fn scan_blocks(
    file: &dyn FsFile,
    path: &Utf8Path,
    kind: u8,
    start: u64,
    end: u64,
    verify: bool,
    strict: bool,
) -> Result<Vec<BlockRecord>> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let rec = record::read_record_head(file, at, end, verify, BLOCK_HEAD_LEN);
        let parsed = rec.and_then(|(r, next, body_len)| {
            if r.kind != kind {
                return Err(record::BadRecord {
                    offset: at,
                    what: format!("unexpected record kind {}", r.kind),
                });
            }
            decode_block_head(&r, body_len)
                .map(|b| (b, next))
                .map_err(|what| record::BadRecord { offset: at, what })
        });
        match parsed {
            Ok((b, next)) => {
                out.push(b);
                at = next;
            }
            Err(bad) if strict => {
                return Err(JournalError::damaged(path, bad.offset, &bad.what));
            }
            Err(_) => break,
        }
    }
    Ok(out)
}

impl GroupJournal {
    fn open(vol: RetentionVolume, dir: Utf8PathBuf) -> Result<GroupJournal> {
        let fs = vol.fs.clone();
        let lock_path = dir.join("lock");
        let lock = fs.lock(&lock_path).map_err(|e| {
            JournalError::Rejected(format!(
                "{lock_path}: cannot lock the group ({e}); is another mt-agent working on it?"
            ))
        })?;
        let mut notes = Vec::new();
        let (state, timeline, timeline_len) = timeline::load(fs.as_ref(), &dir, &mut notes, true)?;
        let mut targets = Vec::new();
        for d in &state.disks {
            let f = fs
                .open(&d.target, OpenMode::Target)
                .map_err(|e| JournalError::io(&d.target, "open target", e))?;
            let len = f
                .len()
                .map_err(|e| JournalError::io(&d.target, "size", e))?;
            if len < d.capacity {
                return Err(JournalError::Rejected(format!(
                    "disk {}: target {} now holds {len} bytes, less than the disk's {} bytes; was it replaced?",
                    d.name, d.target, d.capacity
                )));
            }
            targets.push(f);
        }
        let undo_path = dir.join(undo_file(state.open.id));
        let undo = fs
            .open(&undo_path, OpenMode::ReadWrite)
            .map_err(|e| JournalError::io(&undo_path, "open undo log", e))?;
        let id = record::check_file_header(undo.as_ref(), &undo_path, FileKind::Undo)?;
        if id != state.open.id {
            return Err(JournalError::damaged(
                &undo_path,
                16,
                "epoch id does not match its name",
            ));
        }
        let undo_file_len = undo
            .len()
            .map_err(|e| JournalError::io(&undo_path, "size", e))?;
        if undo_file_len < state.open.undo_len {
            return Err(JournalError::damaged(
                &undo_path,
                undo_file_len,
                &format!(
                    "the undo log ends before its committed length {}",
                    state.open.undo_len
                ),
            ));
        }
        let rb_path = dir.join(timeline::ROLLBACK_FILE);
        let rollback = if fs.exists(&rb_path) {
            let f = fs
                .open(&rb_path, OpenMode::ReadWrite)
                .map_err(|e| JournalError::io(&rb_path, "open", e))?;
            record::check_file_header(f.as_ref(), &rb_path, FileKind::Rollback)?;
            f
        } else {
            create_log(fs.as_ref(), &rb_path, FileKind::Rollback, 0)?
        };
        let mut j = GroupJournal {
            vol,
            dir,
            state: state.clone(),
            timeline,
            timeline_len,
            undo,
            rollback,
            targets,
            saved: SavedBlocks::new(&state.disks),
            staging: None,
            pending: Vec::new(),
            pending_bytes: 0,
            failed: None,
            notes,
            _lock: lock,
        };
        j.roll_back_unfinished_batch(undo_file_len)?;
        // Rebuild which blocks the open epoch has saved (headers only: committed, so trusted for
        // this; a full check happens before any recovery uses them).
        let recs = scan_blocks(
            j.undo.as_ref(),
            &undo_path,
            REC_UNDO,
            FILE_HEADER_LEN,
            j.state.open.undo_len,
            false,
            true,
        )?;
        for r in recs {
            j.checked_disk(&r, &undo_path)?;
            for b in 0..u64::from(r.len) / BLOCK_SIZE {
                j.saved.insert(r.disk, r.offset / BLOCK_SIZE + b);
            }
        }
        if let Some(to) = j.state.intent {
            let point = j
                .state
                .points
                .iter()
                .find(|p| p.lsn == to)
                .cloned()
                .ok_or_else(|| {
                    JournalError::damaged(&j.timeline_path(), 0, "recovery intent names no point")
                })?;
            j.notes.push(format!(
                "finishing the interrupted in-place recovery to LSN {to}"
            ));
            j.roll_back_in_place(&point)?;
        }
        j.remove_orphans()?;
        Ok(j)
    }

    fn timeline_path(&self) -> Utf8PathBuf {
        self.dir.join(timeline::TIMELINE_FILE)
    }
    fn undo_path(&self, id: u64) -> Utf8PathBuf {
        self.dir.join(undo_file(id))
    }
    fn fs(&self) -> &dyn Fs {
        self.vol.fs.as_ref()
    }
    pub fn name(&self) -> &str {
        &self.state.group
    }
    pub fn disks(&self) -> &[DiskSpec] {
        &self.state.disks
    }
    pub fn state(&self) -> &TimelineState {
        &self.state
    }
    /// The newest acknowledged (durable) position.
    pub fn acked(&self) -> Lsn {
        self.state.tip
    }
    /// The position the next new frame must have.
    pub fn next_lsn(&self) -> Lsn {
        Lsn(self.state.tip.0 + self.pending.len() as u64 + 1)
    }

    /// Restores the blocks an unfinished batch may have overwritten, from the undo records past
    /// the committed length and the rollback records of the next batch, then cuts both logs.
    fn roll_back_unfinished_batch(&mut self, undo_file_len: u64) -> Result<()> {
        let undo_path = self.undo_path(self.state.open.id);
        let rb_path = self.dir.join(timeline::ROLLBACK_FILE);
        let next_seq = self.state.commit_seq + 1;
        // Only one batch is ever unfinished. Records of a later one mean the timeline lost
        // committed records (damage, not a crash): refuse rather than roll back acknowledged data.
        let behind = |path: &Utf8Path, b: &BlockRecord| {
            JournalError::damaged(
                &self.timeline_path(),
                self.timeline_len,
                &format!(
                    "the timeline ends at commit {} but {path} holds a record of commit {} at byte {}: the timeline lost committed records",
                    self.state.commit_seq,
                    b.tag,
                    b.data_at - BLOCK_HEAD_LEN as u64 - record::RECORD_HEADER_LEN,
                ),
            )
        };
        let mut restore = Vec::new();
        for b in scan_blocks(
            self.undo.as_ref(),
            &undo_path,
            REC_UNDO,
            self.state.open.undo_len,
            undo_file_len,
            true,
            false,
        )? {
            if b.tag != next_seq {
                return Err(behind(&undo_path, &b));
            }
            restore.push((b, false));
        }
        let rb_len = self
            .rollback
            .len()
            .map_err(|e| JournalError::io(&rb_path, "size", e))?;
        for b in scan_blocks(
            self.rollback.as_ref(),
            &rb_path,
            REC_ROLLBACK,
            FILE_HEADER_LEN,
            rb_len,
            true,
            false,
        )? {
            if b.tag > next_seq {
                return Err(behind(&rb_path, &b));
            }
            if b.tag != next_seq {
                break;
            }
            restore.push((b, true));
        }
        if !restore.is_empty() {
            let mut touched = HashSet::new();
            for (b, from_rb) in &restore {
                let (file, path) = if *from_rb {
                    (&self.rollback, &rb_path)
                } else {
                    (&self.undo, &undo_path)
                };
                let disk = self.checked_disk(b, path)?;
                let mut buf = vec![0u8; b.len as usize];
                file.read_exact_at(&mut buf, b.data_at)
                    .map_err(|e| JournalError::io(path, "read", e))?;
                let t = &self.state.disks[disk].target;
                self.targets[disk]
                    .write_all_at(&buf, b.offset)
                    .map_err(|e| JournalError::io(t, "write", e))?;
                touched.insert(disk);
            }
            self.sync_targets(touched)?;
            self.notes.push(format!(
                "rolled back an unfinished batch after LSN {} ({} block ranges restored)",
                self.state.tip,
                restore.len()
            ));
        }
        if undo_file_len > self.state.open.undo_len {
            self.undo
                .set_len(self.state.open.undo_len)
                .and_then(|_| self.undo.sync_data())
                .map_err(|e| JournalError::io(&undo_path, "cut", e))?;
        }
        if rb_len > FILE_HEADER_LEN {
            self.rollback
                .set_len(FILE_HEADER_LEN)
                .and_then(|_| self.rollback.sync_data())
                .map_err(|e| JournalError::io(&rb_path, "cut", e))?;
        }
        Ok(())
    }

    fn checked_disk(&self, b: &BlockRecord, path: &Utf8Path) -> Result<usize> {
        let d = b.disk as usize;
        match self.state.disks.get(d) {
            Some(spec)
                if b.offset
                    .checked_add(u64::from(b.len))
                    .is_some_and(|end| end <= spec.capacity)
                    && b.offset.is_multiple_of(BLOCK_SIZE) =>
            {
                Ok(d)
            }
            _ => Err(JournalError::damaged(
                path,
                b.data_at - BLOCK_HEAD_LEN as u64,
                "block record names a disk or range outside the group",
            )),
        }
    }

    fn sync_targets(&self, disks: impl IntoIterator<Item = usize>) -> Result<()> {
        for d in disks {
            self.targets[d]
                .sync_data()
                .map_err(|e| JournalError::io(&self.state.disks[d].target, "flush", e))?;
        }
        Ok(())
    }

    /// Deletes journal files nothing refers to (left by a crash during a prune, a recovery or
    /// the opening of an epoch).
    fn remove_orphans(&mut self) -> Result<()> {
        let mut live: HashSet<String> = self.state.closed.iter().map(|e| undo_file(e.id)).collect();
        live.insert(undo_file(self.state.open.id));
        let mut removed = false;
        for name in self.fs().list(&self.dir).unwrap_or_default() {
            let epoch = name
                .strip_prefix("undo-")
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| u64::from_str_radix(n, 16).ok());
            if let (Some(id), false) = (epoch, live.contains(&name)) {
                // The one epoch a crash can leave unrecorded is the next one, still empty.
                let p = self.dir.join(&name);
                let next = self.state.next_epoch_id;
                if id > next || id == next && self.fs().file_size(&p) > FILE_HEADER_LEN {
                    return Err(JournalError::damaged(
                        &self.timeline_path(),
                        self.timeline_len,
                        &format!("{p} is an epoch the timeline does not know (the next should be {next}): the timeline lost committed records"),
                    ));
                }
            }
            let orphan =
                (epoch.is_some() && !live.contains(&name)) || name == timeline::TIMELINE_TMP;
            if orphan {
                let p = self.dir.join(&name);
                self.fs()
                    .remove_file(&p)
                    .map_err(|e| JournalError::io(&p, "remove", e))?;
                removed = true;
            }
        }
        if removed {
            self.fs()
                .sync_dir(&self.dir)
                .map_err(|e| JournalError::io(&self.dir, "sync directory", e))?;
        }
        Ok(())
    }

    fn check_usable(&self) -> Result<()> {
        match &self.failed {
            Some(why) => Err(JournalError::Rejected(format!(
                "the stream of group {} stopped after an error ({why}); reopen the group to recover",
                self.state.group
            ))),
            None => Ok(()),
        }
    }

    /// Marks the stream failed when `r` is an I/O error: nothing is retried on this handle.
    fn guard<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(JournalError::Io { path, op, source }) = &r {
            self.failed = Some(format!("{path}: {op}: {source}"));
        }
        r
    }

    /// Checks that a stream's Start frame describes this group.
    pub fn check_start(&self, group: &str, disks: &[(String, u64)]) -> Result<()> {
        let mine: Vec<(String, u64)> = self
            .state
            .disks
            .iter()
            .map(|d| (d.name.clone(), d.capacity))
            .collect();
        if group != self.state.group || disks != mine.as_slice() {
            return Err(JournalError::Rejected(format!(
                "the stream is for group {group} with disks {disks:?}, but group {} has disks {mine:?}",
                self.state.group
            )));
        }
        Ok(())
    }

    /// Takes one frame of the stream. Writes are buffered and become durable (acknowledged) at
    /// the next commit; a tag commits and creates a recovery point.
    pub fn apply_frame(&mut self, frame: Frame) -> Result<FrameOutcome> {
        self.check_usable()?;
        match frame {
            Frame::Start { group, disks } => {
                self.check_start(&group, &disks)?;
                Ok(FrameOutcome::Duplicate)
            }
            Frame::Write {
                lsn,
                source_time,
                disk,
                offset,
                data,
                resync,
            } => {
                if lsn <= self.state.tip {
                    return Ok(FrameOutcome::Duplicate);
                }
                self.check_order(lsn)?;
                let spec = self.state.disks.get(disk as usize).ok_or_else(|| {
                    JournalError::Rejected(format!(
                        "LSN {lsn}: disk number {disk}, but group {} has {} disks",
                        self.state.group,
                        self.state.disks.len()
                    ))
                })?;
                let end = offset.checked_add(data.len() as u64);
                if end.is_none_or(|e| e > spec.capacity)
                    || offset % BLOCK_SIZE != 0
                    || !(data.len() as u64).is_multiple_of(BLOCK_SIZE)
                    || data.is_empty()
                {
                    return Err(JournalError::Rejected(format!(
                        "LSN {lsn}: a write of {} bytes at offset {offset} does not fit disk {} ({} bytes, whole {BLOCK_SIZE}-byte blocks)",
                        data.len(),
                        spec.name,
                        spec.capacity
                    )));
                }
                match (resync, self.state.resync) {
                    (true, None) => self.begin_resync(lsn)?,
                    (false, Some(from)) => {
                        return Err(JournalError::Rejected(format!(
                            "LSN {lsn}: a change-stream write while the resync of group {} begun at LSN {from} has not reached its closing tag; finish the resync first (mt-agent send --delta)",
                            self.state.group
                        )))
                    }
                    _ => {}
                }
                // A crash-consistent point at least every 5 minutes of incoming changes (never
                // in the middle of a resync: the targets are not consistent there).
                let first = self
                    .pending
                    .first()
                    .map(|w| w.time)
                    .or(self.state.open.first_change);
                if let (Some(first), None) = (first, self.state.resync) {
                    if source_time.secs_since(first) >= self.vol.policy.crash_point_interval_secs {
                        self.commit()?;
                        self.make_point(self.state.tip, PointKind::Crash, "auto".into(), None)?;
                    }
                }
                self.pending_bytes += data.len() as u64;
                self.pending.push(PendingWrite {
                    lsn,
                    time: source_time,
                    disk,
                    offset,
                    data,
                });
                let batch = if self.state.resync.is_some() {
                    self.vol.batch_bytes.max(RESYNC_BATCH_BYTES)
                } else {
                    self.vol.batch_bytes
                };
                if self.pending_bytes >= batch {
                    self.commit()?;
                }
                Ok(FrameOutcome::Accepted)
            }
            Frame::Tag {
                lsn,
                source_time,
                kind,
                name,
            } => {
                if lsn <= self.state.tip {
                    return Ok(FrameOutcome::Duplicate);
                }
                self.check_order(lsn)?;
                self.commit()?;
                let kind = match kind {
                    TagKind::Crash => PointKind::Crash,
                    TagKind::App => PointKind::App,
                };
                let p = self.make_point(lsn, kind, name, Some(source_time))?;
                Ok(FrameOutcome::PointCreated(p))
            }
        }
    }

    /// Records durably that a resync starts at `lsn`, after committing what came before it.
    fn begin_resync(&mut self, lsn: Lsn) -> Result<()> {
        self.commit()?;
        let rec = timeline::Record::Resync { from: lsn };
        let r = self.append_timeline(&rec).and_then(|()| {
            rec.apply(&mut self.state)
                .map_err(|e| JournalError::damaged(&self.timeline_path(), self.timeline_len, &e))
        });
        self.guard(r)
    }

    fn check_order(&self, lsn: Lsn) -> Result<()> {
        let want = self.next_lsn();
        if lsn != want {
            return Err(JournalError::Rejected(format!(
                "LSN {lsn} out of order: the next frame of group {} must have LSN {want}",
                self.state.group
            )));
        }
        Ok(())
    }

    /// Makes every buffered write durable and acknowledges it; returns the acknowledged LSN.
    pub fn commit(&mut self) -> Result<Lsn> {
        self.check_usable()?;
        if self.pending.is_empty() {
            return Ok(self.state.tip);
        }
        let r = self.commit_inner();
        self.guard(r)
    }

    fn commit_inner(&mut self) -> Result<Lsn> {
        let seq = self.state.commit_seq + 1;
        // A batch is all resync writes or none (the first resync write commits what is before).
        let resync = self.state.resync.is_some();
        // Which blocks need their old content saved, and where.
        let mut in_batch: HashSet<(u32, u64)> = HashSet::new();
        let mut undo_runs: Vec<(u32, u64, u64)> = Vec::new(); // disk, first block, count
        let mut rb_runs: Vec<(u32, u64, u64)> = Vec::new();
        for w in &self.pending {
            let first = w.offset / BLOCK_SIZE;
            for b in first..first + w.data.len() as u64 / BLOCK_SIZE {
                if !in_batch.insert((w.disk, b)) {
                    continue;
                }
                // Without any point, no recovery can need the epoch's undo: the rollback log,
                // rewritten every batch, is enough (the bytes are written, but not kept). In a
                // resync not even that: no state before its closing tag is consistent, so an
                // unfinished batch needs no rollback (the resync resends it).
                if self.saved.contains(w.disk, b) || self.state.points.is_empty() {
                    if resync {
                        continue;
                    }
                    match rb_runs.last_mut() {
                        Some((d, s, n)) if *d == w.disk && *s + *n == b => *n += 1,
                        _ => rb_runs.push((w.disk, b, 1)),
                    }
                } else {
                    match undo_runs.last_mut() {
                        Some((d, s, n)) if *d == w.disk && *s + *n == b => *n += 1,
                        _ => undo_runs.push((w.disk, b, 1)),
                    }
                }
            }
        }
        let payload: u64 = undo_runs
            .iter()
            .map(|r| r.2)
            .chain(rb_runs.iter().map(|r| r.2))
            .sum::<u64>()
            * BLOCK_SIZE;
        let records = (undo_runs.len() + rb_runs.len()) as u64;
        let needed = payload + records * (record::RECORD_HEADER_LEN + BLOCK_HEAD_LEN as u64) + 4096;
        self.ensure_space(needed)?;

        let mut undo_buf = Vec::new();
        for &(disk, b, n) in &undo_runs {
            self.save_old_blocks(&mut undo_buf, REC_UNDO, seq, disk, b, n)?;
        }
        let mut rb_buf = Vec::new();
        for &(disk, b, n) in &rb_runs {
            self.save_old_blocks(&mut rb_buf, REC_ROLLBACK, seq, disk, b, n)?;
        }
        let undo_path = self.undo_path(self.state.open.id);
        let rb_path = self.dir.join(timeline::ROLLBACK_FILE);
        if !undo_buf.is_empty() {
            self.undo
                .write_all_at(&undo_buf, self.state.open.undo_len)
                .map_err(|e| JournalError::io(&undo_path, "write", e))?;
        }
        if !rb_buf.is_empty() {
            self.rollback
                .write_all_at(&rb_buf, FILE_HEADER_LEN)
                .map_err(|e| JournalError::io(&rb_path, "write", e))?;
        }
        if !undo_buf.is_empty() {
            self.undo
                .sync_data()
                .map_err(|e| JournalError::io(&undo_path, "flush", e))?;
        }
        if !rb_buf.is_empty() {
            self.rollback
                .sync_data()
                .map_err(|e| JournalError::io(&rb_path, "flush", e))?;
        }
        // Only now may the targets change: everything they lose is durable above. Writes that
        // follow each other on a disk are gathered into one aligned buffer and written past the
        // page cache (a resync's 1 MiB frames become writes of up to STAGING_BYTES).
        let mut touched = std::collections::BTreeSet::new();
        let staging = self
            .staging
            .get_or_insert_with(|| io::AlignedBuf::new(STAGING_BYTES));
        let mut i = 0;
        while i < self.pending.len() {
            let (d, start) = (self.pending[i].disk as usize, self.pending[i].offset);
            let target = &self.state.disks[d].target;
            let mut len = 0usize;
            let mut j = i;
            while let Some(w) = self.pending.get(j) {
                let fits = len + w.data.len() <= staging.len();
                if w.disk as usize != d || w.offset != start + len as u64 || !fits {
                    break;
                }
                staging[len..len + w.data.len()].copy_from_slice(&w.data);
                len += w.data.len();
                self.state.last_write[d] = w.time;
                j += 1;
            }
            if j == i {
                // Larger than the buffer (never with frames of at most 4 MiB): as it is.
                let w = &self.pending[i];
                self.targets[d]
                    .write_all_at(&w.data, w.offset)
                    .map_err(|e| JournalError::io(target, "write", e))?;
                self.state.last_write[d] = w.time;
                j = i + 1;
            } else {
                self.targets[d]
                    .write_blocks_at(&staging[..len], start)
                    .map_err(|e| JournalError::io(target, "write", e))?;
            }
            touched.insert(d);
            i = j;
        }
        self.sync_targets(touched)?;
        let last = self.pending.last().expect("batch is not empty");
        let (tip, tip_time) = (last.lsn, last.time);
        let first_change = self.state.open.first_change.unwrap_or(self.pending[0].time);
        let new_undo_len = self.state.open.undo_len + undo_buf.len() as u64;
        let rec = timeline::Record::Commit {
            seq,
            tip,
            tip_time,
            received: self.vol.clock.now(),
            epoch: self.state.open.id,
            undo_len: new_undo_len,
            first_change,
            last_write: self.state.last_write.clone(),
        };
        self.append_timeline(&rec)?;
        rec.apply(&mut self.state)
            .map_err(|e| JournalError::damaged(&self.timeline_path(), self.timeline_len, &e))?;
        for &(disk, b, n) in &undo_runs {
            for i in 0..n {
                self.saved.insert(disk, b + i);
            }
        }
        self.pending.clear();
        self.pending_bytes = 0;
        if self.timeline_len > TIMELINE_COMPACT_BYTES {
            self.compact()?;
        }
        self.prune_if_due()?;
        Ok(self.state.tip)
    }

    /// Appends one undo or rollback record holding blocks `block..block + n` of a disk as they
    /// are now, read straight into the record (no copy: this is the hot path of every batch).
    fn save_old_blocks(
        &self,
        out: &mut Vec<u8>,
        kind: u8,
        seq: u64,
        disk: u32,
        block: u64,
        n: u64,
    ) -> Result<()> {
        let start = out.len();
        let data_len = (n * BLOCK_SIZE) as usize;
        let head_end = start + record::RECORD_HEADER_LEN as usize + BLOCK_HEAD_LEN;
        out.resize(head_end + data_len, 0);
        let d = disk as usize;
        self.targets[d]
            .read_exact_at(&mut out[head_end..], block * BLOCK_SIZE)
            .map_err(|e| JournalError::io(&self.state.disks[d].target, "read", e))?;
        let (before, data) = out.split_at_mut(head_end);
        before[start..].copy_from_slice(&block_record_header(
            kind,
            seq,
            disk,
            block * BLOCK_SIZE,
            data,
        ));
        Ok(())
    }

    fn append_timeline(&mut self, rec: &timeline::Record) -> Result<()> {
        let mut buf = Vec::new();
        rec.encode(&mut buf);
        let path = self.timeline_path();
        self.timeline
            .write_all_at(&buf, self.timeline_len)
            .map_err(|e| JournalError::io(&path, "write", e))?;
        self.timeline
            .sync_data()
            .map_err(|e| JournalError::io(&path, "flush", e))?;
        self.timeline_len += buf.len() as u64;
        Ok(())
    }

    /// Refuses a batch that would not fit: first prunes what the policy allows, then stops.
    fn ensure_space(&mut self, needed: u64) -> Result<()> {
        let check = |j: &GroupJournal| -> Option<String> {
            let free = j.fs().free_space(&j.vol.root).unwrap_or(0);
            if needed > free {
                return Some(format!(
                    "{} needs {needed} more bytes but the file system has {free} free",
                    j.vol.root
                ));
            }
            if let Some(budget) = j.vol.budget {
                let used = j.vol.usage();
                if used + needed > budget {
                    return Some(format!(
                        "the journals use {used} of the {budget}-byte retention budget and the next batch needs {needed} more"
                    ));
                }
            }
            None
        };
        let Some(_) = check(self) else { return Ok(()) };
        self.prune()?;
        match check(self) {
            None => Ok(()),
            Some(why) => {
                let now = self.vol.clock.now();
                let msg = format!("{why}; acknowledged up to LSN {}", self.state.tip);
                if self.state.stalled.is_none() {
                    let rec = timeline::Record::Stall {
                        since: now,
                        reason: msg.clone(),
                    };
                    // Best effort: the volume may be too full even for this small record.
                    if self.append_timeline(&rec).is_ok() {
                        let _ = rec.apply(&mut self.state);
                    }
                }
                Err(JournalError::RetentionFull(msg))
            }
        }
    }

    fn make_point(
        &mut self,
        lsn: Lsn,
        kind: PointKind,
        name: String,
        source_time: Option<Timestamp>,
    ) -> Result<RecoveryPoint> {
        let r = self.make_point_inner(lsn, kind, name, source_time);
        self.guard(r)
    }

    fn make_point_inner(
        &mut self,
        lsn: Lsn,
        kind: PointKind,
        name: String,
        source_time: Option<Timestamp>,
    ) -> Result<RecoveryPoint> {
        assert!(
            self.pending.is_empty(),
            "a point is made only between batches"
        );
        let new_id = self.state.next_epoch_id;
        let path = self.undo_path(new_id);
        let new_undo = create_log(self.fs(), &path, FileKind::Undo, new_id)?;
        let point = RecoveryPoint {
            lsn,
            kind,
            name,
            source_time: source_time.unwrap_or(self.state.tip_time),
            received_time: self.vol.clock.now(),
        };
        let rec = timeline::Record::Point {
            seq: self.state.commit_seq + 1,
            point: point.clone(),
            closed_undo_len: self.state.open.undo_len,
            next_epoch: new_id,
        };
        self.append_timeline(&rec)?;
        rec.apply(&mut self.state)
            .map_err(|e| JournalError::damaged(&self.timeline_path(), self.timeline_len, &e))?;
        self.undo = new_undo;
        self.saved.clear();
        if self.state.points.len() == 1 {
            // The epoch before the first point leads nowhere: drop it now.
            self.prune_inner()?;
        }
        Ok(point)
    }

    /// Rewrites the timeline as one snapshot record (atomically: temporary file, rename).
    fn compact(&mut self) -> Result<()> {
        let (f, len) = timeline::write_snapshot(self.fs(), &self.dir, &self.state)?;
        self.timeline = f;
        self.timeline_len = len;
        Ok(())
    }

    fn prune_if_due(&mut self) -> Result<()> {
        let horizon = self
            .vol
            .clock
            .now()
            .plus_secs(-self.vol.policy.retention_secs);
        if self
            .state
            .points
            .first()
            .is_some_and(|p| p.source_time < horizon)
        {
            self.prune()?;
        }
        Ok(())
    }

    /// Drops recovery points older than the retention window (never a newer one, and never the
    /// newest application-consistent point until a newer one exists) and the undo they needed.
    /// Returns the points removed.
    pub fn prune(&mut self) -> Result<Vec<RecoveryPoint>> {
        self.check_usable()?;
        let r = self.prune_inner();
        self.guard(r)
    }

    fn prune_inner(&mut self) -> Result<Vec<RecoveryPoint>> {
        let horizon = self
            .vol
            .clock
            .now()
            .plus_secs(-self.vol.policy.retention_secs);
        let newest_app = self
            .state
            .points
            .iter()
            .rev()
            .find(|p| p.kind == PointKind::App)
            .map(|p| p.lsn);
        let (keep, gone): (Vec<_>, Vec<_>) = self
            .state
            .points
            .iter()
            .cloned()
            .partition(|p| p.source_time >= horizon || Some(p.lsn) == newest_app);
        // An epoch ending at or before the oldest point only leads to points that are gone.
        let oldest_kept = keep.first().map_or(self.state.open.start, |p| p.lsn);
        let (live, dead): (Vec<_>, Vec<_>) = self
            .state
            .closed
            .iter()
            .cloned()
            .partition(|e| e.end > oldest_kept);
        if gone.is_empty() && dead.is_empty() {
            return Ok(gone);
        }
        self.state.points = keep;
        self.state.closed = live;
        self.compact()?;
        for e in &dead {
            let p = self.undo_path(e.id);
            self.fs()
                .remove_file(&p)
                .map_err(|err| JournalError::io(&p, "remove", err))?;
        }
        if !dead.is_empty() {
            self.fs()
                .sync_dir(&self.dir)
                .map_err(|e| JournalError::io(&self.dir, "sync directory", e))?;
        }
        Ok(gone)
    }

    /// The recovery points, oldest first. The acknowledged tip ("latest") is not among them; see
    /// [`GroupJournal::latest`].
    pub fn points(&self) -> &[RecoveryPoint] {
        &self.state.points
    }

    /// The newest acknowledged state as a point: crash-consistent for the whole group, since the
    /// stream is applied in order.
    pub fn latest(&self) -> RecoveryPoint {
        RecoveryPoint {
            lsn: self.state.tip,
            kind: PointKind::Latest,
            name: "latest".into(),
            source_time: self.state.tip_time,
            received_time: self.state.tip_received,
        }
    }

    /// Whether "latest" is a consistent state: not while a resync is unfinished.
    pub fn latest_is_consistent(&self) -> std::result::Result<(), String> {
        match self.state.resync {
            None => Ok(()),
            Some(from) => Err(format!(
                "group {} is in the middle of a resync begun at LSN {from}: its newest state mixes old and new blocks and is not a recovery point until the resync's closing tag; recover one of its points instead (mt-agent points {})",
                self.state.group, self.state.group
            )),
        }
    }

    /// Resolves a selector to a point.
    pub fn select(&self, sel: &PointSelector) -> Result<RecoveryPoint> {
        match sel {
            PointSelector::Latest => {
                self.latest_is_consistent()
                    .map_err(JournalError::Rejected)?;
                Ok(self.latest())
            }
            PointSelector::LatestAppConsistent => self
                .state
                .points
                .iter()
                .rev()
                .find(|p| p.kind == PointKind::App)
                .cloned()
                .ok_or_else(|| {
                    JournalError::Rejected(format!(
                        "group {} has no application-consistent point in its retention window",
                        self.state.group
                    ))
                }),
            PointSelector::AtOrBefore(t) => {
                let latest = self.latest();
                if latest.source_time <= *t
                    && latest.lsn > Lsn(0)
                    && self.latest_is_consistent().is_ok()
                {
                    return Ok(latest);
                }
                self.state
                    .points
                    .iter()
                    .rev()
                    .find(|p| p.source_time <= *t)
                    .cloned()
                    .ok_or_else(|| {
                        JournalError::Rejected(format!(
                            "group {} has no recovery point at or before {t}; the oldest is {}",
                            self.state.group,
                            self.state
                                .points
                                .first()
                                .map_or("none".to_string(), |p| p.source_time.to_string())
                        ))
                    })
            }
        }
    }

    /// Reads and checks every undo record needed to go from the tip back to `point`. Returns
    /// them newest epoch first; any damage refuses the point before anything is written.
    fn undo_chain(&self, point: &RecoveryPoint) -> Result<Vec<(Utf8PathBuf, Vec<BlockRecord>)>> {
        let mut epochs: Vec<(u64, u64)> = self
            .state
            .closed
            .iter()
            .filter(|e| e.start >= point.lsn)
            .map(|e| (e.id, e.undo_len))
            .collect();
        if point.lsn < self.state.tip || self.state.open.start >= point.lsn {
            epochs.push((self.state.open.id, self.state.open.undo_len));
        }
        if point.kind == PointKind::Latest {
            epochs.clear();
        }
        let mut out = Vec::new();
        for (id, len) in epochs.into_iter().rev() {
            let path = self.undo_path(id);
            let f = self.fs().open(&path, OpenMode::Read).map_err(|e| {
                JournalError::damaged(
                    &path,
                    0,
                    &format!("the undo log of this point's epoch is missing ({e})"),
                )
            })?;
            let got = record::check_file_header(f.as_ref(), &path, FileKind::Undo)?;
            if got != id {
                return Err(JournalError::damaged(
                    &path,
                    16,
                    "epoch id does not match its name",
                ));
            }
            let flen = f.len().map_err(|e| JournalError::io(&path, "size", e))?;
            if flen < len {
                return Err(JournalError::damaged(
                    &path,
                    flen,
                    &format!("truncated: {len} bytes were committed"),
                ));
            }
            let recs = scan_blocks(
                f.as_ref(),
                &path,
                REC_UNDO,
                FILE_HEADER_LEN,
                len,
                true,
                true,
            )?;
            for r in &recs {
                self.checked_disk(r, &path)?;
            }
            out.push((path, recs));
        }
        Ok(out)
    }

    /// Recovers the group to a point: into new image files under `to` (the targets stay as they
    /// are), or in place (the targets roll back; newer points are dropped and the stream resumes
    /// from the point's LSN).
    pub fn recover(&mut self, sel: &PointSelector, to: Option<&Utf8Path>) -> Result<Recovered> {
        self.check_usable()?;
        self.commit()?;
        let point = self.select(sel)?;
        self.recover_point(&point, to)
    }

    /// Recovers exactly this point (one of [`GroupJournal::points`] or [`GroupJournal::latest`]).
    pub fn recover_point(
        &mut self,
        point: &RecoveryPoint,
        to: Option<&Utf8Path>,
    ) -> Result<Recovered> {
        self.check_usable()?;
        self.commit()?;
        if point.kind == PointKind::Latest {
            self.latest_is_consistent()
                .map_err(JournalError::Rejected)?;
        }
        let listed = point.kind == PointKind::Latest && point.lsn == self.state.tip
            || self.state.points.iter().any(|p| p == point);
        if !listed {
            return Err(JournalError::Rejected(format!(
                "LSN {} is not a recovery point of group {}",
                point.lsn, self.state.group
            )));
        }
        let point = point.clone();
        let r = match to {
            Some(dir) => self.recover_into(&point, dir),
            None => self.roll_back_in_place(&point).map(|bytes| Recovered {
                point: point.clone(),
                images: self.state.disks.iter().map(|d| d.target.clone()).collect(),
                undo_bytes_applied: bytes,
            }),
        };
        self.guard(r)
    }

    fn recover_into(&self, point: &RecoveryPoint, dir: &Utf8Path) -> Result<Recovered> {
        let chain = self.undo_chain(point)?;
        let fs = self.fs();
        fs.create_dir_all(dir)
            .map_err(|e| JournalError::io(dir, "create directory", e))?;
        let mut images = Vec::new();
        let mut outs = Vec::new();
        for d in &self.state.disks {
            let fin = dir.join(format!("{}.img", d.name));
            if fs.exists(&fin) {
                return Err(JournalError::Rejected(format!(
                    "{fin} already exists; recover into an empty directory"
                )));
            }
            let tmp = dir.join(format!(".{}.img.tmp", d.name));
            let f = fs
                .open(&tmp, OpenMode::CreateTruncate)
                .map_err(|e| JournalError::io(&tmp, "create", e))?;
            outs.push((f, tmp, fin));
        }
        for (i, d) in self.state.disks.iter().enumerate() {
            copy_sparse(
                self.targets[i].as_ref(),
                &d.target,
                outs[i].0.as_ref(),
                &outs[i].1,
                d.capacity,
            )?;
        }
        let applied = self.apply_chain(&chain, |disk| {
            (outs[disk].0.as_ref(), outs[disk].1.as_path())
        })?;
        for (f, tmp, fin) in &outs {
            f.sync_data()
                .map_err(|e| JournalError::io(tmp, "flush", e))?;
            fs.rename(tmp, fin)
                .map_err(|e| JournalError::io(tmp, "rename", e))?;
            images.push(fin.clone());
        }
        fs.sync_dir(dir)
            .map_err(|e| JournalError::io(dir, "sync directory", e))?;
        Ok(Recovered {
            point: point.clone(),
            images,
            undo_bytes_applied: applied,
        })
    }

    /// Applies undo records newest epoch first (an older epoch's copy wins, as it should).
    fn apply_chain<'a>(
        &self,
        chain: &[(Utf8PathBuf, Vec<BlockRecord>)],
        out: impl Fn(usize) -> (&'a dyn FsFile, &'a Utf8Path),
    ) -> Result<u64> {
        let mut bytes = 0;
        let mut buf = Vec::new();
        for (path, recs) in chain {
            let f = self
                .fs()
                .open(path, OpenMode::Read)
                .map_err(|e| JournalError::io(path, "open", e))?;
            for r in recs {
                buf.resize(r.len as usize, 0);
                f.read_exact_at(&mut buf, r.data_at)
                    .map_err(|e| JournalError::io(path, "read", e))?;
                let (dst, dst_path) = out(r.disk as usize);
                dst.write_all_at(&buf, r.offset)
                    .map_err(|e| JournalError::io(dst_path, "write", e))?;
                bytes += u64::from(r.len);
            }
        }
        Ok(bytes)
    }

    /// Rolls the targets back to `point`, durably announcing the intent first so a crash in the
    /// middle is finished on the next open.
    fn roll_back_in_place(&mut self, point: &RecoveryPoint) -> Result<u64> {
        if point.lsn == self.state.tip && self.state.intent.is_none() {
            return Ok(0);
        }
        let chain = self.undo_chain(point)?;
        if self.state.intent.is_none() {
            let rec = timeline::Record::Intent { to: point.lsn };
            self.append_timeline(&rec)?;
            rec.apply(&mut self.state)
                .map_err(|e| JournalError::damaged(&self.timeline_path(), self.timeline_len, &e))?;
        }
        let targets: Vec<(&dyn FsFile, &Utf8Path)> = self
            .targets
            .iter()
            .zip(&self.state.disks)
            .map(|(t, d)| (t.as_ref(), d.target.as_path()))
            .collect();
        let applied = self.apply_chain(&chain, |d| targets[d])?;
        self.sync_targets(0..self.state.disks.len())?;
        // The new open epoch starts at the point; everything newer is gone.
        let new_id = self.state.next_epoch_id;
        let new_undo = create_log(self.fs(), &self.undo_path(new_id), FileKind::Undo, new_id)?;
        let mut s = self.state.clone();
        s.points.retain(|p| p.lsn <= point.lsn);
        s.closed.retain(|e| e.end <= point.lsn);
        s.open = OpenEpoch {
            id: new_id,
            start: point.lsn,
            undo_len: FILE_HEADER_LEN,
            first_change: None,
        };
        s.next_epoch_id = new_id + 1;
        s.tip = point.lsn;
        s.tip_time = point.source_time;
        s.commit_seq += 1;
        s.intent = None;
        s.stalled = None;
        s.resync = None;
        let (f, len) = timeline::write_snapshot(self.fs(), &self.dir, &s)?;
        self.state = s;
        self.timeline = f;
        self.timeline_len = len;
        self.undo = new_undo;
        self.saved.clear();
        self.remove_orphans()?;
        Ok(applied)
    }

    /// Checks every record of every undo log the listed points need; returns the damage found.
    pub fn verify(&self) -> Vec<JournalError> {
        let mut out = Vec::new();
        if let Some(p) = self.state.points.first() {
            if let Err(e) = self.undo_chain(p) {
                out.push(e);
            }
        }
        out
    }

    /// Bytes of the journal files of this group.
    pub fn usage(&self) -> u64 {
        self.vol.group_usage(&self.state.group)
    }
    pub fn volume(&self) -> &RetentionVolume {
        &self.vol
    }
}

/// Copies `len` bytes of a disk into a new image, leaving all-zero stretches as holes.
fn copy_sparse(
    src: &dyn FsFile,
    src_path: &Utf8Path,
    dst: &dyn FsFile,
    dst_path: &Utf8Path,
    len: u64,
) -> Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut at = 0;
    while at < len {
        let n = CHUNK.min(len - at) as usize;
        src.read_exact_at(&mut buf[..n], at)
            .map_err(|e| JournalError::io(src_path, "read", e))?;
        if buf[..n].iter().any(|&b| b != 0) {
            dst.write_all_at(&buf[..n], at)
                .map_err(|e| JournalError::io(dst_path, "write", e))?;
        }
        at += n as u64;
    }
    dst.set_len(len)
        .map_err(|e| JournalError::io(dst_path, "resize", e))
}
