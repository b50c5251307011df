//! The write path of a group: frames in, batches made durable in the order the format requires
//! (old content saved, then the targets written and flushed, then the commit record), space
//! checked before a batch is taken. Only this path writes new data to the targets.
//! It also applies the master target's clock rule to every frame's source time (README,
//! "Clocks"): too far ahead is refused, backwards is raised to the group's latest.

use super::blocks::{append_block_record, BlockHead, BLOCK_HEAD_LEN, REC_ROLLBACK, REC_UNDO};
use super::clock::Timestamp;
use super::io;
use super::points::TIMELINE_COMPACT_BYTES;
use super::record::{FILE_HEADER_LEN, RECORD_HEADER_LEN};
use super::timeline::{self, PointKind, RecoveryPoint};
use super::{GroupJournal, JournalError, Lsn, Result};
use crate::replication::frame::{Frame, TagKind, BLOCK_SIZE};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The aligned buffer that gathers a batch's adjacent writes for one direct write.
const STAGING_BYTES: usize = 8 << 20;
/// A gathered run at least this long is written past the page cache (one large direct write
/// costs less than copying it into the cache); shorter ones, the scattered small writes of a
/// change stream, go through the cache, so the flush sends them to the device together (a
/// direct write waits for each one). Every resync write is direct.
const DIRECT_RUN_BYTES: usize = 1 << 20;

/// The open epoch's undo log gets disk space reserved this far ahead of its end: appending to
/// a file whose blocks are not yet allocated costs the flush three to four times as much (an
/// 8 MiB append and fdatasync on ext4 here: 18 to 29 ms, against 5.4 ms into reserved space).
/// A point gives back what its closed epoch did not use.
pub(super) const UNDO_RESERVE_BYTES: u64 = 64 << 20;

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

pub(super) struct PendingWrite {
    pub(super) lsn: Lsn,
    /// Source time, after the clock rule.
    pub(super) time: Timestamp,
    /// When the master target took it.
    pub(super) received: Timestamp,
    /// How far the clock rule raised its source time (microseconds; 0: not at all).
    pub(super) step_back: i64,
    pub(super) disk: u32,
    pub(super) offset: u64,
    pub(super) data: Vec<u8>,
}

/// A batch whose old content is durable and whose targets are written, with the targets' flush
/// and its commit record under way (the next batch is taken and saves its old content meanwhile).
pub(crate) struct InFlight {
    flush: Flush,
    /// Its commit record, applied to the state once the flush is through.
    rec: timeline::Record,
    rec_len: u64,
    /// Its last LSN and source time: what the next frame follows.
    pub(super) tip: Lsn,
    pub(super) tip_time: Timestamp,
    /// Where its undo records end in the open epoch's log: the next batch's follow.
    undo_end: u64,
    /// Its writes (the flush thread writes them to the targets), and where the newest data of
    /// each block it writes is: (disk, block) -> (write, byte in it), made when the next batch
    /// first saves old content (a resync before any point never does).
    writes: Arc<Vec<PendingWrite>>,
    index: std::sync::OnceLock<HashMap<(u32, u64), (usize, usize)>>,
}

impl InFlight {
    /// Where the newest data of block `block` of `disk` is in this batch's writes, if it writes it.
    fn data_of(&self, disk: u32, block: u64) -> Option<&[u8]> {
        let index = self.index.get_or_init(|| {
            let mut index = HashMap::new();
            for (i, w) in self.writes.iter().enumerate() {
                let first = w.offset / BLOCK_SIZE;
                for b in 0..w.data.len() as u64 / BLOCK_SIZE {
                    // A later write of the same block replaces an earlier one's entry.
                    index.insert((w.disk, first + b), (i, (b * BLOCK_SIZE) as usize));
                }
            }
            index
        });
        let &(w, at) = index.get(&(disk, block))?;
        Some(&self.writes[w].data[at..at + BLOCK_SIZE as usize])
    }
}

