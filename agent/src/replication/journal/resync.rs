//! The journal's resync mode (see "Resync mode" in the format document): the Resync record that
//! opens it, the larger batches, and the rules that hold until its closing tag ("latest" is
//! refused; change-stream writes and every other tag are refused, and so is a closing tag when
//! no resync is open). Refusals are checked before anything of the frame is buffered or written.
//! Which old content a resync batch skips saving is decided in `ingest`, from
//! [`TimelineState::resync`](super::TimelineState).

use super::timeline::{self, TimelineState};
use super::{GroupJournal, JournalError, Lsn, Result};

/// What an operator does about a frame refused during a resync.
const FINISH_IT: &str = "finish the resync first (run mt-agent send --delta, or --full, again)";

/// A resync commits in larger batches (fewer flushes; bounded memory all the same).
pub const RESYNC_BATCH_BYTES: u64 = 32 << 20;

impl GroupJournal {
    /// A write flagged *resync* opens the mode (durably, before it is taken); a write without
    /// the flag is refused while the mode is open.
    pub(super) fn enter_or_check_resync(&mut self, lsn: Lsn, resync: bool) -> Result<()> {
        match (resync, self.state.resync) {
            (true, None) => self.begin_resync(lsn),
            (false, Some(from)) => Err(JournalError::Rejected(format!(
                "LSN {lsn}: a change-stream write while the resync of group {} begun at LSN {from} has not reached its closing tag; {FINISH_IT}",
                self.state.group
            ))),
            _ => Ok(()),
        }
    }

    /// Only the resync's own closing tag ends it: any other tag while one is open would make a
    /// recovery point of a state that mixes old and new blocks. A closing tag with no resync
    /// open closes nothing the journal knows of, so the sender is confused or the stream forged.
    pub(super) fn check_tag(&self, lsn: Lsn, name: &str, closes: bool) -> Result<()> {
        let group = &self.state.group;
        match (closes, self.state.resync) {
            (false, Some(from)) => Err(JournalError::Rejected(format!(
                "LSN {lsn}: tag {name:?} while the resync of group {group} begun at LSN {from} has not reached its closing tag (no other tag ends it, and no point is made of it); {FINISH_IT}"
            ))),
            (true, None) => Err(JournalError::Rejected(format!(
                "LSN {lsn}: a resync's closing tag {name:?}, but group {group} has no resync open (acknowledged through LSN {}); only the resync of mt-agent send --full or --delta ends with one",
                self.state.tip
            ))),
            _ => Ok(()),
        }
    }

