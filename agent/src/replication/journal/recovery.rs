//! Recovery to a point: the undo chain from the tip back to it (every record checked before a
//! byte is written), applied into new image files or in place (announced by an Intent record, so
//! a crash in the middle is finished on the next open), and `verify`.

use super::blocks::{scan_blocks, BlockRecord, REC_UNDO};
use super::io::{Fs, FsFile, OpenMode};
use super::record::{self, FileKind, FILE_HEADER_LEN};
use super::timeline::{self, DiskSpec, OpenEpoch, PointKind, RecoveryPoint};
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
            let f = open_undo(self.fs(), &path, id, len)?;
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
        let images = ImageSet::create(self.fs(), dir, &self.state.disks)?;
        for (i, d) in self.state.disks.iter().enumerate() {
            images.copy_target(i, self.targets[i].as_ref(), d)?;
        }
        let applied = self.apply_chain(&chain, |disk| images.out(disk))?;
        Ok(Recovered {
            point: point.clone(),
            images: images.finish(self.fs())?,
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
        self.timeline = f.into();
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

/// Opens the undo log of epoch `id` for reading and checks its header and that it holds at
/// least the `committed` length the timeline gives it.
pub(super) fn open_undo(
    fs: &dyn Fs,
    path: &Utf8Path,
    id: u64,
    committed: u64,
) -> Result<Box<dyn FsFile>> {
    let f = fs.open(path, OpenMode::Read).map_err(|e| {
        JournalError::damaged(
            path,
            0,
            &format!("the undo log of this point's epoch is missing ({e})"),
        )
    })?;
    let got = record::check_file_header(f.as_ref(), path, FileKind::Undo)?;
    if got != id {
        return Err(JournalError::damaged(
            path,
            16,
            "epoch id does not match its name",
        ));
    }
    let flen = f.len().map_err(|e| JournalError::io(path, "size", e))?;
    if flen < committed {
        return Err(JournalError::damaged(
            path,
            flen,
            &format!("truncated: {committed} bytes were committed"),
        ));
    }
    Ok(f)
}

/// The image files of a recovery into a directory: written under temporary names, renamed to
/// `<disk>.img` only when whole.
pub(super) struct ImageSet {
    dir: Utf8PathBuf,
    outs: Vec<(Box<dyn FsFile>, Utf8PathBuf, Utf8PathBuf)>,
}

impl ImageSet {
    pub(super) fn create(fs: &dyn Fs, dir: &Utf8Path, disks: &[DiskSpec]) -> Result<ImageSet> {
        fs.create_dir_all(dir)
            .map_err(|e| JournalError::io(dir, "create directory", e))?;
        let mut outs = Vec::new();
        for d in disks {
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
        Ok(ImageSet {
            dir: dir.to_owned(),
            outs,
        })
    }

    /// The image of disk `disk` and its (temporary) path.
    pub(super) fn out(&self, disk: usize) -> (&dyn FsFile, &Utf8Path) {
        let (f, tmp, _) = &self.outs[disk];
        (f.as_ref(), tmp.as_path())
    }

    /// Copies a target, as it is now, into the image of disk `disk`.
    pub(super) fn copy_target(&self, disk: usize, src: &dyn FsFile, d: &DiskSpec) -> Result<()> {
        let (dst, dst_path) = self.out(disk);
        copy_sparse(src, &d.target, dst, dst_path, d.capacity)
    }

    /// Removes the temporary images of a recovery that failed (best effort).
    pub(super) fn discard(self, fs: &dyn Fs) {
        for (_, tmp, _) in &self.outs {
            let _ = fs.remove_file(tmp);
        }
    }

    /// Flushes the images and gives them their final names.
    pub(super) fn finish(self, fs: &dyn Fs) -> Result<Vec<Utf8PathBuf>> {
        let mut images = Vec::new();
        for (f, tmp, fin) in &self.outs {
            f.sync_data()
                .map_err(|e| JournalError::io(tmp, "flush", e))?;
            fs.rename(tmp, fin)
                .map_err(|e| JournalError::io(tmp, "rename", e))?;
            images.push(fin.clone());
        }
        fs.sync_dir(&self.dir)
            .map_err(|e| JournalError::io(&self.dir, "sync directory", e))?;
        Ok(images)
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
