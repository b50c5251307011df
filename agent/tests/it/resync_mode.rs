//! The journal's resync mode: writes flagged as a resync keep no rollback, so the journal must
//! know durably that a resync is under way, refuse what would mix it with a change stream, never
//! offer the mixed state as a recovery point, and keep every earlier point exact. And with the
//! real binaries: a recorded stream sent in the middle of a resync, whose first frames are a
//! crash tag and a write, is refused without a byte written, and only the resync's own closing
//! tag (a `--delta` run again) ends it.

use crate::common;
use crate::net_common;

use common::*;
use mt_agent::replication::frame::{Frame, TagKind};
use mt_agent::replication::journal::clock::{Clock, FakeClock};
use mt_agent::replication::journal::io::Fs;
use mt_agent::replication::journal::sim::SimFs;
use mt_agent::replication::journal::{PointKind, PointSelector};
use std::sync::Arc;
use testkit::Rng;

fn tag_of(
    j: &mt_agent::replication::journal::GroupJournal,
    now: mt_agent::replication::journal::clock::Timestamp,
    kind: TagKind,
) -> Frame {
    Frame::Tag {
        lsn: j.next_lsn(),
        source_time: now,
        kind,
        name: "resync".into(),
    }
}

/// The tag a resync ends with.
fn closing(
    j: &mt_agent::replication::journal::GroupJournal,
    now: mt_agent::replication::journal::clock::Timestamp,
) -> Frame {
    tag_of(j, now, TagKind::ResyncEnd)
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
    j.apply_frame(tag_of(&j, clock.now(), TagKind::Crash))
        .unwrap();
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

    // Neither an ordinary tag nor an application-consistent one ends it.
    for kind in [TagKind::Crash, TagKind::App] {
        let e = j
            .apply_frame(tag_of(&j, clock.now(), kind))
            .unwrap_err()
            .to_string();
        assert!(e.contains("has not reached its closing tag"), "{e}");
    }
    assert_eq!(j.points(), &before[..]);

    // The closing tag ends it: latest is a point again and the targets equal the model.
    j.apply_frame(closing(&j, clock.now())).unwrap();
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
    j.apply_frame(closing(&j, clock.now())).unwrap();
    check_targets(&fs, &j, &model, "first copy");
}