    /// Bytes of writes that make a batch.
    pub(super) fn batch_limit(&self) -> u64 {
        if self.state.resync.is_some() {
            self.vol.batch_bytes.max(RESYNC_BATCH_BYTES)
        } else {
            self.vol.batch_bytes
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

    /// Whether "latest" is a consistent state (see [`TimelineState::latest_is_consistent`]).
    pub fn latest_is_consistent(&self) -> std::result::Result<(), String> {
        self.state.latest_is_consistent()
    }
}

impl TimelineState {
    /// Whether "latest" is a consistent state: not while a resync is unfinished.
    pub fn latest_is_consistent(&self) -> std::result::Result<(), String> {
        match self.resync {
            None => Ok(()),
            Some(from) => Err(format!(
                "group {} is in the middle of a resync begun at LSN {from}: its newest state mixes old and new blocks and is not a recovery point until the resync's closing tag; recover one of its points instead (mt-agent points {})",
                self.group, self.group
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::frame::{Frame, TagKind, BLOCK_SIZE};
    use crate::replication::journal::clock::{FakeClock, Timestamp};
    use crate::replication::journal::io::Fs;
    use crate::replication::journal::policy::Policy;
    use crate::replication::journal::sim::SimFs;
    use crate::replication::journal::{DiskSpec, FrameOutcome, PointKind, RetentionVolume};
    use camino::Utf8Path;
    use std::sync::Arc;

    const T0: Timestamp = Timestamp(1_795_651_200_000_000);

    /// A one-disk group with a point at LSN 2, then a resync whose writes are LSNs 3 and 4
    /// (the second one still buffered).
    fn mid_resync() -> (SimFs, GroupJournal) {
        let fs = SimFs::new();
        fs.create_dir_all(Utf8Path::new("/ret")).unwrap();
        fs.put(Utf8Path::new("/t/d0.img"), &[0u8; 8 * BLOCK_SIZE as usize]);
        let vol = RetentionVolume {
            fs: Arc::new(fs.clone()),
            clock: Arc::new(FakeClock::new(T0)),
            root: "/ret".into(),
            policy: Policy::runbook(),
            budget: None,
            batch_bytes: 1 << 20,
        };
        vol.create_group(
            "g",
            vec![DiskSpec {
                name: "d0".into(),
                target: "/t/d0.img".into(),
                capacity: 8 * BLOCK_SIZE,
            }],
        )
        .unwrap();
        let mut j = vol.open_group("g").unwrap();
        j.apply_frame(write(1, false)).unwrap();
        j.apply_frame(tag(2, TagKind::Crash, "before")).unwrap();
        j.apply_frame(write(3, true)).unwrap();
        j.commit().unwrap();
        j.apply_frame(write(4, true)).unwrap();
        assert_eq!(j.state.resync, Some(Lsn(3)));
        (fs, j)
    }

    fn write(lsn: u64, resync: bool) -> Frame {
        Frame::Write {
            lsn: Lsn(lsn),
            source_time: T0,
            disk: 0,
            offset: (lsn % 8) * BLOCK_SIZE,
            data: vec![lsn as u8; BLOCK_SIZE as usize],
            resync,
        }
    }

    fn tag(lsn: u64, kind: TagKind, name: &str) -> Frame {
        Frame::Tag {
            lsn: Lsn(lsn),
            source_time: T0,
            kind,
            name: name.into(),
        }
    }

    /// Refuses `frame` and checks that nothing of it was written or taken: no I/O at all, the
    /// same state, the same buffered writes. Returns the refusal.
    fn refused(fs: &SimFs, j: &mut GroupJournal, frame: Frame) -> String {
        let (ops, state, pending) = (fs.ops(), j.state.clone(), j.pending.len());
        let e = j.apply_frame(frame).unwrap_err();
        assert!(matches!(e, JournalError::Rejected(_)), "{e}");
        assert_eq!(fs.ops(), ops, "a refused frame did I/O");
        assert_eq!(j.state, state);
        assert_eq!(j.pending.len(), pending);
        e.to_string()
    }

    #[test]
    fn a_foreign_tag_during_a_resync_is_refused_naming_both_lsns_and_the_way_out() {
        for kind in [TagKind::Crash, TagKind::App] {
            let (fs, mut j) = mid_resync();
            let e = refused(&fs, &mut j, tag(5, kind, "D-hostile"));
            assert_eq!(
                e,
                "LSN 5: tag \"D-hostile\" while the resync of group g begun at LSN 3 has not reached its closing tag (no other tag ends it, and no point is made of it); finish the resync first (run mt-agent send --delta, or --full, again)"
            );
            assert!(j.points().iter().all(|p| p.name != "D-hostile"));
            assert!(j.latest_is_consistent().is_err());
            // The session would end here; the journal itself stays usable, and the resync's
            // own closing tag still ends it.
            let out = j.apply_frame(tag(5, TagKind::ResyncEnd, "resync")).unwrap();
            let FrameOutcome::PointCreated(p) = out else {
                panic!("{out:?}")
            };
            assert_eq!(
                (p.lsn, p.kind, p.name.as_str()),
                (Lsn(5), PointKind::Crash, "resync")
            );
            assert_eq!((j.state.resync, j.acked()), (None, Lsn(5)));
            j.latest_is_consistent().unwrap();
        }
    }

    #[test]
    fn a_change_stream_write_during_a_resync_is_refused_naming_both_lsns() {
        let (fs, mut j) = mid_resync();
        let e = refused(&fs, &mut j, write(5, false));
        assert_eq!(
            e,
            "LSN 5: a change-stream write while the resync of group g begun at LSN 3 has not reached its closing tag; finish the resync first (run mt-agent send --delta, or --full, again)"
        );
        // Resync writes go on; so does a reopened journal's resync.
        j.apply_frame(write(5, true)).unwrap();
        j.commit().unwrap();
        let vol = j.volume().clone();
        drop(j);
        let mut j = vol.open_group("g").unwrap();
        assert_eq!(j.state.resync, Some(Lsn(3)));
        let e = refused(&fs, &mut j, tag(6, TagKind::Crash, "late"));
        assert!(e.contains("LSN 6") && e.contains("begun at LSN 3"), "{e}");
    }

    #[test]
    fn a_closing_tag_without_an_open_resync_is_refused() {
        let (fs, mut j) = mid_resync();
        j.apply_frame(tag(5, TagKind::ResyncEnd, "resync")).unwrap();
        j.apply_frame(write(6, false)).unwrap();
        let e = refused(&fs, &mut j, tag(7, TagKind::ResyncEnd, "resync"));
        assert_eq!(
            e,
            "LSN 7: a resync's closing tag \"resync\", but group g has no resync open (acknowledged through LSN 5); only the resync of mt-agent send --full or --delta ends with one"
        );
        assert_eq!(j.points().len(), 2);
        // An ordinary tag is a point as before.
        j.apply_frame(tag(7, TagKind::App, "vss")).unwrap();
        assert_eq!(j.points().len(), 3);
    }

    #[test]
    fn a_resync_write_opens_a_resync_when_none_is_open_and_a_resent_closing_tag_is_a_duplicate() {
        let (_fs, mut j) = mid_resync();
        j.apply_frame(tag(5, TagKind::ResyncEnd, "resync")).unwrap();
        assert_eq!(
            j.apply_frame(tag(5, TagKind::ResyncEnd, "resync")).unwrap(),
            FrameOutcome::Duplicate
        );
        j.apply_frame(write(6, true)).unwrap();
        assert_eq!(j.state.resync, Some(Lsn(6)));
    }
}
