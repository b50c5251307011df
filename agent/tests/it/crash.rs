//! Crash consistency on the simulated disk: a random workload (writes, tags, clock jumps, prunes,
//! in-place and into-directory recoveries, restarts) loses power at a random I/O operation; the
//! disk keeps only what was flushed plus a random subset of unflushed sectors and directory
//! changes. Sometimes power fails again during the restart's own repair. Afterwards: the group
//! opens, no acknowledged write is lost at "latest", targets hold exactly one acknowledged prefix,
//! every listed point recovers byte-identical to the model, and the stream resumes.
//! Some runs are in the middle of a resync when power fails: there the targets may also hold
//! blocks of the unacknowledged batch (a resync keeps no rollback), "latest" is refused, every
//! point still recovers exactly, and resending the blocks that differ (what a delta resync does)
//! makes the targets exact again. Into resyncs the workload mixes what only their closing tag may
//! follow (other tags, change-stream writes) and, outside them, stray closing tags: each is
//! refused without a single I/O and with the journal's state unchanged. A crash around a
//! closing tag leaves the resync either still open or closed with its point.
//! Every run reproduces from its seed (printed on failure).

use crate::common;

use camino::Utf8PathBuf;
use common::*;
use mt_agent::replication::frame::{Frame, TagKind, BLOCK_SIZE};
use mt_agent::replication::journal::clock::{Clock, FakeClock};
use mt_agent::replication::journal::sim::SimFs;
use mt_agent::replication::journal::{GroupJournal, JournalError, Lsn, PointKind, RecoveryPoint};
use std::collections::BTreeMap;
use std::sync::Arc;
use testkit::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Ingest,
    Tag,
    Commit,
    Prune,
    RecoverInPlace,
    RecoverToDir,
    Restart,
    RestartRepair,
    /// The resync's closing tag.
    CloseResync,
    /// Not a phase of its own: the crash left a resync unfinished.
    MidResync,
    /// Not a phase of its own: the run had frames refused (a foreign tag or a change-stream
    /// write during a resync, a closing tag outside one).
    Refused,
}

enum InFlight {
    None,
    InPlace(RecoveryPoint),
    ToDir(RecoveryPoint, Utf8PathBuf),
    /// The closing tag at this LSN.
    Close(Lsn),
}

struct Run {
    rng: Rng,
    fs: SimFs,
    clock: Arc<FakeClock>,
    model: Model,
    tag: String,
    /// Writes are part of a resync until its closing tag.
    resyncing: bool,
    /// Frames the journal refused (and had to).
    refused: u64,
}

/// Hands the journal a frame it must refuse, and checks that it did so without any I/O, with
/// its state unchanged, and with a message naming the frame's LSN (and, during a resync, the
/// resync's first LSN and how to finish it).
fn must_refuse(r: &mut Run, j: &mut GroupJournal, f: Frame) -> Phase {
    let what = match (&f, r.resyncing) {
        (Frame::Tag { .. }, true) => "a foreign tag in a resync",
        (_, true) => "a change-stream write in a resync",
        _ => "a closing tag outside a resync",
    };
    let lsn = f.lsn().unwrap();
    let (ops, state) = (r.fs.ops(), j.state().clone());
    let e = match j.apply_frame(f) {
        Err(JournalError::Rejected(e)) => e,
        other => panic!("{}: {what} at LSN {lsn} was not refused: {other:?}", r.tag),
    };
    assert_eq!(r.fs.ops(), ops, "{}: refusing {what} did I/O", r.tag);
    assert!(
        j.state() == &state,
        "{}: refusing {what} changed the state",
        r.tag
    );
    assert!(e.contains(&format!("LSN {lsn}:")), "{}: {e}", r.tag);
    match state.resync {
        Some(from) => assert!(
            e.contains(&format!("begun at LSN {from}")) && e.contains("finish the resync first"),
            "{}: {e}",
            r.tag
        ),
        None => assert!(e.contains("no resync open"), "{}: {e}", r.tag),
    }
    r.refused += 1;
    Phase::Refused
}

