//! The `mt-agent` binary as an operator uses it: create a group, apply recorded change streams,
//! list points, recover (into a directory and in place), status (human and JSON), bad streams
//! refused with the frame named, `kill -9` of `mt-agent apply` in the middle of a stream, and the
//! times `points` shows (whole seconds in the table, microseconds in JSON) accepted by `recover`.

use crate::common;

use camino::{Utf8Path, Utf8PathBuf};
use common::{agent_config, write_config, Model, MT_AGENT};
use mt_agent::replication::frame::{Frame, FrameReader, FrameWriter, TagKind, BLOCK_SIZE};
use mt_agent::replication::journal::clock::{Clock, FakeClock, SystemClock, Timestamp};
use mt_agent::replication::journal::{Lsn, RetentionVolume, DEFAULT_BATCH_BYTES};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use testkit::Rng;

struct Env {
    dir: Utf8PathBuf,
}

impl Env {
    fn new(name: &str) -> Env {
        let dir = testkit::scratch(&format!("cli-{name}"));
        std::fs::create_dir_all(dir.join("retention")).unwrap();
        write_config(&dir, &agent_config());
        Env { dir }
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(MT_AGENT);
        c.args(args)
            .env("MT_AGENT_CONFIG", self.dir.join("agent.toml"))
            .env("MT_AGENT_RETENTION", self.dir.join("retention"))
            .env_remove("MT_AGENT_RETENTION_BUDGET");
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "mt-agent {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
    fn p(&self, rel: &str) -> Utf8PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A recorded stream for group `g` (two disks of `cap` bytes): `n` frames, one every 10 s of
/// source time starting at `start`, tags at the given frame numbers.
fn record(
    path: &Utf8Path,
    cap: u64,
    n: u64,
    start: Timestamp,
    tags: &[(u64, TagKind)],
    seed: u64,
    max_blocks: u64,
) -> Model {
    record_every(path, cap, n, start, 10_000_000, tags, seed, max_blocks)
}

/// [`record`] with frames `step_micros` of source time apart.
#[allow(clippy::too_many_arguments)]
fn record_every(
    path: &Utf8Path,
    cap: u64,
    n: u64,
    start: Timestamp,
    step_micros: i64,
    tags: &[(u64, TagKind)],
    seed: u64,
    max_blocks: u64,
) -> Model {
    let mut rng = Rng::new(seed);
    let mut model = Model {
        initial: vec![vec![0u8; cap as usize]; 2],
        log: Vec::new(),
    };
    let f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = FrameWriter::new(f);
    w.write(&Frame::Start {
        group: "g".into(),
        disks: vec![("d0".into(), cap), ("d1".into(), cap)],
    })
    .unwrap();
    let blocks = cap / BLOCK_SIZE;
    for i in 1..=n {
        let lsn = Lsn(i);
        let t = Timestamp(start.0 + step_micros * i as i64);
        if let Some((_, kind)) = tags.iter().find(|(at, _)| *at == i) {
            w.write(&Frame::Tag {
                lsn,
                source_time: t,
                kind: *kind,
                name: format!("tag-{i}"),
            })
            .unwrap();
            continue;
        }
        let disk = rng.below(2) as u32;
        let nb = 1 + rng.below(max_blocks);
        let b = rng.below(blocks - nb + 1);
        let mut data = vec![0u8; (nb * BLOCK_SIZE) as usize];
        rng.fill(&mut data);
        model.log.push((lsn, disk, b * BLOCK_SIZE, data.clone()));
        w.write(&Frame::Write {
            lsn,
            source_time: t,
            disk,
            offset: b * BLOCK_SIZE,
            data,
            resync: false,
        })
        .unwrap();
    }
    use std::io::Write;
    w.into_inner().flush().unwrap();
    model
}

fn points_json(env: &Env) -> serde_json::Value {
    serde_json::from_str(&env.ok(&["points", "g", "--json"])).unwrap()
}

fn check_dir(dir: &Utf8Path, model: &Model, lsn: Lsn) {
    let want = model.state_at(lsn);
    for (i, d) in ["d0", "d1"].iter().enumerate() {
        let got = std::fs::read(dir.join(format!("{d}.img"))).unwrap();
        assert!(
            got == want[i],
            "{dir}/{d}.img differs from the source at LSN {lsn}"
        );
    }
}

fn check_targets(env: &Env, model: &Model, lsn: Lsn) {
    let want = model.state_at(lsn);
    for (i, d) in ["d0", "d1"].iter().enumerate() {
        let got = std::fs::read(env.p(&format!("{d}.img"))).unwrap();
        assert!(
            got == want[i],
            "target {d} differs from the source at LSN {lsn}"
        );
    }
}

fn create_group(env: &Env, cap: u64) {
    let d0 = format!("d0={}", env.p("d0.img"));
    let d1 = format!("d1={}", env.p("d1.img"));
    env.ok(&[
        "group",
        "create",
        "g",
        "--disk",
        &d0,
        "--disk",
        &d1,
        "--size",
        &cap.to_string(),
    ]);
}

/// Applies `stream` to group g as a master target that received each frame a second after its
/// source time would have: retention, automatic points and the RPO run on the receive time, and
/// `mt-agent apply` would receive a recorded stream all at once, now.
fn apply_as_received(env: &Env, stream: &Utf8Path) -> Lsn {
    let clock = Arc::new(FakeClock::new(Timestamp(0)));
    let vol = RetentionVolume {
        fs: Arc::new(mt_agent::replication::journal::io::RealFs),
        clock: clock.clone(),
        root: env.p("retention"),
        policy: common::policy(),
        budget: None,
        batch_bytes: DEFAULT_BATCH_BYTES,
    };
    let mut j = vol.open_group("g").unwrap();
    let mut r = FrameReader::new(std::io::BufReader::new(
        std::fs::File::open(stream).unwrap(),
    ));
    while let Some(f) = r.next_frame().unwrap() {
        if let Frame::Write { source_time, .. } | Frame::Tag { source_time, .. } = &f {
            clock.set(source_time.plus_secs(1));
        }
        j.apply_frame(f).unwrap();
    }
    j.commit().unwrap()
}

fn lsn_of(v: &serde_json::Value) -> Lsn {
    Lsn(v["lsn"].as_u64().unwrap())
}

#[test]
fn apply_points_recover_and_status_through_the_cli() {
    let env = Env::new("flow");
    let cap = 1 << 20;
    create_group(&env, cap);
    // 80 minutes of changes received until 20 minutes ago: RPO and app-consistent age both
    // exceeded.
    let now = Timestamp::from_secs(SystemClock.now().0 / 1_000_000);
    let start = now.plus_secs(-100 * 60);
    let tags = [
        (60, TagKind::Crash),
        (120, TagKind::App),
        (300, TagKind::Crash),
    ];
    let stream = env.p("stream.mtf");
    let model = record(&stream, cap, 480, start, &tags, 1, 4);
    assert_eq!(apply_as_received(&env, &stream), Lsn(480));

    let v = points_json(&env);
    let points = v["points"].as_array().unwrap().clone();
    // 80 minutes of changes: a point at least every 5 minutes (tags restart the count).
    assert!(points.len() >= 15, "{points:?}");
    let times: Vec<Timestamp> = points
        .iter()
        .map(|p| Timestamp::parse_rfc3339(p["source_time"].as_str().unwrap()).unwrap())
        .collect();
    for w in times.windows(2) {
        assert!(
            w[1].secs_since(w[0]) <= 5 * 60,
            "points more than 5 minutes apart: {points:?}"
        );
    }
    assert!(points
        .iter()
        .any(|p| p["kind"] == "app" && p["name"] == "tag-120"));
    check_targets(&env, &model, Lsn(480));

    // Every point, chosen by its time, recovers into new images identical to the source.
    for (i, p) in points.iter().enumerate() {
        let out_dir = env.p(&format!("out/{i}"));
        let t = p["source_time"].as_str().unwrap();
        env.ok(&["recover", "g", "--point", t, "--to", out_dir.as_str()]);
        check_dir(&out_dir, &model, lsn_of(p));
    }
    let app_dir = env.p("out/app");
    env.ok(&[
        "recover",
        "g",
        "--point",
        "latest-app-consistent",
        "--to",
        app_dir.as_str(),
    ]);
    check_dir(&app_dir, &model, Lsn(120));
    let latest_dir = env.p("out/latest");
    env.ok(&[
        "recover",
        "g",
        "--point",
        "latest",
        "--to",
        latest_dir.as_str(),
    ]);
    check_dir(&latest_dir, &model, Lsn(480));
    check_targets(&env, &model, Lsn(480));

    let st: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let g = &st["groups"][0];
    assert_eq!(g["group"], "g");
    assert_eq!(g["latest_lsn"], 480);
    let rpo = g["rpo_seconds"].as_i64().unwrap();
    assert!((19 * 60..=22 * 60).contains(&rpo), "RPO {rpo}");
    assert_eq!(g["rpo_exceeded"], true);
    assert_eq!(g["rpo_threshold_seconds"], 15 * 60);
    assert_eq!(g["app_consistent_overdue"], true);
    assert_eq!(g["disks"].as_array().unwrap().len(), 2);
    assert!(g["window_oldest"]["source_time"].is_string());
    let human = env.ok(&["status"]);
    assert!(
        human.contains("RPO") && human.contains("EXCEEDED") && human.contains("OVERDUE"),
        "{human}"
    );

    // In place: the targets roll back to the app-consistent point, newer points are gone.
    env.ok(&["recover", "g", "--point", "latest-app-consistent"]);
    check_targets(&env, &model, Lsn(120));
    let v = points_json(&env);
    assert_eq!(lsn_of(&v["latest"]), Lsn(120));
    assert!(v["points"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| lsn_of(p) <= Lsn(120)));
    // The source sends again from there: frames up to 120 are skipped, the rest applied.
    let out = env.ok(&["apply", "g", "--from", stream.as_str()]);
    assert!(
        out.contains("acknowledged through LSN 480") && out.contains("120 resent frames skipped"),
        "{out}"
    );
    check_targets(&env, &model, Lsn(480));
    env.ok(&["verify", "g"]);
}

/// The rows of the `points` table: (kind, source time as shown).
fn points_table(env: &Env) -> Vec<(String, String)> {
    env.ok(&["points", "g"])
        .lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[1].to_string(), cols[2].to_string())
        })
        .collect()
}

