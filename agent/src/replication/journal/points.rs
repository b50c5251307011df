//! Recovery points: making one (the Point record closes the open epoch and opens the next),
//! listing and selecting them, pruning those older than the retention window with the undo logs
//! only they needed, and compacting the timeline.

use super::clock::Timestamp;
use super::record::FileKind;
use super::timeline::{self, PointKind, RecoveryPoint};
use super::volume::create_log;
use super::{GroupJournal, JournalError, Lsn, Result};

/// The timeline is compacted into one snapshot record when it grows past this.
pub(super) const TIMELINE_COMPACT_BYTES: u64 = 1 << 20;

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

impl GroupJournal {
    pub(super) fn make_point(
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
    pub(super) fn compact(&mut self) -> Result<()> {
        let (f, len) = timeline::write_snapshot(self.fs(), &self.dir, &self.state)?;
        self.timeline = f;
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
}
