//! A group read without its lock while another process (a session of `serve`, `apply`) may be
//! writing it: what `points`, `verify` and `recover --to` use when the group is held. It rests
//! on the order the write path keeps (old content durable in an undo or rollback log before a
//! target block changes; every timeline record appended and flushed whole) and follows the
//! reader's rule of the format document ("Reading a group while it is written"). It writes
//! nothing of the group and never takes its lock.

use super::blocks::{scan_blocks, BlockRecord, REC_ROLLBACK, REC_UNDO};
use super::group::{checked_disk, LOCK_FILE};
use super::io::{FsFile, OpenMode};
use super::record::{self, FileKind, FILE_HEADER_LEN};
use super::recovery::{open_undo, ImageSet};
use super::timeline::{self, PointKind, RecoveryPoint, TimelineState};
use super::volume::undo_file;
use super::{JournalError, Lsn, PointSelector, Recovered, Result, RetentionVolume};
use camino::{Utf8Path, Utf8PathBuf};

/// A group as its timeline's committed records give it when the view was opened.
pub struct GroupView {
    vol: RetentionVolume,
    dir: Utf8PathBuf,
    state: TimelineState,
    /// The lock holder's line before the state was read: a process that takes the lock later
    /// may repair the targets from records it then cuts, so a recovery refuses if it changed.
    holder: Option<String>,
}

/// A block record read with its old content (the log may be cut after it was read).
type HeldRecord = (BlockRecord, Vec<u8>);

impl GroupView {
    pub(super) fn open(vol: RetentionVolume, dir: Utf8PathBuf) -> Result<GroupView> {
        let holder = vol.fs.lock_holder(&dir.join(LOCK_FILE));
        let state = committed_state(&vol, &dir)?;
        Ok(GroupView {
            vol,
            dir,
            state,
            holder,
        })
    }

    pub fn state(&self) -> &TimelineState {
        &self.state
    }

    pub fn name(&self) -> &str {
        &self.state.group
    }

    /// The recovery points, oldest first (as [`super::GroupJournal::points`]).
    pub fn points(&self) -> &[RecoveryPoint] {
        &self.state.points
    }

    pub fn latest(&self) -> RecoveryPoint {
        self.state.latest()
    }

    /// Checks every committed record of every undo log the points need, as they were committed
    /// when the view was opened. An epoch pruned since is no longer needed and is skipped.
    pub fn verify(&self) -> Vec<JournalError> {
        let Some(first) = self.state.points.first() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (id, len) in epochs_from(&self.state, first.lsn) {
            let path = self.dir.join(undo_file(id));
            let r = open_undo(self.fs(), &path, id, len).and_then(|f| {
                let recs = scan_blocks(
                    f.as_ref(),
                    &path,
                    REC_UNDO,
                    FILE_HEADER_LEN,
                    len,
                    true,
                    true,
                )?;
                recs.iter()
                    .try_for_each(|r| checked_disk(&self.state.disks, r, &path).map(drop))
            });
            if let Err(e) = r {
                let pruned = committed_state(&self.vol, &self.dir)
                    .is_ok_and(|now| !epochs_from(&now, Lsn(0)).iter().any(|(i, _)| *i == id));
                if !pruned {
                    out.push(e);
                }
            }
        }
        out
    }

    /// Recovers a point into new image files under `to`, exactly as it was, while the group may
    /// be written. "latest" only if no batch was committed during the read (it moves on with
    /// every one); a point that is pruned or dropped while being read is refused.
    pub fn recover_into(&self, sel: &PointSelector, to: &Utf8Path) -> Result<Recovered> {
        self.recover_into_observed(sel, to, &mut |_| {})
    }

