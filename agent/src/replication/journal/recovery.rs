//! Recovery to a point: the undo chain from the tip back to it (every record checked before a
//! byte is written), applied into new image files or in place (announced by an Intent record, so
//! a crash in the middle is finished on the next open), and `verify`.

use super::blocks::{scan_blocks, BlockRecord, REC_UNDO};
use super::io::{FsFile, OpenMode};
use super::record::{self, FileKind, FILE_HEADER_LEN};
use super::timeline::{self, OpenEpoch, PointKind, RecoveryPoint};
use super::volume::create_log;
use super::{GroupJournal, JournalError, PointSelector, Result};
use camino::{Utf8Path, Utf8PathBuf};

/// Returned by [`GroupJournal::recover`].
#[derive(Debug, Clone)]
pub struct Recovered {
    pub point: RecoveryPoint,
    /// The files written (recovery into a directory) or the targets rolled back (in place).
    pub images: Vec<Utf8PathBuf>,
    pub undo_bytes_applied: u64,
}

impl GroupJournal {
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
    pub(super) fn roll_back_in_place(&mut self, point: &RecoveryPoint) -> Result<u64> {
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
            first_received: None,
        };
        s.next_epoch_id = new_id + 1;
        s.tip = point.lsn;
        s.tip_time = point.source_time;
        s.tip_received = point.received_time;
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
