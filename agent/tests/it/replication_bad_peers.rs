//! Peers that must not write a byte: a wrong passphrase, a sender whose key was never enrolled,
//! a master target whose key does not match the pin, garbage instead of the protocol, a message
//! and a frame claiming 4 GiB, a frame whose block checksum is wrong, a frame out of order.
//! Each is refused with a message saying what was wrong, the targets and the journal stay
//! byte-identical, and the agent goes on serving a well-behaved sender while a stalled peer and a
//! quiet session on another group stay connected.

use crate::net_common;
use mt_agent::replication::frame::{encode, Frame};
use mt_agent::replication::journal::clock::Timestamp;
use mt_agent::replication::journal::Lsn;
use mt_agent::replication::net::auth::SenderAuth;
use mt_agent::replication::net::Message;
use net_common::*;
use std::io::{Read, Write};

const SIZE: u64 = 1 << 20;

fn untouched(rig: &Rig) -> (Vec<(String, String)>, Vec<u8>) {
    (
        rig.journal_fingerprint("g"),
        std::fs::read(rig.target("d0")).unwrap(),
    )
}

/// Opens an authenticated session for group g and returns the channel after the position and
/// the first credit. A refusal that says to retry (the previous session still holds the group
/// while the server closes it) is retried, as `mt-agent send` does.
fn session(rig: &Rig) -> mt_agent::replication::net::transport::Channel {
    let auth = SenderAuth::load(camino::Utf8Path::from_path(&rig.path("sender")).unwrap()).unwrap();
    let start = Frame::Start {
        group: "g".into(),
        disks: vec![("d0".into(), SIZE)],
    };
    let mut attempts = 0;
    let mut ch = loop {
        let mut ch = auth.session(&rig.addr).unwrap();
        ch.tx.send(&Message::Frame(encode(&start))).unwrap();
        match ch.rx.recv().unwrap() {
            Some(Message::Position { acked: 0, .. }) => break ch,
            Some(Message::Refused { retry: true, .. }) if attempts < 50 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => panic!("expected the position 0, got {other:?}"),
        }
    };
    assert!(matches!(
        ch.rx.recv().unwrap(),
        Some(Message::Credit { .. })
    ));
    ch
}

