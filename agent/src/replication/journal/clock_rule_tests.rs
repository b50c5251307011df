//! Tests of the master target's clock rule on a simulated disk and clock: retention, automatic
//! points and status follow the receive time whatever the source's clock says; a source time
//! too far ahead is refused, one that goes back is raised and counted, and the ends of the
//! `i64` range neither panic nor wrap.

use super::clock::{Clock, FakeClock, Timestamp};
use super::io::Fs;
use super::policy::{self, Policy};
use super::sim::SimFs;
use super::timeline::{self, PointKind};
use super::{DiskSpec, FrameOutcome, GroupJournal, JournalError, Lsn, RetentionVolume};
use crate::replication::frame::{Frame, TagKind, BLOCK_SIZE};
use camino::Utf8Path;
use std::sync::Arc;

/// 2026-11-26T00:00:00Z.
const T0: Timestamp = Timestamp(1_795_651_200_000_000);
const HOUR: i64 = 3600;

struct Rig {
    fs: SimFs,
    clock: Arc<FakeClock>,
}

impl Rig {
    fn new() -> Rig {
        let fs = SimFs::new();
        fs.set_capacity(Some(1 << 30));
        fs.create_dir_all(Utf8Path::new("/ret")).unwrap();
        fs.put(Utf8Path::new("/t/d0.img"), &[0u8; 8 * BLOCK_SIZE as usize]);
        let rig = Rig {
            fs,
            clock: Arc::new(FakeClock::new(T0)),
        };
        rig.volume(policy::DEFAULT_MAX_CLOCK_SKEW_SECS)
            .create_group(
                "g",
                vec![DiskSpec {
                    name: "d0".into(),
                    target: "/t/d0.img".into(),
                    capacity: 8 * BLOCK_SIZE,
                }],
            )
            .unwrap();
        rig
    }

    fn volume(&self, max_skew_secs: i64) -> RetentionVolume {
        RetentionVolume {
            fs: Arc::new(self.fs.clone()),
            clock: self.clock.clone(),
            root: "/ret".into(),
            policy: Policy {
                max_clock_skew_secs: max_skew_secs,
                ..Policy::runbook()
            },
            budget: None,
            batch_bytes: 1 << 20,
        }
    }

