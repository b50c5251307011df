//! Recorded streams and identities as an operator meets them: a stream sent again after a newer
//! one is refused and changes nothing; a recording that grew resumes where it was and sends only
//! its new frames; a key lost from a state directory that used it is an error naming the file,
//! not a new key that every peer would refuse.

use crate::net_common;
use mt_agent::replication::frame::{FrameReader, TagKind};
use net_common::*;

const D0: u64 = 8 << 20;

fn write_stream(rig: &Rig, name: &str, bytes: &[u8]) -> String {
    let p = rig.path(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_older_stream_sent_after_a_newer_one_is_refused_and_changes_nothing() {
    let mut rig = Rig::new("streams-older");
    let mut rng = Rng::new(0x5eed_0015_0001);
    rig.create_group("g", &[("d0", D0)]);
    rig.start_server();
    rig.enrol("sender");
    let mut src = vec![vec![0u8; D0 as usize]];
    let (a, _) = tagged_stream(&mut src, &mut rng, (3, 10, 8), "a", |_| TagKind::Crash);
    let (b, _) = tagged_stream(&mut src, &mut rng, (3, 10, 8), "b", |_| TagKind::Crash);
    let a = write_stream(&rig, "a.mtfr", &a);
    let b = write_stream(&rig, "b.mtfr", &b);
    json(&rig.send("sender", &["g", "--stream", &a]));
    let after_b = json(&rig.send("sender", &["g", "--stream", &b]));

    let before = rig.journal_fingerprint("g");
    let target = std::fs::read(rig.target("d0")).unwrap();
    let out = rig.send("sender", &["g", "--stream", &a]);
    assert!(!out.status.success(), "the older stream was accepted again");
    let e = stderr(&out);
    assert!(
        e.contains("a.mtfr") && e.contains("before 1 newer stream"),
        "{e}"
    );
    assert_eq!(rig.journal_fingerprint("g"), before, "the journal changed");
    assert!(
        target == src[0],
        "the target is the source after the newer stream"
    );
    assert!(std::fs::read(rig.target("d0")).unwrap() == target);

    // The newest stream again is a resume with nothing left to send.
    let again = json(&rig.send("sender", &["g", "--stream", &b]));
    assert_eq!(again["acked"], after_b["acked"], "{again}");
    assert_eq!(again["frames_sent"].as_u64(), Some(0), "{again}");
    assert!(std::fs::read(rig.target("d0")).unwrap() == src[0]);
}

#[test]
fn a_recording_that_grew_resumes_and_sends_only_its_new_frames() {
    let mut rig = Rig::new("streams-grew");
    let mut rng = Rng::new(0x5eed_0015_0002);
    rig.create_group("g", &[("d0", D0)]);
    rig.start_server();
    rig.enrol("sender");
    let mut src = vec![vec![0u8; D0 as usize]];
    // About 4 MiB of frames: the first part sent holds more than the identity's first MiB.
    let (full, expected) = tagged_stream(&mut src, &mut rng, (8, 16, 16), "t", |_| TagKind::Crash);
    let mut r = FrameReader::new(&full[..]);
    let (mut cut, mut frames_before) = (0usize, 0u64);
    while let Some(f) = r.next_frame().unwrap() {
        let (index, offset) = r.position();
        if matches!(f, mt_agent::replication::frame::Frame::Tag { .. }) && offset > 2 << 20 {
            cut = offset as usize;
            frames_before = index - 1; // the start frame carries no LSN
            break;
        }
    }
    assert!(cut > 0, "the stream is long enough to cut");
    let path = write_stream(&rig, "live.mtfr", &full[..cut]);
    let first = json(&rig.send("sender", &["g", "--stream", &path]));
    assert_eq!(first["acked"].as_u64(), Some(frames_before), "{first}");
    write_stream(&rig, "live.mtfr", &full);
    let second = json(&rig.send("sender", &["g", "--stream", &path]));
    let total = 8 * 17;
    assert_eq!(second["acked"].as_u64(), Some(total), "{second}");
    assert_eq!(
        second["frames_sent"].as_u64(),
        Some(total - frames_before),
        "only the new frames travel: {second}"
    );
    assert_points_recover(&rig, &expected);
}

#[test]
fn a_lost_key_is_an_error_naming_it_not_a_silent_new_key() {
    let mut rig = Rig::new("streams-key");
    rig.create_group("g", &[("d0", D0)]);
    rig.start_server();
    rig.enrol("sender");
    std::fs::remove_file(rig.path("sender/key")).unwrap();
    let out = rig.send("sender", &["g", "--full", "--disk", "d0=/dev/null"]);
    let e = stderr(&out);
    assert!(
        !out.status.success() && e.contains("the key was lost"),
        "{e}"
    );
    assert!(e.contains("sender/key"), "{e}");
    assert!(!rig.path("sender/key").exists(), "no new key was made");

    rig.kill_server();
    std::fs::remove_file(rig.path("server-state/key")).unwrap();
    let volume = camino::Utf8PathBuf::from_path_buf(rig.path("volume")).unwrap();
    let out = testkit::run::with_private_mount(&volume, &rig.bin)
        .args(["serve", "--config"])
        .arg(&rig.config)
        .args(["--listen", "127.0.0.1:0", "--retention"])
        .arg(rig.path("ret"))
        .arg("--state")
        .arg(rig.path("server-state"))
        .arg("--passphrase-file")
        .arg(rig.path("passphrase"))
        .output()
        .unwrap();
    let e = stderr(&out);
    assert!(
        !out.status.success() && e.contains("the key was lost"),
        "{e}"
    );
    assert!(e.contains("authorised senders"), "{e}");
}