fn closing_tag(j: &GroupJournal, now: mt_agent::replication::journal::clock::Timestamp) -> Frame {
    Frame::Tag {
        lsn: j.next_lsn(),
        source_time: now,
        kind: TagKind::ResyncEnd,
        name: format!("resync-{}", j.next_lsn()),
    }
}

/// One random step; returns the phase it exercised. Errors are returned, not unwrapped.
fn step(
    r: &mut Run,
    j: &mut GroupJournal,
    allow_admin: bool,
    inflight: &mut InFlight,
) -> (Phase, Result<(), JournalError>) {
    let now = r.clock.now();
    let op = r.rng.below(100);
    *inflight = InFlight::None;
    match op {
        0..=3 if r.resyncing || op <= 1 => {
            let f = if !r.resyncing {
                closing_tag(j, now)
            } else if r.rng.chance(50) {
                random_tag(j, &mut r.rng, now)
            } else {
                let f = random_write_of(j, &mut r.model, &mut r.rng, now, false);
                r.model.log.pop();
                f
            };
            (must_refuse(r, j, f), Ok(()))
        }
        0..=54 => {
            let f = random_write_of(j, &mut r.model, &mut r.rng, now, r.resyncing);
            (Phase::Ingest, j.apply_frame(f).map(|_| ()))
        }
        55..=57 if !r.resyncing => {
            r.resyncing = true;
            let f = random_write_of(j, &mut r.model, &mut r.rng, now, true);
            (Phase::Ingest, j.apply_frame(f).map(|_| ()))
        }
        55..=64 if r.resyncing => {
            let f = closing_tag(j, now);
            *inflight = InFlight::Close(f.lsn().unwrap());
            let res = j.apply_frame(f).map(|_| ());
            if res.is_ok() {
                r.resyncing = false;
            }
            (Phase::CloseResync, res)
        }
        55..=64 => {
            let f = random_tag(j, &mut r.rng, now);
            (Phase::Tag, j.apply_frame(f).map(|_| ()))
        }
        65..=76 => {
            let secs = if r.rng.chance(15) {
                3600 * (1 + r.rng.below(10))
            } else {
                r.rng.below(400)
            };
            r.clock.advance_secs(secs as i64);
            (Phase::Commit, j.commit().map(|_| ()))
        }
        77..=84 => (Phase::Commit, j.commit().map(|_| ())),
        85..=89 if allow_admin => {
            // Often jump past the window so that the prune has points and epochs to drop.
            if r.rng.chance(40) {
                let window = j.volume().policy.retention_secs;
                r.clock
                    .advance_secs(window - 3600 + 3600 * r.rng.below(3) as i64);
            }
            (Phase::Prune, j.prune().map(|_| ()))
        }
        90..=94 if allow_admin && !j.points().is_empty() => {
            if let Err(e) = j.commit() {
                return (Phase::Commit, Err(e));
            }
            let pts = j.points().to_vec();
            if pts.is_empty() {
                return (Phase::Commit, Ok(()));
            }
            let p = pts[r.rng.below(pts.len() as u64) as usize].clone();
            *inflight = InFlight::InPlace(p.clone());
            let res = j.recover_point(&p, None).map(|_| ());
            if res.is_ok() {
                r.model.truncate(p.lsn);
                r.resyncing = false;
            }
            (Phase::RecoverInPlace, res)
        }
        95..=99 if allow_admin => {
            if let Err(e) = j.commit() {
                return (Phase::Commit, Err(e));
            }
            let mut pts = j.points().to_vec();
            if j.latest_is_consistent().is_ok() {
                pts.push(j.latest());
            } else if pts.is_empty() {
                return (Phase::Commit, Ok(()));
            }
            let p = pts[r.rng.below(pts.len() as u64) as usize].clone();
            let dir = Utf8PathBuf::from(format!("/out/{}", r.fs.ops()));
            *inflight = InFlight::ToDir(p.clone(), dir.clone());
            let res = j.recover_point(&p, Some(&dir)).map(|_| ());
            (Phase::RecoverToDir, res)
        }
        _ => (Phase::Commit, j.commit().map(|_| ())),
    }
}

