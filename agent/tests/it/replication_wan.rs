//! Replication across a bad WAN, played by `testkit::link::FaultyLink` (the kernels here have no
//! netem): a two-disk full copy at 40 ms round trip through a narrow link that takes several
//! times longer than `--retry-for`, with two resets, a black hole longer than the idle timeout,
//! a kill -9 of `serve` and a kill -9 of the sender (run again once) on the way; then a change
//! stream with tags through the same faults. The copy completes equal to the sources, `verify`
//! passes, the master target's own log shows that no session re-sent a block an earlier one had
//! acknowledged, and every point recovers exactly (against a model of the disks). And a dead
//! peer (half-open link, sender gone) releases its group: at once to the same sender, within
//! the idle timeout to another. Journals and targets are on the real file system.

use crate::net_common;
use mt_agent::replication::frame::TagKind;
use net_common::*;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use testkit::link::FaultyLink;

const D0: u64 = 48 << 20;
const D1: u64 = 32 << 20;
const IDLE: &str = "6s";
const MIB: u64 = 1 << 20;

enum Fault {
    Reset,
    BlackHole(Duration),
    KillServe,
    KillSender,
}

fn spawn_send(rig: &Rig, args: &[String]) -> Child {
    Command::new(BIN)
        .args(args)
        .env("MT_AGENT_CONFIG", &rig.config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `mt-agent ARGS` and injects each fault once the link has carried that many bytes up
/// (resends count, so the schedule always moves on). Returns the last run's output and what
/// every run printed on stderr.
fn send_through_faults(
    rig: &mut Rig,
    link: &FaultyLink,
    args: &[String],
    faults: Vec<(u64, Fault)>,
) -> (Output, String) {
    let base = link.bytes_up();
    let mut child = spawn_send(rig, args);
    let mut stderr = String::new();
    for (at, fault) in faults {
        let t0 = Instant::now();
        while link.bytes_up() - base < at {
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                panic!(
                    "the send ended ({status}) before {at} bytes went up:\n{stderr}{}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    rig.log()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "no progress to {at} bytes up:\n{}",
                rig.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        match fault {
            Fault::Reset => link.reset(),
            Fault::BlackHole(d) => {
                link.black_hole(true);
                std::thread::sleep(d);
                link.black_hole(false);
            }
            Fault::KillServe => {
                rig.kill_server();
                std::thread::sleep(Duration::from_millis(500));
                rig.start_server();
            }
            Fault::KillSender => {
                child.kill().unwrap();
                let out = child.wait_with_output().unwrap();
                stderr.push_str(&String::from_utf8_lossy(&out.stderr));
                stderr.push_str("--- killed, run again ---\n");
                child = spawn_send(rig, args);
            }
        }
    }
    let out = child.wait_with_output().unwrap();
    stderr.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the send through the faults failed:\n{stderr}\nserver log:\n{}",
        rig.log()
    );
    (out, stderr)
}

fn send_args(rig: &Rig, link: &FaultyLink, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "send",
        "g",
        "--json",
        "--to",
        &link.target(),
        "--retry-for",
        "15s",
        "--idle-timeout",
        IDLE,
        "--state",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(rig.path("sender").display().to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Every session's resync span from the master target's log, as (first, acknowledged end) in
/// bytes from the start of the group's first disk (`caps`: the disks' sizes).
fn spans(log: &str, caps: &[u64]) -> Vec<(u64, u64)> {
    let num = |s: &str| s.trim_end_matches([',', ';']).parse::<u64>().unwrap();
    let abs = |disk: u64, byte: u64| caps[..disk as usize].iter().sum::<u64>() + byte;
    let mut out: Vec<_> = log
        .lines()
        .filter_map(|l| {
            let at = l.find("resync writes from disk ")?;
            // resync writes from disk D byte X, acknowledged through disk E byte Y
            let w: Vec<&str> = l[at..].split_whitespace().collect();
            if w.get(7) != Some(&"acknowledged") {
                return None;
            }
            Some((abs(num(w[4]), num(w[6])), abs(num(w[10]), num(w[12]))))
        })
        .collect();
    out.sort();
    out
}

fn enrol_via(rig: &Rig, target: &str, state: &str) {
    let (pass, dir) = (rig.path("passphrase"), rig.path(state));
    let mut args = vec![
        "enrol",
        "--to",
        target,
        "--passphrase-file",
        pass.to_str().unwrap(),
        "--state",
        dir.to_str().unwrap(),
    ];
    let groups = rig.groups();
    for g in &groups {
        args.extend(["--group", g]);
    }
    let out = rig.mt(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_full_copy_and_a_tagged_stream_survive_resets_a_black_hole_and_both_ends_killed() {
    let mut rig = Rig::new("wan");
    let mut rng = Rng::new(0x3a9);
    rig.serve_args = vec!["--idle-timeout".into(), IDLE.into()];
    rig.create_group("g", &[("d0", D0), ("d1", D1)]);
    rig.start_server();
    let mut src = vec![
        random_file(&rig.path("src-d0.img"), D0, &mut rng),
        random_file(&rig.path("src-d1.img"), D1, &mut rng),
    ];
    let disks = [
        format!("--disk=d0={}", rig.path("src-d0.img").display()),
        format!("--disk=d1={}", rig.path("src-d1.img").display()),
    ];
    let link = FaultyLink::start(rig.addr.parse().unwrap());
    link.set_latency(Duration::from_millis(20));
    // 80 MiB at 2 MiB/s: about 40 s of copying, against a 15 s retry budget.
    link.set_bandwidth(Some(2 * MIB));
    enrol_via(&rig, &link.target(), "sender");

    let args = send_args(&rig, &link, &["--full", &disks[0], &disks[1]]);
    let (out, stderr) = send_through_faults(
        &mut rig,
        &link,
        &args,
        vec![
            (8 * MIB, Fault::Reset),
            (16 * MIB, Fault::Reset),
            (24 * MIB, Fault::BlackHole(Duration::from_secs(8))),
            (40 * MIB, Fault::KillServe),
            (56 * MIB, Fault::KillSender),
        ],
    );
    for (name, data) in ["d0", "d1"].iter().zip(&src) {
        assert!(
            std::fs::read(rig.target(name)).unwrap() == *data,
            "target {name} differs from its source after the faults\n{stderr}"
        );
    }
    rig.mt_ok(&["verify", "g"]);
    // The run after the kill resumed on its own cursor; the four faults before were reconnects.
    assert_eq!(json(&out)["reconnects"], 0, "{stderr}");
    assert!(
        stderr.matches("; reconnecting for up to 15 s").count() >= 4,
        "{stderr}"
    );
    // The master target's view: each session's resync writes begin exactly where the ones an
    // earlier session had acknowledged end (never before: nothing acknowledged travels twice;
    // never after: nothing is skipped). Only the session that serve's kill -9 cut leaves no
    // line, so one pair may show its writes in between.
    let spans = spans(&rig.log(), &[D0, D1]);
    assert!(spans.len() >= 4, "sessions: {spans:?}\n{}", rig.log());
    let mut gaps = 0;
    for w in spans.windows(2) {
        let ((_, prev_end), (next_first, _)) = (w[0], w[1]);
        assert!(
            next_first >= prev_end,
            "a session re-sent acknowledged blocks: {spans:?}"
        );
        gaps += usize::from(next_first != prev_end);
    }
    assert!(gaps <= 1, "sessions do not follow each other: {spans:?}");
    assert_eq!(spans[0].0, 0);
    assert!(rig.log().contains("idle timeout") || rig.log().contains("takes over"));
    let total = D0 + D1;
    let up = link.bytes_up();
    assert!(
        up < total + total / 2,
        "{up} bytes went up for {total} bytes of disk"
    );

    // A change stream with tags through the same faults.
    let app_every_third = |t| {
        if t % 3 == 0 {
            TagKind::App
        } else {
            TagKind::Crash
        }
    };
    let (stream, expected) = tagged_stream(&mut src, &mut rng, (12, 30, 32), "t-", app_every_third);
    let stream_mib = stream.len() as u64 / MIB;
    std::fs::write(rig.path("changes.mtfr"), stream).unwrap();
    let stream_arg = format!("--stream={}", rig.path("changes.mtfr").display());
    let args = send_args(&rig, &link, &[&stream_arg]);
    let step = (stream_mib / 6).max(1) * MIB;
    send_through_faults(
        &mut rig,
        &link,
        &args,
        vec![
            (step, Fault::Reset),
            (2 * step, Fault::Reset),
            (3 * step, Fault::BlackHole(Duration::from_secs(8))),
            (4 * step, Fault::KillServe),
            (5 * step, Fault::KillSender),
        ],
    );
    for (name, data) in ["d0", "d1"].iter().zip(&src) {
        assert!(std::fs::read(rig.target(name)).unwrap() == *data, "{name}");
    }
    assert_points_recover(&rig, &expected);
    rig.mt_ok(&["verify", "g"]);
}

#[test]
fn a_dead_peer_releases_its_group_at_once_to_its_sender_and_within_the_idle_time_to_another() {
    const SIZE: u64 = 32 << 20;
    let mut rig = Rig::new("dead-peer");
    rig.serve_args = vec!["--idle-timeout".into(), IDLE.into()];
    rig.create_group("g", &[("d0", SIZE)]);
    rig.start_server();
    let src = rig.path("src.img");
    let data = random_file(&src, SIZE, &mut Rng::new(0xdead));
    let disk = format!("--disk=d0={}", src.display());
    let link = FaultyLink::start(rig.addr.parse().unwrap());
    link.set_bandwidth(Some(2 * MIB));
    enrol_via(&rig, &link.target(), "a");
    rig.enrol("a");
    rig.enrol("b");

    // Sender a's link goes half-open mid-copy and a dies (a process server's power loss).
    let cut = |rig: &Rig| {
        let mut args = send_args(rig, &link, &["--full", &disk]);
        let state = args.iter().position(|a| a == "--state").unwrap() + 1;
        args[state] = rig.path("a").display().to_string();
        let before = link.bytes_up();
        let mut child = spawn_send(rig, &args);
        while link.bytes_up() - before < 4 * MIB {
            assert!(child.try_wait().unwrap().is_none(), "{}", rig.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        link.black_hole(true);
        std::thread::sleep(Duration::from_millis(500));
        child.kill().unwrap();
        child.wait().unwrap();
    };
    // The budget of the sends after it is the idle timeout plus 30 s: the group must be free
    // within that.
    let bound = ["--retry-for", "36s", "--idle-timeout", IDLE];
    cut(&rig);
    let mut args = vec!["g", "--delta", &disk];
    args.extend(bound);
    let out = rig.send("a", &args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}\n{}", rig.log());
    assert!(rig.log().contains("takes over"), "{}", rig.log());
    assert!(std::fs::read(rig.target("d0")).unwrap() == data);

    // Another sender waits for the idle timeout, told once that the group is busy.
    link.black_hole(false);
    cut(&rig);
    let out = rig.send("b", &args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}\n{}", rig.log());
    assert!(rig.log().contains("idle timeout"), "{}", rig.log());
    assert_eq!(
        stderr.matches("another sender").count(),
        1,
        "the busy group is reported once:\n{stderr}"
    );
    assert!(std::fs::read(rig.target("d0")).unwrap() == data);
    rig.mt_ok(&["verify", "g"]);
}
