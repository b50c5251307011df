//! The agent against a reference model: random workloads of writes, crash and app tags, clock
//! jumps (5-minute points, 24 h pruning), explicit prunes, restarts and in-place recoveries on
//! multi-disk groups. After every step the targets equal the model at the acknowledged LSN, and
//! at checkpoints every listed point recovers byte-identical to the model at that point's LSN.

use crate::common;

use common::*;
use mt_agent::replication::journal::clock::FakeClock;
use mt_agent::replication::journal::sim::SimFs;
use mt_agent::replication::journal::{FrameOutcome, GroupJournal, PointKind, RecoveryPoint};
use std::sync::Arc;
use testkit::Rng;

/// Checks the point list against what the policy allows: nothing invented, nothing pruned that
/// was still inside the window, the newest app-consistent point kept.
fn check_point_list(
    j: &GroupJournal,
    created: &[RecoveryPoint],
    now: mt_agent::replication::journal::clock::Timestamp,
) {
    let horizon = now.plus_secs(-j.volume().policy.retention_secs);
    let listed = j.points();
    for p in listed {
        assert!(created.contains(p), "point {p:?} was never created");
    }
    let newest_app = created.iter().rev().find(|p| p.kind == PointKind::App);
    for c in created {
        if !listed.contains(c) {
            assert!(
                c.received_time < horizon,
                "point {c:?} pruned inside the window"
            );
            assert!(
                Some(c) != newest_app,
                "the newest app-consistent point {c:?} was pruned"
            );
        }
    }
}

fn run_model(seed: u64, ops: usize) {
    let mut rng = Rng::new(seed);
    let fs = SimFs::new();
    let clock = Arc::new(FakeClock::new(T0));
    let batch = (1 + rng.below(6)) * 4096 * 4;
    let vol = sim_volume(&fs, &clock, batch);
    let disks = 1 + rng.below(3) as usize;
    let blocks = 16 + rng.below(48);
    let mut model = make_group(&fs, &vol, &mut rng, disks, blocks);
    let mut j = vol.open_group("g").unwrap();
    let mut created: Vec<RecoveryPoint> = Vec::new();
    let tag = format!("seed {seed}");
    for step in 0..ops {
        let now = clock.now_ts();
        let op = rng.below(100);
        if std::env::var("MODEL_TRACE").is_ok() {
            eprintln!(
                "step {step} op {op} acked {} next {} points {:?}",
                j.acked(),
                j.next_lsn(),
                j.points().iter().map(|p| p.lsn.0).collect::<Vec<_>>()
            );
        }
        match op {
            0..=59 => {
                let f = random_write(&j, &mut model, &mut rng, now);
                let newest = created.last().map(|p| p.lsn);
                assert_eq!(j.apply_frame(f).unwrap(), FrameOutcome::Accepted);
                // A 5-minute point may have been made just before this write.
                for p in j.points() {
                    if !created.contains(p) {
                        assert!(
                            p.name == "auto"
                                && p.kind == PointKind::Crash
                                && Some(p.lsn) > newest
                                && p.lsn <= j.acked(),
                            "{tag}: unexpected point {p:?}"
                        );
                        created.push(p.clone());
                    }
                }
            }
            60..=69 => {
                let f = random_tag(&j, &mut rng, now);
                match j.apply_frame(f).unwrap() {
                    FrameOutcome::PointCreated(p) => created.push(p),
                    other => panic!("{tag}: a tag gave {other:?}"),
                }
            }
            70..=81 => clock.advance_secs(rng.below(400) as i64),
            82..=84 => clock.advance_secs(3600 * (1 + rng.below(8)) as i64),
            85..=87 => {
                j.prune().unwrap();
                let horizon = clock.now_ts().plus_secs(-j.volume().policy.retention_secs);
                let newest_app = created
                    .iter()
                    .rev()
                    .find(|p| p.kind == PointKind::App)
                    .cloned();
                let expect: Vec<_> = created
                    .iter()
                    .filter(|p| p.received_time >= horizon || Some(*p) == newest_app.as_ref())
                    .cloned()
                    .collect();
                let listed: Vec<_> = j.points().to_vec();
                assert_eq!(listed, expect, "{tag}: points after an explicit prune");
            }
            88..=92 => {
                j.commit().unwrap();
            }
            93..=95 => {
                // Buffered writes die with the process (a batch already in flight is finished
                // first); the source resends from `acked`.
                drop(j);
                j = vol.open_group("g").unwrap();
                model.truncate(j.acked());
                assert!(
                    j.notes.is_empty(),
                    "{tag}: a clean restart repaired something: {:?}",
                    j.notes
                );
            }
            96..=97 if !j.points().is_empty() => {
                // Committing may prune, so choose among the points that remain after it.
                j.commit().unwrap();
                let pts = j.points().to_vec();
                if pts.is_empty() {
                    continue;
                }
                let p = pts[rng.below(pts.len() as u64) as usize].clone();
                j.recover_point(&p, None).unwrap();
                model.truncate(p.lsn);
                // Points already pruned stay gone; newer ones go with the roll-back.
                let expect: Vec<_> = pts.into_iter().filter(|c| c.lsn <= p.lsn).collect();
                assert_eq!(
                    j.points(),
                    expect.as_slice(),
                    "{tag}: points after an in-place recovery"
                );
                created = expect;
                assert_eq!(j.acked(), p.lsn);
            }
            _ => {
                j.commit().unwrap();
                for p in j.points().to_vec() {
                    check_point(&fs, &mut j, &model, &p, &tag);
                }
            }
        }
        // Targets always hold exactly the acknowledged prefix.
        let pending = j.next_lsn().0 - j.acked().0 - 1;
        if pending == 0 {
            check_targets(&fs, &j, &model, &format!("{tag} step {step}"));
        }
        check_point_list(&j, &created, clock.now_ts());
    }
    j.commit().unwrap();
    check_targets(&fs, &j, &model, &tag);
    let latest = j.latest();
    check_point(&fs, &mut j, &model, &latest, &tag);
    for p in j.points().to_vec() {
        check_point(&fs, &mut j, &model, &p, &tag);
    }
    assert!(j.verify().is_empty());
}