    /// [`GroupView::recover_into`], calling `after_copy(disk)` once each target is copied (the
    /// tests write the group there).
    fn recover_into_observed(
        &self,
        sel: &PointSelector,
        to: &Utf8Path,
        after_copy: &mut dyn FnMut(usize),
    ) -> Result<Recovered> {
        let before = &self.state;
        if let Some(lsn) = before.intent {
            return Err(JournalError::Rejected(format!(
                "group {} has an unfinished in-place recovery to LSN {lsn}; the next process that opens the group for writing finishes it (e.g. `mt-agent prune {}`)",
                before.group, before.group
            )));
        }
        let point = before.select(sel)?;
        let fs = self.fs();
        let images = ImageSet::create(fs, to, &before.disks)?;
        let r = (|| {
            // The batch that may be writing the targets now: its old content, read before the
            // targets are (a restart that finds it unfinished restores its blocks, then cuts it).
            let early = self.unfinished_batch()?;
            // The targets as they are; any block a batch changes meanwhile is overlaid below.
            for (i, d) in before.disks.iter().enumerate() {
                let t = fs
                    .open(&d.target, OpenMode::Read)
                    .map_err(|e| JournalError::io(&d.target, "open target", e))?;
                images.copy_target(i, t.as_ref(), d)?;
                after_copy(i);
            }
            let after = committed_state(&self.vol, &self.dir)?;
            self.still_there(&point, &after)?;
            let r = if point.kind == PointKind::Latest {
                self.overlay_unfinished_batch(&early, &images)
            } else {
                self.overlay_epochs(&point, &after, &early.0, &images)
            }
            .and_then(|applied| self.same_holder().map(|()| applied));
            // A log that went missing or shrank under the read: the point was dropped meanwhile.
            r.map_err(|e| match committed_state(&self.vol, &self.dir) {
                Ok(now) => self.still_there(&point, &now).err().unwrap_or(e),
                Err(_) => e,
            })
        })();
        match r {
            Ok(applied) => Ok(Recovered {
                point,
                images: images.finish(fs)?,
                undo_bytes_applied: applied,
            }),
            Err(e) => {
                images.discard(fs);
                Err(e)
            }
        }
    }

    /// Refuses when `point` is no longer the group's or the epochs the read began with are gone
    /// (pruned, or dropped by an in-place recovery): the targets may then hold what no undo
    /// record left covers.
    fn still_there(&self, point: &RecoveryPoint, now: &TimelineState) -> Result<()> {
        let listed = point.kind == PointKind::Latest || now.points.contains(point);
        let live: Vec<u64> = epochs_from(now, Lsn(0)).iter().map(|e| e.0).collect();
        let epochs_kept = epochs_from(&self.state, point.lsn)
            .iter()
            .all(|(id, _)| live.contains(id));
        if listed && epochs_kept && now.intent.is_none() {
            return Ok(());
        }
        Err(JournalError::Rejected(format!(
            "point {:?} (LSN {}) of group {} expired while it was being read (pruned from the retention window, or dropped by an in-place recovery); nothing was recovered",
            point.name, point.lsn, self.state.group
        )))
    }

    /// Refuses when another process took the group's lock since the view was opened: opening
    /// a group after a crash restores the unfinished batch's blocks and then cuts its records,
    /// which a read may have missed on both sides.
    fn same_holder(&self) -> Result<()> {
        if self.fs().lock_holder(&self.dir.join(LOCK_FILE)) == self.holder {
            return Ok(());
        }
        Err(JournalError::Rejected(format!(
            "group {} was opened by another process while it was being read (a new session or a restart, which may repair the targets); nothing was recovered: try again",
            self.state.group
        )))
    }

    /// The records past the committed length of the open epoch's undo log (each its block at
    /// the epoch's start) and the rollback records of the next batch, with their content.
    fn unfinished_batch(&self) -> Result<(Vec<HeldRecord>, Vec<HeldRecord>)> {
        let s = &self.state;
        let fs = self.fs();
        let undo_path = self.dir.join(undo_file(s.open.id));
        let undo = open_undo(fs, &undo_path, s.open.id, s.open.undo_len)?;
        let undo_recs = self.read_tail(undo.as_ref(), &undo_path, REC_UNDO, s.open.undo_len)?;
        let mut rb_recs = Vec::new();
        for name in timeline::ROLLBACK_FILES {
            let rb_path = self.dir.join(name);
            if !fs.exists(&rb_path) {
                // Made by the next opening of the group; until then no batch used it.
                continue;
            }
            let rb = fs
                .open(&rb_path, OpenMode::Read)
                .map_err(|e| JournalError::io(&rb_path, "open", e))?;
            record::check_file_header(rb.as_ref(), &rb_path, FileKind::Rollback)?;
            rb_recs.extend(self.read_tail(rb.as_ref(), &rb_path, REC_ROLLBACK, FILE_HEADER_LEN)?);
        }
        rb_recs.retain(|(r, _)| r.tag == s.commit_seq + 1);
        Ok((undo_recs, rb_recs))
    }