fn check_all_points(r: &Run, j: &mut GroupJournal) {
    if j.state().resync.is_none() {
        check_targets(&r.fs, j, &r.model, &r.tag);
    }
    for p in j.points().to_vec() {
        check_point(&r.fs, j, &r.model, &p, &r.tag);
    }
}

/// One crash run; returns the phases in flight when power failed (the workload's, and the
/// restart's repair when power failed a second time there).
fn crash_run(seed: u64) -> Vec<Phase> {
    let mut rng = Rng::new(seed);
    let fs = SimFs::new();
    let clock = Arc::new(FakeClock::new(T0));
    let batch = (1 + rng.below(4)) * 4096 * 3;
    let vol = sim_volume(&fs, &clock, batch);
    let disks = 1 + rng.below(3) as usize;
    let blocks = 8 + rng.below(40);
    let model = make_group(&fs, &vol, &mut rng, disks, blocks);
    let mut r = Run {
        rng,
        fs: fs.clone(),
        clock: clock.clone(),
        model,
        tag: format!("crash seed {seed}"),
        resyncing: false,
        refused: 0,
    };
    let mut j = vol.open_group("g").unwrap();
    let mut inflight = InFlight::None;
    // Warm up without failures, so the crash finds points, epochs and a rollback log in place.
    let warm = r.rng.below(120);
    for _ in 0..warm {
        let (_, res) = step(&mut r, &mut j, true, &mut inflight);
        res.unwrap_or_else(|e| panic!("{}: warm-up failed: {e}", r.tag));
    }
    // Restart now and then during warm-up so that crash points also hit the opening code.
    let restart_crash = r.rng.chance(12);
    if std::env::var("CRASH_SEED").is_ok() {
        eprintln!(
            "warm {warm} restart_crash {restart_crash} acked {} points {:?} state {:?}",
            j.acked(),
            j.points().iter().map(|p| p.lsn.0).collect::<Vec<_>>(),
            j.state()
        );
    }
    let mut acked = j.acked();
    let mut points_before = j.points().to_vec();
    let mut phase;
    if restart_crash {
        // A clean drop finishes the batch in flight; what is only buffered dies with it.
        j.finish_in_flight()
            .unwrap_or_else(|e| panic!("{}: finishing the batch in flight: {e}", r.tag));
        r.model.truncate(j.acked());
        drop(j);
        fs.crash_after(1 + r.rng.below(8));
        phase = Phase::Restart;
        let reopened = vol.open_group("g");
        assert!(reopened.is_err() || !fs.has_crashed() || reopened.is_ok());
        if !fs.has_crashed() {
            // The restart had nothing to repair within the budget: crash right after it instead.
            j = reopened.unwrap();
            fs.crash_after(1);
            phase = Phase::Commit;
            let f = random_write_of(&j, &mut r.model, &mut r.rng, clock.now(), r.resyncing);
            let _ = j.apply_frame(f).and_then(|_| j.commit());
        }
    } else {
        fs.crash_after(1 + r.rng.below(40));
        loop {
            acked = j.acked();
            points_before = j.points().to_vec();
            let (ph, res) = step(&mut r, &mut j, true, &mut inflight);
            phase = ph;
            match res {
                Ok(()) => assert!(
                    !fs.has_crashed() || ph == Phase::Ingest,
                    "{}: an operation succeeded after the power loss",
                    r.tag
                ),
                Err(e) => {
                    assert!(
                        fs.has_crashed(),
                        "{}: {ph:?} failed without a crash: {e}",
                        r.tag
                    );
                    assert!(
                        matches!(e, JournalError::Io { .. }),
                        "{}: a crash surfaced as {e}",
                        r.tag
                    );
                    break;
                }
            }
            if fs.has_crashed() {
                // An ingest that only buffered did not notice; the next flush will.
                let res = j.commit();
                assert!(res.is_err(), "{}: commit after power loss succeeded", r.tag);
                phase = Phase::Ingest;
                break;
            }
        }
        drop(j);
    }
    // Power comes back: maybe it fails again while the restart repairs things.
    let mut img = power_loss(&fs, &mut r.rng);
    let trace = std::env::var("CRASH_SEED").is_ok();
    let mut repair_crashed = false;
    if trace {
        eprintln!("crashed in {phase:?}, acked {acked}");
    }
    if r.rng.chance(30) {
        img.crash_after(1 + r.rng.below(6));
        let vol2 = sim_volume(&img, &clock, batch);
        let res = vol2.open_group("g");
        if trace {
            eprintln!(
                "repair open: {:?}",
                res.as_ref()
                    .map(|j| (j.acked(), j.notes.clone()))
                    .map_err(|e| e.to_string())
            );
        }
        if res.is_err() && img.has_crashed() {
            repair_crashed = true;
        }
        img = power_loss(&img, &mut r.rng);
    }
    r.fs = img.clone();
    let vol2 = sim_volume(&img, &clock, batch);
    let mut j2 = vol2.open_group("g").unwrap_or_else(|e| {
        panic!(
            "{}: the group does not open after the crash ({phase:?}): {e}",
            r.tag
        )
    });
    let got = j2.acked();
    if trace {
        eprintln!("final open: acked {got} notes {:?}", j2.notes);
    }
    let sent = r.model.log.last().map_or(Lsn(0), |w| w.0).max(acked);
    match &inflight {
        InFlight::InPlace(p) if got == p.lsn => {}
        _ => assert!(
            got >= acked && got <= Lsn(sent.0 + 1),
            "{}: after a crash in {phase:?} the tip is LSN {got}, acknowledged was {acked}, sent {sent}",
            r.tag
        ),
    }
    if let InFlight::Close(lsn) = &inflight {
        // Around its closing tag a resync is still open, or closed with exactly that point.
        let point = j2.points().iter().find(|p| p.lsn == *lsn);
        match j2.state().resync {
            Some(_) => assert!(
                point.is_none() && got < *lsn,
                "{}: a crash at the closing tag left the resync open beside its point",
                r.tag
            ),
            None => assert!(
                point.is_some_and(|p| p.name == format!("resync-{lsn}")) && got == *lsn,
                "{}: a crash at the closing tag (LSN {lsn}) closed the resync without its point (tip {got}, points {:?})",
                r.tag,
                j2.points()
            ),
        }
    }
    let unacked: Vec<_> = r.model.log.iter().filter(|w| w.0 > got).cloned().collect();
    r.model.truncate(got);
    r.resyncing = j2.state().resync.is_some();
    let mid_resync = r.resyncing;
    if r.resyncing {
        resync_targets_hold_acked_or_unacked(&r, &j2, &unacked);
        assert!(
            j2.latest_is_consistent().is_err(),
            "{}: latest offered mid-resync",
            r.tag
        );
    }
    // Points: nothing invented; none lost that the policy had to keep.
    let horizon = clock.now().plus_secs(-vol2.policy.retention_secs);
    let newest_app = points_before
        .iter()
        .rev()
        .find(|p| p.kind == PointKind::App)
        .cloned();
    for p in &points_before {
        let may_go = p.lsn > got || p.received_time < horizon && Some(p) != newest_app.as_ref();
        assert!(
            may_go || j2.points().contains(p),
            "{}: point {p:?} lost in a crash during {phase:?}",
            r.tag
        );
    }
    for p in j2.points() {
        assert!(
            points_before.contains(p) || p.lsn >= acked,
            "{}: point {p:?} appeared from nowhere",
            r.tag
        );
    }
    if let InFlight::ToDir(p, dir) = &inflight {
        let want = r.model.state_at(p.lsn);
        for (i, d) in j2.disks().iter().enumerate() {
            if let Ok(got) = img.read_all(&dir.join(format!("{}.img", d.name))) {
                assert!(
                    got == want[i],
                    "{}: a half-recovered image carries its final name",
                    r.tag
                );
            }
        }
    }
    check_all_points(&r, &mut j2);
    if r.resyncing {
        // The resync resumes: the blocks that differ from the source are sent again.
        resend_differing_blocks(&mut r, &mut j2);
    }
    // The stream resumes from the acknowledged LSN and everything still holds.
    for _ in 0..40 {
        let (_, res) = step(&mut r, &mut j2, false, &mut inflight);
        res.unwrap_or_else(|e| panic!("{}: resuming after the crash failed: {e}", r.tag));
    }
    j2.commit().unwrap();
    check_all_points(&r, &mut j2);
    let mut phases = vec![phase];
    if repair_crashed {
        phases.push(Phase::RestartRepair);
    }
    if mid_resync {
        phases.push(Phase::MidResync);
    }
    if r.refused > 0 {
        phases.push(Phase::Refused);
    }
    phases
}