trait NowTs {
    fn now_ts(&self) -> mt_agent::replication::journal::clock::Timestamp;
}
impl NowTs for FakeClock {
    fn now_ts(&self) -> mt_agent::replication::journal::clock::Timestamp {
        use mt_agent::replication::journal::clock::Clock;
        self.now()
    }
}

#[test]
fn every_listed_point_recovers_identical_to_the_model() {
    for seed in 0..24 {
        run_model(seed, 250);
    }
}

#[test]
#[ignore = "slow: 150 random workloads of 600 steps; run by cargo xtask test"]
fn every_listed_point_recovers_identical_to_the_model_full() {
    for seed in 1000..1150 {
        run_model(seed, 600);
    }
}

#[test]
fn five_minutes_of_changes_make_a_crash_consistent_point() {
    let mut rng = Rng::new(7);
    let fs = SimFs::new();
    let clock = Arc::new(FakeClock::new(T0));
    let vol = sim_volume(&fs, &clock, 1 << 20);
    let mut model = make_group(&fs, &vol, &mut rng, 2, 32);
    let mut j = vol.open_group("g").unwrap();
    // One write every 30 s for 20 minutes: 4 automatic points.
    for _ in 0..40 {
        let f = random_write(&j, &mut model, &mut rng, clock.now_ts());
        j.apply_frame(f).unwrap();
        clock.advance_secs(30);
    }
    j.commit().unwrap();
    let auto: Vec<_> = j.points().iter().filter(|p| p.name == "auto").collect();
    assert_eq!(auto.len(), 3, "points: {:?}", j.points());
    for w in auto.windows(2) {
        assert_eq!(
            w[1].source_time.secs_since(w[0].source_time),
            j.volume().policy.crash_point_interval_secs
        );
    }
    for p in j.points().to_vec() {
        check_point(&fs, &mut j, &model, &p, "5min");
    }
}

#[test]
fn the_newest_app_consistent_point_outlives_the_window_until_a_newer_one_exists() {
    let mut rng = Rng::new(8);
    let fs = SimFs::new();
    let clock = Arc::new(FakeClock::new(T0));
    let vol = sim_volume(&fs, &clock, 1 << 20);
    let mut model = make_group(&fs, &vol, &mut rng, 1, 16);
    let mut j = vol.open_group("g").unwrap();
    let app = |j: &GroupJournal, name: &str, now| mt_agent::replication::frame::Frame::Tag {
        lsn: j.next_lsn(),
        source_time: now,
        kind: mt_agent::replication::frame::TagKind::App,
        name: name.into(),
    };
    let f = random_write(&j, &mut model, &mut rng, clock.now_ts());
    j.apply_frame(f).unwrap();
    j.apply_frame(app(&j, "vss-1", clock.now_ts())).unwrap();
    let window = j.volume().policy.retention_secs;
    clock.advance_secs(window + 3600);
    let f = random_write(&j, &mut model, &mut rng, clock.now_ts());
    j.apply_frame(f).unwrap();
    j.apply_frame(random_tag_crash(&j, clock.now_ts())).unwrap();
    j.prune().unwrap();
    let names: Vec<_> = j.points().iter().map(|p| p.name.clone()).collect();
    assert!(names.contains(&"vss-1".to_string()), "{names:?}");
    let oldest = j.points()[0].clone();
    check_point(&fs, &mut j, &model, &oldest, "old app");
    j.apply_frame(app(&j, "vss-2", clock.now_ts())).unwrap();
    j.prune().unwrap();
    let names: Vec<_> = j.points().iter().map(|p| p.name.clone()).collect();
    assert!(!names.contains(&"vss-1".to_string()), "{names:?}");
    assert!(names.contains(&"vss-2".to_string()), "{names:?}");
}

fn random_tag_crash(
    j: &GroupJournal,
    now: mt_agent::replication::journal::clock::Timestamp,
) -> mt_agent::replication::frame::Frame {
    mt_agent::replication::frame::Frame::Tag {
        lsn: j.next_lsn(),
        source_time: now,
        kind: mt_agent::replication::frame::TagKind::Crash,
        name: "crash".into(),
    }
}