fn refusal(ch: &mut mt_agent::replication::net::transport::Channel) -> String {
    loop {
        match ch.rx.recv() {
            Ok(Some(Message::Refused { why, .. })) => return why,
            Ok(Some(_)) => continue,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

fn write_frame(lsn: u64) -> Vec<u8> {
    encode(&Frame::Write {
        lsn: Lsn(lsn),
        source_time: Timestamp(1),
        disk: 0,
        offset: 8192,
        data: vec![0xab; 4096],
        resync: false,
    })
}

#[test]
fn bad_peers_are_refused_with_a_reason_and_write_nothing() {
    let mut rig = Rig::new("bad");
    rig.create_group("g", &[("d0", SIZE)]);
    rig.start_server();
    let before = untouched(&rig);

    // Wrong passphrase: refused on both ends, nothing pinned.
    write_secret(&rig.path("wrong"), "incorrect horse");
    let out = rig.enrol_with("sender", "wrong");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("wrong passphrase"),
        "{err}"
    );
    assert!(!rig.path("sender/pinned").exists());
    assert_eq!(untouched(&rig).0, before.0, "the journal changed");
    assert!(untouched(&rig).1 == before.1, "the target changed");
    // A passphrase file others can read is refused before anything is sent.
    std::fs::write(rig.path("open"), PASSPHRASE).unwrap();
    let out = rig.enrol_with("sender", "open");
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));

    // The real enrolment.
    rig.enrol("sender");

    // A sender whose key was never enrolled (it trusts the right master target key): its
    // first send makes its key and is refused for want of a pin.
    let first = rig.send("stranger", &["g", "--full", "--disk", "d0=/dev/null"]);
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("no key is pinned"),
        "{first:?}"
    );
    let pin = std::fs::read_dir(rig.path("sender/pinned"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::fs::create_dir_all(rig.path("stranger/pinned")).unwrap();
    std::fs::copy(
        pin.path(),
        rig.path("stranger/pinned").join(pin.file_name()),
    )
    .unwrap();
    let out = rig.send(
        "stranger",
        &[
            "g",
            "--full",
            "--disk",
            &format!("d0={}", rig.target("d0").display()),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unknown sender key"),
        "{err}"
    );
    assert_eq!(untouched(&rig).0, before.0, "the journal changed");
    assert!(untouched(&rig).1 == before.1, "the target changed");

    // A master target whose key is not the pinned one.
    std::fs::create_dir_all(rig.path("misled/pinned")).unwrap();
    std::fs::copy(rig.path("sender/key"), rig.path("misled/key")).unwrap();
    std::fs::write(
        rig.path("misled/pinned").join(pin.file_name()),
        format!("{}\n", "ab".repeat(32)),
    )
    .unwrap();
    let out = rig.send(
        "misled",
        &[
            "g",
            "--full",
            "--disk",
            &format!("d0={}", rig.target("d0").display()),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is pinned for it"),
        "{err}"
    );
    assert_eq!(untouched(&rig).0, before.0, "the journal changed");
    assert!(untouched(&rig).1 == before.1, "the target changed");

    // Garbage bytes instead of the protocol.
    let mut raw = std::net::TcpStream::connect(&rig.addr).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink);
    assert_eq!(untouched(&rig).0, before.0, "the journal changed");
    assert!(untouched(&rig).1 == before.1, "the target changed");

    // A message claiming 4 GiB.
    let mut ch = session(&rig);
    let mut huge = vec![1u8];
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    ch.tx.send_plain(&huge).unwrap();
    let why = refusal(&mut ch);
    assert!(
        why.contains("message #1") && why.contains("exceeds the limit"),
        "{why}"
    );
    assert_eq!(untouched(&rig).0, before.0, "the journal changed");
    assert!(untouched(&rig).1 == before.1, "the target changed");

    // A well-formed message carrying a frame that claims 4 GiB.
    let mut ch = session(&rig);
    let mut f = write_frame(1);
    f[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let crc = crc32c::crc32c(&f[..44]);
    f[44..48].copy_from_slice(&crc.to_le_bytes());
    ch.tx.send(&Message::Frame(f)).unwrap();
    let why = refusal(&mut ch);
    assert!(
        why.contains("frame #1") && why.contains("exceeds the limit"),
        "{why}"
    );
    assert_eq!(untouched(&rig).0, before.0, "the journal changed");
    assert!(untouched(&rig).1 == before.1, "the target changed");

    // A valid frame whose block does not match its BLAKE3 checksum.
    let mut ch = session(&rig);
    let mut f = write_frame(1);
    f[100] ^= 1;
    ch.tx.send(&Message::Frame(f)).unwrap();
    let why = refusal(&mut ch);
    assert!(
        why.contains("frame #1") && why.contains("BLAKE3 checksum mismatch"),
        "{why}"
    );
    assert_eq!(untouched(&rig).0, before.0, "the journal changed");
    assert!(untouched(&rig).1 == before.1, "the target changed");

    // A good frame then one out of order: the good one is kept, the second is refused.
    let after_good;
    {
        let mut ch = session(&rig);
        ch.tx.send(&Message::Frame(write_frame(1))).unwrap();
        ch.tx.send(&Message::Frame(write_frame(3))).unwrap();
        let why = refusal(&mut ch);
        assert!(
            why.contains("frame #2") && why.contains("out of order"),
            "{why}"
        );
        assert!(why.contains("acknowledged through LSN 1"), "{why}");
        after_good = untouched(&rig);
    }
    assert_eq!(&after_good.1[8192..12288], &[0xab; 4096][..]);

    // The server logs a session's end just after telling the sender.
    let mut log = rig.log();
    for _ in 0..50 {
        if log.contains("out of order") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        log = rig.log();
    }
    for line in [
        "wrong passphrase",
        "unknown sender key",
        "not an mt-agent replication peer",
        "exceeds the limit",
        "BLAKE3 checksum mismatch",
        "out of order",
    ] {
        assert!(
            log.contains(line),
            "the server log says nothing about {line:?}:\n{log}"
        );
    }

    // The agent still serves a well-behaved sender, while a peer that stopped mid-hello and an
    // authenticated session that went quiet on another group stay connected.
    let mut stalled = std::net::TcpStream::connect(&rig.addr).unwrap();
    stalled.write_all(b"MTR").unwrap();
    rig.mt_ok(&[
        "group",
        "create",
        "other",
        "--size",
        "1MiB",
        "--disk",
        &format!("o0={}", rig.path("other.img").display()),
    ]);
    rig.allow("sender", "other");
    let auth = SenderAuth::load(camino::Utf8Path::from_path(&rig.path("sender")).unwrap()).unwrap();
    let mut quiet = auth.session(&rig.addr).unwrap();
    let start = Frame::Start {
        group: "other".into(),
        disks: vec![("o0".into(), SIZE)],
    };
    quiet.tx.send(&Message::Frame(encode(&start))).unwrap();
    assert_eq!(
        quiet.rx.recv().unwrap(),
        Some(Message::Position {
            acked: 0,
            resync_since: 0
        })
    );
    let src = rig.path("src.img");
    random_file(&src, SIZE, &mut Rng::new(7));
    let r = json(&rig.send(
        "sender",
        &["g", "--delta", "--disk", &format!("d0={}", src.display())],
    ));
    assert!(r["acked"].as_u64().unwrap() > 1);
    assert_eq!(
        std::fs::read(rig.target("d0")).unwrap(),
        std::fs::read(&src).unwrap()
    );
}
