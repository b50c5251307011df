//! Recovery points: making one (the Point record closes the open epoch and opens the next),
//! listing and selecting them, pruning those older than the retention window with the undo logs
//! only they needed, and compacting the timeline. The window runs on the master target's clock
//! (a point's receive time); selecting by time uses the source's (a point's source time).

use super::clock::Timestamp;
use super::record::FileKind;
use super::timeline::{self, PointKind, RecoveryPoint, TimelineState};
use super::volume::create_log;
use super::{GroupJournal, JournalError, Lsn, Result};

/// The timeline is compacted into one snapshot record when it grows past this.
pub(super) const TIMELINE_COMPACT_BYTES: u64 = 1 << 20;

/// Which point to recover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointSelector {
    Latest,
    LatestAppConsistent,
    /// The newest point at or before this time (inclusive, to the microsecond).
    AtOrBefore(Timestamp),
}

impl std::str::FromStr for PointSelector {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "latest" => Ok(PointSelector::Latest),
            "latest-app-consistent" => Ok(PointSelector::LatestAppConsistent),
            // Through the end of the second when the text is to the second: `points` shows
            // whole seconds, and a point at 09:30:00.4 is what "09:30:00Z" means there.
            t => Timestamp::parse_rfc3339_through(t)
                .map(PointSelector::AtOrBefore)
                .map_err(|e| format!("{e}; or use `latest` or `latest-app-consistent`")),
        }
    }
}

impl GroupJournal {
    pub(super) fn make_point(
        &mut self,
        lsn: Lsn,
        kind: PointKind,
        name: String,
        source_time: Option<Timestamp>,
        step_back: i64,
    ) -> Result<RecoveryPoint> {
        // A point closes the open epoch at its committed length: nothing may be in flight.
        let r = self
            .settle()
            .and_then(|()| self.make_point_inner(lsn, kind, name, source_time, step_back));
        self.guard(r)
    }

    fn make_point_inner(
        &mut self,
        lsn: Lsn,
        kind: PointKind,
        name: String,
        source_time: Option<Timestamp>,
        step_back: i64,
    ) -> Result<RecoveryPoint> {
        assert!(
            self.pending.is_empty(),
            "a point is made only between batches"
        );
        let new_id = self.state.next_epoch_id;
        let path = self.undo_path(new_id);
        let new_undo = create_log(self.fs(), &path, FileKind::Undo, new_id)?;
        let (closed_len, closed_path) =
            (self.state.open.undo_len, self.undo_path(self.state.open.id));
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
            source_clock: Some(self.state.source_clock.with_step_back(step_back)),
        };
        self.append_timeline(&rec)?;
        rec.apply(&mut self.state)
            .map_err(|e| JournalError::damaged(&self.timeline_path(), self.timeline_len, &e))?;
        // The closed epoch's log ends at its committed length (nothing is in flight): give
        // back the space reserved past it.
        self.undo
            .set_len(closed_len)
            .map_err(|e| JournalError::io(&closed_path, "trim", e))?;
        self.undo = new_undo;
        self.saved.clear();
        if self.state.points.len() == 1 {
            // The epoch before the first point leads nowhere: drop it now.
            self.prune_inner()?;
        }
        Ok(point)
    }

    /// Rewrites the timeline as one snapshot record (atomically: temporary file, rename).
    pub(super) fn compact(&mut self) -> Result<()> {
        let (f, len) = timeline::write_snapshot(self.fs(), &self.dir, &self.state)?;
        self.timeline = f.into();
        self.timeline_len = len;
        Ok(())
    }

    pub(super) fn prune_if_due(&mut self) -> Result<()> {
        let horizon = self
            .vol
            .clock
            .now()
            .plus_secs(-self.vol.policy.retention_secs);
        if self
            .state
            .points
            .first()
            .is_some_and(|p| p.received_time < horizon)
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
        let r = self.settle().and_then(|()| self.prune_inner());
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
            .partition(|p| p.received_time >= horizon || Some(p.lsn) == newest_app);
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

    /// The newest acknowledged state as a point (see [`TimelineState::latest`]).
    pub fn latest(&self) -> RecoveryPoint {
        self.state.latest()
    }

    /// Resolves a selector to a point (see [`TimelineState::select`]).
    pub fn select(&self, sel: &PointSelector) -> Result<RecoveryPoint> {
        self.state.select(sel)
    }
}

