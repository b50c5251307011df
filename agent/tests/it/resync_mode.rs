//! The journal's resync mode: writes flagged as a resync keep no rollback, so the journal must
//! know durably that a resync is under way, refuse what would mix it with a change stream, never
//! offer the mixed state as a recovery point, and keep every earlier point exact.

use crate::common;

use common::*;
use mt_agent::replication::frame::{Frame, TagKind};
use mt_agent::replication::journal::clock::{Clock, FakeClock};
use mt_agent::replication::journal::io::Fs;
use mt_agent::replication::journal::sim::SimFs;
use mt_agent::replication::journal::{PointKind, PointSelector};
use std::sync::Arc;
use testkit::Rng;

fn tag(
    j: &mt_agent::replication::journal::GroupJournal,
    now: mt_agent::replication::journal::clock::Timestamp,
) -> Frame {
    Frame::Tag {
        lsn: j.next_lsn(),
        source_time: now,
        kind: TagKind::Crash,
        name: "resync".into(),
    }
}

#[test]
fn a_resync_is_recorded_refuses_stream_writes_and_hides_latest_until_its_tag() {
    let fs = SimFs::new();
    let clock = Arc::new(FakeClock::new(T0));
    let vol = sim_volume(&fs, &clock, 8 * 4096);
    let mut rng = Rng::new(7);
    let mut model = make_group(&fs, &vol, &mut rng, 2, 32);
    let mut j = vol.open_group("g").unwrap();
    // A stream with a point, then a resync.
    for _ in 0..10 {
        let f = random_write(&j, &mut model, &mut rng, clock.now());
        j.apply_frame(f).unwrap();
    }
    j.apply_frame(tag(&j, clock.now())).unwrap();
    let before = j.points().to_vec();
    assert!(j.state().resync.is_none());
    let first = j.next_lsn();
    for _ in 0..20 {
        let f = random_write_of(&j, &mut model, &mut rng, clock.now(), true);
        j.apply_frame(f).unwrap();
    }
    assert_eq!(j.state().resync, Some(first));

    // Durable: a reopened journal still knows.
    j.commit().unwrap();
    drop(j);
    let mut j = vol.open_group("g").unwrap();
    assert_eq!(j.state().resync, Some(first));

    // A change-stream write in the middle of the resync is refused, naming both LSNs.
    let mut scratch = model.clone();
    let f = random_write(&j, &mut scratch, &mut rng, clock.now());
    let lsn = f.lsn().unwrap();
    let e = j.apply_frame(f).unwrap_err().to_string();
    assert!(
        e.contains(&format!("LSN {lsn}")) && e.contains(&format!("begun at LSN {first}")),
        "{e}"
    );
    assert!(e.contains("mt-agent send --delta"), "{e}");

    // "latest" is no recovery point now, neither by name nor by time.
    let e = j.select(&PointSelector::Latest).unwrap_err().to_string();
    assert!(e.contains("middle of a resync"), "{e}");
    let by_time = j.select(&PointSelector::AtOrBefore(clock.now())).unwrap();
    assert_eq!(by_time, *before.last().unwrap());
    let latest = j.latest();
    assert!(j.recover_point(&latest, Some("/out/x".into())).is_err());

    // No automatic crash point while the resync runs, however long it takes.
    clock.advance_secs(3600);
    for _ in 0..5 {
        let f = random_write_of(&j, &mut model, &mut rng, clock.now(), true);
        j.apply_frame(f).unwrap();
    }
    j.commit().unwrap();
    assert_eq!(j.points(), &before[..]);

    // The earlier point is still exact.
    check_point(&fs, &mut j, &model, &before[0], "resync");

    // The closing tag ends it: latest is a point again and the targets equal the model.
    j.apply_frame(tag(&j, clock.now())).unwrap();
    assert!(j.state().resync.is_none());
    assert_eq!(j.points().last().unwrap().kind, PointKind::Crash);
    check_targets(&fs, &j, &model, "resync");
    j.select(&PointSelector::Latest).unwrap();
    for p in j.points().to_vec() {
        check_point(&fs, &mut j, &model, &p, "resync");
    }
    // And a change stream is accepted again.
    let f = random_write(&j, &mut model, &mut rng, clock.now());
    j.apply_frame(f).unwrap();
    j.commit().unwrap();
    check_targets(&fs, &j, &model, "resync");
}

#[test]
fn a_first_full_copy_writes_nothing_but_the_targets_and_the_timeline() {
    let fs = SimFs::new();
    let clock = Arc::new(FakeClock::new(T0));
    let vol = sim_volume(&fs, &clock, 8 * 4096);
    let mut rng = Rng::new(9);
    let mut model = make_group(&fs, &vol, &mut rng, 1, 64);
    let mut j = vol.open_group("g").unwrap();
    let dir = vol.group_dir("g");
    let sizes = |fs: &SimFs| -> u64 {
        fs.list(&dir)
            .unwrap()
            .iter()
            .filter(|n| n.starts_with("undo-") || n.starts_with("rollback"))
            .map(|n| fs.file_size(&dir.join(n)))
            .sum()
    };
    let logs_before = sizes(&fs);
    for _ in 0..40 {
        let f = random_write_of(&j, &mut model, &mut rng, clock.now(), true);
        j.apply_frame(f).unwrap();
    }
    j.commit().unwrap();
    assert_eq!(
        sizes(&fs),
        logs_before,
        "a resync of a group without points saved old blocks"
    );
    j.apply_frame(tag(&j, clock.now())).unwrap();
    check_targets(&fs, &j, &model, "first copy");
}