    /// The block records of a log from `from` to its end now, up to the first bad one (a record
    /// still being written), with their content.
    fn read_tail(
        &self,
        f: &dyn FsFile,
        path: &Utf8Path,
        kind: u8,
        from: u64,
    ) -> Result<Vec<HeldRecord>> {
        let end = f.len().map_err(|e| JournalError::io(path, "size", e))?;
        let mut out = Vec::new();
        for r in scan_blocks(f, path, kind, from, end, true, false)? {
            checked_disk(&self.state.disks, &r, path)?;
            let mut data = vec![0u8; r.len as usize];
            // Cut since it was scanned: what was read before stays valid.
            if f.read_exact_at(&mut data, r.data_at).is_err() {
                break;
            }
            out.push((r, data));
        }
        Ok(out)
    }

    /// Every undo record of every epoch from `point` on, as the timeline lists them after the
    /// targets were read, including records past the committed length (a batch in flight saves
    /// its old content before it writes a target), and `early`, those read before the targets
    /// past the open epoch's committed length. Each holds its block as it was at its epoch's
    /// start; applied newest epoch first, so the oldest copy wins: the point's content.
    fn overlay_epochs(
        &self,
        point: &RecoveryPoint,
        after: &TimelineState,
        early: &[HeldRecord],
        images: &ImageSet,
    ) -> Result<u64> {
        let fs = self.fs();
        let mut applied = 0;
        for (id, committed) in epochs_from(after, point.lsn).into_iter().rev() {
            let path = self.dir.join(undo_file(id));
            let f = open_undo(fs, &path, id, committed)?;
            let end = f.len().map_err(|e| JournalError::io(&path, "size", e))?;
            let mut recs = scan_blocks(
                f.as_ref(),
                &path,
                REC_UNDO,
                FILE_HEADER_LEN,
                committed,
                true,
                true,
            )?;
            // Past the committed length a record may be half written: the first bad one ends
            // what counts (its batch has not touched a target yet).
            recs.extend(scan_blocks(
                f.as_ref(),
                &path,
                REC_UNDO,
                committed,
                end,
                true,
                false,
            )?);
            applied += self.apply(f.as_ref(), &path, &recs, images)?;
            if id == self.state.open.id {
                applied += self.apply_held(early, images)?;
            }
        }
        Ok(applied)
    }

    /// "latest" as committed when the view was opened: the targets plus the old content of the
    /// one batch that may have been writing them (its undo records past the committed length
    /// and its rollback records), read before and after the targets. Exact only if that batch
    /// did not commit during the read.
    fn overlay_unfinished_batch(
        &self,
        early: &(Vec<HeldRecord>, Vec<HeldRecord>),
        images: &ImageSet,
    ) -> Result<u64> {
        let before = &self.state;
        let (mut undo, mut rollback) = self.unfinished_batch()?;
        // Read after the records: while no batch has committed since the view was opened, that
        // batch's rollback log held its records (the next batch of its parity rewrites it, and
        // that one only starts once it has committed).
        let after = committed_state(&self.vol, &self.dir)?;
        if after.commit_seq != before.commit_seq || after.resync.is_some() {
            return Err(JournalError::Rejected(format!(
                "group {} committed new writes while its latest state was being read (a session is writing it), so \"latest\" moved on; recover one of its points instead (mt-agent points {}) or try again",
                before.group, before.group
            )));
        }
        undo.retain(|(r, _)| r.tag == before.commit_seq + 1);
        rollback.extend(early.1.iter().cloned());
        undo.extend(
            early
                .0
                .iter()
                .filter(|(r, _)| r.tag == before.commit_seq + 1)
                .cloned(),
        );
        Ok(self.apply_held(&undo, images)? + self.apply_held(&rollback, images)?)
    }