#[test]
fn every_time_points_shows_recovers_its_point_though_source_times_have_fractions() {
    let env = Env::new("subsec");
    let cap = 256 << 10;
    create_group(&env, cap);
    // A frame every 0.35 s, so every point's time falls inside a second, as a resync's do.
    let start = Timestamp::from_secs(SystemClock.now().0 / 1_000_000).plus_secs(-600);
    let stream = env.p("s.mtf");
    let tags = [
        (10, TagKind::Crash),
        (20, TagKind::App),
        (30, TagKind::Crash),
    ];
    let model = record_every(&stream, cap, 40, start, 350_000, &tags, 5, 2);
    env.ok(&["apply", "g", "--from", stream.as_str()]);

    // The table, to the second: each shown time recovers the point on its row.
    let rows = points_table(&env);
    assert_eq!(rows.len(), 4, "{rows:?}");
    let want = [("latest", 40), ("crash", 30), ("app", 20), ("crash", 10)];
    for ((kind, shown), (want_kind, lsn)) in rows.iter().zip(want) {
        assert_eq!(kind, want_kind, "{rows:?}");
        assert!(
            !shown.contains('.'),
            "the table shows whole seconds: {shown}"
        );
        let out = env.p(&format!("out/table-{lsn}"));
        let said = env.ok(&["recover", "g", "--point", shown, "--to", out.as_str()]);
        assert!(said.contains(&format!("to LSN {lsn} ")), "{shown}: {said}");
        check_dir(&out, &model, Lsn(lsn));
    }

    // JSON, to the microsecond: each time names exactly its point.
    let v = points_json(&env);
    for p in v["points"].as_array().unwrap() {
        let t = p["source_time"].as_str().unwrap();
        let micros = Timestamp::parse_rfc3339(t).unwrap().0 - start.0;
        assert_eq!(micros, 350_000 * lsn_of(p).0 as i64, "{t}");
        assert_eq!(t.len(), "2026-12-02T00:47:00.350000Z".len(), "{t}");
        let out = env.p(&format!("out/json-{}", lsn_of(p)));
        env.ok(&["recover", "g", "--point", t, "--to", out.as_str()]);
        check_dir(&out, &model, lsn_of(p));
    }

    // Before the oldest point: the refusal does not contradict itself.
    let first = Timestamp(start.0 + 350_000 * 10);
    let before = format!("{:#}", Timestamp(first.0 - 1));
    let none = env.p("out/none");
    let o = env.run(&["recover", "g", "--point", &before, "--to", none.as_str()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!("at or before {before}; the oldest is {first:#}")),
        "{err}"
    );
}