/// A recorded stream of group g over the disks `disks` (name, size): a start frame, then `frames`.
fn recorded(rig: &net_common::Rig, file: &str, disks: &[(&str, u64)], frames: &[Frame]) -> String {
    let mut bytes = mt_agent::replication::frame::encode(&Frame::Start {
        group: "g".into(),
        disks: disks.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
    });
    for f in frames {
        bytes.extend(mt_agent::replication::frame::encode(f));
    }
    let path = rig.path(file);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[test]
fn mid_resync_a_recorded_stream_with_a_foreign_tag_is_refused_and_only_the_closing_tag_ends_it() {
    use mt_agent::replication::journal::clock::SystemClock;
    use mt_agent::replication::journal::Lsn;
    use net_common::*;
    const D0: u64 = 1 << 20;
    const D1: u64 = 512 << 10;
    let disks = [("d0", D0), ("d1", D1)];
    let mut rig = Rig::new("resync-foreign-tag");
    let mut rng = Rng::new(0x5eed_0015);
    let mut src = vec![
        random_file(&rig.path("src-d0.img"), D0, &mut rng),
        random_file(&rig.path("src-d1.img"), D1, &mut rng),
    ];
    let sources = [
        format!("d0={}", rig.path("src-d0.img").display()),
        format!("d1={}", rig.path("src-d1.img").display()),
    ];
    rig.create_group("g", &disks);
    rig.start_server();
    let pass = rig.path("passphrase").display().to_string();
    json(&rig.send(
        "sender",
        &[
            "g",
            "--full",
            "--passphrase-file",
            &pass,
            "--disk",
            &sources[0],
            "--disk",
            &sources[1],
        ],
    ));
    let points = |rig: &Rig| json(&rig.mt(&["points", "g", "--json"]));
    let targets = |rig: &Rig| {
        ["d0", "d1"]
            .map(|d| std::fs::read(rig.target(d)).unwrap())
            .to_vec()
    };
    assert!(
        targets(&rig) == src,
        "the full copy differs from the sources"
    );
    let after_full = points(&rig);
    assert_eq!(after_full["resync_since_lsn"], serde_json::Value::Null);

    // The sources change; a resync of them stops halfway: its writes (the first half of d0,
    // where a quarter of the blocks changed) reach the master target, its closing tag never does.
    change_blocks(&rig.path("src-d0.img"), &mut src[0], 0.25, &mut rng);
    change_blocks(&rig.path("src-d1.img"), &mut src[1], 0.25, &mut rng);
    let now = SystemClock.now();
    let half: Vec<Frame> = (0..4u64)
        .map(|i| Frame::Write {
            lsn: Lsn(i + 1),
            source_time: now,
            disk: 0,
            offset: i * (128 << 10),
            data: src[0][(i * (128 << 10)) as usize..((i + 1) * (128 << 10)) as usize].to_vec(),
            resync: true,
        })
        .collect();
    let half = recorded(&rig, "half-resync.mtfr", &disks, &half);
    json(&rig.send("sender", &["g", "--stream", &half]));
    let mid = points(&rig);
    let begun = mid["resync_since_lsn"].as_u64().expect("a resync is open");
    let tip = mid["latest"]["lsn"].as_u64().unwrap();
    assert_eq!(begun, after_full["latest"]["lsn"].as_u64().unwrap() + 1);
    let latest_refused = |rig: &Rig| {
        let out = rig.mt(&[
            "recover",
            "g",
            "--point",
            "latest",
            "--to",
            rig.path("latest").to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success()
                && err.contains(&format!("in the middle of a resync begun at LSN {begun}")),
            "recover --point latest mid-resync: {err}"
        );
    };
    latest_refused(&rig);

    // The hostile stream: a crash tag first, then a change-stream write.
    let before = (rig.journal_fingerprint("g"), targets(&rig));
    let hostile = recorded(
        &rig,
        "hostile.mtfr",
        &disks,
        &[
            Frame::Tag {
                lsn: Lsn(1),
                source_time: now,
                kind: TagKind::Crash,
                name: "D-hostile".into(),
            },
            Frame::Write {
                lsn: Lsn(2),
                source_time: now,
                disk: 1,
                offset: 0,
                data: vec![0xd5; 4096],
                resync: false,
            },
        ],
    );
    let out = rig.send("sender", &["g", "--stream", &hostile]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the hostile stream was accepted");
    for want in [
        format!("LSN {}: tag \"D-hostile\"", tip + 1),
        format!("begun at LSN {begun} has not reached its closing tag"),
        "finish the resync first (run mt-agent send --delta, or --full, again)".to_string(),
    ] {
        assert!(err.contains(&want), "the refusal lacks {want:?}: {err}");
    }
    assert!(
        (rig.journal_fingerprint("g"), targets(&rig)) == before,
        "the refused stream changed the journal or the targets"
    );
    let now_points = points(&rig);
    assert!(
        now_points["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "D-hostile"),
        "{now_points}"
    );
    assert_eq!(now_points["resync_since_lsn"].as_u64(), Some(begun));
    assert_eq!(now_points["latest"]["lsn"].as_u64(), Some(tip));
    latest_refused(&rig);

    // No recorded stream carries a closing tag: the sender refuses one before sending it.
    let forged = recorded(
        &rig,
        "forged.mtfr",
        &disks,
        &[Frame::Tag {
            lsn: Lsn(1),
            source_time: now,
            kind: TagKind::ResyncEnd,
            name: "resync".into(),
        }],
    );
    let out = rig.send("sender", &["g", "--stream", &forged]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("a resync's closing tag; only the resync of mt-agent send --full or --delta sends one"),
        "{err}"
    );
    assert!((rig.journal_fingerprint("g"), targets(&rig)) == before);
    latest_refused(&rig);

    // The delta finishes the resync: its closing tag ends it, the targets equal the sources and
    // "latest" is a recovery point again.
    json(&rig.send(
        "sender",
        &["g", "--delta", "--disk", &sources[0], "--disk", &sources[1]],
    ));
    assert!(
        targets(&rig) == src,
        "the targets differ from the sources after the delta"
    );
    let done = points(&rig);
    assert_eq!(done["resync_since_lsn"], serde_json::Value::Null, "{done}");
    let last = done["points"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["name"], "resync", "{done}");
    assert_eq!(last["lsn"], done["latest"]["lsn"], "{done}");
    let out_dir = rig.path("latest");
    rig.mt_ok(&[
        "recover",
        "g",
        "--point",
        "latest",
        "--to",
        out_dir.to_str().unwrap(),
    ]);
    for (i, data) in src.iter().enumerate() {
        let got = std::fs::read(out_dir.join(format!("d{i}.img"))).unwrap();
        assert!(
            got == *data,
            "d{i} recovered at latest differs from the source"
        );
    }
}