    fn open(&self, max_skew_secs: i64) -> GroupJournal {
        self.volume(max_skew_secs).open_group("g").unwrap()
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn status(&self, j: &GroupJournal) -> policy::GroupStatus {
        let mut notes = Vec::new();
        let dir = j.volume().group_dir("g");
        let (s, _, _) = timeline::load(&self.fs, &dir, &mut notes, false).unwrap();
        policy::group_status(j.volume(), &s, 0, 1 << 40)
    }
}

fn write(j: &mut GroupJournal, t: Timestamp) -> Result<FrameOutcome, JournalError> {
    let lsn = j.next_lsn();
    j.apply_frame(Frame::Write {
        lsn,
        source_time: t,
        disk: 0,
        offset: (lsn.0 % 8) * BLOCK_SIZE,
        data: vec![lsn.0 as u8; BLOCK_SIZE as usize],
        resync: false,
    })
}

fn tag(j: &mut GroupJournal, t: Timestamp, name: &str) -> Result<FrameOutcome, JournalError> {
    j.apply_frame(Frame::Tag {
        lsn: j.next_lsn(),
        source_time: t,
        kind: TagKind::Crash,
        name: name.into(),
    })
}

/// The points a 24 h window by the master target's clock keeps of `all` (only crash points).
fn window(all: &[super::RecoveryPoint], now: Timestamp) -> Vec<super::RecoveryPoint> {
    let horizon = now.plus_secs(-24 * HOUR);
    all.iter()
        .filter(|p| p.received_time >= horizon)
        .cloned()
        .collect()
}

#[test]
fn a_slow_then_a_fast_source_keeps_the_window_by_the_master_targets_clock() {
    let rig = Rig::new();
    let mut j = rig.open(policy::DEFAULT_MAX_CLOCK_SKEW_SECS);
    // 40 minutes of changes, one a minute, from a source 25 h slow whose clock also runs at a
    // second a minute: automatic points every 5 minutes of the master target's clock, none lost
    // at the next commit.
    let slow = rig.now().plus_secs(-25 * HOUR);
    for i in 0..40 {
        write(&mut j, slow.plus_secs(i)).unwrap();
        rig.clock.advance_secs(60);
    }
    j.commit().unwrap();
    let autos: Vec<_> = j.points().iter().filter(|p| p.name == "auto").collect();
    assert_eq!(autos.len(), 7, "points: {:?}", j.points());
    for w in autos.windows(2) {
        assert_eq!(w[1].received_time.secs_since(w[0].received_time), 300);
    }
    assert!(
        j.prune().unwrap().is_empty(),
        "a point of the window pruned"
    );
    let st = rig.status(&j);
    assert_eq!(st.skew_seconds, Some(-25 * HOUR + 39 - 39 * 60));
    assert!(
        st.clock_warnings.iter().any(|w| w.contains("behind")),
        "{:?}",
        st.clock_warnings
    );
    assert!(
        st.rpo_seconds >= 0 && st.rpo_seconds <= 60,
        "{}",
        st.rpo_seconds
    );
    let slow_points = j.points().to_vec();

    // Then 25 h fast: refused at the default limit, naming the frame, both times and the limit;
    // nothing of it is taken.
    let fast = rig.now().plus_secs(25 * HOUR);
    let next = j.next_lsn();
    let e = write(&mut j, fast).unwrap_err().to_string();
    for want in [
        format!("LSN {next}"),
        format!("{fast:#}"),
        format!("{:#}", rig.now()),
        "group g".to_string(),
        "at most 300 s ahead".to_string(),
        "--max-clock-skew".to_string(),
    ] {
        assert!(e.contains(&want), "{want:?} missing from: {e}");
    }
    assert_eq!(j.next_lsn(), next);
    let e = tag(&mut j, fast, "future").unwrap_err().to_string();
    assert!(e.contains("ahead of the master target's clock"), "{e}");
    assert_eq!(j.next_lsn(), next);
    assert_eq!(j.points(), slow_points.as_slice());
    drop(j);

    // With the limit raised above 25 h the fast source is taken, and its points still leave
    // the window 24 h after the master target received them.
    let mut j = rig.open(26 * HOUR);
    let first_fast = rig.now();
    for i in 0..40 {
        write(&mut j, fast.plus_secs(i)).unwrap();
        rig.clock.advance_secs(60);
    }
    tag(&mut j, fast.plus_secs(40), "fast-end").unwrap();
    let all = j.points().to_vec();
    assert!(all.len() > slow_points.len() + 7, "points: {all:?}");
    let st = rig.status(&j);
    assert_eq!(st.skew_seconds, Some(25 * HOUR + 40 - 40 * 60));
    assert!(st.clock_warnings.is_empty(), "{:?}", st.clock_warnings);
    // Step the master target's clock through the end of the day: the window is exactly the
    // points received in the last 24 h, the slow source's leaving first.
    rig.clock.set(T0.plus_secs(24 * HOUR));
    for _ in 0..30 {
        rig.clock.advance_secs(150);
        j.prune().unwrap();
        assert_eq!(j.points(), window(&all, rig.now()).as_slice());
    }
    assert!(j.points().iter().all(|p| !slow_points.contains(p)));
    assert!(!j.points().is_empty());
    // A commit prunes too (no explicit prune needed): past the last fast point's day, only
    // the point the new write leads to is left.
    rig.clock.set(first_fast.plus_secs(25 * HOUR));
    write(&mut j, fast.plus_secs(41)).unwrap();
    j.commit().unwrap();
    assert_eq!(j.points(), window(&all, rig.now()).as_slice());
    assert!(j.points().is_empty(), "{:?}", j.points());
    // Status ages come from the master target's clock: never negative.
    let st = rig.status(&j);
    assert_eq!(st.rpo_seconds, 0);
}

#[test]
fn a_source_time_that_goes_back_is_raised_to_the_latest_and_counted() {
    let rig = Rig::new();
    let mut j = rig.open(policy::DEFAULT_MAX_CLOCK_SKEW_SECS);
    let t = rig.now();
    write(&mut j, t).unwrap();
    write(&mut j, t.plus_secs(10)).unwrap();
    write(&mut j, t.plus_secs(4)).unwrap();
    j.commit().unwrap();
    assert_eq!(j.state().tip_time, t.plus_secs(10));
    // A tag that goes back makes its point at the latest time, so points stay in order.
    let p = match tag(&mut j, t.plus_secs(1), "back").unwrap() {
        FrameOutcome::PointCreated(p) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(p.source_time, t.plus_secs(10));
    write(&mut j, t.plus_secs(12)).unwrap();
    j.commit().unwrap();
    drop(j);
    // The count is durable: another process (status) and the next session see it.
    let j = rig.open(policy::DEFAULT_MAX_CLOCK_SKEW_SECS);
    assert_eq!(j.state().source_clock.clamped, 2);
    assert_eq!(j.state().source_clock.largest_step_back, 9_000_000);
    let st = rig.status(&j);
    assert_eq!(
        (st.clock_steps_back, st.largest_step_back_seconds),
        (2, 9.0)
    );
    assert!(
        st.clock_warnings[0].contains("went back 2 times (at most 9.000 s)"),
        "{:?}",
        st.clock_warnings
    );
    let text = policy::render(&policy::VolumeStatus {
        retention: "/ret".into(),
        now: rig.now().to_string(),
        used_bytes: 0,
        budget_bytes: None,
        free_bytes: 0,
        groups: vec![st],
        unreadable: Vec::new(),
    });
    assert!(
        text.contains("! the source's clock went back 2 times")
            && text.contains("clock skew +12 s"),
        "{text}"
    );
    // `recover --point TIME` still selects by the source's time.
    let sel = super::PointSelector::AtOrBefore(t.plus_secs(11));
    assert_eq!(j.select(&sel).unwrap().name, "back");
}

#[test]
fn the_ends_of_the_time_range_are_refused_or_raised_without_a_panic() {
    let rig = Rig::new();
    let mut j = rig.open(policy::DEFAULT_MAX_CLOCK_SKEW_SECS);
    // i64::MAX is far ahead of any clock: refused, for writes and tags.
    let max = Timestamp(i64::MAX);
    let e = write(&mut j, max).unwrap_err().to_string();
    assert!(e.contains("ahead of the master target's clock"), "{e}");
    let e = tag(&mut j, max, "max").unwrap_err().to_string();
    assert!(e.contains("ahead of the master target's clock"), "{e}");
    assert_eq!(j.next_lsn(), Lsn(1));
    // A limit of i64::MAX seconds is no overflow either.
    drop(j);
    let mut j = rig.open(i64::MAX);
    write(&mut j, max).unwrap();
    drop(j);
    let fresh = Rig::new();
    let mut j = fresh.open(policy::DEFAULT_MAX_CLOCK_SKEW_SECS);
    // i64::MIN is far behind: kept as the first frame, raised after a later one.
    let min = Timestamp(i64::MIN);
    write(&mut j, min).unwrap();
    j.commit().unwrap();
    let st = fresh.status(&j);
    assert_eq!(st.skew_seconds, Some(min.secs_since(fresh.now())));
    write(&mut j, fresh.now()).unwrap();
    write(&mut j, min).unwrap();
    tag(&mut j, min, "min").unwrap();
    j.commit().unwrap();
    assert!(j.points().iter().all(|p| p.source_time == fresh.now()));
    let st = fresh.status(&j);
    assert_eq!(st.clock_steps_back, 2);
    let text = fresh.open_status_text(&j);
    assert!(text.contains("went back 2 times"), "{text}");
    // A master target clock at the ends of the range: still no panic.
    fresh.clock.set(min);
    let _ = fresh.status(&j);
    j.prune().unwrap();
    fresh.clock.set(max);
    let _ = fresh.status(&j);
    j.prune().unwrap();
    assert!(
        j.points().iter().all(|p| p.kind == PointKind::Crash),
        "{:?}",
        j.points()
    );
}

impl Rig {
    fn open_status_text(&self, j: &GroupJournal) -> String {
        policy::render(&policy::volume_status(j.volume()))
    }
}

#[test]
fn timeline_records_of_an_earlier_version_are_read_with_the_clock_fields_unknown() {
    use super::record;
    let state = timeline::TimelineState::new("g", Vec::new(), T0);
    let mut old = Vec::new();
    timeline::Record::Snapshot(Box::new(state.clone())).encode(&mut old);
    let (rec, _) = record::parse_record(&old, 0).unwrap();
    // The fields every version writes end 25 bytes before the new ones do.
    let body = &rec.body[..rec.body.len() - 25];
    match timeline::Record::decode(rec.kind, body).unwrap() {
        timeline::Record::Snapshot(s) => assert_eq!(*s, state),
        other => panic!("{other:?}"),
    }
    let commit = timeline::Record::Commit {
        seq: 1,
        tip: Lsn(3),
        tip_time: T0,
        received: T0.plus_secs(7),
        epoch: 1,
        undo_len: record::FILE_HEADER_LEN,
        first_change: T0,
        last_write: Vec::new(),
        clock: None,
    };
    let mut bytes = Vec::new();
    commit.encode(&mut bytes);
    let (rec, _) = record::parse_record(&bytes, 0).unwrap();
    let mut s = state.clone();
    timeline::Record::decode(rec.kind, &rec.body)
        .unwrap()
        .apply(&mut s)
        .unwrap();
    // Without the field the epoch's first receive time is taken as its first commit's.
    assert_eq!(s.open.first_received, Some(T0.plus_secs(7)));
    assert_eq!(s.source_clock, timeline::SourceClock::default());
}
