//! A full retention volume pauses a session instead of ending it: the master target withholds
//! credit, records a Stall (so `status` says "stalled" and why) and tells the sender, which says
//! it waits; when pruning another group frees room, credit resumes and the stream completes with
//! every point. The journals are on the real file system (the rig's `ret/`), under a budget.

use crate::net_common;
use mt_agent::replication::frame::{Frame, FrameWriter, TagKind, BLOCK_SIZE};
use mt_agent::replication::journal::clock::{Clock, FakeClock, SystemClock, Timestamp};
use mt_agent::replication::journal::Lsn;
use net_common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SIZE: u64 = 64 << 20;
const MIB: usize = 1 << 20;

/// A stream for `group` (one disk `disk` of SIZE): a crash tag, then `mib` 1 MiB writes in order
/// from the start of the disk, then a closing tag; source times at `t`. Returns the disk as
/// the stream leaves it.
fn stream(
    path: &Path,
    group: &str,
    disk_name: &str,
    mib: usize,
    t: Timestamp,
    rng: &mut Rng,
) -> Vec<u8> {
    let mut disk = vec![0u8; SIZE as usize];
    let mut w = FrameWriter::new(std::io::BufWriter::new(
        std::fs::File::create(path).unwrap(),
    ));
    w.write(&Frame::Start {
        group: group.into(),
        disks: vec![(disk_name.into(), SIZE)],
    })
    .unwrap();
    let tag = |lsn: u64, name: &str| Frame::Tag {
        lsn: Lsn(lsn),
        source_time: t,
        kind: TagKind::Crash,
        name: name.into(),
    };
    w.write(&tag(1, "before")).unwrap();
    for i in 0..mib {
        let at = (i * MIB) % SIZE as usize;
        rng.fill(&mut disk[at..at + MIB]);
        w.write(&Frame::Write {
            lsn: Lsn(2 + i as u64),
            source_time: t,
            disk: 0,
            offset: at as u64,
            data: disk[at..at + MIB].to_vec(),
            resync: false,
        })
        .unwrap();
    }
    w.write(&tag(2 + mib as u64, "after")).unwrap();
    use std::io::Write;
    w.into_inner().flush().unwrap();
    assert_eq!(BLOCK_SIZE as usize * 256, MIB);
    disk
}

fn status(rig: &Rig) -> serde_json::Value {
    serde_json::from_str(&rig.mt_ok(&["status", "--json"])).unwrap()
}