impl TimelineState {
    /// The newest acknowledged state as a point: crash-consistent for the whole group, since the
    /// stream is applied in order.
    pub fn latest(&self) -> RecoveryPoint {
        RecoveryPoint {
            lsn: self.tip,
            kind: PointKind::Latest,
            name: "latest".into(),
            source_time: self.tip_time,
            received_time: self.tip_received,
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
                .points
                .iter()
                .rev()
                .find(|p| p.kind == PointKind::App)
                .cloned()
                .ok_or_else(|| {
                    JournalError::Rejected(format!(
                        "group {} has no application-consistent point in its retention window",
                        self.group
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
                self.points
                    .iter()
                    .rev()
                    .find(|p| p.source_time <= *t)
                    .cloned()
                    .ok_or_else(|| {
                        JournalError::Rejected(format!(
                            "group {} has no recovery point at or before {t:#}; the oldest is {}",
                            self.group,
                            self.points
                                .first()
                                .map_or("none".to_string(), |p| format!("{:#}", p.source_time))
                        ))
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::frame::{Frame, TagKind, BLOCK_SIZE};
    use crate::replication::journal::clock::FakeClock;
    use crate::replication::journal::io::Fs;
    use crate::replication::journal::policy::Policy;
    use crate::replication::journal::sim::SimFs;
    use crate::replication::journal::{DiskSpec, RetentionVolume};
    use camino::Utf8Path;
    use std::sync::Arc;

    /// 2026-11-26T00:00:00Z.
    const T0: Timestamp = Timestamp(1_795_651_200_000_000);

    fn at(micros: i64) -> Timestamp {
        Timestamp(T0.0 + micros)
    }

    /// A one-disk group whose points fall inside whole seconds, as a resync's closing tags do:
    /// tags at +0.3 s, +0.7 s and +2.2 s, then one more write at +3.4 s ("latest").
    fn group() -> GroupJournal {
        let fs = SimFs::new();
        fs.create_dir_all(Utf8Path::new("/ret")).unwrap();
        fs.put(Utf8Path::new("/t/d0.img"), &[0u8; 4 * BLOCK_SIZE as usize]);
        let vol = RetentionVolume {
            fs: Arc::new(fs),
            clock: Arc::new(FakeClock::new(at(10_000_000))),
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
                capacity: 4 * BLOCK_SIZE,
            }],
        )
        .unwrap();
        let mut j = vol.open_group("g").unwrap();
        let write = |j: &mut GroupJournal, t: Timestamp| {
            let lsn = j.next_lsn();
            j.apply_frame(Frame::Write {
                lsn,
                source_time: t,
                disk: 0,
                offset: 0,
                data: vec![lsn.0 as u8; BLOCK_SIZE as usize],
                resync: false,
            })
            .unwrap();
        };
        for (micros, name) in [(300_000, "a"), (700_000, "b"), (2_200_000, "c")] {
            write(&mut j, at(micros - 100_000));
            j.apply_frame(Frame::Tag {
                lsn: j.next_lsn(),
                source_time: at(micros),
                kind: TagKind::Crash,
                name: name.into(),
            })
            .unwrap();
        }
        write(&mut j, at(3_400_000));
        j.commit().unwrap();
        j
    }

    fn select(j: &GroupJournal, text: &str) -> std::result::Result<String, String> {
        let sel: PointSelector = text.parse()?;
        j.select(&sel).map(|p| p.name).map_err(|e| e.to_string())
    }

    #[test]
    fn a_time_to_the_second_selects_the_newest_point_within_that_second() {
        let j = group();
        // The form `points` shows: every shown time is accepted.
        assert_eq!(select(&j, "2026-11-26T00:00:00Z").unwrap(), "b");
        assert_eq!(select(&j, "2026-11-26T00:00:01Z").unwrap(), "b");
        assert_eq!(select(&j, "2026-11-26T00:00:02Z").unwrap(), "c");
        assert_eq!(select(&j, "2026-11-26T00:00:03Z").unwrap(), "latest");
        assert_eq!(select(&j, "2026-11-26T02:00:02+02:00").unwrap(), "c");
    }

    #[test]
    fn a_time_with_a_fraction_selects_to_the_microsecond() {
        let j = group();
        // The form `points --json` shows names exactly its point.
        for p in j.points() {
            assert_eq!(select(&j, &format!("{:#}", p.source_time)).unwrap(), p.name);
        }
        assert_eq!(select(&j, "2026-11-26T00:00:00.5Z").unwrap(), "a");
        assert_eq!(select(&j, "2026-11-26T00:00:00.699999Z").unwrap(), "a");
        assert_eq!(select(&j, "2026-11-26T00:00:03.399999Z").unwrap(), "c");
        assert_eq!(
            select(&j, &format!("{:#}", j.latest().source_time)).unwrap(),
            "latest"
        );
    }

    #[test]
    fn before_the_oldest_point_the_refusal_shows_both_times_to_the_microsecond() {
        let j = group();
        let e = select(&j, "2026-11-25T23:59:59Z").unwrap_err();
        assert!(
            e.contains("at or before 2026-11-25T23:59:59.999999Z")
                && e.contains("the oldest is 2026-11-26T00:00:00.300000Z"),
            "{e}"
        );
        let e = select(&j, "2026-11-26T00:00:00.2Z").unwrap_err();
        assert!(
            e.contains("the oldest is 2026-11-26T00:00:00.300000Z"),
            "{e}"
        );
    }
}
