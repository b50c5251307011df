//! The master target's clock against a sender's wrong one, with the real binaries: a recorded
//! stream 25 h slow keeps its points (retention runs on receive times) and `status --json`
//! shows the skew; frames 25 h fast are refused at the default `--max-clock-skew`, naming the
//! group, the frame, both times and the limit, and nothing of them is written; a serve with the
//! limit raised takes them, and `status` shows that skew too.

use crate::net_common;
use mt_agent::replication::frame::{encode, Frame, TagKind, BLOCK_SIZE};
use mt_agent::replication::journal::clock::{Clock, SystemClock, Timestamp};
use mt_agent::replication::journal::Lsn;
use net_common::*;

const SIZE: u64 = 1 << 20;
const HOUR: i64 = 3600;

/// `writes` one-block writes from LSN `first` with source times from `t` a second apart, then a
/// crash tag `name`; `disk` changes as they do.
fn frames(
    first: u64,
    writes: u64,
    t: Timestamp,
    name: &str,
    disk: &mut [u8],
    rng: &mut Rng,
) -> Vec<Frame> {
    let mut out = Vec::new();
    for i in 0..writes {
        let off = rng.below(SIZE / BLOCK_SIZE) * BLOCK_SIZE;
        let mut data = vec![0u8; BLOCK_SIZE as usize];
        rng.fill(&mut data);
        disk[off as usize..(off + BLOCK_SIZE) as usize].copy_from_slice(&data);
        out.push(Frame::Write {
            lsn: Lsn(first + i),
            source_time: t.plus_secs(i as i64),
            disk: 0,
            offset: off,
            data,
            resync: false,
        });
    }
    out.push(Frame::Tag {
        lsn: Lsn(first + writes),
        source_time: t.plus_secs(writes as i64),
        kind: TagKind::Crash,
        name: name.into(),
    });
    out
}

fn write_stream(rig: &Rig, name: &str, frames: &[Frame]) -> String {
    let mut all = vec![Frame::Start {
        group: "g".into(),
        disks: vec![("d0".into(), SIZE)],
    }];
    all.extend_from_slice(frames);
    let path = rig.path(name);
    std::fs::write(&path, all.iter().flat_map(encode).collect::<Vec<u8>>()).unwrap();
    path.display().to_string()
}

fn group_status(rig: &Rig) -> serde_json::Value {
    let st: serde_json::Value = serde_json::from_str(&rig.mt_ok(&["status", "--json"])).unwrap();
    st["groups"][0].clone()
}

fn point_names(rig: &Rig) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&rig.mt_ok(&["points", "g", "--json"])).unwrap();
    v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(p["received_time"].is_string(), "{p}");
            p["name"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn a_slow_sender_keeps_its_points_and_a_fast_one_is_refused_unless_the_limit_allows() {
    let mut rig = Rig::new("clock-skew");
    let mut rng = Rng::new(0xc10c);
    rig.create_group("g", &[("d0", SIZE)]);
    rig.start_server();
    rig.enrol("sender");
    let now = Timestamp::from_secs(SystemClock.now().0 / 1_000_000);
    let mut disk = vec![0u8; SIZE as usize];

    // 25 h slow: taken, its point kept (the window is the master target's last 24 h).
    let slow = frames(
        1,
        10,
        now.plus_secs(-25 * HOUR),
        "slow",
        &mut disk,
        &mut rng,
    );
    let slow_disk = disk.clone();
    let path = write_stream(&rig, "slow.mtfr", &slow);
    json(&rig.send("sender", &["g", "--stream", &path]));
    assert_eq!(point_names(&rig), ["slow"]);
    let g = group_status(&rig);
    let skew = g["skew_seconds"].as_i64().unwrap();
    assert!((skew + 25 * HOUR).abs() <= 120, "skew {skew}: {g}");
    assert!(g["rpo_seconds"].as_i64().unwrap() <= 120, "{g}");
    assert!(g["clock_warnings"].to_string().contains("behind"), "{g}");
    let text = rig.mt_ok(&["status"]);
    assert!(text.contains(&format!("clock skew {skew:+} s")), "{text}");

    // Then 25 h fast: refused at the default limit; nothing of it is written.
    let fast_at = Timestamp::from_secs(SystemClock.now().0 / 1_000_000).plus_secs(25 * HOUR);
    // A stream of its own: the sender places a stream's frames after what the group holds,
    // so its first frame is the group's LSN 12.
    let fast = frames(1, 10, fast_at, "fast", &mut disk, &mut rng);
    let path = write_stream(&rig, "fast.mtfr", &fast);
    let before = rig.journal_fingerprint("g");
    let out = rig.send("sender", &["g", "--stream", &path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a fast stream was taken:\n{stderr}");
    for want in [
        "group g".to_string(),
        "LSN 12".to_string(),
        format!("source time {fast_at:#}"),
        "ahead of the master target's clock (".to_string(),
        "at most 300 s ahead".to_string(),
    ] {
        assert!(
            stderr.contains(&want),
            "{want:?} missing:\n{stderr}\n{}",
            rig.log()
        );
        let log = rig.log_once(&want);
        assert!(log.contains(&want), "{want:?} not logged:\n{log}");
    }
    assert_eq!(rig.journal_fingerprint("g"), before);
    assert!(std::fs::read(rig.target("d0")).unwrap() == slow_disk);
    assert_eq!(group_status(&rig)["latest_lsn"], 11);

    // A serve whose limit allows 26 h takes it; status shows the new skew.
    rig.kill_server();
    rig.serve_args = vec!["--max-clock-skew".into(), "26h".into()];
    rig.start_server();
    json(&rig.send("sender", &["g", "--stream", &path]));
    assert!(std::fs::read(rig.target("d0")).unwrap() == disk);
    assert_eq!(point_names(&rig), ["slow", "fast"]);
    let g = group_status(&rig);
    assert_eq!(g["latest_lsn"], 22);
    let skew = g["skew_seconds"].as_i64().unwrap();
    assert!((skew - 25 * HOUR).abs() <= 120, "skew {skew}: {g}");
    assert!(g["rpo_seconds"].as_i64().unwrap() >= 0, "{g}");
    assert_eq!(g["rpo_exceeded"], false, "{g}");
    // The source time still selects: the slow point by its own (source) time.
    let slow_time = format!("{:#}", now.plus_secs(-25 * HOUR + 10));
    let out_dir = rig.path("out-slow");
    rig.mt_ok(&[
        "recover",
        "g",
        "--point",
        &slow_time,
        "--to",
        out_dir.to_str().unwrap(),
    ]);
    assert!(std::fs::read(out_dir.join("d0.img")).unwrap() == slow_disk);
}