/// Writes a batch to the targets in order. Writes that follow each other on a disk are gathered
/// into one aligned buffer; long runs (and every resync run) go past the page cache.
fn write_targets(
    pending: &[PendingWrite],
    staging: &mut io::AlignedBuf,
    targets: &[Arc<dyn io::FsFile>],
    paths: &[camino::Utf8PathBuf],
    resync: bool,
) -> Result<()> {
    let mut i = 0;
    while i < pending.len() {
        let (d, start) = (pending[i].disk as usize, pending[i].offset);
        let target = &paths[d];
        let mut len = 0usize;
        let mut j = i;
        while let Some(w) = pending.get(j) {
            let fits = len + w.data.len() <= staging.len();
            if w.disk as usize != d || w.offset != start + len as u64 || !fits {
                break;
            }
            staging[len..len + w.data.len()].copy_from_slice(&w.data);
            len += w.data.len();
            j += 1;
        }
        if j == i {
            // Larger than the buffer (never with frames of at most 4 MiB): as it is.
            let w = &pending[i];
            targets[d]
                .write_all_at(&w.data, w.offset)
                .map_err(|e| JournalError::io(target, "write", e))?;
            j = i + 1;
        } else if !resync && len < DIRECT_RUN_BYTES {
            targets[d]
                .write_all_at(&staging[..len], start)
                .map_err(|e| JournalError::io(target, "write", e))?;
        } else {
            targets[d]
                .write_blocks_at(&staging[..len], start)
                .map_err(|e| JournalError::io(target, "write", e))?;
        }
        i = j;
    }
    Ok(())
}

type FlushJob = Box<dyn FnOnce() -> Result<()> + Send>;

/// The flush of the batch in flight: on a thread of its own, or (on a file system that needs
/// one order) already run or run when waited for.
enum Flush {
    Thread(Option<std::thread::JoinHandle<Result<()>>>),
    Done(Option<Result<()>>),
    Later(Option<FlushJob>),
}

impl Flush {
    fn on_thread(job: impl FnOnce() -> Result<()> + Send + 'static) -> Result<Flush> {
        std::thread::Builder::new()
            .name("journal flush".into())
            .spawn(job)
            .map(|h| Flush::Thread(Some(h)))
            .map_err(|e| JournalError::Rejected(format!("cannot start a flush thread: {e}")))
    }

    fn is_done(&self) -> bool {
        match self {
            Flush::Thread(h) => h.as_ref().is_none_or(|h| h.is_finished()),
            Flush::Done(_) => true,
            // Runs only when waited for.
            Flush::Later(_) => true,
        }
    }

    fn wait(&mut self) -> Result<()> {
        match self {
            Flush::Thread(h) => match h.take().map(|h| h.join()) {
                Some(Ok(r)) => r,
                Some(Err(_)) => Err(JournalError::Rejected("the flush thread panicked".into())),
                None => Ok(()),
            },
            Flush::Done(r) => r.take().unwrap_or(Ok(())),
            Flush::Later(job) => job.take().map_or(Ok(()), |j| j()),
        }
    }
}

impl Drop for Flush {
    /// A handle dropped with a batch in flight finishes its flush before it lets go of the group
    /// (the next holder must not find a commit record still being written); the batch is then
    /// durable though never acknowledged, and the sender's resend of it is a duplicate.
    fn drop(&mut self) {
        let _ = self.wait();
    }
}

