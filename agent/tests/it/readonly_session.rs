//! The read-only commands while a session writes the group: a long recorded stream goes through a
//! `testkit::link::FaultyLink` capped at 2 MiB/s (several seconds of one session holding the
//! group), and meanwhile `points --json`, `status --json`, `verify` and `recover --to` of the
//! points from before the session answer, each recovered image equal to the source at its point;
//! an in-place `recover` is refused naming the session that holds the group (serve's pid, the
//! sender's key). After the send every point, old and new, still recovers exactly. Real
//! binaries, journals and targets on the real file system.

use crate::net_common;
use mt_agent::replication::frame::TagKind;
use net_common::*;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use testkit::link::FaultyLink;

const D0: u64 = 16 << 20;
const MIB: u64 = 1 << 20;
/// A hang guard, not a speed assertion (the times seen are printed).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

fn spawn_send(rig: &Rig, link: &FaultyLink, stream: &std::path::Path) -> Child {
    Command::new(BIN)
        .args(["send", "g", "--json", "--to", &link.target(), "--state"])
        .arg(rig.path("sender"))
        .arg(format!("--stream={}", stream.display()))
        .env("MT_AGENT_CONFIG", &rig.config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `mt-agent ARGS` and how long it took; fails the test if it took longer than the guard.
fn timed(rig: &Rig, args: &[&str]) -> (Output, Duration) {
    let t0 = Instant::now();
    let out = rig.mt(args);
    let took = t0.elapsed();
    eprintln!("mt-agent {} answered in {took:?}", args.join(" "));
    assert!(
        took < ANSWER_WITHIN,
        "mt-agent {args:?} took {took:?} while the session ran"
    );
    (out, took)
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed during the session: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn points_status_verify_and_recover_to_answer_while_a_long_send_writes_the_group() {
    let mut rig = Rig::new("readonly");
    let mut rng = Rng::new(0x5e55);
    rig.create_group("g", &[("d0", D0)]);
    rig.start_server();
    // Pins are per address: the sender knows the master target only through the link.
    let link = FaultyLink::start(rig.addr.parse().unwrap());
    let out = rig.mt(&[
        "enrol",
        "--to",
        &link.target(),
        "--passphrase-file",
        rig.path("passphrase").to_str().unwrap(),
        "--state",
        rig.path("sender").to_str().unwrap(),
        "--group",
        "g",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut src = vec![vec![0u8; D0 as usize]];

    // Points from before the session, sent at full speed.
    let crash = |_| TagKind::Crash;
    let (first, before) = tagged_stream_from(&mut src, &mut rng, (3, 20, 16), "before-", crash, 60);
    std::fs::write(rig.path("first.mtfr"), first).unwrap();
    let out = spawn_send(&rig, &link, &rig.path("first.mtfr"))
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        rig.log()
    );
    let listed = json(&rig.mt(&["points", "g", "--json"]));
    let times: Vec<String> = before
        .iter()
        .map(|(name, _)| {
            let p = listed["points"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name.as_str())
                .unwrap_or_else(|| panic!("point {name}: {listed}"));
            p["source_time"].as_str().unwrap().to_owned()
        })
        .collect();

    // The long session: about 16 MiB of changes with tags through a 2 MiB/s link.
    let (second, during) =
        tagged_stream_from(&mut src, &mut rng, (6, 40, 32), "during-", crash, 100);
    let second_len = second.len() as u64;
    std::fs::write(rig.path("second.mtfr"), second).unwrap();
    link.set_bandwidth(Some(2 * MIB));
    let up = link.bytes_up();
    let mut send = spawn_send(&rig, &link, &rig.path("second.mtfr"));
    let t0 = Instant::now();
    while link.bytes_up() - up < 2 * MIB {
        if send.try_wait().unwrap().is_some() {
            let out = send.wait_with_output().unwrap();
            panic!(
                "the send ended early: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                rig.log()
            );
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", rig.log());
        std::thread::sleep(Duration::from_millis(20));
    }

    let serve_pid = rig.server.as_ref().unwrap().id();
    let mut rounds = 0;
    let mut worst = Duration::ZERO;
    // Rounds a second apart, so reads meet commits, new points and epochs of the session.
    for i in 0..5 {
        let ((name, images), time) = (&before[i % before.len()], &times[i % before.len()]);
        let (out, a) = timed(&rig, &["points", "g", "--json"]);
        let points: serde_json::Value = serde_json::from_str(&ok(&out, "points")).unwrap();
        for (n, _) in &before {
            assert!(
                points["points"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == n.as_str()),
                "{n} is listed: {points}"
            );
        }
        let (out, b) = timed(&rig, &["status", "--json"]);
        ok(&out, "status");
        let (out, c) = timed(&rig, &["verify", "g"]);
        ok(&out, "verify");
        let dir = rig.path(&format!("during-read-{i}"));
        let (out, d) = timed(
            &rig,
            &[
                "recover",
                "g",
                "--point",
                time,
                "--to",
                dir.to_str().unwrap(),
            ],
        );
        ok(&out, "recover --to");
        assert!(
            std::fs::read(dir.join("d0.img")).unwrap() == images[0],
            "{name} recovered during the session differs from the source at it"
        );
        // In place needs the group to itself, and says who has it.
        let (out, e) = timed(&rig, &["recover", "g", "--point", time]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "in-place recover during the session");
        assert!(
            err.contains(&format!("held by pid {serve_pid} "))
                && err.contains("session of sender key")
                && err.contains("--to DIR"),
            "{err}"
        );
        if i == 0 {
            eprintln!("in-place recover during the session: {err}");
        }
        worst = worst.max(a).max(b).max(c).max(d).max(e);
        rounds += 1;
        let running = send.try_wait().unwrap().is_none();
        assert!(
            running || rounds >= 3,
            "the send ended before round {rounds} was done: make the stream ({second_len} bytes) longer"
        );
        if !running {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("{rounds} rounds during the session, slowest answer {worst:?}");

    let out = send.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        rig.log()
    );
    assert!(std::fs::read(rig.target("d0")).unwrap() == src[0]);
    let all: Vec<ExpectedPoint> = before.into_iter().chain(during).collect();
    assert_points_recover(&rig, &all);
    rig.mt_ok(&["verify", "g"]);
}