/// Mid-resync after a crash: every 512-byte sector of every target (the unit the simulated disk
/// keeps or loses) holds its content at the acknowledged LSN or what an unacknowledged write
/// gave it.
fn resync_targets_hold_acked_or_unacked(
    r: &Run,
    j: &GroupJournal,
    unacked: &[(Lsn, u32, u64, Vec<u8>)],
) {
    let want = r.model.state_at(j.acked());
    let bs = 512;
    for (i, d) in j.disks().iter().enumerate() {
        let got = r.fs.read_all(&d.target).unwrap();
        for (b, block) in got.chunks(bs).enumerate() {
            let at = (b * bs) as u64;
            let ok = *block == want[i][b * bs..(b + 1) * bs]
                || unacked.iter().any(|(_, wd, off, data)| {
                    *wd as usize == i
                        && *off <= at
                        && at < off + data.len() as u64
                        && *block == data[(at - off) as usize..(at - off) as usize + bs]
                });
            assert!(
                ok,
                "{}: after a crash mid-resync sector {b} of {} holds data that was never sent",
                r.tag, d.target
            );
        }
    }
}

/// What a delta resync does after a reconnect: sends the blocks where target and source differ.
fn resend_differing_blocks(r: &mut Run, j: &mut GroupJournal) {
    let want = r.model.state_at(j.acked());
    let bs = BLOCK_SIZE as usize;
    for (i, d) in j.disks().to_vec().iter().enumerate() {
        let got = r.fs.read_all(&d.target).unwrap();
        for b in 0..got.len() / bs {
            let range = b * bs..(b + 1) * bs;
            if got[range.clone()] != want[i][range.clone()] {
                let lsn = j.next_lsn();
                let data = want[i][range].to_vec();
                r.model
                    .log
                    .push((lsn, i as u32, (b * bs) as u64, data.clone()));
                j.apply_frame(Frame::Write {
                    lsn,
                    source_time: r.clock.now(),
                    disk: i as u32,
                    offset: (b * bs) as u64,
                    data,
                    resync: true,
                })
                .unwrap_or_else(|e| panic!("{}: resending block {b}: {e}", r.tag));
            }
        }
    }
}

