//! Kill -9 the sender and the master target at random moments while a tagged change stream
//! flows (at least 50 kills), restart whichever died, and check the end state: the targets equal
//! the source, every tag is a recovery point exactly once, the journal's LSN counts every frame
//! exactly once (nothing lost, nothing applied twice), and recovery at sampled tags equals the
//! source at that tag.

use crate::net_common;
use mt_agent::replication::frame::{encode, Frame, TagKind};
use mt_agent::replication::journal::clock::{Clock, SystemClock, Timestamp};
use mt_agent::replication::journal::Lsn;
use net_common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SIZES: [u64; 2] = [2 << 20, 1 << 20];
const TAGS_PER_STREAM: u64 = 4;
const WRITES_PER_TAG: u64 = 8;
const KILLS: u32 = 50;

/// Writes stream file number `k` (its own LSNs from 1, as a recorder would) and applies it to
/// `src`; returns the tags it holds with the source images at each sampled one.
fn make_stream(
    rig: &Rig,
    k: u64,
    src: &mut [Vec<u8>],
    rng: &mut Rng,
    base: i64,
    samples: &mut Vec<(String, Vec<Vec<u8>>)>,
) -> std::path::PathBuf {
    let mut frames = vec![Frame::Start {
        group: "g".into(),
        disks: vec![("d0".into(), SIZES[0]), ("d1".into(), SIZES[1])],
    }];
    let mut lsn = 0;
    for t in 0..TAGS_PER_STREAM {
        let tag = k * TAGS_PER_STREAM + t;
        let time = |s: u64| Timestamp(base + (tag * 2 + s) as i64 * 1_000_000);
        for _ in 0..WRITES_PER_TAG {
            let disk = rng.below(2) as usize;
            let len = (1 + rng.below(4)) * 4096;
            let off = rng.below((SIZES[disk] - len) / 4096) * 4096;
            let mut data = vec![0u8; len as usize];
            rng.fill(&mut data);
            src[disk][off as usize..(off + len) as usize].copy_from_slice(&data);
            lsn += 1;
            frames.push(Frame::Write {
                lsn: Lsn(lsn),
                source_time: time(0),
                disk: disk as u32,
                offset: off,
                data,
                resync: false,
            });
        }
        lsn += 1;
        let name = format!("tag-{tag}");
        frames.push(Frame::Tag {
            lsn: Lsn(lsn),
            source_time: time(1),
            kind: if tag.is_multiple_of(3) {
                TagKind::App
            } else {
                TagKind::Crash
            },
            name: name.clone(),
        });
        if tag.is_multiple_of(7) {
            samples.push((name, src.to_vec()));
        }
    }
    let path = rig.path(&format!("stream-{k}.mtfr"));
    std::fs::write(&path, frames.iter().flat_map(encode).collect::<Vec<u8>>()).unwrap();
    path
}

fn spawn_sender(rig: &Rig, stream: &std::path::Path) -> Child {
    Command::new(BIN)
        .args([
            "send",
            "g",
            "--to",
            &rig.addr,
            "--retry-for",
            "120",
            "--state",
        ])
        .arg(rig.path("sender"))
        .arg("--stream")
        .arg(stream)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn killing_sender_and_receiver_at_random_moments_loses_nothing_and_applies_nothing_twice() {
    let mut rig = Rig::new("kill");
    let mut rng = Rng::new(0xdead_beef_0006);
    rig.create_group("g", &[("d0", SIZES[0]), ("d1", SIZES[1])]);
    rig.start_server();
    rig.enrol("sender");

    // An hour behind the master target: the stream's times grow 2 s a tag, and a source time
    // more than --max-clock-skew ahead of the master target is refused.
    let base = (SystemClock.now().0 / 1_000_000 - 3600) * 1_000_000;
    let mut src: Vec<Vec<u8>> = SIZES.iter().map(|s| vec![0u8; *s as usize]).collect();
    let mut samples = Vec::new();
    let (mut kills, mut streams) = (0u32, 0u64);
    let mut sender: Option<Child> = None;
    loop {
        if rig.server.is_none() {
            rig.start_server();
        }
        if sender.is_none() {
            if kills >= KILLS {
                break;
            }
            let path = make_stream(&rig, streams, &mut src, &mut rng, base, &mut samples);
            streams += 1;
            sender = Some(spawn_sender(&rig, &path));
        }
        std::thread::sleep(Duration::from_millis(rng.below(40)));
        let child = sender.as_mut().unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            assert!(
                status.success(),
                "send failed: {err}\nserver log:\n{}",
                rig.log()
            );
            sender = None;
            continue;
        }
        kills += 1;
        if rng.below(3) == 0 {
            rig.kill_server();
        } else {
            // Restart the same stream: the sender resumes from the acknowledged LSN.
            child.kill().unwrap();
            child.wait().unwrap();
            let k = streams - 1;
            *child = spawn_sender(&rig, &rig.path(&format!("stream-{k}.mtfr")));
        }
    }

    let total_frames = streams * TAGS_PER_STREAM * (WRITES_PER_TAG + 1);
    let points: serde_json::Value =
        serde_json::from_str(&rig.mt_ok(&["points", "g", "--json"])).unwrap();
    assert_eq!(
        points["latest"]["lsn"].as_u64().unwrap(),
        total_frames,
        "every frame of {streams} streams acknowledged exactly once"
    );
    let list = points["points"].as_array().unwrap();
    for tag in 0..streams * TAGS_PER_STREAM {
        let n = list
            .iter()
            .filter(|p| p["name"] == format!("tag-{tag}").as_str())
            .count();
        assert_eq!(n, 1, "tag-{tag} is a recovery point {n} times");
    }
    for (name, disk) in ["d0", "d1"].iter().zip(&src) {
        assert!(
            std::fs::read(rig.target(name)).unwrap() == *disk,
            "{name} differs from the source"
        );
    }
    for (name, images) in &samples {
        let p = list.iter().find(|p| p["name"] == name.as_str()).unwrap();
        let out = rig.path(&format!("rec-{name}"));
        rig.mt_ok(&[
            "recover",
            "g",
            "--point",
            p["source_time"].as_str().unwrap(),
            "--to",
            out.to_str().unwrap(),
        ]);
        for (disk, data) in ["d0", "d1"].iter().zip(images) {
            let got = std::fs::read(out.join(format!("{disk}.img"))).unwrap();
            assert!(got == *data, "{disk} recovered at {name} differs");
        }
        std::fs::remove_dir_all(out).unwrap();
    }
    eprintln!(
        "{kills} kills over {streams} streams; {} points",
        list.len()
    );
}