    fn apply_held(&self, recs: &[HeldRecord], images: &ImageSet) -> Result<u64> {
        let mut bytes = 0;
        for (r, data) in recs {
            let (dst, dst_path) = images.out(r.disk as usize);
            dst.write_all_at(data, r.offset)
                .map_err(|e| JournalError::io(dst_path, "write", e))?;
            bytes += u64::from(r.len);
        }
        Ok(bytes)
    }

    fn apply(
        &self,
        f: &dyn FsFile,
        path: &Utf8Path,
        recs: &[BlockRecord],
        images: &ImageSet,
    ) -> Result<u64> {
        let mut bytes = 0;
        let mut buf = Vec::new();
        for r in recs {
            let disk = checked_disk(&self.state.disks, r, path)?;
            buf.resize(r.len as usize, 0);
            f.read_exact_at(&mut buf, r.data_at)
                .map_err(|e| JournalError::io(path, "read", e))?;
            let (dst, dst_path) = images.out(disk);
            dst.write_all_at(&buf, r.offset)
                .map_err(|e| JournalError::io(dst_path, "write", e))?;
            bytes += u64::from(r.len);
        }
        Ok(bytes)
    }

    fn fs(&self) -> &dyn super::io::Fs {
        self.vol.fs.as_ref()
    }
}

/// The timeline's committed records: a torn or unfinished last record is one the writer has
/// not finished yet, not damage (and nothing is cut: the writer owns the file).
fn committed_state(vol: &RetentionVolume, dir: &Utf8Path) -> Result<TimelineState> {
    let mut not_yet_written = Vec::new();
    timeline::load(vol.fs.as_ref(), dir, &mut not_yet_written, false).map(|(s, _, _)| s)
}