fn group_state(st: &serde_json::Value, group: &str) -> (String, u64) {
    let g = st["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == group)
        .unwrap();
    (
        g["state"].as_str().unwrap().to_owned(),
        g["group_bytes"].as_u64().unwrap(),
    )
}

/// Applies the recorded stream `path` to `group` in the rig's journals as a master target whose
/// clock said `at` (retention runs on receive times, so this is how a test gets old points).
fn apply_received_at(rig: &Rig, group: &str, path: &Path, at: Timestamp) {
    let vol = mt_agent::replication::journal::RetentionVolume {
        fs: std::sync::Arc::new(mt_agent::replication::journal::io::RealFs),
        clock: std::sync::Arc::new(FakeClock::new(at)),
        root: camino::Utf8PathBuf::from_path_buf(rig.path("ret")).unwrap(),
        policy: crate::common::policy(),
        budget: None,
        batch_bytes: mt_agent::replication::journal::DEFAULT_BATCH_BYTES,
    };
    let mut j = vol.open_group(group).unwrap();
    let from = camino::Utf8PathBuf::from_path_buf(path.to_owned()).unwrap();
    let applied = mt_agent::replication::apply::apply_recorded(&mut j, &from).unwrap();
    assert!(applied.stopped.is_none(), "{:?}", applied.stopped);
}

/// A rig whose group "g" is stalled mid-stream for room: group "old" holds 64 MiB of undo for
/// points received so long ago that they leave the 24-hour window 21 s after the start (so
/// `prune old` frees it then),
/// and the budget leaves g 16 MiB beyond the reserve. Returns the rig, the running sender, when
/// old's points are prunable and what g's disk must hold at the end.
fn stalled(name: &str) -> (Rig, std::process::Child, Instant, Vec<u8>) {
    let mut rig = Rig::new(name);
    let mut rng = Rng::new(0x400f);
    rig.create_group("old", &[("o0", SIZE)]);
    rig.create_group("g", &[("d0", SIZE)]);
    let window = 24 * 3600;
    let old_time = Timestamp::from_secs(SystemClock.now().0 / 1_000_000).plus_secs(20 - window);
    let aged_at = Instant::now() + Duration::from_secs(21);
    let old = rig.path("old.stream");
    stream(&old, "old", "o0", 128, old_time, &mut rng);
    apply_received_at(&rig, "old", &old, old_time);
    let used = status(&rig)["used_bytes"].as_u64().unwrap();
    let (_, old_bytes) = group_state(&status(&rig), "old");
    assert!(old_bytes >= 64 << 20, "old keeps {old_bytes} bytes");
    // Room for the reserve (96 MiB with one session) and 16 MiB more.
    let budget = used + (96 << 20) + (16 << 20);
    rig.serve_args = vec!["--retention-budget".into(), budget.to_string()];
    rig.start_server();
    rig.enrol("sender");
    let now = Timestamp::from_secs(SystemClock.now().0 / 1_000_000);
    let g_stream = rig.path("g.stream");
    let want = stream(&g_stream, "g", "d0", 64, now, &mut rng);
    let sender = Command::new(BIN)
        .args(["send", "g", "--json", "--to", &rig.addr, "--state"])
        .arg(rig.path("sender"))
        .arg("--stream")
        .arg(&g_stream)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let (state, _) = group_state(&status(&rig), "g");
        if state == "stalled" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "group g never stalled:\n{}",
            rig.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (rig, sender, aged_at, want)
}

#[test]
fn a_full_retention_volume_pauses_the_session_until_a_prune_frees_room() {
    let (rig, mut sender, aged_at, want) = stalled("room");
    let stalled_at = Instant::now();
    let st = status(&rig);
    let reasons = st.to_string();
    assert!(reasons.contains("retention volume full"), "{reasons}");
    assert!(rig.log().contains("credit withheld"), "{}", rig.log());
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        sender.try_wait().unwrap().is_none(),
        "the sender ended instead of waiting:\n{}",
        rig.log()
    );

    // The operator's prune of the aged group frees the room; the session goes on by itself.
    // Long enough for old's points to age, and for the sender's 10 s "still waiting" line.
    let until = aged_at.max(stalled_at + Duration::from_secs(11));
    if let Some(wait) = until.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let pruned = rig.mt_ok(&["prune", "old"]);
    assert!(pruned.contains("pruned 2 points"), "{pruned}");
    let out = sender.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the stalled send did not complete:\n{stderr}\n{}",
        rig.log()
    );
    assert!(stderr.contains("waiting:"), "{stderr}");
    assert!(stderr.contains("credit resumes"), "{stderr}");
    assert!(stderr.contains("still withholds credit"), "{stderr}");
    assert_eq!(json(&out)["reconnects"], 0, "{stderr}");
    assert!(std::fs::read(rig.target("d0")).unwrap() == want);
    let (state, _) = group_state(&status(&rig), "g");
    assert_eq!(state, "ok", "{}", status(&rig));
    let points = rig.mt_ok(&["points", "g"]);
    assert!(
        points.contains("before") && points.contains("after"),
        "{points}"
    );
    rig.mt_ok(&["verify", "g"]);
}

#[test]
fn a_stalled_session_whose_sender_dies_ends_and_releases_its_group() {
    let (rig, mut sender, _, _) = stalled("room-dies");
    sender.kill().unwrap();
    sender.wait().unwrap();
    // The wait for room ends with the connection; the group is free for the next session
    // (which a prune of g itself could not give, it has no old points).
    let t0 = Instant::now();
    while !rig
        .log()
        .contains("the session ended while it waited for room")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the stalled session outlived its sender:\n{}",
            rig.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    rig.mt_ok(&["verify", "g"]);
}