fn campaign(seeds: std::ops::Range<u64>) -> BTreeMap<Phase, u64> {
    let mut by_phase = BTreeMap::new();
    for seed in seeds {
        for ph in crash_run(seed) {
            *by_phase.entry(ph).or_insert(0) += 1;
        }
    }
    eprintln!("crash points by phase: {by_phase:?}");
    by_phase
}

#[test]
fn crashes_lose_no_acknowledged_write_and_no_point() {
    let by_phase = campaign(0..100);
    assert!(by_phase.values().sum::<u64>() >= 100);
    for ph in [Phase::MidResync, Phase::CloseResync, Phase::Refused] {
        assert!(
            by_phase.get(&ph).copied().unwrap_or(0) > 0,
            "no run reached {ph:?}: {by_phase:?}"
        );
    }
}

#[test]
#[ignore = "slow: the full campaign of 1200 crash points; run by cargo xtask test"]
fn crash_campaign_1200_points() {
    let by_phase = campaign(10_000..11_200);
    assert!(by_phase.values().sum::<u64>() >= 1200);
    for ph in [
        Phase::Ingest,
        Phase::Tag,
        Phase::Commit,
        Phase::Prune,
        Phase::RecoverInPlace,
        Phase::RecoverToDir,
        Phase::Restart,
        Phase::RestartRepair,
        Phase::CloseResync,
        Phase::MidResync,
        Phase::Refused,
    ] {
        assert!(
            by_phase.get(&ph).copied().unwrap_or(0) > 0,
            "no crash landed in {ph:?}: {by_phase:?}"
        );
    }
}