impl GroupJournal {
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
    /// the next commit; a tag commits and creates a recovery point. On
    /// [`JournalError::RetentionFull`] a write is buffered all the same (commit again once there
    /// is room) and a tag is not taken (apply it again).
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
                if lsn <= self.written_tip() {
                    return Ok(FrameOutcome::Duplicate);
                }
                self.check_order(lsn)?;
                let now = self.vol.clock.now();
                let (source_time, step_back) = self.admit_source_time(lsn, source_time, now)?;
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
                self.enter_or_check_resync(lsn, resync)?;
                // A crash-consistent point at least every 5 minutes of incoming changes, by the
                // master target's clock (never in the middle of a resync: the targets are not
                // consistent there). An epoch an earlier version opened has no first receive
                // time: its last commit's stands in (later, so no point comes early).
                let open = &self.state.open;
                let first = open
                    .first_received
                    .or_else(|| open.first_change.map(|_| self.state.tip_received))
                    .or(self.pending.first().map(|w| w.received));
                let mut auto = Ok(());
                if let (Some(first), None) = (first, self.state.resync) {
                    if now.secs_since(first) >= self.vol.policy.crash_point_interval_secs {
                        auto = self.commit().and_then(|_| {
                            let tip = self.state.tip;
                            self.make_point(tip, PointKind::Crash, "auto".into(), None, 0)
                                .map(drop)
                        });
                    }
                }
                // Taken even when the point before it could not be made for lack of room: the
                // caller commits again once there is room (and the point follows later).
                self.pending_bytes += data.len() as u64;
                self.pending.push(PendingWrite {
                    lsn,
                    time: source_time,
                    received: now,
                    step_back,
                    disk,
                    offset,
                    data,
                });
                auto?;
                if self.pending_bytes >= self.batch_limit() {
                    let r = self.start_batch();
                    self.guard(r)?;
                }
                Ok(FrameOutcome::Accepted)
            }
            Frame::Tag {
                lsn,
                source_time,
                kind,
                name,
            } => {
                if lsn <= self.written_tip() {
                    return Ok(FrameOutcome::Duplicate);
                }
                self.check_order(lsn)?;
                self.check_tag(lsn, &name, kind == TagKind::ResyncEnd)?;
                let now = self.vol.clock.now();
                let (source_time, step_back) = self.admit_source_time(lsn, source_time, now)?;
                self.commit()?;
                let kind = match kind {
                    TagKind::Crash | TagKind::ResyncEnd => PointKind::Crash,
                    TagKind::App => PointKind::App,
                };
                let p = self.make_point(lsn, kind, name, Some(source_time), step_back)?;
                Ok(FrameOutcome::PointCreated(p))
            }
        }
    }

    /// The master target's clock rule for a frame's source time: refused when more than the
    /// policy's skew ahead of `now` (nothing of the frame is taken); raised to the group's
    /// latest source time when it goes back, so points stay in the order `recover --point TIME`
    /// selects by. A time far behind is kept: retention runs on receive times, so it only shows
    /// in `status`. Returns the time to keep and how many microseconds it was raised.
    fn admit_source_time(
        &self,
        lsn: Lsn,
        t: Timestamp,
        now: Timestamp,
    ) -> Result<(Timestamp, i64)> {
        let limit = self.vol.policy.max_clock_skew_secs;
        if t > now.plus_secs(limit) {
            return Err(JournalError::Rejected(format!(
                "LSN {lsn}: source time {t:#} is {} s ahead of the master target's clock ({now:#}); group {} accepts at most {limit} s ahead (serve --max-clock-skew): correct the source's clock",
                t.secs_since(now),
                self.state.group
            )));
        }
        let latest = match (self.pending.last(), &self.in_flight) {
            (Some(w), _) => Some(w.time),
            (None, Some(f)) => Some(f.tip_time),
            (None, None) => (self.state.tip > Lsn(0)).then_some(self.state.tip_time),
        };
        Ok(match latest {
            Some(l) if t < l => (l, l.micros_since(t)),
            _ => (t, 0),
        })
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
        let r = self.start_batch().and_then(|()| self.settle());
        self.guard(r).map(|()| self.state.tip)
    }

    /// Finishes the batch in flight, if any (its targets flushed, its commit record durable),
    /// without starting the buffered one; returns the acknowledged LSN. For a caller with
    /// nothing else to do: an acknowledgement then waits for no further frames.
    pub fn finish_in_flight(&mut self) -> Result<Lsn> {
        self.check_usable()?;
        let r = self.settle();
        self.guard(r).map(|()| self.state.tip)
    }

    /// Whether the batch in flight has finished its flush (`None`: no batch is in flight);
    /// [`GroupJournal::finish_in_flight`] then returns without waiting.
    pub fn in_flight_done(&self) -> Option<bool> {
        self.in_flight.as_ref().map(|f| f.flush.is_done())
    }

    /// The last LSN written to the targets: in flight or acknowledged (a resend of it is
    /// a duplicate).
    pub(super) fn written_tip(&self) -> Lsn {
        self.in_flight.as_ref().map_or(self.state.tip, |f| f.tip)
    }

    /// Waits for the batch in flight and applies its commit record (then compacts and prunes
    /// as due: nothing else writes the timeline while a batch is in flight).
    pub(super) fn settle(&mut self) -> Result<()> {
        let Some(mut f) = self.in_flight.take() else {
            return Ok(());
        };
        f.flush.wait()?;
        self.timeline_len += f.rec_len;
        f.rec
            .apply(&mut self.state)
            .map_err(|e| JournalError::damaged(&self.timeline_path(), self.timeline_len, &e))?;
        if self.timeline_len > TIMELINE_COMPACT_BYTES {
            self.compact()?;
        }
        self.prune_if_due()
    }

    /// Takes the buffered writes as the next batch ("two batches in flight"): saves their old
    /// content (undo or rollback, flushed) while the batch before is still flushing, then, once
    /// that one is committed, writes the targets and leaves their flush and the commit record
    /// running (on a thread of their own where the file system allows). Acknowledged only once
    /// [`GroupJournal::settle`] saw that flush through.
    fn start_batch(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // The batch in flight has the next sequence number until it is settled.
        let seq = self.state.commit_seq + 1 + u64::from(self.in_flight.is_some());
        // A batch is all resync writes or none (the first resync write commits what is before).
        let resync = self.state.resync.is_some();
        // Which blocks need their old content saved, and where.
        let mut in_batch: HashSet<(u32, u64)> = HashSet::new();
        let mut undo_runs: Vec<(u32, u64, u64)> = Vec::new(); // disk, first block, count
        let mut rb_runs: Vec<(u32, u64, u64)> = Vec::new();
        // A resync before any point saves nothing (see below): no block needs looking at.
        let saves_nothing = resync && self.state.points.is_empty();
        for w in self.pending.iter().filter(|_| !saves_nothing) {
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
        let needed = payload + records * (RECORD_HEADER_LEN + BLOCK_HEAD_LEN as u64) + 4096;
        self.ensure_space(needed)?;

        // Scattered old blocks are read from the device together, not one round trip each.
        if undo_runs.len() + rb_runs.len() > 1 {
            for &(disk, b, n) in undo_runs.iter().chain(&rb_runs) {
                self.targets[disk as usize].will_need(b * BLOCK_SIZE, n * BLOCK_SIZE);
            }
        }
        let mut undo_buf = Vec::new();
        for &(disk, b, n) in &undo_runs {
            self.save_old_blocks(&mut undo_buf, REC_UNDO, seq, disk, b, n)?;
        }
        let mut rb_buf = Vec::new();
        for &(disk, b, n) in &rb_runs {
            self.save_old_blocks(&mut rb_buf, REC_ROLLBACK, seq, disk, b, n)?;
        }
        let undo_path = self.undo_path(self.state.open.id);
        // After the records of the batch in flight, if any.
        let undo_at = self
            .in_flight
            .as_ref()
            .map_or(self.state.open.undo_len, |f| f.undo_end);
        let parity = (seq % 2) as usize;
        let rb_path = self.dir.join(timeline::ROLLBACK_FILES[parity]);
        let undo_end = undo_at + undo_buf.len() as u64;
        let epoch = self.state.open.id;
        let reserved = match self.undo_reserved {
            (id, end) if id == epoch => end,
            _ => 0,
        };
        if !undo_buf.is_empty() && undo_end > reserved {
            let from = reserved.max(undo_at);
            self.undo
                .reserve(from, undo_end - from + UNDO_RESERVE_BYTES);
            self.undo_reserved = (epoch, undo_end + UNDO_RESERVE_BYTES);
        }
        if !undo_buf.is_empty() {
            self.undo
                .write_all_at(&undo_buf, undo_at)
                .map_err(|e| JournalError::io(&undo_path, "write", e))?;
        }
        if !rb_buf.is_empty() {
            self.rollbacks[parity]
                .write_all_at(&rb_buf, FILE_HEADER_LEN)
                .map_err(|e| JournalError::io(&rb_path, "write", e))?;
        }
        if !undo_buf.is_empty() {
            self.undo
                .sync_data()
                .map_err(|e| JournalError::io(&undo_path, "flush", e))?;
        }
        if !rb_buf.is_empty() {
            self.rollbacks[parity]
                .sync_data()
                .map_err(|e| JournalError::io(&rb_path, "flush", e))?;
        }
        // The next batch saves what this one did not: these blocks' epoch content is durable.
        for &(disk, b, n) in &undo_runs {
            for i in 0..n {
                self.saved.insert(disk, b + i);
            }
        }
        // The targets change only once the batch before is committed: at most one batch has
        // written targets without its commit record (what a restart rolls back).
        self.settle()?;
        // Only now may the targets change: everything they lose is durable above. The flush
        // thread writes them (and flushes them, then appends the commit record) while the next
        // batch is taken; the next batch's old content of a block this one writes comes from
        // this one's data, not from the target.
        let mut touched = std::collections::BTreeSet::new();
        for w in &self.pending {
            self.state.last_write[w.disk as usize] = w.time;
            touched.insert(w.disk as usize);
        }
        let last = self.pending.last().expect("batch is not empty");
        let (tip, tip_time) = (last.lsn, last.time);
        let received = last.received;
        let first_change = self.state.open.first_change.unwrap_or(self.pending[0].time);
        let first_received = self
            .state
            .open
            .first_received
            .unwrap_or(self.pending[0].received);
        let source_clock = self.pending.iter().fold(self.state.source_clock, |c, w| {
            c.with_step_back(w.step_back)
        });
        let rec = timeline::Record::Commit {
            seq,
            tip,
            tip_time,
            received,
            epoch: self.state.open.id,
            undo_len: undo_end,
            first_change,
            last_write: self.state.last_write.clone(),
            clock: Some((first_received, source_clock)),
        };
        let mut buf = Vec::new();
        rec.encode(&mut buf);
        let writes = Arc::new(std::mem::take(&mut self.pending));
        let targets: Vec<_> = touched
            .iter()
            .map(|&d| (self.targets[d].clone(), self.state.disks[d].target.clone()))
            .collect();
        let all_targets: Vec<_> = self.targets.clone();
        let paths: Vec<_> = self.state.disks.iter().map(|d| d.target.clone()).collect();
        let (timeline, at, path) = (
            self.timeline.clone(),
            self.timeline_len,
            self.timeline_path(),
        );
        let rec_len = buf.len() as u64;
        let (staging, job_writes) = (self.staging.clone(), writes.clone());
        let flush = move || -> Result<()> {
            let mut staging = staging.lock().unwrap_or_else(|e| e.into_inner());
            let staging = staging.get_or_insert_with(|| io::AlignedBuf::new(STAGING_BYTES));
            write_targets(&job_writes, staging, &all_targets, &paths, resync)?;
            for (t, p) in &targets {
                t.sync_data().map_err(|e| JournalError::io(p, "flush", e))?;
            }
            timeline
                .write_all_at(&buf, at)
                .map_err(|e| JournalError::io(&path, "write", e))?;
            timeline
                .sync_data()
                .map_err(|e| JournalError::io(&path, "flush", e))
        };
        let flush = if self.fs().concurrent_flushes() {
            Flush::on_thread(flush)?
        } else if seq.is_multiple_of(2) {
            // One thread, in a fixed order; both orders of the real disk's overlap are tried:
            // this batch flushes now, or only once the next one has saved its old content.
            Flush::Done(Some(flush()))
        } else {
            Flush::Later(Some(Box::new(flush)))
        };
        self.in_flight = Some(InFlight {
            flush,
            rec,
            rec_len,
            tip,
            tip_time,
            undo_end,
            writes,
            index: std::sync::OnceLock::new(),
        });
        self.pending_bytes = 0;
        Ok(())
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
        let head = BlockHead {
            tag: seq,
            disk,
            offset: block * BLOCK_SIZE,
            len: (n * BLOCK_SIZE) as u32,
        };
        let d = disk as usize;
        append_block_record(out, kind, head, |data| {
            self.targets[d]
                .read_exact_at(data, head.offset)
                .map_err(|e| JournalError::io(&self.state.disks[d].target, "read", e))?;
            // A block the batch in flight writes holds its data once that batch is done (the
            // flush thread may be writing it right now): take it from there.
            if let Some(f) = &self.in_flight {
                for b in 0..n {
                    if let Some(src) = f.data_of(disk, block + b) {
                        let o = (b * BLOCK_SIZE) as usize;
                        data[o..o + BLOCK_SIZE as usize].copy_from_slice(src);
                    }
                }
            }
            Ok(())
        })
    }

    pub(super) fn append_timeline(&mut self, rec: &timeline::Record) -> Result<()> {
        // Records go after the commit record of the batch in flight.
        self.settle()?;
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

    /// Records that the group stopped acknowledging, and why (`status` says "stalled" until the
    /// next commit). Best effort: a volume that is full may not even take this small record.
    pub fn record_stall(&mut self, reason: &str) {
        if self.state.stalled.is_some() || self.check_usable().is_err() {
            return;
        }
        let rec = timeline::Record::Stall {
            since: self.vol.clock.now(),
            reason: reason.to_owned(),
        };
        if self.append_timeline(&rec).is_ok() {
            let _ = rec.apply(&mut self.state);
        }
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
        // Pruning writes the timeline: the batch in flight first.
        self.settle()?;
        self.prune()?;
        match check(self) {
            None => Ok(()),
            Some(why) => {
                let msg = format!("{why}; acknowledged up to LSN {}", self.state.tip);
                self.record_stall(&msg);
                Err(JournalError::RetentionFull(msg))
            }
        }
    }
}
