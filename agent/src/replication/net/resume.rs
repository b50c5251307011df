//! How a sender survives a lost connection: the retry budget (counted from the loss, afresh
//! after every acknowledgement, with exponential backoff and jitter) and the resync cursor
//! (everything of the sources before it is on the master target and acknowledged), kept in
//! the sender's state directory so that neither a reconnect nor a restarted send reads or
//! sends an acknowledged block again. Decides nothing about what is sent; the sender asks.

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A place in the sources: disk number, then byte offset (in the group's disk order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub disk: u32,
    pub offset: u64,
}

/// The resync cursor of one group.
#[derive(Debug)]
pub struct Cursor {
    path: Utf8PathBuf,
    /// Which resync this is: the sources, the target, the mode (a cursor of another request
    /// is never used).
    fingerprint: String,
    /// The LSN of the resync's first write (the master target's `resync_since`); 0 until known.
    pub since: u64,
    /// Frames sent and not yet acknowledged: their LSN and where they start.
    unacked: VecDeque<(u64, Pos)>,
    /// Everything before this has been sent or found equal.
    scanned: Pos,
    saved: Option<(u64, Pos)>,
    saved_at: Instant,
}

impl Cursor {
    /// The cursor of `group` in `state`, empty unless a saved one has this `fingerprint`.
    pub fn load(state: &Utf8Path, group: &str, fingerprint: String) -> Cursor {
        let path = state.join("resync").join(group);
        let mut c = Cursor {
            path,
            fingerprint,
            since: 0,
            unacked: VecDeque::new(),
            scanned: Pos::default(),
            saved: None,
            saved_at: Instant::now(),
        };
        if let Ok(text) = std::fs::read_to_string(&c.path) {
            let w: Vec<&str> = text.split_whitespace().collect();
            if let [fp, since, disk, offset] = w[..] {
                if fp == c.fingerprint {
                    if let (Ok(since), Ok(disk), Ok(offset)) =
                        (since.parse(), disk.parse(), offset.parse())
                    {
                        c.since = since;
                        c.scanned = Pos { disk, offset };
                        c.saved = Some((since, c.scanned));
                    }
                }
            }
        }
        c
    }

    /// Where the resync of a new session begins, given the master target's `resync_since`
    /// and `acked`: the confirmed position if this cursor belongs to the group's unfinished
    /// resync, else the start (and the resync's first write will be `acked + 1`). `plan`, for
    /// a resync whose writes follow a fixed plan (a full copy), gives the position after so
    /// many of them: exact even when acknowledgements arrived that this process never saw (a
    /// send killed and run again).
    pub fn begin(
        &mut self,
        resync_since: u64,
        acked: u64,
        plan: Option<&dyn Fn(u64) -> Pos>,
    ) -> Pos {
        if resync_since != 0 && resync_since == self.since {
            if let Some(plan) = plan {
                self.unacked.clear();
                self.scanned = plan((acked + 1).saturating_sub(resync_since));
                return self.scanned;
            }
            // Frames the master target made durable before the connection broke count too.
            while self.unacked.front().is_some_and(|(l, _)| *l <= acked) {
                self.unacked.pop_front();
            }
            self.scanned = self.confirmed();
            self.unacked.clear();
            return self.scanned;
        }
        self.unacked.clear();
        self.since = if resync_since != 0 {
            resync_since
        } else {
            acked + 1
        };
        self.scanned = Pos::default();
        self.scanned
    }

    /// A frame with `lsn` starting at `start` was sent.
    pub fn sent(&mut self, lsn: u64, start: Pos) {
        self.unacked.push_back((lsn, start));
    }

    /// Everything before `pos` was sent or found equal.
    pub fn scanned(&mut self, pos: Pos) {
        self.scanned = self.scanned.max(pos);
    }

    /// The master target acknowledged through `lsn`; the cursor is saved now and then.
    pub fn acked(&mut self, lsn: u64) -> Result<()> {
        while self.unacked.front().is_some_and(|(l, _)| *l <= lsn) {
            self.unacked.pop_front();
        }
        if self.saved_at.elapsed() >= CURSOR_SAVE_EVERY {
            self.save()?;
        }
        Ok(())
    }

    /// How far the resync has read (sent or found equal), acknowledged or not.
    pub fn position(&self) -> Pos {
        self.scanned
    }

    /// Everything before this is acknowledged on the master target.
    pub fn confirmed(&self) -> Pos {
        match self.unacked.front() {
            Some((_, p)) => *p.min(&self.scanned),
            None => self.scanned,
        }
    }

    /// Writes the confirmed position (atomically) if it moved.
    pub fn save(&mut self) -> Result<()> {
        self.saved_at = Instant::now();
        let now = (self.since, self.confirmed());
        if self.since == 0 || self.saved == Some(now) {
            return Ok(());
        }
        let text = format!(
            "{} {} {} {}\n",
            self.fingerprint, now.0, now.1.disk, now.1.offset
        );
        crate::atomic_file::write_atomic(&self.path, text.as_bytes(), 0o644)
            .with_context(|| format!("cannot write the resync cursor {}", self.path))?;
        self.saved = Some(now);
        Ok(())
    }

    /// The resync reached its closing tag: nothing to resume.
    pub fn finish(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        self.saved = None;
        self.since = 0;
        self.scanned = Pos::default();
        self.unacked.clear();
    }
}

/// How often the cursor is written while acknowledgements arrive.
pub const CURSOR_SAVE_EVERY: Duration = Duration::from_secs(5);
/// Backoff between reconnection attempts: from the first, doubling to the last, each wait a
/// random part (half to all) of it, so many senders cut off at once do not return at once.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The reconnection budget of one send.
pub struct Retry {
    limit: Option<Duration>,
    lost_at: Option<Instant>,
    attempts: u64,
    backoff: Duration,
    best_acked: u64,
    /// The jitter (the crate's one seeded generator, seeded per process).
    rng: crate::replication::journal::sim::SimRng,
}

