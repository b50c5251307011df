//! An open group: its handle (the files, the lock, the state), opening it, and putting it back
//! into a consistent state after a crash (the unfinished batch rolled back, an interrupted
//! in-place recovery finished, orphaned files removed). A handle that saw an I/O error refuses
//! everything until it is reopened.

use super::blocks::{
    scan_blocks, BlockRecord, SavedBlocks, BLOCK_HEAD_LEN, REC_ROLLBACK, REC_UNDO,
};
use super::ingest::{InFlight, PendingWrite};
use super::io::{self as jio, Fs, FsFile, OpenMode};
use super::record::{self, FileKind, FILE_HEADER_LEN};
use super::timeline::{self, DiskSpec, TimelineState};
use super::volume::{create_log, undo_file};
use super::{JournalError, Lsn, Result, RetentionVolume};
use crate::replication::frame::BLOCK_SIZE;
use camino::{Utf8Path, Utf8PathBuf};
use std::collections::HashSet;
use std::sync::Arc;

/// An open replication group.
pub struct GroupJournal {
    pub(super) vol: RetentionVolume,
    pub(super) dir: Utf8PathBuf,
    pub(crate) state: TimelineState,
    /// Shared with the flush of the batch in flight, which appends its commit record.
    pub(super) timeline: Arc<dyn FsFile>,
    pub(super) timeline_len: u64,
    pub(super) undo: Box<dyn FsFile>,
    /// The two rollback logs ([`timeline::ROLLBACK_FILES`]): a batch uses the one of its
    /// commit sequence number's parity, so the next batch never overwrites the one in flight.
    pub(super) rollbacks: [Box<dyn FsFile>; 2],
    pub(super) targets: Vec<Arc<dyn FsFile>>,
    /// Blocks whose pre-epoch content is already in the open epoch's undo log.
    pub(super) saved: SavedBlocks,
    /// Gathers adjacent writes for the targets (allocated at the first commit; used by the
    /// flush of one batch at a time).
    pub(super) staging: Arc<std::sync::Mutex<Option<jio::AlignedBuf>>>,
    pub(super) pending: Vec<PendingWrite>,
    pub(super) pending_bytes: u64,
    /// How far the open epoch's undo log has space reserved (epoch id, end): see
    /// [`super::ingest::UNDO_RESERVE_BYTES`].
    pub(super) undo_reserved: (u64, u64),
    /// The batch whose flush and commit record are under way (at most one).
    /// Declared before the lock: dropping the handle waits for that flush before letting go.
    pub(super) in_flight: Option<InFlight>,
    /// Set after any failed write or flush: the stream stops; reopening recovers.
    pub(super) failed: Option<String>,
    /// Things recovery had to repair (a torn tail cut, an unfinished batch rolled back).
    pub notes: Vec<String>,
    pub(super) _lock: Box<dyn std::any::Any + Send>,
}