/// The epochs whose undo a recovery to `lsn` applies (id, committed undo length), oldest first.
fn epochs_from(s: &TimelineState, lsn: Lsn) -> Vec<(u64, u64)> {
    s.closed
        .iter()
        .filter(|e| e.start >= lsn)
        .map(|e| (e.id, e.undo_len))
        .chain((s.open.start >= lsn).then_some((s.open.id, s.open.undo_len)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::frame::{Frame, TagKind, BLOCK_SIZE};
    use crate::replication::journal::clock::{Clock, FakeClock, Timestamp};
    use crate::replication::journal::io::Fs;
    use crate::replication::journal::policy::Policy;
    use crate::replication::journal::sim::SimFs;
    use crate::replication::journal::{DiskSpec, GroupJournal};
    use std::sync::Arc;

    const BLOCKS: u64 = 16;
    const T0: Timestamp = Timestamp(1_795_651_200_000_000);

    /// A session's journal on a simulated disk, and the model of its two disks.
    struct Rig {
        fs: SimFs,
        clock: Arc<FakeClock>,
        vol: RetentionVolume,
        j: GroupJournal,
        model: Vec<Vec<u8>>,
    }

    impl Rig {
        fn new() -> Rig {
            let fs = SimFs::new();
            fs.create_dir_all(Utf8Path::new("/ret")).unwrap();
            let mut disks = Vec::new();
            for d in 0..2 {
                let target = Utf8PathBuf::from(format!("/t/d{d}.img"));
                fs.put(&target, &vec![0u8; (BLOCKS * BLOCK_SIZE) as usize]);
                disks.push(DiskSpec {
                    name: format!("d{d}"),
                    target,
                    capacity: BLOCKS * BLOCK_SIZE,
                });
            }
            let clock = Arc::new(FakeClock::new(T0));
            let vol = RetentionVolume {
                fs: Arc::new(fs.clone()),
                clock: clock.clone(),
                root: "/ret".into(),
                policy: Policy::runbook(),
                budget: None,
                batch_bytes: 1 << 20,
            };
            vol.create_group("g", disks).unwrap();
            let j = vol.open_group_as("g", "the session under test").unwrap();
            let model = vec![vec![0u8; (BLOCKS * BLOCK_SIZE) as usize]; 2];
            Rig {
                fs,
                clock,
                vol,
                j,
                model,
            }
        }

        /// Writes `n` blocks from `block` on `disk`, each filled with one byte derived from
        /// its LSN, and commits.
        fn write(&mut self, disk: u32, block: u64, n: u64) {
            self.write_as(disk, block, n, false)
        }

        fn write_as(&mut self, disk: u32, block: u64, n: u64, resync: bool) {
            let lsn = self.j.next_lsn();
            let fill = (lsn.0 as u8).wrapping_mul(37).wrapping_add(disk as u8 + 1);
            let data = vec![fill; (n * BLOCK_SIZE) as usize];
            let at = (block * BLOCK_SIZE) as usize;
            self.model[disk as usize][at..at + data.len()].copy_from_slice(&data);
            self.j
                .apply_frame(Frame::Write {
                    lsn,
                    source_time: self.clock.now(),
                    disk,
                    offset: block * BLOCK_SIZE,
                    data,
                    resync,
                })
                .unwrap();
            self.j.commit().unwrap();
        }

        /// A crash-consistent tag; returns the disks as they are at it.
        fn tag(&mut self, name: &str) -> Vec<Vec<u8>> {
            self.clock.advance_secs(1);
            self.j
                .apply_frame(Frame::Tag {
                    lsn: self.j.next_lsn(),
                    source_time: self.clock.now(),
                    kind: TagKind::Crash,
                    name: name.into(),
                })
                .unwrap();
            self.clock.advance_secs(1);
            self.model.clone()
        }

        fn point_time(&self, name: &str) -> PointSelector {
            let p = self.j.points().iter().find(|p| p.name == name).unwrap();
            PointSelector::AtOrBefore(p.source_time)
        }

        fn image(&self, dir: &str, disk: usize) -> Vec<u8> {
            self.fs
                .read_all(&Utf8PathBuf::from(format!("{dir}/d{disk}.img")))
                .unwrap()
        }
    }

    /// Two points with changes between and after them (the open epoch has changes too).
    fn history(r: &mut Rig) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        r.write(0, 0, 4);
        r.write(1, 2, 2);
        let a = r.tag("a");
        r.write(0, 2, 4);
        r.write(1, 0, 1);
        let b = r.tag("b");
        r.write(0, 5, 2);
        r.write(1, 1, 3);
        (a, b)
    }

    #[test]
    fn blocks_overwritten_between_the_target_read_and_the_rescan_still_give_the_point() {
        let mut r = Rig::new();
        let (a, b) = history(&mut r);
        for (name, want) in [("a", &a), ("b", &b)] {
            let view = r.vol.view_group("g").unwrap();
            let sel = r.point_time(name);
            let out = format!("/out-{name}");
            let rig = &mut r;
            view.recover_into_observed(&sel, Utf8Path::new(&out), &mut |disk| {
                if disk != 0 {
                    return;
                }
                // Disk 0 is read; disk 1 is not yet. The session overwrites blocks of both
                // that no epoch saved yet (committed past the view's timeline), closes a
                // point (a new epoch the view never saw) and overwrites more there.
                rig.write(0, 10, 3);
                rig.write(1, 8, 4);
                rig.tag(&format!("during-{name}"));
                rig.write(1, 12, 2);
                rig.write(1, 2, 1);
                rig.write(0, 0, 16);
                rig.write(1, 0, 16);
            })
            .unwrap();
            assert!(r.image(&out, 0) == want[0], "disk 0 at point {name}");
            assert!(r.image(&out, 1) == want[1], "disk 1 at point {name}");
        }
        // The session's own view agrees: nothing the reader did changed the group.
        let model = r.model.clone();
        assert_eq!(r.fs.read_all(Utf8Path::new("/t/d1.img")).unwrap(), model[1]);
        assert!(r.vol.view_group("g").unwrap().verify().is_empty());
    }

    #[test]
    fn a_resync_that_rewrites_every_block_during_the_read_leaves_the_older_points_exact() {
        let mut r = Rig::new();
        let (a, b) = history(&mut r);
        let view = r.vol.view_group("g").unwrap();
        let sel = r.point_time("a");
        let rig = &mut r;
        view.recover_into_observed(&sel, Utf8Path::new("/out"), &mut |disk| {
            if disk == 0 {
                // A full copy in disk order: a resync saves only what a point needs.
                for d in 0..2 {
                    for blk in (0..BLOCKS).step_by(4) {
                        rig.write_as(d, blk, 4, true);
                    }
                }
            }
        })
        .unwrap();
        assert!(r.image("/out", 0) == a[0] && r.image("/out", 1) == a[1]);
        let mid = r.vol.view_group("g").unwrap();
        let e = mid
            .recover_into(&PointSelector::Latest, Utf8Path::new("/latest"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("in the middle of a resync"), "{e}");
        mid.recover_into(&r.point_time("b"), Utf8Path::new("/b"))
            .unwrap();
        assert!(r.image("/b", 0) == b[0] && r.image("/b", 1) == b[1]);
    }

    #[test]
    fn a_point_pruned_while_it_is_read_is_refused_and_leaves_no_image() {
        let mut r = Rig::new();
        history(&mut r);
        let view = r.vol.view_group("g").unwrap();
        let sel = r.point_time("a");
        let rig = &mut r;
        let e = view
            .recover_into_observed(&sel, Utf8Path::new("/out"), &mut |disk| {
                if disk == 0 {
                    rig.write(1, 9, 2);
                    rig.clock.advance_secs(3 * 86_400);
                    rig.write(1, 4, 1);
                    rig.j.prune().unwrap();
                }
            })
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("point \"a\"") && e.contains("expired while it was being read"),
            "{e}"
        );
        assert!(r.fs.list(Utf8Path::new("/out")).unwrap().is_empty());
    }

    #[test]
    fn latest_is_exact_while_nothing_commits_and_refused_once_a_batch_does() {
        let mut r = Rig::new();
        history(&mut r);
        let view = r.vol.view_group("g").unwrap();
        view.recover_into(&PointSelector::Latest, Utf8Path::new("/latest"))
            .unwrap();
        assert!(r.image("/latest", 0) == r.model[0] && r.image("/latest", 1) == r.model[1]);
        let rig = &mut r;
        let e = view
            .recover_into_observed(&PointSelector::Latest, Utf8Path::new("/moved"), &mut |_| {
                rig.write(0, 3, 1)
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"latest\" moved on"), "{e}");
    }

    #[test]
    fn a_group_reopened_while_it_is_read_is_refused() {
        let mut r = Rig::new();
        history(&mut r);
        let view = r.vol.view_group("g").unwrap();
        let sel = r.point_time("a");
        let Rig { clock, vol, j, .. } = r;
        let mut session = Some(j);
        let e = view
            .recover_into_observed(&sel, Utf8Path::new("/out"), &mut |disk| {
                if disk == 0 {
                    // A restart: the next opening may repair the targets from records it cuts.
                    drop(session.take());
                    clock.advance_secs(1);
                    session = Some(vol.open_group_as("g", "the restarted session").unwrap());
                }
            })
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("was opened by another process while it was being read"),
            "{e}"
        );
    }

    #[test]
    fn a_held_group_names_its_holder_and_is_free_again_once_released() {
        let r = Rig::new();
        let held = r.vol.try_open_group("g", "mt-agent recover").unwrap();
        let why = held.err().expect("the session holds the group");
        assert!(
            why.contains("cannot lock the group")
                && why.contains(&format!("pid {}", std::process::id()))
                && why.contains("the session under test"),
            "{why}"
        );
        let Rig { j, vol, .. } = r;
        drop(j);
        assert!(vol.try_open_group("g", "mt-agent recover").unwrap().is_ok());
    }
}