#[test]
fn bad_streams_are_refused_naming_the_frame_and_nothing_is_half_applied() {
    let env = Env::new("bad");
    let cap = 256 << 10;
    create_group(&env, cap);
    let now = Timestamp::from_secs(SystemClock.now().0 / 1_000_000);
    let good = env.p("good.mtf");
    let model = record(
        &good,
        cap,
        40,
        now.plus_secs(-600),
        &[(10, TagKind::App)],
        2,
        2,
    );
    let bytes = std::fs::read(&good).unwrap();
    // Find the byte offset of each frame.
    let mut offsets = Vec::new();
    let mut r = mt_agent::replication::frame::FrameReader::new(&bytes[..]);
    loop {
        let (_, off) = r.position();
        if r.next_frame().unwrap().is_none() {
            break;
        }
        offsets.push(off as usize);
    }
    // A flipped payload bit in frame #21 (LSN 21).
    let mut bad = bytes.clone();
    bad[offsets[21] + 60] ^= 0x10;
    let badp = env.p("bad.mtf");
    std::fs::write(&badp, &bad).unwrap();
    let o = env.run(&["apply", "g", "--from", badp.as_str()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!("frame #21 (byte {} ", offsets[21])) && err.contains("BLAKE3"),
        "{err}"
    );
    let v = points_json(&env);
    assert_eq!(
        lsn_of(&v["latest"]),
        Lsn(20),
        "the frames before the bad one are applied, none after"
    );
    check_targets(&env, &model, Lsn(20));

    // A frame claiming 4 GiB (header checksum made valid): refused before allocating.
    let mut huge = bytes[..offsets[22]].to_vec();
    let mut h = bytes[offsets[22]..offsets[22] + 48].to_vec();
    h[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let crc = crc32c::crc32c(&h[..44]);
    h[44..48].copy_from_slice(&crc.to_le_bytes());
    huge.extend_from_slice(&h);
    let hp = env.p("huge.mtf");
    std::fs::write(&hp, &huge).unwrap();
    let o = env.run(&["apply", "g", "--from", hp.as_str()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("frame #22") && err.contains("exceeds the limit"),
        "{err}"
    );
    assert_eq!(lsn_of(&points_json(&env)["latest"]), Lsn(21));

    // Out of order: frame #30 dropped, so LSN 31 follows 29.
    let mut gap = bytes[..offsets[30]].to_vec();
    gap.extend_from_slice(&bytes[offsets[31]..]);
    let gp = env.p("gap.mtf");
    std::fs::write(&gp, &gap).unwrap();
    let o = env.run(&["apply", "g", "--from", gp.as_str()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("frame #30") && err.contains("out of order"),
        "{err}"
    );
    assert_eq!(lsn_of(&points_json(&env)["latest"]), Lsn(29));

    // A stream for another group.
    let other = env.p("other.mtf");
    let mut w = FrameWriter::new(std::fs::File::create(&other).unwrap());
    w.write(&Frame::Start {
        group: "h".into(),
        disks: vec![("d0".into(), cap)],
    })
    .unwrap();
    drop(w);
    let o = env.run(&["apply", "g", "--from", other.as_str()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("the stream is for group h"));

    // The good stream completes it all.
    env.ok(&["apply", "g", "--from", good.as_str()]);
    check_targets(&env, &model, Lsn(40));
}

#[test]
fn a_full_retention_budget_stops_apply_and_status_says_why() {
    let env = Env::new("full");
    let cap = 1 << 20;
    create_group(&env, cap);
    let now = Timestamp::from_secs(SystemClock.now().0 / 1_000_000);
    let stream = env.p("s.mtf");
    let tags: Vec<_> = (1..400).step_by(25).map(|i| (i, TagKind::Crash)).collect();
    let model = record(&stream, cap, 400, now.plus_secs(-4000), &tags, 3, 8);
    let o = env.run(&[
        "apply",
        "g",
        "--from",
        stream.as_str(),
        "--retention-budget",
        "1MiB",
        "--batch",
        "64KiB",
    ]);
    assert_eq!(
        o.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("retention volume full") && err.contains("budget"),
        "{err}"
    );
    let st: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", "--json", "--retention-budget", "1MiB"])).unwrap();
    let g = &st["groups"][0];
    assert_eq!(g["state"], "stalled", "{g}");
    assert!(
        g["degraded_reasons"][0]
            .as_str()
            .unwrap()
            .contains("retention volume full")
            || g["degraded_reasons"][0]
                .as_str()
                .unwrap()
                .contains("budget")
    );
    let acked = lsn_of(&points_json(&env)["latest"]);
    assert!(acked < Lsn(400));
    check_targets(&env, &model, acked);
    // Space freed (a larger budget): the same stream resumes and completes.
    env.ok(&[
        "apply",
        "g",
        "--from",
        stream.as_str(),
        "--retention-budget",
        "64MiB",
    ]);
    check_targets(&env, &model, Lsn(400));
    let st: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    assert_eq!(st["groups"][0]["state"], "ok");
}

fn kill_campaign(kills: u64, frames: u64) {
    let env = Env::new(&format!("kill{kills}"));
    let cap = 24 << 20;
    create_group(&env, cap);
    let now = Timestamp::from_secs(SystemClock.now().0 / 1_000_000);
    let stream = env.p("s.mtf");
    let tags: Vec<_> = (50..frames)
        .step_by(150)
        .map(|i| (i, TagKind::App))
        .collect();
    // All behind the master target's clock: frames 10 s apart, and one more than
    // --max-clock-skew ahead would be refused.
    let start = now.plus_secs(-(frames as i64) * 10 - 600);
    let model = record(&stream, cap, frames, start, &tags, 4, 16);
    let mut rng = Rng::new(kills);
    let mut killed = 0;
    for _ in 0..kills {
        let mut child = env
            .cmd(&["apply", "g", "--from", stream.as_str(), "--batch", "256KiB"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20 + rng.below(200)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
        // Whatever was acknowledged is exactly on the targets, and every point is whole.
        let v = points_json(&env);
        let acked = lsn_of(&v["latest"]);
        check_targets(&env, &model, acked);
    }
    assert!(killed > 0, "apply always finished before the kill");
    env.ok(&["apply", "g", "--from", stream.as_str()]);
    check_targets(&env, &model, Lsn(frames));
    let v = points_json(&env);
    for (i, p) in v["points"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .step_by(4)
    {
        let out_dir = env.p(&format!("out/{i}"));
        let t = p["source_time"].as_str().unwrap();
        env.ok(&["recover", "g", "--point", t, "--to", out_dir.as_str()]);
        check_dir(&out_dir, &model, lsn_of(p));
        std::fs::remove_dir_all(&out_dir).unwrap();
    }
}

#[test]
fn kill_9_during_apply_loses_nothing_acknowledged() {
    kill_campaign(3, 1000);
}

#[test]
#[ignore = "slow: 25 kill -9 of mt-agent apply mid-stream; run by cargo xtask test"]
fn kill_9_during_apply_loses_nothing_acknowledged_full() {
    kill_campaign(25, 3000);
}

/// Detaches the loop device when the test ends, whatever happens.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
#[ignore = "slow: needs root and loop devices (losetup); run by cargo xtask test"]
fn block_device_targets_work_like_files() {
    let env = Env::new("blockdev");
    let cap: u64 = 8 << 20;
    testkit::require_root("loop devices");
    testkit::require_tool("losetup");
    let mut loops = Vec::new();
    for d in ["d0", "d1"] {
        let img = env.p(&format!("{d}.backing"));
        std::fs::File::create(&img).unwrap().set_len(cap).unwrap();
        let o = Command::new("losetup")
            .args(["-f", "--show", img.as_str()])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        loops.push(Loop(
            String::from_utf8(o.stdout).unwrap().trim().to_string(),
        ));
    }
    let d0 = format!("d0={}", loops[0].0);
    let d1 = format!("d1={}", loops[1].0);
    env.ok(&["group", "create", "g", "--disk", &d0, "--disk", &d1]);
    let now = Timestamp::from_secs(SystemClock.now().0 / 1_000_000);
    let stream = env.p("s.mtf");
    let model = record(
        &stream,
        cap,
        300,
        now.plus_secs(-3600),
        &[(100, TagKind::App)],
        5,
        8,
    );
    env.ok(&["apply", "g", "--from", stream.as_str()]);
    let want = model.state_at(Lsn(300));
    for (i, l) in loops.iter().enumerate() {
        assert!(std::fs::read(&l.0).unwrap() == want[i], "{} differs", l.0);
    }
    let out = env.p("out");
    env.ok(&[
        "recover",
        "g",
        "--point",
        "latest-app-consistent",
        "--to",
        out.as_str(),
    ]);
    check_dir(&out, &model, Lsn(100));
    env.ok(&["recover", "g", "--point", "latest-app-consistent"]);
    let want = model.state_at(Lsn(100));
    for (i, l) in loops.iter().enumerate() {
        assert!(
            std::fs::read(&l.0).unwrap() == want[i],
            "{} not rolled back",
            l.0
        );
    }
}

/// Bytes the file system allocated for a file (what it costs on the retention volume).
fn allocated(path: &Utf8Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn the_open_undo_log_has_space_reserved_ahead_and_a_point_gives_back_what_its_epoch_did_not_use() {
    let env = Env::new("reserve");
    let cap = 4 << 20;
    create_group(&env, cap);
    let now = Timestamp::from_secs(SystemClock.now().0 / 1_000_000);
    let tags = [
        (1, TagKind::App),
        (100, TagKind::Crash),
        (200, TagKind::Crash),
    ];
    let stream = env.p("stream.mtf");
    let model = record(&stream, cap, 260, now.plus_secs(-3600), &tags, 7, 8);
    let from = stream.as_str();
    env.ok(&["apply", "g", "--from", from]);
    check_targets(&env, &model, Lsn(260));
    let dir = env.p("retention/groups/g");
    let mut undo: Vec<Utf8PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| Utf8PathBuf::try_from(e.unwrap().path()).unwrap())
        .filter(|p| p.file_name().unwrap().starts_with("undo-"))
        .collect();
    undo.sort();
    // The epochs closed by the points at LSN 100 and 200, and the open one after 200.
    assert_eq!(undo.len(), 3, "{undo:?}");
    let open = undo.pop().unwrap();
    let size = |p: &Utf8Path| std::fs::metadata(p).unwrap().len();
    for closed in &undo {
        assert!(size(closed) > 64 << 10, "{closed}: {} bytes", size(closed));
        assert!(
            allocated(closed) <= size(closed).next_multiple_of(4096),
            "{closed} keeps {} bytes allocated for {} bytes of records",
            allocated(closed),
            size(closed)
        );
    }
    assert!(
        allocated(&open) >= size(&open) + (32 << 20),
        "{open}: {} bytes allocated for {} bytes of records: no space reserved ahead",
        allocated(&open),
        size(&open)
    );
}