/// What to do after a lost connection.
pub enum Verdict {
    /// Wait this long, then reconnect; `first` when this loss is new (log its cause).
    Wait { pause: Duration, first: bool },
    /// The budget is spent: how long it tried and how many attempts.
    GiveUp { tried: Duration, attempts: u64 },
}

impl Retry {
    pub fn new(limit: Option<Duration>) -> Retry {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Retry {
            limit,
            lost_at: None,
            attempts: 0,
            backoff: BACKOFF_FIRST,
            best_acked: 0,
            rng: crate::replication::journal::sim::SimRng::new(
                nanos ^ u64::from(std::process::id()).rotate_left(32),
            ),
        }
    }

    /// A connection was lost (or could not be made) after the master target had acknowledged
    /// through `acked`: progress since the last loss starts the budget afresh.
    pub fn lost(&mut self, acked: u64, now: Instant) -> Verdict {
        let progressed = acked > self.best_acked;
        self.best_acked = self.best_acked.max(acked);
        let first = progressed || self.lost_at.is_none();
        if first {
            self.lost_at = Some(now);
            self.attempts = 0;
            self.backoff = BACKOFF_FIRST;
        }
        let lost_at = self.lost_at.unwrap_or(now);
        let tried = now.saturating_duration_since(lost_at);
        if self.limit.is_some_and(|l| tried >= l) {
            return Verdict::GiveUp {
                tried,
                attempts: self.attempts,
            };
        }
        self.attempts += 1;
        // A different wait for every attempt and sender.
        let part = 0.5 + (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
        let mut pause = self.backoff.mul_f64(part);
        if let Some(l) = self.limit {
            pause = pause.min(l.saturating_sub(tried));
        }
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        Verdict::Wait { pause, first }
    }

    pub fn attempts(&self) -> u64 {
        self.attempts
    }

    /// When the current loss began.
    pub fn since_loss(&self) -> Duration {
        self.lost_at.map_or(Duration::ZERO, |t| t.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_counts_from_the_loss_and_starts_afresh_after_progress() {
        let t0 = Instant::now();
        let mut r = Retry::new(Some(Duration::from_secs(10)));
        // A send that ran for an hour before its first loss still gets its whole budget.
        assert!(matches!(r.lost(5, t0), Verdict::Wait { first: true, .. }));
        assert!(matches!(
            r.lost(5, t0 + Duration::from_secs(9)),
            Verdict::Wait { first: false, .. }
        ));
        assert!(matches!(
            r.lost(5, t0 + Duration::from_secs(10)),
            Verdict::GiveUp { .. }
        ));
        // An acknowledgement since: a new loss, a new budget.
        let t1 = t0 + Duration::from_secs(11);
        assert!(matches!(r.lost(6, t1), Verdict::Wait { first: true, .. }));
        assert!(matches!(
            r.lost(6, t1 + Duration::from_secs(9)),
            Verdict::Wait { .. }
        ));
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_forever_never_gives_up() {
        let t0 = Instant::now();
        let mut r = Retry::new(None);
        let mut waits = Vec::new();
        for i in 0..12 {
            match r.lost(0, t0 + Duration::from_secs(i * 100_000)) {
                Verdict::Wait { pause, .. } => waits.push(pause),
                Verdict::GiveUp { .. } => panic!("forever gave up"),
            }
        }
        assert!(waits[0] >= BACKOFF_FIRST / 2 && waits[0] <= BACKOFF_FIRST);
        assert!(waits[3] >= BACKOFF_FIRST * 4 && waits[3] <= BACKOFF_FIRST * 8);
        assert!(waits.iter().all(|w| *w <= BACKOFF_MAX));
        assert!(waits[11] >= BACKOFF_MAX / 2);
    }

    #[test]
    fn the_cursor_stops_at_the_first_unacknowledged_frame_and_is_kept_for_the_same_resync() {
        let dir = testkit::scratch("resume-cursor");
        let p = |disk, offset| Pos { disk, offset };
        let mut c = Cursor::load(&dir, "g", "fp".into());
        assert_eq!(c.begin(0, 10, None), p(0, 0));
        assert_eq!(c.since, 11);
        c.sent(11, p(0, 0));
        c.sent(12, p(0, 1 << 20));
        c.scanned(p(0, 2 << 20));
        assert_eq!(c.confirmed(), p(0, 0));
        c.acked(11).unwrap();
        assert_eq!(c.confirmed(), p(0, 1 << 20));
        c.save().unwrap();
        // Another process, the same request: resumes where the acknowledged part ends...
        let mut again = Cursor::load(&dir, "g", "fp".into());
        assert_eq!(again.begin(11, 11, None), p(0, 1 << 20));
        // ...but not for another resync of the group, nor for another request.
        assert_eq!(
            Cursor::load(&dir, "g", "fp".into()).begin(20, 25, None),
            p(0, 0)
        );
        assert_eq!(
            Cursor::load(&dir, "g", "other".into()).begin(11, 11, None),
            p(0, 0)
        );
        // A fixed plan maps acknowledged writes to the position, whatever was saved.
        let plan = |n: u64| p(0, n << 20);
        assert_eq!(
            Cursor::load(&dir, "g", "fp".into()).begin(11, 14, Some(&plan)),
            p(0, 4 << 20)
        );
        again.finish();
        assert_eq!(
            Cursor::load(&dir, "g", "fp".into()).begin(11, 11, None),
            p(0, 0)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