/// Replays one seed: `CRASH_SEED=34 cargo test -p mt-agent --test it crash::replay_one_seed`.
#[test]
fn replay_one_seed() {
    if let Ok(seed) = std::env::var("CRASH_SEED") {
        crash_run(seed.parse().expect("CRASH_SEED is a number"));
    }
}

#[test]
fn a_failed_flush_stops_the_stream_and_is_never_retried() {
    for seed in 0..40u64 {
        let mut rng = Rng::new(seed);
        let fs = SimFs::new();
        let clock = Arc::new(FakeClock::new(T0));
        let vol = sim_volume(&fs, &clock, 3 * 4096);
        let mut model = make_group(&fs, &vol, &mut rng, 2, 16);
        let mut j = vol.open_group("g").unwrap();
        for _ in 0..20 {
            let f = random_write(&j, &mut model, &mut rng, clock.now());
            j.apply_frame(f).unwrap();
        }
        let f = random_tag(&j, &mut rng, clock.now());
        j.apply_frame(f).unwrap();
        fs.fail_sync_after(1 + rng.below(6));
        let mut failed = None;
        for _ in 0..40 {
            let f = random_write(&j, &mut model, &mut rng, clock.now());
            if let Err(e) = j.apply_frame(f).and_then(|_| j.commit()) {
                failed = Some(e);
                break;
            }
        }
        let e = failed.unwrap_or_else(|| panic!("seed {seed}: the failed flush went unnoticed"));
        assert!(matches!(e, JournalError::Io { .. }), "seed {seed}: {e}");
        assert!(e.to_string().contains("never retried"), "{e}");
        let acked = j.acked();
        // The handle refuses everything from now on instead of flushing again.
        let f = random_write(&j, &mut model, &mut rng, clock.now());
        let again = j.apply_frame(f).and_then(|_| j.commit()).unwrap_err();
        assert!(
            again.to_string().contains("stopped after an error"),
            "{again}"
        );
        drop(j);
        // What the disk holds after the failure recovers to an acknowledged prefix.
        let img = power_loss(&fs, &mut rng);
        let vol2 = sim_volume(&img, &clock, 3 * 4096);
        let mut j2 = vol2.open_group("g").unwrap();
        assert!(j2.acked() >= acked);
        model.truncate(j2.acked());
        let r = Run {
            rng,
            fs: img.clone(),
            clock: clock.clone(),
            model,
            tag: format!("failed flush seed {seed}"),
            resyncing: false,
            refused: 0,
        };
        check_all_points(&r, &mut j2);
    }
}