impl GroupJournal {
    /// Opens a group whose lock this process holds (see [`lock_group`]).
    pub(super) fn open(
        vol: RetentionVolume,
        dir: Utf8PathBuf,
        lock: Box<dyn std::any::Any + Send>,
    ) -> Result<GroupJournal> {
        let fs = vol.fs.clone();
        let mut notes = Vec::new();
        let (state, timeline, timeline_len) = timeline::load(fs.as_ref(), &dir, &mut notes, true)?;
        let mut targets = Vec::new();
        for d in &state.disks {
            targets.push(Arc::from(super::volume::open_target(
                fs.as_ref(),
                d,
                OpenMode::Target,
                true,
            )?));
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
        let open_rollback = |name: &str| -> Result<Box<dyn FsFile>> {
            let rb_path = dir.join(name);
            if fs.exists(&rb_path) {
                let f = fs
                    .open(&rb_path, OpenMode::ReadWrite)
                    .map_err(|e| JournalError::io(&rb_path, "open", e))?;
                record::check_file_header(f.as_ref(), &rb_path, FileKind::Rollback)?;
                Ok(f)
            } else {
                create_log(fs.as_ref(), &rb_path, FileKind::Rollback, 0)
            }
        };
        let [even, odd] = timeline::ROLLBACK_FILES;
        let rollbacks = [open_rollback(even)?, open_rollback(odd)?];
        let mut j = GroupJournal {
            vol,
            dir,
            state: state.clone(),
            timeline: Arc::from(timeline),
            timeline_len,
            undo,
            rollbacks,
            targets,
            saved: SavedBlocks::new(&state.disks),
            staging: Arc::default(),
            pending: Vec::new(),
            pending_bytes: 0,
            undo_reserved: (0, 0),
            in_flight: None,
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

    pub(super) fn timeline_path(&self) -> Utf8PathBuf {
        self.dir.join(timeline::TIMELINE_FILE)
    }

    pub(super) fn undo_path(&self, id: u64) -> Utf8PathBuf {
        self.dir.join(undo_file(id))
    }

    pub(super) fn fs(&self) -> &dyn Fs {
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
        Lsn(self.written_tip().0 + self.pending.len() as u64 + 1)
    }

    /// Restores the blocks an unfinished batch may have overwritten, from the undo records past
    /// the committed length and the rollback records of the next batch, then cuts the logs.
    /// Records of the batch after it may follow (its old content was saved while the unfinished
    /// one flushed, before it wrote any target): they are restored first, which changes nothing
    /// on a block that batch did not write, so the targets end at the committed state either way.
    fn roll_back_unfinished_batch(&mut self, undo_file_len: u64) -> Result<()> {
        let undo_path = self.undo_path(self.state.open.id);
        let next_seq = self.state.commit_seq + 1;
        // At most two batches are ever unfinished. Records of a later one mean the timeline lost
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
            // Only the batch after the unfinished one may follow it, never precede it.
            let after_next = restore
                .last()
                .is_some_and(|(r, _): &(BlockRecord, _)| r.tag > next_seq);
            match b.tag {
                t if t == next_seq && !after_next => restore.push((b, None)),
                t if t == next_seq + 1 => restore.push((b, None)),
                _ => return Err(behind(&undo_path, &b)),
            }
        }
        let mut rb_lens = [0u64; 2];
        for (i, name) in timeline::ROLLBACK_FILES.iter().enumerate() {
            let rb_path = self.dir.join(name);
            let rb = &self.rollbacks[i];
            rb_lens[i] = rb
                .len()
                .map_err(|e| JournalError::io(&rb_path, "size", e))?;
            for b in scan_blocks(
                rb.as_ref(),
                &rb_path,
                REC_ROLLBACK,
                FILE_HEADER_LEN,
                rb_lens[i],
                true,
                false,
            )? {
                if b.tag > next_seq + 1 {
                    return Err(behind(&rb_path, &b));
                }
                if b.tag < next_seq {
                    // Left by an earlier batch of this parity.
                    break;
                }
                restore.push((b, Some(i)));
            }
        }
        // The later batch first: the unfinished one's old content wins.
        restore.sort_by_key(|(b, _)| std::cmp::Reverse(b.tag));
        if !restore.is_empty() {
            let mut touched = HashSet::new();
            for (b, rb) in &restore {
                let (file, path) = match rb {
                    Some(i) => (
                        &self.rollbacks[*i],
                        self.dir.join(timeline::ROLLBACK_FILES[*i]),
                    ),
                    None => (&self.undo, undo_path.clone()),
                };
                let disk = self.checked_disk(b, &path)?;
                let mut buf = vec![0u8; b.len as usize];
                file.read_exact_at(&mut buf, b.data_at)
                    .map_err(|e| JournalError::io(&path, "read", e))?;
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
        for (i, name) in timeline::ROLLBACK_FILES.iter().enumerate() {
            if rb_lens[i] > FILE_HEADER_LEN {
                self.rollbacks[i]
                    .set_len(FILE_HEADER_LEN)
                    .and_then(|_| self.rollbacks[i].sync_data())
                    .map_err(|e| JournalError::io(&self.dir.join(name), "cut", e))?;
            }
        }
        Ok(())
    }

    pub(super) fn checked_disk(&self, b: &BlockRecord, path: &Utf8Path) -> Result<usize> {
        checked_disk(&self.state.disks, b, path)
    }

    pub(super) fn sync_targets(&self, disks: impl IntoIterator<Item = usize>) -> Result<()> {
        for d in disks {
            self.targets[d]
                .sync_data()
                .map_err(|e| JournalError::io(&self.state.disks[d].target, "flush", e))?;
        }
        Ok(())
    }

    /// Deletes journal files nothing refers to (left by a crash during a prune, a recovery or
    /// the opening of an epoch).
    pub(super) fn remove_orphans(&mut self) -> Result<()> {
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

    pub(super) fn check_usable(&self) -> Result<()> {
        match &self.failed {
            Some(why) => Err(JournalError::Rejected(format!(
                "the stream of group {} stopped after an error ({why}); reopen the group to recover",
                self.state.group
            ))),
            None => Ok(()),
        }
    }

    /// Marks the stream failed when `r` is an I/O error: nothing is retried on this handle.
    pub(super) fn guard<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(JournalError::Io { path, op, source }) = &r {
            self.failed = Some(format!("{path}: {op}: {source}"));
        }
        r
    }

    /// Bytes of the journal files of this group.
    pub fn usage(&self) -> u64 {
        self.vol.group_usage(&self.state.group)
    }

    pub fn volume(&self) -> &RetentionVolume {
        &self.vol
    }
}

/// The disk a block record names, refused as damage when it lies outside the group.
pub(super) fn checked_disk(disks: &[DiskSpec], b: &BlockRecord, path: &Utf8Path) -> Result<usize> {
    let d = b.disk as usize;
    match disks.get(d) {
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

/// Who holds a group, as the lock keeps it: the process, since when, and what it does there.
pub(super) fn holder_line(vol: &RetentionVolume, what: &str) -> String {
    // To the microsecond: two openings by one process differ, so a reader can tell them apart.
    format!(
        "pid {} since {:#}: {what}",
        std::process::id(),
        vol.clock.now()
    )
}

/// Takes the group's lock for this process; `Ok(Err(why))` when another process holds it
/// (`why` names the holder where it left its line).
pub(super) fn lock_group(
    vol: &RetentionVolume,
    dir: &Utf8Path,
    what: &str,
) -> Result<std::result::Result<Box<dyn std::any::Any + Send>, String>> {
    let lock_path = dir.join(LOCK_FILE);
    match vol.fs.lock(&lock_path, &holder_line(vol, what)) {
        Ok(l) => Ok(Ok(l)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            let who = match vol.fs.lock_holder(&lock_path) {
                Some(h) => format!("it is held by {h}"),
                None => "is another mt-agent working on it?".to_string(),
            };
            Ok(Err(format!(
                "{lock_path}: cannot lock the group ({e}); {who}"
            )))
        }
        Err(e) => Err(JournalError::Rejected(format!(
            "{lock_path}: cannot lock the group ({e}); is another mt-agent working on it?"
        ))),
    }
}

/// The lock file of a group (flock(2), and the holder's line).
pub(super) const LOCK_FILE: &str = "lock";
